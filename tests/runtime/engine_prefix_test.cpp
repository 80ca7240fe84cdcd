// Prefix reuse in the Engine (engine.h): a finished sequence's KV pages are kept and a later prompt
// that shares its token prefix starts with those positions cached. Every case runs the same requests
// through an engine with prefix_reuse off and compares greedy tokens and the logits of every step,
// and checks the prefill and reuse counts exactly. With the scalar CPU kernels, whose ops are
// row-independent, the logits must be equal bit for bit: a position's K/V and a query's logits may
// not depend on which step or chunk computed them. With the best ISA (AVX2/AVX-512) the f32 GEMV of
// one row sums in a different order from that of several rows, so there the logits agree to a few
// ulps (see expect_same). stories260K (F32), prefill chunks of 8 tokens so prompts span several steps.
#include <gtest/gtest.h>

#include <random>

#include "runtime/engine_runs.h"

namespace {

using namespace mx8;
using namespace engine_runs;

runtime::EngineOptions options(bool reuse, int max_context = 512, int max_sequences = 1) {
  return engine_options(max_context, max_sequences, reuse);
}

// Runs request 1, then request 2 (whose prompt `second(run1)` builds), in one engine with reuse and
// one without; checks both requests match and returns (reused, prefilled) of request 2 with reuse.
struct TwoTurns {
  Gen first, second;
  int64_t reused = 0, prefilled = 0, prefilled_without = 0;
};
template <class Second>
TwoTurns two_turns(const std::vector<int32_t>& p1, int n1, Second second, int n2, int cancel_after = -1) {
  TwoTurns out;
  runtime::Engine on(*fx().m, *fx().be, options(true)), off(*fx().m, *fx().be, options(false));
  out.first = run_one(on, p1, n1, cancel_after);
  const Gen first_off = run_one(off, p1, n1, cancel_after);
  expect_same(out.first, first_off, "request 1");
  EXPECT_EQ(on.stats().reused_tokens, 0);
  const std::vector<int32_t> p2 = second(out.first);
  const int64_t pre_on = on.stats().prefill_tokens, pre_off = off.stats().prefill_tokens;
  out.second = run_one(on, p2, n2);
  expect_same(out.second, run_one(off, p2, n2), "request 2");
  out.reused = on.stats().reused_tokens;
  out.prefilled = on.stats().prefill_tokens - pre_on;
  out.prefilled_without = off.stats().prefill_tokens - pre_off;
  EXPECT_EQ(off.stats().reused_tokens, 0);
  EXPECT_EQ(off.cached_pages(), 0u);
  EXPECT_EQ(out.prefilled_without, int64_t(p2.size()));
  EXPECT_EQ(out.reused + out.prefilled, int64_t(p2.size()));
  return out;
}

// Every case runs on the scalar kernels (row-independent: exact comparison) and on the best ISA.
class EnginePrefix : public ::testing::TestWithParam<cpu::Isa> {
  cpu::ScopedIsa isa_{GetParam()};
};

const std::vector<int32_t> kPrompt = {kBos, 403, 407, 261, 378, 446, 280, 301, 268, 388, 371, 360};

}  // namespace

// The chat case: the second prompt is the first prompt + its reply + a new turn. Everything the first
// request fed (prompt and all generated tokens but the last, which was sampled and never fed) is reused.
TEST_P(EnginePrefix, ContinuationReusesPromptAndReply) {
  const std::vector<int32_t> turn = {300, 301, 302, 303, 304};
  auto t = two_turns(
      kPrompt, 30, [&](const Gen& r1) { return concat(concat(kPrompt, r1.tokens), turn); }, 20);
  ASSERT_EQ(t.first.tokens.size(), 30u);  // max_tokens: 12 + 30 tokens, 41 of them fed (3 pages)
  EXPECT_EQ(t.reused, int64_t(kPrompt.size() + 30 - 1));
  EXPECT_EQ(t.prefilled, int64_t(turn.size()) + 1);
  EXPECT_EQ(t.second.tokens.size(), 20u);
}

