// GGUF llama -> HF Llama names, Q/K permutation and config.json.
#include "mx8/convert/gguf_to_hf.h"

#include <cstring>
#include <regex>

#include "mx8/error.h"

namespace mx8::convert {

std::optional<std::string> gguf_llama_to_hf_name(const std::string& n) {
  if (n == "token_embd.weight") return "model.embed_tokens.weight";
  if (n == "output_norm.weight") return "model.norm.weight";
  if (n == "output.weight") return "lm_head.weight";
  static const std::regex block(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(n, m, block)) return std::nullopt;
  static const std::pair<const char*, const char*> map[] = {
      {"attn_q", "self_attn.q_proj"},      {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},      {"attn_output", "self_attn.o_proj"},
      {"attn_norm", "input_layernorm"},    {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
      {"ffn_down", "mlp.down_proj"},       {"attn_q_norm", "self_attn.q_norm"},
      {"attn_k_norm", "self_attn.k_norm"},
  };
  for (const auto& [g, h] : map)
    if (m[2] == g) return "model.layers." + m[1].str() + "." + h + "." + m[3].str();
  return std::nullopt;
}

int64_t meta_to_hf_row(int64_t row, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const int64_t head = row / head_dim, r = row % head_dim;
  const int64_t i = r / 2, j = r % 2;
  return head * head_dim + j * half + i;
}

void permute_meta_to_hf(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int64_t n_heads) {
  if (n_heads <= 0 || rows % n_heads != 0 || (rows / n_heads) % 2 != 0)
    throw Error("cannot permute " + std::to_string(rows) + " rows over " + std::to_string(n_heads) +
                " heads");
  const int64_t head_dim = rows / n_heads;
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + meta_to_hf_row(r, head_dim) * row_bytes, src + r * row_bytes, row_bytes);
}

int64_t gguf_permute_heads(const io::GgufFile& f, const std::string& gguf_name, int64_t rows) {
  const bool q = gguf_name.find(".attn_q.weight") != std::string::npos ||
                 gguf_name.find(".attn_q.bias") != std::string::npos;
  const bool k = gguf_name.find(".attn_k.weight") != std::string::npos ||
                 gguf_name.find(".attn_k.bias") != std::string::npos;
  if (!q && !k) return 0;
  const std::string arch = f.get_string("general.architecture", "llama");
  const int64_t heads = f.require_int(arch + ".attention.head_count");
  const int64_t heads_kv = f.get_int(arch + ".attention.head_count_kv", heads);
  const int64_t n = q ? heads : heads_kv;
  if (n <= 0 || rows % n != 0 || (rows / n) % 2 != 0)
    throw Error(f.path() + ": tensor " + gguf_name + " has " + std::to_string(rows) + " rows, which " +
                std::to_string(n) + " heads of even size cannot split");
  return n;
}

nlohmann::json gguf_llama_hf_config(const io::GgufFile& f) {
  const std::string arch = f.get_string("general.architecture", "");
  if (arch != "llama")
    throw Error(f.path() + ": GGUF architecture \"" + arch +
                "\" is not supported for conversion (only llama)");
  const auto* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw Error(f.path() + ": no token_embd.weight");
  nlohmann::ordered_json c;
  const int64_t hidden = f.require_int("llama.embedding_length");
  const int64_t heads = f.require_int("llama.attention.head_count");
  c["architectures"] = {"LlamaForCausalLM"};
  c["model_type"] = "llama";
  c["hidden_size"] = hidden;
  c["intermediate_size"] = f.require_int("llama.feed_forward_length");
  c["num_hidden_layers"] = f.require_int("llama.block_count");
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = f.get_int("llama.attention.head_count_kv", heads);
  c["head_dim"] = f.get_int("llama.attention.key_length", hidden / heads);
  c["max_position_embeddings"] = f.get_int("llama.context_length", 2048);
  c["rms_norm_eps"] = f.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5);
  c["rope_theta"] = f.get_float("llama.rope.freq_base", 10000.0);
  c["vocab_size"] = static_cast<int64_t>(embd->shape()[0]);
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = f.find_tensor("output.weight") == nullptr;
  c["attention_bias"] = false;
  c["mlp_bias"] = false;
  if (f.has("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = f.require_int("tokenizer.ggml.bos_token_id");
  if (f.has("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = f.require_int("tokenizer.ggml.eos_token_id");
  c["torch_dtype"] = "float32";
  return nlohmann::json::parse(c.dump());
}

}  // namespace mx8::convert
