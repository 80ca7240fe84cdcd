// The grouped GEMV (launch_gemv_group, backend_cuda_gemv.cu) against the CPU backend's
// matmul_fused (the composition of silu_mul, matmul and add), on random inputs with ragged n, every
// weight format, m in {1, 2, 5, 9, 16}, with and without the SwiGLU input, accumulate and biases.
// Outputs that are not accumulated into start as NaN, so an unwritten one fails. Skips without a GPU.
//
// Tolerance: |gpu - cpu| <= 64 u sum_k |w_k x_k| (+ |bias| + |y0|), u = 2^-24, the matmul test's
// bound (tests/cuda/backend_cuda_test.cpp says why: both sides form the same f32 products and sum
// them in different orders, while one wrong weight, scale or chunk moves a result by >= ~sum|w x| / k,
// >= 2.4e-4 sum|w x| for k <= 4096 here, 250x the tolerance). The SwiGLU input adds the difference of
// the GPU's silu (__expf, approximate reciprocal: relative error <= ~|g| * 2^-23 + 2 ulp, <= ~10 u for
// the |g| <= 6 of N(0, 1) inputs) from the CPU's (glibc expf): <= 10 u |w x| per term, inside the
// bound. The accumulated y0 + (s + bias) adds one rounding of |y0| + |s|, covered by adding |y0|.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/gemv_fp8_mma.cuh"
#include "backend/cuda/gemv_tuning.h"
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
using gemv_test::make_weight;
using gemv_test::normal;
constexpr double kU = 1.0 / 16777216.0;  // 2^-24

// One group: weights, biases and outputs on both sides.
struct Group {
  std::vector<HostW> w;
  std::vector<std::unique_ptr<DeviceBuffer<uint8_t>>> dd, ds;
  std::vector<std::vector<float>> bias, y;  // host: bias (empty = none), y (CPU result)
  std::vector<std::unique_ptr<DeviceBuffer<float>>> db, dy;
};

// `backend` is the CPU backend: the reference the GPU launches are compared with.
class GemvGroup : public gemv_test::GemvTest<false> {
 protected:
  std::vector<float> x_override;  // when set, check() uses it as x ([m][k])
  bool use_norm = false;          // check() fuses an rmsnorm into the input (not with swiglu)
  bool wide_mx_scales = false;    // check() redraws MXFP8 scales from 2^-30 .. 2^10 (with 2^-127)

  // MXFP8 scales that differ a lot between the four 32-wide blocks of every 128 of k (the mma GEMV
  // scales each block's products separately), and some 2^-127 (UE8M0 0, a subnormal f32).
  void redraw_mx_scales(HostW& w) {
    ASSERT_EQ(w.f, WeightFormat::mxfp8);
    std::uniform_int_distribution<int> ex(127 - 30, 127 + 10), pick(0, 15);
    const int64_t kb = w.k / 32;
    for (auto& b : w.scales) b = uint8_t(pick(rng) == 0 ? 0 : ex(rng));
    for (int64_t r = 0; r < w.n; ++r)
      for (int64_t c = 0; c < w.k; ++c)
        w.deq[size_t(r * w.k + c)] = format::e4m3_to_f32(w.data[size_t(r * w.k + c)]) *
                                     format::ue8m0_to_f32(w.scales[size_t(r * kb + c / 32)]);
  }

