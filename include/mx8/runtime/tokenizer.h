// Tokenizers: text <-> token ids for the models mx8 runs.
//
// Two families sit behind one interface:
//   - byte-level BPE (GPT-2, Llama-3, Qwen2/3, DeepSeek-V3), from a Hugging Face tokenizer.json or
//     from a GGUF whose tokenizer.ggml.model is "gpt2";
//   - SentencePiece-style (Llama-2 and the GGUF "llama" vocabularies): score-ordered bigram merges,
//     byte fallback (<0xNN> tokens), U+2581 for spaces and a leading-space prefix.
//
// Typical use (the runtime):
//
//   auto tok = mx8::runtime::load_tokenizer(path);        // folder, GGUF or tokenizer.json
//   std::vector<TokenId> ids = tok->encode(prompt);      // adds BOS where the model wants it
//   mx8::runtime::StreamDecoder out(*tok);               // one per generated sequence
//   for (TokenId id : generated) fputs(out.push(id).c_str(), stdout);
//   fputs(out.flush().c_str(), stdout);
//
// Every function is const and thread-safe on a loaded tokenizer; a StreamDecoder belongs to one
// sequence. Errors (missing or malformed files) throw mx8::Error naming the file and the problem.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mx8::io {
class GgufFile;
}

namespace mx8::runtime {

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

struct EncodeOptions {
  // Add the model's own framing tokens (BOS, and EOS where the tokenizer asks for it), as the
  // Hugging Face post-processor / add_bos_token or GGUF tokenizer.ggml.add_bos_token say.
  bool add_special = true;
  // Recognise special tokens written in the text ("<|im_start|>" -> one id). When false, special
  // (control) tokens are tokenized as plain text; user-defined added tokens still match.
  bool parse_special = true;
};

struct DecodeOptions {
  // Drop special (control) tokens such as BOS/EOS/<|im_end|> from the text,
  bool skip_special = false;
  // except these, whose text a reader needs (Mistral's [TOOL_CALLS]: tool_marker_tokens).
  std::vector<TokenId> keep_special = {};
  bool drops(TokenId id) const {
    return skip_special && std::find(keep_special.begin(), keep_special.end(), id) == keep_special.end();
  }
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<TokenId> encode(std::string_view text, const EncodeOptions& opts = {}) const = 0;
  // The text of `ids`. Byte sequences that are not valid UTF-8 become U+FFFD, exactly as
  // StreamDecoder produces them, so decode(ids) == concatenation of a StreamDecoder's output.
  std::string decode(std::span<const TokenId> ids, const DecodeOptions& opts = {}) const;
  // Whether decoding `ids` leaves the start of a text (a token after them keeps its leading space):
  // one of them is not special or has text. Stops at the first such token.
  bool leaves_start(std::span<const TokenId> ids, const DecodeOptions& opts = {}) const;

  // The raw bytes token `id` contributes to decoded text (may be part of a UTF-8 character). For a
  // special token: its text, or "" with skip_special. `at_start` is true until the first non-special
  // (or non-empty) token of a text: SentencePiece drops its prefix space there. Throws on an id
  // outside [0, vocab_size()).
  virtual std::string token_bytes(TokenId id, bool at_start, const DecodeOptions& opts = {}) const = 0;

  // The vocabulary entry of `id` as stored (e.g. "Ġhello", "▁hello", "<0x0A>", "<|im_end|>").
  virtual const std::string& token_text(TokenId id) const = 0;
  // The id of a vocabulary entry or added token written exactly as stored, if there is one.
  virtual std::optional<TokenId> find_token(std::string_view text) const = 0;

  virtual size_t vocab_size() const = 0;
  virtual bool is_special(TokenId id) const = 0;  // control/special tokens (BOS, EOS, <|im_end|>...)

  TokenId bos_id() const { return bos_; }  // kNoToken when the vocabulary has none
  TokenId eos_id() const { return eos_; }
  // Every token that ends a turn of generation: EOS plus end-of-turn tokens such as <|eot_id|>,
  // <|im_end|>, <|end_of_text|>, <｜end▁of▁sentence｜> when present in the vocabulary.
  const std::vector<TokenId>& stop_ids() const { return stop_ids_; }
  bool is_stop(TokenId id) const;
  // Whether encode(text) with add_special adds BOS / EOS.
  bool adds_bos() const { return add_bos_; }
  bool adds_eos() const { return add_eos_; }
  // "bpe" or "spm": which family this is.
  virtual const char* kind() const = 0;

 protected:
  // Called by implementations once ids are known; fills stop_ids from eos and known names.
  void finish_special_ids();

  TokenId bos_ = kNoToken;
  TokenId eos_ = kNoToken;
  bool add_bos_ = false;
  bool add_eos_ = false;
  std::vector<TokenId> stop_ids_;
};

// Incremental decoding of a generated sequence: push ids one at a time, get back only complete
// UTF-8 text (a character split across byte tokens appears once its last byte arrives). `at_start`
// false: the text continues earlier text (a prompt decoded elsewhere), so its first token keeps the
// leading space that SentencePiece-style vocabularies drop at the start of a text.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, DecodeOptions opts = {}, bool at_start = true)
      : tok_(tok), opts_(opts), at_start_(at_start) {}
  // Text made complete by `id` (possibly empty).
  std::string push(TokenId id);
  // Whatever is still pending (an incomplete character becomes U+FFFD); resets to the start state.
  std::string flush();

 private:
  const Tokenizer& tok_;
  DecodeOptions opts_;
  std::string pending_;
  bool at_start_ = true;
};

// Loads a tokenizer from:
//   - a folder with tokenizer.json (and optionally tokenizer_config.json): a model folder or a
//     folder that holds only tokenizer files;
//   - a tokenizer.json file;
//   - a .gguf file (its embedded tokenizer.ggml.* vocabulary; tensors are not read).
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

// The pieces the factory uses, for callers that already hold the data.
// tokenizer.json text (and tokenizer_config.json text, "" when absent); `name` is used in errors.
std::unique_ptr<Tokenizer> tokenizer_from_hf_json(std::string_view tokenizer_json,
                                                  std::string_view tokenizer_config_json,
                                                  const std::string& name);
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const std::filesystem::path& gguf_path);
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const io::GgufFile& gguf);  // an opened file

// A SentencePiece-style vocabulary as plain vectors (what GGUF's tokenizer.ggml.* holds).
struct SpmVocab {
  // Token types as GGUF numbers them.
  enum Type : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  std::vector<std::string> tokens;  // "▁the", "<0x0A>", "<s>", ...
  std::vector<float> scores;        // higher merges first
  std::vector<int32_t> types;       // empty: all kNormal except <unk>/<s>/</s>/<0xNN> by name
  TokenId bos = 1, eos = 2, unk = 0;
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;
};
std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmVocab vocab);

}  // namespace mx8::runtime
