// Unicode support for the tokenizers: UTF-8 coding, general categories, White_Space, simple case
// folding and NFC. Tables come from scripts/gen_unicode_tables.py (Python's unicodedata).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mx8::runtime::unicode {

// General categories, in the generator's order (Cn first, so unassigned code points are 0).
enum Category : uint8_t {
  kCn,
  kLu,
  kLl,
  kLt,
  kLm,
  kLo,
  kMn,
  kMc,
  kMe,
  kNd,
  kNl,
  kNo,
  kPc,
  kPd,
  kPs,
  kPe,
  kPi,
  kPf,
  kPo,
  kSm,
  kSc,
  kSk,
  kSo,
  kZs,
  kZl,
  kZp,
  kCc,
  kCf,
  kCs,
  kCo,
};

Category category(uint32_t cp);
// One-letter major classes as used by \p{L}, \p{N}, \p{P}, \p{S}, \p{M}, \p{Z}, \p{C}.
bool in_major_class(uint32_t cp, char major);
// The Unicode White_Space property (what Oniguruma's and Rust regex's \s match).
bool is_white_space(uint32_t cp);
// Simple case folding (single code point result); returns cp itself when it has none.
uint32_t simple_fold(uint32_t cp);

// Decodes one code point at s[i], advancing i. Invalid or truncated sequences decode as U+FFFD and
// consume one byte, so any byte string decodes.
uint32_t decode_one(std::string_view s, size_t& i);
// Length in bytes of the UTF-8 sequence whose lead byte is b (1 for invalid lead bytes).
size_t sequence_length(uint8_t lead);
std::vector<uint32_t> decode(std::string_view s);
void append_utf8(std::string& out, uint32_t cp);
std::string encode(const std::vector<uint32_t>& cps);

// Canonical composition (Unicode Normalization Form C).
std::string nfc(std::string_view s);

}  // namespace mx8::runtime::unicode