  // Runs one case through the GPU launcher (tuned or default) and the CPU, and compares.
  void check(WeightFormat f, ScaleType st, const std::vector<int64_t>& ns, int64_t k, int64_t m, bool swiglu,
             bool accumulate, const cuda_impl::GemvTuning* tuning, const std::string& what) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " " + what + " " + weight_format_name(f) +
                 (st == ScaleType::f32 ? "/f32 scales" : "") + " k " + std::to_string(k) + " m " +
                 std::to_string(m) + (swiglu ? " swiglu" : "") + (accumulate ? " accumulate" : ""));
    const int count = int(ns.size());
    Group g;
    std::vector<MatmulTarget> tc(static_cast<size_t>(count)), tg(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      g.w.push_back(make_weight(f, st, ns[size_t(i)], k, rng));
      if (wide_mx_scales) redraw_mx_scales(g.w.back());
      const HostW& w = g.w.back();
      g.dd.push_back(dev(w.data));
      g.ds.push_back(dev(w.scales.empty() ? std::vector<uint8_t>(16) : w.scales));
      g.bias.push_back(i % 2 == 0 ? normal(size_t(w.n), rng) : std::vector<float>{});
      g.db.push_back(dev(g.bias.back()));
      std::vector<float> y0 =
          accumulate ? normal(size_t(m * w.n), rng)
                     : std::vector<float>(size_t(m * w.n), std::numeric_limits<float>::quiet_NaN());
      g.y.push_back(y0);
      g.dy.push_back(dev(y0));
      tc[size_t(i)] = {WeightView{f, w.n, k, w.data.data(), w.scales.data(), st}, g.y.back().data(),
                       g.bias.back().empty() ? nullptr : g.bias.back().data()};
      tg[size_t(i)] = {WeightView{f, w.n, k, g.dd.back()->get(), g.ds.back()->get(), st}, g.dy.back()->get(),
                       g.bias.back().empty() ? nullptr : g.db.back()->get()};
    }
    const std::vector<float> x = x_override.empty() ? normal(size_t(m * k), rng) : x_override;
    const std::vector<float> up = normal(size_t(m * k), rng);
    std::vector<float> norm_w = normal(size_t(k), rng);
    for (float& v : norm_w) v = 1.0f + 0.25f * v;
    const float eps = 1e-5f;
    auto dx = dev(x), dup = dev(up), dnorm = dev(norm_w);
    MatmulInput ic{x.data(),   swiglu ? up.data() : nullptr,       m,
                   accumulate, use_norm ? norm_w.data() : nullptr, eps};
    MatmulInput ig{dx->get(),  swiglu ? dup->get() : nullptr,     m,
                   accumulate, use_norm ? dnorm->get() : nullptr, eps};
    std::vector<std::vector<float>> y0 = g.y;
    if (use_norm && !cuda_impl::gemv_group_applies(ig, tg.data(), count)) {
      // Rows the skinny GEMM takes: the backend normalizes into scratch, then runs the group (told to
      // keep every row count on the GEMV, not the tensor-core GEMMs, for the formats that have them).
      auto gpu = make_cuda_backend(0);
      std::optional<cuda_impl::ScopedGemvMaxRows> rows;
      if (f == WeightFormat::fp8_block || f == WeightFormat::mxfp8 || f == WeightFormat::bf16)
        rows.emplace(f, 16);
      gpu->matmul_fused(ig, tg.data(), count);
      gpu->synchronize();
    } else if (!cuda_impl::gemv_group_applies(ig, tg.data(), count)) {
      FAIL() << "the group does not meet gemv_group_applies";
    } else if (tuning)
      cuda_impl::launch_gemv_group_tuned(ig, tg.data(), count, *tuning, nullptr);
    else
      cuda_impl::launch_gemv_group(ig, tg.data(), count, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    backend->matmul_fused(ic, tc.data(), count);
    // The effective input, as the CPU forms it, for the bound.
    std::vector<float> xe = x;
    if (swiglu) backend->silu_mul(x.data(), up.data(), xe.data(), m * k);
    if (use_norm) backend->rmsnorm(x.data(), norm_w.data(), m, k, eps, xe.data());
    for (int t = 0; t < count; ++t) {
      const HostW& w = g.w[size_t(t)];
      const std::vector<float> b = g.dy[size_t(t)]->download();
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < w.n; ++c) {
          const size_t o = size_t(r * w.n + c);
          double bound = g.bias[size_t(t)].empty() ? 0.0 : std::fabs(g.bias[size_t(t)][size_t(c)]);
          if (accumulate) bound += std::fabs(y0[size_t(t)][o]);
          for (int64_t i = 0; i < k; ++i)
            bound += std::fabs(double(w.deq[size_t(c * k + i)]) * xe[size_t(r * k + i)]);
          // A fused rmsnorm scales the product by 1/rms instead of every input: the two sums of
          // squares (k positive terms, different orders) each carry <= k u relative error, 1/sqrt
          // halves it, so 1/rms agrees within (k + 4) u relative, and the product p within that of |p|
          // (added as (k + 4) / 64 |p|: the bound is multiplied by 64 u below).
          if (use_norm) {
            double p = g.y[size_t(t)][o];
            if (accumulate) p -= y0[size_t(t)][o];
            if (!g.bias[size_t(t)].empty()) p -= g.bias[size_t(t)][size_t(c)];
            bound += double(k + 4) / 64 * std::fabs(p);
          }
          ASSERT_NEAR(b[o], g.y[size_t(t)][o], 64 * kU * bound)
              << "target " << t << " (n " << w.n << ") row " << r << " col " << c;
        }
    }
  }
};

