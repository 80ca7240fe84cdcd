// Running the same requests through engines with different options (prefix reuse, a shared KV pool)
// and comparing what they generate: stories260K (F32) on the CPU backend, prefill chunks of 8 tokens
// so that prompts span several steps.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "mx8/backend/backend.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"

namespace engine_runs {

using namespace mx8;

inline const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";
inline constexpr int kChunk = 8;  // tokens per forward step: a 30-token prompt takes 4 steps
inline constexpr int32_t kBos = 1;

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

inline Fixture& fx() {
  static Fixture f;
  return f;
}

struct Gen {
  std::vector<int32_t> tokens;             // generated
  std::vector<std::vector<float>> logits;  // of every step that sampled for it and did not end it
  runtime::FinishReason finish = runtime::FinishReason::none;
};

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline void expect_same(const Gen& a, const Gen& b, const std::string& what) {
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
    // kernel of 2+ rows (prefill), so a position computed while a request decoded (then reused by
    // another, or dropped by a preemption) differs by a few ulps from the same position prefilled
    // again; the layers compound that.
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

// An f32 cache in pages of 16 positions (f32: the logits of different runs compare bit for bit).
inline runtime::EngineOptions engine_options(int max_context, int max_sequences, bool prefix_reuse = true,
                                             int64_t kv_positions = 0) {
  runtime::EngineOptions o;
  o.kv_format = backend::KvFormat::f32;
  o.max_context = max_context;
  o.max_sequences = max_sequences;
  o.page_size = 16;
  o.prefix_reuse = prefix_reuse;
  o.kv_positions = kv_positions;
  return o;
}

inline runtime::GenerationParams greedy(int n) {
  runtime::GenerationParams gp;
  gp.sampling.temperature = 0;
  gp.max_new_tokens = n;
  return gp;
}

// Runs `prompts`, request i with params[i], until the engine is idle: all added at once, or (`at`,
// non-decreasing) request i added before step at[i], steps counted from the first. A request is
// cancelled once it has `cancel_after` generated tokens (or, at 0, after the first step).
inline std::vector<Gen> run_requests(runtime::Engine& eng, const std::vector<std::vector<int32_t>>& prompts,
                                     const std::vector<runtime::GenerationParams>& params,
                                     int cancel_after = -1, const std::vector<int>& at = {}) {
  eng.keep_logits(true);
  std::map<int, size_t> index;
  std::vector<Gen> runs(prompts.size());
  size_t added = 0;
  for (int step = 0; added < prompts.size() || !eng.idle(); ++step) {
    for (; added < prompts.size() && (at.empty() || at[added] <= step); ++added)
      index[eng.add(prompts[added], params[added])] = added;
    for (const runtime::TokenEvent& e : eng.step()) {
      Gen& r = runs[index.at(e.request)];
      if (e.token >= 0) r.tokens.push_back(e.token);
      r.finish = e.finish;
      if (e.finish == runtime::FinishReason::none) r.logits.push_back(*eng.last_logits(e.request));
      if (cancel_after > 0 && int(r.tokens.size()) == cancel_after) eng.cancel(e.request);
    }
    if (cancel_after == 0 && step == 0)
      for (auto& [id, i] : index) eng.cancel(id);
  }
  return runs;
}

// The same with every request greedy, up to n new tokens.
inline std::vector<Gen> run_all(runtime::Engine& eng, const std::vector<std::vector<int32_t>>& prompts, int n,
                                int cancel_after = -1) {
  return run_requests(eng, prompts, std::vector<runtime::GenerationParams>(prompts.size(), greedy(n)),
                      cancel_after);
}

inline Gen run_one(runtime::Engine& eng, const std::vector<int32_t>& prompt, int n, int cancel_after = -1) {
  return run_all(eng, {prompt}, n, cancel_after)[0];
}

inline std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

inline std::vector<int32_t> random_tokens(std::mt19937& g, size_t n, int32_t first) {
  std::vector<int32_t> t{first};
  std::uniform_int_distribution<int32_t> d(3, 511);  // stories260K: 512 tokens; 0..2 are special
  while (t.size() < n) t.push_back(d(g));
  return t;
}

}  // namespace engine_runs
