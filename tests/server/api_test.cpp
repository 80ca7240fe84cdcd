// The API dialects on their own (no model, no sockets): what each request field becomes, which
// requests are refused and with which field named, and the shape of responses and streamed events.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mx8/server/api.h"

namespace {

using json = nlohmann::ordered_json;
using mx8::server::ApiError;
using mx8::server::ApiRequest;
using mx8::server::ApiResult;
using mx8::server::Dialect;
using mx8::server::openai_chat_dialect;
using mx8::server::openai_completion_dialect;
using mx8::server::ResponseMeta;
using mx8::server::StopReason;
using mx8::server::StreamState;
using mx8::server::TokenLogprob;

mx8::runtime::SamplingParams defaults() {
  mx8::runtime::SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 7;
  return p;
}

// The field an ApiError names, or "" when parse succeeds (then the test fails).
std::string refused_field(const Dialect& d, const json& body) {
  try {
    d.parse(body, defaults());
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << e.what();
    return e.param().empty() ? "(none)" : e.param();
  }
  ADD_FAILURE() << "accepted: " << body.dump();
  return "";
}

// The data of each server-sent event, in order, and the event names ("" where none).
const ResponseMeta kMeta{"id-1", "tiny", 1700000000};

struct Events {
  std::vector<std::string> names;
  std::vector<std::string> data;
};
Events parse_sse(const std::string& s) {
  Events ev;
  size_t at = 0;
  while (at < s.size()) {
    const size_t end = s.find("\n\n", at);
    EXPECT_NE(end, std::string::npos) << "an event does not end with a blank line: " << s.substr(at);
    if (end == std::string::npos) break;
    const std::string block = s.substr(at, end - at);
    std::string name, data;
    size_t line = 0;
    while (line < block.size()) {
      size_t nl = block.find('\n', line);
      if (nl == std::string::npos) nl = block.size();
      const std::string l = block.substr(line, nl - line);
      if (l.rfind("event: ", 0) == 0) name = l.substr(7);
      if (l.rfind("data: ", 0) == 0) data = l.substr(6);
      line = nl + 1;
    }
    ev.names.push_back(name);
    ev.data.push_back(data);
    at = end + 2;
  }
  return ev;
}

// What a stream of choice `index` (of `choices`) sends, in the server's order: the opening, `pieces` of
// its text, its end (`r`), and where `end_usage` is set the response's end (with usage or not).
Events stream_of(const Dialect& d, size_t choices, int index, const std::vector<std::string>& pieces,
                 const ApiResult& r, std::optional<bool> end_usage) {
  std::vector<StreamState> st(choices);
  std::string s = d.stream_start(kMeta, r.prompt_tokens, st);
  for (const std::string& p : pieces) s += d.stream_text(kMeta, index, p, nullptr, st.at(index));
  s += d.stream_choice_end(kMeta, index, r, st.at(index));
  if (end_usage) s += d.stream_end(kMeta, r, *end_usage);
  return parse_sse(s);
}

TEST(OpenAiChat, ReadsMessagesSamplingAndLimits) {
  auto d = mx8::server::openai_chat_dialect();
  ApiRequest r = d->parse(json::parse(R"({
      "model": "whatever", "user": "ignored",
      "messages": [{"role": "developer", "content": "Be brief."},
                   {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                   {"role": "assistant", "content": null},
                   {"role": "user", "content": "Again"}],
      "temperature": 0, "top_p": 0.9, "frequency_penalty": 0.5, "presence_penalty": -1, "seed": 42,
      "max_tokens": 10, "max_completion_tokens": 20, "stop": "END", "stream": true,
      "stream_options": {"include_usage": true}, "n": 1, "logprobs": false,
      "min_p": 0.05, "repetition_penalty": 1.25})"),
                          defaults());
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0], json({{"role", "system"}, {"content", "Be brief."}}));
  EXPECT_EQ(r.messages[1]["content"], "Hi there");
  EXPECT_EQ(r.messages[2]["content"], "");
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 7);  // not in the request: the server's setting
  EXPECT_EQ(r.sampling.frequency_penalty, 0.5f);
  EXPECT_EQ(r.sampling.presence_penalty, -1.0f);
  EXPECT_EQ(r.sampling.seed, 42u);
  EXPECT_EQ(r.sampling.min_p, 0.05f);  // extensions other servers also read
  EXPECT_EQ(r.sampling.repetition_penalty, 1.25f);
  EXPECT_TRUE(r.seeded);
  EXPECT_EQ(r.max_tokens, 20);  // max_completion_tokens wins over the older max_tokens
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.prompts.empty());
}

TEST(OpenAiChat, UnseededRequestsDrawTheirOwnSeeds) {
  auto d = mx8::server::openai_chat_dialect();
  const json body = json::parse(R"({"messages": [{"role": "user", "content": "x"}]})");
  const ApiRequest a = d->parse(body, defaults()), b = d->parse(body, defaults());
  EXPECT_FALSE(a.seeded);
  EXPECT_NE(a.sampling.seed, b.sampling.seed);  // equal with probability 2^-64
  EXPECT_EQ(a.sampling.temperature, 0.5f);
  EXPECT_FALSE(a.max_tokens.has_value());
}

