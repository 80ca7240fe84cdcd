// Sampler and stop-sequence tests: greedy, reproducibility, each filter's effect, the empirical
// distribution against softmax, penalties; StopText holding back partial matches.
#include "mx8/runtime/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>

#include "mx8/error.h"
#include "mx8/runtime/stop_text.h"

using namespace mx8::runtime;

namespace {
std::vector<float> logits_of(std::initializer_list<float> v) {
  return v;
}
// Sampling from the whole softmax at `temperature`: top-k, top-p and min-p off.
SamplingParams unfiltered(float temperature, uint64_t seed = 0) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  p.seed = seed;
  return p;
}
}  // namespace

TEST(Sampler, GreedyIsArgmaxWithFirstIndexOnTies) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  auto l = logits_of({1, 5, 5, -2});
  EXPECT_EQ(s.sample(l, {}), 1);
  auto n = logits_of({NAN, -1, -3});
  EXPECT_EQ(argmax(n), 1);
  // -inf is a number and wins over NaN, even when no value is above -inf.
  auto inf = logits_of({NAN, -INFINITY, -INFINITY});
  EXPECT_EQ(argmax(inf), 1);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
  SamplingParams p = unfiltered(1.0f);
  std::vector<float> base(50);
  for (int i = 0; i < 50; ++i) base[i] = std::sin(float(i));
  auto draw = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int k = 0; k < 64; ++k) {
      std::vector<float> l = base;
      out.push_back(s.sample(l, out));
    }
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

TEST(Sampler, EmpiricalDistributionMatchesSoftmax) {
  Sampler s(unfiltered(0.5f, 3));
  const std::vector<float> base = {0.0f, 0.3f, -0.4f, 0.1f};
  std::vector<double> want(4);
  double z = 0;
  for (int i = 0; i < 4; ++i) z += want[i] = std::exp(base[i] / 0.5);
  std::vector<int> count(4);
  const int n = 40000;
  for (int k = 0; k < n; ++k) {
    std::vector<float> l = base;
    count[s.sample(l, {})]++;
  }
  // 5 standard deviations of a binomial count: fails on a wrong temperature or an off-by-one draw.
  for (int i = 0; i < 4; ++i) {
    double pr = want[i] / z;
    EXPECT_NEAR(count[i], n * pr, 5 * std::sqrt(n * pr * (1 - pr))) << "token " << i;
  }
}

TEST(Sampler, TopKTopPMinPKeepOnlyWhatTheyShould) {
  const std::vector<float> base = {2.0f, 1.9f, 0.0f, -1.0f, -5.0f};  // probabilities ~ .47 .43 .06 .02 .0003
  auto support = [&](SamplingParams p) {
    p.temperature = 1;
    Sampler s(p);
    std::map<int32_t, int> seen;
    for (int k = 0; k < 3000; ++k) {
      std::vector<float> l = base;
      seen[s.sample(l, {})]++;
    }
    std::vector<int32_t> keys;
    for (auto& [t, c] : seen) keys.push_back(t);
    return keys;
  };
  SamplingParams p;
  p.top_k = 2, p.top_p = 1, p.min_p = 0;
  EXPECT_EQ(support(p), (std::vector<int32_t>{0, 1}));
  p.top_k = 1;
  EXPECT_EQ(support(p), (std::vector<int32_t>{0}));
  p.top_k = 0, p.top_p = 0.5f;  // .47 < .5, so the second token is needed too
  EXPECT_EQ(support(p), (std::vector<int32_t>{0, 1}));
  p.top_p = 1, p.min_p = 0.1f;  // keeps p >= .047: tokens 0, 1, 2
  EXPECT_EQ(support(p), (std::vector<int32_t>{0, 1, 2}));
}

// top-p keeps the fewest tokens whose probabilities add up to at least p (as Hugging Face and
// llama.cpp do): two equal logits are exactly 0.5 each (exp(0) / 2), so p = 0.5 keeps only the first.
TEST(Sampler, TopPStopsWhereTheSumReachesPExactly) {
  SamplingParams p;
  p.temperature = 1, p.top_k = 0, p.top_p = 0.5f, p.min_p = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    p.seed = seed;
    Sampler s(p);
    auto l = logits_of({0.0f, 0.0f});
    ASSERT_EQ(s.sample(l, {}), 0) << "seed " << seed;  // a wrong > gives 1 half the time
  }
}

