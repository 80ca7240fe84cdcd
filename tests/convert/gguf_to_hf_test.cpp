// What the GGUF -> Hugging Face conversion writes beside the tensors: config.json from the GGUF's
// llama metadata (every field, given and defaulted), which Q/K tensors are permuted over how many
// heads, and the errors for what cannot be converted. Files built in memory (tokenizer/gguf_keys.h).
#include <gtest/gtest.h>

#include "mx8/convert/gguf_to_hf.h"
#include "mx8/error.h"
#include "tokenizer/gguf_keys.h"

using mx8::runtime::GgufKeys;
using nlohmann::json;

namespace {

// The keys every llama GGUF has, for a model of hidden 64, 4 heads, ffn 96, 2 layers, vocab 10.
GgufKeys llama_keys() {
  GgufKeys g;
  g.string("general.architecture", "llama")
      .uint("llama.embedding_length", 64)
      .uint("llama.attention.head_count", 4)
      .uint("llama.feed_forward_length", 96)
      .uint("llama.block_count", 2)
      .tensor("token_embd.weight", {10, 64});
  return g;
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const mx8::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(GgufToHf, ConfigCarriesEveryGivenKey) {
  GgufKeys g = llama_keys();
  g.uint("llama.attention.head_count_kv", 2)
      .uint("llama.attention.key_length", 32)
      .uint("llama.context_length", 4096)
      .real("llama.attention.layer_norm_rms_epsilon", 1e-6f)
      .real("llama.rope.freq_base", 500000.0f)
      .uint("tokenizer.ggml.bos_token_id", 7)
      .uint("tokenizer.ggml.eos_token_id", 8)
      .tensor("output.weight", {10, 64});
  const json c = mx8::convert::gguf_llama_hf_config(g.file());
  EXPECT_EQ(c["architectures"], json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(c["model_type"], "llama");
  EXPECT_EQ(c["hidden_size"], 64);
  EXPECT_EQ(c["intermediate_size"], 96);
  EXPECT_EQ(c["num_hidden_layers"], 2);
  EXPECT_EQ(c["num_attention_heads"], 4);
  EXPECT_EQ(c["num_key_value_heads"], 2);
  EXPECT_EQ(c["head_dim"], 32);
  EXPECT_EQ(c["max_position_embeddings"], 4096);
  EXPECT_FLOAT_EQ(c["rms_norm_eps"].get<float>(), 1e-6f);
  EXPECT_EQ(c["rope_theta"], 500000.0);
  EXPECT_EQ(c["vocab_size"], 10);
  EXPECT_EQ(c["hidden_act"], "silu");
  EXPECT_EQ(c["tie_word_embeddings"], false);  // the file has its own output.weight
  EXPECT_EQ(c["attention_bias"], false);
  EXPECT_EQ(c["mlp_bias"], false);
  EXPECT_EQ(c["bos_token_id"], 7);
  EXPECT_EQ(c["eos_token_id"], 8);
  EXPECT_EQ(c["torch_dtype"], "float32");
}

// Without the optional keys: llama.cpp's defaults, tied embeddings (no output.weight), and no token
// ids rather than made-up ones.
TEST(GgufToHf, ConfigDefaultsWhatTheFileLeavesOut) {
  const json c = mx8::convert::gguf_llama_hf_config(llama_keys().file());
  EXPECT_EQ(c["num_key_value_heads"], 4);
  EXPECT_EQ(c["head_dim"], 16);
  EXPECT_EQ(c["max_position_embeddings"], 2048);
  EXPECT_DOUBLE_EQ(c["rms_norm_eps"].get<double>(), 1e-5);
  EXPECT_EQ(c["rope_theta"], 10000.0);
  EXPECT_EQ(c["tie_word_embeddings"], true);
  EXPECT_FALSE(c.contains("bos_token_id"));
  EXPECT_FALSE(c.contains("eos_token_id"));
}

TEST(GgufToHf, ConfigRefusesOtherArchitecturesAndAMissingEmbedding) {
  GgufKeys qwen;
  qwen.string("general.architecture", "qwen2").tensor("token_embd.weight", {10, 64});
  EXPECT_NE(
      error_of([&] { mx8::convert::gguf_llama_hf_config(qwen.file()); }).find("\"qwen2\" is not supported"),
      std::string::npos);
  GgufKeys bare;
  bare.string("general.architecture", "llama");
  EXPECT_NE(error_of([&] { mx8::convert::gguf_llama_hf_config(bare.file()); }).find("no token_embd.weight"),
            std::string::npos);
}

// Q is permuted over the query heads, K over the KV heads (weights and biases), nothing else is.
TEST(GgufToHf, PermutedTensorsAndTheirHeadCounts) {
  GgufKeys g = llama_keys();
  g.uint("llama.attention.head_count_kv", 2);
  const auto f = g.file();
  EXPECT_EQ(mx8::convert::gguf_permute_heads(f, "blk.0.attn_q.weight", 64), 4);
  EXPECT_EQ(mx8::convert::gguf_permute_heads(f, "blk.1.attn_q.bias", 64), 4);
  EXPECT_EQ(mx8::convert::gguf_permute_heads(f, "blk.0.attn_k.weight", 32), 2);
  EXPECT_EQ(mx8::convert::gguf_permute_heads(f, "blk.0.attn_k.bias", 32), 2);
  EXPECT_EQ(mx8::convert::gguf_permute_heads(f, "blk.0.attn_v.weight", 32), 0);
  EXPECT_EQ(mx8::convert::gguf_permute_heads(f, "blk.0.attn_output.weight", 64), 0);
  EXPECT_EQ(mx8::convert::gguf_permute_heads(f, "token_embd.weight", 10), 0);
  // Without head_count_kv, K has as many heads as Q.
  EXPECT_EQ(mx8::convert::gguf_permute_heads(llama_keys().file(), "blk.0.attn_k.weight", 64), 4);
}

// Rows the heads cannot split evenly, or heads of odd size (RoPE pairs), are errors, each alone.
TEST(GgufToHf, RowsThatTheHeadsCannotSplitAreRefused) {
  const auto f = llama_keys().file();
  for (int64_t rows : {66, 12}) {  // 66: not a multiple of 4 heads; 12: heads of 3 rows
    const std::string e = error_of([&] { mx8::convert::gguf_permute_heads(f, "blk.0.attn_q.weight", rows); });
    EXPECT_NE(e.find("blk.0.attn_q.weight has " + std::to_string(rows) + " rows"), std::string::npos) << e;
  }
  std::vector<uint8_t> src(12 * 4), dst(src.size());
  for (int64_t heads : {0, 5, 4}) {  // 0 heads; 12 rows over 5; heads of 3 rows
    const std::string e =
        error_of([&] { mx8::convert::permute_meta_to_hf(src.data(), dst.data(), 12, 4, heads); });
    EXPECT_NE(e.find("cannot permute 12 rows over " + std::to_string(heads) + " heads"), std::string::npos)
        << e;
  }
}
