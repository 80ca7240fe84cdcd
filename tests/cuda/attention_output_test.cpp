// Backend::attention_output on CUDA: a batched decode step's attention hands the FP8 GEMM of the output
// projection its input already quantized (attention_cluster_kernel with an ActQuantOut), instead of a
// quantize launch between them. Two checks, both exact, since both sides quantize the same f32 values:
// - the kernel's codes and scales equal the CPU reference quantizer's (format::quantize_ref, 1x128 or
//   1x32 `ceil`) applied to the kernel's own f32 output, laid out MN-major as the GEMM reads them, and
//   that f32 output equals the plain kernel's bit for bit (quantizing must not move the attention);
// - attention_output equals the composed ops (Backend::attention_output: rope_kv_write_attention, then
//   matmul_fused with accumulate) bit for bit in the residual, the attention output and the cache.
// Layouts: 1, 2 and 4 query heads per block, one and two position splits (a head merged by one block),
// groups 1, 4 and 8, bf16 and fp8 caches, fp8_block weights with UE8M0 and f32 scales and mxfp8 weights.
// Skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "backend/cuda/act_quantize.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "cuda/backend_pair_test.h"
#include "cuda/gemv_test_util.h"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::backend {
namespace {

class AttentionOutput : public test::BackendPair {
 protected:
  void TearDown() override {
    cuda_impl::set_cluster_attention_splits(0);
    cuda_impl::set_cluster_attention_heads_per_block(0);
    BackendPair::TearDown();
  }

  // One decode token of each of `lens.size()` sequences over two identical GPU caches (history written
  // with N(0, 1) K and V), q/k/v of the step in two copies each, and the step's index arrays.
  struct Step {
    std::unique_ptr<KvCache> c1, c2;
    Pair q1, q2, k1, k2, v, pos, slot, seq, len, table, out1, out2, inv;
    AttentionArgs a;
    RopeArgs r;
    int n_heads = 0, n_tokens = 0;
  };
  Step make_step(KvFormat f, int n_kv, int group, const std::vector<int32_t>& lens) {
    const int ps = 16, max_pages = 20;  // capacity 320 positions: up to two splits at these batches
    Step s;
    s.n_heads = n_kv * group;
    s.n_tokens = int(lens.size());
    const int pages = s.n_tokens * max_pages;
    const KvCacheDesc d{f, 1, n_kv, 128, ps, pages};
    s.c1 = gpu->create_kv_cache(d);
    s.c2 = gpu->create_kv_cache(d);
    std::vector<int32_t> table(static_cast<size_t>(pages));
    std::iota(table.begin(), table.end(), 0);
    std::shuffle(table.begin(), table.end(), rng);
    auto slot_of = [&](int q, int p) { return table[size_t(q * max_pages + p / ps)] * ps + p % ps; };
    std::vector<int32_t> hs, pos, slot, seq;
    for (int q = 0; q < s.n_tokens; ++q) {
      for (int p = 0; p < lens[size_t(q)] - 1; ++p) hs.push_back(slot_of(q, p));
      pos.push_back(lens[size_t(q)] - 1);
      slot.push_back(slot_of(q, lens[size_t(q)] - 1));
      seq.push_back(q);
    }
    const int64_t history = int64_t(hs.size());
    auto hk = normal(size_t(history * n_kv * 128)), hv = normal(size_t(history * n_kv * 128));
    Pair phk = put(hk), phv = put(hv), phs = put(hs);
    for (auto* kv : {s.c1.get(), s.c2.get()})
      gpu->kv_write(*kv, 0, (const float*)phk.g, (const float*)phv.g, (const int32_t*)phs.g, history);
    const auto q = normal(size_t(s.n_tokens * s.n_heads * 128)), k = normal(size_t(s.n_tokens * n_kv * 128)),
               v = normal(size_t(s.n_tokens * n_kv * 128));
    std::vector<float> poison(q.size(), -777.0f), inv(64);
    for (size_t j = 0; j < inv.size(); ++j) inv[j] = std::pow(500000.0f, -2.0f * float(j) / 128.0f);
    s.q1 = put(q), s.q2 = put(q), s.k1 = put(k), s.k2 = put(k), s.v = put(v), s.pos = put(pos);
    s.slot = put(slot), s.seq = put(seq), s.len = put(lens), s.table = put(table), s.out1 = put(poison);
    s.out2 = put(poison), s.inv = put(inv);
    s.r = RopeArgs{RopeStyle::half, 128, 128, (const float*)s.inv.g};
    s.a = gpu_decode_args(s.n_heads, n_kv, 128, 0, s.seq, s.len, s.table, max_pages);
    s.a.n_tokens = s.n_tokens;
    s.a.one_token_per_seq = true;
    return s;
  }
  AttentionArgs args1(const Step& s) const {
    AttentionArgs a = s.a;
    a.q = (const float*)s.q1.g;
    a.out = (float*)s.out1.g;
    return a;
  }
  AttentionArgs args2(const Step& s) const {
    AttentionArgs a = s.a;
    a.q = (const float*)s.q2.g;
    a.out = (float*)s.out2.g;
    return a;
  }
  bool caches_equal(const Step& s) {
    const KvCacheDesc& d = dynamic_cast<cuda_impl::CudaKvCache&>(*s.c1).desc();
    std::vector<uint8_t> b1(d.total_bytes()), b2(d.total_bytes());
    gpu->download(b1.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*s.c1).base(), b1.size());
    gpu->download(b2.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*s.c2).base(), b2.size());
    return b1 == b2;
  }
};