// min-p keeps every token at least min_p times as likely as the best (llama.cpp's rule): with
// min_p = 1 the tokens that tie for the best all stay, and only they.
TEST(Sampler, MinPKeepsTokensExactlyAtTheFloor) {
  SamplingParams p;
  p.temperature = 1, p.top_k = 0, p.top_p = 1, p.min_p = 1;
  std::map<int32_t, int> seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    p.seed = seed;
    Sampler s(p);
    auto l = logits_of({0.0f, 0.0f, -1.0f});
    seen[s.sample(l, {})]++;
  }
  // Two equal halves of 200 draws: 100 +- 5 sigma (35); a wrong > keeps token 0 alone.
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_NEAR(seen[0], 100, 35);
  EXPECT_NEAR(seen[1], 100, 35);
}

// The draw from candidates that another op selected: only the first top_k are eligible, an id < 0
// ends the list.
TEST(Sampler, SampleTopKUsesOnlyTheFirstKCandidates) {
  SamplingParams p;
  p.temperature = 1, p.top_k = 2, p.top_p = 1, p.min_p = 0;
  const std::vector<float> values = {1.0f, 1.0f, 1.0f, 1.0f};
  std::map<int32_t, int> seen;
  for (uint64_t seed = 0; seed < 400; ++seed) {
    p.seed = seed;
    Sampler s(p);
    seen[s.sample_top_k(values, std::vector<int32_t>{7, 3, 9, 1})]++;
    seen[s.sample_top_k(values, std::vector<int32_t>{5, -1, 9, 1})] += 1000;
    // Fewer candidates than k: each of them, and nothing read past them.
    p.top_k = 3;
    Sampler wide(p);
    const int32_t got = wide.sample_top_k(std::vector<float>{1.0f, 1.0f}, std::vector<int32_t>{7, 3});
    ASSERT_TRUE(got == 7 || got == 3) << got;
    p.top_k = 2;
  }
  // Equal values: each eligible id ~half of 400 draws (200 +- 5 sigma = 50); 5 alone after -1.
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_NEAR(seen[7], 200, 50);
  EXPECT_NEAR(seen[3], 200, 50);
  EXPECT_EQ(seen[5], 400 * 1000);
}

TEST(Sampler, Penalties) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  Sampler rep(p);
  // Token 0 (logit 3) was generated: 3 / 2 = 1.5 < 2 of token 1.
  auto l = logits_of({3, 2, 0});
  std::vector<int32_t> hist = {0};
  EXPECT_EQ(rep.sample(l, hist), 1);
  EXPECT_FLOAT_EQ(l[0], 1.5f);
  // A negative logit is multiplied (moves further down).
  auto neg = logits_of({-1, -3});
  std::vector<int32_t> h0 = {0};
  rep.sample(neg, h0);
  EXPECT_FLOAT_EQ(neg[0], -2.0f);
  SamplingParams f;
  f.temperature = 0;
  f.frequency_penalty = 0.5f;
  f.presence_penalty = 0.25f;
  Sampler fp(f);
  auto l2 = logits_of({3, 2.5f});
  std::vector<int32_t> h2 = {0, 0};  // count 2: 3 - 2*0.5 - 0.25 = 1.75
  EXPECT_EQ(fp.sample(l2, h2), 1);
  EXPECT_FLOAT_EQ(l2[0], 1.75f);
  // penalty_last_n limits the window: only the last token (1) is penalised.
  f.penalty_last_n = 1;
  Sampler win(f);
  auto l3 = logits_of({3, 2.5f});
  std::vector<int32_t> h3 = {0, 0, 1};
  EXPECT_EQ(win.sample(l3, h3), 0);
  EXPECT_FLOAT_EQ(l3[0], 3.0f);
  // Each penalty alone is a penalty: frequency only, presence only.
  for (bool frequency : {true, false}) {
    SamplingParams one;
    one.temperature = 0;
    (frequency ? one.frequency_penalty : one.presence_penalty) = 1.0f;
    Sampler alone(one);
    auto l4 = logits_of({3, 2.5f});
    EXPECT_EQ(alone.sample(l4, h0), 1) << frequency;
    EXPECT_FLOAT_EQ(l4[0], 2.0f) << frequency;  // one occurrence: 3 - 1
  }
  // History ids outside the vocabulary (another model's, or markers) are ignored: nothing is written
  // outside the row, which here is the first 2 values of a buffer of 3.
  std::vector<float> buffer = {3, 2.5f, 7};
  std::vector<int32_t> strangers = {-1, 2, 1000};
  std::span<float> row(buffer.data(), 2);
  EXPECT_EQ(fp.sample(row, strangers), 0);
  EXPECT_EQ(buffer, (std::vector<float>{3, 2.5f, 7}));
}

