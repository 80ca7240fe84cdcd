// Tool use through the HTTP server: tools and tool turns reach the prompt through the chat template,
// and the calls a reply makes come back in each API's shape, whole and streamed. stories260K never
// writes a call, so its greedy draws come from a script (scripted_backend.h); the template is a small
// one in the Hermes syntax (<tool_call>{"name": ..., "arguments": ...}</tool_call>).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "mx8/runtime/tool_calls.h"
#include "mx8/server/api.h"
#include "server/http_fixture.h"
#include "server/scripted_server.h"
#include "tokenizer/tokenizer_test_data.h"

namespace {

using namespace mx8;
using json = nlohmann::ordered_json;
using mx8::testing::Served;
using mx8::testing::sse_data;
using mx8::testing::stories;

const std::string kToolTemplate = mx8::testing::hermes_template();

const json kTools = json::parse(R"([{"type": "function", "function": {"name": "add", "description": "a + b",
  "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}])");
const json kAnthropicTools = json::parse(R"([{"name": "add", "description": "a + b",
  "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}])");

// stories260K behind the tool template, its greedy draws from a script.
struct ToolServer : mx8::testing::ScriptedServer {
  ToolServer() : ScriptedServer(kToolTemplate) {}
};

const std::string kCallReply =
    "Let me add.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}\n</tool_call>";

TEST(ToolUse, OpenAiChatReturnsTheCallWholeAndStreamed) {
  ToolServer t;
  json body = {{"messages", {{{"role", "user"}, {"content", "What is 2+3?"}}}},
               {"tools", kTools},
               {"max_tokens", 256},
               {"temperature", 0}};
  t.reply(kCallReply);
  auto r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  // The tools went into the prompt.
  EXPECT_EQ(j["usage"]["prompt_tokens"],
            mx8::testing::tokens_of("tools: add\nuser: What is 2+3?\nassistant:"));
  const json& choice = j["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(choice["message"]["content"], "Let me add.");
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 1u);
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "add");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()),
            json::parse(R"({"a": 2, "b": 3})"));

  body["stream"] = true;
  t.reply(kCallReply);
  r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  const std::vector<std::string> data = sse_data(r->body);
  std::string text;
  json calls = json::array();
  std::string finish;
  for (size_t i = 0; i + 1 < data.size(); ++i) {
    const json c = json::parse(data[i])["choices"][0];
    if (c["delta"].contains("content")) text += c["delta"]["content"].get<std::string>();
    if (c["delta"].contains("tool_calls"))
      for (const json& tc : c["delta"]["tool_calls"]) calls.push_back(tc);
    if (!c["finish_reason"].is_null()) finish = c["finish_reason"];
  }
  EXPECT_EQ(data.back(), "[DONE]");
  EXPECT_EQ(text, "Let me add.");
  EXPECT_EQ(finish, "tool_calls");
  ASSERT_EQ(calls.size(), 1u) << r->body;
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["function"]["name"], "add");
  EXPECT_EQ(json::parse(calls[0]["function"]["arguments"].get<std::string>()),
            json::parse(R"({"a": 2, "b": 3})"));
}

