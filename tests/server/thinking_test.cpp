// Reasoning through the HTTP server: a thinking model's <think> block comes back as OpenAI's
// reasoning_content and Anthropic's thinking blocks, whole and streamed, and the requests' switches
// (chat_template_kwargs, reasoning_effort, Anthropic thinking) reach the template. stories260K's greedy
// draws come from a script (scripted_server.h); the templates are small ones shaped like Qwen3's
// (thinking unless enable_thinking is false) and DeepSeek-R1's (the prompt opens the block).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "server/scripted_server.h"

namespace {

using namespace mx8;
using json = nlohmann::ordered_json;
using mx8::testing::ScriptedServer;
using mx8::testing::sse_data;
using mx8::testing::tokens_of;

const std::string kQwenLike = mx8::testing::hermes_template(
    "{% if enable_thinking is defined and enable_thinking is false %} <think></think>{% endif %}");
const char* kR1Like =
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: <think>{{ '\\n' }}{% endif %}";

const std::string kThinkingReply = "<think>\nI add 2 and 3.\n</think>\n\nIt is 5.";
const json kQuestion = json::array({{{"role", "user"}, {"content", "What is 2+3?"}}});

TEST(Thinking, OpenAiReasoningContentWholeAndStreamed) {
  ScriptedServer t(kQwenLike);
  json body = {{"messages", kQuestion}, {"max_tokens", 256}, {"temperature", 0}};
  t.reply(kThinkingReply);
  auto r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json message = json::parse(r->body)["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "I add 2 and 3.");
  EXPECT_EQ(message["content"], "It is 5.");

  body["stream"] = true;
  t.reply(kThinkingReply);
  r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  std::string reasoning, text;
  bool reasoning_first = true;
  for (const std::string& d : sse_data(r->body)) {
    if (d == "[DONE]") break;
    const json delta = json::parse(d)["choices"][0]["delta"];
    if (delta.contains("reasoning_content")) {
      reasoning += delta["reasoning_content"].get<std::string>();
      if (!text.empty()) reasoning_first = false;
    }
    if (delta.contains("content")) text += delta["content"].get<std::string>();
  }
  EXPECT_EQ(reasoning, "I add 2 and 3.");
  EXPECT_EQ(text, "It is 5.");
  EXPECT_TRUE(reasoning_first);
}

TEST(Thinking, TheSwitchesReachTheTemplate) {
  ScriptedServer t(kQwenLike);
  const std::string on = "user: What is 2+3?\nassistant:", off = on + " <think></think>";
  auto prompt_tokens = [&](const char* path, json body) {
    t.reply("Five.");
    auto r = t.post(path, body);
    EXPECT_TRUE(r);
    if (!r) return -1;
    EXPECT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);
    return int(j.contains("usage") && j["usage"].contains("input_tokens") ? j["usage"]["input_tokens"]
                                                                          : j["usage"]["prompt_tokens"]);
  };
  json body = {{"messages", kQuestion}, {"max_tokens", 64}, {"temperature", 0}};
  EXPECT_EQ(prompt_tokens("/v1/chat/completions", body), tokens_of(on));  // the template's default
  body["chat_template_kwargs"] = {{"enable_thinking", false}};
  EXPECT_EQ(prompt_tokens("/v1/chat/completions", body), tokens_of(off));
  body.erase("chat_template_kwargs");
  body["reasoning_effort"] = "none";
  EXPECT_EQ(prompt_tokens("/v1/chat/completions", body), tokens_of(off));
  body["reasoning_effort"] = "high";
  EXPECT_EQ(prompt_tokens("/v1/chat/completions", body), tokens_of(on));
  // Anthropic: no thinking unless asked for.
  json message = {{"messages", kQuestion}, {"max_tokens", 2048}, {"temperature", 0}};
  EXPECT_EQ(prompt_tokens("/v1/messages", message), tokens_of(off));
  message["thinking"] = {{"type", "enabled"}, {"budget_tokens", 1024}};
  EXPECT_EQ(prompt_tokens("/v1/messages", message), tokens_of(on));
}

TEST(Thinking, AnthropicThinkingBlocksWholeAndStreamed) {
  ScriptedServer t(kQwenLike);
  json body = {{"messages", kQuestion},
               {"max_tokens", 2048},
               {"temperature", 0},
               {"thinking", {{"type", "enabled"}, {"budget_tokens", 1024}}}};
  t.reply(kThinkingReply);
  auto r = t.post("/v1/messages", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["content"],
            json::parse(R"([{"type": "thinking", "thinking": "I add 2 and 3.",
      "signature": ""}, {"type": "text", "text": "It is 5."}])"));

  body["stream"] = true;
  t.reply(kThinkingReply);
  r = t.post("/v1/messages", body);
  ASSERT_TRUE(r);
  std::vector<std::string> names;
  const std::vector<std::string> data = sse_data(r->body, &names);
  std::vector<std::string> shape;
  std::string thinking, text;
  for (size_t i = 0; i < data.size(); ++i) {
    const json e = json::parse(data[i]);
    std::string what = names[i];
    if (e.contains("index")) what += " " + e["index"].dump();
    if (e.contains("content_block")) what += " " + e["content_block"]["type"].get<std::string>();
    if (names[i] == "content_block_delta") {
      what += " " + e["delta"]["type"].get<std::string>();
      if (e["delta"]["type"] == "thinking_delta") thinking += e["delta"]["thinking"].get<std::string>();
      if (e["delta"]["type"] == "text_delta") text += e["delta"]["text"].get<std::string>();
    }
    if (shape.empty() || shape.back() != what) shape.push_back(what);
  }
  const std::vector<std::string> expected = {"message_start",
                                             "ping",
                                             "content_block_start 0 thinking",
                                             "content_block_delta 0 thinking_delta",
                                             "content_block_stop 0",
                                             "content_block_start 1 text",
                                             "content_block_delta 1 text_delta",
                                             "content_block_stop 1",
                                             "message_delta",
                                             "message_stop"};
  EXPECT_EQ(shape, expected) << r->body;
  EXPECT_EQ(thinking, "I add 2 and 3.");
  EXPECT_EQ(text, "It is 5.");
}

