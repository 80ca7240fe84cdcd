// The engine samples several sequences of a large vocabulary in parallel (engine.cpp, step): each
// sequence must still draw exactly the tokens it draws alone, where sampling runs on the stepping
// thread. A small random model with a 32768-entry vocabulary (the parallel path's threshold), scalar
// CPU kernels (row-independent: batching changes no logit bit), sampled with a seed per sequence.
#include <gtest/gtest.h>

#include "mx8/backend/backend.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace {

using namespace mx8;

std::vector<std::vector<int32_t>> generate(model::LlamaModel& m, backend::Backend& be, int sequences,
                                           int first) {
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 64;
  eo.max_sequences = sequences;
  runtime::Engine eng(m, be, eo);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(sequences));
  for (int q = 0; q < sequences; ++q) {
    runtime::GenerationParams gp;
    gp.sampling.temperature = 1.5f;  // flat enough that many candidates are live
    gp.sampling.top_k = 50;
    gp.sampling.seed = uint64_t(first + q);
    gp.max_new_tokens = 24;
    EXPECT_EQ(eng.add({int32_t(first + q), 7, 11}, gp), q);
  }
  while (!eng.idle())
    for (const runtime::TokenEvent& e : eng.step())
      if (e.token >= 0) out[size_t(e.request)].push_back(e.token);
  return out;
}

TEST(EngineSampling, ParallelRowsDrawWhatEachSequenceDrawsAlone) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  model::LlamaConfig c;
  c.arch = "llama";
  c.vocab = 32768;
  c.dim = 64;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn = 128;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000;
  c.max_position = 64;
  auto be = backend::make_cpu_backend(2);
  auto m = model::make_random_llama(c, *be, model::WeightMode::f32, 16, 99);
  const auto together = generate(*m, *be, 6, 100);
  for (int q = 0; q < 6; ++q) {
    const auto alone = generate(*m, *be, 1, 100 + q);
    ASSERT_EQ(together[size_t(q)].size(), 24u);
    EXPECT_EQ(together[size_t(q)], alone[0]) << "sequence " << q;
  }
  // Different seeds draw different tokens (the comparison above is not between constant outputs).
  EXPECT_NE(together[0], together[1]);
}

}  // namespace

// A request that asks for log-probabilities gets, with each token, those of the logits it was drawn
// from before its penalties (the raw model distribution), and its alternatives; others get none.
TEST(EngineSampling, LogprobsOfTheRowsTheTokensCameFrom) {
  auto be = backend::make_cpu_backend(2);
  model::LoadOptions lo;
  lo.weights = model::WeightMode::f32;
  auto m = model::load_llama(std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf", *be, lo);
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 64;
  eo.max_sequences = 2;
  eo.backend_draw = runtime::EngineOptions::BackendDraw::always;  // logprobs must still be the host's
  runtime::Engine eng(*m, *be, eo);
  eng.keep_logits(true);
  runtime::GenerationParams with, without;
  with.max_new_tokens = without.max_new_tokens = 12;
  with.sampling.repetition_penalty = 1.3f;  // changes the row in place: the logprobs must not see that
  with.sampling.seed = 3;
  with.logprobs = 4;
  without.sampling.temperature = 0;
  const int a = eng.add({1, 403, 407, 261}, with), b = eng.add({1, 300, 301}, without);
  int seen = 0;
  while (!eng.idle())
    for (const runtime::TokenEvent& e : eng.step()) {
      if (e.request == b) {
        EXPECT_FALSE(e.logprobs.has_value());
        continue;
      }
      ASSERT_EQ(e.request, a);
      ASSERT_TRUE(e.logprobs.has_value());
      ++seen;
      if (e.finish != runtime::FinishReason::none) continue;  // the engine has let the sequence go
      const runtime::TokenLogprobs want = runtime::token_logprobs(*eng.last_logits(a), e.token, 4);
      EXPECT_EQ(e.logprobs->token, e.token);
      EXPECT_EQ(e.logprobs->logprob, want.logprob);
      EXPECT_EQ(e.logprobs->top, want.top);
    }
  EXPECT_EQ(seen, 12);
}

// Prompt log-probabilities (the completions' echo): token j's is its log-probability under the logits
// of position j - 1, as a request for the prompt's first j tokens would have them for its first draw;
// they come with the first generated token, and a request that does not ask has none.
TEST(EngineSampling, PromptLogprobsAreThoseOfEachPrefix) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);  // the chunked rows equal the single ones bit for bit
  auto be = backend::make_cpu_backend(2);
  model::LoadOptions lo;
  lo.weights = model::WeightMode::f32;
  lo.max_tokens_per_step = 4;  // an 11-token prompt over three steps
  auto m = model::load_llama(std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf", *be, lo);
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 64;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 446, 280, 301, 268, 388, 371};
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = 2;
  gp.logprobs = 2;
  gp.prompt_logprobs = true;
  // From whole rows on the host, and from what the backend computes of them (Backend::log_sum_exp and
  // top_k: the CPU backend's are the host's arithmetic, so the two agree bit for bit here).
  std::vector<runtime::TokenLogprobs> got, got_on_backend;
  for (auto* out : {&got, &got_on_backend}) {
    eo.backend_draw = out == &got ? runtime::EngineOptions::BackendDraw::never
                                  : runtime::EngineOptions::BackendDraw::always;
    runtime::Engine eng(*m, *be, eo);
    eng.add(prompt, gp);
    int events = 0;
    while (!eng.idle())
      for (runtime::TokenEvent& e : eng.step()) {
        if (events++ == 0)
          *out = std::move(e.prompt_logprobs);
        else
          EXPECT_TRUE(e.prompt_logprobs.empty());
      }
  }
  eo.backend_draw = runtime::EngineOptions::BackendDraw::auto_;
  ASSERT_EQ(got.size(), prompt.size() - 1);
  ASSERT_EQ(got_on_backend.size(), got.size());
  for (size_t j = 0; j < got.size(); ++j) {
    EXPECT_EQ(got_on_backend[j].token, got[j].token) << "token " << j + 1;
    EXPECT_EQ(got_on_backend[j].logprob, got[j].logprob) << "token " << j + 1;
    EXPECT_EQ(got_on_backend[j].top, got[j].top) << "token " << j + 1;
  }
  for (size_t j = 1; j < prompt.size(); ++j) {
    runtime::Engine eng(*m, *be, eo);
    eng.keep_logits(true);
    runtime::GenerationParams one = gp;
    one.prompt_logprobs = false;
    one.max_new_tokens = 3;
    const int id = eng.add({prompt.begin(), prompt.begin() + std::ptrdiff_t(j)}, one);
    while (eng.step().empty()) {  // prefill steps until the first token
    }
    const runtime::TokenLogprobs want = runtime::token_logprobs(*eng.last_logits(id), prompt[j], 2);
    EXPECT_EQ(got[j - 1].token, prompt[j]);
    EXPECT_EQ(got[j - 1].logprob, want.logprob) << "token " << j;
    EXPECT_EQ(got[j - 1].top, want.top) << "token " << j;
  }
}