const std::vector<int32_t> kLens = {1, 2, 17, 33, 100, 150, 160, 5, 64, 129, 3, 77, 140, 9, 31, 120};

struct Layout {
  int gb, splits;
};
const Layout kLayouts[] = {{1, 1}, {2, 1}, {4, 1}, {2, 2}, {4, 2}};

// The kernel's quantized output against the CPU reference quantizer on its f32 output.
TEST_F(AttentionOutput, QuantizedOutputIsTheReferenceQuantizationOfTheOutput) {
  SCOPED_TRACE(trace());
  uint32_t* err = static_cast<uint32_t*>(gpu->alloc(4));
  gpu->upload(err, std::vector<uint32_t>{0}.data(), 4);
  for (const Layout lay : kLayouts)
    for (const int block : {128, 32})
      for (const bool ue8m0 : {true, false}) {
        if (block == 32 && !ue8m0) continue;  // MXFP8 scales are UE8M0
        cuda_impl::set_cluster_attention_heads_per_block(lay.gb);
        cuda_impl::set_cluster_attention_splits(lay.splits);
        const int group = 4, n_kv = 2, n = 6;
        const std::string what = "heads/block " + std::to_string(lay.gb) + " splits " +
                                 std::to_string(lay.splits) + " block " + std::to_string(block) +
                                 (ue8m0 ? " ue8m0" : " f32 scales");
        Step s = make_step(KvFormat::bf16, n_kv, group, {kLens.begin(), kLens.begin() + n});
        const int64_t k = int64_t(s.n_heads) * 128;
        const int ld = mx8::cuda::sa_ld(n);
        const size_t scale_bytes = size_t(k / block) * size_t(ld) * (ue8m0 ? 1 : 4);
        Pair codes = put(std::vector<uint8_t>(size_t(n * k), 0xEE)),
             scales = put(std::vector<uint8_t>(scale_bytes, 0xEE));
        const cuda_impl::ActQuantOut qo{(uint8_t*)codes.g, scales.g, ld, ue8m0, block};
        gpu->synchronize();
        ASSERT_TRUE(cuda_impl::launch_rope_kv_write_attention(
            dynamic_cast<cuda_impl::CudaKvCache&>(*s.c1), (float*)s.q1.g, (float*)s.k1.g, (const float*)s.v.g,
            (const int32_t*)s.pos.g, (const int32_t*)s.slot.g, s.r, args1(s), err, nullptr, &qo))
            << what;
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
        gpu->rope_kv_write_attention(*s.c2, (float*)s.q2.g, (float*)s.k2.g, (const float*)s.v.g,
                                     (const int32_t*)s.pos.g, (const int32_t*)s.slot.g, s.r, args2(s));
        const auto out = get_gpu<float>(s.out1, size_t(n * k));
        ASSERT_EQ(out, get_gpu<float>(s.out2, size_t(n * k))) << what;
        ASSERT_TRUE(caches_equal(s)) << what;

        format::QuantSpec spec;
        spec.blocking = format::Blocking::tile(block);
        spec.storage = ue8m0 ? format::ScaleStorage::ue8m0 : format::ScaleStorage::f32;
        std::vector<uint8_t> ref_codes(size_t(n * k)), ref_scales(format::scale_bytes(spec, n, k));
        format::quantize_ref(format::SourceType::f32, out.data(), n, k, spec, ref_codes.data(),
                             ref_scales.data());
        ASSERT_EQ(get_gpu<uint8_t>(codes, size_t(n * k)), ref_codes) << what;
        const auto got = get_gpu<uint8_t>(scales, scale_bytes);
        const size_t sb = ue8m0 ? 1 : 4;  // bytes per scale
        for (int64_t row = 0; row < n; ++row)
          for (int64_t b = 0; b < k / block; ++b)
            ASSERT_EQ(0, std::memcmp(&got[size_t(b * ld + row) * sb],
                                     &ref_scales[size_t(row * (k / block) + b) * sb], sb))
                << what << ": scale of row " << row << " block " << b;
      }
  std::vector<uint32_t> e(1);
  gpu->download(e.data(), err, 4);
  EXPECT_EQ(e[0], 0u);
  gpu->free(err);
}

