// The pre-tokenizer regex matcher: hand-checked matches for each construct, the real tokenizer
// patterns on tricky inputs, and clear errors for syntax outside the subset.
#include <gtest/gtest.h>

#include "mx8/error.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime {
namespace {

std::vector<std::string> matches(const std::string& pattern, const std::string& text) {
  Regex re(pattern);
  auto cps = unicode::decode(text);
  std::vector<std::string> out;
  for (auto [b, e] : re.find_all(cps))
    out.push_back(unicode::encode(std::vector<uint32_t>(cps.begin() + b, cps.begin() + e)));
  return out;
}
using V = std::vector<std::string>;

const char* kLlama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

TEST(Regex, Constructs) {
  EXPECT_EQ(matches("a|ab", "ab"), V{"a"});  // leftmost-first, not longest
  EXPECT_EQ(matches("ab|a", "ab"), V{"ab"});
  EXPECT_EQ(matches("a+?", "aaa"), (V{"a", "a", "a"}));
  EXPECT_EQ(matches("a{2}", "aaaaa"), (V{"aa", "aa"}));
  EXPECT_EQ(matches("a{2,}", "aaaaa"), V{"aaaaa"});
  EXPECT_EQ(matches("\\d{1,3}", "1234567"), (V{"123", "456", "7"}));
  EXPECT_EQ(matches("[a-c]+", "abcdcba"), (V{"abc", "cba"}));
  EXPECT_EQ(matches("[^a-c]+", "abcdcba"), V{"d"});
  EXPECT_EQ(matches("\\p{L}+", "héllo wörld 中文"), (V{"héllo", "wörld", "中文"}));
  EXPECT_EQ(matches("\\P{L}+", "ab12cd"), V{"12"});
  EXPECT_EQ(matches("\\pN+", "a½3"), V{"½3"});
  EXPECT_EQ(matches("\\p{P}", "a_b-c!"), (V{"_", "-", "!"}));  // Pc, Pd and Po are all P
  EXPECT_EQ(matches("\\p{Lu}", "aBcD"), (V{"B", "D"}));
  EXPECT_EQ(matches("(?i:ab)", "AB aB ab Ab"), (V{"AB", "aB", "ab", "Ab"}));
  EXPECT_EQ(matches("(?i:'s)", "'S 's 'ſ"), (V{"'S", "'s", "'ſ"}));  // Unicode simple case folding
  EXPECT_EQ(matches("a(?=b)", "ac ab"), V{"a"});
  EXPECT_EQ(matches("\\s+(?!\\S)", "a   b"), V{"  "});  // leaves one space for " b"
  EXPECT_EQ(matches("(?:ab)+", "ababab"), V{"ababab"});
  EXPECT_EQ(matches("(ab)*c", "ababc"), V{"ababc"});
  EXPECT_EQ(matches("^a", "a\na"), (V{"a", "a"}));  // Ruby/Oniguruma: ^ is a line start
  EXPECT_EQ(matches("\\x41\\u0042\\x{43}", "ABC"), V{"ABC"});
  EXPECT_EQ(matches("[\\-\\]\\\\]+", "a-]\\b"), V{"-]\\"});
  EXPECT_EQ(matches("[一-龥]+", "abc中文def"), V{"中文"});
  EXPECT_EQ(matches("a{,2}", "a{,2}"), V{"a{,2}"});  // not a quantifier: literal braces
  EXPECT_EQ(matches(".", "\n"), V{});
}

// Constructs the bundled tokenizers' patterns do not use, each with the matches Python's re gives
// (re.MULTILINE for the anchors, which Oniguruma's ^ and $ always are).
TEST(Regex, ConstructsAsPythonReads) {
  EXPECT_EQ(matches("\\w+", "a_b-c d\u0663 \u00e9"),
            (V{"a_b", "c", "d\u0663", "\u00e9"}));  // Nd and Pc are word
  EXPECT_EQ(matches("\\W+", "a_b-c d\u0663 \u00e9"), (V{"-", " ", " "}));
  EXPECT_EQ(matches("(?i)ab", "AB ab aB"), (V{"AB", "ab", "aB"}));
  EXPECT_EQ(matches("ab", "AB ab aB"), V{"ab"});  // case matters unless asked
  EXPECT_EQ(matches("a{1,2}", "aaa"), (V{"aa", "a"}));
  EXPECT_EQ(matches("a$", "a\na"), (V{"a", "a"}));
  EXPECT_EQ(matches("[\\v]+", "x\v\vy"), V{"\v\v"});
  EXPECT_EQ(matches("\\v", "x\v\fy"), V{"\v"});
  EXPECT_EQ(matches("a{2}", "ab aa"), V{"aa"});
  // Lazy repeats of one character stop at the first character that does not repeat.
  EXPECT_EQ(matches("a{1,2}?b", "aab ab"), (V{"aab", "ab"}));
  EXPECT_EQ(matches("a+?b", "acb ab"), V{"ab"});
  EXPECT_EQ(matches("\\d+?x", "12y3x"), V{"3x"});
}

TEST(Regex, Llama3PatternSplits) {
  EXPECT_EQ(matches(kLlama3, "Hello  world"), (V{"Hello", " ", " world"}));
  EXPECT_EQ(matches(kLlama3, "I'M here"), (V{"I", "'M", " here"}));
  EXPECT_EQ(matches(kLlama3, "12345"), (V{"123", "45"}));
  EXPECT_EQ(matches(kLlama3, "a\n\n b"), (V{"a", "\n\n", " b"}));
  EXPECT_EQ(matches(kLlama3, "x...\n\ny"), (V{"x", "...\n\n", "y"}));
  EXPECT_EQ(matches(kLlama3, "  \t x"), (V{"  \t", " x"}));
  EXPECT_EQ(matches(kLlama3, "end   "), (V{"end", "   "}));
  // A long whitespace run is linear work, not a deep recursion.
  std::string spaces(200000, ' ');
  EXPECT_EQ(matches(kLlama3, spaces + "x"), (V{std::string(199999, ' '), " x"}));
}

TEST(Regex, FullMatch) {
  Regex re("\\p{N}{1,3}");
  EXPECT_TRUE(re.full_match(unicode::decode("123")));
  EXPECT_FALSE(re.full_match(unicode::decode("1234")));
}

TEST(Regex, UnsupportedSyntaxIsAnError) {
  for (const char* bad : {"(?<=a)b", "a++", "[[:alpha:]]", "\\p{Greek}", "(a", "a)", "*a", "[z-a]", "\\k"}) {
    EXPECT_THROW(Regex{bad}, Error) << bad;
  }
}

// The pattern comes with the model and the text with the user: matching that would run without end
// (nested quantifiers backtrack exponentially) or overflow the stack (a repeated group nests a call
// per repetition: 100000 of them crashed) is an Error naming the pattern, as is a pattern nested
// deeper than 64 groups (100000 crashed the parser). The real patterns stay linear on long runs.
TEST(Regex, RunawayMatchingAndDeepPatternsAreErrors) {
  auto error_of = [](const std::string& pattern, const std::string& text) {
    try {
      matches(pattern, text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of("(a*)*b", std::string(40, 'a')).find("backtracking without end"), std::string::npos);
  EXPECT_EQ(error_of("(a*)*b", std::string(12, 'a') + "b"), "");  // short enough to finish
  std::string pairs;
  for (int k = 0; k < 100000; ++k) pairs += "ab";
  EXPECT_NE(error_of("(?:ab)+", pairs).find("a group repeated over a long run"), std::string::npos);
  EXPECT_EQ(matches("(?:ab)+", "ababab"), V{"ababab"});
  EXPECT_NE(
      error_of(std::string(100000, '(') + "a" + std::string(100000, ')'), "a").find("nested more than 64"),
      std::string::npos);
  EXPECT_EQ(matches(std::string(64, '(') + "a" + std::string(64, ')'), "a"), V{"a"});
  // A million spaces, letters or newlines through the Llama-3 pattern: one match or a few.
  for (char c : {' ', 'a', '\n'}) EXPECT_LE(matches(kLlama3, std::string(1000000, c)).size(), 2u) << int(c);
}

}  // namespace
}  // namespace mx8::runtime