// The same prompt again: all but its last token are reused (that token's logits start generation).
TEST_P(EnginePrefix, IdenticalPromptKeepsTheLastTokenToPrefill) {
  auto t = two_turns(
      kPrompt, 5, [&](const Gen&) { return kPrompt; }, 5);
  EXPECT_EQ(t.reused, int64_t(kPrompt.size()) - 1);
  EXPECT_EQ(t.prefilled, 1);
  EXPECT_EQ(t.second.tokens, t.first.tokens);
}

// A common prefix that ends inside a page (21 = one page + 5): exactly 21 positions are reused, the
// partly stale second page is overwritten from position 21 on.
TEST_P(EnginePrefix, CommonPrefixEndingInsideAPage) {
  std::mt19937 g(7);
  const std::vector<int32_t> p1 = random_tokens(g, 40, kBos);
  auto t = two_turns(
      p1, 10,
      [&](const Gen&) {
        std::vector<int32_t> p2(p1.begin(), p1.begin() + 21);
        p2.push_back(p1[21] == 5 ? 6 : 5);  // differs at 21
        for (int32_t x : {9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}) p2.push_back(x);
        return p2;
      },
      15);
  EXPECT_EQ(t.reused, 21);
  EXPECT_EQ(t.prefilled, 13);
}

// No token in common (different first token): nothing is reused, everything is prefilled.
TEST_P(EnginePrefix, NoOverlapPrefillsEverything) {
  std::mt19937 g(8);
  const std::vector<int32_t> p1 = random_tokens(g, 30, kBos), p2 = random_tokens(g, 30, 2);
  auto t = two_turns(
      p1, 10, [&](const Gen&) { return p2; }, 10);
  EXPECT_EQ(t.reused, 0);
  EXPECT_EQ(t.prefilled, 30);
}

// Prompts shorter than a page: a 5-token prompt + 4 generated tokens leaves 8 positions in one page;
// a continuation reuses all 8 from that partly filled page. A 1-token prompt cannot reuse anything
// (its only token must be fed); its own last page is kept beside the first one, and a 2-token prompt
// takes one of them for its first token.
TEST_P(EnginePrefix, PromptsShorterThanAPage) {
  const std::vector<int32_t> p1(kPrompt.begin(), kPrompt.begin() + 5);
  auto t = two_turns(
      p1, 4,
      [&](const Gen& r1) {
        return concat(concat(p1, r1.tokens), {333, 334});
      },
      6);
  EXPECT_EQ(t.reused, 8);
  EXPECT_EQ(t.prefilled, 3);

  runtime::Engine on(*fx().m, *fx().be, options(true)), off(*fx().m, *fx().be, options(false));
  expect_same(run_one(on, p1, 4), run_one(off, p1, 4), "5-token prompt");
  EXPECT_EQ(on.cached_pages(), 1u);
  expect_same(run_one(on, {kBos}, 6), run_one(off, {kBos}, 6), "BOS only");
  EXPECT_EQ(on.stats().reused_tokens, 0);
  EXPECT_EQ(on.stats().prefill_tokens, 6);  // 5 + 1
  EXPECT_EQ(on.stats().evicted_pages, 0);
  EXPECT_EQ(on.cached_pages(), 2u);  // 5 + 3 fed tokens, and BOS + 5
  const std::vector<int32_t> p3 = {kBos, 200};
  expect_same(run_one(on, p3, 3), run_one(off, p3, 3), "BOS + 1");
  EXPECT_EQ(on.stats().reused_tokens, 1);
}

