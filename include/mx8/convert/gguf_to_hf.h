// GGUF (llama architecture) to Hugging Face Llama: tensor names, the Q/K row permutation, config.
//
// GGUF llama files keep Meta's original Q and K layout, where RoPE rotates interleaved pairs
// (0,1), (2,3), ... of each head; Hugging Face Llama permutes those rows so that RoPE rotates the
// two halves of each head (rotate_half). Within a head of `head_dim` rows, GGUF row 2i + j
// (i < head_dim/2, j in {0,1}) is HF row j * head_dim/2 + i. K uses the KV head count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "mx8/io/gguf.h"

namespace mx8::convert {

// The HF name of a GGUF llama tensor ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"),
// or nullopt when it has none (e.g. rope_freqs).
std::optional<std::string> gguf_llama_to_hf_name(const std::string& gguf_name);

// The HF row that GGUF row `row` of a permuted (Q or K) matrix moves to.
int64_t meta_to_hf_row(int64_t row, int64_t head_dim);
// Rows of `rows` x `row_bytes` bytes from GGUF (Meta) order into HF order; n_heads heads of
// rows / n_heads rows each (which must be even).
void permute_meta_to_hf(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes, int64_t n_heads);

// How many heads a tensor's rows are permuted over: n_head for attn_q, n_head_kv for attn_k, 0 for
// tensors that are not permuted. Throws mx8::Error if the head counts do not divide the rows.
int64_t gguf_permute_heads(const io::GgufFile& f, const std::string& gguf_name, int64_t rows);

// config.json for the GGUF's model (LlamaForCausalLM). Throws for a non-llama architecture.
nlohmann::json gguf_llama_hf_config(const io::GgufFile& f);

// tokenizer.json and tokenizer_config.json (as text) for a GGUF SentencePiece-style ("llama")
// vocabulary, in the form transformers' Llama converter writes: BPE over characters with byte
// fallback, merges ordered by the merged piece's score (SentencePiece BPE merges the best-scoring
// pair first), "▁" for spaces, control tokens as special added tokens. nullopt for other vocabularies.
struct HfTokenizerFiles {
  std::string tokenizer_json, tokenizer_config_json;
};
std::optional<HfTokenizerFiles> gguf_llama_tokenizer(const io::GgufFile& f);

}  // namespace mx8::convert