TEST(StopText, HoldsBackPartialMatchesAndCutsAtTheStop) {
  StopText s({"END", "\n\n"});
  EXPECT_EQ(s.push("Hello E"), "Hello ");  // "E" might start END
  EXPECT_EQ(s.push("N"), "");
  EXPECT_EQ(s.push("X more"), "ENX more");
  EXPECT_EQ(s.push(" and\n"), " and");
  EXPECT_EQ(s.push("\nrest"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("ignored"), "");
  StopText t({"END"});
  EXPECT_EQ(t.push("abc EN"), "abc ");
  EXPECT_EQ(t.flush(), "EN");  // no stop: the held text is released at the end
  StopText none({});
  EXPECT_EQ(none.push("x"), "x");
}

// Where the text is cut into pieces (tokens, which cut it anywhere) does not change where it stops:
// the first stop sequence to complete wins, as if the text came one byte at a time. Pushed whole,
// "abcd" used to match "abcd" (it starts earlier), pushed byte by byte "bc" (it completes first).
TEST(StopText, TheFirstStopToCompleteWinsHoweverTheTextIsCut) {
  for (const std::vector<std::string>& pieces :
       {std::vector<std::string>{"abcd"}, {"a", "b", "c", "d"}, {"ab", "cd"}}) {
    StopText s({"abcd", "bc"});
    std::string shown;
    for (const std::string& p : pieces) shown += s.push(p);
    EXPECT_TRUE(s.stopped());
    EXPECT_EQ(shown, "a");
    EXPECT_EQ(s.matched(), "bc");
  }
  // Of the stops completing at the same byte, the longest: it starts first.
  StopText t({"c", "abc"});
  EXPECT_EQ(t.push("xxabcyy"), "xx");
  EXPECT_EQ(t.matched(), "abc");
}

// Settings without a meaning are errors that name the setting; the documented conventions stay valid.
// Logit biases are added to the model's logits before the penalties: token 0 (logit -1, seen once)
// with +2 becomes 1, then 1 / 2 = 0.5 under repetition 2, above token 1's 0.3; penalized first it
// would be -2 + 2 = 0, below. -100 keeps a token out of 20000 draws at temperature 1 (e^-100 of its
// share), +100 makes it every draw; biases on ids past the row are an error, not a write past it.
TEST(Sampler, LogitBiasesComeBeforeThePenalties) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  p.logit_bias = {{0, 2.0f}};
  Sampler greedy(p);
  auto l = logits_of({-1, 0.3f});
  std::vector<int32_t> seen = {0};
  EXPECT_EQ(greedy.sample(l, seen), 0);
  EXPECT_FLOAT_EQ(l[0], 0.5f);

  SamplingParams q = unfiltered(1.0f, 11);
  q.logit_bias = {{1, -100.0f}};
  Sampler banned(q);
  std::vector<int> count(3);
  for (int i = 0; i < 20000; ++i) {
    auto row = logits_of({0, 2, 1});
    count[size_t(banned.sample(row, {}))]++;
  }
  EXPECT_EQ(count[1], 0);
  EXPECT_GT(count[0], 0);
  EXPECT_GT(count[2], 0);
  q.logit_bias = {{0, 100.0f}};
  Sampler forced(q);
  for (int i = 0; i < 1000; ++i) {
    auto row = logits_of({0, 2, 1});
    ASSERT_EQ(forced.sample(row, {}), 0);
  }

  q.logit_bias = {{3, 1.0f}};
  Sampler outside(q);
  std::vector<float> buffer = {0, 2, 1, 7};
  EXPECT_THROW(outside.sample(std::span<float>(buffer.data(), 3), {}), mx8::Error);
  EXPECT_EQ(buffer[3], 7.0f);
  EXPECT_THROW(check_logit_bias(q, 3), mx8::Error);
  EXPECT_NO_THROW(check_logit_bias(q, 4));
  // A biased row is never drawn from a backend's top-k candidates (which carry no bias).
  const std::vector<float> values = {2, 1};
  const std::vector<int32_t> ids = {1, 2};
  EXPECT_THROW(outside.sample_top_k(values, ids), mx8::Error);
}

