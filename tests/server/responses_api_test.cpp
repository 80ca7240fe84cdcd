// The OpenAI Responses dialect on its own (no model, no sockets): input items into the conversation the
// template takes, what is refused and with which field named, and the shapes of the whole response and
// of the stream's numbered events. (The official library reads the real server's responses in
// tests/server/sdk: sdk_clients.mjs, tool_calls.mjs, thinking.mjs.)
#include <gtest/gtest.h>

#include "mx8/server/api.h"

namespace {

using json = nlohmann::ordered_json;
using namespace mx8::server;

const std::unique_ptr<Dialect> kResponses = openai_responses_dialect();

ApiRequest parse(const json& body) {
  return kResponses->parse(body, {});
}

std::string refused_field(const json& body) {
  try {
    parse(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << e.what();
    return e.param();
  }
  ADD_FAILURE() << "accepted: " << body.dump();
  return "";
}

TEST(OpenAiResponses, InputItemsBecomeTheConversation) {
  ApiRequest r =
      parse({{"input", "Hi"}, {"instructions", "Be brief."}, {"max_output_tokens", 9}, {"temperature", 0}});
  EXPECT_EQ(
      r.messages,
      json::parse(R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])"));
  EXPECT_EQ(r.max_tokens, 9);
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_FALSE(r.stream);

  // Messages (a developer turn is a system turn; parts of input_text and output_text), a reasoning item
  // that goes with the assistant turn after it, calls that join that turn, and their outputs.
  r = parse({{"input", json::parse(R"([
      {"role": "developer", "content": "Use tools."},
      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What is "},
                                                       {"type": "input_text", "text": "2+3?"}]},
      {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Add."}]},
      {"role": "assistant", "content": [{"type": "output_text", "text": "Let me add."}]},
      {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": "{\"a\": 2}"},
      {"type": "function_call", "call_id": "call_2", "name": "add", "arguments": "{\"a\": 3}"},
      {"type": "function_call_output", "call_id": "call_1", "output": "5"},
      {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "6"}]}])")}});
  EXPECT_EQ(r.messages, json::parse(R"([
      {"role": "system", "content": "Use tools."},
      {"role": "user", "content": "What is 2+3?"},
      {"role": "assistant", "content": "Let me add.", "reasoning_content": "Add.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": {"a": 2}}},
        {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": {"a": 3}}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "5"},
      {"role": "tool", "tool_call_id": "call_2", "content": "6"}])"));

  // Tools are flat; strict ones are held; tool_choice names a function directly; reasoning.effort and
  // text.format as chat's reasoning_effort and response_format.
  r = parse({{"input", "Hi"},
             {"tools", json::parse(R"([{"type": "function", "name": "add", "parameters": {"type": "object",
                 "properties": {"a": {"type": "integer"}}, "required": ["a"]}, "strict": true}])")},
             {"tool_choice", {{"type", "function"}, {"name", "add"}}},
             {"parallel_tool_calls", false},
             {"reasoning", {{"effort", "minimal"}}},
             {"text", {{"format", {{"type", "json_object"}}}}}});
  EXPECT_EQ(r.tools.tools[0]["function"]["name"], "add");
  EXPECT_EQ(r.tools.choice, ToolRequest::Choice::named);
  EXPECT_EQ(r.tools.name, "add");
  EXPECT_FALSE(r.tools.parallel);
  EXPECT_EQ(r.tools.strict_calls.size(), 1u);
  EXPECT_EQ(r.template_variables, json::parse(R"({"enable_thinking": false, "thinking": false})"));
  EXPECT_NE(r.json_output, nullptr);
  EXPECT_EQ(r.json_output_field, "text.format");
}

TEST(OpenAiResponses, RefusesWhatItCannotDoNamingTheField) {
  EXPECT_EQ(refused_field(json::object()), "input");
  EXPECT_EQ(refused_field({{"input", json::array()}}), "input");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"previous_response_id", "resp_1"}}), "previous_response_id");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"background", true}}), "background");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"tools", json::parse(R"([{"type": "web_search"}])")}}),
            "tools[0].type");
  EXPECT_EQ(refused_field({{"input", json::parse(R"([{"type": "item_reference", "id": "msg_1"}])")}}),
            "input[0].type");
  EXPECT_EQ(refused_field({{"input", json::parse(R"([{"role": "user", "content": [{"type": "input_image",
      "image_url": "x"}]}])")}}),
            "input[0].content[0]");
  EXPECT_EQ(refused_field({{"input", json::parse(R"([{"role": "tool", "content": "x"}])")}}),
            "input[0].role");
  EXPECT_EQ(refused_field({{"input", json::parse(R"([{"type": "function_call", "call_id": "c", "name": "f",
      "arguments": "[1]"}])")}}),
            "input[0].arguments");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"max_output_tokens", 0}}), "max_output_tokens");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"temperature", 2.5}}), "temperature");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"reasoning", {{"effort", "huge"}}}}), "reasoning.effort");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"text", {{"format", {{"type", "yaml"}}}}}}), "text.format.type");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"tool_choice", {{"type", "function"}, {"name", "nope"}}}}),
            "tool_choice");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"instructions", 3}}), "instructions");
  EXPECT_EQ(refused_field({{"input", json::parse(R"([{"role": "system", "content": "x"}])")}}), "input");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"top_logprobs", 21}}), "top_logprobs");
  EXPECT_EQ(refused_field({{"input", "Hi"}, {"include", {1}}}), "include");
}

