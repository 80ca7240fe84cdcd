// Hugging Face config.json reader.
#include "mx8/io/hf_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "mx8/error.h"
#include "mx8/util/json_parse.h"

namespace mx8::io {

namespace {

int64_t get_int(const nlohmann::json& j, const char* key, int64_t fallback, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const auto& v = j[key];
  if (!v.is_number_integer()) throw Error(what + ": \"" + key + "\" is not an integer");
  return v.get<int64_t>();
}

double get_number(const nlohmann::json& j, const char* key, double fallback, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) throw Error(what + ": \"" + key + "\" is not a number");
  return j[key].get<double>();
}

std::string get_string(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_string()) return {};
  return j[key].get<std::string>();
}

// quantization_config.weight_block_size: [rows, cols] of each scale block, or empty when absent.
// Readers divide by these numbers, so anything but two sane positive integers is an error here,
// where the file can be named, rather than a division by zero (or a nonsense grid) later.
std::vector<int64_t> read_block_size(const nlohmann::json& q, const std::string& what) {
  if (!q.contains("weight_block_size") || q["weight_block_size"].is_null()) return {};
  // 2^16 is far above any block size in use (128) and still leaves grid arithmetic far from overflow.
  constexpr int64_t kMaxBlock = 1 << 16;
  const auto& b = q["weight_block_size"];
  const std::string field = what + ": quantization_config.weight_block_size " + b.dump();
  if (!b.is_array() || b.size() != 2) throw Error(field + " is not a list of two integers");
  std::vector<int64_t> out;
  for (const auto& v : b) {
    // is_number_integer() is false for 128.5 and 1e30 (JSON floats); an unsigned value above
    // int64's range cannot pass the bound after this check either.
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(kMaxBlock)))
      throw Error(field + " is not a list of two integers");
    const int64_t n = v.get<int64_t>();
    if (n < 1 || n > kMaxBlock)
      throw Error(field + ": each size must be between 1 and " + std::to_string(kMaxBlock));
    out.push_back(n);
  }
  return out;
}

}  // namespace

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  // nlohmann's lexer takes a NUL byte for the end of input, so "{...}\0junk" would parse; JSON text
  // never contains one, and a file with trailing bytes is damaged, not a config.
  if (const size_t nul = text.find('\0'); nul != std::string::npos)
    throw Error(path + ": not valid JSON: a NUL byte at offset " + std::to_string(nul));
  try {
    return parse_json_bounded(text, path);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
}