// attention_output against the composed ops, bit for bit, at batch sizes the FP8 GEMMs take.
TEST_F(AttentionOutput, EqualsTheComposedOps) {
  SCOPED_TRACE(trace());
  struct Fmt {
    WeightFormat f;
    ScaleType st;
  };
  for (const Layout lay : kLayouts)
    for (const Fmt fm :
         {Fmt{WeightFormat::fp8_block, ScaleType::ue8m0}, Fmt{WeightFormat::fp8_block, ScaleType::f32},
          Fmt{WeightFormat::mxfp8, ScaleType::ue8m0}})
      for (const KvFormat kf : {KvFormat::bf16, KvFormat::fp8})
        for (const int group : {1, 4, 8})
          for (const int n : {3, 16}) {
            if (group % lay.gb != 0) continue;
            cuda_impl::set_cluster_attention_heads_per_block(lay.gb);
            cuda_impl::set_cluster_attention_splits(lay.splits);
            const int n_kv = 2;
            const std::string what =
                "heads/block " + std::to_string(lay.gb) + " splits " + std::to_string(lay.splits) + " " +
                weight_format_name(fm.f) + (fm.st == ScaleType::f32 ? "/f32 scales" : "") + " kv " +
                kv_format_name(kf) + " group " + std::to_string(group) + " batch " + std::to_string(n);
            Step s = make_step(kf, n_kv, group, {kLens.begin(), kLens.begin() + n});
            const int64_t k = int64_t(s.n_heads) * 128, N = 272;  // N: 17 x 16, not a multiple of 64
            const gemv_test::HostW w = gemv_test::make_weight(fm.f, fm.st, N, k, rng);
            Pair wd = put(w.data), ws = put(w.scales);
            const auto x = normal(size_t(n * N));
            Pair y1 = put(x), y2 = put(x);
            const WeightView wv{fm.f, N, k, wd.g, ws.g, fm.st};
            gpu->attention_output(*s.c1, (float*)s.q1.g, (float*)s.k1.g, (const float*)s.v.g,
                                  (const int32_t*)s.pos.g, (const int32_t*)s.slot.g, s.r, args1(s),
                                  {wv, (float*)y1.g, nullptr});
            gpu->Backend::attention_output(*s.c2, (float*)s.q2.g, (float*)s.k2.g, (const float*)s.v.g,
                                           (const int32_t*)s.pos.g, (const int32_t*)s.slot.g, s.r, args2(s),
                                           {wv, (float*)y2.g, nullptr});
            const auto r1 = get_gpu<float>(y1, x.size());
            ASSERT_EQ(r1, get_gpu<float>(y2, x.size())) << what;
            ASSERT_NE(r1, x) << what;  // the projection was added
            ASSERT_EQ(get_gpu<float>(s.out1, size_t(n * k)), get_gpu<float>(s.out2, size_t(n * k))) << what;
            ASSERT_TRUE(caches_equal(s)) << what;
          }
}

}  // namespace
}  // namespace mx8::backend
