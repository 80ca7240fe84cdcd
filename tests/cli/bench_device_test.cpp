// `mx8 bench gemm|quantize|gemv|decode --device cpu|cuda` (src/cli/main.cpp, route_bench_device): the
// CUDA device selects the CUDA benchmark of that name, the CPU device the CPU one, anything else is
// an error that names it. Runs the mx8 executable built beside this test (skips without it); only
// --help and the errors, so nothing is measured.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "cli/run_mx8.h"

namespace {

using mx8::test::mx8_exe;
using mx8::test::run;

class BenchDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
  }
};

TEST_F(BenchDevice, CpuIsTheCpuBenchmark) {
  int st = 0;
  std::string out = run("bench gemv --device cpu --help", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("CPU FP8/MXFP8/bf16/f32 matrix-vector products"), std::string::npos) << out;
  out = run("bench quantize --device=cpu --help", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("CPU quantize/dequantize"), std::string::npos) << out;
}

TEST_F(BenchDevice, CudaIsTheCudaBenchmark) {
  int st = 0;
  const std::string out = run("bench gemv --device cuda --help", &st);
#ifdef MX8_HAVE_CUDA
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("CUDA weight-streaming GEMV"), std::string::npos) << out;
#else
  EXPECT_EQ(st, 1) << out;
  EXPECT_NE(out.find("this build has no CUDA backend"), std::string::npos) << out;
#endif
}

TEST_F(BenchDevice, UnknownDevicesAndTheCpuGemmAreErrors) {
  int st = 0;
  std::string out = run("bench gemv --device tpu", &st);
  EXPECT_EQ(st, 1) << out;
  EXPECT_NE(out.find("no benchmark for --device tpu"), std::string::npos) << out;
  out = run("bench gemm --device cpu", &st);
  EXPECT_EQ(st, 1) << out;
  EXPECT_NE(out.find("the GEMM benchmark is the GPU's"), std::string::npos) << out;
  out = run("bench gemv --device", &st);  // no device named: a usage error, not a read past the end
  EXPECT_EQ(st, 2) << out;
}

// `bench gemm` alone is the GPU's GEMM benchmark (a build without CUDA has it too, and says why it
// cannot run); the other names alone are the CPU's.
TEST_F(BenchDevice, GemmWithoutADeviceIsTheGpus) {
  int st = 0;
  std::string out = run("bench gemm --help", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("FP8 block-scaled GEMM on the GPU vs cuBLASLt"), std::string::npos) << out;
#ifndef MX8_HAVE_CUDA
  out = run("bench gemm", &st);
  EXPECT_EQ(st, 1) << out;
  EXPECT_NE(out.find("this build has no CUDA backend"), std::string::npos) << out;
#endif
  out = run("bench gemv --help", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("CPU FP8/MXFP8/bf16/f32 matrix-vector products"), std::string::npos) << out;
}

}  // namespace

// `bench decode --model FILE` times that file (its own shape in the report), and a file that is not
// there is an error that names it.
TEST_F(BenchDevice, DecodeOfAModelFile) {
  const std::string model = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";
  int st = 0;
  std::string out =
      run("bench decode --model '" + model + "' --weights fp8 --tokens 3 --warmup 1 --no-perf-md", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("stories260K.gguf` (llama, 5 layers, dim 64, ffn 172, 8/4 heads, vocab 512"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("| fp8 | "), std::string::npos) << out;
  EXPECT_NE(out.find(" - |"), std::string::npos) << out;  // no bf16 row to compare with
  out = run("bench decode --model /nonexistent/m.gguf --weights fp8 --tokens 3 --no-perf-md", &st);
  EXPECT_EQ(st, 1) << out;
  EXPECT_NE(out.find("/nonexistent/m.gguf"), std::string::npos) << out;
}
