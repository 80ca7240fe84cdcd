// What a format costs in accuracy, from teacher-forced positions (teacher_forcing.h): each variant's
// perplexity on the text, and, position by position against a reference variant (normally the model
// as given), how far the next-token distribution moved (KL divergence) and how often the most likely
// token stayed the same. The paired differences make small costs measurable: two variants see the
// same positions, so the text's own difficulty cancels out of their difference.
#pragma once

#include <cstdint>
#include <vector>

namespace mx8::eval {

struct Summary {
  int64_t positions = 0;
  double nll = 0, nll_se = 0;  // mean negative log-likelihood of the text's tokens (nats), its standard error
  // Against the reference (zeros and 1 for the reference itself):
  double dnll = 0, dnll_se = 0;  // mean per-position NLL minus the reference's, its standard error
  double kld = 0, kld_se = 0;    // mean KL(reference || this) per position (nats), its standard error
  double kld_p99 = 0, kld_max = 0;
  double top1_same = 1;  // fraction of positions whose arg max is the reference's
};

// Log-softmax of n logits, summed in double and stored as float (the form the reference keeps).
void log_softmax(const float* logits, int64_t n, float* out);

// The reference variant: its perplexity, and its distribution at every position, kept for comparing.
class Reference {
 public:
  explicit Reference(int64_t vocab);
  void add(const float* logits, int32_t target);
  Summary summary() const;
  int64_t positions() const { return int64_t(nll_.size()); }
  int64_t vocab() const { return vocab_; }

 private:
  friend class Comparison;
  int64_t vocab_;
  std::vector<float> logp_;  // [positions][vocab]
  std::vector<int32_t> argmax_;
  std::vector<double> nll_;
};

// Another variant on the same positions, in the same order.
class Comparison {
 public:
  explicit Comparison(const Reference& ref);
  void add(const float* logits, int32_t target);  // throws once past the reference's positions
  Summary summary() const;

 private:
  const Reference& ref_;
  std::vector<float> logp_;  // one position's, reused
  std::vector<double> nll_, dnll_, kld_;
  int64_t same_ = 0;
};

}  // namespace mx8::eval