// include ["message.output_text.logprobs"] or top_logprobs asks for log-probabilities; other include
// values are outputs this server does not make.
TEST(OpenAiResponses, LogprobsAreAskedForByIncludeOrTopLogprobs) {
  EXPECT_EQ(parse({{"input", "Hi"}}).logprobs, -1);
  EXPECT_EQ(parse({{"input", "Hi"}, {"include", {"reasoning.encrypted_content"}}}).logprobs, -1);
  EXPECT_EQ(parse({{"input", "Hi"}, {"include", {"message.output_text.logprobs"}}}).logprobs, 0);
  EXPECT_EQ(parse({{"input", "Hi"}, {"top_logprobs", 3}}).logprobs, 3);
  EXPECT_EQ(
      parse({{"input", "Hi"}, {"include", {"message.output_text.logprobs"}}, {"top_logprobs", 2}}).logprobs,
      2);
}

ApiResult result(std::string text, StopReason reason) {
  ApiResult r;
  r.text = std::move(text);
  r.reason = reason;
  r.prompt_tokens = 7;
  r.completion_tokens = 5;
  return r;
}

TEST(OpenAiResponses, WholeResponses) {
  const ResponseMeta m{"resp_ab", "m", 42};
  json out = kResponses->response(m, result("Hello", StopReason::end_of_turn));
  EXPECT_EQ(out["object"], "response");
  EXPECT_EQ(out["status"], "completed");
  EXPECT_EQ(out["created_at"], 42);
  EXPECT_EQ(out["output"], json::parse(R"([{"type": "message", "id": "msg_ab_0", "status": "completed",
      "role": "assistant", "content": [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]}])"));
  EXPECT_EQ(out["usage"]["total_tokens"], 12);

  ApiResult r = result("", StopReason::end_of_turn);
  r.reasoning = "Add.";
  r.tool_calls.push_back({"call_9", "add", json{{"a", 2}}});
  out = kResponses->response(m, r);
  ASSERT_EQ(out["output"].size(), 2u) << out;  // reasoning, the call (no empty message beside a call)
  EXPECT_EQ(out["output"][0]["type"], "reasoning");
  EXPECT_EQ(out["output"][0]["content"][0]["text"], "Add.");
  EXPECT_EQ(out["output"][1], json::parse(R"({"type": "function_call", "id": "fc_ab_1", "call_id": "call_9",
      "name": "add", "arguments": "{\"a\": 2}", "status": "completed"})"));

  out = kResponses->response(m, result("Hel", StopReason::max_tokens));
  EXPECT_EQ(out["status"], "incomplete");
  EXPECT_EQ(out["incomplete_details"]["reason"], "max_output_tokens");
  EXPECT_EQ(out["output"][0]["status"], "incomplete");  // the message the limit cut
  EXPECT_EQ(kResponses->error_body(400, "bad", "input")["error"]["param"], "input");
}