TEST(Sampler, RejectsSettingsWithoutAMeaning) {
  auto error_of = [](SamplingParams p) {
    try {
      Sampler s(p);
    } catch (const mx8::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  SamplingParams p;
  p.temperature = NAN;
  EXPECT_NE(error_of(p).find("temperature"), std::string::npos);
  p = {};
  p.frequency_penalty = INFINITY;
  EXPECT_NE(error_of(p).find("frequency penalty"), std::string::npos);
  for (float r : {0.0f, -1.0f}) {
    p = {};
    p.repetition_penalty = r;
    EXPECT_NE(error_of(p).find("repeat penalty"), std::string::npos) << r;
  }
  p = {};
  p.penalty_last_n = -2;
  EXPECT_NE(error_of(p).find("look-back"), std::string::npos);
  p = {};
  p.logit_bias = {{-1, 1.0f}};
  EXPECT_NE(error_of(p).find("token ids are >= 0"), std::string::npos);
  p.logit_bias = {{4, NAN}};
  EXPECT_NE(error_of(p).find("not a finite number"), std::string::npos);
  p.logit_bias = {{4, 1.0f}, {9, 2.0f}, {4, -1.0f}};
  EXPECT_NE(error_of(p).find("token 4 has two logit biases"), std::string::npos);
  // Valid by the header's conventions: greedy, filters off, all tokens looked back at.
  p = {};
  p.temperature = -1;
  p.top_p = 2;
  p.min_p = -0.5f;
  p.top_k = -3;
  p.penalty_last_n = -1;
  EXPECT_EQ(error_of(p), "");
}

namespace {

// The sampler's step 3 written the obvious way: every candidate (logit / T, id), fully sorted, then
// the same top-k, softmax, top-p, min-p and draw. The Sampler selects its top k in one pass that
// skips most logits without dividing them; both must pick the same token from the same RNG state.
int32_t reference_sample(const SamplingParams& p, std::mt19937_64& rng, const std::vector<float>& logits) {
  std::vector<std::pair<float, int32_t>> cand;
  for (size_t i = 0; i < logits.size(); ++i)
    if (!std::isnan(logits[i])) cand.emplace_back(logits[i] / p.temperature, int32_t(i));
  if (cand.empty()) return 0;
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  if (p.top_k > 0 && size_t(p.top_k) < cand.size()) cand.resize(size_t(p.top_k));
  const float mx = cand[0].first;
  double sum = 0;
  for (auto& c : cand) sum += (c.first = std::exp(c.first - mx));
  for (auto& c : cand) c.first = float(c.first / sum);
  size_t keep = cand.size();
  if (p.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < cand.size(); ++i)
      if ((cum += cand[i].first) >= p.top_p) {
        keep = i + 1;
        break;
      }
  }
  if (p.min_p > 0.0f) {
    size_t k = 1;
    while (k < keep && cand[k].first >= p.min_p * cand[0].first) ++k;
    keep = k;
  }
  cand.resize(keep);
  double total = 0;
  for (auto& c : cand) total += c.first;
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * total;
  double cum = 0;
  for (auto& c : cand)
    if (u < (cum += c.first)) return c.second;
  return cand.back().second;
}

}  // namespace

TEST(Sampler, OnePassTopKEqualsSortingEveryCandidate) {
  std::mt19937 gen(7);
  // Temperatures that make v / T overflow, go subnormal, or round distinct logits to equal values.
  const float temps[] = {1.0f, 0.7f, 3.0f, 1e-30f, 1e30f, 0.01f};
  const int ks[] = {1, 5, 40, 999};
  int draws = 0;
  for (float t : temps)
    for (int k : ks)
      for (int trial = 0; trial < 6; ++trial) {
        std::vector<float> logits(1000 + trial * 37);  // ragged: not a multiple of 16
        std::normal_distribution<float> d(0.0f, trial % 2 ? 3.0f : 1e-3f);
        for (auto& v : logits) v = d(gen);
        // Ties, NaNs, infinities, subnormals and neighbouring floats.
        for (size_t i = 0; i < logits.size(); i += 17) logits[i] = logits[i / 2];
        for (size_t i = 5; i < logits.size(); i += 97) logits[i] = NAN;
        if (trial == 2) logits[3] = INFINITY, logits[9] = -INFINITY;
        if (trial == 3)
          for (size_t i = 0; i < logits.size(); i += 3) logits[i] = float(i % 7) * 1e-40f;
        if (trial == 4)
          for (size_t i = 1; i < logits.size(); i += 2) logits[i] = std::nextafter(logits[i - 1], 1e9f);
        SamplingParams p;
        p.temperature = t;
        p.top_k = k;
        p.top_p = trial % 3 == 0 ? 1.0f : 0.9f;
        p.min_p = trial % 2 ? 0.0f : 0.05f;
        p.seed = uint64_t(trial * 131 + k);
        Sampler s(p);
        std::mt19937_64 rng(p.seed);
        for (int rep = 0; rep < 4; ++rep, ++draws) {
          std::vector<float> mine = logits;
          ASSERT_EQ(s.sample(mine, {}), reference_sample(p, rng, logits))
              << "T " << t << " k " << k << " trial " << trial << " draw " << rep;
        }
      }
  EXPECT_EQ(draws, 6 * 4 * 6 * 4);
}

// Log-probabilities: exp of them sums to 1 over the vocabulary (NaN entries absent), the top list is
// the best first with the lower id on ties, and a token's value is its logit less log sum exp.
TEST(Sampler, TokenLogprobsAreTheLogSoftmax) {
  const std::vector<float> logits = {1.0f, 3.0f, NAN, 3.0f, -2.0f, 0.5f};
  const TokenLogprobs lp = token_logprobs(logits, 5, 3);
  double lse = 0;
  for (float v : logits)
    if (!std::isnan(v)) lse += std::exp(double(v));
  lse = std::log(lse);
  EXPECT_EQ(lp.token, 5);
  // 1e-6: the float rounding of (x - lse) at |x - lse| < 4; a wrong normaliser is off by O(0.1).
  EXPECT_NEAR(lp.logprob, 0.5 - lse, 1e-6);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);
  EXPECT_EQ(lp.top[1].first, 3);  // the tie with 1, after it
  EXPECT_EQ(lp.top[2].first, 0);
  double total = 0;
  for (int32_t t = 0; t < int32_t(logits.size()); ++t)
    if (!std::isnan(logits[size_t(t)])) total += std::exp(double(token_logprobs(logits, t, 0).logprob));
  EXPECT_NEAR(total, 1.0, 1e-6);  // six float exps
  EXPECT_TRUE(token_logprobs(logits, 5, 0).top.empty());
  // A token outside the row has no probability (NaN), and nothing outside the row is read.
  EXPECT_TRUE(std::isnan(token_logprobs(logits, -1, 0).logprob));
  EXPECT_TRUE(std::isnan(token_logprobs(logits, int32_t(logits.size()), 0).logprob));
  EXPECT_EQ(token_logprobs(logits, 0, 100).top.size(), 5u);  // only the 5 that are numbers
}

