// The skinny FP8 GEMM (gemv_fp8_skinny.cu) against the CPU backend's matmul_fused on the same
// fp8_block weights: every launch shape (k split 1..8 over a cluster, 4/8/16 warps per block, L2
// prefetch on and off), m = 1..16 (all four n8-tile counts), ragged n, 1..4 targets, SwiGLU input,
// biases, accumulate, UE8M0 and f32 scales, x over wide ranges, NaN/Inf, and the routing through
// launch_gemv_group for m = 5..16. Outputs not accumulated into start as NaN and every output buffer
// has a poisoned tail, so an unwritten or stray store fails. Skips without a GPU.
//
// Tolerance: |gpu - cpu| <= 64 u sum_k |w_k x_k| (+ |bias| + |y0|), u = 2^-24, the grouped GEMV test's
// bound (gemv_group_test.cpp says why): x enters as f16 hi + lo parts (22 significant bits: <= 2^-22 =
// 4 u relative error per product), the products are exact in the tensor cores, and the f32 sums run
// in another order than the CPU's (per 16-wide mma step, per 128-wide scale block, per k slice of
// a cluster: the C slices' partial sums add C - 1 roundings of at most u sum|w x| each, C <= 8). One
// wrong weight, scale, plane or slice moves a result by >= ~sum|w x| / k (>= 2.4e-4 sum|w x| for
// k <= 4096 here), ~250x the tolerance. The SwiGLU input is formed exactly as the CPU's silu_mul
// (expf, f32 division): it adds nothing beyond a few u (covered by the same bound).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/gemv_fp8_skinny.cuh"
#include "cuda/cuda_test_util.h"
#include "cuda/gemv_test_util.h"
#include "mx8/backend/backend.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend {
namespace {

using cuda::test::DeviceBuffer;
using gemv_test::dev;
using gemv_test::HostW;
using gemv_test::normal;
constexpr double kU = 1.0 / 16777216.0;  // 2^-24
constexpr size_t kTail = 64;             // poisoned floats after every output

// fp8_block weights (the only format this kernel takes).
HostW make_weight(ScaleType st, int64_t n, int64_t k, std::mt19937& rng) {
  return gemv_test::make_weight(WeightFormat::fp8_block, st, n, k, rng);
}

// How a case is launched: through launch_gemv_group (routing), or directly with a pinned shape.
struct Launch {
  bool routed = false;
  cuda_impl::SkinnyConfig cfg;
  std::string name() const {
    if (routed) return "routed";
    return "split " + std::to_string(cfg.split) + " warps " + std::to_string(cfg.warps) + " ku " +
           std::to_string(cfg.ku) + " stages " + std::to_string(cfg.stages);
  }
};

// `backend` is the CPU backend: the reference the GPU launches are compared with.
class GemvSkinny : public gemv_test::GemvTest<false> {
 protected:
  std::vector<float> x_override;       // when set, used as x ([m][k])
  std::vector<HostW> weight_override;  // when set, used as the targets' weights
  std::vector<int64_t> nan_code_rows;  // rows of target 0 with an E4M3 NaN code: NaN expected

