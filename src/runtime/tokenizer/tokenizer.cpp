// The parts of the Tokenizer interface shared by every implementation: decoding to valid UTF-8,
// streaming decode, and the stop-token list.
#include <algorithm>

#include "mx8/runtime/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime {
namespace {

// Moves the decidable prefix of `pending` to `out` as valid UTF-8: complete characters as they
// are, invalid bytes as U+FFFD. Unless `final`, a trailing sequence that may still become a valid
// character stays in `pending`. The decision at each position depends only on bytes that are
// present, so splitting a byte string into pushes never changes the result.
void drain_utf8(std::string& pending, std::string& out, bool final) {
  size_t i = 0;
  while (i < pending.size()) {
    uint8_t b = static_cast<uint8_t>(pending[i]);
    size_t n = unicode::sequence_length(b);
    if (!final && n > 1 && i + n > pending.size()) {
      bool all_continuation = true;
      for (size_t k = i + 1; k < pending.size(); ++k)
        all_continuation &= (static_cast<uint8_t>(pending[k]) & 0xC0) == 0x80;
      if (all_continuation) break;
    }
    // Invalid bytes become U+FFFD; a U+FFFD in the text is the same three bytes.
    size_t start = i;
    if (unicode::decode_one(pending, i) == 0xFFFD)
      out += "\xEF\xBF\xBD";
    else
      out.append(pending, start, i - start);
  }
  pending.erase(0, i);
}

}  // namespace

bool Tokenizer::leaves_start(std::span<const TokenId> ids, const DecodeOptions& opts) const {
  return std::any_of(ids.begin(), ids.end(),
                     [&](TokenId id) { return !is_special(id) || !token_bytes(id, true, opts).empty(); });
}

std::string Tokenizer::decode(std::span<const TokenId> ids, const DecodeOptions& opts) const {
  std::string bytes;
  bool at_start = true;
  for (TokenId id : ids) {
    std::string piece = token_bytes(id, at_start, opts);
    if (!piece.empty() || !is_special(id)) at_start = false;
    bytes += piece;
  }
  std::string out;
  drain_utf8(bytes, out, /*final=*/true);
  return out;
}

bool Tokenizer::is_stop(TokenId id) const {
  return std::find(stop_ids_.begin(), stop_ids_.end(), id) != stop_ids_.end();
}

void Tokenizer::finish_special_ids() {
  stop_ids_.clear();
  if (eos_ != kNoToken) stop_ids_.push_back(eos_);
  // End-of-turn tokens of the supported families: generation stops at any of them.
  static const char* const kEndOfTurn[] = {"<|eot_id|>",    "<|eom_id|>",      "<|im_end|>",
                                           "<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>",
                                           "</s>"};
  for (const char* name : kEndOfTurn) {
    auto id = find_token(name);
    if (id && is_special(*id) && !is_stop(*id)) stop_ids_.push_back(*id);
  }
}

std::string StreamDecoder::push(TokenId id) {
  std::string piece = tok_.token_bytes(id, at_start_, opts_);
  if (!piece.empty() || !tok_.is_special(id)) at_start_ = false;
  pending_ += piece;
  std::string out;
  drain_utf8(pending_, out, /*final=*/false);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  drain_utf8(pending_, out, /*final=*/true);
  at_start_ = true;
  return out;
}

}  // namespace mx8::runtime
