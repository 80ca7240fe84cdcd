// The accuracy measures of `mx8 eval` on distributions whose answers are known in closed form.
#include "mx8/eval/comparison.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "mx8/error.h"

namespace {

using mx8::eval::Comparison;
using mx8::eval::Reference;

// Log-probabilities are kept as floats: each carries a relative rounding of 2^-24, so a quantity of
// order 1 built from a few of them is exact to ~1e-7; 1e-6 leaves room for the double sums.
constexpr double kTol = 1e-6;

TEST(EvalComparison, IdenticalLogitsAreTheReference) {
  const int vocab = 1000, n = 50;
  std::mt19937 rng(7);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> logits(size_t(vocab) * n);
  for (float& x : logits) x = d(rng);
  Reference ref(vocab);
  for (int i = 0; i < n; ++i) ref.add(logits.data() + size_t(i) * vocab, i * 13 % vocab);
  Comparison same(ref);
  for (int i = 0; i < n; ++i) same.add(logits.data() + size_t(i) * vocab, i * 13 % vocab);
  const auto r = ref.summary(), s = same.summary();
  EXPECT_EQ(s.positions, n);
  // The same logits go through the same log-softmax: every difference is exactly zero.
  EXPECT_EQ(s.kld, 0.0);
  EXPECT_EQ(s.kld_max, 0.0);
  EXPECT_EQ(s.dnll, 0.0);
  EXPECT_EQ(s.top1_same, 1.0);
  EXPECT_EQ(s.nll, r.nll);
  EXPECT_EQ(s.nll_se, r.nll_se);
}

TEST(EvalComparison, KnownDistributions) {
  // Reference p = (1/2, 1/2); variant q = (3/4, 1/4); the text's token is 1.
  Reference ref(2);
  const float p[2] = {0.0f, 0.0f}, q[2] = {std::log(3.0f), 0.0f};
  ref.add(p, 1);
  Comparison c(ref);
  c.add(q, 1);
  const auto r = ref.summary(), s = c.summary();
  EXPECT_NEAR(r.nll, std::log(2.0), kTol);
  EXPECT_NEAR(s.nll, std::log(4.0), kTol);
  EXPECT_NEAR(s.dnll, std::log(2.0), kTol);
  // KL(p || q) = 1/2 ln(2/3) + 1/2 ln(2) = 1/2 ln(4/3).
  EXPECT_NEAR(s.kld, 0.5 * std::log(4.0 / 3.0), kTol);
  EXPECT_NEAR(s.kld_max, s.kld, kTol);
  EXPECT_EQ(s.top1_same, 1.0);  // a tie goes to the first token, and q's largest is token 0 too
}

TEST(EvalComparison, MeansStandardErrorsAndOrderStatistics) {
  // Two-token distributions with logits (a, 0): NLL of token 1 is ln(1 + e^a), of token 0 ln(1 + e^-a).
  const int n = 200;
  Reference ref(2);
  std::vector<double> nll, kl;
  for (int i = 0; i < n; ++i) {
    const float a = float(i % 7) - 3.0f;
    const float l[2] = {a, 0.0f};
    ref.add(l, i % 2);
  }
  Comparison c(ref);
  for (int i = 0; i < n; ++i) {
    const float a = float(i % 7) - 3.0f, b = i == 17 ? a + 5.0f : a + 1.5f;  // position 17 moves most
    const float l[2] = {b, 0.0f};
    c.add(l, i % 2);
    const double pa = 1 / (1 + std::exp(-double(a))), qb = 1 / (1 + std::exp(-double(b)));
    nll.push_back(-std::log(i % 2 ? 1 - qb : qb));
    kl.push_back(pa * std::log(pa / qb) + (1 - pa) * std::log((1 - pa) / (1 - qb)));
  }
  double mean = 0, ss = 0;
  for (double x : nll) mean += x / n;
  for (double x : nll) ss += (x - mean) * (x - mean);
  const auto s = c.summary();
  EXPECT_NEAR(s.nll, mean, kTol);
  EXPECT_NEAR(s.nll_se, std::sqrt(ss / (n - 1) / n), kTol);
  EXPECT_NEAR(s.kld_max, kl[17], kTol);
  std::vector<double> sorted = kl;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NEAR(s.kld_p99, sorted[197], kTol);  // the 198th of 200 (ceil(0.99 n)): above it, 2 values
  EXPECT_LT(s.kld_p99, s.kld_max);
  // The arg max changes where a < 0 <= b: a = -1 (i % 7 == 2), 29 of the 200 positions.
  EXPECT_DOUBLE_EQ(s.top1_same, 1.0 - 29.0 / 200.0);
}

TEST(EvalComparison, NonFiniteLogitsShowAsNaN) {
  Reference ref(3);
  const float good[3] = {1, 2, 3}, bad[3] = {1, NAN, 3};
  ref.add(good, 2);
  ref.add(good, 2);
  Comparison c(ref);
  c.add(good, 2);
  c.add(bad, 2);
  const auto s = c.summary();
  EXPECT_TRUE(std::isnan(s.kld));
  EXPECT_TRUE(std::isnan(s.kld_p99));
  EXPECT_TRUE(std::isnan(s.kld_max));
  EXPECT_TRUE(std::isnan(s.nll));
}

// The summary's edges: no positions (all zeros, not leftovers), one (no spread to estimate), and two,
// the fewest with a standard error: |x1 - x2| / 2 (sample variance (x1 - x2)^2 / 2, over n = 2).
TEST(EvalComparison, SummariesOfZeroOneAndTwoPositions) {
  Reference ref(2);
  EXPECT_EQ(ref.summary().positions, 0);
  EXPECT_EQ(ref.summary().nll, 0.0);
  EXPECT_EQ(ref.summary().nll_se, 0.0);
  const float even[2] = {0, 0}, skewed[2] = {std::log(3.0f), 0};  // p(token 0) = 1/2, then 3/4
  ref.add(even, 0);
  EXPECT_EQ(ref.summary().positions, 1);
  EXPECT_NEAR(ref.summary().nll, std::log(2.0), kTol);
  EXPECT_EQ(ref.summary().nll_se, 0.0);
  ref.add(skewed, 0);
  const auto s = ref.summary();
  EXPECT_EQ(s.positions, 2);
  EXPECT_NEAR(s.nll, (std::log(2.0) + std::log(4.0 / 3.0)) / 2, kTol);
  EXPECT_NEAR(s.nll_se, (std::log(2.0) - std::log(4.0 / 3.0)) / 2, kTol);
  Comparison c(ref);
  EXPECT_EQ(c.summary().positions, 0);
  EXPECT_EQ(c.summary().kld, 0.0);
  c.add(even, 0);
  EXPECT_EQ(c.summary().positions, 1);
}

TEST(EvalComparison, AnEmptyVocabularyIsRefused) {
  EXPECT_THROW(Reference r(0), mx8::Error);
}

TEST(EvalComparison, MorePositionsThanTheReferenceIsAnError) {
  Reference ref(2);
  const float l[2] = {0, 0};
  ref.add(l, 0);
  Comparison c(ref);
  c.add(l, 0);
  EXPECT_THROW(c.add(l, 0), mx8::Error);
}

}  // namespace