// A cancelled sequence's fed positions are reusable: cancelled after 6 generated tokens (prompt + 5
// of them fed), and cancelled in the middle of its prompt (after the first 8-token chunk).
TEST_P(EnginePrefix, CancelledSequenceIsReusable) {
  auto t = two_turns(
      kPrompt, 50,
      [&](const Gen& r1) {
        return concat(concat(kPrompt, r1.tokens), {300, 301});
      },
      10,
      /*cancel_after=*/6);
  EXPECT_EQ(t.first.finish, runtime::FinishReason::cancelled);
  ASSERT_EQ(t.first.tokens.size(), 6u);
  EXPECT_EQ(t.reused, int64_t(kPrompt.size()) + 5);
  EXPECT_EQ(t.prefilled, 3);

  std::mt19937 g(9);
  const std::vector<int32_t> p1 = random_tokens(g, 30, kBos);
  auto mid = two_turns(
      p1, 10, [&](const Gen&) { return p1; }, 10, /*cancel_after=*/0);
  EXPECT_TRUE(mid.first.tokens.empty());
  EXPECT_EQ(mid.reused, kChunk);  // the one chunk fed before the cancel
  EXPECT_EQ(mid.prefilled, 30 - kChunk);
}

// Page pressure: max_sequences 2 and a 64-position context give 8 pages in all. Pairs of requests
// that each nearly fill a sequence's 4 pages run side by side; the cached pages of one round
// hold every page when the next round starts, so page allocation must evict them (it never throws).
// Some requests continue an earlier one, so reuse happens under pressure too; every request matches
// the engine without reuse.
TEST_P(EnginePrefix, PagePressureEvictsCachedPages) {
  runtime::Engine on(*fx().m, *fx().be, options(true, 64, 2)), off(*fx().m, *fx().be, options(false, 64, 2));
  std::mt19937 g(10);
  std::vector<std::vector<int32_t>> previous;
  for (int round = 0; round < 8; ++round) {
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 2; ++i) {
      const bool continue_previous = !previous.empty() && (round + i) % 3 == 0;
      prompts.push_back(continue_previous ? concat(previous[size_t(i)], random_tokens(g, 4, 7))
                                          : random_tokens(g, 20 + size_t(round), 3 + round * 2 + i));
    }
    std::vector<Gen> a, b;
    ASSERT_NO_THROW(a = run_all(on, prompts, 64));
    ASSERT_NO_THROW(b = run_all(off, prompts, 64));
    for (size_t i = 0; i < 2; ++i) {
      expect_same(a[i], b[i], "round " + std::to_string(round) + " request " + std::to_string(i));
      EXPECT_EQ(a[i].finish, runtime::FinishReason::context_full);
      previous.resize(2);
      previous[i] = prompts[i];
    }
    EXPECT_EQ(on.cached_pages(), 8u);  // 4 full pages each after context_full, all indexed
  }
  EXPECT_GT(on.stats().evicted_pages, 0);
  EXPECT_GT(on.stats().reused_tokens, 0);
  EXPECT_LT(on.stats().prefill_tokens, off.stats().prefill_tokens);
}

// Requests that run at once share the pages of a common prompt: four prompts of a common 40 tokens and
// 5 of their own, added together. The first prefills everything (8 tokens per step); the others get
// budget once its prompt is nearly done and take its two full pages (32 positions), which then have
// four holders; the third page, still being written, is not shared.
TEST_P(EnginePrefix, RunningRequestsShareACommonPrompt) {
  std::mt19937 g(11);
  const std::vector<int32_t> common = random_tokens(g, 40, kBos);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(concat(common, random_tokens(g, 5, 300 + i)));
  runtime::Engine on(*fx().m, *fx().be, options(true, 128, 4)),
      off(*fx().m, *fx().be, options(false, 128, 4));
  const std::vector<Gen> a = run_all(on, prompts, 20), b = run_all(off, prompts, 20);
  for (size_t i = 0; i < a.size(); ++i) expect_same(a[i], b[i], "request " + std::to_string(i));
  EXPECT_EQ(on.stats().reused_tokens, 3 * 32);
  EXPECT_EQ(on.stats().prefill_tokens, 4 * 45 - 3 * 32);
  EXPECT_EQ(off.stats().prefill_tokens, 4 * 45);
}

