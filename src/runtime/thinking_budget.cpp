// A budget for reasoning: see thinking_budget.h.
#include "mx8/runtime/thinking_budget.h"

#include <cmath>

namespace mx8::runtime {

std::vector<int32_t> thinking_close_tokens(const Tokenizer& tok) {
  EncodeOptions enc;
  enc.add_special = false;  // no BOS; "</think>" itself is an added token where the vocabulary has one
  return tok.encode("\n</think>\n\n", enc);
}

ThinkingBudget::ThinkingBudget(const Tokenizer& tok, std::shared_ptr<const std::vector<int32_t>> close,
                               int64_t budget, bool opened_by_prompt, const TokenConstraint* then)
    : tok_(tok),
      close_(std::move(close)),
      budget_(budget),
      parser_(true, opened_by_prompt),
      then_(then ? then->clone() : nullptr) {
  if (parser_.in_reasoning() && budget_ <= 0) forced_ = 0;
}

ThinkingBudget::ThinkingBudget(const ThinkingBudget& o)
    : tok_(o.tok_),
      close_(o.close_),
      budget_(o.budget_),
      parser_(o.parser_),
      spent_(o.spent_),
      forced_(o.forced_),
      then_(o.then_ ? o.then_->clone() : nullptr) {}

std::unique_ptr<TokenConstraint> ThinkingBudget::clone() const {
  return std::make_unique<ThinkingBudget>(*this);
}

bool ThinkingBudget::holds_next() const {
  return closing() || (then_ && then_->holds_next());
}

void ThinkingBudget::mask(std::span<float> logits) {
  if (!closing()) {
    if (then_) then_->mask(logits);
    return;
  }
  const size_t keep = size_t((*close_)[forced_]);
  for (size_t i = 0; i < logits.size(); ++i)
    if (i != keep) logits[i] = -INFINITY;
}

void ThinkingBudget::accept(int32_t token) {
  if (then_) then_->accept(token);
  if (parser_.past_reasoning() && !closing()) return;  // nothing left to count or close
  parser_.feed(tok_.token_bytes(token, /*at_start=*/false));
  if (closing()) {
    ++forced_;
    return;
  }
  if (forced_ != kNotForcing || !parser_.in_reasoning()) return;
  if (++spent_ >= budget_) forced_ = 0;
}

}  // namespace mx8::runtime
