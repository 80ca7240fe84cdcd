// stories260K (F32, GGUF) decoded greedily from BOS on the CUDA backend must print llama2.c's
// expected text byte for byte (tests/data/stories260K.greedy200.txt), as the CPU backend does
// (tests/runtime/stories_golden_test.cpp). The GPU sums in other orders than the CPU, so this is the
// end-to-end check that those differences stay far below every greedy decision of the 200 steps.
// Also records how far FP8 weights / KV cache follow the F32 path on the GPU. Skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"
#include "mx8/runtime/engine.h"
#include "mx8/runtime/sampler.h"
#include "mx8/runtime/tokenizer.h"
#include "runtime/mixed_draw.h"
#include "stories_greedy.h"

namespace {

bool gpu_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// The source tree this test was built from, or the current directory (the test may run on another
// machine from a copy of the repository root).
std::string repo_file(const std::string& rel) {
  std::string p = std::string(MX8_SOURCE_DIR) + "/" + rel;
  return std::filesystem::exists(p) ? p : rel;
}

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

using Result = mx8::testing::GreedyResult;

// Log-probabilities from the GPU's log sum exp against the host's: the same token and alternatives, in
// the same order, and values within one float ulp (the sums' orders differ in the last double bits, so
// the float rounding of x - lse may land on the neighbouring float).
void expect_logprobs_within_one_ulp(const mx8::runtime::TokenLogprobs& device,
                                    const mx8::runtime::TokenLogprobs& host, const std::string& where) {
  auto within_one_ulp = [](float a, float b) { return a == b || std::nextafter(a, b) == b; };
  EXPECT_EQ(device.token, host.token) << where;
  EXPECT_TRUE(within_one_ulp(device.logprob, host.logprob))
      << where << ": " << device.logprob << " against " << host.logprob;
  ASSERT_EQ(device.top.size(), host.top.size()) << where;
  for (size_t i = 0; i < host.top.size(); ++i) {
    EXPECT_EQ(device.top[i].first, host.top[i].first) << where << ", alternative " << i;
    EXPECT_TRUE(within_one_ulp(device.top[i].second, host.top[i].second)) << where << ", alternative " << i;
  }
}

Result generate_greedy(mx8::backend::Backend& be, mx8::model::WeightMode weights, mx8::backend::KvFormat kv,
                       int n) {
  return mx8::testing::generate_greedy(repo_file("models/stories260K.gguf"), be, weights, kv, n);
}

}  // namespace

TEST(CudaStoriesGolden, F32GreedyMatchesLlama2cByteForByte) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  const std::string expected = read_file(repo_file("tests/data/stories260K.greedy200.txt"));
  ASSERT_FALSE(expected.empty());
  auto be = mx8::backend::make_cuda_backend(0);
  Result r = generate_greedy(*be, mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200);
  EXPECT_EQ(r.text, expected);
  // The same tokens as the CPU backend, step for step (a divergence shows where, if the text differs).
  auto cpu = mx8::backend::make_cpu_backend(0);
  Result c = generate_greedy(*cpu, mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200);
  EXPECT_EQ(mx8::testing::common_prefix(r.tokens, c.tokens), c.tokens.size())
      << "CUDA and CPU greedy tokens diverge";
}

// The Q5_0 file llama.cpp quantized decodes on the GPU to llama.cpp's own text, as on the CPU
// (tests/runtime/llama_cpp_quantized_test.cpp; docs/FIXTURES.md).
TEST(CudaStoriesGolden, LlamaCppQ5_0FileMatchesLlamaCppsText) {
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  const std::string expected =
      read_file(repo_file("tests/data/ggml/stories260K.Q5_0.llama_cpp_greedy200.txt"));
  ASSERT_FALSE(expected.empty());
  auto be = mx8::backend::make_cuda_backend(0);
  Result r =
      mx8::testing::generate_greedy(repo_file("tests/data/ggml/stories260K.Q5_0.gguf"), *be,
                                    mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200);
  EXPECT_EQ(r.text, expected);
}

TEST(CudaStoriesGolden, BackendDrawIsTheHostSamplers) {
  // On the GPU the engine takes greedy rows' arg max and top-k rows' candidates on the device (graphs
  // recorded with those kernels in them); the same batch with every row drawn on the host from the
  // downloaded logits must give the same tokens, step for step.
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  auto be = mx8::backend::make_cuda_backend(0);
  mx8::model::LoadOptions lo;
  lo.max_tokens_per_step = 32;
  auto m = mx8::model::load_llama(repo_file("models/stories260K.gguf"), *be, lo);
  const auto on_gpu = mx8::test::mixed_draw_events(*m, *be, false),
             on_host = mx8::test::mixed_draw_events(*m, *be, true);
  EXPECT_EQ(on_gpu, on_host);
  EXPECT_GT(on_gpu.size(), 50u);
}