TEST(OpenAiChat, RefusesWhatItCannotDoNamingTheField) {
  auto d = mx8::server::openai_chat_dialect();
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  auto with = [&](const std::string& extra) { return json::parse("{" + user + ", " + extra + "}"); };
  EXPECT_EQ(refused_field(*d, json::parse("{}")), "messages");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": []})")), "messages");
  EXPECT_EQ(refused_field(*d, json::parse("[1, 2]")), "(none)");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"role": "tool", "content": "x"}]})")),
            "messages[0].tool_call_id");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"role": "robot", "content": "x"}]})")),
            "messages[0].role");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"role": "user"}]})")), "messages[0].content");
  EXPECT_EQ(refused_field(
                *d, json::parse(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})")),
            "messages[0].content[0]");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"role": "user", "content": 5}]})")),
            "messages[0].content");
  // A message that is not an object, has no role, or a role that is not a string.
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": ["hi"]})")), "messages[0]");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"content": "x"}]})")), "messages[0]");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"role": 3, "content": "x"}]})")), "messages[0]");
  EXPECT_EQ(refused_field(*d, with(R"("temperature": 2.5)")), "temperature");
  EXPECT_EQ(refused_field(*d, with(R"("temperature": "hot")")), "temperature");
  EXPECT_EQ(refused_field(*d, with(R"("top_p": -0.1)")), "top_p");
  EXPECT_EQ(refused_field(*d, with(R"("frequency_penalty": 3)")), "frequency_penalty");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 0)")), "max_tokens");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 1.5)")), "max_tokens");
  EXPECT_EQ(refused_field(*d, with(R"("seed": 18446744073709551615)")), "seed");
  EXPECT_EQ(refused_field(*d, with(R"("stop": ["a", "b", "c", "d", "e"])")), "stop");
  EXPECT_EQ(refused_field(*d, with(R"("stop": [""])")), "stop");
  EXPECT_EQ(refused_field(*d, with(R"("stop": 3)")), "stop");
  EXPECT_EQ(refused_field(*d, with(R"("stream": "yes")")), "stream");
  EXPECT_EQ(refused_field(*d, with(R"("n": 0)")), "n");
  EXPECT_EQ(refused_field(*d, with(R"("n": 129)")), "n");
  EXPECT_EQ(refused_field(*d, with(R"("logprobs": "yes")")), "logprobs");
  EXPECT_EQ(refused_field(*d, with(R"("top_logprobs": 2)")), "top_logprobs");  // without logprobs: true
  EXPECT_EQ(refused_field(*d, with(R"("logprobs": true, "top_logprobs": 21)")), "top_logprobs");
  EXPECT_EQ(refused_field(*d, with(R"("tools": [{"type": "function"}])")), "tools[0].function");
  EXPECT_EQ(refused_field(*d, with(R"("response_format": {"type": "xml"})")), "response_format.type");
  EXPECT_EQ(refused_field(*d, with(R"("response_format": {"type": 5})")), "response_format");  // not a 500
  // Accepted: empty tool lists, text response formats, nulls for optional fields.
  EXPECT_NO_THROW(
      d->parse(with(R"("tools": [], "response_format": {"type": "text"}, "stop": null)"), defaults()));
}

// What the server cannot do, each refused rather than silently ignored: the legacy function calling,
// other output modalities.
TEST(OpenAiChat, RefusesFunctionsAndModalities) {
  auto d = mx8::server::openai_chat_dialect();
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  auto with = [&](const std::string& extra) { return json::parse("{" + user + ", " + extra + "}"); };
  EXPECT_EQ(refused_field(*d, with(R"("functions": [{"name": "f", "parameters": {}}])")), "functions");
  EXPECT_EQ(refused_field(*d, with(R"("function_call": "auto")")), "function_call");
  EXPECT_EQ(refused_field(*d, with(R"("function_call": {"name": "f"})")), "function_call");
  EXPECT_EQ(refused_field(*d, with(R"("modalities": ["text", "audio"])")), "modalities");
  EXPECT_EQ(refused_field(*d, with(R"("modalities": "audio")")), "modalities");
  EXPECT_EQ(refused_field(*d, with(R"("audio": {"voice": "alloy", "format": "wav"})")), "audio");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"role": "user", "content": "x"},
      {"role": "assistant", "content": null, "function_call": {"name": "f", "arguments": "{}"}}]})")),
            "messages[1].function_call");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"messages": [{"role": "function", "name": "f",
      "content": "1"}]})")),
            "messages[0].role");
  // Accepted: what asks for nothing the server lacks.
  EXPECT_NO_THROW(d->parse(with(R"("functions": [], "function_call": "none", "modalities": ["text"],
                                   "audio": null)"),
                           defaults()));
  EXPECT_NO_THROW(d->parse(json::parse(R"({"messages": [{"role": "user", "content": "x"},
      {"role": "assistant", "content": "y", "tool_calls": []}]})"),
                           defaults()));
}

// logit_bias: token ids as decimal keys, biases from -100 to 100, into SamplingParams::logit_bias; a key
// that is no id, a bias out of range or not a number, or a value that is no object is refused naming the
// field. Absent or null keeps the server's default biases; {} clears them. (Ids past the vocabulary are
// refused by the generation service, which knows the model: service_test.)
TEST(OpenAiChat, LogitBiasIsReadAndChecked) {
  auto d = mx8::server::openai_chat_dialect();
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  auto with = [&](const std::string& extra) { return json::parse("{" + user + ", " + extra + "}"); };
  const auto r = d->parse(with(R"("logit_bias": {"300": 1.5, "7": -100, "2147483647": 100})"), defaults());
  using Bias = std::vector<std::pair<int32_t, float>>;
  EXPECT_EQ(r.sampling.logit_bias, (Bias{{300, 1.5f}, {7, -100.0f}, {2147483647, 100.0f}}));
  for (const char* bias : {R"({"300": 100.5})", R"({"300": -101})", R"({"x": 5})", R"({"-3": 5})",
                           R"({"": 5})", R"({"2147483648": 5})", R"({"12345678901": 5})", R"({"3.0": 5})",
                           R"({"300": "a"})", R"({"300": null})", R"("x")", R"([1, 2])"})
    EXPECT_EQ(refused_field(*d, with(std::string(R"("logit_bias": )") + bias)), "logit_bias") << bias;
  mx8::runtime::SamplingParams server_default = defaults();
  server_default.logit_bias = {{5, -100.0f}};
  EXPECT_EQ(d->parse(with(R"("logit_bias": null)"), server_default).sampling.logit_bias,
            (Bias{{5, -100.0f}}));
  EXPECT_EQ(d->parse(with(R"("temperature": 0)"), server_default).sampling.logit_bias, (Bias{{5, -100.0f}}));
  EXPECT_EQ(d->parse(with(R"("logit_bias": {})"), server_default).sampling.logit_bias, Bias{});
  auto c = openai_completion_dialect();
  EXPECT_EQ(c->parse(json::parse(R"({"prompt": "a", "logit_bias": {"50256": -100}})"), defaults())
                .sampling.logit_bias,
            (Bias{{50256, -100.0f}}));
}

