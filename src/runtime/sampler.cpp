// Sampler: see sampler.h for the order of operations.
#include "mx8/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <unordered_map>

#include "mx8/backend/log_sum_exp.h"
#include "mx8/backend/penalty.h"
#include "mx8/error.h"

namespace mx8::runtime {

namespace {
std::string shown(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(v));
  return buf;
}
}  // namespace

void validate(const SamplingParams& p) {
  const std::pair<const char*, float> numbers[] = {{"temperature", p.temperature},
                                                   {"top-p", p.top_p},
                                                   {"min-p", p.min_p},
                                                   {"repeat penalty", p.repetition_penalty},
                                                   {"frequency penalty", p.frequency_penalty},
                                                   {"presence penalty", p.presence_penalty}};
  for (const auto& [name, v] : numbers)
    if (!std::isfinite(v))
      throw Error(std::string("sampling: ") + name + " " + shown(v) + " is not a finite number");
  if (!(p.repetition_penalty > 0.0f))
    throw Error("sampling: repeat penalty " + shown(p.repetition_penalty) +
                " must be positive (1 = off; > 1 discourages repeats)");
  if (p.penalty_last_n < -1)
    throw Error("sampling: penalty look-back " + std::to_string(p.penalty_last_n) +
                " must be -1 (all tokens) or a token count >= 0");
  std::vector<int32_t> ids;
  for (const auto& [id, bias] : p.logit_bias) {
    const std::string what = "sampling: logit bias " + shown(bias) + " for token " + std::to_string(id);
    if (id < 0) throw Error(what + ": token ids are >= 0");
    if (!std::isfinite(bias)) throw Error(what + ": not a finite number");
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  if (auto twice = std::adjacent_find(ids.begin(), ids.end()); twice != ids.end())
    throw Error("sampling: token " + std::to_string(*twice) + " has two logit biases");
}

void check_logit_bias(const SamplingParams& p, int32_t vocab) {
  for (const auto& [id, bias] : p.logit_bias)
    if (id >= vocab)
      throw Error("sampling: logit bias for token " + std::to_string(id) + ", outside the vocabulary of " +
                  std::to_string(vocab) + " tokens");
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {
  validate(p);
}

int32_t argmax(std::span<const float> v) {
  int32_t best = 0;
  float bv = -INFINITY;
  bool any = false;
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isnan(v[i]) && (!any || v[i] > bv)) {
      bv = v[i];
      best = int32_t(i);
      any = true;
    }
  return best;
}

bool Sampler::penalizes() const {
  return p_.repetition_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f;
}

std::vector<std::pair<int32_t, int32_t>> Sampler::penalty_counts(std::span<const int32_t> history,
                                                                 int32_t vocab) const {
  if (!penalizes()) return {};
  const size_t n =
      p_.penalty_last_n < 0 ? history.size() : std::min(history.size(), size_t(p_.penalty_last_n));
  std::unordered_map<int32_t, int32_t> counts;
  for (size_t i = history.size() - n; i < history.size(); ++i)
    if (history[i] >= 0 && history[i] < vocab) counts[history[i]]++;
  return {counts.begin(), counts.end()};
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  const int32_t vocab = int32_t(logits.size());
  // 0. logit biases
  check_logit_bias(p_, vocab);
  for (const auto& [id, bias] : p_.logit_bias) logits[size_t(id)] += bias;
  // 1. penalties
  for (auto [tok, count] : penalty_counts(history, vocab)) {
    float& l = logits[size_t(tok)];
    l = backend::penalized_logit(l, count, p_.repetition_penalty, p_.frequency_penalty, p_.presence_penalty);
  }
  // 2. greedy
  if (p_.temperature <= 0.0f) return argmax(logits);
  // 3. temperature, top-k, softmax, top-p, min-p, draw. Candidates are (logit / temperature, id),
  // ordered by value, then by the lower id.
  auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  cand_.clear();
  if (p_.top_k > 0 && p_.top_k < vocab) {
    // The k best in one pass: a heap whose front is the worst of the best so far, so most of a large
    // vocabulary costs a division and one comparison (a partial sort of every candidate took ~250 us
    // per token at 128k entries, the most of a batched decode step's host time). The same set and
    // order as sorting all candidates: the ordering is total (ids are distinct).
    //
    // A logit v can enter a full heap only if v / T is not below the front's value h. When h and h * T
    // are normal floats, every v under h * T less a relative 2^-20 (20 times the rounding errors of the
    // product, the margin and the division together) has v / T rounded below h, so such v are skipped
    // without dividing; otherwise (subnormals, overflow) nothing is skipped.
    const size_t k = size_t(p_.top_k);
    const float t = p_.temperature;
    float skip_below = -INFINITY;
    auto push = [&](const std::pair<float, int32_t>& c) {
      cand_.push_back(c);
      std::push_heap(cand_.begin(), cand_.end(), by_logit);
      if (cand_.size() < k) return;
      const float h = cand_.front().first, ht = h * t;
      skip_below = std::isnormal(h) && std::isnormal(ht) ? ht - std::fabs(ht) * 0x1p-20f : -INFINITY;
    };
    for (int32_t i = 0; i < vocab; ++i) {
      // Whole blocks of 16 below the bound at once (NaN is never below it; vectorizes).
      if ((i & 15) == 0 && i + 16 <= vocab) {
        bool any = false;
        for (int j = 0; j < 16; ++j) any |= !(logits[size_t(i + j)] < skip_below);
        if (!any) {
          i += 15;
          continue;
        }
      }
      const float v = logits[size_t(i)];
      if (std::isnan(v) || v < skip_below) continue;
      const std::pair<float, int32_t> c(v / t, i);
      if (cand_.size() < k) {
        push(c);
      } else if (by_logit(c, cand_.front())) {
        std::pop_heap(cand_.begin(), cand_.end(), by_logit);
        cand_.pop_back();
        push(c);
      }
    }
    std::sort_heap(cand_.begin(), cand_.end(), by_logit);
  } else {
    for (int32_t i = 0; i < vocab; ++i)
      if (!std::isnan(logits[size_t(i)])) cand_.emplace_back(logits[size_t(i)] / p_.temperature, i);
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  return draw();
}

int32_t Sampler::sample_top_k(std::span<const float> values, std::span<const int32_t> ids) {
  if (!p_.logit_bias.empty()) throw Error("sampling: a row with logit biases is drawn from the whole row");
  cand_.clear();
  for (size_t i = 0; i < ids.size() && i < size_t(p_.top_k) && ids[i] >= 0; ++i)
    cand_.emplace_back(values[i], ids[i]);
  return draw();
}

int32_t Sampler::draw() {
  if (cand_.empty()) return 0;
  const float mx = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) {
    c.first = std::exp(c.first - mx);
    sum += c.first;
  }
  for (auto& c : cand_) c.first = float(c.first / sum);
  size_t keep = cand_.size();
  if (p_.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < cand_.size(); ++i) {
      cum += cand_[i].first;
      if (cum >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  if (p_.min_p > 0.0f) {
    const float floor = p_.min_p * cand_[0].first;
    size_t k = 1;
    while (k < keep && cand_[k].first >= floor) ++k;
    keep = k;
  }
  cand_.resize(keep);
  double total = 0;
  for (auto& c : cand_) total += c.first;
  double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) * total;
  double cum = 0;
  for (auto& c : cand_) {
    cum += c.first;
    if (u < cum) return c.second;
  }
  return cand_.back().second;
}

TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int top_n) {
  const double lse = backend::log_sum_exp(logits.data(), int64_t(logits.size()));
  // The top_n best ids (largest logit first, the lower id on ties, NaN never), in one pass that keeps
  // them sorted: most entries cost one comparison with the worst kept (a 128256-entry row on the
  // development machine: ~0.1 ms, where listing every id and partially sorting them took 0.4-0.8).
  auto before = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  const size_t n = size_t(std::max(0, top_n));
  std::vector<int32_t> ids;
  for (int32_t i = 0; n > 0 && size_t(i) < logits.size(); ++i) {
    if (std::isnan(logits[size_t(i)])) continue;
    if (ids.size() == n) {
      if (!before(i, ids.back())) continue;
      ids.pop_back();
    }
    ids.insert(std::upper_bound(ids.begin(), ids.end(), i, before), i);
  }
  std::vector<float> values(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) values[i] = logits[size_t(ids[i])];
  const float picked = token >= 0 && size_t(token) < logits.size() ? logits[size_t(token)] : NAN;
  return token_logprobs(lse, token, picked, values, ids);
}

TokenLogprobs token_logprobs(double lse, int32_t token, float token_logit, std::span<const float> top_logits,
                             std::span<const int32_t> top_ids) {
  // log softmax = x - log sum exp, in double, rounded once.
  auto lp = [&](float v) { return float(double(v) - lse); };
  TokenLogprobs r;
  r.token = token;
  r.logprob = lp(token_logit);
  for (size_t i = 0; i < top_ids.size() && top_ids[i] >= 0; ++i)
    r.top.emplace_back(top_ids[i], lp(top_logits[i]));
  return r;
}

}  // namespace mx8::runtime
