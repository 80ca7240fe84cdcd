// A small backtracking regular-expression matcher over Unicode code points, for the pre-tokenizer
// patterns of Hugging Face tokenizer.json files (std::regex has no \p{L}, no (?i:...) groups and
// no Unicode classes).
//
// Semantics follow Oniguruma, the engine Hugging Face tokenizers uses for these patterns:
// leftmost-first alternation, greedy (and lazy "?") quantifiers with backtracking.
// Supported syntax: literals, ".", escapes \r \n \t \f \v \0 \xHH \x{H..} \uHHHH and escaped
// punctuation, \s \S \d \D \w \W, \p{X} \P{X} \p{Xy} (general categories and major classes,
// also \pL), classes [...] with ranges, negation and the escapes above, groups (...), (?:...),
// (?i:...), (?i), lookahead (?=...) (?!...), quantifiers * + ? {n} {n,} {n,m} (with lazy forms),
// anchors ^ $ \A \z. A pattern outside this subset throws mx8::Error naming the construct.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mx8::runtime {

class Regex {
 public:
  explicit Regex(std::string_view pattern);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  // Non-overlapping matches in `text` (code points), as [begin, end) index pairs, scanning left to
  // right as find_iter does. Empty matches are not reported.
  std::vector<std::pair<size_t, size_t>> find_all(const std::vector<uint32_t>& text) const;
  // Whether the whole of `text` matches.
  bool full_match(const std::vector<uint32_t>& text) const;

  const std::string& pattern() const { return pattern_; }

  struct Node;

 private:
  std::string pattern_;
  std::unique_ptr<Node> root_;
};

}  // namespace mx8::runtime
