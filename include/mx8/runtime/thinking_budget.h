// A budget for reasoning: once a reply has spent `budget` tokens inside its <think> block, the block is
// closed for it (the next tokens are forced to spell "\n</think>\n\n") and the answer follows. Anthropic's
// thinking.budget_tokens and vLLM's thinking_token_budget ask for it; without it a thinking model can
// spend all of max_tokens reasoning and never answer.
//
// Until the budget runs out the rule holds nothing (holds_next() is false), so the engine draws as it
// would without it; it only watches the text go by. A reply that closes its block in time, or never
// opens one, is never touched.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "mx8/runtime/reasoning.h"
#include "mx8/runtime/token_constraint.h"
#include "mx8/runtime/tokenizer.h"

namespace mx8::runtime {

// The tokens that close a reasoning block, as `tok` writes "\n</think>\n\n" (one id for </think> where
// the vocabulary has it, as Qwen3's does).
std::vector<int32_t> thinking_close_tokens(const Tokenizer& tok);

class ThinkingBudget final : public TokenConstraint {
 public:
  // `tok` must outlive the rule; `close` is thinking_close_tokens(tok). `opened_by_prompt`: the prompt
  // ends inside the block (the reply starts in it). `then`: the rule for the rest of the reply (the
  // JSON of a format or a strict call, whose own prelude takes the reasoning), or null.
  ThinkingBudget(const Tokenizer& tok, std::shared_ptr<const std::vector<int32_t>> close, int64_t budget,
                 bool opened_by_prompt, const TokenConstraint* then);
  ThinkingBudget(const ThinkingBudget& other);

  std::unique_ptr<TokenConstraint> clone() const override;
  void mask(std::span<float> logits) override;
  void accept(int32_t token) override;
  bool holds_next() const override;

  int64_t spent() const { return spent_; }                   // reasoning tokens so far
  bool closing() const { return forced_ < close_->size(); }  // writing the closing tokens

 private:
  static constexpr size_t kNotForcing = SIZE_MAX;
  const Tokenizer& tok_;
  std::shared_ptr<const std::vector<int32_t>> close_;
  int64_t budget_;
  ReasoningParser parser_;
  int64_t spent_ = 0;
  size_t forced_ = kNotForcing;  // how many of close_ have been written, once forcing starts
  std::unique_ptr<TokenConstraint> then_;
};

}  // namespace mx8::runtime