TEST(OpenAiChat, ResponseAndStreamShapes) {
  auto d = mx8::server::openai_chat_dialect();
  ApiResult r{"Hello", StopReason::max_tokens, "", 5, 3, std::nullopt};
  const json full = d->response(kMeta, r);
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["id"], "id-1");
  EXPECT_EQ(full["model"], "tiny");
  EXPECT_EQ(full["choices"][0]["message"], json({{"role", "assistant"}, {"content", "Hello"}}));
  EXPECT_EQ(full["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(full["usage"], json({{"prompt_tokens", 5}, {"completion_tokens", 3}, {"total_tokens", 8}}));
  r.reason = StopReason::stop_sequence;
  EXPECT_EQ(d->response(kMeta, r)["choices"][0]["finish_reason"], "stop");
  r.reason = StopReason::end_of_turn;
  EXPECT_EQ(d->response(kMeta, r)["choices"][0]["finish_reason"], "stop");

  const Events ev = stream_of(*d, 1, 0, {"Hel", "lo"}, r, true);
  ASSERT_EQ(ev.data.size(), 6u);
  EXPECT_EQ(json::parse(ev.data[0])["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(json::parse(ev.data[1])["choices"][0]["delta"]["content"], "Hel");
  EXPECT_EQ(json::parse(ev.data[1])["object"], "chat.completion.chunk");
  EXPECT_TRUE(json::parse(ev.data[2])["choices"][0]["finish_reason"].is_null());
  EXPECT_EQ(json::parse(ev.data[3])["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(json::parse(ev.data[4])["choices"], json::array());
  EXPECT_EQ(json::parse(ev.data[4])["usage"]["total_tokens"], 8);
  EXPECT_EQ(ev.data[5], "[DONE]");
  // Without include_usage there is no usage chunk.
  EXPECT_EQ(parse_sse(d->stream_end(kMeta, r, false)).data.size(), 1u);

  // n choices: numbered in the response, a role chunk each when streamed; the usage is the total's.
  EXPECT_EQ(
      d->parse(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "n": 3})"), defaults()).n, 3);
  const ApiResult a{"A", StopReason::end_of_turn, "", 5, 1, std::nullopt},
      b{"BB", StopReason::max_tokens, "", 5, 2, std::nullopt},
      total{"", StopReason::none, "", 5, 3, std::nullopt};
  const json two = d->response(kMeta, {a, b}, total);
  ASSERT_EQ(two["choices"].size(), 2u);
  EXPECT_EQ(two["choices"][1]["index"], 1);
  EXPECT_EQ(two["choices"][1]["message"]["content"], "BB");
  EXPECT_EQ(two["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(two["usage"], json({{"prompt_tokens", 5}, {"completion_tokens", 3}, {"total_tokens", 8}}));
  const Events ev2 = stream_of(*d, 2, 1, {"BB"}, b, std::nullopt);
  ASSERT_EQ(ev2.data.size(), 4u);
  EXPECT_EQ(json::parse(ev2.data[1])["choices"][0]["index"], 1);
  EXPECT_EQ(json::parse(ev2.data[1])["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(json::parse(ev2.data[2])["choices"][0]["index"], 1);
  EXPECT_EQ(json::parse(ev2.data[3])["choices"][0]["finish_reason"], "length");
}

TEST(OpenAiChat, ErrorShape) {
  auto d = mx8::server::openai_chat_dialect();
  const json e = d->error_body(400, "bad", "temperature");
  EXPECT_EQ(e["error"]["message"], "bad");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "temperature");
  EXPECT_EQ(d->error_body(429, "busy", "")["error"]["type"], "rate_limit_exceeded");
  EXPECT_TRUE(d->error_body(500, "x", "")["error"]["param"].is_null());
}

TEST(OpenAiCompletion, PromptAndRefusals) {
  auto d = mx8::server::openai_completion_dialect();
  EXPECT_EQ(*d->parse(json::parse(R"({"prompt": "Once"})"), defaults()).prompts.at(0).text, "Once");
  EXPECT_EQ(*d->parse(json::parse(R"({"prompt": ["Once"], "echo": false, "best_of": 1})"), defaults())
                 .prompts.at(0)
                 .text,
            "Once");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": [1, -2]})")), "prompt");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": [1, 2.5]})")), "prompt");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": []})")), "prompt");
  EXPECT_EQ(*d->parse(json::parse(R"({"prompt": [1, 2]})"), defaults()).prompts.at(0).ids,
            (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(*d->parse(json::parse(R"({"prompt": [[7]]})"), defaults()).prompts.at(0).ids,
            (std::vector<int32_t>{7}));
  // Several prompts: n choices each (streamed too), best_of only equal to n.
  const ApiRequest many = d->parse(json::parse(R"({"prompt": ["a", [5, 6], "b"]})"), defaults());
  ASSERT_EQ(many.prompts.size(), 3u);
  EXPECT_EQ(*many.prompts[0].text, "a");
  EXPECT_EQ(*many.prompts[1].ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(
      d->parse(json::parse(R"({"prompt": ["a", "b"], "stream": true, "n": 2, "best_of": 2})"), defaults())
          .prompts.size(),
      2u);
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": "a", "n": 2, "best_of": 3})")), "best_of");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": ["a", [1, -1]]})")), "prompt");
  const json both = d->response(kMeta,
                                {{"x", StopReason::max_tokens, "", 2, 1, std::nullopt},
                                 {"yz", StopReason::end_of_turn, "", 3, 2, std::nullopt}},
                                {"", StopReason::none, "", 5, 3, std::nullopt});
  ASSERT_EQ(both["choices"].size(), 2u);
  EXPECT_EQ(both["choices"][1]["index"], 1);
  EXPECT_EQ(both["choices"][1]["text"], "yz");
  EXPECT_EQ(both["choices"][1]["finish_reason"], "stop");
  EXPECT_EQ(both["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(both["usage"]["completion_tokens"], 3);
  EXPECT_EQ(refused_field(*d, json::parse("{}")), "prompt");
  EXPECT_TRUE(d->parse(json::parse(R"({"prompt": "a", "echo": true, "stream": true})"), defaults()).echo);
  EXPECT_TRUE(d->parse(json::parse(R"({"prompt": "a", "echo": true})"), defaults()).echo);
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": "a", "suffix": "z"})")), "suffix");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": "a", "logprobs": 6})")), "logprobs");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"prompt": "a", "logprobs": true})")), "logprobs");

  const ApiResult r{" upon", StopReason::end_of_turn, "", 2, 1, std::nullopt};
  const json full = d->response(kMeta, r);
  EXPECT_EQ(full["object"], "text_completion");
  EXPECT_EQ(full["choices"][0]["text"], " upon");
  EXPECT_EQ(full["choices"][0]["finish_reason"], "stop");
  const Events ev = stream_of(*d, 2, 1, {" upon"}, r, false);
  ASSERT_EQ(ev.data.size(), 3u);
  EXPECT_EQ(json::parse(ev.data[0])["choices"][0]["text"], " upon");
  EXPECT_EQ(json::parse(ev.data[0])["choices"][0]["index"], 1);
  EXPECT_EQ(json::parse(ev.data[1])["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(json::parse(ev.data[1])["choices"][0]["index"], 1);
  EXPECT_EQ(ev.data[2], "[DONE]");
}

TEST(Anthropic, ReadsSystemTurnsPrefillAndSampling) {
  auto d = mx8::server::anthropic_dialect();
  ApiRequest r = d->parse(json::parse(R"({
      "model": "claude-x", "max_tokens": 64, "metadata": {"user_id": "u"},
      "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "kind."}],
      "messages": [{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
                   {"role": "user", "content": "Tell me"},
                   {"role": "assistant", "content": "Once"}],
      "temperature": 1, "top_k": 3, "top_p": 0.5, "stop_sequences": ["\n\n", "END"], "stream": false})"),
                          defaults());
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0], json({{"role", "system"}, {"content", "Be kind."}}));
  EXPECT_EQ(r.messages[2]["content"], "Hello!");
  EXPECT_EQ(r.messages[3]["role"], "user");
  EXPECT_EQ(r.assistant_prefix, "Once");  // the last assistant turn is a prefill, not history
  EXPECT_EQ(r.max_tokens, 64);
  EXPECT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "END"}));
  EXPECT_FALSE(r.stream);
}

