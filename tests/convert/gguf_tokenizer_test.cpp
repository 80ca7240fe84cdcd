// The tokenizer.json written for a GGUF SentencePiece vocabulary tokenizes exactly as the GGUF's
// own vocabulary does (both read by the runtime's tokenizers: its SentencePiece-style GGUF reader
// and its tokenizer.json BPE reader), and decodes back to the same text.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "mx8/convert/gguf_to_hf.h"
#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "mx8/runtime/tokenizer.h"
#include "tokenizer/gguf_keys.h"

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void expect_same_tokenization(const fs::path& gguf_path, const std::vector<std::string>& texts) {
  auto g = mx8::io::GgufFile::open(gguf_path.string());
  auto files = mx8::convert::gguf_llama_tokenizer(g);
  ASSERT_TRUE(files);
  auto from_gguf = mx8::runtime::tokenizer_from_gguf(gguf_path);
  auto from_json =
      mx8::runtime::tokenizer_from_hf_json(files->tokenizer_json, files->tokenizer_config_json, "generated");
  ASSERT_EQ(from_json->vocab_size(), from_gguf->vocab_size());
  for (const auto& text : texts) {
    auto a = from_gguf->encode(text);
    auto b = from_json->encode(text);
    ASSERT_EQ(a, b) << gguf_path.filename() << ": \"" << text.substr(0, 60) << "\"";
    EXPECT_EQ(from_json->decode(b), from_gguf->decode(a));
  }
}

}  // namespace

TEST(GgufTokenizer, Stories260KVocabularyTokenizesTheSameAsTokenizerJson) {
  const fs::path root = MX8_SOURCE_DIR;
  const fs::path gguf = root / "models/stories260K.gguf";
  if (!fs::exists(gguf)) GTEST_SKIP() << gguf << " is absent";
  std::vector<std::string> texts = {"Once upon a time, there was a little girl named Lily.",
                                    "",
                                    " ",
                                    "  two  spaces",
                                    "tab\there\nnew line",
                                    "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80",
                                    "<s> not special in text </s>"};
  const fs::path sample = root / "../shared/testdata/text/tinystories_sample.txt";
  if (fs::exists(sample)) {
    std::istringstream lines(read_text(sample));
    for (std::string line; std::getline(lines, line);) texts.push_back(line);
  }
  expect_same_tokenization(gguf, texts);
}