TEST(ToolUse, AnthropicReturnsToolUseBlocksWholeAndStreamed) {
  ToolServer t;
  json body = {{"messages", {{{"role", "user"}, {"content", "What is 2+3?"}}}},
               {"tools", kAnthropicTools},
               {"max_tokens", 256},
               {"temperature", 0}};
  t.reply(kCallReply);
  auto r = t.post("/v1/messages", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["usage"]["input_tokens"],
            mx8::testing::tokens_of("tools: add\nuser: What is 2+3?\nassistant:"));
  EXPECT_EQ(j["stop_reason"], "tool_use");
  ASSERT_EQ(j["content"].size(), 2u) << r->body;
  EXPECT_EQ(j["content"][0], json::parse(R"({"type": "text", "text": "Let me add."})"));
  EXPECT_EQ(j["content"][1]["type"], "tool_use");
  EXPECT_EQ(j["content"][1]["id"].get<std::string>().rfind("toolu_", 0), 0u);
  EXPECT_EQ(j["content"][1]["name"], "add");
  EXPECT_EQ(j["content"][1]["input"], json::parse(R"({"a": 2, "b": 3})"));

  // Streamed: a text block, closed before the tool_use block, whose input comes as JSON text.
  body["stream"] = true;
  t.reply(kCallReply);
  r = t.post("/v1/messages", body);
  ASSERT_TRUE(r);
  std::vector<std::string> names;
  const std::vector<std::string> data = sse_data(r->body, &names);
  std::vector<std::string> shape;  // the events, text deltas once
  std::string text, input;
  for (size_t i = 0; i < data.size(); ++i) {
    const json e = json::parse(data[i]);
    EXPECT_EQ(e["type"], names[i]);
    std::string what = names[i];
    if (e.contains("index")) what += " " + e["index"].dump();
    if (e.contains("content_block")) what += " " + e["content_block"]["type"].get<std::string>();
    if (names[i] == "content_block_delta") {
      what += " " + e["delta"]["type"].get<std::string>();
      if (e["delta"]["type"] == "text_delta") text += e["delta"]["text"].get<std::string>();
      if (e["delta"]["type"] == "input_json_delta") input += e["delta"]["partial_json"].get<std::string>();
    }
    if (names[i] == "message_delta") what += " " + e["delta"]["stop_reason"].get<std::string>();
    if (names[i] == "content_block_start" && e["content_block"]["type"] == "tool_use") {
      EXPECT_EQ(e["content_block"]["name"], "add");
      EXPECT_EQ(e["content_block"]["input"], json::object());
    }
    if (shape.empty() || shape.back() != what) shape.push_back(what);
  }
  const std::vector<std::string> expected = {"message_start",
                                             "ping",
                                             "content_block_start 0 text",
                                             "content_block_delta 0 text_delta",
                                             "content_block_stop 0",
                                             "content_block_start 1 tool_use",
                                             "content_block_delta 1 input_json_delta",
                                             "content_block_stop 1",
                                             "message_delta tool_use",
                                             "message_stop"};
  EXPECT_EQ(shape, expected) << r->body;
  EXPECT_EQ(text, "Let me add.");
  EXPECT_EQ(json::parse(input), json::parse(R"({"a": 2, "b": 3})"));
}

// A conversation that went through a call and its result renders the same from either API.
TEST(ToolUse, CallsAndResultsInTheHistoryReachTheTemplate) {
  ToolServer t;
  const std::string rendered =
      "tools: add\nuser: What is 2+3?\nassistant: <tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 2, "
      "\"b\": "
      "3}}</tool_call>\ntool: 5\nassistant:";
  const json openai = {{"messages", json::parse(R"([{"role": "user", "content": "What is 2+3?"},
         {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
           "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 3}"}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": "5"}])")},
                       {"tools", kTools},
                       {"max_tokens", 64},
                       {"temperature", 0}};
  t.reply("It is 5.");
  auto r = t.post("/v1/chat/completions", openai);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["usage"]["prompt_tokens"], mx8::testing::tokens_of(rendered));
  EXPECT_EQ(j["choices"][0]["message"]["content"], "It is 5.");
  EXPECT_FALSE(j["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");

  const json anthropic = {{"messages", json::parse(R"([{"role": "user", "content": "What is 2+3?"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "add",
           "input": {"a": 2, "b": 3}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
           "content": [{"type": "text", "text": "5"}]}]}])")},
                          {"tools", kAnthropicTools},
                          {"max_tokens", 64}};
  r = t.post("/v1/messages/count_tokens", anthropic);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["input_tokens"], mx8::testing::tokens_of(rendered));
}

// tool_choice that names a tool (or asks for any) starts the reply inside the call.
TEST(ToolUse, AForcedChoiceStartsTheReplyInsideTheCall) {
  ToolServer t;
  const std::string prompt = "tools: add\nuser: Add one and one.\nassistant:";
  json body = {{"messages", {{{"role", "user"}, {"content", "Add one and one."}}}},
               {"tools", kTools},
               {"tool_choice", {{"type", "function"}, {"function", {{"name", "add"}}}}},
               {"max_tokens", 256},
               {"temperature", 0}};
  t.reply("{\"a\": 1, \"b\": 1}}</tool_call>");
  auto r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["usage"]["prompt_tokens"],
            mx8::testing::tokens_of(prompt + " <tool_call>{\"name\": \"add\", \"arguments\": "));
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_null());
  EXPECT_EQ(j["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "add");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");

  json anthropic = {{"messages", {{{"role", "user"}, {"content", "Add one and one."}}}},
                    {"tools", kAnthropicTools},
                    {"tool_choice", {{"type", "any"}}},
                    {"max_tokens", 256},
                    {"temperature", 0}};
  t.reply("add\", \"arguments\": {\"a\": 1, \"b\": 1}}</tool_call>");
  r = t.post("/v1/messages", anthropic);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  j = json::parse(r->body);
  EXPECT_EQ(j["usage"]["input_tokens"], mx8::testing::tokens_of(prompt + " <tool_call>{\"name\": \""));
  ASSERT_EQ(j["content"].size(), 1u) << r->body;
  EXPECT_EQ(j["content"][0]["name"], "add");
  EXPECT_EQ(j["content"][0]["input"], json::parse(R"({"a": 1, "b": 1})"));
  EXPECT_EQ(j["stop_reason"], "tool_use");
}