TEST(Anthropic, RefusesWhatItCannotDoNamingTheField) {
  auto d = mx8::server::anthropic_dialect();
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  auto with = [&](const std::string& extra) { return json::parse("{" + user + ", " + extra + "}"); };
  EXPECT_EQ(refused_field(*d, json::parse("{" + user + "}")), "max_tokens");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 10, "temperature": 1.5)")), "temperature");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 10, "top_k": -1)")), "top_k");
  EXPECT_EQ(refused_field(
                *d, json::parse(R"({"max_tokens": 10, "messages": [{"role": "system", "content": "x"}]})")),
            "messages.0.role");
  EXPECT_EQ(
      refused_field(
          *d, json::parse(
                  R"({"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "image"}]}]})")),
      "messages.0.content.0");
  EXPECT_EQ(
      refused_field(
          *d, json::parse(R"({"max_tokens": 10, "messages": [{"role": "assistant", "content": "x"}]})")),
      "messages");  // only a prefill: no user turn
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 10, "tools": [{"name": "f"}])")), "tools.0.input_schema");
  // Extended thinking: refused unless disabled (the server produces no thinking blocks).
  // Thinking: a budget of 1024 or more and below max_tokens, as Anthropic's API wants it.
  EXPECT_EQ(
      refused_field(*d, with(R"("max_tokens": 10, "thinking": {"type": "enabled", "budget_tokens": 1024})")),
      "thinking.budget_tokens");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 2000, "thinking": {"type": "enabled"})")),
            "thinking.budget_tokens");
  EXPECT_EQ(
      refused_field(*d, with(R"("max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 100})")),
      "budget_tokens");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 10, "thinking": {"type": "adaptive"})")), "thinking");
  EXPECT_EQ(d->parse(with(R"("max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024})"),
                     defaults())
                .template_variables,
            json::parse(R"({"enable_thinking": true, "thinking": true})"));
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 10, "thinking": "yes")")), "thinking");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 10, "thinking": {})")), "thinking");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 10, "thinking": {"type": 1})")), "thinking");
  EXPECT_EQ(
      d->parse(with(R"("max_tokens": 10, "thinking": {"type": "disabled"})"), defaults()).template_variables,
      json::parse(R"({"enable_thinking": false, "thinking": false})"));
  EXPECT_EQ(refused_field(*d, json::parse(R"({"max_tokens": 10})")), "messages");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"max_tokens": 10, "messages": []})")), "messages");
  // A message that is not an object, has no role, or a role that is not a string.
  EXPECT_EQ(refused_field(*d, json::parse(R"({"max_tokens": 10, "messages": ["hi"]})")), "messages.0");
  EXPECT_EQ(refused_field(*d, json::parse(R"({"max_tokens": 10, "messages": [{"content": "x"}]})")),
            "messages.0");
  EXPECT_EQ(
      refused_field(*d, json::parse(R"({"max_tokens": 10, "messages": [{"role": 2, "content": "x"}]})")),
      "messages.0");
}

