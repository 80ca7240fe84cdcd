// What `mx8 run` says on standard error once the text is out: tokens prefilled and decoded, why it
// stopped, and the memory of the weights and the KV cache in the format asked for; and where `mx8 run`
// and `mx8 chat` find the bundled model. The text itself is held to llama2.c's golden output by
// tests/runtime/stories_golden_test.cpp.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/run_mx8.h"
#include "model/gguf_bytes.h"
#include "temp_dir.h"

namespace {

using mx8::test::mx8_command;
using mx8::test::mx8_exe;
using mx8::test::run;

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

class RunReport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
    if (!std::filesystem::exists(kModel)) GTEST_SKIP() << kModel << " absent";
  }
  // Standard error alone (standard output to /dev/null), which must have exited 0.
  static std::string report(const std::string& args) {
    int st = 0;
    const std::string err = mx8::test::run_shell(mx8_command() + " " + args + " 2>&1 >/dev/null", &st);
    EXPECT_EQ(st, 0) << args << "\n" << err;
    return err;
  }
  static void expect_has(const std::string& out, const std::string& what) {
    EXPECT_NE(out.find(what), std::string::npos) << what << "\n" << out;
  }
};

// -n is what is generated even when --ctx leaves room for more: the first token comes from the prompt
// step (prefill), the other 19 from decode steps. stories260K as llama2.c configures it (dim 64, hidden
// 172, 5 layers, 8 heads of 8, 4 KV heads, vocab 512) with the GGUF's separate output matrix has 2 x 512 x
// 64 + 5 x (2 x 64 x 64 + 2 x 32 x 64 + 3 x 172 x 64 + 2 x 64) + 64 = 292800 parameters, 1.12 MiB in F32;
// the KV cache holds the prompt (BOS) and the 20 tokens: 21 positions.
TEST_F(RunReport, CountsTokensStopReasonAndMemory) {
  const std::string f32 = report("run -m '" + kModel + "' --temperature 0 -n 20 --ctx 512");
  expect_has(f32, "mx8: prefill 1 tokens in ");
  expect_has(f32, "mx8: decode 19 tokens in ");
  expect_has(f32, "; stopped: length\n");
  expect_has(f32, "mx8: memory: weights 1.12 MiB (292800 parameters), KV cache ");
  expect_has(f32, " MiB (f32, 512 positions)\n");  // --ctx: the cache is sized for it
  const std::string fp8 = report("run -m '" + kModel + "' --temperature 0 -n 20 --weights fp8 --kv fp8");
  expect_has(fp8, "(292800 parameters), KV cache ");
  expect_has(fp8, " MiB (fp8 (E4M3, UE8M0 per token/head/128), 21 positions)\n");
  expect_has(fp8, "mx8: cpu: ");
  expect_has(fp8, " | f32 x 1, fp8 (E4M3, 128x128 blocks) x 36\n");  // the embedding stays f32
  const std::string stop =
      report("run -m '" + kModel + "' --temperature 0 -n 60 -p 'Once upon a time' --stop ' the'");
  expect_has(stop, "mx8: prefill 5 tokens in ");  // BOS and the prompt's four
  expect_has(stop, "; stopped: stop sequence\n");
}

// As llama2.c does, a generated BOS ends the text: it starts the next story. Greedy from BOS,
// stories260K's first story ends well inside 400 tokens (after 346 on this machine), so the run stops
// there and not at -n.
TEST_F(RunReport, AGeneratedBosEndsTheText) {
  const std::string err = report("run -m '" + kModel + "' --temperature 0 -n 400");
  expect_has(err, "; stopped: stop\n");
  const size_t at = err.find("mx8: decode ");
  ASSERT_NE(at, std::string::npos) << err;
  EXPECT_LT(std::stoi(err.substr(at + 12)), 399) << err;
}

// Without -m both commands take the bundled stories260K, which has no chat template: chat says so and
// names the file it found.
TEST_F(RunReport, TheBundledModelIsTheDefault) {
  expect_has(report("run --temperature 0 -n 2"),
             "stories260K.gguf (llama, 5 layers, dim 64, heads 8/4, vocab 512)");
  int st = 0;
  const std::string chat = run("chat < /dev/null", &st);
  EXPECT_EQ(st, 1) << chat;
  expect_has(chat, "models/stories260K.gguf has no chat template");
}

}  // namespace

// Weights that alone exceed the machine's memory are a format question, not a context one: the
// warning names --weights fp8. The file states Llama-3.1-405B's shape (1.6 TB of f32 weights as given)
// and holds only a four-token vocabulary and its embedding table, so loading then fails on the first
// missing tensor.
TEST(RunPlan, WeightsThatCannotFitPointToFp8) {
  if (!std::filesystem::exists(mx8_exe())) GTEST_SKIP() << mx8_exe() << " not built";
  mx8::test::GgufBytes g;
  g.header(1, 8);
  g.text("general.architecture", "llama");
  g.text("tokenizer.ggml.model", "llama");
  g.strings("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "x"});
  g.u32("llama.embedding_length", 16384);
  g.u32("llama.block_count", 126);
  g.u32("llama.feed_forward_length", 53248);
  g.u32("llama.attention.head_count", 128);
  g.u32("llama.attention.head_count_kv", 8);
  g.tensor_info("token_embd.weight", {16384, 4}, 0, 0);  // F32
  while (g.b.size() % 32) g.b.push_back(0);
  g.b.resize(g.b.size() + 16384 * 4 * 4, 0);
  mx8::test::TempDir dir;
  const std::string path = dir / "405b_shape.gguf";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(g.b.data(), 1, g.b.size(), f), g.b.size());
  std::fclose(f);
  int st = 0;
  const std::string out = run("run -m '" + path + "' -n 1 -p x", &st);
  EXPECT_EQ(st, 1) << out;  // the missing tensors, after the plan
  EXPECT_NE(out.find("DOES NOT FIT"), std::string::npos) << out;
  EXPECT_NE(out.find("the weights alone exceed available memory as given"), std::string::npos) << out;
  EXPECT_NE(out.find("--weights fp8 keeps one byte a weight"), std::string::npos) << out;
}
