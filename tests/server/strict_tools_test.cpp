// Strict tools through the HTTP server: a tool marked strict (OpenAI function.strict, Anthropic strict)
// has its calls' arguments held to its schema. stories260K, which never learnt to call tools, is made
// to call one (tool_choice required or named, behind a Hermes-syntax template): with strict, the call
// parses and its arguments are valid; without, the model writes prose into the call. (Left to itself
// it goes on writing calls to max_tokens; with parallel calls off the reply ends after one.)
#include <gtest/gtest.h>

#include "server/scripted_server.h"
#include "tokenizer/tokenizer_test_data.h"

namespace {

using namespace mx8;
using json = nlohmann::ordered_json;
using mx8::testing::Served;

// Bounded: a city from a list and a number of days from 1 to 14, nothing else, so greedy decoding ends.
const json kWeather = {{"type", "object"},
                       {"properties",
                        {{"city", {{"enum", {"Paris", "Rome", "Oslo"}}}},
                         {"days", {{"type", "integer"}, {"minimum", 1}, {"maximum", 14}}}}},
                       {"required", {"city", "days"}},
                       {"additionalProperties", false}};

json openai_body(bool strict, const json& choice) {
  return {
      {"messages", json::array({{{"role", "user"}, {"content", "Lily was a little girl."}}})},
      {"max_tokens", 150},
      {"temperature", 0},
      {"tools",
       json::array({{{"type", "function"},
                     {"function", {{"name", "get_weather"}, {"parameters", kWeather}, {"strict", strict}}}},
                    {{"type", "function"}, {"function", {{"name", "note"}}}}})},
      {"tool_choice", choice}};
}

void expect_weather(const json& arguments) {
  ASSERT_TRUE(arguments.is_object()) << arguments;
  EXPECT_EQ(arguments.size(), 2u) << arguments;
  EXPECT_TRUE(arguments["city"] == "Paris" || arguments["city"] == "Rome" || arguments["city"] == "Oslo")
      << arguments;
  EXPECT_TRUE(arguments["days"].is_number_integer()) << arguments;
  EXPECT_TRUE(arguments["days"] >= 1 && arguments["days"] <= 14) << arguments;  // stories260K left free: -30
}

TEST(StrictTools, OpenAiStrictCallsHoldTheirSchema) {
  Served s(true, 32u << 20, nullptr, nullptr, mx8::testing::hermes_template());
  const json named = {{"type", "function"}, {"function", {{"name", "get_weather"}}}};
  auto r = s.post("/v1/chat/completions", openai_body(true, named).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json message = json::parse(r->body)["choices"][0]["message"];
  ASSERT_TRUE(message.contains("tool_calls")) << r->body;
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
  expect_weather(json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()));
  json one = openai_body(true, named);
  one["parallel_tool_calls"] = false;
  r = s.post("/v1/chat/completions", one.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["finish_reason"], "tool_calls") << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            message["tool_calls"][0]["function"]["arguments"]);  // greedy: the same call

