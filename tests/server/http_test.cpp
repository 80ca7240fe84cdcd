// `mx8 serve`'s HTTP front end (server/http_server.h) on stories260K, through real sockets: each
// endpoint's text equals what the engine generates alone for the same prompt (streamed or not,
// several clients at once), errors come back in each API's shape, and a client that disconnects
// cancels its request, mid-stream or before a plain reply.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "server/failing_backend.h"
#include "server/http_fixture.h"

namespace {

using namespace mx8;
using json = nlohmann::ordered_json;
using mx8::testing::chat_reference;
using mx8::testing::greedy_job;
using mx8::testing::kContext;
using mx8::testing::kTemplate;
using mx8::testing::Reference;
using mx8::testing::run_alone;
using mx8::testing::Served;
using mx8::testing::sse_data;
using mx8::testing::stories;

TEST(HttpServer, CompletionsPlainAndStreamedEqualTheEngineAlone) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  const Reference ref = run_alone(greedy_job("Once upon a time", 40), kContext);
  Served s;
  auto r = s.post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["model"], "stories260K");
  EXPECT_EQ(j["choices"][0]["text"], ref.continuation);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 40);
  EXPECT_EQ(j["usage"]["prompt_tokens"], int(stories().prompt("Once upon a time").size()));

  r = s.post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0,
                                    "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const std::vector<std::string> data = sse_data(r->body);
  ASSERT_GE(data.size(), 3u);
  EXPECT_EQ(data.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 3 < data.size(); ++i)
    text += json::parse(data[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, ref.continuation);
  EXPECT_EQ(json::parse(data[data.size() - 3])["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(json::parse(data[data.size() - 2])["usage"]["completion_tokens"], 40);
}

// logit_bias reaches the sampler: a greedy completion with token 300's logit raised by 10 is what the
// engine alone generates with that bias (and not the unbiased text); a bias for a token past the
// vocabulary is refused with 400, naming the token and the vocabulary's size.
TEST(HttpServer, LogitBiasSteersTheReplyAsTheEngineAloneDoes) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  server::GenerationJob job = greedy_job("Once upon a time", 20);
  const Reference plain = run_alone(job, kContext);
  job.sampling.logit_bias = {{300, 10.0f}};
  const Reference biased = run_alone(job, kContext);
  ASSERT_NE(biased.continuation, plain.continuation);
  Served s;
  auto r = s.post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0,
                                         "logit_bias": {"300": 10}})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], biased.continuation);
  r = s.post("/v1/completions",
             R"({"prompt": "Once upon a time", "max_tokens": 2, "logit_bias": {"512": 1}})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("token 512, outside the vocabulary of 512 tokens"), std::string::npos) << r->body;
}

// Two prompts with n = 2: four choices, prompt by prompt, each (greedy) what the engine alone adds to
// its prompt's text, plain and streamed (the choices' chunks interleave, each with its index and its own
// finish chunk, then one usage chunk); the usage counts each prompt once.
TEST(HttpServer, SeveralPromptsAndChoicesPlainAndStreamed) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  const std::vector<std::string> prompts = {"Once upon a time", "Tom and Lily"};
  std::vector<std::string> want;
  int prompt_tokens = 0;
  for (const std::string& p : prompts) {
    const std::string text = run_alone(greedy_job(p, 20), kContext).continuation;
    want.insert(want.end(), {text, text});
    prompt_tokens += int(stories().prompt(p).size());
  }
  // A completion continues its prompt's text: "Tom and Lily" goes on with " were", the space kept that
  // a reply of its own (chat) drops at its start.
  ASSERT_EQ(want[2].front(), ' ');
  Served s;
  json body = {{"prompt", prompts}, {"n", 2}, {"max_tokens", 20}, {"temperature", 0}};
  auto r = s.post("/v1/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  ASSERT_EQ(j["choices"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(j["choices"][i]["index"], i);
    EXPECT_EQ(j["choices"][i]["text"], want[i]) << "choice " << i;
  }
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4 * 20);

  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  r = s.post("/v1/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const std::vector<std::string> data = sse_data(r->body);
  ASSERT_GE(data.size(), 6u);
  EXPECT_EQ(data.back(), "[DONE]");
  std::vector<std::string> text(4);
  int finished = 0;
  for (size_t i = 0; i + 2 < data.size(); ++i) {
    const json c = json::parse(data[i])["choices"].at(0);
    text.at(c["index"].get<size_t>()) += c["text"].get<std::string>();
    finished += !c["finish_reason"].is_null();
  }
  EXPECT_EQ(text, want);
  EXPECT_EQ(finished, 4);
  EXPECT_EQ(json::parse(data[data.size() - 2])["usage"]["completion_tokens"], 4 * 20);
}

