// Llama-family configuration from GGUF metadata or a Hugging Face config.json, and RoPE frequencies.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include "model/model_source.h"
#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "mx8/io/hf_config.h"
#include "mx8/model/llama.h"

namespace mx8::model {

namespace {

bool supported_arch(const std::string& a) {
  return a == "llama" || a == "mistral" || a == "qwen2" || a == "qwen3";
}

[[noreturn]] void unsupported_arch(const std::string& arch, const std::string& path) {
  throw Error("model " + path + ": architecture '" + arch +
              "' is not supported (mx8 runs the Llama family: llama, mistral, qwen2, qwen3)");
}

// Bounds a RoPE scaling's original context, so that factor x context (supported_context) stays a
// number of positions that int64 holds; real models say 4096 to 131072.
constexpr int64_t kMaxContextPositions = int64_t(1) << 40;

void check_config(const LlamaConfig& c, const std::string& path) {
  auto bad = [&](const std::string& what) { throw Error("model " + path + ": " + what); };
  const std::string sizes = "(vocab " + std::to_string(c.vocab) + ", dim " + std::to_string(c.dim) +
                            ", layers " + std::to_string(c.n_layers) + ", heads " +
                            std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + ", head_dim " +
                            std::to_string(c.head_dim) + ", ffn " + std::to_string(c.ffn) + ")";
  if (c.vocab <= 0 || c.dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
      c.head_dim <= 0 || c.ffn <= 0)
    bad("config has a non-positive size " + sizes);
  // Far past any released model (Llama-3.1-405B: dim 16384, ffn 53248, 126 layers, 128 heads; the
  // largest vocabularies hold ~256K tokens), and small enough that every product of sizes mx8 forms
  // (a tensor's elements, a KV cache of 131072 positions) stays far inside 64 bits.
  if (c.vocab > (1 << 24) || c.dim > (1 << 18) || c.ffn > (1 << 20) || c.n_layers > (1 << 12) ||
      c.n_heads > (1 << 12) || c.head_dim > (1 << 12))
    bad("config has a size past mx8's bounds (vocab 2^24, dim 2^18, ffn 2^20, layers, heads and head_dim "
        "2^12) " +
        sizes);
  if (c.n_heads % c.n_kv_heads != 0)
    bad("attention heads " + std::to_string(c.n_heads) + " are not a multiple of kv heads " +
        std::to_string(c.n_kv_heads));
  if (c.head_dim % 2 != 0) bad("head_dim " + std::to_string(c.head_dim) + " is odd (RoPE rotates pairs)");
  if (c.max_position < 0) bad("context length " + std::to_string(c.max_position) + " is negative");
  if (c.sliding_window < 0 || c.sliding_window > 0x7fffffff)
    bad("sliding window " + std::to_string(c.sliding_window) + " is not a position count");
  // RoPE's base and rmsnorm's epsilon: a bad value would not fail, it would make every output NaN.
  if (!(c.rope_theta > 0.0) || !std::isfinite(c.rope_theta))
    bad("rope_theta " + std::to_string(c.rope_theta) + " is not a positive base");
  if (!(c.norm_eps >= 0.0f) || !std::isfinite(c.norm_eps))
    bad("rms_norm_eps " + std::to_string(c.norm_eps) + " is not a non-negative number");
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::linear && (!(s.factor > 0.0) || !std::isfinite(s.factor)))
    bad("linear RoPE scaling factor " + std::to_string(s.factor) + " is not a positive number");
  if (s.type == RopeScaling::Type::llama3 &&
      (!(s.factor > 0.0) || !(s.low_freq_factor > 0.0) || !(s.high_freq_factor > s.low_freq_factor) ||
       !std::isfinite(s.factor) || !std::isfinite(s.high_freq_factor) || s.original_max_position <= 0 ||
       s.original_max_position > kMaxContextPositions))
    bad("llama3 RoPE scaling: factor " + std::to_string(s.factor) + ", low_freq_factor " +
        std::to_string(s.low_freq_factor) + ", high_freq_factor " + std::to_string(s.high_freq_factor) +
        " and original context " + std::to_string(s.original_max_position) +
        " must be positive, with high_freq_factor > low_freq_factor");
  if (s.type == RopeScaling::Type::yarn &&
      (!(s.factor >= 1.0) || !std::isfinite(s.factor) || s.original_max_position <= 0 ||
       s.original_max_position > kMaxContextPositions))
    bad("YaRN factor " + std::to_string(s.factor) + " (must be finite, >= 1) or original context " +
        std::to_string(s.original_max_position) + " (must be 1.." + std::to_string(kMaxContextPositions) +
        ")");
  if (s.type == RopeScaling::Type::dynamic &&
      (!(s.factor >= 1.0) || !std::isfinite(s.factor) || s.original_max_position <= 0))
    bad("dynamic RoPE scaling: factor " + std::to_string(s.factor) + " (must be finite, >= 1) and context " +
        std::to_string(s.original_max_position) + " (must be positive: mx8 runs the model up to it)");
  if (s.type == RopeScaling::Type::yarn &&
      !(std::isfinite(s.beta_fast) && std::isfinite(s.beta_slow) && s.beta_fast > 0 && s.beta_slow > 0 &&
        std::isfinite(s.attention_factor) && s.attention_factor > 0))
    bad("YaRN beta_fast " + std::to_string(s.beta_fast) + ", beta_slow " + std::to_string(s.beta_slow) +
        " and attention_factor " + std::to_string(s.attention_factor) + " must be positive numbers");
}

// rope_scaling's fields, checked: nlohmann's value<int64_t>() of 1e30 is undefined behaviour and of a
// string throws its own exception, so each field is read by type here, where the file can be named.
struct ScalingFields {
  const nlohmann::json& rs;
  const std::string& path;