// The top list against a full sort of every number in the row, on rows with many ties (values from a
// small set), NaN and infinities, for lists shorter and longer than the row's numbers.
TEST(Sampler, TokenLogprobsTopListIsTheSortedRowsHead) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const float kValues[] = {-3.0f, -0.5f, 0.0f, 0.25f, 2.0f, 7.5f, -INFINITY, INFINITY, NAN};
  for (int trial = 0; trial < 200; ++trial) {
    const bool specials = trial % 2;  // odd trials also draw -inf, +inf and NaN
    std::vector<float> logits(1 + rng() % 300);
    for (float& v : logits) v = kValues[rng() % (specials ? 9 : 6)];
    std::vector<int32_t> sorted;
    for (int32_t i = 0; i < int32_t(logits.size()); ++i)
      if (!std::isnan(logits[size_t(i)])) sorted.push_back(i);
    std::sort(sorted.begin(), sorted.end(), [&](int32_t a, int32_t b) {
      return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
    });
    for (int n : {0, 1, 3, 20, 400}) {
      const TokenLogprobs lp = token_logprobs(logits, 0, n);
      ASSERT_EQ(lp.top.size(), std::min(sorted.size(), size_t(n))) << "trial " << trial << " n " << n;
      for (size_t i = 0; i < lp.top.size(); ++i) ASSERT_EQ(lp.top[i].first, sorted[i]) << "trial " << trial;
    }
  }
}