TEST(HttpServer, ChatCompletionsUseTheTemplate) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  const json messages = json::parse(R"([{"role": "system", "content": "Tell a story."},
                                        {"role": "user", "content": "A cat"}])");
  const Reference ref = chat_reference(messages, 30);
  Served s;
  json body = {{"model", "anything"}, {"messages", messages}, {"max_tokens", 30}, {"temperature", 0}};
  auto r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], ref.text);
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);

  body["stream"] = true;
  r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  const std::vector<std::string> data = sse_data(r->body);
  ASSERT_GE(data.size(), 3u);
  EXPECT_EQ(json::parse(data[0])["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (size_t i = 1; i + 2 < data.size(); ++i) {
    const json c = json::parse(data[i]);
    EXPECT_EQ(c["id"], json::parse(data[0])["id"]);
    text += c["choices"][0]["delta"]["content"].get<std::string>();
  }
  EXPECT_EQ(text, ref.text);
  EXPECT_EQ(json::parse(data[data.size() - 2])["choices"][0]["finish_reason"], "length");
}

// Log-probabilities through the server: greedy, so each token is its row's most likely one (the first
// alternative, with the same value); the tokens' bytes spell the reply; the stream carries the same
// entries as the whole response.
TEST(HttpServer, LogprobsOfAGreedyReply) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  Served s;
  json body = {{"messages", json::parse(R"([{"role": "user", "content": "A cat"}])")},
               {"max_tokens", 12},
               {"temperature", 0},
               {"logprobs", true},
               {"top_logprobs", 3}};
  auto r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body)["choices"][0];
  const json content = j["logprobs"]["content"];
  ASSERT_EQ(content.size(), 12u);
  std::string spelled;
  for (const json& t : content) {
    spelled += t["token"].get<std::string>();
    ASSERT_EQ(t["top_logprobs"].size(), 3u);
    EXPECT_EQ(t["top_logprobs"][0]["token"], t["token"]);
    EXPECT_EQ(t["top_logprobs"][0]["logprob"], t["logprob"]);
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    EXPECT_GE(t["logprob"].get<double>(), t["top_logprobs"][1]["logprob"].get<double>());
  }
  EXPECT_EQ(spelled, j["message"]["content"]);

  body["stream"] = true;
  r = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  json streamed = json::array();
  for (const std::string& d : sse_data(r->body)) {
    if (d == "[DONE]") continue;
    const json lp = json::parse(d)["choices"][0]["logprobs"];
    if (lp.is_object())
      for (const json& t : lp["content"]) streamed.push_back(t);
  }
  EXPECT_EQ(streamed, content);

  // Echo (what evaluation harnesses send to score a text): the prompt's tokens first, the first one
  // without a log-probability, then the generated one; token ids as the prompt work the same.
  const std::vector<int32_t> ids = stories().prompt("Once upon a time");
  for (const std::string& prompt : {std::string("\"Once upon a time\""), json(ids).dump()}) {
    r = s.post("/v1/completions", R"({"prompt": )" + prompt +
                                      R"(, "max_tokens": 1, "temperature": 0, "logprobs": 2, "echo": true})");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json e = json::parse(r->body)["choices"][0];
    const json values = e["logprobs"]["token_logprobs"];
    ASSERT_EQ(values.size(), ids.size() + 1) << prompt;
    EXPECT_TRUE(values[0].is_null());
    EXPECT_TRUE(e["logprobs"]["top_logprobs"][0].is_null());
    std::string spelled;
    for (size_t i = 0; i < values.size(); ++i) {
      spelled += e["logprobs"]["tokens"][i].get<std::string>();
      if (i > 0) {
        EXPECT_LT(values[i].get<double>(), 0.0);
      }
    }
    EXPECT_EQ(spelled, e["text"]);
    EXPECT_EQ(json::parse(r->body)["usage"]["prompt_tokens"], ids.size());
    // Streamed: the same text and lists, the echo in the first chunk.
    r = s.post("/v1/completions", R"({"prompt": )" + prompt +
                                      R"(, "max_tokens": 1, "temperature": 0, "logprobs": 2, "echo": true,
                                      "stream": true})");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    std::string text;
    json tokens = json::array(), lps = json::array();
    for (const std::string& d : sse_data(r->body)) {
      if (d == "[DONE]") continue;
      const json c = json::parse(d)["choices"][0];
      text += c["text"].get<std::string>();
      if (c["logprobs"].is_object())
        for (size_t i = 0; i < c["logprobs"]["tokens"].size(); ++i) {
          tokens.push_back(c["logprobs"]["tokens"][i]);
          lps.push_back(c["logprobs"]["token_logprobs"][i]);
        }
    }
    const json first = json::parse(sse_data(r->body).front())["choices"][0];
    const std::string echo =
        spelled.substr(0, spelled.size() - e["logprobs"]["tokens"].back().get<std::string>().size());
    EXPECT_EQ(first["text"].get<std::string>().rfind(echo, 0), 0u) << prompt;
    EXPECT_EQ(text, e["text"]) << prompt;
    EXPECT_EQ(tokens, e["logprobs"]["tokens"]) << prompt;
    EXPECT_EQ(lps, values) << prompt;
  }

  // logprobs 0 asks for the chosen tokens' values without alternatives: the echoed prompt has them too.
  r = s.post("/v1/completions", R"({"prompt": )" + json(ids).dump() +
                                    R"(, "max_tokens": 1, "temperature": 0, "logprobs": 0, "echo": true})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json values0 = json::parse(r->body)["choices"][0]["logprobs"]["token_logprobs"];
  ASSERT_EQ(values0.size(), ids.size() + 1);
  EXPECT_TRUE(values0[0].is_null());  // the first token has no context to score it
  for (size_t i = 1; i < values0.size(); ++i) EXPECT_TRUE(values0[i].is_number()) << i << ": " << values0;

  // Several prompts in one request (a harness's batch): each choice is what that prompt gets alone.
  const std::string other = json(stories().prompt("The cat")).dump();
  r = s.post("/v1/completions", R"({"prompt": [)" + json(ids).dump() + ", " + other +
                                    R"(], "max_tokens": 1, "temperature": 0, "logprobs": 2, "echo": true})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json both = json::parse(r->body);
  ASSERT_EQ(both["choices"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    auto alone =
        s.post("/v1/completions", R"({"prompt": )" + (i ? other : json(ids).dump()) +
                                      R"(, "max_tokens": 1, "temperature": 0, "logprobs": 2, "echo": true})");
    ASSERT_TRUE(alone);
    json c = json::parse(alone->body)["choices"][0];
    c["index"] = i;
    EXPECT_EQ(both["choices"][i], c) << i;
  }

  // A prompt that cannot run refuses the whole request (the others are cancelled).
  r = s.post("/v1/completions", R"({"prompt": ["Once", [1, 99999]], "max_tokens": 3})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("99999"), std::string::npos) << r->body;

  r = s.post("/v1/completions",
             R"({"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "logprobs": 1})");
  ASSERT_TRUE(r);
  const json c = json::parse(r->body)["choices"][0];
  ASSERT_EQ(c["logprobs"]["tokens"].size(), 5u);
  EXPECT_EQ(c["logprobs"]["text_offset"][0], 0);
  EXPECT_EQ(c["logprobs"]["text_offset"][1], c["logprobs"]["tokens"][0].get<std::string>().size());
}

// The characters (code points) of UTF-8 text.
size_t characters(const std::string& s) {
  return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

// text_offset counts characters of the text, as OpenAI's does (Python's str indices), not bytes: an
// echoed prompt with two-byte characters puts the generated token that many places earlier than
// its byte offset. Streamed, the same offsets.
TEST(HttpServer, CompletionTextOffsetsCountCharacters) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  Served s;
  const std::string prompt = "Lily saw a caf\u00e9 and a na\u00efve cat";  // two characters of two bytes
  const std::string body =
      R"({"prompt": ")" + prompt + R"(", "max_tokens": 1, "temperature": 0, "logprobs": 0, "echo": true)";
  auto r = s.post("/v1/completions", body + "}");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json c = json::parse(r->body)["choices"][0];
  const std::string text = c["text"], last = c["logprobs"]["tokens"].back();
  ASSERT_EQ(characters(last), last.size()) << "the generated token is expected to be ASCII: " << last;
  ASSERT_LT(characters(text), text.size()) << "the echoed prompt has multi-byte characters";
  EXPECT_EQ(c["logprobs"]["text_offset"].back(), characters(text) - last.size());
  EXPECT_EQ(c["logprobs"]["text_offset"][0], 0);
  r = s.post("/v1/completions", body + R"(, "stream": true})");
  ASSERT_TRUE(r);
  json offsets = json::array();
  for (const std::string& d : sse_data(r->body)) {
    if (d == "[DONE]") continue;
    const json lp = json::parse(d)["choices"][0]["logprobs"];
    if (lp.is_object()) offsets.insert(offsets.end(), lp["text_offset"].begin(), lp["text_offset"].end());
  }
  EXPECT_EQ(offsets, c["logprobs"]["text_offset"]);
}

// Each position's alternatives hold its chosen token, sampled or echoed, with the token's own value:
// up to logprobs + 1 of them. Temperature 2 makes the sampled token often one outside the best one
// (seed 3: 14 of 30 positions were, before the chosen token was added).
TEST(HttpServer, CompletionAlternativesHoldTheChosenToken) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  Served s;
  auto r = s.post("/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 30, "temperature": 2,
                                         "seed": 3, "logprobs": 1, "echo": true})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json lp = json::parse(r->body)["choices"][0]["logprobs"];
  int added = 0;  // positions whose chosen token is not the most likely one
  for (size_t i = 1; i < lp["tokens"].size(); ++i) {  // the prompt's first token has no entry
    const json& top = lp["top_logprobs"][i];
    const std::string token = lp["tokens"][i];
    ASSERT_TRUE(top.contains(token)) << i << ": " << top.dump();
    EXPECT_EQ(top[token], lp["token_logprobs"][i]) << i;
    EXPECT_LE(top.size(), 2u) << i;  // logprobs 1, plus the chosen token
    added += top.size() == 2;
  }
  EXPECT_GT(added, 0) << "no position tested the addition";
}

