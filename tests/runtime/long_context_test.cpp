// Long context: 131072 positions. Prefilling 131072 real tokens would take hours on a CI core, so
// the test builds the situation directly: a query at position 131071 attends to 131072 cache
// entries whose block table points every page at one page of identical K/V. Softmax over equal
// scores averages identical values, so the attention output must equal the one of a 16-entry
// context: that checks the indexing (block tables of 8192 pages, positions near 2^17, llama3 RoPE
// angles there) without the quadratic cost. Also: the engine and memory plan at that context.
#include <gtest/gtest.h>

#include <cmath>

#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace {

mx8::model::LlamaConfig tiny_llama3() {
  mx8::model::LlamaConfig c;
  c.arch = "llama";
  c.vocab = 64;
  c.dim = 64;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn = 96;
  c.rope_theta = 500000;
  c.rope_scaling.type = mx8::model::RopeScaling::Type::llama3;
  c.rope_scaling.factor = 32;
  c.rope_scaling.original_max_position = 8192;
  c.max_position = 131072;
  return c;
}

// Logits of one query token at `pos` attending to kv_len entries that all alias page 0.
std::vector<float> query_logits(mx8::model::LlamaModel& m, mx8::backend::KvCache& kv, int pos, int kv_len,
                                int pages) {
  mx8::model::StepBatch b;
  b.max_pages_per_seq = pages;
  b.block_tables.assign(size_t(pages), 0);  // every page of the sequence is page 0
  b.tokens = {5};
  b.pos = {pos};
  b.seq = {0};
  b.slot = {16};  // page 1: a scratch page outside the block table
  b.kv_len = {kv_len};
  b.logit_rows = {0};
  std::vector<float> logits(size_t(m.config().vocab));
  m.forward(b, kv, logits.data());
  return logits;
}

}  // namespace

TEST(LongContext, Position131071OverAFullBlockTable) {
  using namespace mx8;
  const int n_pos = 131072, ps = 16, pages = n_pos / ps;
  for (backend::KvFormat fmt : {backend::KvFormat::bf16, backend::KvFormat::fp8}) {
    auto be = backend::make_cpu_backend(2);
    auto m = model::make_random_llama(tiny_llama3(), *be, model::WeightMode::f32, 16, 99);
    backend::KvCacheDesc d{fmt, 1, 2, 16, ps, pages};
    auto kv = be->create_kv_cache(d);
    // Fill page 0 with 16 identical entries: the same token at the same position.
    model::StepBatch fill;
    fill.max_pages_per_seq = 1;
    fill.block_tables = {0};
    for (int i = 0; i < 16; ++i) {
      fill.tokens.push_back(7);
      fill.pos.push_back(3);
      fill.seq.push_back(0);
      fill.slot.push_back(i);
      fill.kv_len.push_back(1);
    }
    m->forward(fill, *kv, nullptr);
    std::vector<float> short_ctx = query_logits(*m, *kv, n_pos - 1, 16, pages);
    std::vector<float> long_ctx = query_logits(*m, *kv, n_pos - 1, n_pos, pages);
    for (size_t i = 0; i < short_ctx.size(); ++i) {
      ASSERT_TRUE(std::isfinite(long_ctx[i]));
      // 131072 f32 additions of value/131072 accumulate ~1e-3 relative rounding at worst.
      EXPECT_NEAR(long_ctx[i], short_ctx[i], 1e-3 * (1 + std::abs(short_ctx[i])))
          << backend::kv_format_name(fmt);
    }
  }
}

TEST(LongContext, EngineAndMemoryPlanAt131072) {
  using namespace mx8;
  auto be = backend::make_cpu_backend(1);
  auto m = model::make_random_llama(tiny_llama3(), *be, model::WeightMode::bf16, 64, 5);
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::fp8;
  eo.max_context = 131072;
  runtime::Engine eng(*m, *be, eo);
  // fp8 KV: per position and layer, K and V of 2 heads x (16 values + one scale byte), in pages of 16
  // positions rounded up to 64 bytes: 8192 pages x (16 x 34 = 544 -> 576) x 2.
  EXPECT_EQ(eng.kv_bytes(), size_t(8192) * 576 * 2);
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = 4;
  eng.add({1, 2, 3}, gp);
  int n = 0;
  while (!eng.idle()) n += int(eng.step().size());
  EXPECT_EQ(n, 4);
  // The plan for Llama-3.1-8B shapes at 131072 positions: 16 GiB of bf16 KV, half that in fp8.
  model::LlamaConfig big;
  big.n_layers = 32;
  big.n_kv_heads = 8;
  big.head_dim = 128;
  big.dim = 4096;
  big.n_heads = 32;
  big.ffn = 14336;
  big.vocab = 128256;
  runtime::EngineOptions o;
  o.max_context = 131072;
  o.kv_format = backend::KvFormat::bf16;
  runtime::MemoryPlan bf = runtime::plan_memory(big, 0, o, 256);
  EXPECT_EQ(bf.kv_bytes, size_t(131072) * 32 * 2 * 8 * 128 * 2);
  o.kv_format = backend::KvFormat::fp8;
  runtime::MemoryPlan f8 = runtime::plan_memory(big, 0, o, 256);
  EXPECT_EQ(f8.kv_bytes, size_t(131072) * 32 * 2 * 8 * (128 + 1));
  EXPECT_FALSE(f8.text.empty());
}
