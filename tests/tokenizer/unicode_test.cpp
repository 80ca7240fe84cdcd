// Unicode support: UTF-8 coding, categories, White_Space, case folding and NFC (against Node.js's
// ICU-based normalize, an oracle independent of the Python-generated tables).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer/unicode.h"
#include "tokenizer/tokenizer_test_data.h"

namespace mx8::runtime::unicode {
namespace {

TEST(Unicode, Categories) {
  EXPECT_EQ(category('A'), kLu);
  EXPECT_EQ(category('z'), kLl);
  EXPECT_EQ(category('7'), kNd);
  EXPECT_EQ(category(0xBD), kNo);    // ½
  EXPECT_EQ(category(0x2163), kNl);  // Ⅳ
  EXPECT_EQ(category(0x4E2D), kLo);  // 中
  EXPECT_EQ(category(0x0301), kMn);  // combining acute
  EXPECT_EQ(category(0x20AC), kSc);  // €
  EXPECT_EQ(category(' '), kZs);
  EXPECT_EQ(category('\n'), kCc);
  EXPECT_EQ(category(0x200D), kCf);   // ZWJ
  EXPECT_EQ(category(0x1F999), kSo);  // 🦙
  EXPECT_EQ(category(0xE000), kCo);
  EXPECT_EQ(category(0x10FFFF), kCn);
  EXPECT_EQ(category(0x110000), kCn);
  EXPECT_TRUE(in_major_class(0x01C5, 'L'));  // ǅ (Lt)
  EXPECT_TRUE(in_major_class('!', 'P'));
  EXPECT_TRUE(in_major_class('+', 'S'));
  EXPECT_FALSE(in_major_class('_', 'S'));
}

TEST(Unicode, WhiteSpaceIsTheUnicodeProperty) {
  for (uint32_t c : {0x09u, 0x0Au, 0x0Bu, 0x0Cu, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x1680u, 0x2000u, 0x200Au,
                     0x2028u, 0x2029u, 0x202Fu, 0x205Fu, 0x3000u})
    EXPECT_TRUE(is_white_space(c)) << std::hex << c;
  // Python's str.isspace() says yes to these; \s in Oniguruma and Rust regex does not.
  for (uint32_t c : {0x1Cu, 0x1Fu, 0x200Bu, 0x180Eu, 0xFEFFu})
    EXPECT_FALSE(is_white_space(c)) << std::hex << c;
}

TEST(Unicode, SimpleFold) {
  EXPECT_EQ(simple_fold('S'), 's');
  EXPECT_EQ(simple_fold(0x17F), 's');   // ſ
  EXPECT_EQ(simple_fold(0x212A), 'k');  // Kelvin sign
  EXPECT_EQ(simple_fold(0x0391), 0x03B1u);
  EXPECT_EQ(simple_fold('1'), '1');
}

TEST(Unicode, Utf8DecodeReplacesInvalidBytes) {
  EXPECT_EQ(decode("a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\xA6\x99"),
            (std::vector<uint32_t>{'a', 0xE9, 0x4E2D, 0x1F999}));
  EXPECT_EQ(decode("\x80"), (std::vector<uint32_t>{0xFFFD}));
  EXPECT_EQ(decode("\xC3"), (std::vector<uint32_t>{0xFFFD}));                          // truncated
  EXPECT_EQ(decode("\xC0\xAF"), (std::vector<uint32_t>{0xFFFD, 0xFFFD}));              // overlong
  EXPECT_EQ(decode("\xED\xA0\x80"), (std::vector<uint32_t>{0xFFFD, 0xFFFD, 0xFFFD}));  // surrogate
  EXPECT_EQ(decode("\xF4\x90\x80\x80").front(), 0xFFFDu);                              // > U+10FFFF
  for (uint32_t cp : {0u, 0x7Fu, 0x80u, 0x7FFu, 0x800u, 0xFFFFu, 0x10000u, 0x10FFFFu})
    EXPECT_EQ(decode(encode({cp})), std::vector<uint32_t>{cp});
}

TEST(Unicode, NfcMatchesIcu) {
  auto j = nlohmann::json::parse(test::read_text(test::tokenizer_data_dir() / "nfc_cases.json"));
  size_t changed = 0;
  for (auto& c : j["cases"]) {
    std::string in = c[0], want = c[1];
    EXPECT_EQ(nfc(in), want) << in;
    changed += in != want;
  }
  EXPECT_GT(changed, 100u);  // the cases do exercise composition
}

TEST(Unicode, NfcFastPathAndHangul) {
  // Everything below U+0300 is left alone (the fast path), including Latin-1 letters.
  std::string latin;
  for (uint32_t c = 1; c < 0x300; ++c) append_utf8(latin, c);
  EXPECT_EQ(nfc(latin), latin);
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // ᄀ + ᅡ + ᆨ -> 각
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");                                 // e + U+0301 -> é
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");                              // Å (Angstrom sign) -> Å
}

}  // namespace
}  // namespace mx8::runtime::unicode