TEST(ToolUse, WhatIsNotACallIsTextAndParallelCallsCanBeRefused) {
  ToolServer t;
  json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
               {"tools", kTools},
               {"max_tokens", 256},
               {"temperature", 0}};
  const std::string broken = "<tool_call>{\"name\": \"add\", \"argu";
  t.reply(broken);
  auto r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  json j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], broken);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");

  const std::string two =
      "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call><tool_call>{\"name\": \"add\", "
      "\"arguments\": {\"a\": 2}}</tool_call>";
  t.reply(two);
  r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["choices"][0]["message"]["tool_calls"].size(), 2u) << r->body;
  body["parallel_tool_calls"] = false;
  t.reply(two);
  r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  j = json::parse(r->body)["choices"][0]["message"];
  ASSERT_EQ(j["tool_calls"].size(), 1u) << r->body;
  EXPECT_EQ(json::parse(j["tool_calls"][0]["function"]["arguments"].get<std::string>()),
            json::parse(R"({"a": 1})"));
}

// A tool conversation sent the OpenAI way (arguments as JSON text, ids) reaches the real Qwen3 and
// DeepSeek-V3 templates and the Mistral-style ones in the forms they take (objects and "" content for
// Qwen3, text and null content for DeepSeek-V3) and renders as Jinja2 renders it from transformers'
// messages (tests/data/chat).
TEST(ToolUse, OpenAiToolTurnsRenderThroughRealTemplatesAsTransformersDoes) {
  const json fx =
      json::parse(test::read_text(std::filesystem::path(MX8_SOURCE_DIR) / "tests/data/chat/fixtures.json"));
  auto dialect = server::openai_chat_dialect();
  int checked = 0;
  for (const json& c : fx["cases"]) {
    if (c["conversation"] != "tools" || c["variables"]["add_generation_prompt"] != true) continue;
    const json& t = fx["templates"][c["template"].get<std::string>()];
    const runtime::ChatTemplate tmpl(t["source"], t["bos_token"], t["eos_token"]);
    json messages = c["messages"];
    int id = 0;
    for (json& m : messages) {
      if (m.contains("tool_calls"))
        for (json& call : m["tool_calls"]) {
          json& args = call["function"]["arguments"];
          if (!args.is_string()) args = runtime::json_text(args);
          if (!call.contains("id")) call["id"] = "call_" + std::to_string(id++);
        }
      if (m["role"] == "tool" && !m.contains("tool_call_id")) m["tool_call_id"] = "call_0";
    }
    json body = {{"messages", messages}};
    if (c["variables"].contains("tools")) body["tools"] = c["variables"]["tools"];
    const server::ApiRequest r = dialect->parse(body, {});
    json variables = c["variables"];
    const runtime::ToolFormat format = runtime::probe_tool_format(tmpl);
    EXPECT_EQ(tmpl.render(format.template_messages(r.messages), variables), c["expected"].get<std::string>())
        << c["template"];
    ++checked;
  }
  EXPECT_EQ(checked, 4);  // qwen3, deepseek_v3 and the two Mistral styles
}

