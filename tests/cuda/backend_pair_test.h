// The fixture of the tests that run one op on the CPU and on the CUDA backend with the same host
// data (backend_cuda_test.cpp, attention_cluster_test.cpp). Skips without a GPU.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "mx8/backend/backend.h"

namespace mx8::backend::test {

// Both backends, and helpers that put the same host data into each.
class BackendPair : public ::testing::Test {
 protected:
  void SetUp() override {
    MX8_REQUIRE_GPU();
    cpu = make_cpu_backend(0);
    gpu = make_cuda_backend(0);
    seed = std::random_device{}();
    rng.seed(seed);
  }
  void TearDown() override {
    for (void* p : cpu_allocs) cpu->free(p);
    for (void* p : gpu_allocs) gpu->free(p);
  }
  struct Pair {
    void* c;
    void* g;
  };
  Pair put(const void* host, size_t bytes) {
    Pair p{cpu->alloc(bytes), gpu->alloc(bytes)};
    cpu_allocs.push_back(p.c);
    gpu_allocs.push_back(p.g);
    cpu->upload(p.c, host, bytes);
    gpu->upload(p.g, host, bytes);
    return p;
  }
  template <typename T>
  Pair put(const std::vector<T>& v) {
    return put(v.data(), v.size() * sizeof(T));
  }
  template <typename T>
  Pair zeros(size_t count) {
    std::vector<T> z(count);
    return put(z);
  }
  template <typename T>
  std::vector<T> get_cpu(const Pair& p, size_t count) {
    std::vector<T> v(count);
    cpu->download(v.data(), p.c, count * sizeof(T));
    return v;
  }
  template <typename T>
  std::vector<T> get_gpu(const Pair& p, size_t count) {
    std::vector<T> v(count);
    gpu->download(v.data(), p.g, count * sizeof(T));
    return v;
  }
  std::vector<float> normal(size_t n, float sigma = 1.0f) {
    std::normal_distribution<float> d(0.0f, sigma);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
  }
  std::string trace() const { return "seed " + std::to_string(seed); }
  // One decode token's attention (head_dim hd, scale 1/sqrt(hd)) over the GPU copies of the
  // sequence rows, lengths and block tables; q and out are the caller's.
  AttentionArgs gpu_decode_args(int n_heads, int n_kv, int hd, int layer, const Pair& seq, const Pair& kv_len,
                                const Pair& tables, int pages) const {
    AttentionArgs a;
    a.n_tokens = 1;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv;
    a.head_dim = hd;
    a.scale = 1.0f / std::sqrt(float(hd));
    a.layer = layer;
    a.seq = (const int32_t*)seq.g;
    a.kv_len = (const int32_t*)kv_len.g;
    a.block_tables = (const int32_t*)tables.g;
    a.max_pages_per_seq = pages;
    return a;
  }
  // The GPU's rope_kv_write_attention into `fused` (q1, k1, out1) and its composition of
  // rope_kv_write and attention (Backend's default) into `composed` (q2, k2, out2), from the same
  // inputs: the fused launch is held to the composed ops bit for bit.
  struct FusedAndComposed {
    KvCache &fused, &composed;
    Pair &q1, &q2, &k1, &k2, &v, &pos, &slot, &out1, &out2;
  };
  void run_fused_and_composed(const FusedAndComposed& f, const RopeArgs& r, AttentionArgs a) {
    a.q = (const float*)f.q1.g;
    a.out = (float*)f.out1.g;
    gpu->rope_kv_write_attention(f.fused, (float*)f.q1.g, (float*)f.k1.g, (const float*)f.v.g,
                                 (const int32_t*)f.pos.g, (const int32_t*)f.slot.g, r, a);
    a.q = (const float*)f.q2.g;
    a.out = (float*)f.out2.g;
    gpu->Backend::rope_kv_write_attention(f.composed, (float*)f.q2.g, (float*)f.k2.g, (const float*)f.v.g,
                                          (const int32_t*)f.pos.g, (const int32_t*)f.slot.g, r, a);
  }
  // `a` (shapes) pointed at the CPU and at the GPU copies of the same buffers.
  std::pair<AttentionArgs, AttentionArgs> on_both(const AttentionArgs& a, const Pair& q, const Pair& out,
                                                  const Pair& seq, const Pair& kv_len, const Pair& tables) {
    AttentionArgs c = a, g = a;
    c.q = (const float*)q.c, c.out = (float*)out.c, c.seq = (const int32_t*)seq.c;
    c.kv_len = (const int32_t*)kv_len.c, c.block_tables = (const int32_t*)tables.c;
    g.q = (const float*)q.g, g.out = (float*)out.g, g.seq = (const int32_t*)seq.g;
    g.kv_len = (const int32_t*)kv_len.g, g.block_tables = (const int32_t*)tables.g;
    return {c, g};
  }

  std::unique_ptr<Backend> cpu, gpu;
  std::vector<void*> cpu_allocs, gpu_allocs;
  uint32_t seed = 0;
  std::mt19937 rng;
};

}  // namespace mx8::backend::test
