// JsonConstraint over real vocabularies: the tokens it allows are exactly those whose bytes the
// matcher takes one token at a time (the obvious way, token by token from a copy of the state).
#include "mx8/runtime/json_constraint.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "tokenizer_test_data.h"

namespace mx8::runtime {
namespace {

using json = nlohmann::json;

// Texts after which to compare: structure, inside keys and strings (plain and limited), numbers,
// escapes, half a UTF-8 character, a complete value, a think block.
const char* kSchema = R"({"type": "object", "properties": {"name": {"type": "string"},
    "code": {"type": "string", "maxLength": 4}, "age": {"type": "integer"}, "score": {"type": "number"},
    "kind": {"enum": ["cat", "dog", "cattle"]}, "tags": {"type": "array", "items": {"type": "string"}},
    "extra": {"type": "object"}, "stars": {"type": "integer", "minimum": 1, "maximum": 5},
    "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5},
    "date": {"type": "string", "pattern": "^\\d{4}-\\d{2}-\\d{2}$"},
    "word": {"type": "string", "pattern": "^[a-z\u00e9]+( [a-z]+)?$"}}, "required": ["name"]})";
const char* kPrefixes[] = {"",
                           " ",
                           "{",
                           "{\"",
                           "{\"na",
                           "{\"name\"",
                           "{\"name\": ",
                           "{\"name\": \"Al",
                           "{\"name\": \"Al\\",
                           "{\"name\": \"\xe2\x82",
                           "{\"code\": \"ab",
                           "{\"name\": \"A\", \"age\": 4",
                           "{\"name\": \"A\", \"score\": -0.5e",
                           "{\"name\": \"A\", \"kind\": \"cat",
                           "{\"name\": \"A\", \"tags\": [",
                           "{\"name\": \"A\", \"extra\": {\"x\": [1, {\"y\": \"",
                           "{\"name\": \"A\"}",
                           "{\"name\": \"A\", \"stars\": ",
                           "{\"name\": \"A\", \"ratio\": 0.",
                           "{\"date\": \"20",
                           "{\"date\": \"2024-01-1",
                           "{\"word\": \"caf",
                           "{\"word\": \"caf\xc3",
                           "{\"word\": \"the cat",
                           "<think>",
                           "<think>ok</think>\n"};

// Free text with strict calls of two tools: text, a marker begun and not finished, a call's name and
// arguments, between calls.
const char* kCallPrefixes[] = {"",
                               "Sure, ",
                               "a <",
                               "<tool",
                               "<tool_call>\n{\"name\": \"",
                               "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa",
                               "<tool_call>\n{\"name\": \"note\", \"arguments\": {}}",
                               "<tool_call>\n{\"name\": \"note\", \"arguments\": {}}\n</tool_call>\n"};

std::shared_ptr<const JsonSchema> text_with_calls() {
  const json weather = json::parse(R"({"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"]})");
  return std::make_shared<const JsonSchema>(
      JsonSchema::text().with_calls({{"get_weather", weather}, {"note", std::nullopt}}));
}

template <size_t N>
void expect_same_as_one_by_one(const Tokenizer& tok, std::shared_ptr<const JsonSchema> schema,
                               const JsonPrelude& prelude, const char* const (&prefixes)[N]) {
  auto vocab = std::make_shared<const JsonVocabulary>(tok);
  for (const char* prefix : prefixes) {
    JsonMatcher m(schema, prelude);
    for (const char* c = prefix; *c; ++c) ASSERT_TRUE(m.feed(uint8_t(*c))) << prefix;
    JsonConstraint fast(vocab, m);
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<uint8_t> got = fast.allowed();
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const std::vector<uint8_t> want = json_allowed_one_by_one(tok, m);
    size_t n = 0, differ = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      n += want[i];
      if (got[i] != want[i] && differ++ < 5)
        ADD_FAILURE() << "after \"" << prefix << "\": token " << i << " (\""
                      << tok.token_bytes(int32_t(i), false) << "\") is " << (got[i] ? "allowed" : "refused");
    }
    EXPECT_EQ(differ, 0u) << prefix;
    EXPECT_GT(n, 0u) << prefix;  // something can always follow
    std::printf("  %-40s %7zu tokens allowed, %.2f ms\n", ("\"" + std::string(prefix) + "\"").c_str(), n, ms);
  }
}

