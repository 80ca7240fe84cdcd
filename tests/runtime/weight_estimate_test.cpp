// estimate_weight_bytes, which the memory plan printed before loading relies on, held to a count
// nobody here made: Llama-3-8B has 8,030,261,248 parameters (its Hugging Face model card), of which
// 266,240 are the 65 RMSNorm vectors of 4096 that the estimate leaves out as negligible.
#include <gtest/gtest.h>

#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace {

using mx8::model::WeightMode;
using mx8::runtime::estimate_weight_bytes;

mx8::model::LlamaConfig llama3_8b() {
  mx8::model::LlamaConfig c;
  c.vocab = 128256;
  c.dim = 4096;
  c.n_layers = 32;
  c.n_heads = 32;
  c.n_kv_heads = 8;
  c.head_dim = 128;
  c.ffn = 14336;
  return c;
}

TEST(WeightEstimate, Llama3_8bInEachMode) {
  const mx8::model::LlamaConfig c = llama3_8b();
  const size_t params = 8030261248ull - 65 * 4096;
  const size_t embedding = 128256ull * 4096;   // the table, held in 2 bytes a weight or the source's
  const size_t matrices = params - embedding;  // the layers' projections and the output head
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::bf16, 2), 2 * params);
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::f32, 4), 4 * params);
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::as_given, 2), 2 * params);
  // FP8: a byte a weight and one UE8M0 scale per 128 x 128 block (an f32 scale would be 4 bytes per
  // block; the runtime keeps UE8M0). The table stays in the source's precision, at least BF16.
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::fp8, 2), matrices + matrices / 16384 + 2 * embedding);
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::fp8, 4), matrices + matrices / 16384 + 4 * embedding);
  // MXFP8: one scale per 32 weights.
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::mxfp8, 2), matrices + matrices / 32 + 2 * embedding);
  // An FP8 checkpoint as given: its matrices at one byte, the table widened to BF16.
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::as_given, 1), matrices + 2 * embedding);
}

TEST(WeightEstimate, TiedEmbeddingsHaveNoSeparateHead) {
  mx8::model::LlamaConfig c = llama3_8b();
  const size_t untied = estimate_weight_bytes(c, WeightMode::bf16, 2);
  c.tied_embeddings = true;
  EXPECT_EQ(estimate_weight_bytes(c, WeightMode::bf16, 2), untied - 2 * 128256ull * 4096);
}

}  // namespace
