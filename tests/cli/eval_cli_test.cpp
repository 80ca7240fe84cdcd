// `mx8 eval` end to end on the bundled stories260K and its bundled TinyStories text: the table, the
// reference perplexity against figures published for this model, the markdown section, bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cli/run_mx8.h"

namespace {

using mx8::test::mx8_exe;
using mx8::test::run;
namespace fs = std::filesystem;

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";
const std::string kText = std::string(MX8_SOURCE_DIR) + "/models/tinystories_sample.txt";

class EvalCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
    if (!fs::exists(kModel) || !fs::exists(kText)) GTEST_SKIP() << "the bundled model or text is absent";
    dir_ = fs::temp_directory_path() / ("mx8_eval_test_" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// The perplexity column of the table row that starts with `row` ("| as-given | f32 |").
double perplexity(const std::string& out, const std::string& row) {
  std::string line_start = "\n";
  line_start += row;
  const size_t at = out.find(line_start);
  if (at == std::string::npos) return -1;
  std::stringstream ss(out.substr(at + line_start.size()));
  double ppl = -1;
  ss >> ppl;
  return ppl;
}

TEST_F(EvalCli, TableAndReferencePerplexity) {
  int st = 0;
  const std::string out = run("eval --weights as-given,fp8 --kv auto,fp8 --threads 1", &st);
  ASSERT_EQ(st, 0) << out;
  // stories260K's f32 weights with an f32 KV cache: 3.5482 here. The SIMD and scalar kernels round
  // their f32 sums differently, which moves a perplexity of this text in the fifth digit at most.
  // llama2.c reports a validation loss of 1.2968 for this model (perplexity 3.66) on TinyStories'
  // validation split; this 5-story sample's 95% interval (3.29-3.82) holds that figure.
  EXPECT_NEAR(perplexity(out, "| as-given | f32 |"), 3.5482, 5e-4) << out;
  EXPECT_NE(out.find("| as-given | f32 | 3.5482 (3.29"), std::string::npos) << out;
  EXPECT_GT(perplexity(out, "| fp8 | fp8 |"), 3.5482) << out;
  EXPECT_NE(out.find("| fp8 | bf16 |"), std::string::npos) << out;
  EXPECT_NE(out.find("| as-given | fp8 |"), std::string::npos) << out;
  EXPECT_NE(out.find("5 documents, 1804 positions scored"), std::string::npos) << out;
}

TEST_F(EvalCli, MatchesTheSamplesPublishedPerplexity) {
  // ../shared/testdata's README gives "about 5.8" for this model on this sample. Its method is not
  // stated; the whole file as one text (the <|endoftext|> lines included) in windows of 128 with 64 of
  // context gives it. One decimal is given, so +-0.05.
  int st = 0;
  const std::string out = run(
      "eval --weights as-given --kv auto --separator '' --ctx 128 --threads 1 --text '" + kText + "'", &st);
  ASSERT_EQ(st, 0) << out;
  EXPECT_NEAR(perplexity(out, "| as-given | f32 |"), 5.8, 0.05) << out;
}

TEST_F(EvalCli, WritesOneSectionPerModelTextAndDevice) {
  const fs::path md = dir_ / "QUALITY.md";
  int st = 0;
  for (int i = 0; i < 2; ++i) {  // the second run replaces the section the first wrote
    const std::string out = run(
        "eval --weights fp8 --kv auto --max-tokens 200 --threads 1 --quality-md '" + md.string() + "'", &st);
    ASSERT_EQ(st, 0) << out;
  }
  std::ifstream in(md);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  EXPECT_EQ(text.rfind("# mx8 accuracy", 0), 0u) << text;
  const std::string open = "<!-- eval:stories260K.gguf:tinystories_sample.txt:cpu:fp8:auto -->";
  EXPECT_NE(text.find(open), std::string::npos) << text;
  EXPECT_EQ(text.find(open), text.rfind(open)) << "one section, replaced:\n" << text;
  EXPECT_NE(
      text.find("`mx8 eval -m models/stories260K.gguf --text models/tinystories_sample.txt --weights fp8 "
                "--kv auto --device cpu --ctx 512 --stride 256 --max-tokens 200`"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("| fp8 | bf16 |"), std::string::npos) << text;  // auto: bf16 beside FP8 weights
  // The whole text: the command says nothing of --max-tokens.
  const std::string out = run("eval --weights as-given --kv auto --quality-md '" + md.string() + "'", &st);
  ASSERT_EQ(st, 0) << out;
  std::ifstream again(md);
  const std::string whole((std::istreambuf_iterator<char>(again)), std::istreambuf_iterator<char>());
  EXPECT_NE(whole.find("--weights as-given --kv auto --device cpu --ctx 512 --stride 256`"),
            std::string::npos)
      << whole;
}

TEST_F(EvalCli, BadInputIsNamed) {
  auto expect_error = [](const std::string& args, const std::string& what) {
    int st = 0;
    const std::string out = run(args, &st);
    EXPECT_NE(st, 0) << args << "\n" << out;
    EXPECT_NE(out.find(what), std::string::npos) << args << "\n" << out;
  };
  expect_error("eval --text /tmp", "--text /tmp: is a folder, not a file");
  expect_error("eval --text /nonexistent/t.txt", "--text /nonexistent/t.txt: cannot open for reading");
  expect_error("eval --weights fp8,fp9", "fp9");
  expect_error("eval --kv fp4", "--kv fp4: expected auto, f32, bf16 or fp8");
  expect_error("eval --max-tokens -1", "--max-tokens must be >= 0");
  expect_error("eval --ctx 3", "at least 4 tokens");
  expect_error("eval --stride 1048577", "--stride: Value 1048577 not in range 0 to 1048576");
  const fs::path empty = dir_ / "empty.txt";
  std::ofstream(empty) << "\n<|endoftext|>\n   \n";
  expect_error("eval --text '" + empty.string() + "'", "nothing to score");
}

}  // namespace
