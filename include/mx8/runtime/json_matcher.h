// A byte-by-byte matcher of JSON text against a compiled JsonSchema: feed() says whether a byte can come
// next in a reply that ends as a value of the schema. It is a pushdown automaton (a stack of frames,
// one per open object, array, string, number or literal), so a generation step can ask it about every
// token of a vocabulary: copy the state (snapshot), feed the token's bytes, restore.
//
// Besides the value's own grammar:
//   - whitespace goes where JSON allows it, as compact or pretty-printed JSON has it: a gap is
//     nothing, one blank, or a line break and up to kIndent blanks per nesting level (a small model,
//     left free, pads every gap to any bound it is given); before the value up to two line breaks and
//     a blank, after it one line break, then only the end may come; no carriage returns;
//   - a number has at most kMaxNumber bytes and kMaxExponent exponent digits (so that it fits a double:
//     parsers such as nlohmann's refuse 1e999), nesting is at most kMaxDepth deep; a number with a
//     range is written as JsonSchema says (no exponent, a bounded count of digits), and takes a digit
//     only where a value in its range can still be reached;
//   - strings are valid UTF-8 with no raw control characters;
//   - a reply may first hold a <think> block (with Prelude::may_think: reasoning models), free text to
//     its </think>, and may instead be a tool call: once one of Prelude::free_after is written (a tool
//     call's opening marker) the rest is free;
//   - where the schema holds calls (JsonSchema::with_calls), each is Prelude::call_open, a call object,
//     Prelude::call_close (a line break allowed around the object): the reply is its value or calls, one
//     after another; a schema without a value (JsonSchema::text()) is free text in which every
//     call_open starts a call. Without markers (Llama 3) a reply whose first character is '{' is
//     calls, separated by ';' or a gap; any other reply is free text.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mx8/runtime/json_schema.h"

namespace mx8::runtime {

// What a reply may hold before its value (see above).
struct JsonPrelude {
  bool may_think = false;               // the reply may open with a <think> block
  bool inside_thinking = false;         // the prompt opened it: the reply starts inside
  std::vector<std::string> free_after;  // markers after which anything goes (none may start a value)
  std::string call_open, call_close;    // around each call, where the schema holds calls ("": none)
  bool calls_only = false;              // free text: after a call only more calls (a forced call)
  bool one_call = false;                // after a call only the end (parallel calls off)
};

class JsonMatcher {
 public:
  static constexpr int kIndent = 4, kMaxNumber = 40, kMaxExponent = 2, kMaxDepth = 48;
  using Prelude = JsonPrelude;

  // Throws mx8::Error when a marker of `prelude` is empty or starts like a value of the schema.
  JsonMatcher(std::shared_ptr<const JsonSchema> schema, Prelude prelude = {});

  // Takes `b` if it can come next (the state moves on) and returns true; else false, and the state
  // is unspecified: restore a snapshot before feeding more.
  bool feed(uint8_t b);
  // Whether the text so far is a whole value (whitespace after it aside) or a free reply: the reply
  // may end here.
  bool complete() const;
  // Whether any byte may come (inside a <think> block, or after a free_after marker).
  bool free() const;
  // Inside a string with no pattern and no character begun: every byte but '"', '\\', a control character or
  // a broken UTF-8 sequence continues it, up to this many more characters (INT64_MAX: no limit); -1
  // elsewhere. JsonConstraint's fast path.
  int64_t plain_string_room() const;
  // In free text (a schema without a value): the call marker's last byte (a token without it cannot
  // finish a marker, so stays text: only tokens with it need feeding); -1 elsewhere. JsonConstraint's
  // fast path.
  int text_watch() const;

  struct Frame {
    int32_t node = 0;
    uint8_t kind = 0, state = 0, space = 0, utf8 = 0;
    uint32_t pos = 0, lo = 0, hi = 0;
    uint64_t used = 0;
    int64_t count = 0;
  };
  // The state, to return to (a token's bytes are fed on trial).
  struct Snapshot {
    int depth = 0;
    std::array<Frame, kMaxDepth> frames;
  };
  void save(Snapshot& s) const;
  void restore(const Snapshot& s);

 private:
  enum class Step { taken, ended, rejected };
  Step step(Frame& f, uint8_t b);
  Step document(Frame& f, uint8_t b);
  Step object(Frame& f, uint8_t b);
  Step array(Frame& f, uint8_t b);
  Step string(Frame& f, uint8_t b);
  Step number(Frame& f, uint8_t b);
  Step ranged_number(Frame& f, uint8_t b);
  Step literal(Frame& f, uint8_t b);
  Step call(Frame& f, uint8_t b);
  // Opens a value of `node` whose first byte is `b` (a frame for it, fed `b`).
  Step open_value(int32_t node, uint8_t b);
  void value_done(Frame& parent);
  bool ends_here(const Frame& f) const;   // a number or literal that may end before the next byte
  Step blank(Frame& f, uint8_t b) const;  // a blank where JSON allows one: within the bounds above?

  std::shared_ptr<const JsonSchema> schema_;
  Prelude prelude_;
  std::vector<std::string> openers_;  // "<think>" (with may_think) and free_after, sorted
  int depth_ = 0;
  std::array<Frame, kMaxDepth> stack_;
};

}  // namespace mx8::runtime
