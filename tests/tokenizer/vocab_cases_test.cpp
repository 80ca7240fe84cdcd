// llama.cpp's tokenizer test cases (ids made by Hugging Face tokenizers), reproduced exactly, and
// decoding round-trips.
#include <gtest/gtest.h>

#include "mx8/runtime/tokenizer.h"
#include "tokenizer/tokenizer_test_data.h"

namespace mx8::runtime {
namespace {

std::string show(const std::vector<TokenId>& v) {
  std::string s;
  for (auto x : v) s += " " + std::to_string(x);
  return s;
}

void check_cases(const Tokenizer& tok, const std::string& stem, bool round_trip_exact) {
  auto cases = test::read_vocab_cases(stem);
  ASSERT_GT(cases.size(), 30u) << stem;
  size_t failures = 0;
  EncodeOptions plain{.add_special = false};
  for (auto& c : cases) {
    std::vector<TokenId> ids = tok.encode(c.text, plain);
    std::vector<TokenId> want(c.ids.begin(), c.ids.end());
    if (ids != want) {
      ++failures;
      ADD_FAILURE() << stem << ": text '" << c.text << "'\n  want" << show(want) << "\n  got " << show(ids);
    }
    if (round_trip_exact) {
      EXPECT_EQ(tok.decode(ids), c.text) << stem;
    }
  }
  EXPECT_EQ(failures, 0u);
}

TEST(VocabCases, LlamaBpeFromTokenizerJson) {
  auto dir = test::hf_tokenizer_folder("llama3");
  if (dir.empty()) GTEST_SKIP() << "llama3 tokenizer.json not available";
  auto tok = load_tokenizer(dir);
  check_cases(*tok, "ggml-vocab-llama-bpe.gguf", true);
}

TEST(VocabCases, Qwen2FromQwen3TokenizerJson) {
  auto dir = test::hf_tokenizer_folder("qwen3");
  if (dir.empty()) GTEST_SKIP() << "qwen3 tokenizer.json not available";
  auto tok = load_tokenizer(dir);
  check_cases(*tok, "ggml-vocab-qwen2.gguf", true);
}

TEST(VocabCases, Gpt2FromGguf) {
  auto path = test::vocab_case_dir() / "ggml-vocab-gpt-2.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "ggml-vocab-gpt-2.gguf not available";
  auto tok = load_tokenizer(path);
  check_cases(*tok, "ggml-vocab-gpt-2.gguf", true);
}

TEST(VocabCases, LlamaSpmFromGguf) {
  auto path = test::vocab_case_dir() / "ggml-vocab-llama-spm.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "ggml-vocab-llama-spm.gguf not available";
  auto tok = load_tokenizer(path);
  check_cases(*tok, "ggml-vocab-llama-spm.gguf", true);
}

TEST(VocabCases, DeepseekLlmHasNoVocabulary) {
  // The DeepSeek-LLM cases need DeepSeek-LLM's own 102400-token vocabulary, which the test data
  // does not include (deepseek_v3/ is a different tokenizer). Fail loudly if it ever appears, so
  // the cases get wired up.
  bool present = std::filesystem::exists(test::vocab_case_dir() / "ggml-vocab-deepseek-llm.gguf") ||
                 std::filesystem::exists(test::shared_tokenizer_dir() / "deepseek-llm");
  if (!present) GTEST_SKIP() << "no DeepSeek-LLM vocabulary in the test data: its cases cannot be run";
  FAIL() << "a DeepSeek-LLM vocabulary is now present: add its cases";
}

}  // namespace
}  // namespace mx8::runtime
