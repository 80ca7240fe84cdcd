// THE key evidence of the runtime: stories260K (F32, GGUF) decoded greedily from BOS on the CPU
// reproduces llama2.c's expected output byte for byte (tests/data/stories260K.greedy200.txt: 200
// generated tokens, stopping early at BOS/EOS). The model, tokenizer, engine and CPU backend all sit
// on this path. Also measures how far FP8 weights and an FP8 KV cache stay on the same path.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "cli/run_mx8.h"
#include "mx8/backend/backend_by_name.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/tokenizer.h"
#include "stories_greedy.h"

namespace {

const std::string kModel = std::string(MX8_SOURCE_DIR) + "/models/stories260K.gguf";

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using Result = mx8::testing::GreedyResult;

Result generate_greedy(mx8::model::WeightMode weights, mx8::backend::KvFormat kv, int n, int threads = 2,
                       int chunk = 256, bool quantize_head = true, const std::string& device = "cpu") {
  auto be = mx8::backend::make_backend(device, threads);
  return mx8::testing::generate_greedy(kModel, *be, weights, kv, n, chunk, quantize_head);
}

// Teacher-forced agreement: feed BOS + the reference tokens in one forward pass and count the
// positions where this variant's arg max is the reference's next token. Unlike the common prefix of
// two free-running greedy decodes, one flip does not end the comparison.
size_t teacher_forced(mx8::model::WeightMode weights, mx8::backend::KvFormat kv, bool quantize_head,
                      const std::vector<int32_t>& ref) {
  using namespace mx8;
  auto be = backend::make_cpu_backend(2);
  model::LoadOptions lo;
  lo.weights = weights;
  lo.max_tokens_per_step = int(ref.size()) + 1;
  lo.quantize_output_head = quantize_head;
  auto m = model::load_llama(kModel, *be, lo);
  const int n = int(ref.size());
  const int ps = 16, pages = (n + ps) / ps;
  backend::KvCacheDesc d{
      kv, int(m->config().n_layers), int(m->config().n_kv_heads), int(m->config().head_dim), ps, pages};
  auto cache = be->create_kv_cache(d);
  model::StepBatch b;
  b.max_pages_per_seq = pages;
  for (int p = 0; p < pages; ++p) b.block_tables.push_back(p);
  for (int i = 0; i < n; ++i) {  // token i: BOS, then ref[0..n-2]; predicts ref[i]
    b.tokens.push_back(i == 0 ? 1 : ref[size_t(i - 1)]);
    b.pos.push_back(i);
    b.seq.push_back(0);
    b.slot.push_back(i);
    b.kv_len.push_back(i + 1);
    b.logit_rows.push_back(i);
  }
  const size_t vocab = size_t(m->config().vocab);
  std::vector<float> logits(size_t(n) * vocab);
  m->forward(b, *cache, logits.data());
  size_t same = 0;
  for (int i = 0; i < n; ++i) {
    const float* l = logits.data() + size_t(i) * vocab;
    size_t best = 0;
    for (size_t v = 1; v < vocab; ++v)
      if (l[v] > l[best]) best = v;
    same += int32_t(best) == ref[size_t(i)];
  }
  return same;
}

// Length of the common prefix, in tokens.

}  // namespace

TEST(StoriesGolden, F32GreedyMatchesLlama2cByteForByte) {
  const std::string expected =
      read_file(std::string(MX8_SOURCE_DIR) + "/tests/data/stories260K.greedy200.txt");
  ASSERT_FALSE(expected.empty());
  Result r = generate_greedy(mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200);
  EXPECT_EQ(r.text, expected);
}

#if defined(MX8_HAVE_CUDA)
TEST(StoriesGolden, F32GreedyOnCuda) {
  // The same evidence on the CUDA backend (CUDA builds on a machine with a GPU; skipped otherwise).
  try {
    mx8::backend::make_backend("cuda", 0);
  } catch (const std::exception& e) {
    GTEST_SKIP() << "no usable GPU: " << e.what();
  }
  const std::string expected =
      read_file(std::string(MX8_SOURCE_DIR) + "/tests/data/stories260K.greedy200.txt");
  Result r = generate_greedy(mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200, 0, 256, true,
                             "cuda");
  EXPECT_EQ(r.text, expected);
  Result f =
      generate_greedy(mx8::model::WeightMode::fp8, mx8::backend::KvFormat::fp8, 200, 0, 256, true, "cuda");
  size_t n = 0;
  while (n < f.tokens.size() && n < r.tokens.size() && f.tokens[n] == r.tokens[n]) ++n;
  std::printf("[ agreement ] cuda fp8 weights, fp8 KV: first %zu of %zu greedy tokens equal the F32 output\n",
              n, r.tokens.size());
}
#endif

TEST(StoriesGolden, SameOutputWithOneThreadAndSmallPrefillChunks) {
  // Thread count and step size must not change a single bit (fixed summation order).
  Result a = generate_greedy(mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 60, 2, 256);
  Result b = generate_greedy(mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 60, 1, 3);
  EXPECT_EQ(a.tokens, b.tokens);
}