  // Runs one case on the GPU and the CPU and compares every output (and the poisoned tails).
  void check(ScaleType st, const std::vector<int64_t>& ns, int64_t k, int64_t m, bool swiglu, bool accumulate,
             const Launch& how) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + how.name() +
                 (st == ScaleType::f32 ? " f32" : " ue8m0") + " scales, k " + std::to_string(k) + " m " +
                 std::to_string(m) + (swiglu ? " swiglu" : "") + (accumulate ? " accumulate" : ""));
    const int count = int(ns.size());
    std::vector<HostW> w;
    std::vector<std::unique_ptr<DeviceBuffer<uint8_t>>> dd, ds;
    std::vector<std::vector<float>> bias, y, y0;
    std::vector<std::unique_ptr<DeviceBuffer<float>>> db, dy;
    std::vector<MatmulTarget> tc(static_cast<size_t>(count)), tg(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      w.push_back(weight_override.empty() ? make_weight(st, ns[size_t(i)], k, rng)
                                          : weight_override[size_t(i)]);
      const HostW& hw = w.back();
      dd.push_back(dev(hw.data));
      ds.push_back(dev(hw.scales));
      bias.push_back(i % 2 == 0 ? normal(size_t(hw.n), rng) : std::vector<float>{});
      db.push_back(dev(bias.back()));
      std::vector<float> init =
          accumulate ? normal(size_t(m * hw.n), rng)
                     : std::vector<float>(size_t(m * hw.n), std::numeric_limits<float>::quiet_NaN());
      y.push_back(init);
      y0.push_back(init);
      init.resize(init.size() + kTail, 1234.5f);  // the poisoned tail
      dy.push_back(dev(init));
    }
    for (int i = 0; i < count; ++i) {
      const HostW& hw = w[size_t(i)];
      tc[size_t(i)] = {WeightView{WeightFormat::fp8_block, hw.n, k, hw.data.data(), hw.scales.data(), st},
                       y[size_t(i)].data(), bias[size_t(i)].empty() ? nullptr : bias[size_t(i)].data()};
      tg[size_t(i)] = {
          WeightView{WeightFormat::fp8_block, hw.n, k, dd[size_t(i)]->get(), ds[size_t(i)]->get(), st},
          dy[size_t(i)]->get(), bias[size_t(i)].empty() ? nullptr : db[size_t(i)]->get()};
    }
    const std::vector<float> x = x_override.empty() ? normal(size_t(m * k), rng) : x_override;
    const std::vector<float> up = normal(size_t(m * k), rng);
    auto dx = dev(x), dup = dev(up);
    MatmulInput ic{x.data(), swiglu ? up.data() : nullptr, m, accumulate};
    MatmulInput ig{dx->get(), swiglu ? dup->get() : nullptr, m, accumulate};
    ASSERT_TRUE(cuda_impl::gemv_fp8_skinny_supports(ig, tg.data(), count));
    if (how.routed) {
      ASSERT_TRUE(cuda_impl::gemv_fp8_skinny_applies(ig, tg.data(), count));
      cuda_impl::launch_gemv_group(ig, tg.data(), count, nullptr);
    } else {
      cuda_impl::launch_gemv_fp8_skinny(ig, tg.data(), count, nullptr, how.cfg);
    }
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    backend->matmul_fused(ic, tc.data(), count);
    std::vector<float> xe = x;  // the effective input, as the CPU forms it, for the bound
    if (swiglu) backend->silu_mul(x.data(), up.data(), xe.data(), m * k);
    for (int t = 0; t < count; ++t) {
      const HostW& hw = w[size_t(t)];
      const std::vector<float> b = dy[size_t(t)]->download();
      for (size_t i = 0; i < kTail; ++i)
        ASSERT_EQ(b[size_t(m * hw.n) + i], 1234.5f) << "target " << t << ": store past y";
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < hw.n; ++c) {
          const size_t o = size_t(r * hw.n + c);
          const float want = y[size_t(t)][o], got = b[o];
          // The CPU's SIMD kernels read the NaN code 0x7F as 480 (src/backend/cpu/gemv.h); the GPU
          // kernels propagate it as the f32 product would.
          if (t == 0 && std::find(nan_code_rows.begin(), nan_code_rows.end(), c) != nan_code_rows.end()) {
            ASSERT_TRUE(std::isnan(got)) << "row " << r << " col " << c << ": " << got;
            continue;
          }
          if (!std::isfinite(want)) {  // NaN stays NaN, an infinity keeps its sign
            if (std::isnan(want))
              ASSERT_TRUE(std::isnan(got)) << "target " << t << " row " << r << " col " << c << ": " << got;
            else
              ASSERT_EQ(got, want) << "target " << t << " row " << r << " col " << c;
            continue;
          }
          double bound = bias[size_t(t)].empty() ? 0.0 : std::fabs(bias[size_t(t)][size_t(c)]);
          if (accumulate) bound += std::fabs(y0[size_t(t)][o]);
          for (int64_t i = 0; i < k; ++i)
            bound += std::fabs(double(hw.deq[size_t(c * k + i)]) * xe[size_t(r * k + i)]);
          ASSERT_NEAR(got, want, 64 * kU * bound)
              << "target " << t << " (n " << hw.n << ") row " << r << " col " << c;
        }
    }
  }
};