TEST(GgufTokenizer, Llama2VocabularyTokenizesTheSameAsTokenizerJson) {
  const fs::path root = MX8_SOURCE_DIR;
  const fs::path dir = root / "../shared/testdata/tokenizers/llama.cpp-vocab";
  const fs::path gguf = dir / "ggml-vocab-llama-spm.gguf";
  if (!fs::exists(gguf)) GTEST_SKIP() << gguf << " is absent";
  std::vector<std::string> texts;
  const std::string inp = read_text(dir / "ggml-vocab-llama-spm.gguf.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0; pos <= inp.size();) {
    size_t next = inp.find(sep, pos);
    texts.push_back(inp.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    if (next == std::string::npos) break;
    pos = next + sep.size();
  }
  EXPECT_GT(texts.size(), 40u);
  expect_same_tokenization(gguf, texts);
}

namespace {

using mx8::runtime::GgufKeys;
using nlohmann::json;

// A small SentencePiece vocabulary whose scores are not in vocabulary order, with ties, a
// user-defined piece, an unused one and control tokens. Type codes as GGUF writes them: 1 normal,
// 2 unknown, 3 control, 4 user-defined, 5 unused.
GgufKeys small_vocab() {
  const std::string sp = "\xE2\x96\x81";  // U+2581
  GgufKeys g;
  g.string("tokenizer.ggml.model", "llama")
      .strings("tokenizer.ggml.tokens",
               {"<unk>", "<s>", "</s>", sp, "a", "b", "ab", sp + "a", sp + "ab", "ba", "aba", "bb", "aa"})
      .numbers<float>("tokenizer.ggml.scores", GgufKeys::kFloat32,
                      {0, 0, 0, -1, -2, -3, -5, -4, -4, -6, -0.5f, -7, 0})
      .numbers<int32_t>("tokenizer.ggml.token_type", GgufKeys::kInt32,
                        {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 5});
  return g;
}

std::string error_of(const GgufKeys& g) {
  try {
    mx8::convert::gguf_llama_tokenizer(g.file());
  } catch (const mx8::Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

// The merges as transformers' SentencePiece extractor orders them, worked by hand: every split of
// a normal or user-defined piece into two pieces of the vocabulary; pieces by score, best first,
// ties in vocabulary order (Python's sort is stable also when reversed); one piece's splits by the
// ids of their parts. "aa" is unused, so it yields none.
TEST(GgufTokenizer, MergesFollowTheScoresThenTheIdsOfTheParts) {
  auto files = mx8::convert::gguf_llama_tokenizer(small_vocab().file());
  ASSERT_TRUE(files);
  const json j = json::parse(files->tokenizer_json);
  const std::string sp = "\xE2\x96\x81";
  const json expected = json::array({{"a", "ba"},      // aba, -0.5: a(4) + ba(9) before ab(6) + a(4)
                                     {"ab", "a"},      //
                                     {sp, "a"},        // _a, -4
                                     {sp, "ab"},       // _ab, -4 (a tie: after _a): _(3) + ab(6)
                                     {sp + "a", "b"},  //   then _a(7) + b(5)
                                     {"a", "b"},       // ab, -5
                                     {"b", "a"},       // ba, -6
                                     {"b", "b"}});     // bb, -7, user-defined
  EXPECT_EQ(j["model"]["merges"], expected);
  EXPECT_EQ(j["model"]["vocab"].size(), 13u);
  EXPECT_EQ(j["model"]["vocab"]["aba"], 10);
  GgufKeys no_merges;  // no piece splits into two others: an empty list, not a missing one
  no_merges.string("tokenizer.ggml.model", "llama")
      .strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a"});
  EXPECT_EQ(
      json::parse(mx8::convert::gguf_llama_tokenizer(no_merges.file())->tokenizer_json)["model"]["merges"],
      json::array());
}

// The rest of tokenizer.json and tokenizer_config.json: what transformers' Llama converter writes
// for a SentencePiece BPE vocabulary, with the special tokens of the GGUF's keys (or its defaults,
// ids 1, 2 and 0, which are small_vocab's <s>, </s> and <unk>).
TEST(GgufTokenizer, SpecialTokensAndTheFilesOtherFields) {
  auto files = mx8::convert::gguf_llama_tokenizer(small_vocab().file());
  ASSERT_TRUE(files);
  const json j = json::parse(files->tokenizer_json), c = json::parse(files->tokenizer_config_json);
  for (const char* key : {"truncation", "padding", "pre_tokenizer"}) {
    ASSERT_TRUE(j.contains(key)) << key;
    EXPECT_TRUE(j[key].is_null()) << key;
  }
  ASSERT_EQ(j["added_tokens"].size(), 3u);  // the unknown and the two control tokens
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(j["added_tokens"][i]["id"], i);
    EXPECT_EQ(j["added_tokens"][i]["special"], true);
  }
  EXPECT_EQ(j["post_processor"]["single"][0]["SpecialToken"]["id"], "<s>");
  EXPECT_EQ(j["post_processor"]["pair"][1]["Sequence"], json({{"id", "A"}, {"type_id", 0}}));
  EXPECT_EQ(j["post_processor"]["pair"][2]["SpecialToken"], json({{"id", "<s>"}, {"type_id", 1}}));
  EXPECT_EQ(j["post_processor"]["pair"][3]["Sequence"], json({{"id", "B"}, {"type_id", 1}}));
  EXPECT_EQ(j["post_processor"]["special_tokens"]["<s>"]["ids"], json::array({1}));
  const json& m = j["model"];
  EXPECT_EQ(m["type"], "BPE");
  EXPECT_EQ(m["unk_token"], "<unk>");
  EXPECT_TRUE(m.contains("continuing_subword_prefix") && m["continuing_subword_prefix"].is_null());
  EXPECT_EQ(m["byte_fallback"], true);
  EXPECT_EQ(c["add_bos_token"], true);
  EXPECT_EQ(c["add_eos_token"], false);
  EXPECT_EQ(c["bos_token"], "<s>");
  EXPECT_EQ(c["eos_token"], "</s>");
  EXPECT_EQ(c["unk_token"], "<unk>");
  EXPECT_EQ(c["model_max_length"], 2048);

  GgufKeys g = small_vocab();
  g.uint("tokenizer.ggml.bos_token_id", 3)
      .uint("tokenizer.ggml.eos_token_id", 4)
      .uint("tokenizer.ggml.unknown_token_id", 5)
      .boolean("tokenizer.ggml.add_bos_token", false)
      .boolean("tokenizer.ggml.add_eos_token", true)
      .uint("llama.context_length", 512);
  auto given = mx8::convert::gguf_llama_tokenizer(g.file());
  ASSERT_TRUE(given);
  const json j2 = json::parse(given->tokenizer_json), c2 = json::parse(given->tokenizer_config_json);
  EXPECT_EQ(j2["post_processor"]["special_tokens"]["\xE2\x96\x81"]["ids"], json::array({3}));
  EXPECT_EQ(j2["model"]["unk_token"], "b");
  EXPECT_EQ(c2["add_bos_token"], false);
  EXPECT_EQ(c2["add_eos_token"], true);
  EXPECT_EQ(c2["eos_token"], "a");
  EXPECT_EQ(c2["unk_token"], "b");
  EXPECT_EQ(c2["model_max_length"], 512);
}

TEST(GgufTokenizer, BadVocabulariesAreRefusedByName) {
  GgufKeys other;
  other.string("tokenizer.ggml.model", "gpt2").strings("tokenizer.ggml.tokens", {"a"});
  EXPECT_FALSE(mx8::convert::gguf_llama_tokenizer(other.file()));
  for (int64_t id : {-1, 13}) {
    GgufKeys g = small_vocab();
    g.key("tokenizer.ggml.eos_token_id", GgufKeys::kInt32).put(&id, 4);
    EXPECT_NE(error_of(g).find("special token id " + std::to_string(id) + " out of range"), std::string::npos)
        << error_of(g);
  }
  GgufKeys scores;
  scores.string("tokenizer.ggml.model", "llama")
      .strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"})
      .numbers<float>("tokenizer.ggml.scores", GgufKeys::kFloat32, {0, 0});
  EXPECT_NE(error_of(scores).find("tokenizer.ggml.scores does not match the tokens"), std::string::npos);
  GgufKeys types;
  types.string("tokenizer.ggml.model", "llama")
      .strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>"})
      .numbers<int32_t>("tokenizer.ggml.token_type", GgufKeys::kInt32, {2, 3, 3, 1});
  EXPECT_NE(error_of(types).find("tokenizer.ggml.token_type does not match the tokens"), std::string::npos);
}
