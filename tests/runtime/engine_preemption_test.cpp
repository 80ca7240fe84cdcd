// A KV cache smaller than every sequence's whole context (EngineOptions::kv_positions; engine.h,
// "Preemption"): sequences share one pool of pages, and when it runs out the newest give theirs to
// older ones and prefill again later. Each case runs the requests alone in an engine that reserves a
// whole context, then all at once in a pool that cannot hold them all, and compares tokens and the
// logits of every step (bit for bit on the scalar kernels, to a few ulps on SIMD: engine_runs.h), and
// that preemption happened (a pool that never ran out would test nothing).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "mx8/error.h"
#include "runtime/engine_runs.h"

namespace {

using namespace mx8;
using namespace engine_runs;

constexpr int kContext = 128;  // 8 pages of 16 positions per sequence

runtime::EngineOptions options(int max_sequences, int64_t kv_positions) {
  return engine_options(kContext, max_sequences, true, kv_positions);
}

std::vector<Gen> alone(const std::vector<std::vector<int32_t>>& prompts,
                       const std::vector<runtime::GenerationParams>& params) {
  std::vector<Gen> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    runtime::Engine eng(*fx().m, *fx().be, options(1, 0));
    out.push_back(run_requests(eng, {prompts[i]}, {params[i]})[0]);
  }
  return out;
}

void expect_all_same(const std::vector<Gen>& pooled, const std::vector<Gen>& solo) {
  ASSERT_EQ(pooled.size(), solo.size());
  for (size_t i = 0; i < solo.size(); ++i) expect_same(pooled[i], solo[i], "request " + std::to_string(i));
}

class EnginePreemption : public ::testing::TestWithParam<cpu::Isa> {
  cpu::ScopedIsa isa_{GetParam()};
};

}  // namespace

// Four requests that grow to 110-128 positions each (28-32 pages in all) in a pool of 10 pages: the
// decoding sequences keep preempting the newest. Run twice in one engine, so that the second round
// also meets the first round's cached pages in the pool.
TEST_P(EnginePreemption, DecodingSequencesPreemptTheNewest) {
  std::mt19937 g(3);
  std::vector<std::vector<int32_t>> prompts;
  for (size_t len : {14, 20, 27, 33}) prompts.push_back(random_tokens(g, len, 5 + int32_t(len)));
  const std::vector<runtime::GenerationParams> params(prompts.size(), greedy(96));
  const std::vector<Gen> solo = alone(prompts, params);
  runtime::Engine pooled(*fx().m, *fx().be, options(4, 160));
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    expect_all_same(run_requests(pooled, prompts, params), solo);
  }
  EXPECT_GT(pooled.stats().preemptions, 0);
  EXPECT_GT(pooled.stats().recomputed_tokens, 0);
}

// Sampling with a seed: a preempted sequence keeps its sampler, so its draws continue where they were.
// Scalar kernels only: on SIMD a recomputed position is a few ulps off, which can move a draw that
// lands on a boundary between two tokens' probabilities.
TEST(EnginePool, SampledSequencesKeepTheirDraws) {
  cpu::ScopedIsa isa(cpu::Isa::scalar);
  std::mt19937 g(4);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<runtime::GenerationParams> params;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(random_tokens(g, 10 + 6 * size_t(i), 40 + i));
    runtime::GenerationParams p = greedy(100);
    p.sampling.temperature = 0.9f;
    p.sampling.top_k = 40;
    p.sampling.repetition_penalty = 1.1f;
    p.sampling.seed = uint64_t(100 + i);
    params.push_back(p);
  }
  runtime::Engine pooled(*fx().m, *fx().be, options(4, 144));
  expect_all_same(run_requests(pooled, prompts, params), alone(prompts, params));
  EXPECT_GT(pooled.stats().preemptions, 0);
}

// Three 100-token prompts in a pool of one context: only one of them fits at a time, so the newer
// ones are preempted, prefilled again and preempted again until the oldest is done.
TEST_P(EnginePreemption, LongPromptsInAPoolOfOneContext) {
  std::mt19937 g(5);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 3; ++i) prompts.push_back(random_tokens(g, 100, 60 + i));
  const std::vector<runtime::GenerationParams> params(prompts.size(), greedy(20));
  runtime::Engine pooled(*fx().m, *fx().be, options(3, kContext));
  expect_all_same(run_requests(pooled, prompts, params), alone(prompts, params));
  EXPECT_GT(pooled.stats().preemptions, 0);
  // Each prompt is prefilled once for itself; the rest is what preemption dropped.
  EXPECT_EQ(pooled.stats().prefill_tokens + pooled.stats().decode_tokens,
            3 * (100 + 19) + pooled.stats().recomputed_tokens);
}