TEST(CudaStoriesGolden, PromptLogprobsFromTheDeviceAreTheHosts) {
  // A prompt's log-probabilities (the completions' echo) from what the GPU computes of each row
  // (Backend::log_sum_exp and top_k) against the host's from the downloaded rows, on the same backend:
  // the same alternatives in the same order, and values within one float ulp (the log sum exp may
  // differ in its last double bits: CudaVsCpu.LogSumExpMatchesCpu; a float rounding of x - lse can then
  // land on the neighbouring float).
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  auto be = mx8::backend::make_cuda_backend(0);
  mx8::model::LoadOptions lo;
  lo.max_tokens_per_step = 16;  // the 40-token prompt over three steps, the last one recorded as a graph
  auto m = mx8::model::load_llama(repo_file("models/stories260K.gguf"), *be, lo);
  auto prompt_lps = [&](mx8::runtime::EngineOptions::BackendDraw where) {
    mx8::runtime::EngineOptions eo;
    eo.kv_format = mx8::backend::KvFormat::f32;
    eo.max_context = 64;
    eo.backend_draw = where;
    mx8::runtime::Engine eng(*m, *be, eo);
    std::vector<int32_t> prompt = {1};
    for (int i = 0; i < 39; ++i) prompt.push_back(int32_t(261 + (i * 37) % 240));
    mx8::runtime::GenerationParams gp;
    gp.sampling.temperature = 0;
    gp.max_new_tokens = 1;
    gp.logprobs = 5;
    gp.prompt_logprobs = true;
    eng.add(prompt, gp);
    std::vector<mx8::runtime::TokenLogprobs> lps;
    while (!eng.idle())
      for (auto& e : eng.step())
        if (!e.prompt_logprobs.empty()) lps = std::move(e.prompt_logprobs);
    return lps;
  };
  const auto device = prompt_lps(mx8::runtime::EngineOptions::BackendDraw::auto_),
             host = prompt_lps(mx8::runtime::EngineOptions::BackendDraw::never);
  ASSERT_EQ(host.size(), 39u);
  ASSERT_EQ(device.size(), host.size());
  for (size_t j = 0; j < host.size(); ++j) {
    ASSERT_EQ(host[j].top.size(), 5u);
    expect_logprobs_within_one_ulp(device[j], host[j], "token " + std::to_string(j + 1));
  }
}

TEST(CudaStoriesGolden, LogprobsOfTokensDrawnOnTheDeviceAreTheHosts) {
  // Greedy and top-k rows that ask for log-probabilities are drawn on the GPU, their log-probabilities
  // formed from its log sum exp, best logits and the drawn token's logit; against every row downloaded
  // and done on the host: the same tokens and alternatives, values within one float ulp (as for the
  // prompt's, above).
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  auto be = mx8::backend::make_cuda_backend(0);
  mx8::model::LoadOptions lo;
  lo.max_tokens_per_step = 32;
  auto m = mx8::model::load_llama(repo_file("models/stories260K.gguf"), *be, lo);
  const auto device = mx8::test::logprob_draw_events(*m, *be, false),
             host = mx8::test::logprob_draw_events(*m, *be, true);
  ASSERT_EQ(device.size(), host.size());
  ASSERT_GT(host.size(), 100u);
  for (size_t i = 0; i < host.size(); ++i) {
    ASSERT_EQ(device[i].request, host[i].request) << "event " << i;
    ASSERT_EQ(device[i].token, host[i].token) << "event " << i;
    ASSERT_TRUE(device[i].logprobs && host[i].logprobs) << "event " << i;
    expect_logprobs_within_one_ulp(*device[i].logprobs, *host[i].logprobs, "event " + std::to_string(i));
  }
}

TEST(CudaStoriesGolden, Fp8WeightsAndKvAgreement) {
  // As on the CPU (tests/runtime): FP8 changes the numbers, so this records how far each variant
  // follows the F32 path; a broken FP8 path (wrong scale, wrong layout) diverges within 1-2 tokens.
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device on this machine";
  auto be = mx8::backend::make_cuda_backend(0);
  Result ref = generate_greedy(*be, mx8::model::WeightMode::as_given, mx8::backend::KvFormat::f32, 200);
  struct Case {
    const char* name;
    mx8::model::WeightMode w;
    mx8::backend::KvFormat kv;
  } cases[] = {{"bf16 weights, bf16 KV", mx8::model::WeightMode::bf16, mx8::backend::KvFormat::bf16},
               {"f32 weights, fp8 KV", mx8::model::WeightMode::as_given, mx8::backend::KvFormat::fp8},
               {"fp8 weights, f32 KV", mx8::model::WeightMode::fp8, mx8::backend::KvFormat::f32},
               {"fp8 weights, fp8 KV", mx8::model::WeightMode::fp8, mx8::backend::KvFormat::fp8},
               {"mxfp8 weights, bf16 KV", mx8::model::WeightMode::mxfp8, mx8::backend::KvFormat::bf16}};
  for (const Case& c : cases) {
    Result r = generate_greedy(*be, c.w, c.kv, 200);
    size_t n = mx8::testing::common_prefix(ref.tokens, r.tokens);
    std::printf("[ agreement ] cuda %-24s first %zu of %zu greedy tokens equal the F32 output\n", c.name, n,
                ref.tokens.size());
    EXPECT_GE(n, 10u) << c.name;
  }
}
