// `mx8 tokenize` prints ids one per line, from a text, a file or (with --pieces) with their vocabulary
// entries; `mx8 version` says what the binary was built with. The ids are llama.cpp's test cases for
// the Llama-2 SentencePiece vocabulary (tests/data/tokenizers/llama.cpp-vocab, the ids Hugging Face's
// tokenizer gave), which encode without BOS; with it, Llama-2's BOS (1) comes first.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/run_mx8.h"

namespace {

using mx8::test::mx8_exe;
using mx8::test::run;

const std::string kVocab =
    std::string(MX8_SOURCE_DIR) + "/tests/data/tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf";

class TokenizeCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
  }
  static std::string ok(const std::string& args) {
    int st = 0;
    const std::string out = mx8::test::run_stdout(args, &st);
    EXPECT_EQ(st, 0) << args << "\n" << out;
    return out;
  }
};

TEST_F(TokenizeCommand, PrintsTheIdsOfLlamaCppsCases) {
  // Case 18 of ggml-vocab-llama-spm.gguf.inp: " Hello, world!".
  EXPECT_EQ(ok("tokenize -m '" + kVocab + "' --no-add-special ' Hello, world!'"),
            "29871\n15043\n29892\n3186\n29991\n");
  EXPECT_EQ(ok("tokenize -m '" + kVocab + "' ' Hello, world!'"), "1\n29871\n15043\n29892\n3186\n29991\n");
  // Case 29, two lines, read verbatim from a file (no trailing newline here: it would be a token).
  const auto file =
      std::filesystem::temp_directory_path() / ("mx8_tok_" + std::to_string(::getpid()) + ".txt");
  std::ofstream(file) << "    Hello\n    Hello";
  EXPECT_EQ(ok("tokenize -m '" + kVocab + "' --no-add-special --file '" + file.string() + "'"),
            "268\n15043\n13\n1678\n15043\n");
  // --pieces: the id, a tab, its vocabulary entry (SentencePiece's U+2581 for a space, <0x0A> for the
  // newline's byte-fallback token). The first line's four spaces and the space SentencePiece puts in
  // front of the text are 268 and the start of 15043; the second line's four, 1678 and 15043's.
  EXPECT_EQ(ok("tokenize -m '" + kVocab + "' --no-add-special --pieces --file '" + file.string() + "'"),
            "268\t\u2581\u2581\u2581\u2581\n15043\t\u2581Hello\n13\t<0x0A>"
            "\n1678\t\u2581\u2581\u2581\n15043\t\u2581Hello\n");
  int st = 0;
  const std::string both = run("tokenize -m '" + kVocab + "' --file '" + file.string() + "' 'text too'", &st);
  EXPECT_EQ(st, 1) << both;
  EXPECT_NE(both.find("tokenize: give either TEXT or --file, not both"), std::string::npos) << both;
  std::filesystem::remove(file);
}

// Special-token text is a special token unless --no-parse-special; the empty text is BOS alone.
TEST_F(TokenizeCommand, SpecialTokenTextAndTheEmptyText) {
  EXPECT_EQ(ok("tokenize -m '" + kVocab + "' --no-add-special '</s>'"), "2\n");
  const std::string plain = ok("tokenize -m '" + kVocab + "' --no-add-special --no-parse-special '</s>'");
  EXPECT_NE(plain, "2\n");
  EXPECT_EQ(plain.find("2\n"), std::string::npos) << plain;
  EXPECT_EQ(ok("tokenize -m '" + kVocab + "' ''"), "1\n");
  EXPECT_EQ(ok("tokenize -m '" + kVocab + "' --no-add-special ''"), "");
  // The word "decode" right after the command is text, not `bench decode`'s device routing.
  EXPECT_EQ(ok("tokenize decode -m '" + kVocab + "' --no-add-special --pieces"), "21822\t\u2581decode\n");
}

TEST(VersionCommand, SaysTheVersionTheBackendsAndTheMachine) {
  if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
  int st = 0;
  const std::string out = run("version", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_EQ(out.rfind("mx8 0.1.0\nCUDA backend: ", 0), 0u) << out;
#ifdef MX8_HAVE_CUDA
  EXPECT_NE(out.find("CUDA backend: yes (sm_90a)\n"), std::string::npos) << out;
#else
  EXPECT_NE(out.find("CUDA backend: no\n"), std::string::npos) << out;
#endif
  EXPECT_NE(out.find("\nmachine: "), std::string::npos) << out;
  EXPECT_NE(out.find(" hardware threads"), std::string::npos) << out;
  EXPECT_EQ(run("--version", &st), "mx8 0.1.0\n");
  EXPECT_EQ(st, 0);
}

}  // namespace
