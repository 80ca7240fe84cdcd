// Bad input on the command line gets an error that names the problem, before anything is loaded or
// written; and `mx8 inspect --compare` of a checkpoint against itself says that every tensor is equal.
// Runs the mx8 executable built beside this test on the bundled stories260K (skips without either).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/run_mx8.h"

namespace {

using mx8::test::mx8_command;
using mx8::test::mx8_exe;
using mx8::test::run;
using mx8::test::run_stdout;

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
  expect_error(run_args + "--chunk -1", "--chunk must be positive (or 0: the device's default)");
  expect_error(run_args + "--attention fast", "--attention fast: expected exact or rounded");
  expect_error(run_args + "--kv f16", "--kv f16: expected auto, f32, bf16 or fp8");
  // Refused before the weights load: the memory plan, printed just before, is not there either.
  int st = 0;
  EXPECT_EQ(run(run_args + "--kv f16", &st).find("memory plan"), std::string::npos);
  expect_error(run_args + "--no-such-option", "--no-such-option", 2);
  // strtoull would take -1 and 2^64 for 2^64 - 1: two seeds that look different but are one.
  expect_error(run_args + "--seed -1", "a seed is a whole number", 2);
  expect_error(run_args + "--seed 18446744073709551616", "a seed is a whole number", 2);
  const std::string out =
      run(run_args + "--temperature 0 --threads 1 --seed 18446744073709551615", &st);  // the valid neighbours
  EXPECT_EQ(st, 0) << out;
  for (const char* spec : {"300", "300=", "=1", "x=1", "-3=1", "300=nan", "300=1x", "2147483648=1"})
    expect_error(run_args + "--logit-bias=" + spec, "expected TOKEN_ID=BIAS", 2);
  expect_error(run_args + "--logit-bias 3=1 --logit-bias 3=-2", "token 3 has two logit biases");
  expect_error(run_args + "--logit-bias 600=1", "token 600, outside the vocabulary of 512 tokens");
}

// --logit-bias reaches the sampler: greedy with token 300 raised by 10 (and 301 written "+5") is not
// the unbiased text, and the same bias twice gives the same text.
TEST_F(BadInput, LogitBiasChangesAGreedyRun) {
  const std::string run_args = "run -m '" + kModel + "' -n 24 --temperature 0 --threads 1 ";
  int st = 0;
  const std::string plain = run_stdout(run_args, &st);
  ASSERT_EQ(st, 0) << plain;
  const std::string biased = run_stdout(run_args + "--logit-bias 300=10 --logit-bias 301=+5", &st);
  ASSERT_EQ(st, 0) << biased;
  EXPECT_NE(biased, plain);
  EXPECT_EQ(run_stdout(run_args + "--logit-bias 300=10 --logit-bias 301=+5", &st), biased);
}

TEST_F(BadInput, ConvertGlobsMustNameATensor) {
  const auto out_dir =
      std::filesystem::temp_directory_path() / ("mx8_bad_input_" + std::to_string(::getpid()));
  expect_error("convert '" + kModel + "' '" + out_dir.string() + "' --keep 'no_such_tensor*'",
               "--keep 'no_such_tensor*' matches no tensor");
  EXPECT_FALSE(std::filesystem::exists(out_dir));  // nothing written
}

// Ranges are named in the error (CLI11's PositiveNumber and NonNegativeNumber printed DBL_MAX's 309
// digits as the upper bound).
TEST_F(BadInput, RangesOfThreadsAndTimesAreNamed) {
  expect_error("convert '" + kModel + "' /tmp/unused --threads -1",
               "--threads: Value -1 not in range 0 to 4096", 2);
  expect_error("inspect '" + kModel + "' --threads 5000", "--threads: Value 5000 not in range 0 to 4096", 2);
  expect_error("bench gemv --min-time 0", "--min-time: Value 0 not in range 0.010000 to 3600.000000", 2);
  expect_error("bench quantize --min-time -1", "--min-time: Value -1 not in range 0.010000 to 3600.000000",
               2);
}

