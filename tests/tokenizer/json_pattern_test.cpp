// StringPattern against a regular-expression engine nobody here wrote: the C++ library's std::regex
// (ECMAScript grammar, the one JSON Schema names), on every short string over small alphabets. A string
// matches exactly when regex_search finds the pattern in it, and a prefix is still alive exactly when
// some extension of it matches.
#include "mx8/runtime/json_pattern.h"

#include <gtest/gtest.h>

#include <regex>

#include "mx8/error.h"
#include "mx8/runtime/json_matcher.h"

namespace mx8::runtime {
namespace {

// The automaton's state after `s`, or -1.
int32_t run(const StringPattern& p, std::string_view s) {
  int32_t state = StringPattern::kStart;
  for (char c : s) {
    state = p.next(state, uint8_t(c));
    if (state < 0) return -1;
  }
  return state;
}

// Every string over `alphabet` up to `length` characters.
std::vector<std::string> strings(std::string_view alphabet, size_t length) {
  std::vector<std::string> out = {""};
  for (size_t from = 0; from < out.size(); ++from)
    if (out[from].size() < length)
      for (char c : alphabet) out.push_back(out[from] + c);
  return out;
}

struct Case {
  const char* pattern;
  const char* alphabet;
};
// Each with an alphabet that reaches its corners; at most 6 characters long (alphabets of 3-5).
const Case kCases[] = {
    {"^\\d{2}-\\d$", "1-a"}, {"^[a-c]+$", "abd"},   {"ab", "abc"},
    {"^(ab|a)c?$", "abc"},   {"^a{2,3}b*$", "ab"},  {"^(?:x|yz)+$", "xyz"},
    {"^[^a]b?$", "ab\n"},    {"^.?a$", "a\nb"},     {"^\\w\\W\\s\\S$", "a- \n"},
    {"c$", "abc"},           {"^a", "ab"},          {"^[\\d.-]{1,3}$", "1.-x"},
    {"^a\\.b\\*$", "a.b*"},  {"^(a|)+b$", "ab"},    {"^[-a]{2}x{0}$", "-ax"},
    {"^a{2,}$", "ab"},       {"^[a\\-z]$", "a-bz"},
};

TEST(StringPattern, MatchesWhatStdRegexFinds) {
  for (const Case& c : kCases) {
    const StringPattern p(c.pattern);
    const std::regex re(c.pattern, std::regex::ECMAScript);
    const std::vector<std::string> all = strings(c.alphabet, 6);
    size_t matched = 0;
    for (const std::string& s : all) {
      const bool want = std::regex_search(s, re);
      const int32_t state = run(p, s);
      ASSERT_EQ(state >= 0 && p.accepts(state), want) << c.pattern << " on \"" << s << "\"";
      matched += want;
    }
    EXPECT_GT(matched, 0u) << c.pattern;  // each case both matches and fails somewhere
    EXPECT_LT(matched, all.size()) << c.pattern;
  }
}

// A prefix is alive (next() never said -1) exactly when some string extending it matches: checked to 4
// characters past it, which covers every pattern above (none needs more to finish).
TEST(StringPattern, APrefixLivesExactlyWhileAMatchCanFollow) {
  for (const Case& c : kCases) {
    const StringPattern p(c.pattern);
    const std::regex re(c.pattern, std::regex::ECMAScript);
    const std::vector<std::string> tails = strings(c.alphabet, 4);
    for (const std::string& prefix : strings(c.alphabet, 3)) {
      bool can = false;
      for (const std::string& t : tails) can = can || std::regex_search(prefix + t, re);
      EXPECT_EQ(run(p, prefix) >= 0, can) << c.pattern << " after \"" << prefix << "\"";
    }
  }
}

TEST(StringPattern, CharactersAreWholeUtf8Sequences) {
  const StringPattern two("^.{2}$");
  EXPECT_TRUE(two.accepts(run(two,
                              "\xC3\xA9"
                              "a")));  // é is one character of two bytes
  EXPECT_FALSE(two.accepts(run(two, "\xC3\xA9")));
  EXPECT_EQ(run(two, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"), -1);  // a third character: no match follows
  EXPECT_EQ(run(two, "\xC3\x28"), -1);                              // not UTF-8
  const StringPattern accents("^[\xC3\xA0-\xC3\xBF]+$");            // [à-ÿ]
  EXPECT_TRUE(accents.accepts(run(accents, "\xC3\xA9\xC3\xBF")));
  EXPECT_EQ(run(accents, "e"), -1);
  const StringPattern escaped("^\\u00e9\\x41$");
  EXPECT_TRUE(escaped.accepts(run(escaped,
                                  "\xC3\xA9"
                                  "A")));
  const StringPattern named("^(?<pair>ab)+?$");  // a named group (std::regex has none): a group
  EXPECT_TRUE(named.accepts(run(named, "abab")));
  EXPECT_EQ(run(named, "aa"), -1);
  const StringPattern not_digit("^\\D$");  // any character but a digit, however long its UTF-8
  EXPECT_TRUE(not_digit.accepts(run(not_digit, "\xF0\x9F\x98\x80")));
  EXPECT_EQ(run(not_digit, "7"), -1);
}

TEST(StringPattern, WhatItCannotHoldIsRefusedByName) {
  const std::pair<const char*, const char*> cases[] = {
      {"(?=a)", "lookaround"},
      {"(?<!a)b", "lookaround"},
      {"(a)\\1", "a backreference"},
      {"\\bword", "\\b (a word boundary)"},
      {"\\p{L}", "\\p{...}"},
      {"a^b", "^ or $ inside the pattern"},
      {"^a|b$", "^ or $ beside a | outside a group"},
      {"a{3,2}", "{n,m} with m below n"},
      {"[z-a]", "out of order"},
      {"(a", "an unclosed ("},
      {"a)", "an unmatched )"},
      {"[ab", "an unclosed ["},
      {"*a", "a quantifier with nothing before it"},
      {"a**", "a quantifier after a quantifier"},
      {"a{1001}", "above 1000"},
      {"\\q", "the escape \\q"},
      {"^[^\\s\\S]$", "matches no string"},
      {"^\\x01$", "matches no string"},  // a control character JSON writes only as \u0001
      {"^(a{1,1000}){1,1000}$", "automaton states"},
  };
  for (const auto& [pattern, message] : cases) {
    try {
      StringPattern p(pattern);
      ADD_FAILURE() << pattern;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << pattern << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(pattern), std::string::npos) << e.what();  // names it
    }
  }
}

// Through the JSON matcher: the value between the quotes, escapes decoded, is what the pattern sees.
TEST(StringPattern, HoldsAJsonStringBetweenItsQuotes) {
  const auto schema = [](const char* text) {
    return std::make_shared<const JsonSchema>(JsonSchema::compile(nlohmann::json::parse(text)));
  };
  const auto taken = [](JsonMatcher m, std::string_view text) {
    for (size_t i = 0; i < text.size(); ++i)
      if (!m.feed(uint8_t(text[i]))) return i;
    return m.complete() ? text.size() + 1 : text.size();  // one past the end: whole
  };
  const auto date = schema(R"({"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"})");
  EXPECT_EQ(taken(JsonMatcher(date), "\"2024-01-15\""), 13u);
  EXPECT_EQ(taken(JsonMatcher(date), "\"2024-1-"), 7u);  // a second digit must come
  EXPECT_EQ(taken(JsonMatcher(date), "\"2024\""), 5u);   // too early to close
  const auto lines = schema(R"({"type": "string", "pattern": "^a\\nb\"$"})");
  EXPECT_EQ(taken(JsonMatcher(lines), R"("a\nb\"")"), 9u);
  // A \u escape is the character it writes (a surrogate pair one character); a control character the
  // pattern could only see through \u (here U+0001) is not one a patterned string holds.
  EXPECT_EQ(taken(JsonMatcher(lines), R"("a\u000ab\"")"), 13u);
  EXPECT_EQ(taken(JsonMatcher(lines), R"("a\u000Ac)"), 8u);  // the line break, then not the b
  const auto one = schema(R"({"type": "string", "pattern": "^.$"})");
  EXPECT_EQ(taken(JsonMatcher(one), R"("\uD83D\uDE00")"), 15u);
  EXPECT_EQ(taken(JsonMatcher(one), R"("\u00e9")"), 9u);
  EXPECT_EQ(taken(JsonMatcher(one), R"("\u0001")"), 6u);
  EXPECT_EQ(taken(JsonMatcher(one), R"("\u00e9\u00e9)"), 12u);  // one character only
  const auto object = schema(R"({"type": "object", "properties": {"id": {"type": "string",
      "pattern": "^[A-Z]{2}\\d+$"}}, "required": ["id"]})");
  EXPECT_EQ(taken(JsonMatcher(object), R"({"id": "AB12"})"), 15u);
  EXPECT_EQ(taken(JsonMatcher(object), R"({"id": "A1)"), 9u);
}

// Formats (OpenAI's structured outputs hold them; JSON Schema alone leaves them annotations): each a
// pattern that admits a subset of the format, every member a valid one.
TEST(StringPattern, FormatsHoldTheirStrings) {
  const auto whole = [](const char* format, const std::string& value) {
    const auto s = std::make_shared<const JsonSchema>(
        JsonSchema::compile(nlohmann::json{{"type", "string"}, {"format", format}}));
    JsonMatcher m(s);
    for (char c : nlohmann::json(value).dump())
      if (!m.feed(uint8_t(c))) return false;
    return m.complete();
  };
  EXPECT_TRUE(whole("date", "2024-02-28"));
  EXPECT_TRUE(whole("date", "1999-12-31"));
  EXPECT_FALSE(whole("date", "2024-02-30"));  // no such day
  EXPECT_FALSE(whole("date", "2024-04-31"));
  EXPECT_FALSE(whole("date", "2024-13-01"));
  EXPECT_FALSE(whole("date", "2024-2-1"));
  EXPECT_TRUE(whole("date-time", "2024-01-15T08:30:00Z"));
  EXPECT_TRUE(whole("date-time", "2024-01-15T23:59:59.123456+05:30"));
  EXPECT_FALSE(whole("date-time", "2024-01-15 08:30:00Z"));  // RFC 3339's T
  EXPECT_FALSE(whole("date-time", "2024-01-15T24:00:00Z"));
  EXPECT_FALSE(whole("date-time", "2024-01-15T08:30:00"));  // an offset is required
  EXPECT_TRUE(whole("time", "08:30:00-01:00"));
  EXPECT_TRUE(whole("uuid", "123e4567-e89b-12d3-a456-426614174000"));
  EXPECT_FALSE(whole("uuid", "123e4567-e89b-12d3-a456-42661417400"));
  EXPECT_TRUE(whole("ipv4", "192.168.0.255"));
  EXPECT_FALSE(whole("ipv4", "192.168.0.256"));
  EXPECT_FALSE(whole("ipv4", "01.2.3.4"));
  EXPECT_TRUE(whole("email", "ada.lovelace+x@example.co.uk"));
  EXPECT_FALSE(whole("email", "ada@localhost"));  // a dotted domain
  EXPECT_TRUE(whole("hostname", "api-1.example.com"));
  EXPECT_FALSE(whole("hostname", "-api.example.com"));
  EXPECT_TRUE(whole("duration", "anything"));  // a format without a pattern stays an annotation
  // Beside a length, the format stays an annotation too (a pattern and a length do not mix).
  const auto s = std::make_shared<const JsonSchema>(
      JsonSchema::compile(nlohmann::json{{"type", "string"}, {"format", "date"}, {"maxLength", 3}}));
  EXPECT_EQ(s->node(s->root()).pattern, nullptr);
}

}  // namespace
}  // namespace mx8::runtime
