// `mx8 convert` and `mx8 inspect` end to end on the bundled stories260K: the converter's report (counts,
// shards, requantization, input scales, non-finite values) and inspect's summary (scales, histogram,
// comparison). The conversion's numbers are the library's and have their own tests (tests/convert);
// these hold what the commands print from them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "cli/run_mx8.h"
#include "mx8/io/safetensors_writer.h"

namespace {

namespace fs = std::filesystem;
using mx8::test::mx8_exe;

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

class ConvertCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
    if (!fs::exists(kModel)) GTEST_SKIP() << kModel << " absent";
    dir_ = fs::temp_directory_path() / ("mx8_convert_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // Standard output of `mx8 args`, which must exit with `status`; standard error is dropped.
  static std::string out_of(const std::string& args, int status = 0) {
    int st = 0;
    const std::string out = mx8::test::run_stdout(args, &st);
    EXPECT_EQ(st, status) << args << "\n" << out;
    return out;
  }
  std::string convert(const std::string& in, const std::string& out, const std::string& options = "") {
    return out_of("convert '" + in + "' '" + (dir_ / out).string() + "' " + options);
  }
  static void expect_has(const std::string& out, const std::string& what) {
    EXPECT_NE(out.find(what), std::string::npos) << what << "\n" << out;
  }
  fs::path dir_;
};

// stories260K: 5 layers of 7 linear weights are quantized (35); the embedding, the output matrix and 11
// norms are kept (13). At 128x128 blocks a layer has 10 scales (q, k, v, o one block each; gate, up and
// down, 172 long on one side, two each): 50.
TEST_F(ConvertCommand, ReportsWhatItQuantizedAndInspectCountsTheScales) {
  const std::string out = convert(kModel, "fp8", "--shard-size 0.2MiB -v");
  expect_has(out, "-> " + (dir_ / "fp8").string() +
                      ": 48 tensors (35 quantized, 0 requantized, 13 kept/cast), 3 shards\n");
  // -v lists every tensor with its shape: 48 lines and a header.
  expect_has(out, "\nmodel.layers.0.mlp.gate_proj.weight");
  expect_has(out, " [172,64]\n");
  expect_has(out, " [512,64]\n");
  EXPECT_FALSE(fs::exists(dir_ / "fp8" / "model.safetensors"));  // sharded: 0.2 MiB is 209715 bytes
  EXPECT_TRUE(fs::exists(dir_ / "fp8" / "model-00003-of-00003.safetensors"));

  const std::string report = out_of("inspect '" + (dir_ / "fp8").string() + "' --compare '" + kModel + "'");
  expect_has(report, "\n35 quantized tensors; 50 scales (0 not powers of two); ");
  expect_has(report, "\ncompared 48 tensors with " + kModel + "; lowest SQNR ");
  // The histogram's counts add up to the 50 scales.
  std::istringstream lines(report.substr(report.find("scale exponents")));
  std::string line;
  int64_t total = 0, rows = 0;
  while (std::getline(lines, line))
    if (line.rfind("    2^", 0) == 0) {
      total += std::stoll(line.substr(10));
      ++rows;
    }
  EXPECT_EQ(total, 50) << report;
  EXPECT_GE(rows, 2) << report;
}

// Converting a converted checkpoint requantizes it. From UE8M0 scales (`ceil`) to the same scheme,
// every value is kept and nothing is listed; from float scales (`--scale-rule fp32`, never powers of
// two here) every tensor changes and is listed with its error and its scales.
TEST_F(ConvertCommand, RequantizationSaysWhatChanged) {
  convert(kModel, "ue8m0");
  convert(kModel, "f32", "--scale-rule fp32");
  const std::string same = convert((dir_ / "ue8m0").string(), "again");
  EXPECT_EQ(same.find("requantize "), std::string::npos) << same;  // no tensor listed
  expect_has(same, "48 tensors (0 quantized, 35 requantized, 13 kept/cast), 1 shard\n");
  expect_has(same, "\nrequantized tensors: 35 exactly (same values), 0 with error (listed above)\n");
  expect_has(same, "\ninput scales not powers of two: 0 of 50\n");
  const std::string changed = convert((dir_ / "f32").string(), "from_f32");
  expect_has(changed, "\nmodel.layers.0.self_attn.q_proj.weight");
  expect_has(changed, " [64,64]  SQNR ");
  expect_has(changed, "  (1/1 input scales not powers of two)\n");
  expect_has(changed, "  (2/2 input scales not powers of two)\n");
  expect_has(changed, "\nrequantized tensors: 0 exactly (same values), 35 with error (listed above)\n");
  expect_has(changed, "\ninput scales not powers of two: 50 of 50\n");
  expect_has(out_of("inspect '" + (dir_ / "f32").string() + "'"),
             "\n35 quantized tensors; 50 scales (50 not powers of two); ");
}

TEST_F(ConvertCommand, ShardSizesAreReadWithTheirUnits) {
  convert(kModel, "kib", "--shard-size 100KiB");  // 102400 bytes: the file of ~0.5 MB in 6 shards
  EXPECT_TRUE(fs::exists(dir_ / "kib" / "model-00006-of-00006.safetensors"));
  for (const auto& [size, what] : std::vector<std::pair<std::string, std::string>>{
           {"5XB", "--shard-size: unknown unit \"XB\" (B, KB, MB, GB, KiB, MiB, GiB)"},
           {"0", "--shard-size must be positive"},
           {"-1GB", "--shard-size must be positive"},
           {"GB", "--shard-size: cannot read \"GB\" as a size"}}) {
    int st = 0;
    const std::string out = mx8::test::run(
        "convert '" + kModel + "' '" + (dir_ / "bad").string() + "' --shard-size " + size, &st);
    EXPECT_EQ(st, 1) << out;
    expect_has(out, what);
    EXPECT_FALSE(fs::exists(dir_ / "bad"));
  }
}

// NaN in a weight: the converter lists the tensor and counts it; inspect compares NaN with nothing,
// names the first tensor that has one, and says when every value is one.
TEST_F(ConvertCommand, NonFiniteValuesAreListedAndCounted) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> w(128 * 128, 0.5f);
  w[7] = nan;
  const std::vector<float> all_nan = {nan}, some = {1.0f, nan}, fine = {1.0f, 2.0f};
  auto bytes = [](const std::vector<float>& v) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(v.data()), v.size() * 4);
  };
  const fs::path in = dir_ / "nan.safetensors";
  mx8::io::write_safetensors(
      in.string(), {{{"model.layers.0.mlp.down_proj.weight", mx8::io::DType::F32, {128, 128}}, bytes(w)},
                    {{"a", mx8::io::DType::F32, {1}}, bytes(all_nan)},
                    {{"b", mx8::io::DType::F32, {2}}, bytes(some)},
                    {{"c", mx8::io::DType::F32, {2}}, bytes(fine)}});
  const std::string out = convert(in.string(), "nan_out", "--stats");
  expect_has(out, "model.layers.0.mlp.down_proj.weight");
  // One NaN makes its 128x128 block's scale NaN, so all 16384 values of the block come back NaN.
  expect_has(out, " [128,128]  16384 non-finite values (NaN/Inf), not exact;  (every value)\n");
  expect_has(out, "\ntensors with non-finite values (NaN/Inf, listed above): 1\n");
  expect_has(out, "4 tensors (1 quantized, 0 requantized, 3 kept/cast), 1 shard\n");

  const std::string report = out_of("inspect '" + in.string() + "' --compare '" + in.string() + "'");
  expect_has(report, " 1 non-finite (NaN/Inf) values: every one\n");                         // a
  expect_has(report, " 1 non-finite (NaN/Inf) values; the rest: SQNR exact, max|err| 0\n");  // b
  expect_has(report,
             "; 3 with non-finite (NaN/Inf) values, not exact (first: a)\n");  // file order: a, b, c, ...
}

}  // namespace