TEST_F(BadInput, InspectCompareOfAnIdenticalCheckpointSaysSo) {
  int st = 0;
  const std::string out = run("inspect '" + kModel + "' --compare '" + kModel + "'", &st);
  EXPECT_EQ(st, 0) << out;
  EXPECT_NE(out.find("every one equal to it"), std::string::npos) << out;
}

// What a black-box probe of the CLI found (2026-12-04): each was accepted or misbehaved before.
TEST_F(BadInput, RunChatAndTokenizeRefuseWhatTheyCannotDo) {
  const std::string model = "-m '" + kModel + "' ";
  expect_error("run " + model + "--ctx 200000 -n 2", "--ctx 200000 is out of range (0...131072)");
  expect_error("chat " + model + "-n 0 < /dev/null", "-n must be positive");
  expect_error("chat " + model + "--template /tmp < /dev/null", "--template /tmp: is a folder, not a file");
  expect_error("tokenize " + model + "--file /tmp", "/tmp: is a folder, not a file");
  // A chat template that never stops recursing is an error, not a crash (exit 139 before).
  const auto tmpl =
      std::filesystem::temp_directory_path() / ("mx8_rec_" + std::to_string(::getpid()) + ".jinja");
  std::ofstream(tmpl) << "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}";
  int st = 0;
  const std::string out = mx8::test::run_shell(
      "echo hi | " + mx8_command() + " chat " + model + "--template '" + tmpl.string() + "' 2>&1", &st);
  EXPECT_EQ(st, 1) << out;
  EXPECT_NE(out.find("unbounded recursion"), std::string::npos) << out;
  std::filesystem::remove(tmpl);
  // A --chunk past the context is capped at it (it sized 473 GB of activations and ran out of memory).
  const std::string big_chunk = run("run " + model + "--chunk 100000000 -n 2", &st);
  EXPECT_EQ(st, 0) << big_chunk;
}

// --stop matches generated text only: a stop string that occurs in the echoed prompt used to cut the
// prompt and end the run before its first token. The greedy continuation's 30 tokens do not contain
// "time", so with the stop string the run must print exactly what it prints without it.
TEST_F(BadInput, StopSequencesIgnoreTheEchoedPrompt) {
  // Standard output only: the statistics on standard error differ from run to run.
  auto generate = [](const std::string& extra) {
    int st = 0;
    const std::string out =
        mx8::test::run_shell(mx8_command() + " run -m '" + kModel +
                                 "' --temperature 0 -n 30 -p 'Once upon a time' " + extra + " 2>/dev/null",
                             &st);
    EXPECT_EQ(st, 0) << out;
    return out;
  };
  const std::string with_stop = generate("--stop time"), plain = generate("");
  EXPECT_EQ(with_stop, plain);
  EXPECT_EQ(with_stop.rfind("Once upon a time, ", 0), 0u) << with_stop;
}

// A model with dynamic RoPE scaling runs only where the scaling keeps its frequencies (its window, 64
// positions here): a longer --ctx is refused by `run` and `eval` before anything runs.
TEST_F(BadInput, DynamicRopeContextPastTheWindow) {
  namespace fs = std::filesystem;
  const fs::path src = fs::path(MX8_SOURCE_DIR) / "tests/data/hf/qwen3_embedding";
  if (!fs::exists(src)) GTEST_SKIP() << src << " absent";
  const fs::path dir = fs::temp_directory_path() / ("mx8_dynamic_rope_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(src / f, dir / f);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src / "config.json"));
  cfg["max_position_embeddings"] = 64;
  cfg["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  std::ofstream(dir / "config.json") << cfg.dump();
  std::ofstream(dir / "text.txt") << "a short text to score";
  const std::string m = "-m '" + dir.string() + "' ";
  const std::string past = "is past the 64 positions to which";
  expect_error("run " + m + "-n 2 -p hi --ctx 65", "--ctx 65 " + past);
  expect_error("eval " + m + "--text '" + (dir / "text.txt").string() + "' --ctx 65", "--ctx 65 " + past);
  int st = 0;
  const std::string out = run("run " + m + "-n 2 -p hi --temperature 0 --ctx 64", &st);  // the window itself
  EXPECT_EQ(st, 0) << out;
  fs::remove_all(dir);
}

}  // namespace
