// mx8 convert end to end on the committed fixtures (tests/data/hf, models/stories260K.gguf):
// quantized tensors dequantize within each format's bound, lossless paths are bit-exact, GGUF
// tensors survive (with the Q/K permutation), requantization of non-power-of-two scales is
// measured, and failures leave no output behind.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>

#include "mx8/convert/convert.h"
#include "mx8/convert/gguf_to_hf.h"
#include "mx8/convert/inspect.h"
#include "mx8/convert/rules.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/io/gguf.h"
#include "mx8/io/hf_config.h"
#include "mx8/io/safetensors.h"
#include "mx8/io/safetensors_writer.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using mx8::convert::ConvertOptions;
using mx8::convert::Scheme;
using mx8::io::DType;
using mx8::test::TempDir;

namespace {

const fs::path kSrc = MX8_SOURCE_DIR;
const fs::path kLlama = kSrc / "tests/data/hf/llama31_gqa";
const fs::path kQwen3 = kSrc / "tests/data/hf/qwen3_qknorm";
const fs::path kStories = kSrc / "models/stories260K.gguf";

void require(const fs::path& p) {
  if (!fs::exists(p)) GTEST_SKIP() << p << " is absent";
}

ConvertOptions opts(Scheme s, mx8::format::ScaleRule rule = mx8::format::ScaleRule::ceil) {
  ConvertOptions o;
  o.scheme = s;
  o.rule = rule;
  o.threads = 2;
  return o;
}

std::vector<float> values(const mx8::io::Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.dtype() == DType::F32) {
      std::memcpy(&v[i], t.data + 4 * i, 4);
    } else if (t.dtype() == DType::BF16) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      v[i] = mx8::format::bf16_to_f32(h);
    } else {
      ADD_FAILURE() << "values() of " << mx8::io::dtype_name(t.dtype());
    }
  }
  return v;
}

float f32_at(const uint8_t* p, size_t i) {
  float f;
  std::memcpy(&f, p + 4 * i, 4);
  return f;
}

// Dequantizes an output tensor of the given scheme (written independently of the converter's
// own code paths: plain loops over the documented layout).
std::vector<float> dequantize(const mx8::io::SafetensorsModel& m, const std::string& name, Scheme s) {
  const auto& w = m.get(name);
  std::vector<float> out;
  if (s == Scheme::ds_fp8) {
    const auto& sc = m.get(name + "_scale_inv");
    const int64_t R = w.shape()[0], C = w.shape()[1], gc = sc.shape()[1];
    EXPECT_EQ(sc.shape()[0], (R + 127) / 128);
    EXPECT_EQ(gc, (C + 127) / 128);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c)
        out.push_back(mx8::format::e4m3_to_f32(w.data[r * C + c]) *
                      f32_at(sc.data, (r / 128) * gc + c / 128));
  } else {
    const auto& sc = m.get(name + "_scale");
    EXPECT_EQ(sc.dtype(), DType::F8_E8M0);
    const int64_t R = w.shape()[0], gc = sc.shape()[1];
    const int64_t C = s == Scheme::mxfp4 ? 2 * w.shape()[1] : w.shape()[1];
    EXPECT_EQ(gc, (C + 31) / 32);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) {
        const float scale = std::ldexp(1.0f, int(sc.data[r * gc + c / 32]) - 127);
        float v;
        if (s == Scheme::mxfp8) {
          v = mx8::format::e4m3_to_f32(w.data[r * C + c]);
        } else {
          const uint8_t byte = w.data[r * (C / 2) + c / 2];
          v = mx8::format::e2m1_to_f32((c & 1) ? byte >> 4 : byte & 15);
        }
        out.push_back(v * scale);
      }
  }
  return out;
}

// Largest error quantization to `mbits` mantissa bits may make on x, given the block scale: half an
// ulp of x (relative 2^-(mbits+1)), or half the smallest subnormal step (scale * 2^(emin - mbits - 1)).
bool within_bound(float x, float y, float scale, int mbits, int emin) {
  const double rel = std::ldexp(std::fabs(x), -(mbits + 1));
  const double sub = std::ldexp(static_cast<double>(scale), emin - mbits - 1);
  return std::fabs(static_cast<double>(x) - y) <= std::max(rel, sub) * (1 + 1e-6);
}

}  // namespace

