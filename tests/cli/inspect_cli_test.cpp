// `mx8 inspect` on checkpoints with empty tensors: an FP8 weight of 0 rows has no scales, and a file of
// empty tensors has nothing to compare with BF16 (the first read the first of no scale exponents and
// crashed; the second divided by 0 bytes).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/run_mx8.h"
#include "mx8/io/safetensors_writer.h"

namespace {

using mx8::io::DType;

class InspectCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8::test::mx8_exe())) GTEST_SKIP() << mx8::test::mx8_exe() << " not built";
  }
  void TearDown() override { std::filesystem::remove(file_); }
  std::string inspect(const std::vector<mx8::io::TensorData>& tensors) {
    mx8::io::write_safetensors(file_.string(), tensors);
    int st = 0;
    const std::string out = mx8::test::run("inspect '" + file_.string() + "'", &st);
    EXPECT_EQ(st, 0) << out;
    return out;
  }
  const std::filesystem::path file_ = std::filesystem::temp_directory_path() /
                                      ("mx8_inspect_cli_" + std::to_string(::getpid()) + ".safetensors");
};

TEST_F(InspectCommand, AnEmptyFp8WeightHasNoScaleRange) {
  const std::vector<float> norm = {1.0f, 2.0f};
  const std::string out =
      inspect({{{"w.weight", DType::F8_E4M3, {0, 128}}, {}},
               {{"w.weight_scale_inv", DType::F32, {0, 1}}, {}},
               {{"n.weight", DType::F32, {2}}, {reinterpret_cast<const uint8_t*>(norm.data()), 8}}});
  const size_t row = out.find("\nw.weight ");
  ASSERT_NE(row, std::string::npos) << out;
  const std::string line = out.substr(row + 1, out.find('\n', row + 1) - row - 1);
  EXPECT_NE(line.find(" sat 0.000%"), std::string::npos) << line;
  EXPECT_EQ(line.find("scales 2^"), std::string::npos) << line;
  EXPECT_NE(out.find("1 quantized tensors; 0 scales (0 not powers of two); 0.0000% of codes"),
            std::string::npos)
      << out;
  // 8 bytes of F32 (the empty weight and its scales add none) are 4 in BF16: twice that.
  EXPECT_NE(out.find("same model in BF16  0.000 MB   -> this file is 200.0% of it"), std::string::npos)
      << out;
}

TEST_F(InspectCommand, AFileOfEmptyTensorsComparesWithNothing) {
  const std::string out = inspect({{{"e", DType::F32, {0, 4}}, {}}});
  EXPECT_NE(out.find("total tensor bytes  0.000 MB\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("same model in"), std::string::npos) << out;
  EXPECT_EQ(out.find("nan"), std::string::npos) << out;
}

}  // namespace