struct Fmt {
  WeightFormat f;
  ScaleType st;
};
const Fmt kFormats[] = {{WeightFormat::f32, ScaleType::ue8m0},
                        {WeightFormat::bf16, ScaleType::ue8m0},
                        {WeightFormat::fp8_block, ScaleType::ue8m0},
                        {WeightFormat::fp8_block, ScaleType::f32},
                        {WeightFormat::mxfp8, ScaleType::ue8m0}};

TEST_F(GemvGroup, EveryFormatModeAndRowCountMatchesCpu) {
  struct G {
    std::vector<int64_t> ns;
    int64_t k;
  };
  // Ragged n (tiles and 128-row scale blocks cut), 1..4 targets; k = 1040 ends in a partial 128-column
  // scale block, k = 4096 is the decode width. k = 256, 512 and 768 are shorter than 16 scale blocks:
  // the FP8 mma GEMV splits its blocks into groups of 1, 2 and 1 warps with their own tiles.
  const G groups[] = {{{1000, 130, 4100}, 512},
                      {{300}, 1040},
                      {{64, 64, 200, 33}, 256},
                      {{257, 1024}, 4096},
                      {{520, 33}, 768}};
  int mode = 0;
  for (const Fmt& fm : kFormats)
    for (const G& g : groups)
      for (int64_t m : {1, 2, 5, 9, 16}) {
        if (g.k == 4096 && m > 2) continue;  // keep the CPU reference quick
        ++mode;
        check(fm.f, fm.st, g.ns, g.k, m, mode % 2 == 1, (mode / 2) % 2 == 1, nullptr, "default");
        if (HasFatalFailure()) return;
      }
}

// rmsnorm fused into the FP8 GEMV (gemv_fp8_mma.cu) for m <= 4 (m >= 3 at k >= 4096 and m >= 5 go
// to the skinny GEMM after an rmsnorm kernel: the backend's matmul_fused, checked here as well);
// k = 14336 is Llama-3-8B's down width (16-warp blocks for one and two rows); ragged n, several
// targets.
TEST_F(GemvGroup, FusedRmsnormMatchesCpu) {
  use_norm = true;
  struct G {
    std::vector<int64_t> ns;
    int64_t k;
  };
  // n = 20000 at k = 512: more tiles than the grid's warp groups (4 per block), which then take
  // different numbers of tiles (each group has its own barrier).
  const G groups[] = {
      {{1000, 130}, 512}, {{300, 40, 24}, 1536}, {{257}, 4096}, {{130}, 14336}, {{20000}, 512}};
  int mode = 0;
  for (ScaleType st : {ScaleType::ue8m0, ScaleType::f32})
    for (const G& g : groups)
      for (int64_t m : {1, 2, 4, 8}) {
        if (g.k == 14336 && m > 2) continue;  // keep the CPU reference quick
        ++mode;
        check(WeightFormat::fp8_block, st, g.ns, g.k, m, false, mode % 2 == 1, nullptr, "fused rmsnorm");
        if (HasFatalFailure()) return;
      }
}

