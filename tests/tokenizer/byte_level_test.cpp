// GPT-2's byte-level alphabet, held to the mapping every byte-level tokenizer.json is written in:
// printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves, the other 68 bytes
// for U+0100 onwards in byte order, so space is 'Ġ' (U+0120) and newline 'Ċ' (U+010A), as in every
// GPT-2, Llama-3 and Qwen vocabulary.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime {
namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  unicode::append_utf8(s, cp);
  return s;
}

TEST(ByteLevel, EveryByteMapsToItsCharacter) {
  uint32_t next = 0x100;
  std::set<std::string> seen;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    EXPECT_EQ(byte_level::byte_to_string(uint8_t(b)), utf8(printable ? uint32_t(b) : next++)) << b;
    seen.insert(byte_level::byte_to_string(uint8_t(b)));
  }
  EXPECT_EQ(next, 0x100u + 68);
  EXPECT_EQ(seen.size(), 256u);
  // The characters the vocabularies show most, spelled out.
  EXPECT_EQ(byte_level::byte_to_string(' '), "\xC4\xA0");   // Ġ
  EXPECT_EQ(byte_level::byte_to_string('\n'), "\xC4\x8A");  // Ċ
  EXPECT_EQ(byte_level::byte_to_string('\t'), "\xC4\x89");  // ĉ
  EXPECT_EQ(byte_level::byte_to_string(0x7F), "\xC4\xA1");  // ġ
  EXPECT_EQ(byte_level::byte_to_string(0xAD), "\xC5\x83");  // Ń, the last of the 68
  EXPECT_EQ(byte_level::byte_to_string(0xAC), "\xC2\xAC");  // ¬ stands for itself
}

TEST(ByteLevel, DecodeInvertsEncodeAndRefusesOtherCharacters) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += char(b);
  std::string back = "x";
  ASSERT_TRUE(byte_level::decode(byte_level::encode(all), back));
  EXPECT_EQ(back, "x" + all);  // appended
  for (uint32_t cp : {0x20u, 0x0Au, 0x7Fu, 0xADu, 0x144u, 0x1FFu, 0x200u, 0x4E2Du}) {
    std::string out = "kept";
    EXPECT_FALSE(byte_level::decode("a" + utf8(cp), out)) << cp;
    EXPECT_EQ(out, "kept") << cp;
  }
}

}  // namespace
}  // namespace mx8::runtime