TEST(Thinking, ReasoningThenAToolCall) {
  ScriptedServer t(kQwenLike);
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "add",
      "parameters": {"type": "object"}}}])");
  t.reply(
      "<think>\nI should call add.\n</think>\n\n<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": "
      "2}}</tool_call>");
  auto r = t.post("/v1/chat/completions",
                  {{"messages", kQuestion}, {"tools", tools}, {"max_tokens", 256}, {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json choice = json::parse(r->body)["choices"][0];
  EXPECT_EQ(choice["message"]["reasoning_content"], "I should call add.");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  EXPECT_EQ(choice["message"]["tool_calls"][0]["function"]["name"], "add");
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
}

TEST(Thinking, APromptThatOpensTheBlock) {
  ScriptedServer t(kR1Like);
  t.reply("Two and three.\n</think>\n\nFive.");
  auto r = t.post("/v1/chat/completions", {{"messages", kQuestion}, {"max_tokens", 256}, {"temperature", 0}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json message = json::parse(r->body)["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "Two and three.");
  EXPECT_EQ(message["content"], "Five.");
}

// A reasoning budget: the scripted model reasons on with no </think> of its own (the script goes on
// with the answer's text either way), and the budget's close turns the rest into the answer.
TEST(Thinking, ABudgetClosesTheReasoning) {
  ScriptedServer t(kQwenLike);
  // Byte tokens: "<think>" is 7, and the one that completes it is the budget's first; "\n" the second.
  json body = {{"messages", kQuestion}, {"max_tokens", 256}, {"temperature", 0}};
  t.reply("<think>\nabcIt is 5.");
  auto r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json message = json::parse(r->body)["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "abcIt is 5.");  // no budget: all of it is reasoning
  EXPECT_EQ(message["content"], "") << r->body;

  body["thinking_token_budget"] = 5;
  t.reply("<think>\nabcIt is 5.");
  r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  message = json::parse(r->body)["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "abc");
  EXPECT_EQ(message["content"], "It is 5.");

  body["stream"] = true;
  t.reply("<think>\nabcIt is 5.");
  r = t.post("/v1/chat/completions", body);
  ASSERT_TRUE(r);
  std::string reasoning, text;
  for (const std::string& d : sse_data(r->body)) {
    if (d == "[DONE]") break;
    const json delta = json::parse(d)["choices"][0]["delta"];
    if (delta.contains("reasoning_content")) reasoning += delta["reasoning_content"].get<std::string>();
    if (delta.contains("content")) text += delta["content"].get<std::string>();
  }
  EXPECT_EQ(reasoning, "abc");
  EXPECT_EQ(text, "It is 5.");

  for (const json& bad : {json(-1), json("5"), json(1.5)}) {
    body["thinking_token_budget"] = bad;
    r = t.post("/v1/chat/completions", body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_NE(r->body.find("thinking_token_budget"), std::string::npos) << r->body;
  }

  // Anthropic's budget_tokens (at least 1024): 1022 tokens of reasoning after "<think>" and "\n".
  std::string thought;
  while (thought.size() < 1022) thought += "abcdefghij";
  thought.resize(1022);
  t.reply("<think>\n" + thought + "It is 5.");
  r = t.post("/v1/messages", {{"messages", kQuestion},
                              {"max_tokens", 2048},
                              {"temperature", 0},
                              {"thinking", {{"type", "enabled"}, {"budget_tokens", 1024}}}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json content = json::parse(r->body)["content"];
  ASSERT_EQ(content.size(), 2u) << r->body;
  EXPECT_EQ(content[0]["thinking"], thought);
  EXPECT_EQ(content[1]["text"], "It is 5.");
}

TEST(Thinking, ABudgetWhereThePromptOpensTheBlock) {
  ScriptedServer t(kR1Like);
  t.reply("abFive.");
  auto r =
      t.post("/v1/chat/completions",
             {{"messages", kQuestion}, {"max_tokens", 64}, {"temperature", 0}, {"thinking_token_budget", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json message = json::parse(r->body)["choices"][0]["message"];
  EXPECT_EQ(message["reasoning_content"], "ab");
  EXPECT_EQ(message["content"], "Five.");
}

// The official client libraries read reasoning as their users do (tests/server/sdk/thinking.mjs).
TEST(Thinking, OfficialClientLibrariesReadTheReasoning) {
  if (const std::string why = mx8::testing::sdk_missing(); !why.empty()) GTEST_SKIP() << why;
  ScriptedServer t(kQwenLike);
  t.reply(kThinkingReply, /*every_time=*/true);
  int status = -1;
  const std::string out = mx8::testing::run_node("thinking.mjs", t.served->port, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("all checks passed"), std::string::npos) << out;
}

}  // namespace
