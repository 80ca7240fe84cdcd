// A JSON Schema `pattern` (an ECMA-262 regular expression) as a deterministic automaton over the UTF-8
// bytes of a string's value, so that JsonMatcher can hold a string to it byte by byte: a byte goes only
// where a match can still be completed, and the string closes only on a match.
//
// As JSON Schema says, a pattern matches anywhere in the string unless anchored: "^...$" is the whole
// string, "abc" any string holding abc. Supported: literal characters (any code point), escapes of
// punctuation, \d \D \w \W \s \S, \t \n \r \f \v \0, \xHH, \uHHHH; `.` (any character but a line
// terminator); classes [...] with ranges, negation and the escapes above; groups (...), (?:...),
// (?<name>...); alternation |; quantifiers * + ? {n} {n,} {n,m} (lazy ones too: the same strings);
// ^ at the start and $ at the end. Anything else (lookaround, backreferences, \b, \p{...}, anchors
// inside) throws mx8::Error naming it. A match must be writable in JSON: characters below U+0020 other
// than \b \t \n \f \r (the ones JSON has short escapes for) are left out, since the matcher takes no
// \u escapes in such a string.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mx8::runtime {

class StringPattern {
 public:
  static constexpr size_t kMaxNfaStates = 20000, kMaxStates = 4096;
  // Throws mx8::Error naming what is not supported, or saying that no string matches.
  explicit StringPattern(std::string_view pattern);

  static constexpr int32_t kStart = 0;
  // The state after byte `b` of the value, or -1 where no match can follow any more.
  int32_t next(int32_t state, uint8_t b) const { return table_[size_t(state) * 256 + b]; }
  // Whether the value may end in `state` (it matches).
  bool accepts(int32_t state) const { return accepting_[size_t(state)] != 0; }
  size_t states() const { return accepting_.size(); }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::vector<int32_t> table_;  // [state * 256 + byte]
  std::vector<uint8_t> accepting_;
};

}  // namespace mx8::runtime
