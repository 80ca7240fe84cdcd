// Token sampling: logit biases, greedy, temperature, top-k, top-p, min-p, repetition/frequency/presence
// penalties, with a per-sequence seeded generator so that a run is reproducible.
//
// Order of operations (the llama.cpp / transformers order):
//   0. logit biases: each listed token's logit plus its bias (OpenAI's logit_bias; -100 all but bans a
//      token, +100 all but forces it), on the model's logits, so the penalties see the biased values;
//   1. penalties over the last `penalty_last_n` tokens of the sequence (prompt and generated):
//      repetition (CTRL paper: a positive logit is divided by it, a negative one multiplied),
//      then frequency (minus count * f) and presence (minus p if the token occurred) as OpenAI defines them;
//   2. temperature <= 0: the arg max (lowest id on ties) - greedy, no randomness;
//   3. logits / temperature, top-k, softmax, top-p (smallest prefix of the sorted distribution whose
//      mass reaches p), min-p (drop tokens below min_p x the top probability), renormalise, draw.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace mx8::runtime {

struct SamplingParams {
  float temperature = 0.8f;
  int top_k = 40;                   // <= 0: off
  float top_p = 0.95f;              // >= 1: off
  float min_p = 0.05f;              // <= 0: off
  float repetition_penalty = 1.0f;  // 1: off
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  int penalty_last_n = 64;  // how many recent tokens the penalties look at (-1: all)
  uint64_t seed = 0;
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, added to its logit), each id once
};

// Throws mx8::Error naming the first setting that has no meaning: a number that is NaN or infinite, a
// repetition penalty <= 0 (it divides positive logits: 0 would make every repeated token certain, a
// negative one flip its sign), a look-back below -1, or a logit bias that is not finite or names a
// negative token id or one id twice. Every other value has one (see above: e.g.
// temperature <= 0 is greedy, top_p >= 1 and min_p <= 0 are off).
void validate(const SamplingParams& p);
// Throws mx8::Error naming the first logit bias whose token is outside a vocabulary of `vocab` ids.
void check_logit_bias(const SamplingParams& p, int32_t vocab);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);  // validate(p) first
  // Picks the next token from `logits` (vocab values; modified in place) given the sequence so far.
  // Throws mx8::Error when a logit bias names a token outside the row.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);
  // The same draw from the top-k step's result when another computed it (Backend::top_k): the
  // candidates (logit / temperature, id), best first, ids < 0 ending the list; the first top_k are
  // used. Equal to sample() on the whole row when 0 < top_k < vocab, there are no logit biases (a backend
  // does not apply them: a biased row is the host's) and the candidates were selected from the row
  // penalized as step 1 does (Backend::penalize with penalty_counts).
  int32_t sample_top_k(std::span<const float> values, std::span<const int32_t> ids);
  const SamplingParams& params() const { return p_; }
  bool penalizes() const;
  // What step 1 penalizes: each token id < vocab of the penalty window of `history`, once, with how
  // many times it occurs there (backend::penalized_logit's count). Empty when penalizes() is false.
  std::vector<std::pair<int32_t, int32_t>> penalty_counts(std::span<const int32_t> history,
                                                          int32_t vocab) const;

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;  // scratch
  int32_t draw();  // softmax, top-p, min-p and the draw over cand_ (ordered best first)
};

// The index of the largest value (the first one on ties; NaN never wins).
int32_t argmax(std::span<const float> v);

// Log-probabilities under the model's own distribution, the softmax of the raw logits (before
// penalties and temperature, which vLLM also reports by default): of `token`, and of the `top_n` most
// likely tokens, best first, the lower id on ties. NaN logits count as absent.
struct TokenLogprobs {
  int32_t token = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};
TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int top_n);
// The same from what a backend computed where the logits are (Backend::log_sum_exp and Backend::top_k at
// temperature 1): the row's log sum exp (backend::log_sum_exp), the token's logit (NaN: the token is
// outside the row), and the top_n best logits with their ids in that order (an id < 0 ends them).
TokenLogprobs token_logprobs(double lse, int32_t token, float token_logit, std::span<const float> top_logits,
                             std::span<const int32_t> top_ids);

}  // namespace mx8::runtime
