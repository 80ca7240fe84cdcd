// append_json_string: the server's streamed JSON strings. Every byte below 0x20 escaped (the short
// forms where JSON has them), quotes and backslashes escaped, everything else (DEL, UTF-8) as it is;
// and what it writes parses back to the input with nlohmann::json, a parser nobody here wrote.
#include "mx8/util/json_string.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace {

std::string quoted(const std::string& s) {
  std::string out = "x";  // appends: what was there stays
  mx8::append_json_string(out, s);
  return out;
}

TEST(JsonString, EscapesAsJsonRequires) {
  EXPECT_EQ(quoted(""), "x\"\"");
  EXPECT_EQ(quoted("say \"hi\" \\ bye"), "x\"say \\\"hi\\\" \\\\ bye\"");
  EXPECT_EQ(quoted("\b\f\n\r\t"), "x\"\\b\\f\\n\\r\\t\"");
  EXPECT_EQ(quoted(std::string("\0\x01\x1f", 3)), "x\"\\u0000\\u0001\\u001f\"");
  EXPECT_EQ(quoted("\x1b[0m"), "x\"\\u001b[0m\"");
  EXPECT_EQ(quoted(" \x7f/"), "x\" \x7f/\"");  // 0x20, DEL and / need nothing
  EXPECT_EQ(quoted("caf\xC3\xA9 \xF0\x9F\x98\x80"), "x\"caf\xC3\xA9 \xF0\x9F\x98\x80\"");  // UTF-8 kept
}

TEST(JsonString, EveryAsciiByteParsesBack) {
  std::string all;
  for (int c = 0; c < 128; ++c) all += char(c);
  std::string out;
  mx8::append_json_string(out, all);
  EXPECT_EQ(nlohmann::json::parse(out).get<std::string>(), all);
}

}  // namespace
