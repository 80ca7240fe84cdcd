// Bad input on the command line gets an error that names the problem, before anything is loaded or
// written; and `mx8 inspect --compare` of a checkpoint against itself says that every tensor is equal.
// Runs the mx8 executable built beside this test on the bundled stories260K (skips without either).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "cli/run_mx8.h"

namespace {

using mx8::test::mx8_exe;
using mx8::test::run;

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << kModel << " absent";
  }
  // `mx8 args` must fail with a message containing `what` and exit status `status`: 2 for a command line
  // that does not parse (a usage error), 1 for values mx8 refuses.
  void expect_error(const std::string& args, const std::string& what, int status = 1) {
    int st = 0;
    const std::string out = run(args, &st);
    EXPECT_EQ(st, status) << args << "\n" << out;
    EXPECT_NE(out.find(what), std::string::npos) << args << "\n" << out;
  }
};

TEST_F(BadInput, SamplingAndThreadsAreCheckedBeforeTheModelLoads) {
  const std::string run_args = "run -m '" + kModel + "' -n 2 ";
  expect_error(run_args + "--repeat-penalty 0", "repeat penalty 0 must be positive");
  expect_error(run_args + "--temperature nan", "temperature nan is not a finite number");
  expect_error(run_args + "--penalty-last-n -2", "penalty look-back -2");
  expect_error(run_args + "--threads -1", "--threads: Value -1 not in range 0 to 4096", 2);
  expect_error(run_args + "--no-such-option", "--no-such-option", 2);
  int st = 0;
  const std::string out = run(run_args + "--temperature 0 --threads 1", &st);  // the valid neighbour
  EXPECT_EQ(st, 0) << out;
}

TEST_F(BadInput, ConvertGlobsMustNameATensor) {
  const auto out_dir =
      std::filesystem::temp_directory_path() / ("mx8_bad_input_" + std::to_string(::getpid()));
  expect_error("convert '" + kModel + "' '" + out_dir.string() + "' --keep 'no_such_tensor*'",
               "--keep 'no_such_tensor*' matches no tensor");
  EXPECT_FALSE(std::filesystem::exists(out_dir));  // nothing written
}

TEST_F(BadInput, InspectCompareOfAnIdenticalCheckpointSaysSo) {
  int st = 0;
  const std::string out = run("inspect '" + kModel + "' --compare '" + kModel + "'", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("every one equal to it"), std::string::npos) << out;
}

}  // namespace