std::shared_ptr<const JsonSchema> value_schema() {
  return std::make_shared<const JsonSchema>(JsonSchema::compile(json::parse(kSchema)));
}
const JsonPrelude kThinks{true, false, {}, "", ""};
const JsonPrelude kHermesCalls{true, false, {}, "<tool_call>", "</tool_call>"};

TEST(JsonConstraint, AllowsWhatTheMatcherTakesQwen3) {
  const auto dir = test::hf_tokenizer_folder("qwen3");
  if (dir.empty()) GTEST_SKIP() << "no qwen3 tokenizer data";
  expect_same_as_one_by_one(*load_tokenizer(dir), value_schema(), kThinks, kPrefixes);
}

TEST(JsonConstraint, AllowsWhatTheMatcherTakesWithStrictCallsQwen3) {
  const auto dir = test::hf_tokenizer_folder("qwen3");
  if (dir.empty()) GTEST_SKIP() << "no qwen3 tokenizer data";
  const auto tok = load_tokenizer(dir);
  expect_same_as_one_by_one(*tok, text_with_calls(), kHermesCalls, kCallPrefixes);
  // Qwen3 writes the marker as one token (not a special one): free text may open a call with it.
  const std::vector<int32_t> marker = tok->encode("<tool_call>", {.add_special = false});
  ASSERT_EQ(marker.size(), 1u);
  JsonConstraint c(std::make_shared<const JsonVocabulary>(*tok),
                   JsonMatcher(text_with_calls(), kHermesCalls));
  EXPECT_TRUE(c.allowed()[size_t(marker[0])]);
}

TEST(JsonConstraint, AllowsWhatTheMatcherTakesSentencePiece) {
  const auto tok = load_tokenizer(std::filesystem::path(MX8_SOURCE_DIR) / "models" / "stories260K.gguf");
  expect_same_as_one_by_one(*tok, value_schema(), kThinks, kPrefixes);
  expect_same_as_one_by_one(*tok, text_with_calls(), kHermesCalls, kCallPrefixes);
}

TEST(JsonConstraint, MaskLeavesOnlyAllowedTokensAndAcceptMovesOn) {
  const auto tok = load_tokenizer(std::filesystem::path(MX8_SOURCE_DIR) / "models" / "stories260K.gguf");
  auto vocab = std::make_shared<const JsonVocabulary>(*tok);
  JsonConstraint c(vocab, JsonMatcher(std::make_shared<const JsonSchema>(JsonSchema::any_object())));
  std::vector<float> logits(tok->vocab_size() + 3, 1.0f);  // a row wider than the vocabulary
  c.mask(logits);
  // Left: blanks, then at most the opening brace (a row's extra entries have no token: never).
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isinf(logits[i])) continue;
    ASSERT_LT(i, tok->vocab_size());
    const std::string b = tok->token_bytes(int32_t(i), false);
    const size_t first = b.find_first_not_of(" \n\t\r");
    EXPECT_TRUE(first == std::string::npos || b.substr(first) == "{") << i << " " << b;
  }
  // Write {} token by token through accept(): then only the stop tokens (EOS) and blanks remain.
  for (int32_t id : tok->encode("{}", {.add_special = false})) c.accept(id);
  EXPECT_TRUE(c.matcher().complete());
  const auto& ok = c.allowed();
  EXPECT_TRUE(ok[size_t(tok->eos_id())]);
  for (size_t i = 0; i < ok.size(); ++i) {
    if (ok[i] != 0 && !tok->is_stop(int32_t(i))) {
      EXPECT_EQ(tok->token_bytes(int32_t(i), false).find_first_not_of(" \n\t\r"), std::string::npos) << i;
    }
  }
  // A clone keeps the state; a token the mask ruled out lifts the rule rather than wedging the sequence.
  auto copy = c.clone();
  copy->accept(tok->encode("a", {.add_special = false}).back());
  std::vector<float> row(tok->vocab_size(), 0.0f);
  copy->mask(row);
  for (float v : row) ASSERT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace mx8::runtime