// A reply that ends with an end-of-turn token: the completions list its entry too (a harness expects
// one per generated token), chat does not (its entries spell the reply). Seeded sampling, the first of
// a few seeds whose reply ends that way within 300 tokens (stories260K's stories run 190-290).
TEST(HttpServer, LogprobsOfAnEndOfTurnToken) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  Served s;
  const std::string prompt = "They were happy. The end.";
  bool ended = false;
  for (int seed = 0; seed < 10 && !ended; ++seed) {
    json body = {
        {"prompt", prompt}, {"seed", seed}, {"max_tokens", 300}, {"temperature", 1}, {"logprobs", 1}};
    auto r = s.post("/v1/completions", body.dump());
    ASSERT_TRUE(r);
    const json j = json::parse(r->body);
    if (j["choices"][0]["finish_reason"] != "stop") continue;
    ended = true;
    EXPECT_EQ(j["choices"][0]["logprobs"]["tokens"].size(), j["usage"]["completion_tokens"].get<size_t>());
    body["stream"] = true;  // the same entries, chunk by chunk
    r = s.post("/v1/completions", body.dump());
    ASSERT_TRUE(r);
    size_t streamed = 0;
    for (const std::string& d : sse_data(r->body))
      if (d != "[DONE]" && json::parse(d)["choices"][0]["logprobs"].is_object())
        streamed += json::parse(d)["choices"][0]["logprobs"]["tokens"].size();
    EXPECT_EQ(streamed, j["usage"]["completion_tokens"].get<size_t>());
    json chat = {{"messages", json::array({{{"role", "user"}, {"content", prompt}}})},
                 {"seed", seed},
                 {"max_tokens", 300},
                 {"temperature", 1},
                 {"logprobs", true}};
    r = s.post("/v1/chat/completions", chat.dump());
    ASSERT_TRUE(r);
    const json c = json::parse(r->body);
    if (c["choices"][0]["finish_reason"] == "stop") {
      EXPECT_EQ(c["choices"][0]["logprobs"]["content"].size(),
                c["usage"]["completion_tokens"].get<size_t>() - 1);
    }
  }
  EXPECT_TRUE(ended) << "no seed ended its reply within 300 tokens";
}