// Every pinned launch shape on one ragged group: both kernels (registers; a ring of 4 or 8 stages),
// splits 1..8 (k = 1152 is 9 scale blocks, so splits 2..8 cut it into unequal slices), 4..16 warps;
// n = 300 + 37 + 1000 ends tiles and 128-row scale blocks mid-way; m covers 1, 2, 3 and 4 n8 tiles of
// x columns, full and partial.
TEST_F(GemvSkinny, EveryLaunchShapeMatchesCpu) {
  int mode = 0;
  for (int stages : {0, 4, 8})
    for (int split : {1, 2, 3, 5, 8})
      for (int warps : {4, 8, 16}) {
        if (stages == 8 && warps == 16) continue;  // 256 KB of ring: does not fit
        const int64_t ms[] = {1, 3, 4, 6, 8, 11, 13, 16, 2, 5, 9, 10, 12, 14, 15, 7};
        const int64_t m = ms[mode % 16];
        Launch how;
        how.cfg = cuda_impl::SkinnyConfig{split, warps, 0, stages};
        const ScaleType st = mode % 3 == 0 ? ScaleType::f32 : ScaleType::ue8m0;
        check(st, {300, 37, 1000}, 1152, m, mode % 2 == 1, (mode / 2) % 2 == 1, how);
        ++mode;
        if (HasFatalFailure()) return;
      }
  // The register kernel with two scale blocks per round for 9..16 rows (the 12-warp kernels) and one
  // for 1..8 (the defaults are the other way round).
  for (int split : {1, 3, 8})
    for (int warps : {0, 4}) {
      const int64_t m = warps == 0 ? std::min(16, 8 + 2 * split) : split;
      Launch how;
      how.cfg = cuda_impl::SkinnyConfig{split, warps, m > 8 ? 2 : 1, 0};
      check(split == 3 ? ScaleType::f32 : ScaleType::ue8m0, {300, 37, 1000}, 1152, m, split == 1, split == 8,
            how);
      if (HasFatalFailure()) return;
    }
}

// The route launch_gemv_group takes for m = 5..16 (3..16 at k = 4096; the heuristic picks the shape), 1..4
// targets, every m, both scale types, with and without SwiGLU and accumulation.
TEST_F(GemvSkinny, RoutedGroupsMatchCpu) {
  struct G {
    std::vector<int64_t> ns;
    int64_t k;
  };
  const G groups[] = {{{1000, 130, 4100}, 512}, {{300}, 4096}, {{64, 64, 200, 33}, 256}, {{2112}, 1536}};
  int mode = 0;
  for (const G& g : groups)
    for (int64_t m = g.k >= 4096 ? 3 : 5; m <= 16; ++m) {
      if (g.ns.size() == 1 && g.ns[0] == 300 && m % 3 != 0 && m > 4)
        continue;  // keep the CPU reference quick
      if (g.k == 1536 && m % 4 != 0) continue;
      ++mode;
      check(mode % 3 == 0 ? ScaleType::f32 : ScaleType::ue8m0, g.ns, g.k, m, mode % 2 == 1,
            (mode / 2) % 2 == 1, Launch{true, {}});
      if (HasFatalFailure()) return;
    }
}