// The A/B kernels of `mx8 bench gemv-cuda` (one token; fp8_block and bf16), every knob setting, and
// the shared-memory pipeline for every format.
TEST_F(GemvGroup, TunedVariantsMatchCpu) {
  struct V {
    int rows, unroll, threads, stages;
    bool hint;
  };
  const V variants[] = {{4, 2, 0, 0, false}, {8, 1, 0, 0, false}, {8, 1, 0, 0, true},  {8, 1, 32, 0, false},
                        {4, 1, 0, 5, false}, {4, 1, 0, 5, true},  {2, 2, 0, 5, false}, {8, 1, 0, 2, false},
                        {4, 1, 0, 3, false}, {4, 1, 32, 5, false}};
  int mode = 0;
  for (const Fmt& fm : kFormats)
    for (const V& v : variants) {
      const bool ab =
          fm.f == WeightFormat::bf16 || (fm.f == WeightFormat::fp8_block && fm.st == ScaleType::ue8m0);
      const bool everywhere = v.rows == 4 && (v.unroll == 2 || v.stages == 5) && !v.hint && v.threads == 0;
      if (!ab && !everywhere) continue;
      cuda_impl::GemvTuning t;
      t.rows = v.rows;
      t.unroll = v.unroll;
      t.threads = v.threads;
      t.stages = v.stages;
      t.l2_hint = v.hint;
      const std::string what = "R " + std::to_string(v.rows) + " U " + std::to_string(v.unroll) + " T " +
                               std::to_string(v.threads) + " S " + std::to_string(v.stages) +
                               (v.hint ? " L2::256B" : "");
      ++mode;
      // Two targets with ragged n; k = 2064 leaves the last round of each tile partly empty.
      check(fm.f, fm.st, {700, 136}, 2064, 1, mode % 2 == 1, (mode / 2) % 2 == 1, &t, what);
      if (HasFatalFailure()) return;
    }
}

// The tensor-core FP8 GEMV (gemv_fp8_mma.cu) splits x into f16 hi + lo parts under a power of two per
// 128 values: inputs whose 128-value blocks span 1e-30..1e25, and blocks where one value is 1e6 times
// the rest (the rest then sit far below the block's scale, down to f16 subnormals), must still meet
// the f32 bound. Rows 1..3 scale row 0's pattern differently so each row of a launch has its own scales.
TEST_F(GemvGroup, Fp8MmaKeepsF32PrecisionOverWideRanges) {
  const int64_t k = 1024, m = 4;
  std::vector<float> x = normal(size_t(m * k), rng);
  // The largest block scale keeps every product finite: |x| <= 1e25 * 5 (row factor) * 1e6 (outlier)
  // * ~6 (normal tail) = 3e32 times |w| <= 448 * 2^-3 = 56 is ~1.7e34, far below f32's 3.4e38 even
  // summed over k. (1e30 overflowed on some seeds: Inf on both sides, which ASSERT_NEAR rejects.)
  const float block_scale[8] = {1e-30f, 1e-6f, 1.0f, 3e4f, 7e4f, 1e12f, 1e25f, 1.0f};
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < k; ++i) {
      float& v = x[size_t(r * k + i)];
      v *= block_scale[(i / 128 + r) % 8] * float(r + 1);
      if (i % 128 == 5 && (i / 128) % 2 == 0) v *= 1e6f;  // one outlier per even block
      if (i % 97 == 3) v *= 1e-9f;                        // scattered tiny values
    }
  x_override = x;
  for (ScaleType st : {ScaleType::ue8m0, ScaleType::f32}) {
    check(WeightFormat::fp8_block, st, {384, 136}, k, m, false, false, nullptr, "wide range");
    if (HasFatalFailure()) return;
  }
}

