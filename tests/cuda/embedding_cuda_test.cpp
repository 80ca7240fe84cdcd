// Embeddings on the CUDA backend (tests/runtime/embedding_test.cpp runs them on the CPU): the
// sentence-transformers fixture tests/data/hf/qwen3_embedding, F32 weights, f32 KV cache. Each text is
// embedded twice in one engine, so the second reading takes the first's cached pages and computes a
// short last chunk, a step shape that is recorded and replayed as a CUDA graph once seen twice: the
// hidden rows are read after the step, outside the recording. Skips without a GPU.
//
// Tolerance: 1e-5 per value of a unit vector. The CPU test holds 2e-6 (sentence-transformers' own
// float32 rounding is 3e-7); the GPU's f32 products sum in other orders (the logits tests see ~1e-5 on
// logits of a few units, ~1e-6 relative), and the hidden state's values are ~0.1. A wrong row or a
// missed final norm moves them by 1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>

#include "cuda/cuda_test_util.h"
#include "model/hf_fixture_util.h"
#include "mx8/runtime/embedding.h"

namespace mx8 {
namespace {

constexpr float kTol = 1e-5f;

TEST(CudaEmbeddings, MatchSentenceTransformers) {
  MX8_REQUIRE_GPU();
  const std::string dir = hf_test::kDir + "/qwen3_embedding";
  const hf_test::json ref = hf_test::read_json(dir + "/embeddings.json");
  auto be = backend::make_cuda_backend(0);
  auto m = model::load_llama(dir, *be, model::LoadOptions{});
  runtime::EngineOptions eo;
  eo.kv_format = backend::KvFormat::f32;
  eo.max_context = 128;
  eo.max_sequences = 3;
  runtime::Engine engine(*m, *be, eo);
  runtime::GenerationParams p;
  p.embed = true;
  const size_t n = ref["ids"].size();
  std::map<int, size_t> text_of;
  for (int round = 0; round < 3; ++round) {
    float worst = 0;
    size_t next = 0;
    while (next < n || !engine.idle()) {
      while (next < n && text_of.size() < 3)
        text_of[engine.add(ref["ids"][next].get<std::vector<int32_t>>(), p)] = next, ++next;
      for (const runtime::TokenEvent& e : engine.step()) {
        ASSERT_EQ(e.finish, runtime::FinishReason::embedded);
        const size_t i = text_of.at(e.request);
        text_of.erase(e.request);
        const std::vector<float> got = runtime::finish_embedding(e.embedding, 0, true);
        const std::vector<float> want = ref["embeddings"][i].get<std::vector<float>>();
        ASSERT_EQ(got.size(), want.size());
        for (size_t j = 0; j < got.size(); ++j) worst = std::max(worst, std::abs(got[j] - want[j]));
      }
    }
    EXPECT_LE(worst, kTol) << "round " << round;
    std::printf("[ embeddings cuda ] round %d: max |difference| to sentence-transformers %.2e\n", round,
                worst);
  }
  EXPECT_GT(engine.stats().reused_tokens, 0);  // rounds 2 and 3 read cached pages
}

}  // namespace
}  // namespace mx8