TEST(Convert, DsFp8LayoutConfigAndErrorBound) {
  require(kLlama);
  TempDir tmp;
  auto report = mx8::convert::convert_checkpoint(kLlama.string(), tmp / "out", opts(Scheme::ds_fp8));
  auto in = mx8::io::SafetensorsModel::open(kLlama.string());
  auto out = mx8::io::SafetensorsModel::open(tmp / "out");
  int quantized = 0;
  for (const auto& [name, t] : in.tensors()) {
    const auto& o = out.get(name);
    const bool linear =
        t->shape().size() == 2 && name.find("embed") == std::string::npos && name != "lm_head.weight";
    if (!linear) {
      // Kept tensors are copied byte for byte.
      ASSERT_EQ(o.dtype(), t->dtype()) << name;
      ASSERT_EQ(o.nbytes(), t->nbytes());
      EXPECT_EQ(std::memcmp(o.data, t->data, t->nbytes()), 0) << name;
      EXPECT_EQ(out.find(name + "_scale_inv"), nullptr);
      continue;
    }
    ++quantized;
    ASSERT_EQ(o.dtype(), DType::F8_E4M3) << name;
    const auto& sc = out.get(name + "_scale_inv");
    ASSERT_EQ(sc.dtype(), DType::F32);
    for (int64_t i = 0; i < sc.numel(); ++i) {  // ceil rule: every scale a power of two
      uint32_t b;
      std::memcpy(&b, sc.data + 4 * i, 4);
      EXPECT_EQ(b & 0x7FFFFF, 0u) << name;
    }
    auto x = values(*t);
    auto y = dequantize(out, name, Scheme::ds_fp8);
    const int64_t C = t->shape()[1], gc = sc.shape()[1];
    for (size_t i = 0; i < x.size(); ++i) {
      const int64_t r = static_cast<int64_t>(i) / C, c = static_cast<int64_t>(i) % C;
      ASSERT_TRUE(within_bound(x[i], y[i], f32_at(sc.data, (r / 128) * gc + c / 128), 3, -6))
          << name << " " << i;
    }
  }
  EXPECT_EQ(quantized, 14);
  auto cfg = mx8::io::HfConfig::load(tmp / "out");
  ASSERT_TRUE(cfg.quantization);
  EXPECT_EQ(cfg.quantization->quant_method, "fp8");
  EXPECT_EQ(cfg.quantization->fmt, "e4m3");
  EXPECT_EQ(cfg.quantization->scale_fmt, "ue8m0");
  EXPECT_EQ(cfg.quantization->weight_block_size, (std::vector<int64_t>{128, 128}));
  EXPECT_EQ(cfg.quantization->activation_scheme, "dynamic");
  EXPECT_TRUE(fs::exists(fs::path(tmp / "out") / "generation_config.json"));  // side files carried
  EXPECT_EQ(report.shards, 1);

  // fp32 rule: no scale_fmt (the scales are not powers of two).
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "fp32",
                                   opts(Scheme::ds_fp8, mx8::format::ScaleRule::fp32));
  auto cfg32 = mx8::io::HfConfig::load(tmp / "fp32");
  EXPECT_EQ(cfg32.quantization->scale_fmt, "");
}

// Keeping everything copies every tensor; the file then equals the reference library's own bytes.
TEST(Convert, KeepingEverythingReproducesTheReferenceFile) {
  require(kLlama);
  TempDir tmp;
  auto o = opts(Scheme::ds_fp8);
  o.keep = {"*"};
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "copy", o);
  auto read_all = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(read_all(fs::path(tmp / "copy") / "model.safetensors"), read_all(kLlama / "model.safetensors"));
  EXPECT_FALSE(mx8::io::HfConfig::load(tmp / "copy").quantization);
}

TEST(Convert, MxLayoutsWithinBoundAndBf16RoundTripIsExact) {
  require(kQwen3);
  TempDir tmp;
  auto in = mx8::io::SafetensorsModel::open(kQwen3.string());
  for (Scheme s : {Scheme::mxfp8, Scheme::mxfp4}) {
    const std::string q = tmp / (s == Scheme::mxfp8 ? "mx8" : "mx4"), b = q + "_bf16";
    mx8::convert::convert_checkpoint(kQwen3.string(), q, opts(s));
    mx8::convert::convert_checkpoint(q, b, opts(Scheme::bf16));
    auto qm = mx8::io::SafetensorsModel::open(q);
    auto bm = mx8::io::SafetensorsModel::open(b);
    int checked = 0;
    for (const auto& [name, t] : in.tensors()) {
      if (!qm.find(name + "_scale")) continue;
      ++checked;
      auto x = values(*t);
      auto y = dequantize(qm, name, s);
      const auto& sc = qm.get(name + "_scale");
      const int64_t C = t->shape()[1];
      for (size_t i = 0; i < x.size(); ++i) {
        const float scale = std::ldexp(1.0f, int(sc.data[(i / C) * sc.shape()[1] + (i % C) / 32]) - 127);
        ASSERT_TRUE(s == Scheme::mxfp8 ? within_bound(x[i], y[i], scale, 3, -6)
                                       : within_bound(x[i], y[i], scale, 1, 0))
            << name << " " << i << " x=" << x[i] << " y=" << y[i];
      }
      // MX values times power-of-two scales fit BF16 exactly, so going to BF16 loses nothing.
      const auto& bt = bm.get(name);
      ASSERT_EQ(bt.dtype(), DType::BF16);
      EXPECT_EQ(values(bt), y) << name;
      EXPECT_EQ(bm.find(name + "_scale"), nullptr);
    }
    EXPECT_GT(checked, 0);
    auto cfg = mx8::io::HfConfig::load(q);
    ASSERT_TRUE(cfg.raw.contains("quantization_config"));
    EXPECT_EQ(cfg.raw["quantization_config"]["quant_method"], "mx8");
    auto bcfg = mx8::io::HfConfig::load(b);
    EXPECT_FALSE(bcfg.quantization);
    EXPECT_EQ(bcfg.dtype, "bfloat16");
  }
}

TEST(Convert, RequantizingPowerOfTwoScalesIsLossless) {
  require(kLlama);
  TempDir tmp;
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "a", opts(Scheme::ds_fp8));
  auto report = mx8::convert::convert_checkpoint(tmp / "a", tmp / "b", opts(Scheme::ds_fp8));
  auto a = mx8::io::SafetensorsModel::open(tmp / "a");
  auto b = mx8::io::SafetensorsModel::open(tmp / "b");
  int requantized = 0;
  for (const auto& r : report.tensors) {
    if (r.action != "requantize") continue;
    ++requantized;
    EXPECT_TRUE(r.measured && std::isinf(r.sqnr_db)) << r.name << " sqnr " << r.sqnr_db;
    EXPECT_EQ(r.nonpow2_scales, 0);
    EXPECT_EQ(dequantize(a, r.name, Scheme::ds_fp8), dequantize(b, r.name, Scheme::ds_fp8)) << r.name;
  }
  EXPECT_EQ(requantized, 14);
  // ds-fp8 -> mxfp8 as well: the 1x32 blocks refine the 128x128 ones, so values survive exactly.
  auto r2 = mx8::convert::convert_checkpoint(tmp / "a", tmp / "c", opts(Scheme::mxfp8));
  auto c = mx8::io::SafetensorsModel::open(tmp / "c");
  for (const auto& r : r2.tensors) {
    if (r.action == "requantize") {
      EXPECT_EQ(dequantize(a, r.name, Scheme::ds_fp8), dequantize(c, r.name, Scheme::mxfp8));
    }
  }
}