// The choices of one request (OpenAI n) arrive together with one prompt. With a step budget larger than
// the prompt, the second would prefill beside the first in the same step (nothing is indexed before
// the step ends); instead the others wait for the first's pages and take its two full ones (32
// positions), prefilling only the 8 of the last page: 40 + 3 x 8 positions, not 40 + 40 + 2 x 8.
TEST_P(EnginePrefix, IdenticalPromptsArrivingTogetherPrefillOnce) {
  static const struct Wide {
    std::unique_ptr<backend::Backend> be = backend::make_cpu_backend(2);
    std::unique_ptr<model::LlamaModel> m;
    Wide() {
      model::LoadOptions lo;
      lo.weights = model::WeightMode::f32;
      lo.max_tokens_per_step = 64;
      m = model::load_llama(kModel, *be, lo);
    }
  } wide;
  std::mt19937 g(13);
  const std::vector<std::vector<int32_t>> prompts(4, random_tokens(g, 40, kBos));
  runtime::Engine on(*wide.m, *wide.be, options(true, 128, 4)),
      off(*wide.m, *wide.be, options(false, 128, 4));
  const std::vector<Gen> a = run_all(on, prompts, 12), b = run_all(off, prompts, 12);
  for (size_t i = 0; i < a.size(); ++i) expect_same(a[i], b[i], "choice " + std::to_string(i));
  EXPECT_EQ(on.stats().reused_tokens, 3 * 32);
  EXPECT_EQ(on.stats().prefill_tokens, 40 + 3 * 8);
  EXPECT_EQ(off.stats().prefill_tokens, 4 * 40);
}

// Pages held by running requests are counted once: with the common prompt shared, eight requests fit
// in a pool where their own copies would not, and none is preempted.
TEST_P(EnginePrefix, SharedPagesLeaveRoomInAPool) {
  std::mt19937 g(12);
  const std::vector<int32_t> common = random_tokens(g, 64, kBos);
  std::vector<std::vector<int32_t>> prompts{common};  // the first request makes the pages
  for (int i = 0; i < 8; ++i) prompts.push_back(concat(common, random_tokens(g, 3, 300 + i)));
  runtime::EngineOptions o = options(true, 128, 8);
  o.kv_positions = 256;  // 16 pages: 4 shared + 8 x 1 of each request's own; copies would need 40
  runtime::Engine on(*fx().m, *fx().be, o), off(*fx().m, *fx().be, options(false, 128, 8));
  const Gen first_on = run_one(on, prompts[0], 2);
  expect_same(first_on, run_one(off, prompts[0], 2), "the first request");
  const std::vector<std::vector<int32_t>> rest(prompts.begin() + 1, prompts.end());
  const std::vector<Gen> a = run_all(on, rest, 10), b = run_all(off, rest, 10);
  for (size_t i = 0; i < a.size(); ++i) expect_same(a[i], b[i], "request " + std::to_string(i + 1));
  EXPECT_EQ(on.stats().preemptions, 0);
  EXPECT_EQ(on.stats().reused_tokens, 8 * 64);
}

// prefix_reuse off keeps nothing: the same prompt twice prefills twice.
TEST_P(EnginePrefix, OffKeepsNothing) {
  runtime::Engine off(*fx().m, *fx().be, options(false));
  run_one(off, kPrompt, 3);
  run_one(off, kPrompt, 3);
  EXPECT_EQ(off.cached_pages(), 0u);
  EXPECT_EQ(off.stats().reused_tokens, 0);
  EXPECT_EQ(off.stats().prefill_tokens, 2 * int64_t(kPrompt.size()));
}

INSTANTIATE_TEST_SUITE_P(Isa, EnginePrefix, ::testing::Values(cpu::Isa::scalar, cpu::best_isa()),
                         [](const auto& info) {
                           return std::string(info.index ? "best_" : "") + cpu::isa_name(info.param);
                         });
