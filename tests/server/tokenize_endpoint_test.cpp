// vLLM's /tokenize and /detokenize on stories260K: a prompt with and without the tokenizer's framing
// (BOS), a chat request rendered as /v1/chat/completions renders it, the vocabulary's pieces, the ids
// back to text, and the errors.
#include <gtest/gtest.h>

#include "server/http_fixture.h"

namespace {

using namespace mx8;
using namespace mx8::testing;

json ok(Served& s, const std::string& path, const json& body) {
  auto r = s.post(path, body.dump());
  EXPECT_TRUE(r);
  if (!r) return json();
  EXPECT_EQ(r->status, 200) << r->body;
  return json::parse(r->body);
}

TEST(TokenizeEndpoints, PromptsAndChatRequests) {
  Served s;
  const std::vector<int32_t> framed = stories().tok->encode("Once upon a time");
  ASSERT_EQ(framed.front(), stories().tok->bos_id());
  json r = ok(s, "/tokenize", {{"prompt", "Once upon a time"}, {"return_token_strs", true}});
  EXPECT_EQ(r["tokens"].get<std::vector<int32_t>>(), framed);
  EXPECT_EQ(r["count"], framed.size());
  EXPECT_EQ(r["max_model_len"], kContext);
  EXPECT_EQ(r["token_strs"][1], "\u2581Once");  // SentencePiece's space mark, as the vocabulary has it
  r = ok(s, "/tokenize", {{"prompt", "Once upon a time"}, {"add_special_tokens", false}});
  EXPECT_EQ(r["tokens"].get<std::vector<int32_t>>(), std::vector<int32_t>(framed.begin() + 1, framed.end()));
  EXPECT_TRUE(r["token_strs"].is_null());
  // A chat request: the template's rendering with the generation prompt, no framing added, as
  // /v1/messages/count_tokens counts it.
  const json messages = json::parse(R"([{"role": "user", "content": "A cat"}])");
  runtime::EncodeOptions enc;
  enc.add_special = false;
  const std::vector<int32_t> chat = stories().tok->encode(
      runtime::ChatTemplate(kTemplate).render(messages, {{"add_generation_prompt", true}}), enc);
  EXPECT_EQ(ok(s, "/tokenize", {{"messages", messages}})["tokens"].get<std::vector<int32_t>>(), chat);
  // And back: the ids' text, special tokens included as their text.
  EXPECT_EQ(ok(s, "/detokenize", {{"tokens", framed}})["prompt"], stories().tok->decode(framed));
  EXPECT_EQ(ok(s, "/detokenize", {{"tokens", {403, 407}}})["prompt"], "Once upon");
}

TEST(TokenizeEndpoints, ErrorsNameTheField) {
  Served s;
  auto param = [&](const std::string& path, const json& body) {
    auto r = s.post(path, body.dump());
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, 400) << r->body;
    return json::parse(r->body)["error"]["param"];
  };
  EXPECT_EQ(param("/tokenize", json::object()), "prompt");
  EXPECT_EQ(param("/tokenize", {{"prompt", 5}}), "prompt");
  EXPECT_EQ(param("/tokenize", {{"prompt", "a"}, {"add_special_tokens", "yes"}}), "add_special_tokens");
  EXPECT_EQ(param("/tokenize", {{"messages", json::array()}}), "messages");
  EXPECT_EQ(param("/detokenize", json::object()), "tokens");
  EXPECT_EQ(param("/detokenize", {{"tokens", "abc"}}), "tokens");
  EXPECT_EQ(param("/detokenize", {{"tokens", {1, 1000000}}}), "tokens");
  EXPECT_EQ(param("/detokenize", {{"tokens", {{1}, {2}}}}), "tokens");
}

}  // namespace