TEST(Convert, DeepSeekV3ScalesAreRequantizedAndTheErrorReported) {
  require(kLlama);
  TempDir tmp;
  // A V3-style checkpoint: float32 scales amax / 448, not powers of two.
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "v3",
                                   opts(Scheme::ds_fp8, mx8::format::ScaleRule::fp32));
  auto report = mx8::convert::convert_checkpoint(tmp / "v3", tmp / "v31", opts(Scheme::ds_fp8));
  auto v3 = mx8::io::SafetensorsModel::open(tmp / "v3");
  auto v31 = mx8::io::SafetensorsModel::open(tmp / "v31");
  int n = 0;
  for (const auto& r : report.tensors) {
    if (r.action != "requantize") continue;
    ++n;
    EXPECT_GT(r.nonpow2_scales, 0) << r.name;
    ASSERT_TRUE(r.measured);
    EXPECT_TRUE(std::isfinite(r.sqnr_db)) << r.name;  // not exact...
    EXPECT_GT(r.sqnr_db, 25.0) << r.name;             // ...but one more E4M3 rounding (~31 dB) at worst
    auto x = dequantize(v3, r.name, Scheme::ds_fp8);
    auto y = dequantize(v31, r.name, Scheme::ds_fp8);
    const auto& sc = v31.get(r.name + "_scale_inv");
    const int64_t C = v31.get(r.name).shape()[1], gc = sc.shape()[1];
    double max_err = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const int64_t row = static_cast<int64_t>(i) / C, col = static_cast<int64_t>(i) % C;
      ASSERT_TRUE(within_bound(x[i], y[i], f32_at(sc.data, (row / 128) * gc + col / 128), 3, -6));
      max_err = std::max(max_err, std::fabs(static_cast<double>(x[i]) - y[i]));
    }
    EXPECT_DOUBLE_EQ(max_err, r.max_abs_err) << r.name;  // the report measures what happened
  }
  EXPECT_EQ(n, 14);
}

TEST(Convert, StoriesGgufBecomesHfWithEqualF32Tensors) {
  require(kStories);
  TempDir tmp;
  auto o = opts(Scheme::ds_fp8);
  o.keep = {"*"};  // keep everything in F32: the tensors must equal the GGUF's
  mx8::convert::convert_checkpoint(kStories.string(), tmp / "hf", o);
  auto g = mx8::io::GgufFile::open(kStories.string());
  auto m = mx8::io::SafetensorsModel::open(tmp / "hf");
  auto cfg = mx8::io::HfConfig::load(tmp / "hf");
  EXPECT_EQ(cfg.model_type, "llama");
  EXPECT_EQ(cfg.hidden_size, 64);
  EXPECT_EQ(cfg.num_hidden_layers, 5);
  EXPECT_EQ(cfg.num_attention_heads, 8);
  EXPECT_EQ(cfg.num_key_value_heads, 4);
  EXPECT_EQ(cfg.intermediate_size, 172);
  EXPECT_EQ(cfg.vocab_size, 512);
  EXPECT_FALSE(cfg.quantization);  // nothing was quantized, so no quantization_config
  size_t matched = 0;
  for (const auto& t : g.tensors()) {
    auto hf = mx8::convert::gguf_llama_to_hf_name(t.name);
    if (!hf) continue;
    const auto& o = m.get(*hf);
    ASSERT_EQ(o.dtype(), DType::F32) << *hf;
    const auto gshape = t.shape();  // a temporary: take it once
    std::vector<int64_t> shape(gshape.begin(), gshape.end());
    ASSERT_EQ(o.shape(), shape) << *hf;
    const bool q = t.name.find("attn_q.weight") != std::string::npos,
               k = t.name.find("attn_k.weight") != std::string::npos;
    if (!q && !k) {
      EXPECT_EQ(std::memcmp(o.data, t.data, t.n_bytes), 0) << *hf;
    } else {
      const int64_t heads = q ? 8 : 4, rows = shape[0], head_dim = rows / heads;
      const size_t row_bytes = static_cast<size_t>(shape[1]) * 4;
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_EQ(std::memcmp(o.data + mx8::convert::meta_to_hf_row(r, head_dim) * row_bytes,
                              t.data + r * row_bytes, row_bytes),
                  0)
            << *hf << " row " << r;
    }
    ++matched;
  }
  EXPECT_EQ(matched, m.tensors().size());
  EXPECT_EQ(matched, 3u + 5 * 9);
}

// The permutation is the right one: RoPE on interleaved pairs applied to GGUF rows equals RoPE on
// halves (rotate_half, as HF Llama does) applied to the permuted rows, for q = W x with any W, x.
TEST(Convert, QkPermutationTurnsInterleavedRopeIntoRotateHalf) {
  const int64_t heads = 3, hd = 8, cols = 5, rows = heads * hd;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> w(rows * cols), x(cols), wp(rows * cols);
  for (auto& v : w) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  mx8::convert::permute_meta_to_hf(reinterpret_cast<const uint8_t*>(w.data()),
                                   reinterpret_cast<uint8_t*>(wp.data()), rows, cols * 4, heads);
  auto matvec = [&](const std::vector<float>& m) {
    std::vector<double> q(rows);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) q[r] += double(m[r * cols + c]) * x[c];
    return q;
  };
  auto qm = matvec(w), qh = matvec(wp);
  const int pos = 7;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i) {
      const double theta = pos * std::pow(10000.0, -2.0 * i / hd), c = std::cos(theta), s = std::sin(theta);
      // Meta: pair (2i, 2i+1). HF: pair (i, i + hd/2).
      const double a = qm[h * hd + 2 * i], b = qm[h * hd + 2 * i + 1];
      const double ha = qh[h * hd + i], hb = qh[h * hd + i + hd / 2];
      EXPECT_NEAR(a * c - b * s, ha * c - hb * s, 1e-9);
      EXPECT_NEAR(a * s + b * c, ha * s + hb * c, 1e-9);
    }
}

