// Sampling penalties on a logit: the sampler's first step (runtime::Sampler), here so that a backend
// that draws tokens itself (Backend::penalize, then argmax or top_k) applies the same operations and
// gets the same bits as the host sampler.
#pragma once

#include <cmath>
#include <cstdint>

#include "mx8/format/common.h"

namespace mx8::backend {

// The logit l of a token seen `count` (>= 1) times in the sequence's penalty window: repetition (a
// positive logit divided by it, a negative one multiplied: the CTRL paper's rule), then frequency
// (count x f) and presence (p) subtracted, as OpenAI defines them. count x f + p is one fused
// multiply-add, so no compiler can round it differently (contracting a product and a sum is the
// compiler's choice on some targets, e.g. g++ on AArch64, and never on others).
MX8_HD inline float penalized_logit(float l, int32_t count, float repetition, float frequency,
                                    float presence) {
  if (repetition != 1.0f) l = l > 0.0f ? l / repetition : l * repetition;
  return l - fmaf(float(count), frequency, presence);
}

// Where Backend::penalize finds the penalties of a step's rows (backend memory):
// - params[r * 3 + 0..2]: row r's repetition (> 0), frequency and presence penalties;
// - *n: how many entries follow (read on the device, so that a recorded step replays with any count);
// - entries[i * 3 + 0..2]: a row, a token id (< cols) and its count (>= 1). A (row, token) pair occurs at
//   most once, so the entries can be applied in any order, in parallel.
// - saved (may be null): saved[i] receives entry i's logit as it was before its penalty (the raw logit a
//   drawn token's log-probability is of).
struct PenaltyArgs {
  const float* params = nullptr;
  const int32_t* n = nullptr;
  const int32_t* entries = nullptr;
  float* saved = nullptr;
};

}  // namespace mx8::backend
