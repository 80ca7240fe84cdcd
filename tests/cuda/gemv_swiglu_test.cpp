// CudaBackend::matmul_swiglu against the GPU's own composition, matmul_fused into gate and up then
// silu_mul: bit for bit. The paired tensor-core GEMV (gemv_fp8_mma.cu, kPair) computes the two
// products with the same operations in the same order as the grouped GEMV, only with the gate and up
// rows side by side in one tile, and forms silu(g) * u as silu_mul_kernel does, so any difference is
// a defect (a wrong row, scale, bias or input). Also: which form the result takes (h formed in the
// launch for one row of x; left to the consumer where the skinny GEMM or another format takes the
// rows), that nothing lands past the outputs (a ragged last tile's store guard), and that the default
// composition is what the CPU backend returns. Skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "cuda/gemv_test_util.h"
#include "mx8/backend/backend.h"
#include "mx8/error.h"

namespace mx8::backend {
namespace {

using cuda::test::DeviceBuffer;
using gemv_test::dev;
using gemv_test::HostW;
using gemv_test::make_weight;
using gemv_test::normal;

// `backend` is the CUDA backend: the paired launch and its composition both run on it.
class GemvSwiglu : public gemv_test::GemvTest<true> {
 protected:
  // One case; returns whether the backend formed h in its launch (x_up unset in the result).
  bool check(WeightFormat f, ScaleType st, int64_t n, int64_t k, int64_t m, bool norm, bool bias) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + weight_format_name(f) +
                 (st == ScaleType::f32 ? "/f32 scales" : "") + " n " + std::to_string(n) + " k " +
                 std::to_string(k) + " m " + std::to_string(m) + (norm ? " norm" : "") +
                 (bias ? " bias" : ""));
    const HostW wg = make_weight(f, st, n, k, rng), wu = make_weight(f, st, n, k, rng);
    auto dwg = dev(wg.data), dsg = dev(wg.scales.empty() ? std::vector<uint8_t>(16) : wg.scales);
    auto dwu = dev(wu.data), dsu = dev(wu.scales.empty() ? std::vector<uint8_t>(16) : wu.scales);
    const WeightView vg{f, n, k, dwg->get(), dsg->get(), st}, vu{f, n, k, dwu->get(), dsu->get(), st};
    auto bg = dev(normal(size_t(n), rng)), bu = dev(normal(size_t(n), rng));
    std::vector<float> norm_w = normal(size_t(k), rng);
    for (float& v : norm_w) v = 1.0f + 0.25f * v;
    auto dx = dev(normal(size_t(m * k), rng)), dnorm = dev(norm_w);
    const std::vector<float> nan(size_t(m * n), std::numeric_limits<float>::quiet_NaN());
    // The launch under test writes into buffers with a tail past its m x n outputs: a store to a row
    // past n (a ragged last tile's guard) lands there. 64 floats: more than a tile's 8 rows past n.
    std::vector<float> nan_tail(nan);
    nan_tail.resize(nan.size() + 64, std::numeric_limits<float>::quiet_NaN());
    auto g1 = dev(nan), u1 = dev(nan), g2 = dev(nan_tail), u2 = dev(nan_tail);
    const MatmulInput in{dx->get(), nullptr, m, false, norm ? dnorm->get() : nullptr, 1e-5f};
    // The reference: the two products, then silu_mul.
    const MatmulTarget ref[2] = {{vg, g1->get(), bias ? bg->get() : nullptr},
                                 {vu, u1->get(), bias ? bu->get() : nullptr}};
    backend->matmul_fused(in, ref, 2);
    backend->silu_mul(g1->get(), u1->get(), g1->get(), m * n);
    const MatmulInput h = backend->matmul_swiglu(in, {vg, g2->get(), bias ? bg->get() : nullptr},
                                                 {vu, u2->get(), bias ? bu->get() : nullptr});
    EXPECT_EQ(h.x, g2->get());
    EXPECT_EQ(h.m, m);
    EXPECT_FALSE(h.accumulate);
    if (h.x_up) {
      EXPECT_EQ(h.x_up, u2->get());
      backend->silu_mul(g2->get(), u2->get(), g2->get(), m * n);
    }
    backend->synchronize();
    const std::vector<float> a = g1->download(), b = g2->download(), up = u2->download();
    auto bits = [](float v) {
      uint32_t u;
      std::memcpy(&u, &v, 4);
      return u;
    };
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(bits(b[i]), bits(a[i]))
          << "row " << i / size_t(n) << " col " << i % size_t(n) << ": " << b[i] << " vs " << a[i];
      if (bits(b[i]) != bits(a[i])) break;
    }
    for (size_t i = a.size(); i < nan_tail.size(); ++i) {
      EXPECT_EQ(bits(b[i]), bits(nan_tail[i])) << "h written " << i - a.size() << " past its end";
      EXPECT_EQ(bits(up[i]), bits(nan_tail[i])) << "up written " << i - a.size() << " past its end";
      if (HasFailure()) break;
    }
    return h.x_up == nullptr;
  }
};