// x split into f16 hi + lo parts under a power of two per 128 values must keep f32 precision for
// blocks spanning 1e-30..1e25, one value 1e6 times the rest, scattered tiny values; each of the 16
// rows has its own pattern (and so its own scales), and k is split over a cluster.
TEST_F(GemvSkinny, KeepsF32PrecisionOverWideRanges) {
  const int64_t k = 1024, m = 16;
  std::vector<float> x = normal(size_t(m * k), rng);
  // 1e25 at most: every product stays finite (see GemvGroup.Fp8MmaKeepsF32PrecisionOverWideRanges).
  const float block_scale[8] = {1e-30f, 1e-6f, 1.0f, 3e4f, 7e4f, 1e12f, 1e25f, 1.0f};
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < k; ++i) {
      float& v = x[size_t(r * k + i)];
      v *= block_scale[(i / 128 + r) % 8] * float(r % 5 + 1);
      if (i % 128 == 5 && (i / 128 + r) % 2 == 0) v *= 1e6f;  // one outlier per other block
      if (i % 97 == 3) v *= 1e-9f;                            // scattered tiny values
    }
  x_override = x;
  for (ScaleType st : {ScaleType::ue8m0, ScaleType::f32})
    for (int split : {1, 4}) {
      Launch how;
      how.cfg.split = split;
      how.cfg.stages = st == ScaleType::f32 ? 4 : 0;
      check(st, {384, 136}, k, m, false, false, how);
      if (HasFatalFailure()) return;
    }
}

// NaN weight codes poison their output rows, a NaN in x its output row, +-Inf in x gives +-Inf (or
// NaN where it meets a zero weight or both signs), exactly as the CPU's f32 products do.
TEST_F(GemvSkinny, NaNAndInfPropagate) {
  const int64_t n = 200, k = 512, m = 9;
  HostW w = make_weight(ScaleType::ue8m0, n, k, rng);
  w.data[size_t(5 * k + 17)] = 0x7F;  // NaN codes in rows 5 and 130, different scale blocks
  w.data[size_t(130 * k + 300)] = 0xFF;
  for (int64_t r = 0; r < n; ++r)  // column 40: no zero codes, one sign, so +-Inf stays infinite
    w.data[size_t(r * k + 40)] = uint8_t(0x38 + (r % 8));
  for (int64_t r = 0; r < n; ++r)  // deq for the bound (the NaN rows are checked for NaN only)
    for (int64_t c = 0; c < k; ++c)
      w.deq[size_t(r * k + c)] = format::e4m3_to_f32(w.data[size_t(r * k + c)]) *
                                 format::ue8m0_to_f32(w.scales[size_t((r / 128) * (k / 128) + c / 128)]);
  weight_override = {w};
  nan_code_rows = {5, 130};
  std::vector<float> x = normal(size_t(m * k), rng);
  x[size_t(2 * k + 100)] = std::nanf("");
  x[size_t(4 * k + 40)] = std::numeric_limits<float>::infinity();
  x[size_t(7 * k + 40)] = -std::numeric_limits<float>::infinity();
  x[size_t(8 * k + 3)] = std::numeric_limits<float>::infinity();  // meets zeros and both signs: NaN
  x_override = x;
  for (int split : {1, 2})
    for (int stages : {0, 4}) {
      Launch how;
      how.cfg.split = split;
      how.cfg.stages = stages;
      check(ScaleType::ue8m0, {n}, k, m, false, false, how);
      if (HasFatalFailure()) return;
    }
}

