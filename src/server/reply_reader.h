// A chat reply read as it is generated: its reasoning (a thinking model's <think> block) first, then
// the tool calls in what follows, and the text that is left. Streamed and whole replies go through the
// same reader, so both come out the same.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "mx8/runtime/reasoning.h"
#include "mx8/runtime/tool_calls.h"

namespace mx8::server {

class ReplyReader {
 public:
  struct Piece {
    std::string reasoning, text;
    std::vector<runtime::ToolCall> calls;
  };
  // `thinks`: the template has <think> blocks, and `opened` says whether the prompt ends inside one;
  // `calls`: the syntax of tool calls to read (none: no tools offered), `forced`: the start of a call
  // that the prompt already holds (runtime::ToolCallParser::prime).
  ReplyReader(bool thinks, bool opened, runtime::ToolSyntax calls, std::string_view forced)
      : reasoning_(thinks, opened), calls_(calls) {
    calls_.prime(forced);
  }
  // The next piece of the reply; `finished`: it is the last.
  Piece read(std::string_view text, bool finished) {
    runtime::ReasoningParser::Piece r = reasoning_.feed(text);
    if (finished) append(r, reasoning_.finish());
    runtime::ToolCallParser::Piece c = calls_.feed(r.text);
    if (finished) {
      runtime::ToolCallParser::Piece tail = calls_.finish();
      c.text += tail.text;
      for (runtime::ToolCall& call : tail.calls) c.calls.push_back(std::move(call));
    }
    return {std::move(r.reasoning), std::move(c.text), std::move(c.calls)};
  }

 private:
  static void append(runtime::ReasoningParser::Piece& a, const runtime::ReasoningParser::Piece& b) {
    a.reasoning += b.reasoning;
    a.text += b.text;
  }
  runtime::ReasoningParser reasoning_;
  runtime::ToolCallParser calls_;
};

}  // namespace mx8::server