// The ends of the ranges are inclusive: max_tokens 1 and 2^30 are taken, 0 and 2^30 + 1 are not; up
// to 64 stop sequences, not 65. The refusal says what the range is.
TEST(Anthropic, RangeEndsAreExact) {
  auto d = mx8::server::anthropic_dialect();
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  auto with = [&](const std::string& extra) { return json::parse("{" + user + ", " + extra + "}"); };
  EXPECT_EQ(d->parse(with(R"("max_tokens": 1)"), defaults()).max_tokens, 1);
  EXPECT_EQ(d->parse(with(R"("max_tokens": 1073741824)"), defaults()).max_tokens, 1 << 30);
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 0)")), "max_tokens");
  EXPECT_EQ(refused_field(*d, with(R"("max_tokens": 1073741825)")), "max_tokens");
  json stops = json::array();
  for (int i = 0; i < 64; ++i) stops.push_back("s" + std::to_string(i));
  json body = with(R"("max_tokens": 5)");
  body["stop_sequences"] = stops;
  EXPECT_EQ(d->parse(body, defaults()).stop.size(), 64u);
  body["stop_sequences"].push_back("s64");
  EXPECT_EQ(refused_field(*d, body), "stop_sequences");
  try {
    d->parse(with(R"("max_tokens": 5, "temperature": 1.5)"), defaults());
    ADD_FAILURE() << "temperature 1.5 accepted";
  } catch (const ApiError& e) {
    EXPECT_NE(std::string(e.what()).find("from 0 to 1, not 1.5"), std::string::npos) << e.what();
  }
}

TEST(Anthropic, ResponseStreamAndErrorShapes) {
  auto d = mx8::server::anthropic_dialect();
  ApiResult r{"Hi", StopReason::stop_sequence, "END", 9, 4, std::nullopt};
  const json full = d->response(kMeta, r);
  EXPECT_EQ(full["type"], "message");
  EXPECT_EQ(full["role"], "assistant");
  EXPECT_EQ(full["content"], json::parse(R"([{"type": "text", "text": "Hi"}])"));
  EXPECT_EQ(full["stop_reason"], "stop_sequence");
  EXPECT_EQ(full["stop_sequence"], "END");
  EXPECT_EQ(full["usage"], json({{"input_tokens", 9}, {"output_tokens", 4}}));
  r.reason = StopReason::context_full;
  EXPECT_EQ(d->response(kMeta, r)["stop_reason"], "max_tokens");
  EXPECT_TRUE(d->response(kMeta, r)["stop_sequence"].is_null());
  r.reason = StopReason::end_of_turn;

  const Events ev = stream_of(*d, 1, 0, {"Hi"}, r, false);
  EXPECT_EQ(ev.names,
            (std::vector<std::string>{"message_start", "content_block_start", "ping", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"}));
  for (size_t i = 0; i < ev.names.size(); ++i) EXPECT_EQ(json::parse(ev.data[i])["type"], ev.names[i]);
  EXPECT_EQ(json::parse(ev.data[0])["message"]["usage"]["input_tokens"], 9);
  EXPECT_EQ(json::parse(ev.data[3])["delta"], json({{"type", "text_delta"}, {"text", "Hi"}}));
  for (int block_event : {1, 3, 4}) EXPECT_EQ(json::parse(ev.data[block_event])["index"], 0) << block_event;
  EXPECT_EQ(json::parse(ev.data[5])["delta"]["stop_reason"], "end_turn");
  EXPECT_EQ(json::parse(ev.data[5])["usage"]["output_tokens"], 4);

  EXPECT_EQ(
      d->error_body(400, "bad", "x"),
      json::parse(R"({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}})"));
  EXPECT_EQ(d->error_body(529, "busy", "")["error"]["type"], "overloaded_error");
  EXPECT_EQ(parse_sse(d->stream_error(500, "boom")).names, std::vector<std::string>{"error"});
}

TEST(Sse, InvalidUtf8IsReplacedNotThrown) {
  // A token's bytes never reach the dialect split (the decoder emits whole characters), but a stop
  // string or prompt echo could carry bad bytes; the event must still be valid JSON.
  const std::string s = mx8::server::sse_event("", json({{"t", std::string("a\xff")}}));
  EXPECT_EQ(s.rfind("data: ", 0), 0u);
  EXPECT_NO_THROW(json::parse(s.substr(6)));
}

// Log-probabilities in each OpenAI shape: chat's list of {token, logprob, bytes, top_logprobs}, the
// legacy completions' parallel lists with text offsets; null when not asked for.
TEST(OpenAiApi, LogprobsInBothShapes) {
  const std::vector<TokenLogprob> lp = {{"He", 0, -0.25f, {{"He", -0.25f}, {"Hi", -1.5f}}},
                                        {"llo", 2, -0.5f, {{"llo", -0.5f}, {"y", -2.0f}}}};
  auto chat = openai_chat_dialect();
  EXPECT_EQ(chat->parse(json::parse(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true,
                                       "top_logprobs": 2})"),
                        defaults())
                .logprobs,
            2);
  EXPECT_EQ(
      chat->parse(json::parse(R"({"messages": [{"role": "user", "content": "x"}]})"), defaults()).logprobs,
      -1);
  ApiResult r{"Hello", StopReason::max_tokens, "", 5, 2, lp};
  const json c = chat->response(kMeta, r)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0]["token"], "He");
  EXPECT_EQ(c[0]["logprob"], -0.25);
  EXPECT_EQ(c[0]["bytes"], json::parse("[72, 101]"));
  EXPECT_EQ(c[1]["top_logprobs"][1]["token"], "y");
  EXPECT_EQ(c[1]["top_logprobs"][1]["logprob"], -2.0);
  std::vector<StreamState> st(1);
  const Events ev = parse_sse(chat->stream_text(kMeta, 0, "Hello", &lp, st.at(0)) +
                              chat->stream_text(kMeta, 0, "!", nullptr, st.at(0)));
  ASSERT_EQ(ev.data.size(), 2u);
  EXPECT_EQ(json::parse(ev.data[0])["choices"][0]["logprobs"]["content"][1]["token"], "llo");
  EXPECT_TRUE(json::parse(ev.data[1])["choices"][0]["logprobs"].is_null());
  r.logprobs.reset();
  EXPECT_TRUE(chat->response(kMeta, r)["choices"][0]["logprobs"].is_null());

  auto cmpl = openai_completion_dialect();
  EXPECT_EQ(cmpl->parse(json::parse(R"({"prompt": "a", "logprobs": 0})"), defaults()).logprobs, 0);
  r.logprobs = lp;
  const json l = cmpl->response(kMeta, r)["choices"][0]["logprobs"];
  EXPECT_EQ(l["tokens"], json::parse(R"(["He", "llo"])"));
  EXPECT_EQ(l["token_logprobs"], json::parse("[-0.25, -0.5]"));
  EXPECT_EQ(l["text_offset"], json::parse("[0, 2]"));
  EXPECT_EQ(l["top_logprobs"][0]["Hi"], -1.5);
}

