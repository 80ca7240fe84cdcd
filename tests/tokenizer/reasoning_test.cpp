// Reasoning (runtime/reasoning.h): a thinking model's <think> block split from its answer, whole and
// fed in every split; which templates think.
#include "mx8/runtime/reasoning.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "tokenizer/tokenizer_test_data.h"

namespace mx8::runtime {
namespace {

// Feeds `reply` whole, in every two-piece split and byte by byte; every way must agree. Returns the
// whole-reply result.
ReasoningParser::Piece read_reply(const std::string& reply, bool opened = false, bool active = true) {
  auto run = [&](const std::vector<std::string>& pieces) {
    ReasoningParser p(active, opened);
    ReasoningParser::Piece all;
    for (const std::string& piece : pieces) {
      ReasoningParser::Piece x = p.feed(piece);
      all.reasoning += x.reasoning;
      all.text += x.text;
    }
    ReasoningParser::Piece x = p.finish();
    all.reasoning += x.reasoning;
    all.text += x.text;
    return all;
  };
  const ReasoningParser::Piece whole = run({reply});
  for (size_t cut = 0; cut <= reply.size(); ++cut) {
    const ReasoningParser::Piece two = run({reply.substr(0, cut), reply.substr(cut)});
    EXPECT_EQ(two.reasoning, whole.reasoning) << "split at " << cut;
    EXPECT_EQ(two.text, whole.text) << "split at " << cut;
  }
  std::vector<std::string> bytes;
  for (char c : reply) bytes.emplace_back(1, c);
  const ReasoningParser::Piece each = run(bytes);
  EXPECT_EQ(each.reasoning, whole.reasoning);
  EXPECT_EQ(each.text, whole.text);
  return whole;
}

TEST(ReasoningParser, TheLeadingThinkBlockIsTheReasoning) {
  auto r = read_reply("<think>\nThe user wants 2+2.\nThat is 4.\n</think>\n\nIt is 4. <think> stays text");
  EXPECT_EQ(r.reasoning, "The user wants 2+2.\nThat is 4.");
  EXPECT_EQ(r.text, "It is 4. <think> stays text");
  // The prompt opened the block (DeepSeek-R1): the reply starts inside it.
  r = read_reply("Just add.\n</think>\n\n4", /*opened=*/true);
  EXPECT_EQ(r.reasoning, "Just add.");
  EXPECT_EQ(r.text, "4");
  // Cut off while thinking: all reasoning, no text.
  r = read_reply("\n<think>\nStill going ", false);
  EXPECT_EQ(r.reasoning, "Still going ");
  EXPECT_EQ(r.text, "");
  // An empty block (Qwen3 with thinking off writes none; a model may still).
  r = read_reply("<think>\n\n</think>\n\nHi");
  EXPECT_EQ(r.reasoning, "");
  EXPECT_EQ(r.text, "Hi");
}

TEST(ReasoningParser, WhatIsNotAThinkBlockIsText) {
  for (const std::string text :
       {"Hello <think>x</think>", "<thin", "  <thinking>no</thinking>", "", "  \n"}) {
    const ReasoningParser::Piece r = read_reply(text);
    EXPECT_EQ(r.reasoning, "") << text;
    EXPECT_EQ(r.text, text);
  }
  // Inactive (the template does not think): everything is text.
  const ReasoningParser::Piece r = read_reply("<think>x</think>y", false, /*active=*/false);
  EXPECT_EQ(r.text, "<think>x</think>y");
}

TEST(Reasoning, WhichTemplatesThinkAndWhichPromptsOpenABlock) {
  const auto fx = nlohmann::json::parse(
      test::read_text(std::filesystem::path(MX8_SOURCE_DIR) / "tests" / "data" / "chat" / "fixtures.json"));
  EXPECT_TRUE(template_thinks(fx["templates"]["qwen3"]["source"]));
  for (const char* name : {"llama3", "llama2", "deepseek_v3", "mistral"})
    EXPECT_FALSE(template_thinks(fx["templates"][name]["source"])) << name;
  EXPECT_TRUE(opens_thinking("<｜User｜>Hi<｜Assistant｜><think>\n"));
  EXPECT_FALSE(opens_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
  EXPECT_FALSE(opens_thinking("<|im_start|>assistant\n"));
}

}  // namespace
}  // namespace mx8::runtime