// MXFP8 weights on the tensor-core GEMV (1..4 rows of x, k % 128 == 0): scales spanning 2^40 within
// every 128 of k, ragged n, several targets, with and without a fused rmsnorm and accumulation.
TEST_F(GemvGroup, Mxfp8OnTheTensorCoresMatchesCpu) {
  wide_mx_scales = true;
  struct G {
    std::vector<int64_t> ns;
    int64_t k;
  };
  // k = 14336 (Llama-3-8B's down width): two rows of x take the 16-warp blocks there.
  const G groups[] = {{{300, 40}, 512}, {{130}, 4096}, {{1000, 24, 17}, 1536}, {{130}, 14336}};
  int mode = 0;
  for (bool norm : {false, true})
    for (const G& g : groups)
      for (int64_t m : {1, 2, 3, 4}) {
        use_norm = norm;
        ++mode;
        // (Only the pointers' alignment is looked at.)
        const MatmulInput probe{reinterpret_cast<const float*>(uintptr_t(256)), nullptr, m, false};
        const MatmulTarget t{
            WeightView{WeightFormat::mxfp8, g.ns[0], g.k, probe.x, probe.x, ScaleType::ue8m0},
            reinterpret_cast<float*>(uintptr_t(256)), nullptr};
        ASSERT_GT(cuda_impl::gemv_fp8_mma_rows(probe, &t, 1), 0)
            << "the tensor-core GEMV must take these rows";
        check(WeightFormat::mxfp8, ScaleType::ue8m0, g.ns, g.k, m, !norm && mode % 3 == 0, mode % 2 == 1,
              nullptr, norm ? "mxfp8, fused rmsnorm" : "mxfp8");
        if (HasFatalFailure()) return;
      }
}

// A NaN scale (UE8M0 0xFF) makes its row NaN on the tensor-core path; others stay finite.
TEST_F(GemvGroup, Mxfp8NaNScalePropagates) {
  const int64_t n = 48, k = 256;
  HostW w = make_weight(WeightFormat::mxfp8, ScaleType::ue8m0, n, k, rng);
  w.scales[size_t(5 * (k / 32) + 3)] = 0xFF;  // row 5, k = 96 .. 127
  auto dd = dev(w.data), ds = dev(w.scales);
  for (int64_t m : {1, 2}) {
    auto dx = dev(normal(size_t(m * k), rng));
    DeviceBuffer<float> y(size_t(m * n));
    MatmulTarget t{WeightView{WeightFormat::mxfp8, n, k, dd->get(), ds->get(), ScaleType::ue8m0}, y.get(),
                   nullptr};
    MatmulInput in{dx->get(), nullptr, m, false};
    ASSERT_GT(cuda_impl::gemv_fp8_mma_rows(in, &t, 1), 0);
    cuda_impl::launch_gemv_group(in, &t, 1, nullptr);
    const auto a = y.download();
    for (int64_t r = 0; r < m; ++r) {
      EXPECT_TRUE(std::isnan(a[size_t(r * n + 5)])) << "m " << m;
      EXPECT_FALSE(std::isnan(a[size_t(r * n + 4)])) << "m " << m;
      EXPECT_FALSE(std::isnan(a[size_t(r * n + 6)])) << "m " << m;
    }
  }
}