TEST(HttpServer, AnthropicMessagesWithPrefillAndStopSequence) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  const json turns = json::parse(R"([{"role": "user", "content": "A dog"}])");
  const Reference ref = chat_reference(turns, 60, " Once");
  // The reply continues the prefill's text: " Once" goes on with " upon", its space kept.
  ASSERT_EQ(ref.continuation.front(), ' ');
  const std::string stop = ref.continuation.substr(ref.continuation.size() / 2, 5);
  const std::string before = ref.continuation.substr(0, ref.continuation.find(stop));
  Served s;
  json body = {{"model", "m"},
               {"max_tokens", 60},
               {"temperature", 0},
               {"messages", {turns[0], {{"role", "assistant"}, {"content", " Once"}}}}};
  auto r = s.post("/v1/messages", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["content"][0]["text"], ref.continuation);  // what follows " Once", without it
  EXPECT_EQ(j["stop_reason"], "max_tokens");
  EXPECT_EQ(j["usage"]["output_tokens"], 60);

  body["stop_sequences"] = {stop};
  body["stream"] = true;
  r = s.post("/v1/messages", body.dump());
  ASSERT_TRUE(r);
  std::vector<std::string> names;
  const std::vector<std::string> data = sse_data(r->body, &names);
  ASSERT_GE(names.size(), 6u);
  EXPECT_EQ(names[0], "message_start");
  EXPECT_EQ(names[1], "content_block_start");
  EXPECT_EQ(names[2], "ping");
  EXPECT_EQ(names[names.size() - 3], "content_block_stop");
  EXPECT_EQ(names[names.size() - 2], "message_delta");
  EXPECT_EQ(names.back(), "message_stop");
  std::string text;
  for (size_t i = 3; i + 3 < names.size(); ++i) {
    EXPECT_EQ(names[i], "content_block_delta");
    text += json::parse(data[i])["delta"]["text"].get<std::string>();
  }
  EXPECT_EQ(text, before);
  const json delta = json::parse(data[data.size() - 2]);
  EXPECT_EQ(delta["delta"]["stop_reason"], "stop_sequence");
  EXPECT_EQ(delta["delta"]["stop_sequence"], stop);
}