// Prompts alone can fill the pool, with nothing decoding: an older prompt must then take a newer prompt's
// pages (fit_chunk lets prefill chunks preempt, not only decoding sequences). In a pool of 8 pages and
// steps of 8 tokens: A (4 + 30 tokens) decodes while B (113 prompt tokens) prefills beside it until B
// holds 6 pages; when A needs its third page it preempts B, and C (17), arrived meanwhile, takes the step's
// rest and a page. A ends; B prefills again to 112 positions in 7 pages, and then B needs an eighth page
// and C a second one, with none free and neither decoding. Without prefill chunks preempting, the engine
// stops there ("no sequence could get KV cache pages this step"); with them, B takes C's page and all
// three generate what they do alone.
TEST_P(EnginePreemption, AnOlderPromptTakesANewerPromptsPagesWhenNothingDecodes) {
  std::mt19937 g(6);
  const std::vector<std::vector<int32_t>> prompts = {random_tokens(g, 4, kBos), random_tokens(g, 113, kBos),
                                                     random_tokens(g, 17, kBos)};
  const std::vector<runtime::GenerationParams> params = {greedy(30), greedy(1), greedy(1)};
  runtime::Engine pooled(*fx().m, *fx().be, engine_options(kContext, 3, false, kContext));
  expect_all_same(run_requests(pooled, prompts, params, -1, {0, 6, 9}), alone(prompts, params));
  EXPECT_GE(pooled.stats().preemptions, 2);  // A preempts B, then B preempts C
}

INSTANTIATE_TEST_SUITE_P(Isa, EnginePreemption, ::testing::Values(cpu::Isa::scalar, cpu::best_isa()),
                         [](const auto& info) {
                           return std::string(info.index ? "best_" : "") + cpu::isa_name(info.param);
                         });

TEST(EnginePool, SmallerThanOneContextIsRefused) {
  try {
    runtime::Engine eng(*fx().m, *fx().be, options(2, kContext - 16));
    FAIL() << "a pool of 112 positions for a context of 128 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("one sequence needs 128"), std::string::npos) << e.what();
  }
}

TEST(EnginePool, LargerThanEveryContextIsEveryContext) {
  runtime::Engine eng(*fx().m, *fx().be, options(2, 100000));
  EXPECT_EQ(eng.free_pages(), 16u);  // 2 sequences x 8 pages: more would never be used
}

// The memory plan of a pool, and the pool a plan that does not fit gets: it fits, with the margin
// kv_positions_that_fit keeps, and holds at least one context.
TEST(EnginePool, PlanAndFit) {
  const model::LlamaConfig& c = fx().m->config();
  runtime::EngineOptions o = options(4096, 0);  // 4096 x 160 KB (1280 bytes per position): 640 MiB
  const runtime::MemoryPlan whole = runtime::plan_memory(c, 1 << 20, o, kChunk, 0);
  ASSERT_GT(whole.kv_bytes_per_token, 0u);
  const size_t one_context = whole.kv_bytes_per_token * kContext;
  // Room for 10 contexts besides the weights, the activations and the margin (5% + 512 MiB).
  const size_t available = size_t(double(1 << 20) + double(whole.activation_bytes) +
                                  10.0 * double(one_context) + double(512 << 20)) *
                               20 / 19 +
                           4096;
  const runtime::MemoryPlan full = runtime::plan_memory(c, 1 << 20, o, kChunk, available);
  ASSERT_FALSE(full.fits) << full.text;
  const int64_t fit = runtime::kv_positions_that_fit(full, c, o, kChunk);
  EXPECT_GE(fit, 10 * kContext);
  EXPECT_LT(fit, 11 * kContext);
  EXPECT_EQ(fit % 16, 0);
  o.kv_positions = fit;
  const runtime::MemoryPlan pooled = runtime::plan_memory(c, 1 << 20, o, kChunk, available);
  EXPECT_TRUE(pooled.fits) << pooled.text;
  EXPECT_EQ(pooled.kv_bytes, size_t(fit) * whole.kv_bytes_per_token);
  EXPECT_NE(pooled.text.find("one pool of " + std::to_string(fit) + " positions"), std::string::npos)
      << pooled.text;
  // Less room than one context: no pool (the caller keeps the warning).
  o.kv_positions = 0;
  const runtime::MemoryPlan tiny = runtime::plan_memory(c, 1 << 20, o, kChunk, (1 << 20) + (520 << 20));
  ASSERT_FALSE(tiny.fits);
  EXPECT_EQ(runtime::kv_positions_that_fit(tiny, c, o, kChunk), 0);
}

