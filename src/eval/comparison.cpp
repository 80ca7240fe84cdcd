#include "mx8/eval/comparison.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "mx8/error.h"

namespace mx8::eval {
namespace {

int32_t arg_max(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return int32_t(best);
}

// Mean and standard error of the mean (0 for fewer than two values).
void mean_se(const std::vector<double>& v, double& mean, double& se) {
  const double n = double(v.size());
  mean = se = 0;
  if (v.empty()) return;
  double s = 0;
  for (double x : v) s += x;
  mean = s / n;
  if (v.size() < 2) return;
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  se = std::sqrt(ss / (n - 1) / n);
}

}  // namespace

void log_softmax(const float* logits, int64_t n, float* out) {
  double mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(logits[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = float(double(logits[i]) - lse);
}

Reference::Reference(int64_t vocab) : vocab_(vocab) {
  if (vocab <= 0) throw Error("eval: the vocabulary must not be empty");
}

void Reference::add(const float* logits, int32_t target) {
  const size_t at = logp_.size();
  logp_.resize(at + size_t(vocab_));
  log_softmax(logits, vocab_, logp_.data() + at);
  argmax_.push_back(arg_max(logits, vocab_));
  nll_.push_back(-double(logp_[at + size_t(target)]));
}

Summary Reference::summary() const {
  Summary s;
  s.positions = positions();
  mean_se(nll_, s.nll, s.nll_se);
  return s;
}

Comparison::Comparison(const Reference& ref) : ref_(ref), logp_(size_t(ref.vocab())) {}

void Comparison::add(const float* logits, int32_t target) {
  const size_t i = dnll_.size();
  if (int64_t(i) >= ref_.positions())
    throw Error("eval: a variant scored more positions than the reference (" +
                std::to_string(ref_.positions()) + ")");
  const int64_t vocab = ref_.vocab();
  log_softmax(logits, vocab, logp_.data());
  const float* ref = ref_.logp_.data() + i * size_t(vocab);
  double kl = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    const double p = std::exp(double(ref[v]));
    if (p > 0) kl += p * (double(ref[v]) - double(logp_[size_t(v)]));
  }
  const double nll = -double(logp_[size_t(target)]);
  nll_.push_back(nll);
  dnll_.push_back(nll - ref_.nll_[i]);
  kld_.push_back(kl);
  same_ += arg_max(logits, vocab) == ref_.argmax_[i];
}

Summary Comparison::summary() const {
  Summary s;
  const int64_t n = int64_t(dnll_.size());
  s.positions = n;
  if (n == 0) return s;
  mean_se(nll_, s.nll, s.nll_se);
  mean_se(dnll_, s.dnll, s.dnll_se);
  mean_se(kld_, s.kld, s.kld_se);
  s.top1_same = double(same_) / double(n);
  // A variant whose logits went non-finite has NaN divergences: its order statistics are NaN too.
  if (std::any_of(kld_.begin(), kld_.end(), [](double x) { return std::isnan(x); })) {
    s.kld_p99 = s.kld_max = NAN;
    return s;
  }
  std::vector<double> k = kld_;
  const size_t p99 = std::min(k.size() - 1, size_t(std::ceil(0.99 * double(k.size()))) - 1);
  std::nth_element(k.begin(), k.begin() + long(p99), k.end());
  s.kld_p99 = k[p99];
  s.kld_max = *std::max_element(kld_.begin(), kld_.end());
  return s;
}

}  // namespace mx8::eval
