// ThinkingBudget on Qwen3's real vocabulary (where <think> and </think> are one token each) and on
// stories260K's SentencePiece one: a reply's reasoning is closed after exactly `budget` tokens inside
// its block, and nothing else is ever touched.
#include "mx8/runtime/thinking_budget.h"

#include <gtest/gtest.h>

#include <cmath>

#include "mx8/runtime/json_constraint.h"
#include "tokenizer_test_data.h"

namespace mx8::runtime {
namespace {

std::unique_ptr<Tokenizer> qwen3() {
  const auto dir = test::hf_tokenizer_folder("qwen3");
  return dir.empty() ? nullptr : load_tokenizer(dir);
}

std::vector<int32_t> ids(const Tokenizer& tok, const std::string& text) {
  return tok.encode(text, {.add_special = false});
}

// The one token `mask` leaves, or -1 when it leaves several (or none).
int32_t only_token(TokenConstraint& rule, size_t vocab) {
  std::vector<float> logits(vocab, 0.0f);
  rule.mask(logits);
  int32_t left = -1;
  for (size_t i = 0; i < vocab; ++i) {
    if (std::isinf(logits[i])) continue;
    if (left >= 0) return -1;
    left = int32_t(i);
  }
  return left;
}

// Feeds `tokens` as the model's own draws (each allowed by the mask), then the forced ones until the
// rule lets go; returns all of them. Fails if the rule forces anything before `free_for` tokens.
std::vector<int32_t> run(ThinkingBudget& rule, const Tokenizer& tok, const std::vector<int32_t>& tokens,
                         size_t free_for) {
  std::vector<int32_t> out;
  for (int32_t t : tokens) {
    if (rule.holds_next()) break;
    std::vector<float> logits(tok.vocab_size(), 0.0f);
    rule.mask(logits);  // holds nothing: leaves every token
    EXPECT_EQ(std::count_if(logits.begin(), logits.end(), [](float x) { return std::isinf(x); }), 0);
    rule.accept(t);
    out.push_back(t);
  }
  EXPECT_GE(out.size(), free_for);
  while (rule.holds_next()) {
    const int32_t t = only_token(rule, tok.vocab_size());
    EXPECT_GE(t, 0);
    if (t < 0) break;
    rule.accept(t);
    out.push_back(t);
  }
  return out;
}

ReasoningParser::Piece split(const Tokenizer& tok, const std::vector<int32_t>& reply) {
  ReasoningParser p(true, false);
  ReasoningParser::Piece a = p.feed(tok.decode(reply)), b = p.finish();
  return {a.reasoning + b.reasoning, a.text + b.text};
}

// `s` without the whitespace around it (which the reasoning drops).
std::string trimmed(const std::string& s) {
  const size_t a = s.find_first_not_of(" \n"), b = s.find_last_not_of(" \n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

const std::string kLongThought =
    "<think>\nThe user asks for the sum. Two plus three is five, but let me check it once more, and then "
    "again, because I am careful about such things and like to be sure.\n</think>\n\nIt is 5.";

TEST(ThinkingBudget, Qwen3ClosesTheBlockAfterExactlyTheBudget) {
  const auto tok = qwen3();
  if (!tok) GTEST_SKIP() << "no qwen3 tokenizer data";
  const auto close = std::make_shared<const std::vector<int32_t>>(thinking_close_tokens(*tok));
  // "\n", "</think>", "\n\n": Qwen3's own way of ending a block, its tag one token.
  ASSERT_EQ(close->size(), 3u);
  EXPECT_EQ(tok->decode(*close), "\n</think>\n\n");
  const std::vector<int32_t> reply = ids(*tok, kLongThought);
  ASSERT_EQ(reply[0], ids(*tok, "<think>")[0]);  // one token: the block's first

  for (int64_t budget : {1, 2, 10}) {
    ThinkingBudget rule(*tok, close, budget, false, nullptr);
    const std::vector<int32_t> got = run(rule, *tok, reply, size_t(budget));
    // The budget's tokens (<think> is the first), then the close; nothing after (the test's run stops
    // when the rule lets go, where the model would go on to answer).
    ASSERT_EQ(got.size(), size_t(budget) + close->size()) << budget;
    EXPECT_TRUE(std::equal(reply.begin(), reply.begin() + budget, got.begin()));
    EXPECT_TRUE(std::equal(close->begin(), close->end(), got.begin() + budget));
    EXPECT_EQ(rule.spent(), budget);
    const ReasoningParser::Piece p = split(*tok, got);
    EXPECT_EQ(p.reasoning,
              trimmed(tok->decode(std::vector<int32_t>(reply.begin() + 1, reply.begin() + budget))));
    EXPECT_EQ(p.text, "");
  }
}

TEST(ThinkingBudget, Qwen3LeavesRepliesThatFitAlone) {
  const auto tok = qwen3();
  if (!tok) GTEST_SKIP() << "no qwen3 tokenizer data";
  const auto close = std::make_shared<const std::vector<int32_t>>(thinking_close_tokens(*tok));
  const std::vector<int32_t> reply = ids(*tok, kLongThought);
  const size_t inside = ids(*tok, kLongThought.substr(0, kLongThought.find("\n</think>"))).size();
  // A budget the block fits in: every token passes untouched, including the answer's.
  ThinkingBudget fits(*tok, close, int64_t(inside) + 1, false, nullptr);
  EXPECT_EQ(run(fits, *tok, reply, reply.size()), reply);
  // An answer with no block is not reasoning, however long it runs past the budget.
  const std::vector<int32_t> plain = ids(*tok, "It is 5, and that is all there is to say about it.");
  ThinkingBudget none(*tok, close, 2, false, nullptr);
  EXPECT_EQ(run(none, *tok, plain, plain.size()), plain);
  EXPECT_EQ(none.spent(), 0);
}

TEST(ThinkingBudget, APromptThatOpensTheBlock) {
  const auto tok = qwen3();
  if (!tok) GTEST_SKIP() << "no qwen3 tokenizer data";
  const auto close = std::make_shared<const std::vector<int32_t>>(thinking_close_tokens(*tok));
  const std::vector<int32_t> thought = ids(*tok, "Two plus three is five.\n</think>\n\nIt is 5.");
  ThinkingBudget zero(*tok, close, 0, true, nullptr);  // no reasoning at all: closed at once
  EXPECT_TRUE(zero.holds_next());
  EXPECT_EQ(run(zero, *tok, thought, 0), *close);
  ThinkingBudget three(*tok, close, 3, true, nullptr);
  const std::vector<int32_t> got = run(three, *tok, thought, 3);
  ASSERT_EQ(got.size(), 3 + close->size());
  EXPECT_TRUE(std::equal(thought.begin(), thought.begin() + 3, got.begin()));
}

TEST(ThinkingBudget, TheFormatHoldsTheAnswerAfterTheClose) {
  const auto tok = qwen3();
  if (!tok) GTEST_SKIP() << "no qwen3 tokenizer data";
  const auto close = std::make_shared<const std::vector<int32_t>>(thinking_close_tokens(*tok));
  const auto vocab = std::make_shared<const JsonVocabulary>(*tok);
  const JsonConstraint json(vocab, JsonMatcher(std::make_shared<const JsonSchema>(JsonSchema::any_object()),
                                               {true, false, {}, "", ""}));
  ThinkingBudget rule(*tok, close, 4, false, &json);
  EXPECT_TRUE(rule.holds_next());  // the format holds every token
  const std::vector<int32_t> reply = ids(*tok, kLongThought);
  std::vector<int32_t> got;
  for (size_t i = 0; i < 4; ++i) {
    rule.accept(reply[i]);
    got.push_back(reply[i]);
  }
  for (int32_t t : *close) {
    ASSERT_EQ(only_token(rule, tok->vocab_size()), t);
    rule.accept(t);
    got.push_back(t);
  }
  // Past the close, the mask is the format's alone: that of a matcher fed the same text.
  JsonMatcher m(std::make_shared<const JsonSchema>(JsonSchema::any_object()), {true, false, {}, "", ""});
  for (char c : tok->decode(got)) ASSERT_TRUE(m.feed(uint8_t(c)));
  JsonConstraint fresh(vocab, m);
  std::vector<float> want(tok->vocab_size(), 0.0f), have(tok->vocab_size(), 0.0f);
  fresh.mask(want);
  rule.mask(have);
  EXPECT_EQ(want, have);
  EXPECT_FALSE(std::isinf(have[size_t(ids(*tok, "{")[0])]));  // the object may open
  EXPECT_TRUE(std::isinf(have[size_t(ids(*tok, "It")[0])]));  // prose may not
}

TEST(ThinkingBudget, CloneCarriesTheState) {
  const auto tok = qwen3();
  if (!tok) GTEST_SKIP() << "no qwen3 tokenizer data";
  const auto close = std::make_shared<const std::vector<int32_t>>(thinking_close_tokens(*tok));
  const std::vector<int32_t> reply = ids(*tok, kLongThought);
  ThinkingBudget rule(*tok, close, 6, false, nullptr);
  for (size_t i = 0; i < 5; ++i) rule.accept(reply[i]);
  std::unique_ptr<TokenConstraint> copy = rule.clone();
  EXPECT_FALSE(copy->holds_next());
  copy->accept(reply[5]);  // the sixth: the budget is spent
  EXPECT_TRUE(copy->holds_next());
  EXPECT_FALSE(rule.holds_next());  // the original is where it was
  EXPECT_EQ(only_token(*copy, tok->vocab_size()), (*close)[0]);
}

TEST(ThinkingBudget, SentencePieceSpellsTheCloseInPieces) {
  const auto tok = load_tokenizer(std::filesystem::path(MX8_SOURCE_DIR) / "models" / "stories260K.gguf");
  const auto close = std::make_shared<const std::vector<int32_t>>(thinking_close_tokens(*tok));
  ASSERT_GT(close->size(), 3u);  // no </think> token in a 512-token vocabulary
  const std::vector<int32_t> reply = ids(*tok, kLongThought);
  ThinkingBudget rule(*tok, close, 8, false, nullptr);
  const std::vector<int32_t> got = run(rule, *tok, reply, 1);
  EXPECT_EQ(rule.spent(), 8);
  // "<think>" comes in pieces here; those before the one that completes it are not reasoning, so more
  // than 8 of the reply's tokens pass before the close.
  ASSERT_GT(got.size(), 8 + close->size());
  EXPECT_TRUE(std::equal(close->begin(), close->end(), got.end() - ptrdiff_t(close->size())));
  const ReasoningParser::Piece p = split(*tok, got);
  EXPECT_FALSE(p.reasoning.empty());
  EXPECT_EQ(p.text, "");  // the block is closed: what the model writes next is the answer
}

}  // namespace
}  // namespace mx8::runtime
