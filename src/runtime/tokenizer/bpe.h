// BPE tokenizer, built from a BpeSpec that the tokenizer.json and GGUF loaders fill in. Two alphabets:
//   - byte-level (GPT-2 / Llama-3 / Qwen / DeepSeek-V3): every byte is a printable character;
//   - characters with byte fallback (Llama-2 / Mistral tokenizer.json, SentencePiece converted to
//     BPE): U+2581 for spaces, and a character outside the vocabulary becomes <0xNN> byte tokens.
//
// encode: added/special tokens are cut out of the raw text first (leftmost-longest), then each
// remaining segment is normalized (NFC, Prepend, Replace where asked), pre-tokenized (regex splits,
// Metaspace, the ByteLevel mapping) and each piece is merged by BPE rank.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mx8/runtime/tokenizer.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/string_map.h"

namespace mx8::runtime {

struct BpeSpec {
  struct AddedToken {
    TokenId id = kNoToken;
    std::string content;
    bool special = false;
    bool lstrip = false;
    bool rstrip = false;
  };
  // One pre-tokenizer step. Split: the regex's matches and the text between them become separate
  // pieces (Hugging Face "Isolated" behaviour; kRemoved drops the matches). ByteLevel: a space
  // before each piece that lacks one (add_prefix_space), then the GPT-2 split (use_regex); the
  // byte -> character mapping itself is always applied last.
  struct PreStep {
    enum Kind { kSplit, kByteLevel, kDigits, kMetaspace } kind = kSplit;
    std::string pattern;  // kSplit
    enum Behavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext } behavior = kIsolated;
    bool invert = false;             // kSplit: the matches are the gaps
    bool individual_digits = false;  // kDigits
    bool add_prefix_space = false;   // kByteLevel
    bool use_regex = false;          // kByteLevel
    // kMetaspace: spaces become `replacement`, which is also put in front of the first segment
    // (prepend_first) or of every segment (prepend_always); split: a piece starts at each one.
    std::string replacement = "\xE2\x96\x81";
    bool prepend_always = false, prepend_first = false, split = false;
  };

  // Ids at or past this are refused: the largest real vocabularies hold a few hundred thousand
  // tokens, and a table sized by a hostile id (2^31) would not fit in memory.
  static constexpr size_t kMaxVocabSize = size_t{1} << 24;
  std::vector<std::string> vocab;  // id -> model token (byte-level alphabet); "" for holes
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  std::vector<AddedToken> added;
  std::vector<PreStep> pre;
  bool nfc = false;
  std::string prepend;  // Prepend normalizer: put in front of each non-empty segment
  std::vector<std::pair<std::string, std::string>> replace;  // Replace normalizers (literal strings)
  bool byte_level = true;
  bool byte_fallback = false;        // character alphabet: <0xNN> tokens for unknown characters
  bool strip_leading_space = false;  // decoder drops one leading space of the text (Strip / Metaspace)
  bool ignore_merges = false;        // a piece that is itself a vocabulary entry is not merged
  TokenId unk = kNoToken;
  TokenId bos = kNoToken, eos = kNoToken;
  std::vector<TokenId> prefix;  // added by encode(add_special): e.g. {BOS}
  std::vector<TokenId> suffix;
};

// The GPT-2 pre-tokenizer pattern (ByteLevel use_regex, and GGUF pre-tokenizer "gpt-2").
extern const char* const kGpt2Pattern;

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeSpec spec);

  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts = {}) const override;
  std::string token_bytes(TokenId id, bool at_start, const DecodeOptions& opts = {}) const override;
  const std::string& token_text(TokenId id) const override;
  std::optional<TokenId> find_token(std::string_view text) const override;
  size_t vocab_size() const override { return pieces_.size(); }
  bool is_special(TokenId id) const override;
  const char* kind() const override { return "bpe"; }

  // Exposed for tests: the pre-tokenized pieces of a plain-text segment (UTF-8, before the byte
  // mapping) and the ids BPE gives one piece.
  std::vector<std::string> pre_tokenize(std::string_view segment, bool first_segment = true) const;
  std::vector<TokenId> bpe_piece(std::string_view piece) const;

 private:
  struct Step {
    BpeSpec::PreStep spec;
    std::unique_ptr<Regex> regex;
  };
  void encode_segment(std::string_view segment, bool first_segment, std::vector<TokenId>& out) const;

  BpeSpec spec_;
  std::vector<Step> steps_;
  std::vector<std::string> pieces_;  // id -> stored text (model vocab or added token)
  std::vector<uint8_t> special_;     // id -> 1 for special added tokens
  std::vector<uint8_t> added_;       // id -> 1 for added tokens
  StringMap<TokenId> token_to_id_;   // model vocabulary
  StringMap<TokenId> added_to_id_;
  std::unordered_map<uint64_t, std::pair<uint32_t, TokenId>> merges_;  // (a,b) -> (rank, merged)
  std::vector<std::vector<size_t>> added_by_first_byte_;  // index into spec_.added, longest first
  TokenId byte_ids_[256];               // id of each byte's token: its mapped character, or <0xNN>
  std::vector<int16_t> byte_of_token_;  // character alphabet: id -> byte of a <0xNN> token, or -1
  // Character alphabet, no multi-character entry holds '\n': no merge crosses a newline, so long
  // pieces (there is often no pre-tokenizer) are merged line by line, keeping the queue small.
  bool split_at_newlines_ = false;

  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<TokenId>> cache_;
};

}  // namespace mx8::runtime
