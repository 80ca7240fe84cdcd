// Structured output: a TokenConstraint that lets a sequence generate only text a JsonMatcher accepts,
// so a reply is a value of a JSON schema (or any JSON object) by construction.
//
// Each step the matcher is asked about every token of the vocabulary. JsonVocabulary (made once per
// tokenizer) holds the tokens' bytes sorted, with how many leading bytes each shares with the one
// before, so a token is fed only from where it differs from the previous one, and every token that
// shares a rejected prefix is skipped without feeding. Inside a string most tokens are plain text
// (no quote, backslash, control character or partial UTF-8): those are allowed as a set (or, under a
// maxLength, by their count of characters), and only the rest are fed. In free text with tool calls,
// only tokens holding the last byte of the call marker are fed. Special tokens are never part of the
// JSON: the tokenizer's stop tokens are allowed when the value is complete, the others only where the matcher
// is free (reasoning, a tool call).
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mx8/runtime/json_matcher.h"
#include "mx8/runtime/token_constraint.h"
#include "mx8/runtime/tokenizer.h"

namespace mx8::runtime {

class JsonVocabulary {
 public:
  // `text_tokens`: special tokens that read as their text here (a tool syntax's markers, which a
  // reply held to a format may write: tool_marker_tokens).
  explicit JsonVocabulary(const Tokenizer& tok, const std::vector<int32_t>& text_tokens = {});

  struct Sorted {
    std::vector<int32_t> ids;      // by their bytes
    std::vector<uint32_t> shared;  // leading bytes each shares with the one before it (0 for the first)
  };
  size_t size() const { return bytes_.size(); }
  const std::string& bytes(int32_t id) const { return bytes_[size_t(id)]; }
  bool is_special(int32_t id) const { return special_[size_t(id)]; }
  const Sorted& all() const { return all_; }                    // every token with bytes that is not special
  const Sorted& not_plain() const { return not_plain_; }        // those of all() that are not plain text
  const std::vector<uint8_t>& plain() const { return plain_; }  // by id: plain text (see above)
  const std::vector<uint8_t>& with_bytes() const { return with_bytes_; }  // by id: in all()
  // The tokens of all() whose bytes hold `b` (made at the first call for each byte; thread-safe).
  const std::vector<int32_t>& containing(uint8_t b) const;
  uint32_t characters(int32_t id) const { return chars_[size_t(id)]; }  // of a plain token
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }
  size_t longest() const { return longest_; }  // the most bytes of one token

 private:
  std::vector<std::string> bytes_;
  std::vector<uint8_t> special_, plain_, with_bytes_;
  std::vector<uint32_t> chars_;
  Sorted all_, not_plain_;
  std::vector<int32_t> stop_ids_;
  size_t longest_ = 0;
  mutable std::array<std::once_flag, 256> containing_once_;
  mutable std::array<std::vector<int32_t>, 256> containing_;
};

class JsonConstraint : public TokenConstraint {
 public:
  JsonConstraint(std::shared_ptr<const JsonVocabulary> vocab, JsonMatcher matcher);
  std::unique_ptr<TokenConstraint> clone() const override;
  // When no token fits (a vocabulary that cannot write what must come next), only the stop tokens.
  void mask(std::span<float> logits) override;
  void accept(int32_t token) override;
  // Which tokens may come next (by id, 1: allowed); what mask() leaves.
  const std::vector<uint8_t>& allowed();
  const JsonMatcher& matcher() const { return matcher_; }

 private:
  void walk(const JsonVocabulary::Sorted& tokens);

  std::shared_ptr<const JsonVocabulary> vocab_;
  JsonMatcher matcher_;
  bool broken_ = false;  // a token it had ruled out was accepted: no rule from there on
  std::vector<uint8_t> allowed_;
  std::vector<JsonMatcher::Snapshot> snapshots_;  // [k]: the state after k bytes of the token being fed
};

// The obvious way, for tests and benchmarks: every token of `tok` fed on its own to a copy of `m` (the
// special ones by the rule above). JsonConstraint::allowed() must equal it.
std::vector<uint8_t> json_allowed_one_by_one(const Tokenizer& tok, const JsonMatcher& m);

}  // namespace mx8::runtime