  bool has(const char* key) const { return rs.contains(key) && !rs[key].is_null(); }
  [[noreturn]] void bad(const char* key, const char* what) const {
    throw Error("model " + path + ": rope_scaling." + key + " " + rs[key].dump() + " is not " + what);
  }
  double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    if (!rs[key].is_number()) bad(key, "a number");
    return rs[key].get<double>();
  }
  int64_t integer(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    if (!rs[key].is_number_integer() || (rs[key].is_number_unsigned() && rs[key].get<uint64_t>() > INT64_MAX))
      bad(key, "an integer");
    return rs[key].get<int64_t>();
  }
  std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    if (!rs[key].is_string()) bad(key, "a string");
    return rs[key].get<std::string>();
  }
  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!rs[key].is_boolean()) bad(key, "true or false");
    return rs[key].get<bool>();
  }
};

// transformers' get_mscale: YaRN's scale of cos and sin for a factor, weighted by mscale.
double yarn_mscale(double factor, double mscale = 1.0) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

}  // namespace

LlamaConfig config_from_gguf(const GgufModelFiles& files) {
  const io::GgufFile& g = files.meta();  // the metadata; tensors may be in any file of a split model
  LlamaConfig c;
  const std::string arch = g.require_string("general.architecture");
  if (!supported_arch(arch)) unsupported_arch(arch, g.path());
  c.arch = arch;
  auto key = [&](const std::string& k) { return arch + "." + k; };
  c.dim = g.require_int(key("embedding_length"));
  c.n_layers = g.require_int(key("block_count"));
  c.ffn = g.require_int(key("feed_forward_length"));
  c.n_heads = g.require_int(key("attention.head_count"));
  c.n_kv_heads = g.get_int(key("attention.head_count_kv"), c.n_heads);
  c.head_dim = g.get_int(key("attention.key_length"), c.n_heads > 0 ? c.dim / c.n_heads : 0);
  c.norm_eps = float(g.get_float(key("attention.layer_norm_rms_epsilon"), 1e-5));
  c.rope_theta = g.get_float(key("rope.freq_base"), 10000.0);
  c.max_position = g.get_int(key("context_length"), 0);  // 0: the file does not say
  c.sliding_window = g.get_int(key("attention.sliding_window"), 0);
  std::string scaling = g.get_string(key("rope.scaling.type"), "none");
  if (scaling == "linear") {
    c.rope_scaling.type = RopeScaling::Type::linear;
    c.rope_scaling.factor = g.require_float(key("rope.scaling.factor"));
  } else if (scaling == "yarn") {
    // llama.cpp writes Qwen2.5's YaRN as factor and original context; beta_fast and beta_slow, where
    // a config gave them, as yarn_beta_fast and yarn_beta_slow (the same rotations as transformers').
    RopeScaling& y = c.rope_scaling;
    y.type = RopeScaling::Type::yarn;
    y.factor = g.require_float(key("rope.scaling.factor"));
    y.original_max_position = g.require_int(key("rope.scaling.original_context_length"));
    y.beta_fast = g.get_float(key("rope.scaling.yarn_beta_fast"), y.beta_fast);
    y.beta_slow = g.get_float(key("rope.scaling.yarn_beta_slow"), y.beta_slow);
    y.attention_factor = yarn_mscale(y.factor);
    // llama.cpp multiplies its own attention factor by yarn_attn_factor, where transformers replaces
    // it with a config's attention_factor, and the converter writes the one as the other; extrapolation
    // and log multipliers change the factor in llama.cpp's ways. Which a file means is unknowable, so
    // these are refused rather than guessed (the standard values, where there are ones, are taken).
    const bool standard = !g.has(key("rope.scaling.yarn_attn_factor")) &&
                          g.get_float(key("rope.scaling.yarn_ext_factor"), 1.0) == 1.0 &&
                          g.get_float(key("rope.scaling.yarn_log_multiplier"), 0.0) == 0.0;
    if (!standard)
      throw Error("model " + g.path() + ": YaRN with " + key("rope.scaling.yarn_attn_factor") +
                  ", a yarn_ext_factor other than 1 or a nonzero yarn_log_multiplier is not supported "
                  "(llama.cpp and transformers read them differently)");
  } else if (scaling != "none") {
    throw Error("model " + g.path() + ": RoPE scaling type '" + scaling +
                "' is not supported (none, linear, yarn, llama3)");
  }
  // llama.cpp writes Llama-3.1's llama3 scaling as a tensor of per-pair frequency divisors.
  if (files.find_tensor("rope_freqs.weight")) c.rope_scaling.type = RopeScaling::Type::llama3;
  // GGUF "llama" Q/K weights are stored in Meta's interleaved-pair order; qwen2/qwen3 use NeoX halves.
  c.rope_style =
      arch == "llama" || arch == "mistral" ? backend::RopeStyle::interleaved : backend::RopeStyle::half;
  if (const io::GgufValue* t = g.find("tokenizer.ggml.tokens"); t && t->type == io::GgufValueType::kArray)
    c.vocab = int64_t(t->array_size);
  if (const io::GgufTensor* e = files.find_tensor("token_embd.weight"); e && e->ne.size() == 2)
    c.vocab = int64_t(e->ne[1]);
  c.vocab = g.get_int(key("vocab_size"), c.vocab);
  c.tied_embeddings = files.find_tensor("output.weight") == nullptr;
  c.qkv_bias = files.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = files.find_tensor("blk.0.attn_q_norm.weight") != nullptr;
  c.bos = int32_t(g.get_int("tokenizer.ggml.bos_token_id", -1));
  if (int64_t eos = g.get_int("tokenizer.ggml.eos_token_id", -1); eos >= 0) c.eos.push_back(int32_t(eos));
  if (int64_t eot = g.get_int("tokenizer.ggml.eot_token_id", -1); eot >= 0) c.eos.push_back(int32_t(eot));
  check_config(c, g.path());
  return c;
}

