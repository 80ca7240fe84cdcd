// llama.cpp's tokenizer test cases (ids made by Hugging Face tokenizers), reproduced exactly, and
// decoding round-trips.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mx8/io/gguf.h"
#include "mx8/runtime/tokenizer.h"
#include "tokenizer/gguf_keys.h"
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

// A GGUF vocabulary as llama.cpp's converter writes one for a byte-level BPE model: the tokenizer.json's
// tokens in id order, special added tokens typed as control (3), the merges, and the pre-tokenizer's
// name. The GGUF path has its own copies of the pre-tokenizer patterns (tokenizer.json carries them
// in the file), so this is what holds those copies.
io::GgufFile gguf_vocabulary_from_tokenizer_json(const std::filesystem::path& dir, const std::string& pre) {
  std::ifstream in(dir / "tokenizer.json");
  const nlohmann::json tj = nlohmann::json::parse(in);
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  auto place = [&](size_t id, const std::string& text, int32_t type) {
    if (tokens.size() <= id) tokens.resize(id + 1), types.resize(id + 1, 1);
    tokens[id] = text, types[id] = type;
  };
  for (const auto& [text, id] : tj["model"]["vocab"].items()) place(id.get<size_t>(), text, 1);
  for (const auto& a : tj["added_tokens"])
    place(a["id"].get<size_t>(), a["content"].get<std::string>(), a["special"].get<bool>() ? 3 : 4);
  std::vector<std::string> merges;
  for (const auto& m : tj["model"]["merges"])
    merges.push_back(m.is_string() ? m.get<std::string>()
                                   : m[0].get<std::string>() + " " + m[1].get<std::string>());
  return GgufKeys()
      .string("tokenizer.ggml.model", "gpt2")
      .string("tokenizer.ggml.pre", pre)
      .strings("tokenizer.ggml.tokens", tokens)
      .numbers("tokenizer.ggml.token_type", GgufKeys::kInt32, types)
      .strings("tokenizer.ggml.merges", merges)
      .file();
}

// What a GGUF vocabulary may leave out, and what its keys say when present: SentencePiece BOS, EOS and
// UNK default to ids 1, 2 and 0 as in llama.cpp; byte-level vocabularies add BOS and EOS only when
// asked to.
TEST(GgufVocabulary, SpecialIdsDefaultsAndKeys) {
  const std::vector<std::string> spm_tokens = {"<unk>",
                                               "<s>",
                                               "</s>",
                                               "\xE2\x96\x81",
                                               "a",
                                               "\xE2\x96\x81"
                                               "a"};
  const std::vector<float> scores = {0, 0, 0, -1, -1, -2};
  auto spm = [&](GgufKeys k) {
    k.string("tokenizer.ggml.model", "llama").strings("tokenizer.ggml.tokens", spm_tokens);
    return tokenizer_from_gguf(k.numbers("tokenizer.ggml.scores", GgufKeys::kFloat32, scores).file());
  };
  auto plain = spm(GgufKeys());
  EXPECT_EQ(plain->bos_id(), 1);
  EXPECT_TRUE(plain->is_stop(2));
  EXPECT_EQ(plain->encode("a"), (std::vector<TokenId>{1, 5}));
  EXPECT_EQ(plain->encode("z", {.add_special = false}), (std::vector<TokenId>{3, 0}));  // unknown: <unk>
  auto keyed = spm(GgufKeys()
                       .uint("tokenizer.ggml.bos_token_id", 2)
                       .uint("tokenizer.ggml.eos_token_id", 1)
                       .uint("tokenizer.ggml.unknown_token_id", 4));
  EXPECT_EQ(keyed->bos_id(), 2);
  EXPECT_TRUE(keyed->is_stop(1));
  EXPECT_EQ(keyed->encode("z", {.add_special = false}), (std::vector<TokenId>{3, 4}));

  auto bpe = [&](GgufKeys k) {
    k.string("tokenizer.ggml.model", "gpt2").strings("tokenizer.ggml.tokens", {"a", "b", "<s>", "</s>"});
    return tokenizer_from_gguf(k.strings("tokenizer.ggml.merges", {})
                                   .uint("tokenizer.ggml.bos_token_id", 2)
                                   .uint("tokenizer.ggml.eos_token_id", 3)
                                   .file());
  };
  EXPECT_EQ(bpe(GgufKeys())->encode("ab"), (std::vector<TokenId>{0, 1}));
  EXPECT_EQ(bpe(GgufKeys()
                    .boolean("tokenizer.ggml.add_bos_token", true)
                    .boolean("tokenizer.ggml.add_eos_token", true))
                ->encode("ab"),
            (std::vector<TokenId>{2, 0, 1, 3}));
}

TEST(VocabCases, LlamaBpeAndQwen2FromGgufPreTokenizerNames) {
  for (const auto& [folder, pre, stem] : {std::tuple{"llama3", "llama-bpe", "ggml-vocab-llama-bpe.gguf"},
                                          std::tuple{"qwen3", "qwen2", "ggml-vocab-qwen2.gguf"}}) {
    auto dir = test::hf_tokenizer_folder(folder);
    if (dir.empty()) GTEST_SKIP() << folder << " tokenizer.json not available";
    auto tok = tokenizer_from_gguf(gguf_vocabulary_from_tokenizer_json(dir, pre));
    check_cases(*tok, stem, true);
  }
}

// DeepSeek-V3 has no case file; its GGUF form must tokenize every case text as its tokenizer.json does.
TEST(VocabCases, DeepseekV3FromGgufEqualsItsTokenizerJson) {
  auto dir = test::hf_tokenizer_folder("deepseek_v3");
  if (dir.empty()) GTEST_SKIP() << "deepseek_v3 tokenizer.json not available";
  auto json_tok = load_tokenizer(dir);
  auto gguf_tok = tokenizer_from_gguf(gguf_vocabulary_from_tokenizer_json(dir, "deepseek-v3"));
  const auto cases = test::read_vocab_cases("ggml-vocab-llama-bpe.gguf");
  ASSERT_GT(cases.size(), 30u);
  for (const auto& c : cases)
    EXPECT_EQ(show(gguf_tok->encode(c.text, {.add_special = false})),
              show(json_tok->encode(c.text, {.add_special = false})))
        << "'" << c.text << "'";
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