TEST(StoriesGolden, Fp8WeightsAndKvAgreement) {
  // Not a pass/fail on exact equality: FP8 changes the numbers, and greedy decoding of a 260K-parameter
  // model diverges for good once one token flips. The test records how far each variant follows the
  // F32 path and requires the first 10 tokens to survive, which a broken FP8 path (wrong scales, wrong
  // layout) would not: it diverges within a token or two. It also reports teacher-forced top-1
  // agreement (measured 184-195 of 200 for the FP8 variants, 200 for bf16) and requires 80%.
  Result ref = generate_greedy(mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200);
  struct Case {
    const char* name;
    mx8::model::WeightMode w;
    mx8::backend::KvFormat kv;
    bool quantize_head = true;
  } cases[] = {{"bf16 weights, bf16 KV", mx8::model::WeightMode::bf16, mx8::backend::KvFormat::bf16},
               {"f32 weights, fp8 KV", mx8::model::WeightMode::as_given, mx8::backend::KvFormat::fp8},
               {"fp8 weights, f32 KV", mx8::model::WeightMode::fp8, mx8::backend::KvFormat::f32},
               {"fp8 (head f32), f32 KV", mx8::model::WeightMode::fp8, mx8::backend::KvFormat::f32, false},
               {"fp8 weights, fp8 KV", mx8::model::WeightMode::fp8, mx8::backend::KvFormat::fp8},
               {"mxfp8 weights, bf16 KV", mx8::model::WeightMode::mxfp8, mx8::backend::KvFormat::bf16}};
  for (const Case& c : cases) {
    Result r = generate_greedy(c.w, c.kv, 200, 2, 256, c.quantize_head);
    size_t n = mx8::testing::common_prefix(ref.tokens, r.tokens);
    size_t tf = teacher_forced(c.w, c.kv, c.quantize_head, ref.tokens);
    std::printf(
        "[ agreement ] %-24s first %zu of %zu greedy tokens equal the F32 output; teacher-forced top-1 "
        "%zu/%zu\n",
        c.name, n, ref.tokens.size(), tf, ref.tokens.size());
    EXPECT_GE(tf, ref.tokens.size() * 8 / 10) << c.name;
    EXPECT_GE(n, 10u) << c.name;
  }
}

// The same through the command line (`mx8 run`, as a user types it): stdout is the text plus the
// final newline. The mx8 executable sits next to this test in the build folder.
TEST(StoriesGolden, MxRunCommandLine) {
  if (!std::filesystem::exists(mx8::test::mx8_exe())) GTEST_SKIP() << mx8::test::mx8_exe() << " not built";
  const std::string cmd =
      mx8::test::mx8_command() + " run --temperature 0 -n 200 -m '" + kModel + "' 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  EXPECT_EQ(pclose(p), 0);
  const std::string expected =
      read_file(std::string(MX8_SOURCE_DIR) + "/tests/data/stories260K.greedy200.txt");
  EXPECT_EQ(out, expected + "\n");
}

namespace {
// Runs `mx8 ARGS` (the executable next to this test) with `input` on stdin; returns stdout.
std::optional<std::string> run_mx8(const std::string& args, const std::string& input, int* status) {
  if (!std::filesystem::exists(mx8::test::mx8_exe())) return std::nullopt;
  const std::string in_file =
      std::filesystem::temp_directory_path() / ("mx8_stdin_" + std::to_string(getpid()));
  std::ofstream(in_file) << input;
  FILE* p = popen((mx8::test::mx8_command() + " " + args + " < '" + in_file + "' 2>/dev/null").c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  *status = p ? pclose(p) : -1;
  std::filesystem::remove(in_file);
  return out;
}
}  // namespace

// `mx8 chat` with a chat template given on the command line: the first reply equals `mx8 run`'s
// continuation of the same rendered prompt (same tokens, same greedy path), and a second turn works.
TEST(StoriesGolden, MxChatFirstReplyEqualsRunContinuation) {
  const std::string tmpl =
      std::filesystem::temp_directory_path() / ("mx8_tmpl_" + std::to_string(getpid()) + ".jinja");
  std::ofstream(tmpl) << "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";
  int st1 = 0, st2 = 0;
  auto chat = run_mx8("chat -m '" + kModel + "' --template '" + tmpl + "' --temperature 0 -n 30",
                      "Once upon a time\nThe end\n", &st1);
  auto run =
      run_mx8("run -m '" + kModel + "' -p 'Once upon a time' --temperature 0 -n 30 --no-echo", "", &st2);
  std::filesystem::remove(tmpl);
  if (!chat || !run) GTEST_SKIP() << "mx8 executable not built";
  EXPECT_EQ(st1, 0);
  EXPECT_EQ(st2, 0);
  ASSERT_FALSE(run->empty());
  EXPECT_EQ(chat->substr(0, run->size()), *run);  // run ends with '\n', as the chat reply does
  EXPECT_GT(chat->size(), run->size() + 1);       // the second turn produced a reply too
}
