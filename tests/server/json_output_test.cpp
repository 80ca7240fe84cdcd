// Structured output through the HTTP server: OpenAI's response_format (json_object, json_schema) and
// Anthropic's output_config.format hold stories260K, a model that only ever wrote stories, to JSON of
// the schema, whole and streamed, with each of n choices its own. What cannot be honoured is a 400 that
// names it.
#include <gtest/gtest.h>

#include "server/scripted_server.h"
#include "tokenizer/tokenizer_test_data.h"

namespace {

using namespace mx8;
using json = nlohmann::ordered_json;
using mx8::testing::ScriptedServer;
using mx8::testing::Served;
using mx8::testing::sse_data;

// Bounded: a name of at most 8 characters, an integer (at most 40 digits), nothing else, so greedy
// decoding ends whatever the model prefers (it would rather tell a story).
const json kPerson = {{"type", "object"},
                      {"properties",
                       {{"name", {{"type", "string"}, {"maxLength", 8}}},
                        {"age", {{"type", "integer"}}},
                        {"mood", {{"enum", {"happy", "sad"}}}}}},
                      {"required", {"name", "age", "mood"}},
                      {"additionalProperties", false}};
const json kAsk = json::array({{{"role", "user"}, {"content", "Lily was a little girl."}}});

json openai_schema_body() {
  return {{"messages", kAsk},
          {"max_tokens", 200},
          {"temperature", 0},
          {"response_format",
           {{"type", "json_schema"},
            {"json_schema", {{"name", "person"}, {"strict", true}, {"schema", kPerson}}}}}};
}

void expect_person(const std::string& text) {
  json v;
  ASSERT_NO_THROW(v = json::parse(text)) << text;
  ASSERT_TRUE(v.is_object()) << text;
  EXPECT_EQ(v.size(), 3u) << text;
  EXPECT_TRUE(v["name"].is_string() && v["name"].get<std::string>().size() <= 8) << text;  // ASCII here
  EXPECT_TRUE(v["age"].is_number_integer()) << text;
  EXPECT_TRUE(v["mood"] == "happy" || v["mood"] == "sad") << text;
}

TEST(JsonOutput, OpenAiJsonSchemaWholeAndStreamed) {
  Served s;
  json body = openai_schema_body();
  auto r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json choice = json::parse(r->body)["choices"][0];
  const std::string content = choice["message"]["content"];
  expect_person(content);
  EXPECT_EQ(choice["finish_reason"], "stop");  // it ended by itself, the value complete

  body["stream"] = true;
  r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  std::string streamed;
  for (const std::string& d : sse_data(r->body)) {
    if (d == "[DONE]") break;
    const json delta = json::parse(d)["choices"][0]["delta"];
    if (delta.contains("content") && delta["content"].is_string())
      streamed += delta["content"].get<std::string>();
  }
  EXPECT_EQ(streamed, content);  // greedy: the same reply
}

TEST(JsonOutput, EachChoiceIsHeldToTheFormat) {
  Served s;
  json body = openai_schema_body();
  body["n"] = 3;
  body["temperature"] = 1.0;
  body["seed"] = 5;
  auto r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json choices = json::parse(r->body)["choices"];
  ASSERT_EQ(choices.size(), 3u);
  for (const json& c : choices) {
    if (c["finish_reason"] == "stop") expect_person(c["message"]["content"]);  // a sample may run long
    EXPECT_EQ(c["message"]["content"].get<std::string>().find_first_not_of(" \n"),
              c["message"]["content"].get<std::string>().find('{'));  // JSON from its first character
  }
}

TEST(JsonOutput, AnthropicOutputConfigFormat) {
  Served s;
  for (const char* field : {"output_config", "output_format"}) {
    json body = {{"model", "m"}, {"max_tokens", 200}, {"temperature", 0}, {"messages", kAsk}};
    const json format = {{"type", "json_schema"}, {"schema", kPerson}};
    if (std::string(field) == "output_config")
      body["output_config"] = {{"format", format}};
    else
      body["output_format"] = format;  // the beta's field
    auto r = s.post("/v1/messages", body.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json msg = json::parse(r->body);
    EXPECT_EQ(msg["stop_reason"], "end_turn");
    expect_person(msg["content"][0]["text"]);
  }
}

TEST(JsonOutput, JsonObjectModeWritesAnObject) {
  Served s;
  // Any object: nothing bounds its strings, so the reply may run to max_tokens; what it wrote is JSON
  // cut off at the limit, and it starts as an object.
  const json body = {{"messages", kAsk},
                     {"max_tokens", 40},
                     {"temperature", 0},
                     {"response_format", {{"type", "json_object"}}}};
  auto r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json choice = json::parse(r->body)["choices"][0];
  const std::string content = choice["message"]["content"];
  ASSERT_FALSE(content.empty());
  EXPECT_EQ(content[content.find_first_not_of(" \n")], '{') << content;
  if (choice["finish_reason"] == "stop") {
    EXPECT_TRUE(json::parse(content).is_object()) << content;
  }
}

// The rows of a constrained request are drawn on the host even where the backend draws greedy tokens:
// the scripted backend's arg max would write prose.
TEST(JsonOutput, ConstrainedRowsAreNotDrawnByTheBackend) {
  ScriptedServer t(mx8::testing::hermes_template());
  t.reply("Once upon a time", true);
  auto r = t.post("/v1/chat/completions", openai_schema_body());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  expect_person(json::parse(r->body)["choices"][0]["message"]["content"]);
}

TEST(JsonOutput, RefusedWithTheReason) {
  Served s;
  const std::tuple<const char*, const char*, const char*> cases[] = {
      {R"({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": true}}})",
       "\"uniqueItems\" at #", "response_format.json_schema.schema"},
      {R"({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "texts"}}})",
       "unknown type", "response_format.json_schema.schema"},
      {R"({"type": "yaml"})", "must be \"text\", \"json_object\" or \"json_schema\"", "response_format.type"},
      {R"({"type": 3})", "string 'type'", "response_format"},
      {R"({"type": "json_schema"})", "'response_format.json_schema' must be an object",
       "response_format.json_schema"}};
  for (const auto& [format, message, param] : cases) {
    const json body = {{"messages", kAsk}, {"response_format", json::parse(format)}};
    auto r = s.post("/v1/chat/completions", body.dump());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    const json err = json::parse(r->body)["error"];
    EXPECT_NE(err["message"].get<std::string>().find(message), std::string::npos) << r->body;
    EXPECT_EQ(err["param"], param) << r->body;
  }
  // A prefill must start the value.
  json body = {{"model", "m"},
               {"max_tokens", 200},
               {"messages", json::array({{{"role", "user"}, {"content", "hi"}},
                                         {{"role", "assistant"}, {"content", "Sure"}}})},
               {"output_config", {{"format", {{"type", "json_schema"}, {"schema", kPerson}}}}}};
  auto r = s.post("/v1/messages", body.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("does not start a reply in the format"), std::string::npos) << r->body;
  // ... and one that does is continued.
  body["messages"][1]["content"] = "{\"name\": \"Lily\", ";
  r = s.post("/v1/messages", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  expect_person("{\"name\": \"Lily\", " + json::parse(r->body)["content"][0]["text"].get<std::string>());
}

