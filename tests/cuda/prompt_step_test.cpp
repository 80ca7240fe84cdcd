// Prompt steps through the whole model on the CUDA backend against the CPU backend: a random
// Llama-3-shaped model (head_dim 128, GQA groups of 4, so the tensor-core prompt-step attention
// applies) with bf16 weights (the cuBLASLt path with x in three bf16 parts) runs a 40-token prompt
// as one step, then a 30-token chunk after it (attention over cached positions and the chunk), with
// bf16 and fp8 KV caches, and a step that mixes decode tokens of three sequences with a prompt chunk of
// a fourth; the logits of every row must match the CPU's. Skips without a GPU.
//
// Tolerance: 1e-3 (1 + max |logit|). Both sides compute in f32 from the same bf16 weights: the GPU's
// matmuls are the f32 product up to summation order (x split exactly to ~2^-24), its attention keeps
// ~22 bits of q and p. What moves logits most is the KV cache: each side stores its own K/V
// projections, and where the two f32 values straddle a bf16 or E4M3 rounding boundary the stored
// codes differ by one step; the flips add up with the positions both sides wrote. Measured on the
// H200 with max |logit| 1.2-1.5: 4.3e-5 / 5.0e-5 (bf16 KV, 40 then 70 positions), 1.1e-6 / 7.4e-5
// (fp8 KV), 2.4e-4 (the mixed step, after three 40-42-token prompts). A wrong head, row, token or
// position mapping, a missed cached position or a mis-scaled fp8 row moves logits by >= 1e-2 of
// their scale, 10x the bound; the data is fixed, so the result is deterministic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"

namespace mx8 {
namespace {

// Logits of every row of two consecutive steps: tokens [0, 40) then [40, 70) of one sequence.
std::vector<std::vector<float>> two_steps(model::LlamaModel& m, backend::Backend& be, backend::KvFormat kvf) {
  const int pages = 70 / 16 + 1;
  backend::KvCacheDesc d{
      kvf, int(m.config().n_layers), int(m.config().n_kv_heads), int(m.config().head_dim), 16, pages};
  auto kv = be.create_kv_cache(d);
  std::vector<std::vector<float>> out;
  for (auto [from, to] : {std::pair{0, 40}, std::pair{40, 70}}) {
    model::StepBatch b;
    b.max_pages_per_seq = pages;
    for (int p = 0; p < pages; ++p) b.block_tables.push_back(p);
    for (int i = from; i < to; ++i) {
      b.tokens.push_back((i * 37 + 11) % int(m.config().vocab));
      b.pos.push_back(i);
      b.seq.push_back(0);
      b.slot.push_back(i);
      b.kv_len.push_back(i + 1);
      b.logit_rows.push_back(i - from);
    }
    out.emplace_back(size_t(to - from) * size_t(m.config().vocab));
    m.forward(b, *kv, out.back().data());
  }
  return out;
}

// A step as the engine builds it while serving several users: the decode tokens of 3 sequences
// (positions 40, 41, 42 of their own caches) first, then a 30-token prompt chunk of a fourth; the model
// splits its attention into a per-token call and a prompt-chunk call (one_token_per_seq).
std::vector<float> mixed_step(model::LlamaModel& m, backend::Backend& be) {
  const int pages = 4, vocab = int(m.config().vocab);
  backend::KvCacheDesc d{backend::KvFormat::bf16,
                         int(m.config().n_layers),
                         int(m.config().n_kv_heads),
                         int(m.config().head_dim),
                         16,
                         4 * pages};
  auto kv = be.create_kv_cache(d);
  auto run = [&](const std::vector<std::pair<int, int>>& seq_pos, std::vector<int32_t> rows) {
    model::StepBatch b;
    b.max_pages_per_seq = pages;
    for (int s = 0; s < 4; ++s)
      for (int p = 0; p < pages; ++p) b.block_tables.push_back(s * pages + p);
    for (auto [s, p] : seq_pos) {
      b.tokens.push_back((p * 31 + s * 7 + 3) % vocab);
      b.pos.push_back(p);
      b.seq.push_back(s);
      b.slot.push_back((s * pages + p / 16) * 16 + p % 16);
      b.kv_len.push_back(p + 1);
    }
    b.logit_rows = rows;
    std::vector<float> logits(rows.size() * size_t(vocab));
    m.forward(b, *kv, logits.data());
    return logits;
  };
  // Prompts of 40, 41 and 42 tokens for sequences 0..2 (one step each), then the mixed step.
  for (int s = 0; s < 3; ++s) {
    std::vector<std::pair<int, int>> sp;
    for (int p = 0; p < 40 + s; ++p) sp.push_back({s, p});
    run(sp, {});
  }
  std::vector<std::pair<int, int>> sp = {{0, 40}, {1, 41}, {2, 42}};
  std::vector<int32_t> rows;
  for (int p = 0; p < 30; ++p) sp.push_back({3, p});
  for (int r = 0; r < 33; ++r) rows.push_back(r);
  return run(sp, rows);
}

TEST(CudaPromptStep, Bf16ModelLogitsMatchCpu) {
  MX8_REQUIRE_GPU();
  model::LlamaConfig c;
  c.arch = "llama";
  c.vocab = 512;
  c.dim = 256;
  c.n_layers = 2;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.head_dim = 128;
  c.ffn = 512;
  c.rope_theta = 500000.0;
  auto cpu = backend::make_cpu_backend(2);
  auto gpu = backend::make_cuda_backend(0);
  auto mc = model::make_random_llama(c, *cpu, model::WeightMode::bf16, 64, 7);
  auto mg = model::make_random_llama(c, *gpu, model::WeightMode::bf16, 64, 7);
  for (backend::KvFormat kvf : {backend::KvFormat::bf16, backend::KvFormat::fp8}) {
    SCOPED_TRACE(backend::kv_format_name(kvf));
    const auto a = two_steps(*mc, *cpu, kvf), b = two_steps(*mg, *gpu, kvf);
    for (size_t s = 0; s < a.size(); ++s) {
      float scale = 0, worst = 0;
      for (size_t i = 0; i < a[s].size(); ++i) {
        scale = std::max(scale, std::fabs(a[s][i]));
        worst = std::max(worst, std::fabs(a[s][i] - b[s][i]));
      }
      std::printf("[ prompt step ] %s KV, step %zu: max |logit| %.3f, max |cuda - cpu| %.2e\n",
                  backend::kv_format_name(kvf), s, scale, worst);
      EXPECT_LE(worst, 1e-3f * (1 + scale)) << "step " << s;
      EXPECT_GT(scale, 0.0f) << "step " << s;
    }
  }
  // Decode tokens and a prompt chunk in one step (same tolerance, bf16 KV).
  const auto a = mixed_step(*mc, *cpu), b = mixed_step(*mg, *gpu);
  float scale = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::fabs(a[i]));
    worst = std::max(worst, std::fabs(a[i] - b[i]));
  }
  std::printf("[ prompt step ] mixed decode + chunk step: max |logit| %.3f, max |cuda - cpu| %.2e\n", scale,
              worst);
  EXPECT_LE(worst, 1e-3f * (1 + scale));
}

}  // namespace
}  // namespace mx8