// The completions' alternatives always hold the chosen token, as OpenAI's do ("up to logprobs + 1
// elements"): a sampled or echoed token outside the best `logprobs` is added with its own value; one
// among them is not repeated; logprobs 0 lists the chosen token alone. (The values are binary
// fractions, exact in float and double alike.)
TEST(OpenAiCompletion, AlternativesHoldTheChosenToken) {
  auto cmpl = openai_completion_dialect();
  const std::vector<TokenLogprob> lp = {
      {" upon", 0, -3.0f, {{" a", -0.5f}}}, {" a", 5, -0.5f, {{" a", -0.5f}}}, {" time", 7, -0.25f, {}}};
  const ApiResult r{" upon a time", StopReason::max_tokens, "", 1, 3, lp};
  const json top = cmpl->response(kMeta, r)["choices"][0]["logprobs"]["top_logprobs"];
  EXPECT_EQ(top[0], json::parse(R"({" a": -0.5, " upon": -3.0})"));
  EXPECT_EQ(top[1], json::parse(R"({" a": -0.5})"));
  EXPECT_EQ(top[2], json::parse(R"({" time": -0.25})"));
  // Streamed chunks carry the same.
  std::vector<StreamState> st(1);
  const Events ev = parse_sse(cmpl->stream_text(kMeta, 0, r.text, &lp, st.at(0)));
  EXPECT_EQ(json::parse(ev.data.at(0))["choices"][0]["logprobs"]["top_logprobs"], top);
}