  // Required: the model picks the tool; the strict one's arguments are held, the other's are any object.
  r = s.post("/v1/chat/completions", openai_body(true, "required").dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  message = json::parse(r->body)["choices"][0]["message"];
  ASSERT_TRUE(message.contains("tool_calls")) << r->body;
  const json call = message["tool_calls"][0]["function"];
  const json arguments = json::parse(call["arguments"].get<std::string>());
  if (call["name"] == "get_weather")
    expect_weather(arguments);
  else
    EXPECT_TRUE(call["name"] == "note" && arguments.is_object()) << r->body;

  // The same request without strict: nothing holds the call, and stories260K writes prose into it.
  r = s.post("/v1/chat/completions", openai_body(false, named).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_FALSE(json::parse(r->body)["choices"][0]["message"].contains("tool_calls")) << r->body;
}

// Behind Qwen3's own template (thinking on and off): the forced call's prefix is the template's
// rendering, an empty thinking block first where thinking is on, and the call after it is held.
TEST(StrictTools, QwenTemplateForcedCalls) {
  const json fx =
      json::parse(test::read_text(std::filesystem::path(MX8_SOURCE_DIR) / "tests/data/chat/fixtures.json"));
  Served s(true, 32u << 20, nullptr, nullptr, fx["templates"]["qwen3"]["source"].get<std::string>());
  for (const bool thinking : {true, false}) {
    for (const json& choice :
         {json("required"), json{{"type", "function"}, {"function", {{"name", "get_weather"}}}}}) {
      json body = openai_body(true, choice);
      body["tools"].erase(1);  // get_weather alone: a required call is of it
      body["parallel_tool_calls"] = false;
      body["chat_template_kwargs"] = {{"enable_thinking", thinking}};
      auto r = s.post("/v1/chat/completions", body.dump());
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 200) << r->body;
      const json choice0 = json::parse(r->body)["choices"][0];
      ASSERT_TRUE(choice0["message"].contains("tool_calls")) << thinking << " " << choice << " " << r->body;
      EXPECT_EQ(choice0["finish_reason"], "tool_calls") << r->body;
      expect_weather(
          json::parse(choice0["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>()));
    }
  }
  // Not strict, the same forced call is prose: the prefix above was held, not let through.
  auto r = s.post("/v1/chat/completions", openai_body(false, "required").dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_FALSE(json::parse(r->body)["choices"][0]["message"].contains("tool_calls")) << r->body;
}

// Llama 3.1's calls are JSON objects without markers ({"name", "parameters"}, the reply's first
// character opens them): held the same way.
TEST(StrictTools, Llama3JsonCalls) {
  const json fx =
      json::parse(test::read_text(std::filesystem::path(MX8_SOURCE_DIR) / "tests/data/chat/fixtures.json"));
  Served s(true, 32u << 20, nullptr, nullptr, fx["templates"]["llama31_style"]["source"].get<std::string>());
  for (const bool strict : {true, false}) {
    json body = openai_body(strict, "required");
    body["tools"].erase(1);
    body["parallel_tool_calls"] = false;
    auto r = s.post("/v1/chat/completions", body.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json message = json::parse(r->body)["choices"][0]["message"];
    EXPECT_EQ(message.contains("tool_calls"), strict) << r->body;  // without strict, prose
    if (strict)
      expect_weather(json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()));
  }
}

// Mistral's two forms (tests/data/chat's templates in the style of its v3 and v11 tokenizers' models):
// a strict call is one array after [TOOL_CALLS] ([{"name": ..., "arguments": ...}]) or NAME[ARGS]{...}
// after it, held from the forced prefix to the end of its arguments.
TEST(StrictTools, MistralCallsInBothForms) {
  const json fx =
      json::parse(test::read_text(std::filesystem::path(MX8_SOURCE_DIR) / "tests/data/chat/fixtures.json"));
  for (const char* name : {"mistral_v3_style", "mistral_v11_style"}) {
    Served s(true, 32u << 20, nullptr, nullptr, fx["templates"][name]["source"].get<std::string>());
    const json named = {{"type", "function"}, {"function", {{"name", "get_weather"}}}};
    for (const bool strict : {true, false}) {
      json body = openai_body(strict, named);
      body["parallel_tool_calls"] = false;
      auto r = s.post("/v1/chat/completions", body.dump());
      ASSERT_TRUE(r);
      ASSERT_EQ(r->status, 200) << r->body;
      const json message = json::parse(r->body)["choices"][0]["message"];
      EXPECT_EQ(message.contains("tool_calls"), strict) << name << " " << r->body;  // without strict, prose
      if (strict && message.contains("tool_calls")) {
        EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "get_weather");
        expect_weather(json::parse(message["tool_calls"][0]["function"]["arguments"].get<std::string>()));
        EXPECT_EQ(json::parse(r->body)["choices"][0]["finish_reason"], "tool_calls");
      }
    }
  }
}

TEST(StrictTools, AnthropicStrictToolUse) {
  Served s(true, 32u << 20, nullptr, nullptr, mx8::testing::hermes_template());
  const json body = {
      {"model", "m"},
      {"max_tokens", 150},
      {"temperature", 0},
      {"messages", json::array({{{"role", "user"}, {"content", "Lily was a little girl."}}})},
      {"tools", json::array({{{"name", "get_weather"}, {"input_schema", kWeather}, {"strict", true}}})},
      {"tool_choice", {{"type", "any"}, {"disable_parallel_tool_use", true}}}};
  auto r = s.post("/v1/messages", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json msg = json::parse(r->body);
  EXPECT_EQ(msg["stop_reason"], "tool_use") << r->body;
  bool called = false;
  for (const json& block : msg["content"])
    if (block["type"] == "tool_use") {
      called = true;
      EXPECT_EQ(block["name"], "get_weather");
      expect_weather(block["input"]);
    }
  EXPECT_TRUE(called) << r->body;
}

TEST(StrictTools, RefusedWithTheReason) {
  Served s(true, 32u << 20, nullptr, nullptr, mx8::testing::hermes_template());
  json body = openai_body(true, "auto");
  body["tools"][0]["function"]["parameters"]["properties"]["city"] = {{"type", "array"},
                                                                      {"uniqueItems", true}};
  auto r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  json err = json::parse(r->body)["error"];
  EXPECT_NE(err["message"].get<std::string>().find("tool \"get_weather\": JSON schema: \"uniqueItems\""),
            std::string::npos)
      << r->body;
  EXPECT_EQ(err["param"], "tools");
  body = openai_body(true, "auto");
  body["tools"][0]["function"]["strict"] = "yes";
  r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "tools[0].function.strict") << r->body;
  // An Anthropic prefill that writes a call its tool does not allow; one that starts a valid call goes on.
  json anthropic = {
      {"model", "m"},
      {"max_tokens", 60},
      {"tools", json::array({{{"name", "get_weather"}, {"input_schema", kWeather}, {"strict", true}}})},
      {"messages", json::array({{{"role", "user"}, {"content", "Weather?"}},
                                {{"role", "assistant"}, {"content", "<tool_call>{\"name\": \"nope\""}}})}};
  r = s.post("/v1/messages", anthropic.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("its strict tool's schema does not allow"), std::string::npos) << r->body;
  anthropic["messages"][1]["content"] = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"";
  r = s.post("/v1/messages", anthropic.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

}  // namespace