// Mistral's syntax through the server, with a template in the style of its v3 tokenizer's models
// (tests/data/chat): calls come back from a [TOOL_CALLS] array in both APIs, whole and streamed, and the
// ids a client sends back (call_..., toolu_...) reach a template that takes only nine characters as
// nine characters, the same in a call and in its result.
TEST(ToolUse, MistralCallsComeBackAndTheirIdsReachItsTemplate) {
  const json fx =
      json::parse(test::read_text(std::filesystem::path(MX8_SOURCE_DIR) / "tests/data/chat/fixtures.json"));
  const std::string source = fx["templates"]["mistral_v3_style"]["source"];
  mx8::testing::ScriptedServer t(source);
  const std::string call = "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 2, \"b\": 3}}]";
  json body = {{"messages", {{{"role", "user"}, {"content", "What is 2+3?"}}}},
               {"tools", kTools},
               {"max_tokens", 256},
               {"temperature", 0}};
  t.reply(call);
  auto r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body)["choices"][0];
  EXPECT_TRUE(j["message"]["content"].is_null()) << r->body;
  ASSERT_EQ(j["message"]["tool_calls"].size(), 1u) << r->body;
  EXPECT_EQ(j["message"]["tool_calls"][0]["function"]["name"], "add");
  EXPECT_EQ(j["finish_reason"], "tool_calls");

  json anthropic = {{"messages", {{{"role", "user"}, {"content", "What is 2+3?"}}}},
                    {"tools", kAnthropicTools},
                    {"max_tokens", 256},
                    {"temperature", 0},
                    {"stream", true}};
  t.reply("Adding." + call);
  r = t.post("/v1/messages", anthropic);
  ASSERT_TRUE(r);
  std::string input, stop;
  for (const std::string& d : sse_data(r->body)) {
    const json e = json::parse(d);
    if (e["type"] == "content_block_delta" && e["delta"]["type"] == "input_json_delta")
      input += e["delta"]["partial_json"].get<std::string>();
    if (e["type"] == "message_delta") stop = e["delta"]["stop_reason"];
  }
  ASSERT_FALSE(input.empty()) << r->body;
  EXPECT_EQ(json::parse(input), json::parse(R"({"a": 2, "b": 3})")) << r->body;
  EXPECT_EQ(stop, "tool_use");

  // The history: Anthropic's toolu_1 is the same nine characters in the call and its result.
  anthropic = {{"messages", json::parse(R"([{"role": "user", "content": "What is 2+3?"},
         {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "add",
           "input": {"a": 2, "b": 3}}]},
         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "5"}]}])")},
               {"tools", kAnthropicTools},
               {"max_tokens", 64}};
  r = t.post("/v1/messages/count_tokens", anthropic);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string id = runtime::nine_character_id("toolu_1");
  const json messages = json::parse(R"([{"role": "user", "content": "What is 2+3?"},
         {"role": "assistant", "content": null, "tool_calls": [{"id": ")" +
                                    id + R"(", "type": "function",
           "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}]},
         {"role": "tool", "tool_call_id": ")" +
                                    id + R"(", "content": "5"}])");
  const std::string rendered =
      runtime::ChatTemplate(source).render(messages, {{"tools", kTools}, {"add_generation_prompt", true}});
  EXPECT_NE(rendered.find("\"call_id\": \"" + id + "\"}"), std::string::npos) << rendered;
  EXPECT_EQ(json::parse(r->body)["input_tokens"], mx8::testing::tokens_of(rendered));
}

TEST(ToolUse, ATemplateWithoutToolsRefusesThem) {
  Served s;  // the plain template: no tools in its prompt, no calls in its turns
  const json body = {
      {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"tools", kTools}, {"max_tokens", 4}};
  auto r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("no place for tools in its prompt"), std::string::npos) << r->body;
  // tool_choice "none" offers nothing: the request is a plain one.
  json none = body;
  none["tool_choice"] = "none";
  r = s.post("/v1/chat/completions", none.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // A tool turn in the history needs a template that shows calls.
  const json history = {{"messages", json::parse(R"([{"role": "user", "content": "Hi"},
      {"role": "tool", "tool_call_id": "call_1", "content": "5"}])")},
                        {"max_tokens", 4}};
  r = s.post("/v1/chat/completions", history.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("does not show tool calls in a form mx8 reads"), std::string::npos) << r->body;
}

// The official client libraries read the calls (tests/server/sdk/tool_calls.mjs), as their users do.
TEST(ToolUse, OfficialClientLibrariesReadTheCalls) {
  if (const std::string why = mx8::testing::sdk_missing(); !why.empty()) GTEST_SKIP() << why;
  ToolServer t;
  t.reply(kCallReply, /*every_time=*/true);
  int status = -1;
  const std::string out = mx8::testing::run_node("tool_calls.mjs", t.served->port, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
}

}  // namespace
