// A batch that mixes every way the engine chooses a token (greedy and top-k sampled, each with and
// without penalties, and unrestricted; greedy and top-k rows with logit biases, which the host draws
// whatever the backend: one drawn on the backend would come out unbiased), run with the backend choosing
// where it may or with every row drawn on the host: the two must give the same tokens
// (tests/runtime/engine_backend_draw_test.cpp on the CPU, tests/cuda on the GPU).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace mx8::test {

inline const std::string kStoriesModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

// The (request, token) events of every step, with the engine keeping logits (every row drawn on the
// host) or not (greedy and top-k rows on the backend, whatever its memory).
inline std::vector<std::vector<std::pair<int, int32_t>>> mixed_draw_events(model::LlamaModel& m,
                                                                           backend::Backend& be, bool host) {
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 160;
  eo.max_sequences = 10;
  eo.backend_draw =
      runtime::EngineOptions::BackendDraw::always;  // the CPU backend would leave it to the host
  runtime::Engine eng(m, be, eo);
  eng.keep_logits(host);
  for (int q = 0; q < 10; ++q) {
    runtime::GenerationParams gp;
    gp.max_new_tokens = 100;
    runtime::SamplingParams& sp = gp.sampling;
    sp.seed = uint64_t(5 + q);
    sp.temperature = q < 3 || q == 7 ? 0.0f : q == 3 ? 0.9f : 1.3f;  // 0-2 and 7 greedy, 3-6 sampled
    if (q == 2 || q == 5) sp.repetition_penalty = 1.3f;
    if (q == 4) sp.top_k = 7, sp.top_p = 0.9f, sp.min_p = 0.02f;
    if (q == 5) sp.top_k = 0;  // unrestricted: the host's
    if (q == 6) sp.frequency_penalty = 0.6f, sp.presence_penalty = 0.4f, sp.penalty_last_n = -1;
    if (q == 7) sp.repetition_penalty = 0.8f, sp.frequency_penalty = 0.9f, sp.penalty_last_n = 16;
    if (q >= 8) sp.logit_bias = {{int32_t(300 + q), 4.0f}, {int32_t(20 + q), -100.0f}, {1, 1.5f}};
    if (q == 8) sp.temperature = 0.0f;  // greedy; 9 samples from the top 40
    eng.add({1, int32_t(300 + 17 * q)}, gp);
  }
  std::vector<std::vector<std::pair<int, int32_t>>> steps;
  while (!eng.idle()) {
    steps.emplace_back();
    for (const runtime::TokenEvent& e : eng.step()) steps.back().push_back({e.request, e.token});
  }
  return steps;
}

// The events of a batch whose sequences ask for the log-probabilities of their tokens (0, 2, 3 and 5
// alternatives): greedy and top-k sampled, each with and without penalties (drawn on the backend where it
// reads rows; the log-probabilities are of the row before the penalties), and unrestricted (the host's),
// with the backend choosing where it may (`host` false) or every row downloaded and drawn on the host.
inline std::vector<runtime::TokenEvent> logprob_draw_events(model::LlamaModel& m, backend::Backend& be,
                                                            bool host) {
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 96;
  eo.max_sequences = 6;
  eo.backend_draw =
      host ? runtime::EngineOptions::BackendDraw::never : runtime::EngineOptions::BackendDraw::always;
  runtime::Engine eng(m, be, eo);
  for (int q = 0; q < 6; ++q) {
    runtime::GenerationParams gp;
    gp.max_new_tokens = 40;
    gp.logprobs = std::vector<int>{3, 0, 5, 3, 2, 3}[size_t(q)];
    runtime::SamplingParams& sp = gp.sampling;
    sp.seed = uint64_t(11 + q);
    sp.temperature = q == 0 || q == 5 ? 0.0f : 1.1f;  // 0 and 5 greedy, 1-4 sampled
    if (q == 3) sp.frequency_penalty = 0.7f, sp.repetition_penalty = 1.2f;
    if (q == 5) sp.repetition_penalty = 0.7f;  // below 1: the penalized tokens are the likelier, and drawn
    if (q == 4) sp.top_k = 0;                  // unrestricted: the host's
    eng.add({1, int32_t(310 + 23 * q)}, gp);
  }
  std::vector<runtime::TokenEvent> events;
  while (!eng.idle())
    for (runtime::TokenEvent& e : eng.step()) events.push_back(std::move(e));
  return events;
}

}  // namespace mx8::test
