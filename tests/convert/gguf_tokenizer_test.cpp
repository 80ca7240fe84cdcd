// The tokenizer.json written for a GGUF SentencePiece vocabulary tokenizes exactly as the GGUF's
// own vocabulary does (both read by the runtime's tokenizers: its SentencePiece-style GGUF reader
// and its tokenizer.json BPE reader), and decodes back to the same text.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "mx8/convert/gguf_to_hf.h"
#include "mx8/io/gguf.h"
#include "mx8/runtime/tokenizer.h"

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
