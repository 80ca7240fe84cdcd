// Hugging Face config.json: the fields the Llama family (Llama 2/3/3.1, Mistral, Qwen2/2.5, Qwen3)
// needs, with defaults as transformers applies them, plus the raw JSON for everything else.
// Handles both spellings transformers has used: top-level rope_theta/rope_scaling (v4) and
// rope_parameters (v5); torch_dtype (v4) and dtype (v5).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace mx8::io {

// config.json "quantization_config" of a fine-grained FP8 checkpoint (DeepSeek-V3/V3.1 style).
struct HfFp8QuantConfig {
  std::string quant_method;                // "fp8"
  std::string fmt;                         // "e4m3"
  std::string scale_fmt;                   // "ue8m0", or empty (float32 scales)
  std::vector<int64_t> weight_block_size;  // e.g. {128, 128}
  std::string activation_scheme;           // "dynamic"
  std::vector<std::string> modules_to_not_convert;
};

struct HfConfig {
  nlohmann::json raw;      // the whole file
  std::string model_type;  // "llama", "qwen2", "qwen3", "mistral", ...
  std::vector<std::string> architectures;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nlohmann::json rope_scaling;  // null when absent (e.g. {"rope_type": "llama3", "factor": 8, ...})
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Qwen2 has q/k/v biases without saying so in config: see qkv_bias()
  std::optional<int64_t> sliding_window;
  std::string dtype;  // "bfloat16", "float32", ... (torch_dtype or dtype), empty if absent
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be a number or a list
  std::optional<HfFp8QuantConfig> quantization;

  // Whether the q/k/v projections carry biases (Qwen2 always; others when attention_bias is set).
  bool qkv_bias() const { return attention_bias || model_type == "qwen2"; }

  // Parses an already-read JSON object; `what` names it in errors.
  static HfConfig from_json(const nlohmann::json& j, const std::string& what);
  // Reads `path`: a config.json file or a folder containing one.
  static HfConfig load(const std::string& path);
};

// Reads a JSON file; throws mx8::Error naming the file on I/O or syntax errors.
nlohmann::json read_json_file(const std::string& path);

}  // namespace mx8::io
