// Sampler: see sampler.h for the order of operations.
#include "mx8/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <unordered_map>

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

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  const int32_t vocab = int32_t(logits.size());
  // 1. penalties
  if (p_.repetition_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) {
    size_t n = p_.penalty_last_n < 0 ? history.size() : std::min(history.size(), size_t(p_.penalty_last_n));
    std::unordered_map<int32_t, int> counts;
    for (size_t i = history.size() - n; i < history.size(); ++i) counts[history[i]]++;
    for (auto [tok, count] : counts) {
      if (tok < 0 || tok >= vocab) continue;
      float& l = logits[size_t(tok)];
      if (p_.repetition_penalty != 1.0f) l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
      l -= float(count) * p_.frequency_penalty + p_.presence_penalty;
    }
  }
  // 2. greedy
  if (p_.temperature <= 0.0f) return argmax(logits);
  // 3. temperature, top-k, softmax, top-p, min-p, draw
  cand_.clear();
  for (int32_t i = 0; i < vocab; ++i)
    if (!std::isnan(logits[size_t(i)])) cand_.emplace_back(logits[size_t(i)] / p_.temperature, i);
  if (cand_.empty()) return 0;
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  if (p_.top_k > 0 && size_t(p_.top_k) < cand_.size()) {
    std::partial_sort(cand_.begin(), cand_.begin() + p_.top_k, cand_.end(), by_logit);
    cand_.resize(size_t(p_.top_k));
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
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

}  // namespace mx8::runtime