TEST(HttpServer, ClientsAtOnceEachGetTheirOwnText) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  const std::vector<std::string> prompts = {"The cat", "Tom and", "One day", "Lily saw", "A bird", "The sun"};
  std::vector<Reference> refs;
  for (const std::string& p : prompts) refs.push_back(run_alone(greedy_job(p, 25), kContext));
  Served s;  // 3 generate at once, the others wait
  std::vector<std::string> got(prompts.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < prompts.size(); ++i)
    clients.emplace_back([&, i] {
      json body = {{"prompt", prompts[i]}, {"max_tokens", 25}, {"temperature", 0}, {"stream", i % 2 == 1}};
      auto r = s.post("/v1/completions", body.dump());
      if (!r || r->status != 200) return;
      if (i % 2 == 0) {
        got[i] = json::parse(r->body)["choices"][0]["text"];
      } else {
        for (const std::string& d : sse_data(r->body))
          if (d != "[DONE]") got[i] += json::parse(d)["choices"][0]["text"].get<std::string>();
      }
    });
  for (auto& c : clients) c.join();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i], refs[i].continuation) << prompts[i];
}

TEST(HttpServer, ErrorsInEachApisShape) {
  Served s(/*with_template=*/true, /*max_body=*/4096);
  auto r = s.post("/v1/chat/completions", "{not json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "invalid_request_error");
  r = s.post("/v1/messages", R"({"messages": [{"role": "user", "content": "x"}]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["type"], "error");
  EXPECT_NE(json::parse(r->body)["error"]["message"].get<std::string>().find("max_tokens"),
            std::string::npos);
  r = s.post("/v1/completions", R"({"prompt": "x", "temperature": -1})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["param"], "temperature");
  // A prompt longer than the context names both sizes.
  std::string words;
  for (int i = 0; i < 700; ++i) words += "cat ";
  Served small(true, 1 << 20);
  r = small.post("/v1/completions", json({{"prompt", words + words + words}, {"max_tokens", 1}}).dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("context is 2048 positions"), std::string::npos) << r->body;
  // Over the body limit, an unknown path, a wrong method.
  r = s.post("/v1/completions", json({{"prompt", words + words}}).dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  // The limit itself is allowed: a request of exactly 4096 bytes is read and runs, one byte more is
  // not read.
  std::string exact = json({{"prompt", "x"}, {"max_tokens", 1}}).dump();
  exact.insert(exact.size() - 1, std::string(4096 - exact.size(), ' '));
  r = s.post("/v1/completions", exact);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  r = s.post("/v1/completions", exact.insert(exact.size() - 1, " "));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  r = s.get("/v1/nothing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_NE(json::parse(r->body)["error"]["message"].get<std::string>().find("/v1/nothing"),
            std::string::npos);
  EXPECT_EQ(s.get("/v1/messages")->status, 404);
}

// curl -d sends Content-Type: application/x-www-form-urlencoded unless told otherwise; the bodies are
// JSON whatever the header says, up to the server's own limit, also past the 8192 bytes at which
// httplib's form parsing refuses a body.
TEST(HttpServer, FormEncodedBodiesAreReadAsJson) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  Served s;
  const std::string form = "application/x-www-form-urlencoded";
  // `user` and `metadata` are fields both APIs ignore here; 9000 bytes: past httplib's 8192-byte form limit.
  const std::string filler(9000, 'x');
  auto r = s.post(
      "/v1/completions",
      json({{"prompt", "Once upon a time"}, {"max_tokens", 3}, {"temperature", 0}, {"user", filler}}).dump(),
      form);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"],
            run_alone(greedy_job("Once upon a time", 3), kContext).continuation);
  r = s.post("/v1/messages",
             json({{"max_tokens", 3},
                   {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                   {"metadata", {{"user_id", filler}}}})
                 .dump(),
             form);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["type"], "message");
}

// A chunked body has no Content-Length to check before reading: it is read up to the limit and
// refused past it, in the endpoint's error shape (it used to be read whole, whatever its size).
TEST(HttpServer, AChunkedBodyIsBoundedByTheLimit) {
  cpu::ScopedIsa scalar(cpu::Isa::scalar);
  Served s(/*with_template=*/true, /*max_body=*/4096);
  json body = {{"max_tokens", 2}, {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}};
  // 1000-byte chunks: several of them, so a body is assembled across reads.
  auto r = s.post_chunked("/v1/messages", body.dump(), 1000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  body["metadata"] = {{"user_id", std::string(6000, 'x')}};  // 6000 bytes: past the 4096-byte limit
  r = s.post_chunked("/v1/messages", body.dump(), 1000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "request_too_large");
  EXPECT_NE(r->body.find("over 4096 bytes"), std::string::npos) << r->body;
}

// A 200 KB body whose message carries a field nested 100000 deep, followed by another key: nlohmann
// parses without recursion, but inserting that key into the ordered object copied the nested value
// (a copy recurses once per level) and overflowed the stack, taking the server and every client
// down. Past 256 levels a body is a 400 now; 200 levels pass.
TEST(HttpServer, ADeeplyNestedBodyIsRefusedNotACrash) {
  Served s(/*with_template=*/true);
  auto body = [](int depth) {
    return R"({"messages": [{"role": "user", "content": "Hi", "extra": )" + std::string(depth, '[') +
           std::string(depth, ']') + R"(}], "max_tokens": 2})";
  };
  auto r = s.post("/v1/chat/completions", body(100000));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400) << r->body;
  EXPECT_NE(r->body.find("nested deeper than 256 levels"), std::string::npos) << r->body;
  r = s.post("/v1/chat/completions", body(200));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST(HttpServer, ChatWithoutATemplateSaysSo) {
  Served s(/*with_template=*/false);
  auto r = s.post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("no chat template"), std::string::npos);
  r = s.post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(HttpServer, APortInUseIsAnError) {
  Served s;
  server::ServerOptions o = s.server_options(1 << 20);
  o.port = s.port;
  server::HttpServer second(s.service, *stories().tok, nullptr, o);
  try {
    second.bind();
    ADD_FAILURE() << "a second server bound port " << s.port;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(s.port)), std::string::npos) << e.what();
  }
}

// /v1/responses serves the conversation chat serves: the same greedy text, whole and streamed.
TEST(HttpServer, ResponsesGiveChatsText) {
  Served s;
  const json messages = json::parse(R"([{"role": "user", "content": "A cat"}])");
  auto r = s.post("/v1/chat/completions",
                  json({{"messages", messages}, {"max_tokens", 12}, {"temperature", 0}}).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string text = json::parse(r->body)["choices"][0]["message"]["content"];
  r = s.post("/v1/responses",
             json({{"input", "A cat"}, {"max_output_tokens", 12}, {"temperature", 0}}).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json whole = json::parse(r->body);
  EXPECT_EQ(whole["output"][0]["content"][0]["text"], text) << r->body;
  EXPECT_EQ(whole["status"], "incomplete");
  r = s.post(
      "/v1/responses",
      json({{"input", "A cat"}, {"max_output_tokens", 12}, {"temperature", 0}, {"stream", true}}).dump());
  ASSERT_TRUE(r);
  std::string deltas;
  json last;
  for (size_t at = r->body.find("data: "); at != std::string::npos; at = r->body.find("data: ", at + 1)) {
    last = json::parse(r->body.substr(at + 6, r->body.find('\n', at) - at - 6));
    if (last["type"] == "response.output_text.delta") deltas += last["delta"].get<std::string>();
  }
  EXPECT_EQ(deltas, text);
  EXPECT_EQ(last["type"], "response.incomplete") << r->body;
  EXPECT_EQ(last["response"]["output"][0]["content"][0]["text"], text);
  EXPECT_EQ(last["response"]["output"][0]["status"], "incomplete");  // as the whole response has it
  EXPECT_EQ(whole["output"][0]["status"], "incomplete");
}

// The same tokens and alternatives, and log-probabilities within 1e-4: a later request reuses the
// earlier one's cached prompt, and a prefill from the cache sums in another order (f32 rounding moves
// the sixth digit; a wrong token's log-probability would differ by 0.01 or more).
void same_logprobs(const json& got, const json& want) {
  ASSERT_EQ(got.size(), want.size()) << got;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i]["token"], want[i]["token"]) << i;
    EXPECT_EQ(got[i]["bytes"], want[i]["bytes"]) << i;
    EXPECT_NEAR(got[i]["logprob"].get<double>(), want[i]["logprob"].get<double>(), 1e-4) << i;
    ASSERT_EQ(got[i]["top_logprobs"].size(), want[i]["top_logprobs"].size()) << i;
    for (size_t k = 0; k < got[i]["top_logprobs"].size(); ++k)
      EXPECT_EQ(got[i]["top_logprobs"][k]["token"], want[i]["top_logprobs"][k]["token"]) << i << " " << k;
  }
}

