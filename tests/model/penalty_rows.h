// Penalties for the rows of selection_rows.h (Backend::penalize against the sampler's step 1): each row
// a sequence history with repeated tokens, its own repetition / frequency / presence penalties (above
// and below 1, negative, fractional), and the entries Sampler::penalty_counts makes of them. Row 0 also
// gets subnormal, infinite and zero logits at tokens of its history.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "model/selection_rows.h"
#include "mx8/runtime/sampler.h"

namespace mx8::test {

struct PenaltyRows {
  std::vector<float> x;  // the rows, with row 0's special values
  std::vector<runtime::SamplingParams> sampling;
  std::vector<std::vector<int32_t>> history;
  std::vector<float> params;     // PenaltyArgs::params
  std::vector<int32_t> entries;  // PenaltyArgs::entries, row by row
  int32_t n() const { return int32_t(entries.size() / 3); }
};

inline PenaltyRows penalty_rows(const SelectionRows& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> at(0, c.cols - 1);
  PenaltyRows p;
  p.x = c.x;
  const float specials[] = {1e-40f, -3e-42f, INFINITY, -INFINITY, 0.0f, -0.0f, 1e30f, -1e30f};
  const float penalties[][3] = {{1.3f, 0.0f, 0.0f},    {0.7f, 0.0f, 0.0f},  {1.0f, 0.5f, 0.25f},
                                {1.15f, -0.4f, 1e-3f}, {1.0f, 0.0f, 2.0f},  {2.5f, 1.7f, -0.3f},
                                {0.9f, 0.1f, 0.1f},    {1.0f, 1e-7f, 3e-8f}};
  for (int64_t r = 0; r < c.rows(); ++r) {
    std::vector<int32_t> h;
    // A few tokens many times, many tokens once: counts from 1 to ~12.
    for (int i = 0; i < 4; ++i) {
      const int32_t t = int32_t(at(rng));
      for (int j = 0; j < 1 + int(rng() % 12); ++j) h.push_back(t);
    }
    for (int i = 0; i < 40; ++i) h.push_back(int32_t(at(rng)));
    if (r == 0)
      for (float v : specials) {
        const int32_t t = int32_t(at(rng));
        p.x[size_t(t)] = v;
        h.push_back(t);
      }
    std::shuffle(h.begin(), h.end(), rng);
    runtime::SamplingParams s;
    s.temperature = 0.0f;
    const float* q = penalties[r % 8];
    s.repetition_penalty = q[0], s.frequency_penalty = q[1], s.presence_penalty = q[2];
    s.penalty_last_n = r % 3 == 0 ? 20 : -1;  // a window that leaves some of the history out, or all of it
    for (auto [token, count] : runtime::Sampler(s).penalty_counts(h, int32_t(c.cols)))
      p.entries.insert(p.entries.end(), {int32_t(r), token, count});
    p.params.insert(p.params.end(), {q[0], q[1], q[2]});
    p.sampling.push_back(s);
    p.history.push_back(std::move(h));
  }
  return p;
}

}  // namespace mx8::test