// Same bits from direct launches, repeated launches and a replayed CUDA graph (fixed summation
// order, no host reads or allocations in the launcher, no per-launch state).
TEST_F(GemvSkinny, DeterministicAndGraphReplayable) {
  const int64_t n = 2112, k = 1536, m = 12;
  HostW w = make_weight(ScaleType::ue8m0, n, k, rng);
  auto dd = dev(w.data), ds = dev(w.scales);
  auto dx = dev(normal(size_t(m * k), rng));
  DeviceBuffer<float> a(size_t(m * n)), b(size_t(m * n)), c(size_t(m * n));
  MatmulInput in{dx->get(), nullptr, m, false};
  MatmulTarget t{WeightView{WeightFormat::fp8_block, n, k, dd->get(), ds->get(), ScaleType::ue8m0}, a.get(),
                 nullptr};
  for (int split : {0, 1, 3, 8})
    for (int stages : {-1, 0, 4}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " split " + std::to_string(split) + " stages " +
                   std::to_string(stages));
      const cuda_impl::SkinnyConfig cfg{split, 0, 0, stages};
      t.y = a.get();
      cuda_impl::launch_gemv_fp8_skinny(in, &t, 1, nullptr, cfg);
      t.y = b.get();
      cuda_impl::launch_gemv_fp8_skinny(in, &t, 1, nullptr, cfg);
      cudaStream_t s;
      ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
      ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
      t.y = c.get();
      cuda_impl::launch_gemv_fp8_skinny(in, &t, 1, s, cfg);
      cudaGraph_t graph;
      ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
      cudaGraphExec_t exec;
      ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
      // Poisoned on s itself: a cudaMemset on the legacy stream would queue behind the direct launches
      // above, which s does not wait for, and could land after the replay.
      ASSERT_EQ(cudaMemsetAsync(c.get(), 0xA5, c.count() * sizeof(float), s), cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
      const auto va = a.download(), vb = b.download(), vc = c.download();
      EXPECT_EQ(std::memcmp(va.data(), vb.data(), va.size() * 4), 0);
      EXPECT_EQ(std::memcmp(va.data(), vc.data(), va.size() * 4), 0);
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      cudaStreamDestroy(s);
    }
}

// What launch_gemv_group routes here: fp8_block with m = 5..16, and m = 3..4 from k = 4096 on (the
// rest stays with gemv_fp8_mma.cu; other formats and fused rmsnorm with their kernels).
TEST_F(GemvSkinny, RoutesOnlyFp8BlockWithFiveToSixteenRows) {
  if (std::getenv("MX8_SKINNY")) GTEST_SKIP() << "MX8_SKINNY overrides the routing";
  DeviceBuffer<uint8_t> data(256 * 4096), scales(64);
  DeviceBuffer<float> x(16 * 4096), y(16 * 256), norm(4096);
  MatmulTarget t{WeightView{WeightFormat::fp8_block, 256, 512, data.get(), scales.get(), ScaleType::ue8m0},
                 y.get(), nullptr};
  for (int64_t k : {512, 2048, 4096}) {
    t.w.k = k;
    for (int64_t m = 1; m <= 16; ++m) {
      MatmulInput in{x.get(), nullptr, m, false};
      EXPECT_TRUE(cuda_impl::gemv_fp8_skinny_supports(in, &t, 1)) << m;
      EXPECT_EQ(cuda_impl::gemv_fp8_skinny_applies(in, &t, 1), m >= (k >= 4096 ? 3 : 5))
          << "k " << k << " m " << m;
    }
  }
  t.w.k = 512;
  MatmulInput in{x.get(), nullptr, 8, false};
  MatmulInput normed = in;
  normed.norm = norm.get();
  EXPECT_FALSE(cuda_impl::gemv_fp8_skinny_applies(normed, &t, 1));  // the backend normalizes first
  MatmulTarget bf = t;
  bf.w.format = WeightFormat::bf16;
  EXPECT_FALSE(cuda_impl::gemv_fp8_skinny_applies(in, &bf, 1));
  MatmulTarget odd = t;
  odd.w.k = 520;  // not a multiple of 128
  EXPECT_FALSE(cuda_impl::gemv_fp8_skinny_supports(in, &odd, 1));
}

}  // namespace
}  // namespace mx8::backend