// Tools: OpenAI's function tools and tool_choice into the server's terms, the template's form of each
// tool, and the calls and results of the history; what is malformed is refused naming the field.
TEST(OpenAiChat, ReadsToolsChoicesAndToolTurns) {
  auto d = mx8::server::openai_chat_dialect();
  const json tool = json::parse(R"({"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object"}, "strict": true}})");
  json body = {{"messages", json::parse(R"([{"role": "user", "content": "Paris?"},
      {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
      {"role": "tool", "tool_call_id": "call_9", "content": [{"type": "text", "text": "sunny"}]}])")},
               {"tools", {tool}}};
  ApiRequest r = d->parse(body, defaults());
  // `strict` stays out of the prompt; the rest is as templates take it.
  EXPECT_EQ(r.tools.tools, json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object"}}}])"));
  EXPECT_EQ(r.tools.choice, mx8::server::ToolRequest::Choice::automatic);
  EXPECT_TRUE(r.tools.parallel);
  EXPECT_EQ(r.messages[1], json::parse(R"({"role": "assistant", "content": "", "tool_calls": [{"id": "call_9",
      "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]})"));
  EXPECT_EQ(r.messages[2], json::parse(R"({"role": "tool", "content": "sunny", "tool_call_id": "call_9"})"));

  body["tool_choice"] = "required";
  body["parallel_tool_calls"] = false;
  r = d->parse(body, defaults());
  EXPECT_EQ(r.tools.choice, mx8::server::ToolRequest::Choice::required);
  EXPECT_FALSE(r.tools.parallel);
  body["tool_choice"] = json::parse(R"({"type": "function", "function": {"name": "get_weather"}})");
  r = d->parse(body, defaults());
  EXPECT_EQ(r.tools.choice, mx8::server::ToolRequest::Choice::named);
  EXPECT_EQ(r.tools.name, "get_weather");
  body["tool_choice"] = "none";
  EXPECT_FALSE(d->parse(body, defaults()).tools.offered());

  auto refused = [&](const std::string& edit_path, const json& value) {
    json b = body;
    b.erase("tool_choice");
    b[json::json_pointer(edit_path)] = value;
    return refused_field(*d, b);
  };
  EXPECT_EQ(refused("/tool_choice", "sometimes"), "tool_choice");
  EXPECT_EQ(refused("/tool_choice", json::parse(R"({"type": "function", "function": {"name": "other"}})")),
            "tool_choice");  // not offered
  EXPECT_EQ(refused("/tools/0/function/name", "no spaces allowed"), "tools[0].function.name");
  EXPECT_EQ(refused("/tools/0/type", "code_interpreter"), "tools[0].type");
  EXPECT_EQ(refused("/tools/0/function/parameters", "an object"), "tools[0].function.parameters");
  EXPECT_EQ(refused("/tools/1", tool), "tools");  // a name twice
  EXPECT_EQ(refused("/messages/1/tool_calls/0/function/arguments", "{not json"),
            "messages[1].tool_calls[0].function.arguments");
  EXPECT_EQ(refused("/messages/1/tool_calls/0/function/arguments", "[1]"),
            "messages[1].tool_calls[0].function.arguments");
  EXPECT_EQ(refused("/messages/1/tool_calls/0/id", 5), "messages[1].tool_calls[0].id");
  EXPECT_EQ(refused("/messages/2/tool_call_id", nullptr), "messages[2].tool_call_id");
  json none = body;
  none.erase("tools");
  none["tool_choice"] = "required";
  EXPECT_EQ(refused_field(*d, none), "tool_choice");  // asks for a call with nothing to call
}

