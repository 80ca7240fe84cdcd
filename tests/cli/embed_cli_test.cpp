// `mx8 embed` prints one JSON array per text, in order, each the sentence-transformers vector of
// tests/data/hf/qwen3_embedding within 2e-6 (tests/runtime/embedding_test.cpp says why); --dimensions
// cuts and renormalizes, --no-normalize gives the hidden state as it is, and bad input is an error that
// names it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/run_mx8.h"

namespace {

using nlohmann::json;
const std::string kFixture = std::string(MX8_SOURCE_DIR) + "/tests/data/hf/qwen3_embedding";

class EmbedCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8::test::mx8_exe())) GTEST_SKIP() << mx8::test::mx8_exe() << " not built";
    std::ifstream in(kFixture + "/embeddings.json");
    ref_ = json::parse(in);
  }
  // The arrays printed, one per line.
  static std::vector<std::vector<float>> vectors(const std::string& args) {
    int st = 0;
    const std::string out = mx8::test::run_stdout("embed -m '" + kFixture + "' " + args, &st);
    EXPECT_EQ(st, 0) << out;
    std::vector<std::vector<float>> v;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      v.push_back(json::parse(line).get<std::vector<float>>());
    return v;
  }
  json ref_;
};

TEST_F(EmbedCommand, PrintsSentenceTransformersVectorsInOrder) {
  // Texts 1 and 2 as arguments, then texts 0 and 5 from a file (one per line, an empty line between).
  const auto got =
      vectors("'" + ref_["texts"][1].get<std::string>() + "' '" + ref_["texts"][2].get<std::string>() + "'");
  ASSERT_EQ(got.size(), 2u);
  for (size_t t = 0; t < 2; ++t)
    for (size_t j = 0; j < got[t].size(); ++j)
      EXPECT_NEAR(got[t][j], ref_["embeddings"][t + 1][j].get<float>(), 2e-6f);
  const auto file =
      std::filesystem::temp_directory_path() / ("mx8_embed_" + std::to_string(::getpid()) + ".txt");
  std::ofstream(file) << ref_["texts"][0].get<std::string>() << "\n\n"
                      << ref_["texts"][5].get<std::string>() << "\n";
  const auto from_file = vectors("--file '" + file.string() + "'");
  std::filesystem::remove(file);
  ASSERT_EQ(from_file.size(), 2u);  // the empty line is no text
  for (size_t j = 0; j < from_file[1].size(); ++j)
    EXPECT_NEAR(from_file[1][j], ref_["embeddings"][5][j].get<float>(), 2e-6f);
}

TEST_F(EmbedCommand, DimensionsAndNormalization) {
  const auto cut = vectors("--dimensions 8 a");
  ASSERT_EQ(cut.size(), 1u);
  ASSERT_EQ(cut[0].size(), 8u);
  double norm = 0;
  for (float x : cut[0]) norm += double(x) * x;
  EXPECT_NEAR(norm, 1.0, 1e-6);  // float rounding of eight unit-vector values
  const auto raw = vectors("--no-normalize a");
  norm = 0;
  for (float x : raw[0]) norm += double(x) * x;
  EXPECT_GT(std::abs(std::sqrt(norm) - 1.0), 0.1);  // the final norm's weights (0.6..1.4) leave it off 1
}

TEST_F(EmbedCommand, BadInputIsAnErrorThatNamesIt) {
  int st = 0;
  std::string out = mx8::test::run("embed -m '" + kFixture + "'", &st);
  EXPECT_EQ(st, 1);
  EXPECT_NE(out.find("embed: no text"), std::string::npos) << out;
  out = mx8::test::run("embed -m '" + kFixture + "' --dimensions 65 a", &st);
  EXPECT_EQ(st, 1);
  EXPECT_NE(out.find("--dimensions 65 outside 0..64"), std::string::npos) << out;
}

}  // namespace
