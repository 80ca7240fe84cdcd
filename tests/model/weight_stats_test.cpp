// What a model says it holds (WeightStats: the memory line of `mx8 run`, the weight bytes per token
// of the decode benchmarks' roofline), for random models in each weight mode, against sizes worked
// out here from the shapes alone.
#include <gtest/gtest.h>

#include "mx8/backend/backend.h"
#include "mx8/model/llama.h"

namespace {

using mx8::model::WeightMode;

// Biases, per-head norms and an untied head: every kind of tensor a model can hold. ffn = 320 and
// vocab = 300 leave partial 128 x 128 blocks, head_dim 64 half a block.
mx8::model::LlamaConfig small_qwen() {
  mx8::model::LlamaConfig c;
  c.arch = "qwen3";
  c.vocab = 300;
  c.dim = 128;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 64;
  c.ffn = 320;
  c.qkv_bias = true;
  c.qk_norm = true;
  c.tied_embeddings = false;
  return c;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

TEST(WeightStats, RandomModelsCountEveryTensorOnce) {
  const mx8::model::LlamaConfig c = small_qwen();
  const int64_t qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
  // The matrices as [n, k]: per layer q, k, v, o, gate, up, down; then the head.
  std::vector<std::pair<int64_t, int64_t>> matrices;
  for (int l = 0; l < c.n_layers; ++l)
    for (auto nk : {std::pair{qd, c.dim},
                    {kvd, c.dim},
                    {kvd, c.dim},
                    {c.dim, qd},
                    {c.ffn, c.dim},
                    {c.ffn, c.dim},
                    {c.dim, c.ffn}})
      matrices.push_back(nk);
  matrices.push_back({c.vocab, c.dim});
  // Norms (2 a layer of dim, q/k norms of head_dim, the final one) and biases (q, k, v), in f32.
  const int64_t vectors = c.n_layers * (2 * c.dim + 2 * c.head_dim + qd + 2 * kvd) + c.dim;
  const int64_t table = c.vocab * c.dim;

  struct Mode {
    WeightMode mode;
    double bytes_per_weight;  // the matrices' elements
    int table_bytes;          // the embedding table: f32 for f32 models, else BF16
  };
  for (const Mode& m : {Mode{WeightMode::f32, 4, 4}, Mode{WeightMode::bf16, 2, 2},
                        Mode{WeightMode::fp8, 1, 2}, Mode{WeightMode::mxfp8, 1, 2}}) {
    SCOPED_TRACE(mx8::model::weight_mode_name(m.mode));
    size_t linear = 0;
    int64_t params = 0;
    for (auto [n, k] : matrices) {
      linear += size_t(double(n * k) * m.bytes_per_weight);
      if (m.mode == WeightMode::fp8)
        linear += size_t(ceil_div(n, 128) * ceil_div(k, 128));                 // UE8M0 per block
      if (m.mode == WeightMode::mxfp8) linear += size_t(n * ceil_div(k, 32));  // UE8M0 per 1x32
      params += n * k;
    }
    auto be = mx8::backend::make_cpu_backend(1);
    auto model = mx8::model::make_random_llama(c, *be, m.mode, 4, 1);
    const auto& s = model->weight_stats();
    EXPECT_EQ(s.linear_bytes, linear);
    EXPECT_EQ(s.bytes, linear + size_t(table * m.table_bytes + vectors * 4));
    EXPECT_EQ(s.parameters, params + table + vectors);
    EXPECT_EQ(s.linear_all_f32, m.mode == WeightMode::f32);
  }
}

}  // namespace