LlamaConfig config_from_hf(const io::HfConfig& h, const std::string& path) {
  LlamaConfig c;
  if (!supported_arch(h.model_type)) unsupported_arch(h.model_type, path);
  c.arch = h.model_type;
  c.vocab = h.vocab_size;
  c.dim = h.hidden_size;
  c.n_layers = h.num_hidden_layers;
  c.n_heads = h.num_attention_heads;
  c.n_kv_heads = h.num_key_value_heads;
  c.head_dim = h.head_dim;
  c.ffn = h.intermediate_size;
  c.norm_eps = float(h.rms_norm_eps);
  c.rope_theta = h.rope_theta;
  c.max_position = h.max_position_embeddings;
  c.sliding_window = h.sliding_window.value_or(0);
  c.rope_style = backend::RopeStyle::half;  // transformers' rotate_half (checkpoints are permuted for it)
  c.qkv_bias = h.qkv_bias();
  c.qk_norm = h.model_type == "qwen3";
  c.tied_embeddings = h.tie_word_embeddings;
  c.bos = h.bos_token_id ? int32_t(*h.bos_token_id) : -1;
  for (int64_t e : h.eos_token_ids) c.eos.push_back(int32_t(e));
  const nlohmann::json& rs = h.rope_scaling;
  if (rs.is_object()) {
    const ScalingFields f{rs, path};
    std::string type = f.string("rope_type", f.string("type", "default"));
    if (type == "llama3") {
      c.rope_scaling.type = RopeScaling::Type::llama3;
      c.rope_scaling.factor = f.number("factor", 8.0);
      c.rope_scaling.low_freq_factor = f.number("low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = f.number("high_freq_factor", 4.0);
      c.rope_scaling.original_max_position = f.integer("original_max_position_embeddings", 8192);
    } else if (type == "linear") {
      c.rope_scaling.type = RopeScaling::Type::linear;
      c.rope_scaling.factor = f.number("factor", 1.0);
    } else if (type == "yarn") {
      // transformers' _compute_yarn_parameters, field by field (a zero beta or mscale counts as absent
      // there, as Python's `or` and truthiness make it).
      RopeScaling& y = c.rope_scaling;
      y.type = RopeScaling::Type::yarn;
      y.original_max_position = f.integer("original_max_position_embeddings", h.max_position_embeddings);
      // Without a factor, transformers takes the ratio of the two context lengths.
      y.factor = f.has("factor") ? f.number("factor", 1.0)
                                 : double(h.max_position_embeddings) / double(y.original_max_position);
      y.beta_fast = f.number("beta_fast", 0.0);
      if (y.beta_fast == 0.0) y.beta_fast = 32.0;
      y.beta_slow = f.number("beta_slow", 0.0);
      if (y.beta_slow == 0.0) y.beta_slow = 1.0;
      y.truncate = f.boolean("truncate", true);
      // DeepSeek-V3 and Mistral's YaRN configs give mscale = mscale_all_dim = 1, a ratio of 1.
      const double mscale = f.number("mscale", 0.0), mscale_all_dim = f.number("mscale_all_dim", 0.0);
      const double from_mscale = mscale != 0.0 && mscale_all_dim != 0.0
                                     ? yarn_mscale(y.factor, mscale) / yarn_mscale(y.factor, mscale_all_dim)
                                     : yarn_mscale(y.factor);
      y.attention_factor = f.number("attention_factor", from_mscale);
    } else if (type == "dynamic") {
      // transformers' dynamic NTK: the model's own frequencies until a pass reaches past
      // max_position_embeddings (the original window where the config names one, the smaller of
      // the two here), new ones from the pass's length after that.
      RopeScaling& d = c.rope_scaling;
      d.type = RopeScaling::Type::dynamic;
      d.factor = f.number("factor", 1.0);
      d.original_max_position =
          std::min(h.max_position_embeddings,
                   f.integer("original_max_position_embeddings", h.max_position_embeddings));
    } else if (type != "default") {
      throw Error("model " + path + ": RoPE scaling type '" + type +
                  "' is not supported (default, linear, llama3, yarn, dynamic)");
    }
  }
  check_config(c, path);
  return c;
}

int64_t supported_context(const LlamaConfig& c) {
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::dynamic) return s.original_max_position;
  if (s.type != RopeScaling::Type::yarn) return c.max_position;
  // check_config bounds both; the product is still held below 2^62, where llround is defined.
  return std::max(c.max_position,
                  int64_t(std::llround(std::min(s.factor * double(s.original_max_position), 0x1p62))));
}