// The Responses API's log-probabilities are chat's, whole and streamed.
TEST(HttpServer, ResponsesLogprobsAreChats) {
  Served s;
  auto r = s.post("/v1/chat/completions",
                  json({{"messages", json::parse(R"([{"role": "user", "content": "A cat"}])")},
                        {"max_tokens", 6},
                        {"temperature", 0},
                        {"logprobs", true},
                        {"top_logprobs", 2}})
                      .dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json chat = json::parse(r->body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(chat.size(), 6u) << r->body;
  const json body = {{"input", "A cat"},
                     {"max_output_tokens", 6},
                     {"temperature", 0},
                     {"include", {"message.output_text.logprobs"}},
                     {"top_logprobs", 2}};
  r = s.post("/v1/responses", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  same_logprobs(json::parse(r->body)["output"][0]["content"][0]["logprobs"], chat);
  json streamed = body;
  streamed["stream"] = true;
  r = s.post("/v1/responses", streamed.dump());
  ASSERT_TRUE(r);
  json deltas = json::array(), last;
  for (size_t at = r->body.find("data: "); at != std::string::npos; at = r->body.find("data: ", at + 1)) {
    last = json::parse(r->body.substr(at + 6, r->body.find('\n', at) - at - 6));
    if (last["type"] == "response.output_text.delta")
      for (const json& e : last["logprobs"]) deltas.push_back(e);
  }
  same_logprobs(deltas, chat);
  same_logprobs(last["response"]["output"][0]["content"][0]["logprobs"], chat);
}

TEST(HttpServer, CountTokensMetricsAndTheRequestLog) {
  Served s;
  const json messages = json::parse(R"([{"role": "user", "content": "A cat"}])");
  runtime::EncodeOptions enc;
  enc.add_special = false;
  const size_t expected =
      stories()
          .tok
          ->encode(runtime::ChatTemplate(kTemplate).render(messages, {{"add_generation_prompt", true}}), enc)
          .size();
  auto r = s.post("/v1/messages/count_tokens", json({{"model", "m"}, {"messages", messages}}).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body), json({{"input_tokens", expected}}));
  EXPECT_EQ(s.post("/v1/messages/count_tokens", R"({"messages": []})")->status, 400);
  r = s.post("/v1/responses/input_tokens", json({{"input", messages}}).dump());  // the same prompt
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body), json({{"object", "response.input_tokens"}, {"input_tokens", expected}}));

  ASSERT_EQ(s.post("/v1/completions", R"({"prompt": "The cat", "max_tokens": 5})")->status, 200);
  ASSERT_EQ(s.post("/v1/completions", R"({"prompt": "The cat", "max_tokens": 3, "stream": true})")->status,
            200);
  ASSERT_EQ(s.post("/v1/messages", R"({"messages": [{"role": "user", "content": "x"}]})")->status, 400);
  r = s.get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("mx8_requests_total{endpoint=\"/v1/completions\",outcome=\"max_tokens\"} 2\n"),
            std::string::npos)
      << r->body;
  EXPECT_NE(r->body.find("mx8_requests_total{endpoint=\"/v1/messages\",outcome=\"400\"} 1\n"),
            std::string::npos)
      << r->body;
  EXPECT_NE(r->body.find("mx8_up 1\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("mx8_decoded_tokens_total 6\n"), std::string::npos) << r->body;  // 4 + 2 fed back

  std::lock_guard lk(s.log_mu);
  ASSERT_EQ(s.log.size(), 4u);
  EXPECT_EQ(s.log[0], "/v1/messages/count_tokens 400 'messages' must be a non-empty array");
  EXPECT_EQ(s.log[1].rfind("/v1/completions max_tokens cmpl-", 0), 0u) << s.log[1];
  EXPECT_NE(s.log[1].find(" + 5 tokens"), std::string::npos) << s.log[1];
  EXPECT_NE(s.log[2].find("(stream)"), std::string::npos) << s.log[2];
  EXPECT_EQ(s.log[3], "/v1/messages 400 'max_tokens' is required");
}

TEST(HttpServer, AnApiKeyIsRequiredWhenSet) {
  server::GenerationService service(*stories().model, *stories().be, *stories().tok,
                                    Served::service_options(false));
  server::ServerOptions o;
  o.port = 0;
  o.api_key = "s3cret";
  server::HttpServer http(service, *stories().tok, nullptr, o);
  const int port = http.bind();
  std::thread listener([&] { http.listen(); });
  httplib::Client c("127.0.0.1", port);
  const std::string body = R"({"prompt": "x", "max_tokens": 1})";
  auto r = c.Post("/v1/completions", body, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "invalid_api_key");
  r = c.Post("/v1/completions", {{"Authorization", "Bearer s3cre"}}, body, "application/json");
  EXPECT_EQ(r->status, 401);
  r = c.Post("/v1/messages", {{"x-api-key", "wrong"}},
             R"({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]})", "application/json");
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "authentication_error");
  EXPECT_EQ(c.Post("/v1/completions", {{"Authorization", "Bearer s3cret"}}, body, "application/json")->status,
            200);
  EXPECT_EQ(c.Post("/v1/completions", {{"x-api-key", "s3cret"}}, body, "application/json")->status, 200);
  EXPECT_EQ(c.Get("/v1/models")->status, 401);
  EXPECT_EQ(c.Get("/health")->status, 200);  // for load balancers
  service.stop();
  http.stop();
  listener.join();
}

