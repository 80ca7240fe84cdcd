// Reasoning in a reply: see reasoning.h.
#include "mx8/runtime/reasoning.h"

#include "runtime/marker_scan.h"

namespace mx8::runtime {
namespace {

constexpr std::string_view kOpen = "<think>", kClose = "</think>";

// `s` without its leading whitespace.
void drop_leading_space(std::string& s) {
  size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  s.erase(0, i);
}

}  // namespace

bool template_thinks(const std::string& template_source) {
  return template_source.find(kOpen) != std::string::npos;
}

bool opens_thinking(std::string_view prompt) {
  while (!prompt.empty() && is_space(prompt.back())) prompt.remove_suffix(1);
  return prompt.size() >= kOpen.size() && prompt.substr(prompt.size() - kOpen.size()) == kOpen;
}

ReasoningParser::ReasoningParser(bool active, bool opened_by_prompt)
    : state_(!active            ? State::after
             : opened_by_prompt ? State::inside
                                : State::before) {}

ReasoningParser::Piece ReasoningParser::feed(std::string_view text) {
  Piece out;
  buf_ += text;
  step(out, false);
  return out;
}

ReasoningParser::Piece ReasoningParser::finish() {
  Piece out;
  step(out, true);
  return out;
}

void ReasoningParser::step(Piece& out, bool at_end) {
  for (;;) {
    switch (state_) {
      case State::before: {  // a reasoning block can only open the reply
        const size_t first = buf_.find_first_not_of(" \n\t\r");
        if (first == std::string::npos && !at_end) return;
        const std::string_view rest = first == std::string::npos ? "" : std::string_view(buf_).substr(first);
        if (rest.substr(0, kOpen.size()) == kOpen) {
          buf_.erase(0, first + kOpen.size());
          state_ = State::inside;
        } else if (!at_end && kOpen.substr(0, rest.size()) == rest) {
          return;  // the tag may still be coming
        } else {
          state_ = State::after;
        }
        continue;
      }
      case State::inside: {
        if (!reasoning_started_) {
          drop_leading_space(buf_);
          if (buf_.empty()) return;
          reasoning_started_ = true;
        }
        if (const size_t close = buf_.find(kClose); close != std::string::npos) {
          size_t end = close;
          while (end > 0 && is_space(buf_[end - 1])) --end;
          out.reasoning += buf_.substr(0, end);
          buf_.erase(0, close + kClose.size());
          state_ = State::after;
          after_close_ = true;
          continue;
        }
        const size_t cut = at_end ? buf_.size() : safe_end(buf_, kClose);
        out.reasoning += buf_.substr(0, cut);
        buf_.erase(0, cut);
        return;
      }
      case State::after:
        if (after_close_) {
          drop_leading_space(buf_);
          if (buf_.empty()) return;
          after_close_ = false;
        }
        out.text += buf_;
        buf_.clear();
        return;
    }
  }
}

}  // namespace mx8::runtime
