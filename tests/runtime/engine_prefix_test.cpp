// Prefix reuse in the Engine (engine.h): a finished sequence's KV pages are kept and a later prompt
// that shares its token prefix starts with those positions cached. Every case runs the same requests
// through an engine with prefix_reuse off and compares greedy tokens and the logits of every step,
// and checks the prefill and reuse counts exactly. With the scalar CPU kernels, whose ops are
// row-independent, the logits must be equal bit for bit: a position's K/V and a query's logits may
// not depend on which step or chunk computed them. With the best ISA (AVX2/AVX-512) the f32 GEMV of
// one row sums in a different order from that of several rows, so there the logits agree to a few
// ulps (see expect_same). stories260K (F32), prefill chunks of 8 tokens so prompts span several steps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "mx8/backend/backend.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace {

using namespace mx8;

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";
constexpr int kChunk = 8;  // tokens per forward step: a 30-token prompt takes 4 steps
constexpr int32_t kBos = 1;

struct Fixture {
  std::unique_ptr<backend::Backend> be = backend::make_cpu_backend(2);
  std::unique_ptr<model::LlamaModel> m;
  Fixture() {
    model::LoadOptions lo;
    lo.weights = model::WeightMode::f32;
    lo.max_tokens_per_step = kChunk;
    m = model::load_llama(kModel, *be, lo);
  }
};

Fixture& fx() {
  static Fixture f;
  return f;
}

struct Gen {
  std::vector<int32_t> tokens;             // generated
  std::vector<std::vector<float>> logits;  // of every step that sampled for it and did not end it
  runtime::FinishReason finish = runtime::FinishReason::none;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_same(const Gen& a, const Gen& b, const std::string& what) {
  EXPECT_EQ(a.tokens, b.tokens) << what;
  EXPECT_EQ(a.finish, b.finish) << what;
  ASSERT_EQ(a.logits.size(), b.logits.size()) << what;
  const bool exact = cpu::active_isa() == cpu::Isa::scalar;
  for (size_t i = 0; i < a.logits.size(); ++i) {
    if (exact) {
      EXPECT_TRUE(same_bits(a.logits[i], b.logits[i])) << what << ": logits of step " << i;
      continue;
    }
    // On the SIMD kernels the f32 GEMV of one row (decode) sums in another order than the tile
    // kernel of 2+ rows (prefill), so a reused position, computed while the first request decoded,
    // differs by a few ulps from the same position prefilled again; the layers compound that.
    // Measured: at most 5.7e-7 of the largest |logit| (8.3e-6 at 24). 1e-5 leaves ~20x; a wrong page
    // or position changes logits by O(1) and the tokens with them, and the scalar run is exact.
    float diff = 0, mag = 1;
    for (size_t v = 0; v < a.logits[i].size(); ++v) {
      diff = std::max(diff, std::abs(a.logits[i][v] - b.logits[i][v]));
      mag = std::max(mag, std::abs(b.logits[i][v]));
    }
    EXPECT_LE(diff, 1e-5f * mag) << what << ": logits of step " << i;
  }
}

runtime::EngineOptions options(bool reuse, int max_context = 512, int max_sequences = 1) {
  runtime::EngineOptions o;
  o.kv_format = backend::KvFormat::f32;
  o.max_context = max_context;
  o.max_sequences = max_sequences;
  o.page_size = 16;
  o.prefix_reuse = reuse;
  return o;
}

runtime::GenerationParams greedy(int n) {
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = n;
  return gp;
}

// Runs all `prompts` at once (each with up to n new tokens) until the engine is idle. A request is
// cancelled once it has `cancel_after` generated tokens (or, at 0, after the first step).
std::vector<Gen> run_all(runtime::Engine& eng, const std::vector<std::vector<int32_t>>& prompts, int n,
                         int cancel_after = -1) {
  eng.keep_logits(true);
  std::map<int, size_t> index;
  for (size_t i = 0; i < prompts.size(); ++i) index[eng.add(prompts[i], greedy(n))] = i;
  std::vector<Gen> runs(prompts.size());
  bool first = true;
  while (!eng.idle()) {
    for (const runtime::TokenEvent& e : eng.step()) {
      Gen& r = runs[index.at(e.request)];
      if (e.token >= 0) r.tokens.push_back(e.token);
      r.finish = e.finish;
      if (e.finish == runtime::FinishReason::none) r.logits.push_back(*eng.last_logits(e.request));
      if (cancel_after > 0 && int(r.tokens.size()) == cancel_after) eng.cancel(e.request);
    }
    if (cancel_after == 0 && first)
      for (auto& [id, i] : index) eng.cancel(id);
    first = false;
  }
  return runs;
}

Gen run_one(runtime::Engine& eng, const std::vector<int32_t>& prompt, int n, int cancel_after = -1) {
  return run_all(eng, {prompt}, n, cancel_after)[0];
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int32_t> random_tokens(std::mt19937& g, size_t n, int32_t first) {
  std::vector<int32_t> t{first};
  std::uniform_int_distribution<int32_t> d(3, 511);  // stories260K: 512 tokens; 0..2 are special
  while (t.size() < n) t.push_back(d(g));
  return t;
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
  EXPECT_EQ(off.retained_prefixes(), 0u);
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
// (its only token must be fed) and leaves the retained prefix in place: with max_sequences 1 it is
// the bound on retained prefixes, not the BOS request, that drops it afterwards.
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
  EXPECT_EQ(on.retained_prefixes(), 1u);
  expect_same(run_one(on, {kBos}, 6), run_one(off, {kBos}, 6), "BOS only");
  EXPECT_EQ(on.stats().reused_tokens, 0);
  EXPECT_EQ(on.stats().prefill_tokens, 6);  // 5 + 1
  EXPECT_EQ(on.stats().evicted_prefixes, 1);
  EXPECT_EQ(on.retained_prefixes(), 1u);  // BOS + 5 fed tokens
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
// that each nearly fill a sequence's 4 pages run side by side; the retained prefixes of one round
// hold every page when the next round starts, so page allocation must evict them (it never throws).
// Some requests continue an earlier one, so reuse happens under pressure too; every request matches
// the engine without reuse.
TEST_P(EnginePrefix, PagePressureEvictsRetainedPrefixes) {
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
    EXPECT_EQ(on.retained_prefixes(), 2u);  // 4 pages each after context_full: all 8 pages
  }
  EXPECT_GT(on.stats().evicted_prefixes, 0);
  EXPECT_GT(on.stats().reused_tokens, 0);
  EXPECT_LT(on.stats().prefill_tokens, off.stats().prefill_tokens);
}

// prefix_reuse off keeps nothing: the same prompt twice prefills twice.
TEST_P(EnginePrefix, OffKeepsNothing) {
  runtime::Engine off(*fx().m, *fx().be, options(false));
  run_one(off, kPrompt, 3);
  run_one(off, kPrompt, 3);
  EXPECT_EQ(off.retained_prefixes(), 0u);
  EXPECT_EQ(off.stats().reused_tokens, 0);
  EXPECT_EQ(off.stats().prefill_tokens, 2 * int64_t(kPrompt.size()));
}

INSTANTIATE_TEST_SUITE_P(Isa, EnginePrefix, ::testing::Values(cpu::Isa::scalar, cpu::best_isa()),
                         [](const auto& info) {
                           return std::string(info.index ? "best_" : "") + cpu::isa_name(info.param);
                         });