TEST(Convert, ShardedOutputReadsBackAsOneModel) {
  require(kLlama);
  TempDir tmp;
  auto o = opts(Scheme::ds_fp8);
  o.shard_size = 40000;
  auto report = mx8::convert::convert_checkpoint(kLlama.string(), tmp / "sharded", o);
  EXPECT_GT(report.shards, 2);
  auto one = opts(Scheme::ds_fp8);
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "single", one);
  auto a = mx8::io::SafetensorsModel::open(tmp / "sharded");
  auto b = mx8::io::SafetensorsModel::open(tmp / "single");
  EXPECT_EQ(a.shards().size(), static_cast<size_t>(report.shards));
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& [name, t] : b.tensors()) {
    const auto& u = a.get(name);
    ASSERT_EQ(u.nbytes(), t->nbytes());
    EXPECT_EQ(std::memcmp(u.data, t->data, t->nbytes()), 0) << name;
    EXPECT_EQ(a.shard_of(name), a.shard_of(name.substr(0, name.rfind(".weight") + 7)))
        << name << " split from its weight";
  }
  // A sharded input converts like the single file it was split from.
  mx8::convert::convert_checkpoint(tmp / "sharded", tmp / "from_sharded", opts(Scheme::bf16));
  mx8::convert::convert_checkpoint(tmp / "single", tmp / "from_single", opts(Scheme::bf16));
  auto read_all = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(read_all(fs::path(tmp / "from_sharded") / "model.safetensors"),
            read_all(fs::path(tmp / "from_single") / "model.safetensors"));
}