// Random workloads: 10 requests of 1-70 prompt tokens and 1-90 new ones (some reach the context) in
// pools of one to three contexts; half of the prompts start with one of two common 35-token prefixes,
// so preemption meets shared and cached pages. Every request generates what it does alone.
TEST(EnginePool, RandomWorkloads) {
  cpu::ScopedIsa isa(cpu::Isa::scalar);  // exact: a wrong K/V shows in the logits, not only the tokens
  int64_t preemptions = 0;
  for (unsigned seed = 0; seed < 6; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 g(seed);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<runtime::GenerationParams> params;
    const std::vector<int32_t> common[2] = {random_tokens(g, 35, kBos), random_tokens(g, 35, kBos)};
    for (int i = 0; i < 10; ++i) {
      std::vector<int32_t> own = random_tokens(g, 1 + g() % 70, 3 + int32_t(g() % 500));
      prompts.push_back(i % 2 ? concat(common[(i / 2) % 2], own) : own);
      params.push_back(greedy(1 + int(g() % 90)));
    }
    const int64_t pool = kContext * (1 + int64_t(seed % 3));
    runtime::Engine pooled(*fx().m, *fx().be, options(10, pool));
    const std::vector<Gen> got = run_requests(pooled, prompts, params);
    const std::vector<Gen> solo = alone(prompts, params);
    expect_all_same(got, solo);
    preemptions += pooled.stats().preemptions;
  }
  EXPECT_GT(preemptions, 0);
}

// Random workloads whose requests arrive while others run (over the first 40 steps), which makes states
// that requests added at once do not (the stranded prompt above); pools of one or two contexts, prefix
// caching on and off, half the requests sampled with a seed and penalties, a quarter asking for
// log-probabilities (some for the prompt's too). Every request generates what it does alone.
TEST(EnginePool, RandomArrivals) {
  cpu::ScopedIsa isa(cpu::Isa::scalar);  // exact, as RandomWorkloads
  int64_t preemptions = 0;
  for (unsigned seed = 0; seed < 16; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 g(100 + seed);
    const std::vector<int32_t> common = random_tokens(g, 16 + g() % 60, kBos);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<runtime::GenerationParams> params;
    std::vector<int> at;
    for (int i = 0; i < 8; ++i) {
      std::vector<int32_t> p = random_tokens(g, 1 + g() % 100, 3 + int32_t(g() % 500));
      if (g() % 2) p = concat(common, p);
      p.resize(std::min<size_t>(p.size(), 120));
      prompts.push_back(p);
      runtime::GenerationParams gp = greedy(int(std::min<size_t>(1 + g() % 60, kContext - p.size())));
      if (g() % 2) {
        gp.sampling.temperature = 0.9f;
        gp.sampling.top_k = 40;
        gp.sampling.repetition_penalty = 1.1f;
        gp.sampling.frequency_penalty = 0.3f;
        gp.sampling.seed = g();
      }
      if (g() % 4 == 0) {
        gp.logprobs = 2;
        gp.prompt_logprobs = g() % 2;
      }
      params.push_back(gp);
      at.push_back(int(g() % 40));
    }
    std::sort(at.begin(), at.end());  // run_requests adds in order
    runtime::Engine pooled(*fx().m, *fx().be,
                           engine_options(kContext, 8, seed % 2 == 0, kContext * (1 + seed % 2)));
    expect_all_same(run_requests(pooled, prompts, params, -1, at), alone(prompts, params));
    preemptions += pooled.stats().preemptions;
  }
  EXPECT_GT(preemptions, 0);
}