// Several sequences with prompt log-probabilities in one step, asking for different numbers of
// alternatives (0, 1, 5 and 2), greedy and top-k sampled (their generated tokens' log-probabilities from
// the backend too), beside a sequence that asks for none: the rows the backend reads must be each
// sequence's own, with its own count, whatever else shares the step.
TEST(EngineSampling, PromptLogprobsOfSeveralSequencesOnTheBackend) {
  auto be = backend::make_cpu_backend(2);
  model::LoadOptions lo;
  lo.max_tokens_per_step = 16;
  auto m = model::load_llama(std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf", *be, lo);
  const std::vector<int> alternatives = {0, 1, 5, 2};
  auto run = [&](runtime::EngineOptions::BackendDraw where) {
    runtime::EngineOptions eo;
    eo.kv_format = backend::KvFormat::f32;
    eo.max_context = 64;
    eo.max_sequences = 5;
    eo.backend_draw = where;
    runtime::Engine eng(*m, *be, eo);
    for (int q = 0; q < 5; ++q) {
      runtime::GenerationParams gp;
      gp.sampling.temperature = q >= 3 ? 0.9f : 0.0f;
      gp.sampling.seed = 9;
      gp.max_new_tokens = 4;
      gp.logprobs = q == 4 ? -1 : alternatives[size_t(q)];
      gp.prompt_logprobs = q < 4;
      std::vector<int32_t> prompt = {1};
      for (int i = 0; i < 6 + 5 * q; ++i) prompt.push_back(int32_t(260 + 13 * q + 7 * i));
      eng.add(prompt, gp);
    }
    std::vector<runtime::TokenEvent> events;
    while (!eng.idle())
      for (runtime::TokenEvent& e : eng.step()) events.push_back(std::move(e));
    return events;
  };
  const auto host = run(runtime::EngineOptions::BackendDraw::never),
             backend = run(runtime::EngineOptions::BackendDraw::always);
  ASSERT_EQ(backend.size(), host.size());
  size_t prompt_lps = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    EXPECT_EQ(backend[i].request, host[i].request);
    EXPECT_EQ(backend[i].token, host[i].token);
    ASSERT_EQ(backend[i].logprobs.has_value(), host[i].logprobs.has_value());
    if (host[i].logprobs) {
      EXPECT_EQ(backend[i].logprobs->logprob, host[i].logprobs->logprob) << "event " << i;
      EXPECT_EQ(backend[i].logprobs->top, host[i].logprobs->top) << "event " << i;
    }
    ASSERT_EQ(backend[i].prompt_logprobs.size(), host[i].prompt_logprobs.size()) << "event " << i;
    for (size_t j = 0; j < host[i].prompt_logprobs.size(); ++j) {
      const auto &a = backend[i].prompt_logprobs[j], &b = host[i].prompt_logprobs[j];
      EXPECT_EQ(a.token, b.token);
      EXPECT_EQ(a.logprob, b.logprob) << "request " << host[i].request << ", prompt token " << j + 1;
      EXPECT_EQ(a.top, b.top) << "request " << host[i].request << ", prompt token " << j + 1;
      EXPECT_EQ(a.top.size(), size_t(alternatives[size_t(host[i].request)]));
      ++prompt_lps;
    }
  }
  EXPECT_EQ(prompt_lps,
            size_t(6 + 11 + 16 + 21));  // every prompt token but the first, of the four that asked
}
