// Greedy decoding and top-k sampling choose on the backend (Backend::penalize, then Backend::argmax, or
// Backend::top_k with Sampler::sample_top_k): only indices and k candidates come back. Every token must
// be the one the host sampler draws from the downloaded logits, with greedy, top-k sampled, penalised
// and unrestricted sequences in one batch, on the bundled stories260K.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/error.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/sampler.h"
#include "runtime/mixed_draw.h"

namespace {

using namespace mx8;

// The bundled stories260K, set up for steps of up to `max_tokens` tokens.
std::unique_ptr<model::LlamaModel> load_stories(backend::Backend& be, int max_tokens) {
  model::LoadOptions lo;
  lo.max_tokens_per_step = max_tokens;
  return model::load_llama(test::kStoriesModel, be, lo);
}

// An f32 KV cache of `pages` pages of 16 positions for model m.
std::unique_ptr<backend::KvCache> f32_cache(const model::LlamaModel& m, backend::Backend& be, int pages) {
  const auto& c = m.config();
  return be.create_kv_cache(
      {backend::KvFormat::f32, int(c.n_layers), int(c.n_kv_heads), int(c.head_dim), 16, pages});
}

TEST(EngineBackendDraw, TokensAreTheHostSamplers) {
  auto be = backend::make_cpu_backend(2);
  auto m = load_stories(*be, 32);
  const auto on_backend = test::mixed_draw_events(*m, *be, false),
             on_host = test::mixed_draw_events(*m, *be, true);
  EXPECT_EQ(on_backend, on_host);
  EXPECT_GT(on_backend.size(), 50u);  // the sequences ran to their limits or ends, not one step
}

TEST(EngineBackendDraw, LogprobsOfTokensDrawnOnTheBackendAreTheHosts) {
  // Greedy and top-k rows that ask for log-probabilities choose on the backend too; the log sum exp, the
  // alternatives and the drawn token's logit come from there (Backend::log_sum_exp, top_k at temperature
  // 1, gather). The CPU backend's arithmetic is the host's: the same tokens and values, bit for bit.
  auto be = backend::make_cpu_backend(2);
  auto m = load_stories(*be, 32);
  const auto on_backend = test::logprob_draw_events(*m, *be, false),
             on_host = test::logprob_draw_events(*m, *be, true);
  ASSERT_EQ(on_backend.size(), on_host.size());
  ASSERT_GT(on_host.size(), 100u);
  for (size_t i = 0; i < on_host.size(); ++i) {
    const auto &a = on_backend[i], &b = on_host[i];
    ASSERT_EQ(a.request, b.request) << "event " << i;
    ASSERT_EQ(a.token, b.token) << "event " << i;
    ASSERT_TRUE(a.logprobs && b.logprobs) << "event " << i;
    EXPECT_EQ(a.logprobs->token, b.logprobs->token);
    EXPECT_EQ(a.logprobs->logprob, b.logprobs->logprob) << "request " << b.request << ", event " << i;
    EXPECT_EQ(a.logprobs->top, b.logprobs->top) << "request " << b.request << ", event " << i;
  }
}

TEST(EngineBackendDraw, SampleTopKIgnoresPaddingAndUsesItsOwnK) {
  // Candidates as Backend::top_k gives them for a k larger than this sampler's: the first top_k are
  // the sampler's; ids of -1 end the list.
  runtime::SamplingParams p;
  p.temperature = 1.0f, p.top_k = 2, p.top_p = 1.0f, p.min_p = 0.0f, p.seed = 3;
  runtime::Sampler s(p);
  const std::vector<float> v{5.0f, 4.0f, 100.0f, 0.0f};
  const std::vector<int32_t> ids{7, 9, 11, -1};
  for (int i = 0; i < 200; ++i) {
    const int32_t t = s.sample_top_k(v, ids);
    EXPECT_TRUE(t == 7 || t == 9) << t;  // 11 is past top_k = 2
  }
  p.top_k = 8;
  runtime::Sampler wide(p);
  for (int i = 0; i < 200; ++i) EXPECT_NE(wide.sample_top_k(v, ids), -1);  // the padding is never drawn
}

TEST(EngineBackendDraw, ForwardReturnsTheArgmaxOfTheRowsItWouldDownload) {
  auto be = backend::make_cpu_backend(2);
  auto m = load_stories(*be, 8);
  const size_t vocab = size_t(m->config().vocab);
  auto forward = [&](int argmax_rows, std::vector<float>& logits, std::vector<int32_t>& ids) {
    auto cache = f32_cache(*m, *be, 1);
    model::StepBatch b;
    b.max_pages_per_seq = 1;
    b.block_tables = {0};
    for (int i = 0; i < 6; ++i) {
      b.tokens.push_back(i == 0 ? 1 : 40 + 31 * i);
      b.pos.push_back(i);
      b.seq.push_back(0);
      b.slot.push_back(i);
      b.kv_len.push_back(i + 1);
    }
    b.logit_rows = {5, 1, 3};
    b.argmax_rows = argmax_rows;
    logits.assign((3 - size_t(argmax_rows)) * vocab, 0.0f);
    ids.assign(size_t(argmax_rows), -1);
    m->forward(b, *cache, model::StepOutput{logits.data(), nullptr, nullptr, ids.data()});
  };
  std::vector<float> all, some;
  std::vector<int32_t> none, two;
  forward(0, all, none);
  forward(2, some, two);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(std::vector<float>(all.begin(), all.begin() + long(vocab)), some);  // row 5's logits
  for (size_t r = 1; r < 3; ++r)
    EXPECT_EQ(two[r - 1], runtime::argmax({all.data() + r * vocab, vocab})) << "logit row " << r;
}

TEST(EngineBackendDraw, ForwardRejectsPenaltiesItCannotApply) {
  auto be = backend::make_cpu_backend(1);
  auto m = load_stories(*be, 4);
  auto cache = f32_cache(*m, *be, 1);
  const int32_t vocab = int32_t(m->config().vocab);
  struct Case {
    std::vector<float> penalties;
    std::vector<int32_t> entries;
    const char* says;
  } cases[] = {{{1.3f, 0, 0}, {0, 5, 1, 0, 5, 2}, "twice"}, {{1.3f, 0, 0}, {0, vocab, 1}, "outside"},
               {{1.3f, 0, 0}, {1, 5, 1}, "outside"},        {{1.3f, 0, 0}, {0, 5, 0}, "outside"},
               {{0.0f, 0, 0}, {0, 5, 1}, "positive"},       {{1.3f, 0}, {0, 5, 1}, "three values"},
               {{1.3f, 0, 0}, {-1, 5, 1}, "outside"},       {{1.3f, 0, 0}, {0, -1, 1}, "outside"}};
  for (const Case& c : cases) {
    model::StepBatch b;
    b.max_pages_per_seq = 1;
    b.block_tables = {0};
    b.tokens = {1}, b.pos = {0}, b.seq = {0}, b.slot = {0}, b.kv_len = {1};
    b.logit_rows = {0};
    b.argmax_rows = 1;
    b.penalties = c.penalties;
    b.penalty_entries = c.entries;
    int32_t id = -1;
    try {
      m->forward(b, *cache, model::StepOutput{nullptr, nullptr, nullptr, &id});
      ADD_FAILURE() << "accepted; expected an error that says " << c.says;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << e.what();
    }
  }
}

// StepBatch::selected_logprobs as llama.h states it, on one step: two identical tokens (BOS of two
// sequences), a log-probability row for token 5 and an arg max row that wants its own log-probability.
// The selected row's token logit is NaN (it has no given token), its log sum exp is the other row's,
// and its drawn logit is its largest, all against the full logits of the same step.
TEST(EngineBackendDraw, SelectedRowsGetTheirLogSumExpButNoTokenLogit) {
  auto be = backend::make_cpu_backend(1);
  auto m = load_stories(*be, 4);
  const int64_t vocab = m->config().vocab;
  auto step = [&](bool full, auto&& out) {
    auto cache = f32_cache(*m, *be, 2);
    model::StepBatch b;
    b.max_pages_per_seq = 1;
    b.block_tables = {0, 1};
    b.tokens = {1, 1}, b.pos = {0, 0}, b.seq = {0, 1}, b.slot = {0, 16}, b.kv_len = {1, 1};
    b.logit_rows = {0, 1};
    if (!full) {
      b.logprob_tokens = {5};
      b.argmax_rows = 1;
      b.selected_logprobs = true;
    }
    m->forward(b, *cache, out);
  };
  std::vector<float> logits(size_t(2 * vocab));
  step(true, model::StepOutput{logits.data()});
  double lse[2];
  float token_logits[2], drawn = 0;
  int32_t id = -1;
  model::StepOutput out;
  out.argmax = &id;
  out.lse = lse;
  out.token_logits = token_logits;
  out.drawn_logits = &drawn;
  step(false, out);
  const float* row = logits.data() + vocab;
  const int32_t best = int32_t(std::max_element(row, row + vocab) - row);
  EXPECT_EQ(id, best);
  EXPECT_EQ(token_logits[0], logits[5]);
  EXPECT_TRUE(std::isnan(token_logits[1])) << token_logits[1];
  EXPECT_EQ(lse[1], lse[0]);  // the same logits, the same arithmetic
  EXPECT_EQ(drawn, row[best]);
}

// The model keeps the penalty entries in a buffer that grows when a step brings more than it holds
// (1024 at first): steps of 6, then 1500 (three rows of 500 tokens, more than any server step of a few
// sequences), then 6 entries again, each against the CPU backend's own penalize and arg max over the
// unpenalized logits of the same tokens.
TEST(EngineBackendDraw, PenaltiesBeyondTheFirstBufferStillApply) {
  auto be = backend::make_cpu_backend(1);
  auto m = load_stories(*be, 4);
  const int vocab = int(m->config().vocab);
  auto cache = f32_cache(*m, *be, 3);
  model::StepBatch b;
  b.max_pages_per_seq = 1;
  b.block_tables = {0, 1, 2};
  b.tokens = {1, 1, 1}, b.pos = {0, 0, 0}, b.seq = {0, 1, 2}, b.slot = {0, 16, 32}, b.kv_len = {1, 1, 1};
  b.logit_rows = {0, 1, 2};
  std::vector<float> logits(size_t(3 * vocab));
  m->forward(b, *cache, model::StepOutput{logits.data()});
  b.argmax_rows = 3;
  b.penalties = {3.0f, 1.0f, 5.0f, 2.0f, 0.0f, 0.0f, 1.0f, 0.5f, 1.5f};
  // Each row's tokens by falling logit: the entries name the likeliest first, so that they move choices.
  std::vector<std::vector<int32_t>> order(3, std::vector<int32_t>(static_cast<size_t>(vocab)));
  for (int r = 0; r < 3; ++r) {
    const float* row = logits.data() + r * vocab;
    for (int i = 0; i < vocab; ++i) order[size_t(r)][size_t(i)] = i;
    std::stable_sort(order[size_t(r)].begin(), order[size_t(r)].end(),
                     [&](int32_t a, int32_t c) { return row[a] > row[c]; });
  }
  for (int tokens_per_row : {2, 500, 2}) {
    b.penalty_entries.clear();
    for (int r = 0; r < 3; ++r)
      for (int t = 0; t < tokens_per_row; ++t)
        b.penalty_entries.insert(b.penalty_entries.end(), {r, order[size_t(r)][size_t(t)], 1 + t % 3});
    int32_t ids[3] = {-1, -1, -1};
    m->forward(b, *cache, model::StepOutput{nullptr, nullptr, nullptr, ids});
    std::vector<float> want = logits;
    const int32_t n = int32_t(b.penalty_entries.size() / 3);
    be->penalize(want.data(), 3, vocab, {b.penalties.data(), &n, b.penalty_entries.data()});
    int32_t want_ids[3];
    be->argmax(want.data(), 3, vocab, want_ids);
    for (int r = 0; r < 3; ++r)
      EXPECT_EQ(ids[r], want_ids[r]) << tokens_per_row << " tokens a row, row " << r;
    if (tokens_per_row == 2) {  // the penalties move row 0's choice: the comparison is not of equals
      EXPECT_NE(want_ids[0], order[0][0]);
    }
  }
}

}  // namespace
