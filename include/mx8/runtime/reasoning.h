// Reasoning in a reply: models trained to think before they answer (Qwen3, QwQ, DeepSeek-R1,
// DeepSeek-V3.1 in thinking mode) write their reasoning between <think> and </think>, then the answer.
// Some templates open the block in the prompt (DeepSeek-R1's generation prompt ends with "<think>\n"),
// so the reply starts inside it. Whether a template thinks at all is read from its source: only there
// is a reply's leading <think> block taken as reasoning.
#pragma once

#include <string>
#include <string_view>

namespace mx8::runtime {

// Whether a chat template knows <think> blocks: its source writes or reads an opening tag.
bool template_thinks(const std::string& template_source);

// Whether generation starts inside a <think> block: `prompt` (all that precedes the reply) ends with an
// opening tag, trailing whitespace aside.
bool opens_thinking(std::string_view prompt);

// Splits a reply, fed as it is generated, into its reasoning and the rest. The reasoning is the
// reply's leading <think>...</think> block (or, where the prompt opened it, all up to </think>), its
// tags and surrounding whitespace dropped; what follows is the text. Reasoning cut off (no </think>
// before the end) stays reasoning. Inactive, the text passes as it is.
class ReasoningParser {
 public:
  struct Piece {
    std::string reasoning, text;
  };
  ReasoningParser(bool active, bool opened_by_prompt);
  Piece feed(std::string_view text);
  Piece finish();
  // Whether the text fed so far ends inside the reasoning block (its closing tag not complete yet).
  bool in_reasoning() const { return state_ == State::inside; }
  // Whether the reply is past its reasoning (the block closed, or the reply did not open one).
  bool past_reasoning() const { return state_ == State::after; }

 private:
  void step(Piece& out, bool at_end);
  enum class State { before, inside, after } state_;
  bool after_close_ = false;        // drop whitespace before the text that follows </think>
  bool reasoning_started_ = false;  // leading whitespace of the reasoning is dropped
  std::string buf_;
};

}  // namespace mx8::runtime
