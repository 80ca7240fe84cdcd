// A GGUF model whose weights come in every block type mx8 decodes (the K-quants, the legacy 4- and
// 5-bit types, IQ4_NL/IQ4_XS, Q8_0; and F16) runs exactly as the same model stored in F32 with
// the values those blocks decode to: the same logits, bit for bit, with the weights as given (f32)
// and quantized at load to fp8. The decoders themselves are held to ggml's in
// tests/io/gguf_ggml_reference_test.cpp; this test covers the loading around them (each tensor's
// type, block rows and storage order) and split files. The K-quants need rows of 256 values, which the
// bundled stories260K (width 64) does not have, so the model is built field by field: a 2-layer
// Llama of width 256, random blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gguf_bytes.h"
#include "mx8/backend/backend.h"
#include "mx8/convert/convert.h"
#include "mx8/io/gguf.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"
#include "temp_dir.h"

namespace {

using namespace mx8;
using io::GgmlType;

struct Tensor {
  std::string name;
  std::vector<uint64_t> ne;  // fastest-first
  GgmlType type;
  std::vector<uint8_t> data;
};

using test::GgufBytes;

// The model's file, or part `part` of `parts` of it split as llama.cpp's gguf-split splits (metadata in
// the first part, split.no / split.count / split.tensors.count in every part: llama.cpp writes them as
// uint16 and int32, mx8 reads any integer type).
std::vector<uint8_t> model_gguf(const std::vector<Tensor>& tensors, uint32_t part = 0, uint32_t parts = 1,
                                uint32_t all_tensors = 0) {
  GgufBytes g;
  g.header(tensors.size(), (part == 0 ? 7 : 0) + (parts > 1 ? 3 : 0));
  if (part == 0) {
    g.text("general.architecture", "llama");
    g.u32("llama.embedding_length", 256);
    g.u32("llama.block_count", 2);
    g.u32("llama.feed_forward_length", 256);
    g.u32("llama.attention.head_count", 2);
    g.u32("llama.attention.head_count_kv", 1);
    g.u32("llama.context_length", 64);
  }
  if (parts > 1) {
    g.u32("split.no", part);
    g.u32("split.count", parts);
    g.u32("split.tensors.count", all_tensors);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors) {
    g.tensor_info(t.name, t.ne, uint32_t(t.type), offset);
    offset += (t.data.size() + 31) / 32 * 32;
  }
  for (const Tensor& t : tensors) {
    while (g.b.size() % 32) g.b.push_back(0);
    g.b.insert(g.b.end(), t.data.begin(), t.data.end());
  }
  return g.b;
}

// Random blocks whose every byte is below 0x20: each f16 field (scale, minimum) then has an exponent
// of at most 7, so it is finite and below 2^-7, and the activations stay far from overflow, while the
// low nibbles (and most of each field's bits) still take every value.
Tensor random_tensor(const std::string& name, uint64_t cols, uint64_t rows, GgmlType type,
                     std::mt19937& rng) {
  const uint64_t bytes = rows * cols / io::ggml_block_elems(type) * io::ggml_block_bytes(type);
  Tensor t{name, {cols, rows}, type, std::vector<uint8_t>(bytes)};
  for (uint8_t& v : t.data) v = uint8_t(rng() & 0x1F);
  return t;
}

// The same tensor stored as F32: the values mx8 decodes its blocks to.
Tensor as_f32(const Tensor& t) {
  std::vector<float> v(t.ne[0] * t.ne[1]);
  io::ggml_dequantize(t.type, t.data.data(), v.data(), v.size());
  Tensor out{t.name, t.ne, GgmlType::kF32, std::vector<uint8_t>(v.size() * 4)};
  std::memcpy(out.data.data(), v.data(), out.data.size());
  return out;
}

std::vector<float> last_logits(const std::string& path, model::WeightMode weights) {
  auto be = backend::make_cpu_backend(2);
  model::LoadOptions lo;
  lo.weights = weights;
  auto m = model::load_llama(path, *be, lo);
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 16;
  runtime::Engine eng(*m, *be, eo);
  eng.keep_logits(true);
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = 2;
  const int id = eng.add({3, 141, 59, 26, 5, 35}, gp);
  eng.step();
  return *eng.last_logits(id);
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

// The model in block types (`blocks`) and as F32 (`f32`), the norms the same in both.
struct TwoModels {
  std::vector<Tensor> blocks, f32;
};

TwoModels make_models() {
  std::mt19937 rng(2026);
  const uint64_t d = 256, kv = 128, ffn = 256, vocab = 256;
  TwoModels m;
  std::vector<Tensor>& blocks = m.blocks;
  blocks = {
      random_tensor("token_embd.weight", d, vocab, GgmlType::kQ6_K, rng),
      random_tensor("output.weight", d, vocab, GgmlType::kQ8_0, rng),
  };
  const GgmlType types[2][7] = {{GgmlType::kQ4_K, GgmlType::kQ5_K, GgmlType::kQ3_K, GgmlType::kQ2_K,
                                 GgmlType::kQ6_K, GgmlType::kIQ4_XS, GgmlType::kQ4_0},
                                {GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kIQ4_NL,
                                 GgmlType::kQ8_0, GgmlType::kF16, GgmlType::kQ5_K}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const GgmlType* t = types[l];
    blocks.push_back(random_tensor(p + "attn_q.weight", d, d, t[0], rng));
    blocks.push_back(random_tensor(p + "attn_k.weight", d, kv, t[1], rng));
    blocks.push_back(random_tensor(p + "attn_v.weight", d, kv, t[2], rng));
    blocks.push_back(random_tensor(p + "attn_output.weight", d, d, t[3], rng));
    blocks.push_back(random_tensor(p + "ffn_gate.weight", d, ffn, t[4], rng));
    blocks.push_back(random_tensor(p + "ffn_up.weight", d, ffn, t[5], rng));
    blocks.push_back(random_tensor(p + "ffn_down.weight", ffn, d, t[6], rng));
  }
  std::vector<Tensor>& f32 = m.f32;
  for (const Tensor& t : blocks) f32.push_back(as_f32(t));
  // The norms (F32 in every GGUF) are the same in both files.
  std::vector<std::string> norm_names = {"output_norm.weight"};
  for (int l = 0; l < 2; ++l)
    for (const char* n : {"attn_norm.weight", "ffn_norm.weight"})
      norm_names.push_back("blk." + std::to_string(l) + "." + n);
  for (const std::string& n : norm_names) {
    Tensor t{n, {d}, GgmlType::kF32, std::vector<uint8_t>(d * 4)};
    std::vector<float> v(d);
    for (float& x : v) x = 0.5f + float(rng() % 1000) / 1000.0f;
    std::memcpy(t.data.data(), v.data(), t.data.size());
    blocks.push_back(t);
    f32.push_back(t);
  }
  return m;
}

TEST(GgufBlockTypes, AModelInEveryBlockTypeRunsAsItsDecodedF32Twin) {
  const uint64_t vocab = 256;
  const TwoModels m = make_models();
  const std::vector<Tensor>&blocks = m.blocks, &f32 = m.f32;
  test::TempDir dir;
  write_file(dir / "blocks.gguf", model_gguf(blocks));
  write_file(dir / "f32.gguf", model_gguf(f32));
  for (model::WeightMode w : {model::WeightMode::as_given, model::WeightMode::fp8}) {
    const std::vector<float> from_blocks = last_logits(dir / "blocks.gguf", w);
    const std::vector<float> from_f32 = last_logits(dir / "f32.gguf", w);
    ASSERT_EQ(from_blocks.size(), vocab);
    // Not a degenerate model: finite logits that differ from token to token.
    float lo = from_f32[0], hi = from_f32[0];
    for (float x : from_f32) {
      ASSERT_TRUE(std::isfinite(x));
      lo = std::min(lo, x), hi = std::max(hi, x);
    }
    EXPECT_GT(hi - lo, 1.0f);
    // The same f32 weights (or the same fp8 codes made from them), the same arithmetic: equal bits.
    EXPECT_EQ(from_blocks, from_f32) << "weights mode " << int(w);
  }
}

// A model split over three files as llama.cpp's gguf-split writes it loads as the one file does, with
// output.weight in the last file (a loader that looked for it only in the first would take the model
// for a tied one: other logits). The split's faults are errors that name the file.
TEST(GgufBlockTypes, ASplitModelLoadsAsItsOneFile) {
  std::vector<Tensor> tensors = make_models().blocks;
  // output.weight last, as llama.cpp's converters write it; the parts are 9, 9 and the rest.
  std::stable_partition(tensors.begin(), tensors.end(),
                        [](const Tensor& t) { return t.name != "output.weight"; });
  test::TempDir dir;
  write_file(dir / "one.gguf", model_gguf(tensors));
  const uint32_t n = uint32_t(tensors.size());
  const std::vector<Tensor> parts[3] = {{tensors.begin(), tensors.begin() + 9},
                                        {tensors.begin() + 9, tensors.begin() + 18},
                                        {tensors.begin() + 18, tensors.end()}};
  for (uint32_t k = 0; k < 3; ++k)
    write_file(dir / ("m-0000" + std::to_string(k + 1) + "-of-00003.gguf"), model_gguf(parts[k], k, 3, n));
  const std::vector<float> one = last_logits(dir / "one.gguf", model::WeightMode::as_given);
  EXPECT_EQ(last_logits(dir / "m-00001-of-00003.gguf", model::WeightMode::as_given), one);
  EXPECT_FALSE(model::read_llama_config(dir / "m-00001-of-00003.gguf").tied_embeddings);
  // mx8 convert reads one file: it refuses a split model rather than drop the other files' tensors.
  try {
    convert::convert_checkpoint(dir / "m-00001-of-00003.gguf", dir / "out", {});
    ADD_FAILURE() << "convert read a split GGUF";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("is one of a 3-file split model"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));

  auto error_of = [&](const std::string& path) {
    auto be = backend::make_cpu_backend(1);
    try {
      model::load_llama(path, *be, {});
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(
      error_of(dir / "m-00002-of-00003.gguf").find("is part 2 of a 3-file split model: open its first file"),
      std::string::npos);
  std::filesystem::rename(dir / "m-00003-of-00003.gguf", dir / "elsewhere.gguf");
  EXPECT_NE(error_of(dir / "m-00001-of-00003.gguf").find("m-00003-of-00003.gguf"), std::string::npos);
  // A third part that holds the second's tensors again.
  write_file(dir / "m-00003-of-00003.gguf", model_gguf(parts[1], 2, 3, n));
  EXPECT_NE(error_of(dir / "m-00001-of-00003.gguf").find("is in an earlier file of the split too"),
            std::string::npos);
  // A part count that disagrees with the first file's.
  write_file(dir / "m-00003-of-00003.gguf", model_gguf(parts[2], 2, 4, n));
  EXPECT_NE(error_of(dir / "m-00001-of-00003.gguf").find("is not part 3 of 3"), std::string::npos);
}

}  // namespace
