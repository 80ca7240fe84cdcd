// The Hugging Face fixtures (tests/data/hf: Llama-3.1 with llama3 RoPE scaling, Llama-2 tied, Mistral,
// Qwen2 with biases, Qwen3 with q/k norm) on the CUDA backend, as tests/model/hf_fixtures_test.cpp
// runs them on the CPU: F32 weights, f32 KV cache, every stored prompt logit and the decode-path
// logits within 1e-4 of transformers', the greedy tokens equal; and the Mistral fixture with a
// sliding window of 8 (sliding_window.json). Skips without a GPU.
//
// Tolerance: the CPU tests' 1e-4 (~8x the measured gap between HF's float32 logits and an exact
// float64 computation). The GPU's f32 products and attention sum in other orders than the CPU's,
// which moves logits by the same order of rounding (~1e-5), not more; a real error (a missed bias or
// norm, a wrong RoPE band or window) moves them by 1e-2 or more. The greedy steps of the references
// win by >= 2.2e-3, twenty times the tolerance.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "model/hf_fixture_util.h"
#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"

namespace mx8 {
namespace {

using hf_test::json;
constexpr float kTol = 1e-4f;

class CudaHfFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { MX8_REQUIRE_GPU(); }
};

TEST_P(CudaHfFixture, F32LogitsAndGreedyMatchTransformers) {
  const std::string dir = hf_test::kDir + "/" + GetParam();
  const json ref = hf_test::read_json(dir + "/reference.json");
  auto be = backend::make_cuda_backend(0);
  auto m = model::load_llama(dir, *be, model::LoadOptions{});
  for (size_t p = 0; p < ref["prompts"].size(); ++p) {
    const auto prompt = ref["prompts"][p].get<std::vector<int32_t>>();
    const auto positions = ref["logits_positions"][p].get<std::vector<int32_t>>();
    const hf_test::PromptRun r = hf_test::run_prompt(*m, *be, prompt, positions, backend::KvFormat::f32);
    float worst = 0;
    for (size_t i = 0; i < positions.size(); ++i)
      worst = std::max(worst, hf_test::max_abs_diff(r.prompt_logits[i], ref["logits"][p][i]));
    EXPECT_LE(worst, kTol) << GetParam() << " prompt " << p << " (length " << prompt.size() << ")";
    EXPECT_EQ(r.greedy, ref["greedy"][p].get<std::vector<int32_t>>()) << GetParam() << " prompt " << p;
    const float last = hf_test::max_abs_diff(r.greedy_last_logits, ref["greedy_last_logits"][p]);
    EXPECT_LE(last, kTol) << GetParam() << " prompt " << p << " decode-path logits";
    std::printf("[ hf cuda ] %-18s prompt %zu (len %3zu): max |dlogit| prefill %.2e, decode %.2e\n",
                GetParam().c_str(), p, prompt.size(), worst, last);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaHfFixture, ::testing::ValuesIn(hf_test::fixture_names()),
                         [](const auto& info) { return info.param; });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CudaHfFixture);

TEST(CudaHfSlidingWindow, MatchesTransformersPastTheWindow) {
  MX8_REQUIRE_GPU();
  auto be = backend::make_cuda_backend(0);
  hf_test::check_sliding_window_reference(*be, kTol);
}

}  // namespace
}  // namespace mx8