TEST(Convert, FailuresLeaveNoOutput) {
  require(kLlama);
  TempDir tmp;
  auto no_leftovers = [&] {
    for (const auto& e : fs::directory_iterator(tmp.path))
      if (e.path().filename() != "bad" && e.path().filename() != "exists")
        ADD_FAILURE() << "left behind: " << e.path();
  };
  // A corrupt input.
  fs::create_directories(tmp / "bad");
  {
    std::ofstream f(tmp / "bad/model.safetensors", std::ios::binary);
    f << "\x10\0\0\0\0\0\0\0{\"a\":1}";
  }
  EXPECT_THROW(mx8::convert::convert_checkpoint(tmp / "bad", tmp / "out", opts(Scheme::ds_fp8)), mx8::Error);
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // An interrupt (what Ctrl-C does) after the output folder was started.
  mx8::convert::request_interrupt();
  try {
    mx8::convert::convert_checkpoint(kLlama.string(), tmp / "out", opts(Scheme::ds_fp8));
    ADD_FAILURE() << "not interrupted";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("interrupted"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // An existing output without overwrite.
  fs::create_directories(tmp / "exists");
  EXPECT_THROW(mx8::convert::convert_checkpoint(kLlama.string(), tmp / "exists", opts(Scheme::ds_fp8)),
               mx8::Error);
  EXPECT_TRUE(fs::is_empty(tmp / "exists"));
  // fp32 scales cannot be stored as UE8M0.
  EXPECT_THROW(mx8::convert::convert_checkpoint(kLlama.string(), tmp / "out",
                                                opts(Scheme::mxfp8, mx8::format::ScaleRule::fp32)),
               mx8::Error);
  no_leftovers();
  // And the next conversion after an interrupt works.
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "out", opts(Scheme::ds_fp8));
  EXPECT_TRUE(fs::exists(fs::path(tmp / "out") / "model.safetensors"));
}

TEST(ConvertRules, DefaultsAndGlobs) {
  mx8::convert::QuantizeRules r;
  auto q = [&](const std::string& n) {
    return mx8::convert::QuantizeRules::quantizes(r.decide(n, {8, 8}, true));
  };
  EXPECT_TRUE(q("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(q("model.layers.0.mlp.gate_proj.weight"));
  EXPECT_TRUE(q("model.layers.3.mlp.experts.7.down_proj.weight"));
  EXPECT_FALSE(q("model.embed_tokens.weight"));
  EXPECT_FALSE(q("lm_head.weight"));
  EXPECT_FALSE(q("model.layers.0.mlp.gate.weight"));  // MoE router
  EXPECT_FALSE(q("model.layers.0.input_layernorm.weight"));
  EXPECT_FALSE(q("model.layers.0.self_attn.q_proj.bias"));
  // Each family's spelling of what stays in its source precision (every default rule, one name each).
  for (const char* kept : {"transformer.wte.weight",                       // GPT-2
                           "tok_embeddings.weight",                        // Meta's Llama files
                           "bert.embeddings.word_embeddings.weight",       // BERT
                           "model.embeddings.weight",                      // generic
                           "gpt_neox.word_embeddings.weight",              // GPT-NeoX
                           "output.weight",                                // Meta's Llama head
                           "model.language_model.lm_head.weight",          // a wrapped head
                           "model.norm.weight",                            // the final norm
                           "model.layers.0.self_attn.q_norm.weight",       // Qwen3 q/k norm
                           "model.layers.0.block_sparse_moe.gate.weight",  // Mixtral router
                           "model.layers.0.mlp.router.weight"})            // other routers
    EXPECT_FALSE(q(kept)) << kept;
  EXPECT_TRUE(q("model.layers.0.mlp.experts.0.gate_proj.weight"));  // an expert's FFN gate, not a router
  EXPECT_FALSE(q("weight"));                                        // ".weight" is a suffix, not a name
  EXPECT_FALSE(mx8::convert::QuantizeRules::quantizes(r.decide("a.weight", {8}, true)));
  EXPECT_FALSE(mx8::convert::QuantizeRules::quantizes(r.decide("a.weight", {8, 8}, false)));
  r.quantize = {"lm_head.*"};
  r.keep = {"*.down_proj.*"};
  EXPECT_TRUE(q("lm_head.weight"));
  EXPECT_FALSE(q("model.layers.3.mlp.down_proj.weight"));
  r.quantize.push_back("*down_proj*");
  EXPECT_FALSE(q("model.layers.3.mlp.down_proj.weight"));  // --keep wins
}

// DeepSeek checkpoints may store weight_scale_inv as UE8M0 bytes (F8_E8M0) instead of F32: the same
// checkpoint in both forms must read identically.
TEST(Convert, Ue8m0ScaleTensorsReadLikeF32Ones) {
  require(kLlama);
  TempDir tmp;
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "f32", opts(Scheme::ds_fp8));
  auto m = mx8::io::SafetensorsModel::open(tmp / "f32");
  std::vector<std::vector<uint8_t>> store;
  store.reserve(m.tensors().size());
  std::vector<mx8::io::TensorData> tensors;
  for (const auto& [name, t] : m.tensors()) {
    if (name.size() > 10 && name.compare(name.size() - 10, 10, "_scale_inv") == 0) {
      store.emplace_back(static_cast<size_t>(t->numel()));
      for (int64_t i = 0; i < t->numel(); ++i) {
        uint32_t b;
        std::memcpy(&b, t->data + 4 * i, 4);
        ASSERT_EQ(b & 0x7FFFFF, 0u);
        store.back()[i] = static_cast<uint8_t>(b >> 23);  // 2^(e-127) as a UE8M0 byte
      }
      tensors.push_back({{name, DType::F8_E8M0, t->shape()}, store.back()});
    } else {
      tensors.push_back({{name, t->dtype(), t->shape()}, t->bytes()});
    }
  }
  fs::create_directories(tmp / "e8m0");
  mx8::io::write_safetensors(tmp / "e8m0/model.safetensors", tensors);
  fs::copy_file(kLlama / "config.json", tmp / "e8m0/config.json");
  auto a = mx8::convert::convert_checkpoint(tmp / "f32", tmp / "a", opts(Scheme::bf16));
  auto b = mx8::convert::convert_checkpoint(tmp / "e8m0", tmp / "b", opts(Scheme::bf16));
  auto ma = mx8::io::SafetensorsModel::open(tmp / "a");
  auto mb = mx8::io::SafetensorsModel::open(tmp / "b");
  int dequantized = 0;
  for (const auto& r : b.tensors) {
    if (r.action != "dequantize") continue;
    ++dequantized;
    EXPECT_EQ(r.in_dtype, "F8_E4M3+F8_E8M0 128x128");
    EXPECT_EQ(values(ma.get(r.name)), values(mb.get(r.name))) << r.name;
  }
  EXPECT_EQ(dequantized, 14);
}

// Quantized checkpoints in layouts mx8 does not read are refused, never misread as unscaled values.
TEST(Convert, UnrecognisedQuantizedInputsAreRefused) {
  TempDir tmp;
  const std::vector<uint8_t> codes(64 * 64, 0x38), scale(4 * 64, 0);
  fs::create_directories(tmp / "ct");
  // compressed-tensors style: F8_E4M3 weight with a per-channel F32 weight_scale [out, 1].
  mx8::io::write_safetensors(
      tmp / "ct/model.safetensors",
      {{{"l.weight", DType::F8_E4M3, {64, 64}}, codes}, {{"l.weight_scale", DType::F32, {64, 1}}, scale}});
  try {
    mx8::convert::convert_checkpoint(tmp / "ct", tmp / "out", opts(Scheme::bf16));
    ADD_FAILURE() << "accepted";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("l.weight"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp / "out"));
  auto keep = opts(Scheme::ds_fp8);
  keep.keep = {"*"};
  mx8::convert::convert_checkpoint(tmp / "ct", tmp / "kept", keep);  // --keep copies it unchanged
  // A config naming another quantization method is refused up front.
  {
    std::ofstream c(tmp / "ct/config.json");
    c << R"({"model_type":"llama","quantization_config":{"quant_method":"gptq","bits":4}})";
  }
  EXPECT_THROW(mx8::convert::convert_checkpoint(tmp / "ct", tmp / "out", keep), mx8::Error);
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

// An output folder that holds the input is refused even with --force (overwrite): replacing the
// folder would delete the input. Nothing in it changes.
TEST(Convert, AnOutputThatContainsTheInputIsRefused) {
  TempDir tmp;
  const std::vector<uint8_t> w(64 * 64 * 4, 0);
  fs::create_directories(tmp / "m");
  mx8::io::write_safetensors(tmp / "m/model.safetensors", {{{"l.weight", DType::F32, {64, 64}}, w}});
  std::ofstream(tmp / "m/notes.txt") << "keep me";
  const auto input_bytes = fs::file_size(tmp / "m/model.safetensors");
  auto o = opts(Scheme::bf16);
  o.overwrite = true;
  try {
    mx8::convert::convert_checkpoint(tmp / "m/model.safetensors", tmp / "m", o);
    ADD_FAILURE() << "accepted";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("contains the input"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(tmp / "m/notes.txt"));
  EXPECT_EQ(fs::file_size(tmp / "m/model.safetensors"), input_bytes);  // bf16 output would be half
  mx8::convert::convert_checkpoint(tmp / "m", tmp / "m/out", o);       // an output inside the input is fine
  EXPECT_TRUE(fs::exists(tmp / "m/out/model.safetensors"));
}

// A --keep or --quantize glob that names no tensor (a typo, usually) is an error that names the glob
// and an actual tensor name, before anything is written.
TEST(Convert, GlobsThatMatchNoTensorAreErrors) {
  TempDir tmp;
  const std::vector<uint8_t> w(64 * 64 * 4, 0);
  fs::create_directories(tmp / "in");
  mx8::io::write_safetensors(tmp / "in/model.safetensors",
                             {{{"model.layers.0.mlp.down_proj.weight", DType::F32, {64, 64}}, w}});
  for (bool keep : {true, false}) {
    auto o = opts(Scheme::ds_fp8);
    (keep ? o.keep : o.quantize) = {"*.down_proj.weight", "*down-proj*"};
    try {
      mx8::convert::convert_checkpoint(tmp / "in", tmp / "out", o);
      ADD_FAILURE() << "accepted";
    } catch (const mx8::Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(keep ? "--keep '*down-proj*'" : "--quantize '*down-proj*'"), std::string::npos) << m;
      EXPECT_NE(m.find("model.layers.0.mlp.down_proj.weight"), std::string::npos) << m;
    }
    EXPECT_FALSE(fs::exists(tmp / "out"));
  }
  auto o = opts(Scheme::ds_fp8);
  o.keep = {"*.down_proj.weight"};  // matches: converts
  mx8::convert::convert_checkpoint(tmp / "in", tmp / "out", o);
  EXPECT_TRUE(fs::exists(tmp / "out/model.safetensors"));
}

namespace {

// Sets config.json's quantization_config.weight_block_size of a converted folder to `block` (JSON).
void set_block_size(const fs::path& folder, const std::string& block) {
  auto cfg = mx8::io::read_json_file((folder / "config.json").string());
  cfg["quantization_config"]["weight_block_size"] = nlohmann::json::parse(block);
  std::ofstream(folder / "config.json") << cfg.dump(2);
}

// Overwrites bytes of a file in place.
void poke(const fs::path& file, uint64_t offset, const void* bytes, size_t n) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
  ASSERT_TRUE(f.good()) << file;
}

// Where a tensor's bytes start in its (single) file.
uint64_t file_offset(const mx8::io::SafetensorsModel& m, const std::string& name) {
  return static_cast<uint64_t>(m.get(name).data - m.shards()[m.shard_of(name)].mapping().data());
}

}  // namespace

// A block size of 0 was a division by zero (SIGFPE) in every reader of the folder; it, and any other
// value that is not two sane positive integers, is an error naming config.json and the field.
TEST(Convert, ABadWeightBlockSizeIsAnErrorNotACrash) {
  require(kLlama);
  TempDir tmp;
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "ds", opts(Scheme::ds_fp8));
  for (const char* block :
       {"[0, 128]", "[0, 0]", "[1e30, 128]", "[128.5, 128]", "\"x\"", "[]", "[128, 64]"}) {
    set_block_size(tmp / "ds", block);
    auto expect_named = [&](const std::function<void()>& f, const char* what) {
      try {
        f();
        ADD_FAILURE() << what << " accepted weight_block_size " << block;
      } catch (const mx8::Error& e) {
        EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("weight_block_size"), std::string::npos) << e.what();
      }
    };
    expect_named([&] { mx8::convert::convert_checkpoint(tmp / "ds", tmp / "o", opts(Scheme::bf16)); },
                 "convert");
    expect_named([&] { mx8::convert::inspect_checkpoint(tmp / "ds", std::nullopt, 2); }, "inspect");
    expect_named([&] { mx8::convert::inspect_checkpoint(kLlama.string(), tmp / "ds", 2); },
                 "inspect --compare");
    EXPECT_FALSE(fs::exists(tmp / "o"));
  }
  set_block_size(tmp / "ds", "[128, 128]");  // and the folder as written converts
  mx8::convert::convert_checkpoint(tmp / "ds", tmp / "o", opts(Scheme::bf16));
}

