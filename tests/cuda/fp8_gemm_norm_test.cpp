// The FP8 GEMM path (m > gemv_max_rows) with an rmsnorm fused into its input: the backend normalizes
// and quantizes in one launch (rmsnorm_quantize_act_kernel), which must give, bit for bit, the
// products of the composed path (the rmsnorm op into a buffer, then the plain group). Both paths
// quantize the same normalized values, so any difference is a defect: a wrong row scale, a tile
// quantized from the wrong lanes, a scale stored at the wrong place. fp8_block weights with UE8M0
// and f32 scales and mxfp8 weights; k from one pass of 128 threads to several passes of 1024.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "cuda/gemv_test_util.h"

namespace mx8::backend {
namespace {

class Fp8GemmNorm : public gemv_test::GemvTest<true> {};

TEST_F(Fp8GemmNorm, FusedRmsnormEqualsTheComposedOps) {
  struct Fmt {
    WeightFormat f;
    ScaleType st;
  };
  for (const Fmt fm :
       {Fmt{WeightFormat::fp8_block, ScaleType::ue8m0}, Fmt{WeightFormat::fp8_block, ScaleType::f32},
        Fmt{WeightFormat::mxfp8, ScaleType::ue8m0}})
    for (const int64_t k : {512, 4096, 5120})
      for (const int64_t m : {5, 16, 33, 300}) {
        SCOPED_TRACE("seed " + std::to_string(seed) + " " + weight_format_name(fm.f) +
                     (fm.st == ScaleType::f32 ? "/f32 scales" : "") + " k " + std::to_string(k) + " m " +
                     std::to_string(m));
        const std::vector<int64_t> ns = {384, 128, 128};
        std::vector<std::unique_ptr<gemv_test::DeviceBuffer<uint8_t>>> data, scales;
        std::vector<std::unique_ptr<gemv_test::DeviceBuffer<float>>> fused, composed;
        std::vector<MatmulTarget> tf, tc;
        for (const int64_t n : ns) {
          const gemv_test::HostW w = gemv_test::make_weight(fm.f, fm.st, n, k, rng);
          data.push_back(gemv_test::dev(w.data));
          scales.push_back(gemv_test::dev(w.scales));
          fused.push_back(gemv_test::dev(std::vector<float>(size_t(m * n), 0.0f)));
          composed.push_back(gemv_test::dev(std::vector<float>(size_t(m * n), 0.0f)));
          const WeightView wv{fm.f, n, k, data.back()->get(), scales.back()->get(), fm.st};
          tf.push_back({wv, fused.back()->get(), nullptr});
          tc.push_back({wv, composed.back()->get(), nullptr});
        }
        std::vector<float> norm_w = gemv_test::normal(size_t(k), rng);
        for (float& v : norm_w) v = 1.0f + 0.25f * v;
        auto x = gemv_test::dev(gemv_test::normal(size_t(m * k), rng));
        auto norm = gemv_test::dev(norm_w);
        auto normed = gemv_test::dev(std::vector<float>(size_t(m * k), 0.0f));
        const float eps = 1e-5f;
        MatmulInput in{x->get(), nullptr, m, false, norm->get(), eps};
        backend->matmul_fused(in, tf.data(), int(tf.size()));
        backend->rmsnorm(x->get(), norm->get(), m, k, eps, normed->get());
        const MatmulInput plain{normed->get(), nullptr, m, false};
        backend->matmul_fused(plain, tc.data(), int(tc.size()));
        backend->synchronize();
        for (size_t t = 0; t < ns.size(); ++t) {
          const std::vector<float> a = fused[t]->download(), b = composed[t]->download();
          EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0) << "target " << t;
        }
      }
}

}  // namespace
}  // namespace mx8::backend
