// The normalizer of log-probabilities, log sum exp over a row of logits: runtime::token_logprobs
// subtracts it, and a backend that computes it where the logits are (Backend::log_sum_exp) follows the
// same rule, so that only it and a few values leave the backend's memory instead of the row.
#pragma once

#include <cmath>
#include <cstdint>

namespace mx8::backend {

// max + log(sum of exp(x - max)), max over the values (NaN never wins; -inf for a row of NaN only), the
// sum in double over the non-NaN values in index order. A row of NaN only gives -inf, a row whose
// largest value is +-inf gives NaN (inf - inf), as the formula does.
inline double log_sum_exp(const float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] > mx) mx = x[i];
  double sum = 0;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isnan(x[i])) sum += std::exp(double(x[i]) - double(mx));
  return double(mx) + std::log(sum);
}

}  // namespace mx8::backend