HfConfig HfConfig::from_json(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw Error(what + ": config is not a JSON object");
  HfConfig c;
  c.raw = j;
  c.model_type = get_string(j, "model_type");
  if (j.contains("architectures") && j["architectures"].is_array())
    for (const auto& a : j["architectures"])
      if (a.is_string()) c.architectures.push_back(a.get<std::string>());
  c.vocab_size = get_int(j, "vocab_size", 0, what);
  c.hidden_size = get_int(j, "hidden_size", 0, what);
  c.intermediate_size = get_int(j, "intermediate_size", 0, what);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", 0, what);
  c.num_attention_heads = get_int(j, "num_attention_heads", 0, what);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, what);
  c.head_dim =
      get_int(j, "head_dim", c.num_attention_heads ? c.hidden_size / c.num_attention_heads : 0, what);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 0, what);
  c.rms_norm_eps = get_number(j, "rms_norm_eps", 1e-6, what);
  // Booleans are read only when they are booleans: json::value() would throw a non-mx8 exception.
  // An absent tie_word_embeddings is false, the default of transformers' Llama, Mistral, Qwen2 and
  // Qwen3 configs (so such a folder needs its lm_head.weight).
  c.tie_word_embeddings = j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean() &&
                          j["tie_word_embeddings"].get<bool>();
  c.attention_bias =
      j.contains("attention_bias") && j["attention_bias"].is_boolean() && j["attention_bias"].get<bool>();
  // use_sliding_window switches the window off where it is false; transformers' Qwen2/Qwen3 configs
  // default it to false, so there a window needs it set.
  const bool qwen = c.model_type == "qwen2" || c.model_type == "qwen3";
  bool use_window = !qwen;
  if (j.contains("use_sliding_window") && j["use_sliding_window"].is_boolean())
    use_window = j["use_sliding_window"].get<bool>();
  if (use_window && j.contains("sliding_window") && j["sliding_window"].is_number_integer())
    c.sliding_window = j["sliding_window"].get<int64_t>();
  if (c.sliding_window.value_or(0) > 0 && c.num_hidden_layers > 0) {
    // Which layers slide: transformers' `layer_types` where the config lists them, else Qwen2/Qwen3's
    // max_window_layers (the layers from it on), else all (Mistral). mx8 applies one window to every
    // layer or to none: a mix is refused rather than computed wrongly.
    int64_t sliding = c.num_hidden_layers;
    if (j.contains("layer_types") && j["layer_types"].is_array()) {
      sliding = 0;
      for (const auto& t : j["layer_types"]) {
        const std::string type = t.is_string() ? t.get<std::string>() : "";
        if (type == "sliding_attention")
          ++sliding;
        else if (type != "full_attention")
          throw Error(what + ": layer type '" + (t.is_string() ? type : t.dump()) +
                      "' (mx8 runs full_attention and sliding_attention layers)");
      }
    } else if (qwen && j.contains("max_window_layers")) {
      const int64_t from = get_int(j, "max_window_layers", 0, what);
      sliding = std::max<int64_t>(0, c.num_hidden_layers - std::max<int64_t>(0, from));
    }
    if (sliding == 0)
      c.sliding_window.reset();
    else if (sliding < c.num_hidden_layers)
      throw Error(what + ": a sliding window on " + std::to_string(sliding) + " of " +
                  std::to_string(c.num_hidden_layers) +
                  " layers (mx8 applies a window to every layer or to none)");
  }
  c.dtype = get_string(j, "torch_dtype");
  if (c.dtype.empty()) c.dtype = get_string(j, "dtype");

  // RoPE: transformers v4 has rope_theta and rope_scaling at top level; v5 folds both into
  // rope_parameters {"rope_type": "default"|"llama3"|..., "rope_theta": ..., ...}.
  c.rope_theta = get_number(j, "rope_theta", 10000.0, what);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) c.rope_scaling = j["rope_scaling"];
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const auto& rp = j["rope_parameters"];
    c.rope_theta = get_number(rp, "rope_theta", c.rope_theta, what);
    std::string type = get_string(rp, "rope_type");
    if (!type.empty() && type != "default") c.rope_scaling = rp;
  }

  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_token_id = j["bos_token_id"].get<int64_t>();
  if (j.contains("eos_token_id")) {
    const auto& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int64_t>());
    if (e.is_array())
      for (const auto& x : e)
        if (x.is_number_integer()) c.eos_token_ids.push_back(x.get<int64_t>());
  }

  if (j.contains("quantization_config") && j["quantization_config"].is_object()) {
    const auto& q = j["quantization_config"];
    HfFp8QuantConfig qc;
    qc.quant_method = get_string(q, "quant_method");
    qc.fmt = get_string(q, "fmt");
    qc.scale_fmt = get_string(q, "scale_fmt");
    qc.activation_scheme = get_string(q, "activation_scheme");
    qc.weight_block_size = read_block_size(q, what);
    if (q.contains("modules_to_not_convert") && q["modules_to_not_convert"].is_array())
      for (const auto& s : q["modules_to_not_convert"])
        if (s.is_string()) qc.modules_to_not_convert.push_back(s.get<std::string>());
    c.quantization = qc;
  }
  return c;
}

HfConfig HfConfig::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "config.json").string() : path;
  return from_json(read_json_file(file), file);
}

}  // namespace mx8::io