// One row of x takes the paired kernel (h formed) for FP8 block weights: ragged n (a last tile of
// fewer than 8 rows, 128-row scale blocks cut), UE8M0 and f32 scales, with and without the fused
// rmsnorm and biases; k = 14336 is the widest staging. Two and four rows take it too where the skinny
// GEMM does not (k < 4096). MXFP8 weights take it for one and two rows (more go to gemv_fp8x8).
TEST_F(GemvSwiglu, PairedKernelEqualsTheComposition) {
  struct Case {
    int64_t n, k, m;
  };
  const Case cases[] = {{1000, 512, 1},       {200, 4096, 1}, {131, 14336, 1},
                        {14336 / 8, 1024, 2}, {300, 256, 3},  {72, 2048, 4}};
  int i = 0;
  for (ScaleType st : {ScaleType::ue8m0, ScaleType::f32})
    for (const Case& c : cases) {
      ++i;
      EXPECT_TRUE(check(WeightFormat::fp8_block, st, c.n, c.k, c.m, i % 2 == 1, (i / 2) % 2 == 0))
          << "expected the paired kernel";
      if (HasFailure()) return;
    }
  for (const Case& c : cases) {
    if (c.m > 2) continue;
    ++i;
    EXPECT_TRUE(check(WeightFormat::mxfp8, ScaleType::ue8m0, c.n, c.k, c.m, i % 2 == 1, (i / 2) % 2 == 0))
        << "expected the paired kernel";
    if (HasFailure()) return;
  }
}

// Where the paired kernel does not apply, the default composition: the two products, h left to the
// consumer. Rows the skinny GEMM takes (m >= 3 at k = 4096, m >= 5), other formats, MXFP8 beyond the
// mma GEMV's 4 rows, m > 16.
TEST_F(GemvSwiglu, OtherRowsAndFormatsKeepTheComposition) {
  struct Case {
    WeightFormat f;
    int64_t n, k, m;
  };
  const Case cases[] = {{WeightFormat::fp8_block, 256, 4096, 3}, {WeightFormat::fp8_block, 200, 512, 5},
                        {WeightFormat::fp8_block, 64, 256, 17},  {WeightFormat::bf16, 300, 512, 1},
                        {WeightFormat::mxfp8, 130, 256, 5},      {WeightFormat::f32, 40, 128, 3}};
  for (const Case& c : cases) {
    EXPECT_FALSE(check(c.f, ScaleType::ue8m0, c.n, c.k, c.m, false, true)) << "expected the composition";
    if (HasFailure()) return;
  }
}

TEST_F(GemvSwiglu, RejectsMismatchedShapesAndModes) {
  std::vector<uint8_t> zeros(256 * 256, 0);
  auto w = dev(zeros), s = dev(std::vector<uint8_t>(16, 127));
  auto y = dev(std::vector<float>(256, 0.0f)), x = dev(std::vector<float>(256, 0.0f));
  const WeightView a{WeightFormat::fp8_block, 128, 256, w->get(), s->get(), ScaleType::ue8m0};
  WeightView b = a;
  b.n = 64;
  EXPECT_THROW(backend->matmul_swiglu({x->get(), nullptr, 1}, {a, y->get()}, {b, y->get()}), Error);
  EXPECT_THROW(backend->matmul_swiglu({x->get(), nullptr, 1, true}, {a, y->get()}, {a, y->get()}), Error);
  EXPECT_THROW(backend->matmul_swiglu({x->get(), x->get(), 1}, {a, y->get()}, {a, y->get()}), Error);
}

}  // namespace
}  // namespace mx8::backend