// A sharded input whose index lists no tensor of one shard (here the shard holding lm_head) used to
// convert "successfully" without that tensor; now the conversion stops and names the shard.
TEST(Convert, AShardLeftOutOfTheIndexStopsTheConversion) {
  require(kLlama);
  TempDir tmp;
  auto o = opts(Scheme::ds_fp8);
  o.shard_size = 40000;  // bytes: several shards from the small fixture (as in ShardedOutputReadsBack...)
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "sh", o);
  const fs::path index = fs::path(tmp / "sh") / "model.safetensors.index.json";
  auto j = mx8::io::read_json_file(index.string());
  const std::string shard = j["weight_map"]["lm_head.weight"];
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end();)  // every tensor of that shard
    it = it.value() == shard ? j["weight_map"].erase(it) : std::next(it);
  std::ofstream(index) << j.dump(2);
  try {
    mx8::convert::convert_checkpoint(tmp / "sh", tmp / "o", opts(Scheme::bf16));
    ADD_FAILURE() << "converted without " << shard;
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find(shard), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp / "o"));
  EXPECT_THROW(mx8::convert::inspect_checkpoint(tmp / "sh", std::nullopt, 2), mx8::Error);
}

// --threads is bounded (100000 used to ask the system for that many threads and abort the process
// half-way through, leaving OUT.partial-<pid> behind); too many is an error before anything is written.
TEST(Convert, ThreadCountIsBounded) {
  require(kLlama);
  TempDir tmp;
  auto o = opts(Scheme::ds_fp8);
  o.threads = 100000;
  try {
    mx8::convert::convert_checkpoint(kLlama.string(), tmp / "o", o);
    ADD_FAILURE() << "accepted --threads 100000";
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(mx8::convert::kMaxThreads)), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(mx8::convert::inspect_checkpoint(kLlama.string(), kLlama.string(), 100000), mx8::Error);
  EXPECT_TRUE(fs::is_empty(tmp.path)) << "no output, no partial folder";
}

