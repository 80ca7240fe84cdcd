// SentencePiece-style tokenizer as llama.cpp implements it for "llama" vocabularies: the text gets
// a leading space and every space becomes U+2581; it is split into characters, and adjacent
// symbols are merged greedily, best vocabulary score first (ties: leftmost), as long as the merged
// text is a vocabulary entry; characters that never became an entry fall back to <0xNN> tokens.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "mx8/runtime/tokenizer.h"
#include "runtime/tokenizer/string_map.h"

namespace mx8::runtime {

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(SpmVocab vocab);

  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts = {}) const override;
  std::string token_bytes(TokenId id, bool at_start, const DecodeOptions& opts = {}) const override;
  const std::string& token_text(TokenId id) const override;
  std::optional<TokenId> find_token(std::string_view text) const override;
  size_t vocab_size() const override { return v_.tokens.size(); }
  bool is_special(TokenId id) const override;
  const char* kind() const override { return "spm"; }

 private:
  void encode_text(std::string_view text, bool prefix_space, std::vector<TokenId>& out) const;
  void merge_symbols(const std::string& text, std::vector<TokenId>& out) const;
  int32_t type(TokenId id) const { return v_.types[id]; }

  SpmVocab v_;
  StringMap<TokenId> token_to_id_;
  TokenId byte_ids_[256];
  // Tokens matched in the raw text before merging: control tokens (when parsing special) and
  // user-defined ones, longest first.
  std::vector<TokenId> matchable_;
  // No multi-character vocabulary entry contains '\n', so no merge crosses one: the text can be
  // merged line by line, which keeps the merge queue small (and in cache) for long inputs.
  bool split_at_newlines_ = false;
};

}  // namespace mx8::runtime