TEST_F(GemvGroup, PropagatesNaNCodesAndNaNInputs) {
  const int64_t n = 48, k = 256;
  HostW w = make_weight(WeightFormat::fp8_block, ScaleType::ue8m0, n, k, rng);
  w.data[size_t(5 * k + 17)] = 0x7F;  // a NaN code in row 5, word 0 of its 16-code chunk
  w.data[size_t(7 * k + 31)] = 0xFF;  // and in row 7, word 3
  auto dd = dev(w.data), ds = dev(w.scales);
  for (int stages : {0, 5}) {
    std::vector<float> x = normal(size_t(2 * k), rng);
    x[size_t(k + 3)] = std::nanf("");  // row 1 of x: NaN everywhere
    auto dx = dev(x);
    DeviceBuffer<float> y(size_t(2 * n));
    MatmulTarget t{WeightView{WeightFormat::fp8_block, n, k, dd->get(), ds->get(), ScaleType::ue8m0}, y.get(),
                   nullptr};
    cuda_impl::GemvTuning tn;
    tn.stages = stages;
    MatmulInput in{dx->get(), nullptr, 1, false};
    cuda_impl::launch_gemv_group_tuned(in, &t, 1, tn, nullptr);  // one token: both pipelines
    MatmulInput in2{dx->get(), nullptr, 2, false};
    DeviceBuffer<float> y2(size_t(2 * n));
    MatmulTarget t2 = t;
    t2.y = y2.get();
    cuda_impl::launch_gemv_group(in2, &t2, 1, nullptr);
    const auto a = y.download(), b = y2.download();
    EXPECT_TRUE(std::isnan(a[5])) << "stages " << stages;
    EXPECT_TRUE(std::isnan(a[7])) << "stages " << stages;
    EXPECT_FALSE(std::isnan(a[4])) << "stages " << stages;
    for (int64_t r = 0; r < 2; ++r) EXPECT_TRUE(std::isnan(b[size_t(r * n + 5)]));
    for (int64_t c = 0; c < n; ++c) EXPECT_TRUE(std::isnan(b[size_t(n + c)])) << "col " << c;
  }
}

// Launches recorded into a CUDA graph and replayed give the same bits as direct launches (the
// launcher does no host reads, allocations or synchronization, and keeps no per-launch state).
TEST_F(GemvGroup, GraphCaptureReplaysTheSameResult) {
  const int64_t k = 1024;
  HostW w0 = make_weight(WeightFormat::mxfp8, ScaleType::ue8m0, 500, k, rng);
  HostW w1 = make_weight(WeightFormat::mxfp8, ScaleType::ue8m0, 70, k, rng);
  auto d0 = dev(w0.data), s0 = dev(w0.scales), d1 = dev(w1.data), s1 = dev(w1.scales);
  const int64_t m = 3;
  auto dx = dev(normal(size_t(m * k), rng)), dup = dev(normal(size_t(m * k), rng));
  DeviceBuffer<float> ya(size_t(m * 500)), yb(size_t(m * 70)), ga(size_t(m * 500)), gb(size_t(m * 70));
  MatmulInput in{dx->get(), dup->get(), m, false};
  MatmulTarget direct[2] = {
      {WeightView{WeightFormat::mxfp8, 500, k, d0->get(), s0->get(), ScaleType::ue8m0}, ya.get(), nullptr},
      {WeightView{WeightFormat::mxfp8, 70, k, d1->get(), s1->get(), ScaleType::ue8m0}, yb.get(), nullptr}};
  MatmulTarget graphed[2] = {direct[0], direct[1]};
  graphed[0].y = ga.get();
  graphed[1].y = gb.get();
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  cuda_impl::launch_gemv_group(in, graphed, 2, s);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ga.poison();
  gb.poison();
  // The poison is a legacy-stream memset, which a non-blocking stream does not wait for.
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  cuda_impl::launch_gemv_group(in, direct, 2, nullptr);
  const auto a = ya.download(), b = yb.download(), c = ga.download(), d = gb.download();
  EXPECT_EQ(std::memcmp(a.data(), c.data(), a.size() * 4), 0);
  EXPECT_EQ(std::memcmp(b.data(), d.data(), b.size() * 4), 0);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace mx8::backend