// When the system refuses threads (here: an address-space limit too small for their stacks), the
// error is an mx8::Error, the threads already started are joined, and no partial output is left.
TEST(Convert, ThreadsTheSystemRefusesAreAnErrorNotAnAbort) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "sanitizers reserve terabytes of address space: an RLIMIT_AS test cannot run under them";
#endif
#ifdef MX8_TEST_EMULATOR
  GTEST_SKIP() << "under " << MX8_TEST_EMULATOR << " the guest's RLIMIT_AS does not bound its threads' stacks";
#endif
  require(kLlama);
  TempDir tmp;
  uint64_t vm_kb = 0;
  {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoull(line.substr(7));
  }
  ASSERT_GT(vm_kb, 0u);
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_AS, &old), 0);
  struct rlimit low = old;
  // 256 MB above what the process maps now: room for the conversion's own buffers, while 1000 threads
  // need at least 2 GB of stacks (glibc's smallest default, 2 MB each; usually 8 MB).
  low.rlim_cur = vm_kb * 1024 + (256u << 20);
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &low), 0);
  auto o = opts(Scheme::ds_fp8);
  o.threads = 1000;
  std::string message = "no error";
  try {
    mx8::convert::convert_checkpoint(kLlama.string(), tmp / "o", o);
  } catch (const mx8::Error& e) {
    message = e.what();
  }
  ASSERT_EQ(::setrlimit(RLIMIT_AS, &old), 0);
  EXPECT_NE(message.find("cannot start 1000 threads"), std::string::npos) << message;
  EXPECT_TRUE(fs::is_empty(tmp.path)) << "no output, no partial folder";
}

// NaN and infinite values have no error to measure; they used to be skipped, so a tensor whose scale
// was +inf (every value became +-inf or NaN) was reported "exact". Now they are counted, and a tensor
// with any is never exact, in convert's report and in inspect --compare.
TEST(Convert, NonFiniteValuesAreCountedAndNeverExact) {
  require(kLlama);
  TempDir tmp;
  mx8::convert::convert_checkpoint(kLlama.string(), tmp / "ds", opts(Scheme::ds_fp8));
  const std::string inf_scale = "model.layers.0.self_attn.q_proj.weight";
  const std::string nan_code = "model.layers.1.mlp.down_proj.weight";
  int64_t inf_numel = 0;
  {
    auto m = mx8::io::SafetensorsModel::open(tmp / "ds");
    inf_numel = m.get(inf_scale).numel();
    ASSERT_EQ(m.get(inf_scale + "_scale_inv").numel(), 1);  // one 128x128 block: its scale covers all
    const fs::path file = fs::path(tmp / "ds") / "model.safetensors";
    const float inf = INFINITY;
    const uint64_t inf_at = file_offset(m, inf_scale + "_scale_inv"), nan_at = file_offset(m, nan_code);
    poke(file, inf_at, &inf, 4);
    const uint8_t e4m3_nan = 0x7F;  // E4M3's NaN (S.1111.111)
    poke(file, nan_at, &e4m3_nan, 1);
  }
  auto report = mx8::convert::convert_checkpoint(tmp / "ds", tmp / "mx", opts(Scheme::mxfp8));
  int checked = 0;
  for (const auto& r : report.tensors) {
    if (r.action != "requantize") continue;
    ASSERT_TRUE(r.measured) << r.name;
    if (r.name == inf_scale) {
      ++checked;
      EXPECT_EQ(r.nonfinite, inf_numel);  // every code times +inf: +-inf, or NaN for a zero code
      EXPECT_FALSE(r.exact());
    } else if (r.name == nan_code) {
      ++checked;
      EXPECT_GE(r.nonfinite, 1);  // the NaN, and whatever its 32-element block became
      EXPECT_FALSE(r.exact());
      EXPECT_FALSE(std::isnan(r.sqnr_db));  // the finite rest is measured, not poisoned
    } else {
      EXPECT_TRUE(r.exact()) << r.name;  // the others are untouched power-of-two requantizations
    }
  }
  EXPECT_EQ(checked, 2);
  auto inspect = mx8::convert::inspect_checkpoint(tmp / "ds", kLlama.string(), 2);
  checked = 0;
  for (const auto& t : inspect.tensors) {
    if (t.name == inf_scale) {
      ++checked;
      EXPECT_EQ(t.nonfinite, inf_numel);
    } else if (t.name == nan_code) {
      ++checked;
      EXPECT_EQ(t.nonfinite, 1);  // the one NaN element against the finite original
      EXPECT_FALSE(std::isnan(t.sqnr_db));
      EXPECT_TRUE(std::isfinite(t.sqnr_db));  // the rest is an ordinary E4M3 rounding
    } else {
      EXPECT_EQ(t.nonfinite, 0) << t.name;
    }
  }
  EXPECT_EQ(checked, 2);
}

TEST(Convert, SchemeNamesRoundTrip) {
  for (Scheme s : {Scheme::ds_fp8, Scheme::mxfp8, Scheme::mxfp4, Scheme::bf16})
    EXPECT_EQ(mx8::convert::parse_scheme(mx8::convert::scheme_name(s)), s) << mx8::convert::scheme_name(s);
  EXPECT_EQ(mx8::convert::parse_scheme("fp8"), std::nullopt);
  EXPECT_EQ(mx8::convert::parse_scheme(""), std::nullopt);
}