int64_t rope_position_limit(const LlamaConfig& c) {
  return c.rope_scaling.type == RopeScaling::Type::dynamic ? c.rope_scaling.original_max_position : 0;
}

std::vector<float> rope_inv_freq(const LlamaConfig& c) {
  const int half = int(c.head_dim / 2);
  std::vector<float> f(half);
  for (int j = 0; j < half; ++j)
    f[j] = 1.0f / std::pow(float(c.rope_theta), float(2 * j) / float(c.head_dim));
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::linear) {
    for (float& x : f) x = float(x / s.factor);
  } else if (s.type == RopeScaling::Type::llama3) {
    // transformers' _compute_llama3_parameters: long wavelengths divided by factor, short ones kept,
    // a linear blend in between.
    const double old_len = double(s.original_max_position);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    for (float& x : f) {
      const double inv = x;
      const double wavelen = 2 * M_PI / inv;
      double out = inv;
      if (wavelen > low_wavelen) {
        out = inv / s.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        out = (1 - smooth) * inv / s.factor + smooth * inv;
      }
      x = float(out);
    }
  } else if (s.type == RopeScaling::Type::yarn) {
    // transformers' _compute_yarn_parameters: bands that turn fewer than beta_slow times over the
    // original window are interpolated (divided by factor), more than beta_fast times kept, with a
    // linear ramp over the band indices in between (the correction range rounded outwards to whole
    // bands unless truncate is false).
    const double d = double(c.head_dim), base = c.rope_theta, orig = double(s.original_max_position);
    auto corr_dim = [&](double rotations) {
      return d * std::log(orig / (rotations * 2 * M_PI)) / (2 * std::log(base));
    };
    const double lo_at = corr_dim(s.beta_fast), hi_at = corr_dim(s.beta_slow);
    const double lo = std::max(s.truncate ? std::floor(lo_at) : lo_at, 0.0);
    double hi = std::min(s.truncate ? std::ceil(hi_at) : hi_at, d - 1);
    if (lo == hi) hi += 0.001;
    for (int j = 0; j < half; ++j) {
      const double ramp = std::clamp((j - lo) / (hi - lo), 0.0, 1.0);  // 0: kept, 1: interpolated
      f[j] = float(f[j] / s.factor * ramp + double(f[j]) * (1.0 - ramp));
    }
  }
  return f;
}

LlamaConfig read_llama_config(const std::string& path) {
  if (std::filesystem::is_directory(path) || std::filesystem::path(path).filename() == "config.json") {
    std::string folder =
        std::filesystem::is_directory(path) ? path : std::filesystem::path(path).parent_path().string();
    return config_from_hf(io::HfConfig::load(folder), folder);
  }
  return config_from_gguf(GgufModelFiles::open(path));
}

}  // namespace mx8::model