TEST(Anthropic, ReadsToolsChoicesAndToolBlocks) {
  auto d = mx8::server::anthropic_dialect();
  json body = {{"max_tokens", 10},
               {"tools", json::parse(R"([{"name": "get_weather", "description": "Weather of a city",
                   "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}])")},
               {"messages", json::parse(R"([{"role": "user", "content": "Paris?"},
      {"role": "assistant", "content": [{"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
         "content": [{"type": "text", "text": "no such city"}]},
        {"type": "text", "text": "And Rome?"}]}])")}};
  ApiRequest r = d->parse(body, defaults());
  EXPECT_EQ(r.tools.tools, json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object"}}}])"));
  EXPECT_EQ(r.messages, json::parse(R"([{"role": "user", "content": "Paris?"},
      {"role": "assistant", "content": "Looking.", "tool_calls": [{"id": "toolu_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
      {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
      {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
      {"role": "user", "content": "And Rome?"}])"));

  body["tool_choice"] =
      json::parse(R"({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})");
  r = d->parse(body, defaults());
  EXPECT_EQ(r.tools.choice, mx8::server::ToolRequest::Choice::named);
  EXPECT_FALSE(r.tools.parallel);
  body["tool_choice"] = json::parse(R"({"type": "any"})");
  EXPECT_EQ(d->parse(body, defaults()).tools.choice, mx8::server::ToolRequest::Choice::required);

  auto refused = [&](const std::string& edit_path, const json& value) {
    json b = body;
    b[json::json_pointer(edit_path)] = value;
    return refused_field(*d, b);
  };
  EXPECT_EQ(refused("/tool_choice", json::parse(R"({"type": "tool", "name": "other"})")), "tool_choice");
  EXPECT_EQ(refused("/tool_choice", json::parse(R"({"type": "sometimes"})")), "tool_choice");
  EXPECT_EQ(refused("/tools/0/type", "web_search_20250305"), "tools.0.type");  // a server tool
  EXPECT_EQ(refused("/tools/0/input_schema", nullptr), "tools.0.input_schema");
  EXPECT_EQ(refused("/messages/1/content/1/input", "city=Paris"), "messages.1.content.1.input");
  EXPECT_EQ(refused("/messages/2/content/0/tool_use_id", nullptr), "messages.2.content.0.tool_use_id");
  EXPECT_EQ(refused("/messages/0/content", json::parse(R"([{"type": "tool_use", "id": "t", "name": "f",
      "input": {}}])")),
            "messages.0.content.0");  // a call in a user message
  EXPECT_EQ(refused("/messages/0/content", json::parse(R"([{"type": 5}])")), "messages.0.content.0");
  // A prefill (the last message, the assistant's) may not hold a call.
  json prefill = body;
  prefill["messages"].erase(2);
  EXPECT_EQ(refused_field(*d, prefill), "messages.1");
}

// A reply's calls in each API's shape, whole and streamed.
TEST(ToolCallShapes, OpenAiAndAnthropic) {
  ApiResult r{"Checking.", StopReason::end_of_turn, "", 5, 9, std::nullopt};
  r.tool_calls = {{"call_a", "get_weather", json::parse(R"({"city": "Paris"})")}};
  auto chat = mx8::server::openai_chat_dialect();
  const json message = chat->response(kMeta, r)["choices"][0]["message"];
  EXPECT_EQ(message["content"], "Checking.");
  EXPECT_EQ(message["tool_calls"], json::parse(R"([{"id": "call_a", "type": "function",
      "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}])"));
  EXPECT_EQ(chat->response(kMeta, r)["choices"][0]["finish_reason"], "tool_calls");
  ApiResult cut = r;
  cut.reason = StopReason::max_tokens;  // calls, then the limit: the reply was cut off
  EXPECT_EQ(chat->response(kMeta, cut)["choices"][0]["finish_reason"], "length");
  ApiResult calls_only = r;
  calls_only.text = "";
  EXPECT_TRUE(chat->response(kMeta, calls_only)["choices"][0]["message"]["content"].is_null());
  std::vector<StreamState> st(1);
  std::string s = chat->stream_tool_call(kMeta, 0, r.tool_calls[0], st[0]);
  s += chat->stream_tool_call(kMeta, 0, r.tool_calls[0], st[0]);
  Events ev = parse_sse(s);
  ASSERT_EQ(ev.data.size(), 2u);
  EXPECT_EQ(json::parse(ev.data[0])["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
  EXPECT_EQ(json::parse(ev.data[1])["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
  EXPECT_EQ(json::parse(ev.data[1])["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "get_weather");

  auto anthropic = mx8::server::anthropic_dialect();
  const json msg = anthropic->response(kMeta, r);
  EXPECT_EQ(msg["content"], json::parse(R"([{"type": "text", "text": "Checking."},
      {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}}])"));
  EXPECT_EQ(msg["stop_reason"], "tool_use");
  EXPECT_EQ(anthropic->response(kMeta, calls_only)["content"].size(), 1u);  // no empty text block
  // Streamed with tools offered: no text block until text comes; a reply of nothing still has one.
  st = std::vector<StreamState>(1);
  st[0].lazy_text = true;
  s = anthropic->stream_start(kMeta, 5, st);
  s += anthropic->stream_tool_call(kMeta, 0, r.tool_calls[0], st[0]);
  s += anthropic->stream_text(kMeta, 0, "Done.", nullptr, st[0]);
  s += anthropic->stream_choice_end(kMeta, 0, r, st[0]);
  s += anthropic->stream_end(kMeta, r, false);
  ev = parse_sse(s);
  EXPECT_EQ(ev.names,
            (std::vector<std::string>{"message_start", "ping", "content_block_start", "content_block_delta",
                                      "content_block_stop", "content_block_start", "content_block_delta",
                                      "content_block_stop", "message_delta", "message_stop"}));
  EXPECT_EQ(json::parse(ev.data[3])["delta"],
            json::parse(R"({"type": "input_json_delta", "partial_json": "{\"city\": \"Paris\"}"})"));
  EXPECT_EQ(json::parse(ev.data[5])["index"], 1);
  EXPECT_EQ(json::parse(ev.data[5])["content_block"]["type"], "text");
  EXPECT_EQ(json::parse(ev.data[8])["delta"]["stop_reason"], "tool_use");
  st = std::vector<StreamState>(1);
  st[0].lazy_text = true;
  s = anthropic->stream_start(kMeta, 5, st);
  s += anthropic->stream_choice_end(kMeta, 0, ApiResult{}, st.at(0));
  EXPECT_EQ(parse_sse(s).names,
            (std::vector<std::string>{"message_start", "ping", "content_block_start", "content_block_stop"}));
}

// Template variables (chat_template_kwargs, reasoning_effort) and reasoning in the history and in
// responses.
TEST(OpenAiChat, TemplateVariablesAndReasoning) {
  auto d = mx8::server::openai_chat_dialect();
  const std::string user = R"("messages": [{"role": "user", "content": "x"}])";
  auto with = [&](const std::string& extra) { return json::parse("{" + user + ", " + extra + "}"); };
  EXPECT_EQ(d->parse(with(R"("reasoning_effort": "minimal")"), defaults()).template_variables,
            json::parse(R"({"enable_thinking": false, "thinking": false})"));
  EXPECT_EQ(d->parse(with(R"("reasoning_effort": "low", "chat_template_kwargs": {"enable_thinking": false,
                              "date_string": "1 May"})"),
                     defaults())
                .template_variables,
            json::parse(R"({"enable_thinking": false, "thinking": true, "date_string": "1 May"})"));
  EXPECT_EQ(d->parse(with(R"("chat_template_kwargs": null)"), defaults()).template_variables, json::object());
  EXPECT_EQ(refused_field(*d, with(R"("reasoning_effort": "max")")), "reasoning_effort");
  EXPECT_EQ(refused_field(*d, with(R"("chat_template_kwargs": [1])")), "chat_template_kwargs");
  EXPECT_EQ(refused_field(*d, with(R"("chat_template_kwargs": {"add_generation_prompt": false})")),
            "chat_template_kwargs");
  const ApiRequest r = d->parse(json::parse(R"({"messages": [{"role": "user", "content": "x"},
      {"role": "assistant", "content": "4", "reasoning_content": "2 + 2"}, {"role": "user", "content": "y"}]})"),
                                defaults());
  EXPECT_EQ(r.messages[1],
            json::parse(R"({"role": "assistant", "content": "4", "reasoning_content": "2 + 2"})"));

  ApiResult reply{"4", StopReason::end_of_turn, "", 3, 5, std::nullopt};
  reply.reasoning = "2 + 2";
  EXPECT_EQ(d->response(kMeta, reply)["choices"][0]["message"],
            json::parse(R"({"role": "assistant", "content": "4", "reasoning_content": "2 + 2"})"));
  std::vector<StreamState> st(1);
  EXPECT_EQ(
      json::parse(parse_sse(d->stream_reasoning(kMeta, 0, "2 +", st[0])).data.at(0))["choices"][0]["delta"],
      json::parse(R"({"reasoning_content": "2 +"})"));
}

}  // namespace
