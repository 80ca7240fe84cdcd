// `mx8 run` and `mx8 chat` with --json / --json-schema FILE: the bundled stories260K, which only ever
// wrote stories, writes JSON of the schema (constrained decoding, docs/SERVER.md "Structured output").
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/run_mx8.h"

namespace {

using json = nlohmann::json;
using mx8::test::mx8_command;
using mx8::test::mx8_exe;
using mx8::test::run_shell;

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

class JsonCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
    // Bounded (a short name, an integer, a mood), so that greedy decoding ends by itself.
    write(schema_, R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
      "age": {"type": "integer"}, "mood": {"enum": ["happy", "sad"]}}, "required": ["name", "age", "mood"],
      "additionalProperties": false})");
  }
  void TearDown() override {
    for (const auto& f : {schema_, template_}) std::filesystem::remove(f);
  }
  static void write(const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; }
  static void expect_person(const std::string& text) {
    json v;
    ASSERT_NO_THROW(v = json::parse(text)) << text;
    EXPECT_EQ(v.size(), 3u) << text;
    EXPECT_TRUE(v["name"].is_string() && v["age"].is_number_integer()) << text;
    EXPECT_TRUE(v["mood"] == "happy" || v["mood"] == "sad") << text;
  }
  const std::string tag_ = std::to_string(::getpid());
  const std::filesystem::path schema_ =
      std::filesystem::temp_directory_path() / ("mx8_person_" + tag_ + ".json");
  const std::filesystem::path template_ =
      std::filesystem::temp_directory_path() / ("mx8_json_chat_" + tag_ + ".jinja");
};

TEST_F(JsonCommand, RunWritesAValueOfTheSchema) {
  int st = 0;
  const std::string err = schema_.string() + ".err";
  const std::string out = run_shell(mx8_command() + " run -m '" + kModel +
                                        "' --temperature 0 --no-echo -n 200 -p 'Lily' --json-schema '" +
                                        schema_.string() + "' 2>'" + err + "'",
                                    &st);
  ASSERT_EQ(st, 0) << out;
  expect_person(out);
  std::ifstream in(err);
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(err);
  EXPECT_NE(log.find("stopped: stop\n"), std::string::npos) << log;  // it ended by itself
  // Without the schema the same run tells a story.
  const std::string story = run_shell(
      mx8_command() + " run -m '" + kModel + "' --temperature 0 --no-echo -n 20 -p 'Lily' 2>/dev/null", &st);
  EXPECT_EQ(story.find('{'), std::string::npos) << story;
}

TEST_F(JsonCommand, JsonAloneOpensAnObject) {
  int st = 0;
  const std::string out = run_shell(
      mx8_command() + " run -m '" + kModel + "' --temperature 0 --no-echo -n 20 -p 'Lily' --json 2>/dev/null",
      &st);
  ASSERT_EQ(st, 0) << out;
  ASSERT_NE(out.find_first_not_of(" \n"), std::string::npos) << out;
  EXPECT_EQ(out[out.find_first_not_of(" \n")], '{') << out;  // 20 tokens are too few to close it
}

TEST_F(JsonCommand, ChatRepliesAreValuesOfTheSchema) {
  write(template_, "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}");
  int st = 0;
  const std::string out =
      run_shell("printf 'Lily\\nTom\\n' | " + mx8_command() + " chat -m '" + kModel + "' --template '" +
                    template_.string() + "' --temperature 0 -n 200 --json-schema '" + schema_.string() +
                    "' 2>/dev/null",
                &st);
  ASSERT_EQ(st, 0) << out;
  // Two replies, each a value ending with the newline the chat writes after a reply. A value's own
  // line breaks are at most one per gap, so the two are told apart by parsing, not by lines.
  const json first = json::parse(out, nullptr, false);
  EXPECT_TRUE(first.is_discarded()) << out;  // two values, not one
  size_t split = out.find("}\n");
  ASSERT_NE(split, std::string::npos) << out;
  expect_person(out.substr(0, split + 1));
  expect_person(out.substr(split + 2));
}

TEST_F(JsonCommand, BadSchemasAreErrorsThatNameTheFileAndTheKeyword) {
  write(schema_, R"({"type": "array", "uniqueItems": true})");
  int st = 0;
  std::string out = mx8::test::run("run -n 5 --json-schema '" + schema_.string() + "'", &st);
  EXPECT_NE(st, 0) << out;
  EXPECT_NE(out.find(schema_.string()), std::string::npos) << out;
  EXPECT_NE(out.find("\"uniqueItems\" at #"), std::string::npos) << out;
  write(schema_, "{\"type\": ");
  out = mx8::test::run("run -n 5 --json-schema '" + schema_.string() + "'", &st);
  EXPECT_NE(st, 0) << out;
  EXPECT_NE(out.find(schema_.string()), std::string::npos) << out;
  out = mx8::test::run("run -n 5 --json-schema /no/such/schema.json", &st);
  EXPECT_NE(st, 0) << out;
  EXPECT_NE(out.find("/no/such/schema.json"), std::string::npos) << out;
  out = mx8::test::run("run -n 5 --json --json-schema '" + schema_.string() + "'", &st);
  EXPECT_NE(st, 0) << out;
  EXPECT_NE(out.find("excludes"), std::string::npos) << out;
}

// The benchmark runs on the bundled vocabulary: each mask equals the reference (it stops with an error
// otherwise) and its table goes to the PERF.md it is given.
TEST_F(JsonCommand, BenchConstraintChecksAndWritesItsSection) {
  const std::filesystem::path perf = schema_.string() + ".perf.md";
  int st = 0;
  const std::string out =
      mx8::test::run("bench constraint --min-time 0.01 --perf-md '" + perf.string() + "'", &st);
  ASSERT_EQ(st, 0) << out;
  EXPECT_NE(out.find("free text (strict tools)"), std::string::npos) << out;
  std::ifstream in(perf);
  const std::string md((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(perf);
  EXPECT_NE(md.find("<!-- bench:cpu-constraint -->"), std::string::npos) << md;
  EXPECT_NE(md.find("| `{\"name\": \"Al` | a string | 400 |"), std::string::npos) << md;
}

}  // namespace