// A step that fails ends a streamed reply with an error event in the dialect's shape; from then on
// the server answers 503 (it cannot generate: not the client's fault) and /health says why.
TEST(HttpServer, AFailedStepEndsTheStreamAndTheServerAnswers503) {
  mx8::testing::FailingBackend failing(*stories().be);
  model::LoadOptions lo;
  lo.max_tokens_per_step = 32;
  const auto model = model::load_llama(mx8::testing::kStoriesModel, failing, lo);
  Served s(true, 32u << 20, model.get(), &failing);
  failing.fail = true;
  auto r = s.post("/v1/completions", R"({"prompt": "Once", "max_tokens": 5, "stream": true})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);  // the stream had started
  const std::vector<std::string> data = sse_data(r->body);
  ASSERT_FALSE(data.empty()) << r->body;
  EXPECT_NE(data.back().find("injected device failure"), std::string::npos) << r->body;
  EXPECT_EQ(json::parse(data.back())["error"]["type"], "server_error");
  r = s.post("/v1/messages", R"({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_NE(r->body.find("the server cannot generate: injected device failure"), std::string::npos)
      << r->body;
  r = s.get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
}

TEST(HttpServer, ModelsAndHealth) {
  Served s;
  auto r = s.get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["data"][0]["id"], "stories260K");
  EXPECT_EQ(json::parse(r->body)["object"], "list");
  r = s.get("/v1/models", {{"anthropic-version", "2023-06-01"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["data"][0]["type"], "model");
  r = s.get("/v1/models/stories260K");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["id"], "stories260K");
  r = s.get("/v1/models/gpt-9");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_NE(r->body.find("stories260K"), std::string::npos) << r->body;
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "not_found_error");  // OpenAI's shape names it too
  r = s.get("/v1/models/gpt-9", {{"anthropic-version", "2023-06-01"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(json::parse(r->body)["type"], "error");
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "not_found_error");
  r = s.get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body), json::parse(R"({"status": "ok", "running": 0, "waiting": 0})"));
}

// A client on a raw socket asks for a greedy completion of 1900 tokens (from "Tom and Lily" stories260K
// writes that many without ending its story, about a second of work), streamed or plain, and leaves:
// streamed, after the first bytes; plain, without reading (its handler blocks until the reply is whole
// and looks every 200 ms whether the client is still connected: ClientConnection). The request must end
// long before its 1900 tokens, counted as disconnected.
void expect_a_client_that_leaves_to_cancel(bool stream) {
  Served s;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(s.port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string body =
      std::string(R"({"prompt": "Tom and Lily", "max_tokens": 1900, "temperature": 0, )") + R"("stream": )" +
      (stream ? "true}" : "false}");
  const std::string req =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::write(fd, req.data(), req.size()), ssize_t(req.size()));
  if (stream) {
    char buf[256];
    ASSERT_GT(::read(fd, buf, sizeof buf), 0);
  }
  // Up to 5 s for the request to start: under ASan with other tests on both cores, parsing and admitting
  // it took more than the 200 ms this once allowed (CI). Its 1900 tokens then take seconds, so it is
  // still running when seen.
  for (int i = 0; i < 1000 && s.service.status().running == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(s.service.status().running, 1);
  ::close(fd);
  for (int i = 0; i < 200 && s.service.status().running > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  const server::ServiceStatus st = s.service.status();
  EXPECT_EQ(st.running, 0);
  EXPECT_LT(st.stats.decode_tokens, 1500);
  // The handler counts the outcome after the service has ended the request (it learns of the end on its
  // own thread), so the count may come a moment after `running` drops: up to 5 s.
  const std::string counted = R"(mx8_requests_total{endpoint="/v1/completions",outcome="disconnected"} 1)";
  httplib::Result m = s.get("/metrics");
  for (int i = 0; i < 200 && m && m->body.find(counted) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    m = s.get("/metrics");
  }
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find(counted), std::string::npos) << m->body;
}

TEST(HttpServer, AClientThatLeavesMidStreamCancelsItsRequest) {
  expect_a_client_that_leaves_to_cancel(true);
}

TEST(HttpServer, AClientThatLeavesBeforeAPlainReplyCancelsItsRequest) {
  expect_a_client_that_leaves_to_cancel(false);
}

}  // namespace