// Rows of any length are quantized (the last block of a row is ragged), except to MXFP4, which packs
// two values a byte and keeps an odd row length as it is. Linear weights left unquantized are named
// in the output config's modules_to_not_convert, so that loaders leave them alone too.
TEST(Convert, RaggedRowsQuantizeAndKeptLinearsAreNamed) {
  TempDir tmp;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  auto random_f32 = [&](size_t n) {
    std::vector<uint8_t> bytes(4 * n);
    for (size_t i = 0; i < n; ++i) {
      const float v = normal(rng);
      std::memcpy(&bytes[4 * i], &v, 4);
    }
    return bytes;
  };
  fs::create_directories(tmp / "in");
  mx8::io::write_safetensors(
      tmp / "in/model.safetensors",
      {{{"model.layers.0.mlp.down_proj.weight", DType::F32, {3, 37}}, random_f32(3 * 37)},
       {{"model.layers.0.mlp.up_proj.weight", DType::F32, {4, 64}}, random_f32(4 * 64)},
       {{"lm_head.weight", DType::F32, {5, 64}}, random_f32(5 * 64)}});
  std::ofstream(tmp / "in/config.json") << R"({"model_type":"llama"})";
  const std::string down = "model.layers.0.mlp.down_proj.weight";
  auto in = mx8::io::SafetensorsModel::open(tmp / "in");
  for (Scheme s : {Scheme::ds_fp8, Scheme::mxfp8, Scheme::mxfp4}) {
    const std::string out = tmp / mx8::convert::scheme_name(s);
    mx8::convert::convert_checkpoint(tmp / "in", out, opts(s));
    auto m = mx8::io::SafetensorsModel::open(out);
    const nlohmann::json q = mx8::io::read_json_file(out + "/config.json").at("quantization_config");
    if (s == Scheme::mxfp4) {
      EXPECT_EQ(m.get(down).dtype(), DType::F32);
      EXPECT_EQ(values(m.get(down)), values(in.get(down)));
      EXPECT_EQ(q["modules_to_not_convert"],
                nlohmann::json({"lm_head", "model.layers.0.mlp.down_proj"}));  // name order
      continue;
    }
    const std::string scale = s == Scheme::ds_fp8 ? down + "_scale_inv" : down + "_scale";
    ASSERT_NE(m.find(scale), nullptr) << mx8::convert::scheme_name(s);
    const auto x = values(in.get(down)), y = dequantize(m, down, s);
    ASSERT_EQ(x.size(), y.size());
    const auto& sc = m.get(scale);
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t r = i / 37, c = i % 37;
      const float block_scale = s == Scheme::ds_fp8
                                    ? f32_at(sc.data, c / 128)
                                    : std::ldexp(1.0f, int(sc.data[r * sc.shape()[1] + c / 32]) - 127);
      EXPECT_TRUE(within_bound(x[i], y[i], block_scale, 3, -6)) << i << " x=" << x[i] << " y=" << y[i];
    }
    EXPECT_EQ(q["modules_to_not_convert"], nlohmann::json({"lm_head"})) << mx8::convert::scheme_name(s);
  }
}

// Sources read exactly: an F64 tensor, and an FP8 checkpoint's weight larger than the converter's
// 16 MB read piece, so its rows arrive in two pieces and the second piece's scales start at block
// row 64 (each value an E4M3 code times a power of two, which BF16 holds exactly).
TEST(Convert, F64AndMultiPieceFp8SourcesReadExactly) {
  TempDir tmp;
  fs::create_directories(tmp / "in");
  std::vector<uint8_t> f64(4 * 64 * 8);
  for (size_t i = 0; i < 4 * 64; ++i) {
    const double v = (double(i) - 100.0) / 8.0;
    std::memcpy(&f64[8 * i], &v, 8);
  }
  const int64_t R = 8448, C = 2048, gr = R / 128, gc = C / 128;
  std::mt19937 rng(11);
  std::vector<uint8_t> codes(size_t(R * C));
  for (uint8_t& c : codes) {
    c = uint8_t(rng());
    if ((c & 0x7F) == 0x7F) c = 0x40;  // no NaN codes
  }
  std::vector<uint8_t> scales(size_t(gr * gc) * 4);
  for (int64_t b = 0; b < gr * gc; ++b) {
    const float s = std::ldexp(1.0f, int(rng() % 21) - 10);
    std::memcpy(&scales[4 * b], &s, 4);
  }
  mx8::io::write_safetensors(tmp / "in/model.safetensors",
                             {{{"a.weight", DType::F64, {4, 64}}, f64},
                              {{"w.weight", DType::F8_E4M3, {R, C}}, codes},
                              {{"w.weight_scale_inv", DType::F32, {gr, gc}}, scales}});
  const auto report = mx8::convert::convert_checkpoint(tmp / "in", tmp / "out", opts(Scheme::bf16));
  EXPECT_EQ(report.in_bytes, f64.size() + codes.size() + scales.size());  // every tensor's bytes, once
  auto out = mx8::io::SafetensorsModel::open(tmp / "out");
  const std::vector<float> a = values(out.get("a.weight"));
  ASSERT_EQ(a.size(), 4u * 64);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i], float((double(i) - 100.0) / 8.0)) << i;
  const std::vector<float> w = values(out.get("w.weight"));
  ASSERT_EQ(w.size(), size_t(R * C));
  for (int64_t r : {int64_t(0), int64_t(127), int64_t(8191), int64_t(8192), int64_t(8320), R - 1})
    for (int64_t c = 0; c < C; ++c) {
      const float expect = mx8::format::e4m3_to_f32(codes[size_t(r * C + c)]) *
                           f32_at(scales.data(), size_t((r / 128) * gc + c / 128));
      ASSERT_EQ(w[size_t(r * C + c)], expect) << r << ", " << c;
    }
}