// The stream's events in order, each numbered from 0 in its sequence_number, and the last one holding
// the whole response.
TEST(OpenAiResponses, StreamEventsAreNumberedAndEndWithTheWholeResponse) {
  const ResponseMeta m{"resp_ab", "m", 42};
  std::vector<StreamState> st(1);
  std::string s = kResponses->stream_start(m, 7, st);
  s += kResponses->stream_reasoning(m, 0, "Add.", st[0]);
  s += kResponses->stream_text(m, 0, "Let ", nullptr, st[0]);
  s += kResponses->stream_text(m, 0, "me.", nullptr, st[0]);
  s += kResponses->stream_tool_call(m, 0, {"call_9", "add", json{{"a", 2}}}, st[0]);
  s += kResponses->stream_choice_end(m, 0, result("", StopReason::end_of_turn), st[0]);
  s += kResponses->stream_end(m, result("", StopReason::end_of_turn), false);
  std::vector<std::string> types;
  json last;
  for (size_t at = s.find("data: "); at != std::string::npos; at = s.find("data: ", at + 1)) {
    const json e = json::parse(s.substr(at + 6, s.find('\n', at) - at - 6));
    EXPECT_EQ(e["sequence_number"], types.size()) << e;
    types.push_back(e["type"]);
    last = e;
  }
  const std::vector<std::string> expected = {"response.created",
                                             "response.in_progress",
                                             "response.output_item.added",
                                             "response.content_part.added",
                                             "response.reasoning_text.delta",
                                             "response.reasoning_text.done",
                                             "response.content_part.done",
                                             "response.output_item.done",
                                             "response.output_item.added",
                                             "response.content_part.added",
                                             "response.output_text.delta",
                                             "response.output_text.delta",
                                             "response.output_text.done",
                                             "response.content_part.done",
                                             "response.output_item.done",
                                             "response.output_item.added",
                                             "response.function_call_arguments.delta",
                                             "response.function_call_arguments.done",
                                             "response.output_item.done",
                                             "response.completed"};
  EXPECT_EQ(types, expected);
  const json whole = last["response"];
  EXPECT_EQ(whole["status"], "completed");
  ASSERT_EQ(whole["output"].size(), 3u) << whole;
  EXPECT_EQ(whole["output"][0]["content"][0]["text"], "Add.");
  EXPECT_EQ(whole["output"][1]["content"][0]["text"], "Let me.");
  EXPECT_EQ(whole["output"][2]["name"], "add");
  EXPECT_EQ(whole["usage"]["input_tokens"], 7);
  EXPECT_EQ(whole["usage"]["output_tokens"], 5);
}

// Streamed, the log-probabilities of tokens that wrote no text (here the reasoning's) come with the
// next text delta; the .done events and the last event's message list them all, as the whole response
// does.
TEST(OpenAiResponses, StreamedLogprobsFollowTheText) {
  const ResponseMeta m{"resp_ab", "m", 42};
  std::vector<StreamState> st(1);
  const std::vector<TokenLogprob> think = {{"Add", 0, -0.5f, {{"Add", -0.5f}}}};
  const std::vector<TokenLogprob> hi = {{"Hi", 0, -0.25f, {{"Hi", -0.25f}}}, {"!", 2, -1.0f, {{"!", -1.0f}}}};
  std::string s = kResponses->stream_start(m, 7, st);
  s += kResponses->stream_reasoning(m, 0, "Add", st[0]);
  EXPECT_EQ(kResponses->stream_text(m, 0, "", &think, st[0]), "");  // nothing to send yet
  s += kResponses->stream_text(m, 0, "Hi!", &hi, st[0]);
  s += kResponses->stream_choice_end(m, 0, result("", StopReason::end_of_turn), st[0]);
  std::vector<json> delta_lps, done_lps;
  json last;
  for (size_t at = s.find("data: "); at != std::string::npos; at = s.find("data: ", at + 1)) {
    last = json::parse(s.substr(at + 6, s.find('\n', at) - at - 6));
    if (last["type"] == "response.output_text.delta") delta_lps.push_back(last["logprobs"]);
    if (last["type"] == "response.output_text.done") done_lps.push_back(last["logprobs"]);
  }
  const json all = openai_token_logprobs({think[0], hi[0], hi[1]});
  ASSERT_EQ(delta_lps.size(), 1u);
  EXPECT_EQ(delta_lps[0], all);
  ASSERT_EQ(done_lps.size(), 1u);
  EXPECT_EQ(done_lps[0], all);
  EXPECT_EQ(last["response"]["output"][1]["content"][0]["logprobs"], all);
  EXPECT_EQ(all[1], json::parse(R"({"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
      "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}]})"));

  // A call after the text: its tokens' entries come in the last event's message, as a whole response
  // lists them, though the message's own events have ended.
  std::vector<StreamState> st2(1);
  const std::vector<TokenLogprob> call = {{"<tool_call>", 3, -0.125f, {}}};
  s = kResponses->stream_start(m, 7, st2);
  s += kResponses->stream_text(m, 0, "Hi!", &hi, st2[0]);
  s += kResponses->stream_text(m, 0, "", &call, st2[0]);
  s += kResponses->stream_tool_call(m, 0, {"call_9", "add", json{{"a", 2}}}, st2[0]);
  s += kResponses->stream_choice_end(m, 0, result("", StopReason::end_of_turn), st2[0]);
  last =
      json::parse(s.substr(s.rfind("data: ") + 6, s.find('\n', s.rfind("data: ")) - s.rfind("data: ") - 6));
  EXPECT_EQ(last["response"]["output"][0]["content"][0]["logprobs"],
            openai_token_logprobs({hi[0], hi[1], call[0]}));
}

}  // namespace