// Tools offered beside a format: in the Hermes syntax a reply may open a call instead (the prelude,
// json_matcher_test); where calls are JSON objects themselves (Llama 3.1) the two cannot be told apart
// and the request is refused. With tool_choice none the format holds.
TEST(JsonOutput, ToolsBesideAFormat) {
  const json tools = {
      {{"type", "function"}, {"function", {{"name", "lookup"}, {"parameters", {{"type", "object"}}}}}}};
  {
    ScriptedServer t(mx8::testing::hermes_template());
    json body = openai_schema_body();
    body["tools"] = tools;
    auto r = t.post("/v1/chat/completions", body);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    // stories260K opens a call (its marker is free) and writes prose in it: no call parses, so the
    // text comes back as it is. The call's insides are not held to a syntax.
    const std::string content = json::parse(r->body)["choices"][0]["message"]["content"];
    if (content.find("<tool_call>") == content.find_first_not_of(" \n"))
      SUCCEED();
    else
      expect_person(content);
  }
  const json fx =
      json::parse(test::read_text(std::filesystem::path(MX8_SOURCE_DIR) / "tests/data/chat/fixtures.json"));
  ScriptedServer t(fx["templates"]["llama31_style"]["source"].get<std::string>());
  json body = openai_schema_body();
  body["tools"] = tools;
  auto r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("tool calls are JSON objects themselves"), std::string::npos) << r->body;
  body["tool_choice"] = "none";
  r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  expect_person(json::parse(r->body)["choices"][0]["message"]["content"]);
}

}  // namespace
