// The CUDA backend against the CPU backend (the reference semantics), op by op, on fresh random
// inputs (the seed is printed on failure), ragged shapes and special values. Skips without a GPU.
//
// Tolerances, and why they are those numbers (u = 2^-24, the f32 unit roundoff):
// - Bit-exact: embedding (a decode of each element), add, the KV cache's bytes after kv_write
//   (the same codecs from include/mx8/format run on both sides), the E4M3/bf16 decodes in matmul.
// - matmul: both sides form the same f32 products; they sum them in different orders (CPU: 4 lanes
//   in k order per scale block; GPU: 32 lanes, 16-value chunks, then a shuffle tree). With random
//   signs the rounding error of either order stays near u * sum|w x| (the partial sums, not the
//   terms, are what get rounded), so |gpu - cpu| <= 64 u sum_k |w_k x_k| has a wide margin, while
//   one wrongly decoded weight, a wrong scale or a skipped chunk moves the result by at least
//   ~sum|w x| / k, which is >= 3.7e-4 sum|w x| here (k <= 2600): 100x above the tolerance.
// - rmsnorm and softmax: the sums of n positive terms are reordered: relative error of order
//   sqrt(n) u (<= 4e-6 for n <= 4200); the tolerance is 2e-5 relative. A wrong eps (tested with
//   eps = 0.25) or dim is a change of percent.
// - rope, silu_mul: CUDA's sincosf/expf and glibc's differ by at most 2 ulp; tolerance 1e-6
//   relative to the magnitudes involved (16 u).
// - attention: a convex combination of V rows; scores are dot products summed in other orders and
//   the softmax is online (rescaled partial sums): |gpu - cpu| <= 2e-5 max|V|. Using a wrong page,
//   position or head moves outputs by a sizeable fraction of max|V| (inputs are N(0, 1)).
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/backend_cpu.h"
#include "backend/cuda/backend_cuda.cuh"
#include "cuda/backend_pair_test.h"
#include "model/penalty_rows.h"
#include "model/selection_rows.h"
#include "mx8/backend/backend.h"
#include "mx8/backend/host_buffer.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"
#include "mx8/format/ue8m0.h"
#include "mx8/runtime/sampler.h"

namespace mx8::backend {
namespace {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24

using CudaVsCpu = test::BackendPair;

// The activation block that the backend quantizes x in for this matmul: 128 (fp8_block weights) or 32
// (mxfp8) where the tensor-core FP8 GEMMs take it (m > cuda_impl::gemv_max_rows on sm_90a, unless
// MX8_CUDA_WGMMA=0; see backend_cuda.cu), 0 where x stays f32.
int quantized_block(WeightFormat f, int64_t m, int64_t n, int64_t k) {
  if (!cuda_impl::wgmma_gemm_enabled() || m <= cuda_impl::gemv_max_rows(f) || n % 16 != 0 || k % 128 != 0)
    return 0;
  return f == WeightFormat::fp8_block ? 128 : f == WeightFormat::mxfp8 ? 32 : 0;
}

bool same_bits(float a, float b) {
  return format::f32_bits(a) == format::f32_bits(b) || (std::isnan(a) && std::isnan(b));
}

// ---- weights -----------------------------------------------------------------------------------

struct HostWeight {
  WeightFormat format;
  ScaleType scale_type = ScaleType::ue8m0;
  int64_t n, k;
  std::vector<uint8_t> data, scales;
  std::vector<float> deq;  // [n][k], decoded exactly (for sum |w x|)
};

// Random weights: f32/bf16 normal values; E4M3 codes uniform over the finite codes with scales
// around 2^-6 (UE8M0, or f32 non-powers-of-two for fp8_block with f32 scales).
HostWeight random_weight(WeightFormat f, ScaleType st, int64_t n, int64_t k, std::mt19937& rng) {
  HostWeight w{f, st, n, k, {}, {}, {}};
  w.deq.resize(size_t(n * k));
  std::normal_distribution<float> nd(0.0f, 0.05f);
  w.data.resize(weight_data_bytes(f, n, k));
  w.scales.resize(weight_scale_bytes(f, st, n, k));
  if (f == WeightFormat::f32) {
    for (size_t i = 0; i < w.deq.size(); ++i) w.deq[i] = nd(rng);
    std::memcpy(w.data.data(), w.deq.data(), w.data.size());
    return w;
  }
  if (f == WeightFormat::bf16) {
    uint16_t* d = reinterpret_cast<uint16_t*>(w.data.data());
    for (size_t i = 0; i < w.deq.size(); ++i) {
      d[i] = format::f32_to_bf16_rne(nd(rng));
      w.deq[i] = format::bf16_to_f32(d[i]);
    }
    return w;
  }
  std::uniform_int_distribution<int> code(0, 255), sc(127 - 9, 127 - 3);
  for (auto& c : w.data) {
    do c = uint8_t(code(rng));
    while ((c & 0x7F) == 0x7F);
  }
  std::uniform_real_distribution<float> fs(0.001f, 0.03f);
  const bool f32s = f == WeightFormat::fp8_block && st == ScaleType::f32;
  const size_t n_scales = f32s ? w.scales.size() / 4 : w.scales.size();
  std::vector<float> scale_values(n_scales);
  for (size_t i = 0; i < n_scales; ++i) {
    if (f32s) {
      scale_values[i] = fs(rng);
      std::memcpy(w.scales.data() + 4 * i, &scale_values[i], 4);
    } else {
      w.scales[i] = uint8_t(sc(rng));
      scale_values[i] = format::ue8m0_to_f32(w.scales[i]);
    }
  }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      size_t si = f == WeightFormat::mxfp8 ? size_t(r * ((k + 31) / 32) + c / 32)
                                           : size_t((r / 128) * ((k + 127) / 128) + c / 128);
      w.deq[size_t(r * k + c)] = format::e4m3_to_f32(w.data[size_t(r * k + c)]) * scale_values[si];
    }
  return w;
}

// x quantized as the backend's tensor-core path quantizes it (E4M3, one `ceil` scale per 1 x `block`
// along k), then decoded: the CPU reference of that path is the CPU matmul of these values.
std::vector<float> quantize_ceil(const std::vector<float>& x, int64_t m, int64_t k, int block) {
  std::vector<float> q(x.size());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t k0 = 0; k0 < k; k0 += block) {
      uint32_t amax = 0;
      for (int64_t i = k0; i < k0 + block; ++i)
        amax = format::amax_bits_accumulate(amax, x[size_t(r * k + i)]);
      const format::BlockScale bs = format::compute_block_scale(
          format::f32_from_bits(amax), format::ElementFormat::e4m3, {format::ScaleRule::ceil});
      for (int64_t i = k0; i < k0 + block; ++i) {
        const size_t o = size_t(r * k + i);
        q[o] = format::e4m3_to_f32(format::e4m3_from_f32(x[o] * bs.inv_scale, true)) * bs.scale;
      }
    }
  return q;
}

// ---- element-wise ops ----------------------------------------------------------------------------

TEST_F(CudaVsCpu, Info) {
  EXPECT_EQ(gpu->info().name, "cuda");
  EXPECT_FALSE(gpu->info().host_memory);
  EXPECT_TRUE(gpu->supports_weight(WeightFormat::fp8_block, ScaleType::f32));
  EXPECT_FALSE(gpu->supports_weight(WeightFormat::mxfp8, ScaleType::f32));
  EXPECT_TRUE(gpu->supports_kv(KvFormat::fp8));
}

TEST_F(CudaVsCpu, RmsnormMatchesCpu) {
  SCOPED_TRACE(trace());
  for (int64_t dim : {8, 64, 300, 4096 + 13}) {
    for (float eps : {1e-5f, 0.25f}) {
      const int64_t rows = 5;
      auto x = normal(size_t(rows * dim), 3.0f);
      auto w = normal(size_t(dim));
      Pair px = put(x), pw = put(w), py = zeros<float>(x.size());
      cpu->rmsnorm((float*)px.c, (float*)pw.c, rows, dim, eps, (float*)py.c);
      gpu->rmsnorm((float*)px.g, (float*)pw.g, rows, dim, eps, (float*)py.g);
      auto a = get_cpu<float>(py, x.size()), b = get_gpu<float>(py, x.size());
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_NEAR(b[i], a[i], 2e-5 * std::fabs(a[i]) + 1e-30) << "dim " << dim << " i " << i;
      // In place (y == x), as the model does for q/k norms.
      gpu->rmsnorm((float*)px.g, (float*)pw.g, rows, dim, eps, (float*)px.g);
      auto c = get_gpu<float>(px, x.size());
      for (size_t i = 0; i < a.size(); ++i) ASSERT_TRUE(same_bits(c[i], b[i])) << "in place differs at " << i;
    }
  }
}

TEST_F(CudaVsCpu, RopeMatchesCpu) {
  SCOPED_TRACE(trace());
  for (RopeStyle style : {RopeStyle::interleaved, RopeStyle::half}) {
    for (int hd : {8, 64, 128}) {
      const int64_t T = 7, H = 3;
      const int rot = hd == 64 ? 32 : hd;  // a partial rotation too
      std::vector<float> inv(size_t(rot / 2));
      for (int j = 0; j < rot / 2; ++j) inv[size_t(j)] = 1.0f / std::pow(500000.0f, 2.0f * j / float(rot));
      std::vector<int32_t> pos = {0, 1, 5, 77, 1000, 8191, 131071};
      auto x = normal(size_t(T * H * hd));
      Pair px = put(x), pp = put(pos), pi = put(inv);
      RopeArgs rc{style, hd, rot, (const float*)pi.c}, rg{style, hd, rot, (const float*)pi.g};
      cpu->rope((float*)px.c, (const int32_t*)pp.c, T, H, rc);
      gpu->rope((float*)px.g, (const int32_t*)pp.g, T, H, rg);
      auto a = get_cpu<float>(px, x.size()), b = get_gpu<float>(px, x.size());
      for (size_t i = 0; i < a.size(); ++i) {
        // Compare against the magnitude of the pair that produced the value.
        const size_t head = i / size_t(hd) * size_t(hd);
        double mag = 0;
        for (int d = 0; d < hd; ++d) mag = std::max(mag, double(std::fabs(x[head + size_t(d)])));
        ASSERT_NEAR(b[i], a[i], 1e-6 * 2 * mag) << "style " << int(style) << " hd " << hd << " i " << i;
      }
    }
  }
}

TEST_F(CudaVsCpu, ArgmaxFollowsTheSamplersRule) {
  // Exact: a maximum with ties to the lower index does not depend on the order of the reduction.
  SCOPED_TRACE(trace());
  for (const auto& c : mx8::test::selection_cases(seed)) {
    Pair px = put(c.x), po = zeros<int32_t>(size_t(c.rows()));
    gpu->argmax((const float*)px.g, c.rows(), c.cols, (int32_t*)po.g);
    const auto got = get_gpu<int32_t>(po, size_t(c.rows()));
    for (int64_t r = 0; r < c.rows(); ++r)
      EXPECT_EQ(got[size_t(r)], runtime::argmax({c.x.data() + r * c.cols, size_t(c.cols)}))
          << "row " << r << " of " << c.cols << " columns";
  }
}

TEST_F(CudaVsCpu, TopKEqualsTheCpus) {
  // Exact: the selection and the order are decided on exact values (the IEEE quotients x / t) and
  // indices; the CPU backend's top_k is held to a full sort in BackendOps.TopKInTheSamplersOrder.
  SCOPED_TRACE(trace());
  for (const auto& c : mx8::test::selection_cases(seed)) {
    for (int k : {1, 7, 40, Backend::kMaxTopK}) {
      std::vector<float> temps(size_t(c.rows()));
      for (size_t r = 0; r < temps.size(); ++r) temps[r] = std::vector<float>{0.37f, 1.0f, 1.7f, 3.0f}[r % 4];
      const size_t n = size_t(c.rows()) * size_t(k);
      Pair px = put(c.x), pt = put(temps), pv = zeros<float>(n), pi = zeros<int32_t>(n);
      cpu->top_k((const float*)px.c, c.rows(), c.cols, k, (const float*)pt.c, (float*)pv.c, (int32_t*)pi.c);
      gpu->top_k((const float*)px.g, c.rows(), c.cols, k, (const float*)pt.g, (float*)pv.g, (int32_t*)pi.g);
      const auto ci = get_cpu<int32_t>(pi, n), gi = get_gpu<int32_t>(pi, n);
      const auto cv = get_cpu<float>(pv, n), gv = get_gpu<float>(pv, n);
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(gi[i], ci[i]) << c.cols << " columns, k " << k << ", row " << i / size_t(k) << " rank "
                                << i % size_t(k);
        if (ci[i] >= 0) {
          ASSERT_TRUE(same_bits(gv[i], cv[i])) << c.cols << " columns, k " << k << ", " << i;
        }
      }
    }
  }
}

TEST_F(CudaVsCpu, SelectionsOfDifferentRowCountsInTurn) {
  // A step may select on many rows and then on few (the prompt positions' alternatives at temperature 1,
  // then one drawn row's candidates), and the next step on many again: the calls share scratch memory
  // whose per-row counters each call must find zero. The first version placed the parts' results after
  // the call's own counters, so a call of few rows overwrote a larger call's counters of its later rows.
  SCOPED_TRACE(trace());
  const int64_t cols = 128256;  // 16 parts per row for top_k, 32 for argmax
  std::mt19937 rng{uint32_t(seed)};
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> x(size_t(300 * cols));
  for (float& v : x) v = d(rng);
  Pair px = put(x), pt = put(std::vector<float>(300, 0.9f)), pv = zeros<float>(300 * 40),
       pi = zeros<int32_t>(300 * 40), pa = zeros<int32_t>(300);
  for (int64_t rows : {300, 1, 300, 70, 2, 300}) {
    for (int k : {5, 40}) {
      const size_t n = size_t(rows) * size_t(k);
      cpu->top_k((const float*)px.c, rows, cols, k, (const float*)pt.c, (float*)pv.c, (int32_t*)pi.c);
      gpu->top_k((const float*)px.g, rows, cols, k, (const float*)pt.g, (float*)pv.g, (int32_t*)pi.g);
      ASSERT_EQ(get_gpu<int32_t>(pi, n), get_cpu<int32_t>(pi, n)) << rows << " rows, k " << k;
    }
    cpu->argmax((const float*)px.c, rows, cols, (int32_t*)pa.c);
    gpu->argmax((const float*)px.g, rows, cols, (int32_t*)pa.g);
    ASSERT_EQ(get_gpu<int32_t>(pa, size_t(rows)), get_cpu<int32_t>(pa, size_t(rows))) << rows << " rows";
  }
}

TEST_F(CudaVsCpu, PenalizeEqualsTheCpus) {
  // Exact: each entry is one IEEE division or multiplication, one fused multiply-add and one
  // subtraction (penalized_logit), the same on both; the CPU backend is held to the sampler in
  // BackendOps.PenalizeIsTheSamplersFirstStep. Every value of the rows is compared, so an entry applied
  // twice, to the wrong row or not at all shows.
  SCOPED_TRACE(trace());
  for (const auto& c : mx8::test::selection_cases(seed)) {
    auto p = mx8::test::penalty_rows(c, seed + 1);
    const std::vector<int32_t> n{p.n()};
    Pair px = put(p.x), pp = put(p.params), pn = put(n), pe = put(p.entries),
         ps = zeros<float>(size_t(p.n()));
    cpu->penalize((float*)px.c, c.rows(), c.cols,
                  {(const float*)pp.c, (const int32_t*)pn.c, (const int32_t*)pe.c, (float*)ps.c});
    gpu->penalize((float*)px.g, c.rows(), c.cols,
                  {(const float*)pp.g, (const int32_t*)pn.g, (const int32_t*)pe.g, (float*)ps.g});
    const auto cs = get_cpu<float>(ps, size_t(p.n())), gs = get_gpu<float>(ps, size_t(p.n()));
    for (size_t i = 0; i < cs.size(); ++i)
      ASSERT_TRUE(same_bits(gs[i], cs[i])) << "saved logit of entry " << i;
    const auto a = get_cpu<float>(px, p.x.size()), b = get_gpu<float>(px, p.x.size());
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_TRUE(same_bits(a[i], b[i])) << c.cols << " columns, row " << i / size_t(c.cols) << ", token "
                                         << i % size_t(c.cols) << ": " << b[i] << " against " << a[i];
  }
}

TEST_F(CudaVsCpu, LogSumExpMatchesCpu) {
  // The maximum and the token's logit are exact; the sum of exp(x - max) is in double on both sides, in
  // index order on the CPU and in a tree on the GPU, whose exp is within 1 ulp. The sequential sum of
  // n positive terms is within n * 2^-53 of the exact one relatively (1.4e-11 at 128256 values), the tree
  // far closer, so the two logs differ by less than 3e-11: 1e-10 leaves room, and is still 2^-33 of a
  // float's precision (what the log-probabilities are rounded to). Rows of NaN only (-inf) and rows
  // whose largest value is infinite (NaN) must come out the same.
  SCOPED_TRACE(trace());
  for (const auto& c : mx8::test::selection_cases(seed)) {
    std::vector<int32_t> tokens(size_t(c.rows()));
    for (size_t r = 0; r < tokens.size(); ++r) tokens[r] = int32_t((r * 7919 + seed) % size_t(c.cols));
    tokens[0] = -1;               // outside: NaN
    tokens[1] = int32_t(c.cols);  // outside: NaN
    Pair px = put(c.x), pt = put(tokens), pl = zeros<double>(tokens.size()), pp = zeros<float>(tokens.size());
    cpu->log_sum_exp((const float*)px.c, c.rows(), c.cols, (const int32_t*)pt.c, (double*)pl.c, (float*)pp.c);
    gpu->log_sum_exp((const float*)px.g, c.rows(), c.cols, (const int32_t*)pt.g, (double*)pl.g, (float*)pp.g);
    const auto cl = get_cpu<double>(pl, tokens.size()), gl = get_gpu<double>(pl, tokens.size());
    const auto cp = get_cpu<float>(pp, tokens.size()), gp = get_gpu<float>(pp, tokens.size());
    for (size_t r = 0; r < tokens.size(); ++r) {
      if (std::isnan(cl[r]) || std::isinf(cl[r]))
        EXPECT_TRUE(std::isnan(cl[r]) ? std::isnan(gl[r]) : gl[r] == cl[r])
            << c.cols << " columns, row " << r;
      else
        EXPECT_NEAR(gl[r], cl[r], 1e-10) << c.cols << " columns, row " << r;
      EXPECT_TRUE(same_bits(gp[r], cp[r])) << c.cols << " columns, row " << r;
    }
  }
}

TEST_F(CudaVsCpu, GatherEqualsTheCpus) {
  // Exact: copies. Ids outside the row (negative, cols) give NaN on both.
  SCOPED_TRACE(trace());
  for (const auto& c : mx8::test::selection_cases(seed)) {
    for (int k : {1, 7, 64}) {
      std::vector<int32_t> ids(size_t(c.rows()) * size_t(k));
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 104729 + seed) % size_t(c.cols));
      ids[0] = -1;
      ids[ids.size() - 1] = int32_t(c.cols);
      Pair px = put(c.x), pi = put(ids), po = zeros<float>(ids.size());
      cpu->gather((const float*)px.c, c.rows(), c.cols, (const int32_t*)pi.c, k, (float*)po.c);
      gpu->gather((const float*)px.g, c.rows(), c.cols, (const int32_t*)pi.g, k, (float*)po.g);
      const auto a = get_cpu<float>(po, ids.size()), b = get_gpu<float>(po, ids.size());
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_TRUE(same_bits(a[i], b[i])) << c.cols << " columns, k " << k << ", " << i;
      EXPECT_TRUE(std::isnan(b[0]) && std::isnan(b.back()));
    }
  }
}

TEST_F(CudaVsCpu, AddSiluSoftmaxMatchCpu) {
  SCOPED_TRACE(trace());
  const int64_t n = 10007;
  auto y = normal(size_t(n)), x = normal(size_t(n)), g = normal(size_t(n), 4.0f), u = normal(size_t(n));
  g[0] = 100.0f;
  g[1] = -100.0f;
  g[2] = 0.0f;
  Pair py = put(y), px = put(x), pg = put(g), pu = put(u), po = zeros<float>(size_t(n));
  cpu->add((float*)py.c, (const float*)px.c, n);
  gpu->add((float*)py.g, (const float*)px.g, n);
  auto a = get_cpu<float>(py, size_t(n)), b = get_gpu<float>(py, size_t(n));
  for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(same_bits(a[size_t(i)], b[size_t(i)])) << "add " << i;

  cpu->silu_mul((const float*)pg.c, (const float*)pu.c, (float*)po.c, n);
  gpu->silu_mul((const float*)pg.g, (const float*)pu.g, (float*)po.g, n);
  a = get_cpu<float>(po, size_t(n));
  b = get_gpu<float>(po, size_t(n));
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(b[size_t(i)], a[size_t(i)], 1e-6 * std::fabs(g[size_t(i)] * u[size_t(i)]) + 1e-30)
        << "silu " << i;
  // In place (out == gate), as the model calls it.
  gpu->silu_mul((const float*)pg.g, (const float*)pu.g, (float*)pg.g, n);
  auto c = get_gpu<float>(pg, size_t(n));
  for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(same_bits(c[size_t(i)], b[size_t(i)])) << "silu in place " << i;

  // Softmax: against a double-precision reference (the GPU sums with a tree: its error stays near
  // 2 ulp of expf plus ~cols/blockDim sequential adds, far below 1e-5 relative), and against the CPU
  // backend, whose sequential f32 sum of `cols` positive terms drifts by up to ~cols * u / 2 relative
  // (1e-3 at 32000 columns; seen: 4e-5), hence 2 cols u + 2e-5 there.
  for (int64_t cols : {1, 7, 1000, 32000}) {
    const int64_t rows = 3;
    auto s = normal(size_t(rows * cols), 5.0f);
    Pair ps = put(s);
    cpu->softmax((float*)ps.c, rows, cols);
    gpu->softmax((float*)ps.g, rows, cols);
    a = get_cpu<float>(ps, s.size());
    b = get_gpu<float>(ps, s.size());
    for (int64_t r = 0; r < rows; ++r) {
      const float* v = s.data() + r * cols;
      const float mx = *std::max_element(v, v + cols);
      double sum = 0;
      for (int64_t j = 0; j < cols; ++j) sum += std::exp(double(v[j] - mx));
      for (int64_t j = 0; j < cols; ++j) {
        const size_t i = size_t(r * cols + j);
        const double ref = std::exp(double(v[j] - mx)) / sum;
        ASSERT_NEAR(b[i], ref, 1e-5 * ref + 1e-37) << "softmax vs double, cols " << cols << " i " << i;
        ASSERT_NEAR(b[i], a[i], (2e-5 + 2.0 * double(cols) * kU) * a[i] + 1e-37)
            << "softmax vs cpu, cols " << cols;
      }
    }
  }
}

TEST_F(CudaVsCpu, EmbeddingEveryFormatIsExact) {
  SCOPED_TRACE(trace());
  struct Case {
    WeightFormat f;
    ScaleType st;
  };
  for (Case cs :
       {Case{WeightFormat::f32, ScaleType::ue8m0}, Case{WeightFormat::bf16, ScaleType::ue8m0},
        Case{WeightFormat::fp8_block, ScaleType::ue8m0}, Case{WeightFormat::fp8_block, ScaleType::f32},
        Case{WeightFormat::mxfp8, ScaleType::ue8m0}}) {
    for (int64_t k : {64, 200, 4096}) {
      const int64_t n = 300;
      HostWeight hw = random_weight(cs.f, cs.st, n, k, rng);
      Pair pd = put(hw.data), ps = put(hw.scales.empty() ? std::vector<uint8_t>(16) : hw.scales);
      std::vector<int32_t> ids = {0, 299, 128, 127, 5, 5, 256};
      Pair pi = put(ids), po = zeros<float>(ids.size() * size_t(k));
      WeightView wc{cs.f, n, k, pd.c, ps.c, cs.st}, wg{cs.f, n, k, pd.g, ps.g, cs.st};
      cpu->embedding(wc, (const int32_t*)pi.c, int64_t(ids.size()), (float*)po.c);
      gpu->embedding(wg, (const int32_t*)pi.g, int64_t(ids.size()), (float*)po.g);
      auto a = get_cpu<float>(po, ids.size() * size_t(k)), b = get_gpu<float>(po, ids.size() * size_t(k));
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_TRUE(same_bits(a[i], b[i])) << weight_format_name(cs.f) << " k " << k << " i " << i;
    }
  }
}

TEST_F(CudaVsCpu, BadIndicesBecomeErrorsNamingTheOp) {
  std::vector<float> table(16 * 8, 1.0f);
  Pair pt = put(table);
  std::vector<int32_t> ids = {3, 16};
  Pair pi = put(ids), po = zeros<float>(16);
  WeightView w{WeightFormat::f32, 16, 8, pt.g, nullptr, ScaleType::ue8m0};
  gpu->embedding(w, (const int32_t*)pi.g, 2, (float*)po.g);
  try {
    gpu->synchronize();
    FAIL() << "an out-of-range id was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("embedding"), std::string::npos) << e.what();
  }
  gpu->synchronize();  // reported once, then cleared

  KvCacheDesc d{KvFormat::bf16, 1, 2, 8, 4, 3};
  auto kv = gpu->create_kv_cache(d);
  std::vector<int32_t> slots = {12};  // 3 pages x 4 slots: 12 is one past the end
  std::vector<float> k(16, 1.0f);
  Pair ps = put(slots), pk = put(k);
  gpu->kv_write(*kv, 0, (const float*)pk.g, (const float*)pk.g, (const int32_t*)ps.g, 1);
  EXPECT_THROW(gpu->synchronize(), Error);
  EXPECT_THROW(gpu->kv_write(*kv, 1, (const float*)pk.g, (const float*)pk.g, (const int32_t*)ps.g, 1), Error);
}

// ---- matmul --------------------------------------------------------------------------------------

// alloc_host gives page-locked memory (what makes the logits download fast), and download() fills
// it: the copy is queued behind the kernels, then the stream is synchronized.
TEST_F(CudaVsCpu, DownloadIntoPageLockedHostBuffer) {
  HostBuffer<float> buf(*gpu);
  float* h = buf.reserve(4096);
  cudaPointerAttributes attr{};
  ASSERT_EQ(cudaPointerGetAttributes(&attr, h), cudaSuccess);
  EXPECT_EQ(attr.type, cudaMemoryTypeHost);  // pageable memory reads as cudaMemoryTypeUnregistered
  const auto x = normal(4096);
  auto* d = static_cast<float*>(gpu->alloc(4096 * sizeof(float)));
  gpu->upload(d, x.data(), 4096 * sizeof(float));
  gpu->add(d, d, 4096);  // a kernel before the copy: the copy must see its result
  gpu->download(h, d, 4096 * sizeof(float));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(h[i], 2.0f * x[i]) << i;
  gpu->free(d);
}

TEST_F(CudaVsCpu, MatmulEveryFormatMatchesCpu) {
  SCOPED_TRACE(trace());
  struct Case {
    WeightFormat f;
    ScaleType st;
  };
  struct Shape {
    int64_t n, k;
  };
  // Aligned (vector path) and ragged shapes: k = 200 and 4100 leave a tail after the 16-byte chunks;
  // k = 37 and 1037 are not 16-byte aligned rows (scalar path); n = 130 splits a 128-row scale block.
  // (64, 2560) and (144, 384) take the tensor-core FP8 GEMMs for FP8 weights and m > gemv_max_rows (4).
  // n = 4100 and 8200 take the GEMV's 4- and 8-rows-per-warp kernels for one token (n >= 4096, >= 8192),
  // with a last warp whose rows run past n.
  const Shape shapes[] = {{130, 256}, {64, 2560},  {144, 384},  {33, 200},  {17, 37},
                          {40, 1037}, {260, 4100}, {4100, 256}, {8200, 384}};
  for (Case cs :
       {Case{WeightFormat::f32, ScaleType::ue8m0}, Case{WeightFormat::bf16, ScaleType::ue8m0},
        Case{WeightFormat::fp8_block, ScaleType::ue8m0}, Case{WeightFormat::fp8_block, ScaleType::f32},
        Case{WeightFormat::mxfp8, ScaleType::ue8m0}}) {
    for (Shape sh : shapes) {
      HostWeight hw = random_weight(cs.f, cs.st, sh.n, sh.k, rng);
      Pair pd = put(hw.data), ps = put(hw.scales.empty() ? std::vector<uint8_t>(16) : hw.scales);
      WeightView wc{cs.f, sh.n, sh.k, pd.c, ps.c, cs.st}, wg{cs.f, sh.n, sh.k, pd.g, ps.g, cs.st};
      auto bias = normal(size_t(sh.n));
      Pair pb = put(bias);
      for (int64_t m : {1, 2, 3, 5, 8, 9, 16, 17, 70}) {
        auto x = normal(size_t(m * sh.k));
        // The tensor-core path quantizes activations: its reference is the CPU product of the quantized
        // x, and its tolerance is the FP8 GEMM's (tests/cuda/gemm_test.cpp, which says why): 2^-9 sum
        // |w x| plus 2^-8 of the largest |w x| of every 32-wide k group, from the tensor cores'
        // limited-width accumulation inside each wgmma k32 step. (This test had only the first term,
        // and the H200 run with MX8_CUDA_WGMMA=1 missed it by up to 2x: 6.1 vs 5.6, 12.7 vs 6.5.)
        // MXFP8 (1x32 blocks, promotion every 32) has the same per-k32 accumulation and so the same bound.
        const int qb = quantized_block(cs.f, m, sh.n, sh.k);
        const bool quantized = qb > 0;
        const std::vector<float> xr = quantized ? quantize_ceil(x, m, sh.k, qb) : x;
        Pair px = put(x), pxr = put(xr), py = zeros<float>(size_t(m * sh.n));
        const bool with_bias = m % 2 == 1;
        cpu->matmul(wc, (const float*)pxr.c, m, (float*)py.c, with_bias ? (const float*)pb.c : nullptr);
        gpu->matmul(wg, (const float*)px.g, m, (float*)py.g, with_bias ? (const float*)pb.g : nullptr);
        auto a = get_cpu<float>(py, size_t(m * sh.n)), b = get_gpu<float>(py, size_t(m * sh.n));
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < sh.n; ++c) {
            double abs_sum = with_bias ? std::fabs(bias[size_t(c)]) : 0.0, group_max_sum = 0.0,
                   group_max = 0.0;
            for (int64_t i = 0; i < sh.k; ++i) {
              const double p = std::fabs(double(hw.deq[size_t(c * sh.k + i)]) * xr[size_t(r * sh.k + i)]);
              abs_sum += p;
              group_max = std::max(group_max, p);
              if (i % 32 == 31 || i + 1 == sh.k) group_max_sum += std::exchange(group_max, 0.0);
            }
            const size_t o = size_t(r * sh.n + c);
            ASSERT_NEAR(b[o], a[o], quantized ? abs_sum / 512 + group_max_sum / 256 : 64 * kU * abs_sum)
                << weight_format_name(cs.f) << (cs.st == ScaleType::f32 ? " f32 scales" : "") << " n " << sh.n
                << " k " << sh.k << " m " << m << " row " << r << " col " << c
                << (quantized ? " (wgmma)" : "");
          }
      }
    }
  }
}

TEST_F(CudaVsCpu, MatmulPropagatesNaN) {
  const int64_t n = 48, k = 256;
  HostWeight hw = random_weight(WeightFormat::fp8_block, ScaleType::ue8m0, n, k, rng);
  hw.data[size_t(5 * k + 17)] = 0x7F;  // a NaN code in row 5
  Pair pd = put(hw.data), ps = put(hw.scales);
  WeightView wg{WeightFormat::fp8_block, n, k, pd.g, ps.g, ScaleType::ue8m0};
  for (int64_t m : {2, 5, 20}) {
    auto x = normal(size_t(m * k));
    x[3] = std::numeric_limits<float>::infinity();  // row 0 of x: +-Inf * w, and Inf - Inf = NaN somewhere
    x[size_t(k + 3)] = std::nanf("");               // row 1 of x: NaN everywhere
    Pair px = put(x), py = zeros<float>(size_t(m * n));
    gpu->matmul(wg, (const float*)px.g, m, (float*)py.g);
    auto b = get_gpu<float>(py, size_t(m * n));
    for (int64_t r = 0; r < m; ++r)
      EXPECT_TRUE(std::isnan(b[size_t(r * n + 5)])) << "m " << m << " row " << r;
    for (int64_t c = 0; c < n; ++c) EXPECT_TRUE(std::isnan(b[size_t(n + c)])) << "m " << m << " col " << c;
  }
}

// Prompt-step and batched-decode matmul with bf16 weights (cuBLASLt on x split into three bf16 parts): Inf,
// NaN and values near the f32 maximum in x reach y as in the CPU's f32 product (a row with Inf gives +-Inf or
// NaN, never a finite value; NaN stays NaN), and the finite rows keep MatmulEveryFormatMatchesCpu's
// 64 u tolerance. A split that rounded the largest values up would overflow them to Inf, and one that
// subtracted Inf from itself would turn Inf rows into NaN.
TEST_F(CudaVsCpu, Bf16PromptMatmulKeepsSpecialValues) {
  SCOPED_TRACE(trace());
  const int64_t n = 64, k = 256;
  // 20 rows: three GEMMs, one per plane; 6 rows (above the 4 set here): one GEMM of the stacked planes.
  const cuda_impl::ScopedGemvMaxRows rows(WeightFormat::bf16, 4);
  for (const int64_t m : {int64_t(20), int64_t(6)}) {
    SCOPED_TRACE("m " + std::to_string(m));
    HostWeight hw = random_weight(WeightFormat::bf16, ScaleType::ue8m0, n, k, rng);
    Pair pd = put(hw.data), ps = put(std::vector<uint8_t>(16));
    WeightView wc{WeightFormat::bf16, n, k, pd.c, ps.c, ScaleType::ue8m0},
        wg{WeightFormat::bf16, n, k, pd.g, ps.g, ScaleType::ue8m0};
    auto x = normal(size_t(m * k));
    x[0] = INFINITY;
    x[size_t(k + 3)] = std::nanf("");
    x[size_t(2 * k + 5)] = -INFINITY;
    x[size_t(3 * k + 7)] = 3.4e38f;  // rounds to bf16 Inf, truncates to a finite bf16
    x[size_t(4 * k + 9)] = 1e-40f;   // subnormal
    Pair px = put(x), py = zeros<float>(size_t(m * n));
    cpu->matmul(wc, (const float*)px.c, m, (float*)py.c, nullptr);
    gpu->matmul(wg, (const float*)px.g, m, (float*)py.g, nullptr);
    auto a = get_cpu<float>(py, size_t(m * n)), b = get_gpu<float>(py, size_t(m * n));
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) {
        const size_t o = size_t(r * n + c);
        if (!std::isfinite(a[o])) {
          EXPECT_TRUE(std::isnan(a[o]) ? std::isnan(b[o]) : a[o] == b[o])
              << "row " << r << " col " << c << ": cpu " << a[o] << " gpu " << b[o];
          continue;
        }
        double abs_sum = 0.0;
        for (int64_t i = 0; i < k; ++i)
          abs_sum += std::fabs(double(hw.deq[size_t(c * k + i)]) * x[size_t(r * k + i)]);
        ASSERT_NEAR(b[o], a[o], 64 * kU * abs_sum) << "row " << r << " col " << c;
      }
  }
}

// matmul_fused: the grouped GEMV (m <= gemv_max_rows, same format, <= kMaxGemvTargets targets), the FP8
// GEMMs' group (m = 5 and 17 with FP8 weights) and the composed fallback (five targets, mixed formats,
// m = 17) against the CPU backend's composition of the plain
// ops. Tolerance 96 u (sum |w in| + |bias| + |y0|), in = the matmul's input row (x, or silu(x) * up):
// 64 u for the summation order as in MatmulEveryFormatMatchesCpu, 16 u for silu (CUDA's expf against
// glibc's, <= 2 ulp, as in AddSiluSoftmaxMatchCpu, passed through the sum), and the bias and
// accumulation adds, each rounded on both sides (2 u of their magnitudes each), with margin. A
// wrongly selected input (x instead of silu(x) * up), a lost accumulation or bias, or a target's
// output written to another's y moves results by a sizeable fraction of sum |w in|.
TEST_F(CudaVsCpu, MatmulFusedMatchesCpu) {
  SCOPED_TRACE(trace());
  const int64_t k = 256;
  struct Group {
    std::vector<WeightFormat> formats;  // one target per entry
    std::vector<int64_t> ns;
  };
  const Group groups[] = {
      {{WeightFormat::fp8_block, WeightFormat::fp8_block, WeightFormat::fp8_block}, {130, 40, 40}},  // q/k/v
      {{WeightFormat::bf16, WeightFormat::bf16}, {300, 300}},     // gate/up
      {{WeightFormat::mxfp8}, {64}},                              // o / down
      {{WeightFormat::fp8_block, WeightFormat::bf16}, {48, 48}},  // mixed formats: composed
      {std::vector<WeightFormat>(5, WeightFormat::fp8_block), {16, 32, 48, 64, 80}},  // > 4 targets: composed
  };
  for (const Group& g : groups) {
    const int count = int(g.formats.size());
    std::vector<HostWeight> hw;
    std::vector<std::vector<float>> bias;
    std::vector<WeightView> wc, wg;
    std::vector<Pair> pb;
    for (int i = 0; i < count; ++i) {
      hw.push_back(random_weight(g.formats[size_t(i)], ScaleType::ue8m0, g.ns[size_t(i)], k, rng));
      Pair pd = put(hw.back().data),
           ps = put(hw.back().scales.empty() ? std::vector<uint8_t>(16) : hw.back().scales);
      wc.push_back({g.formats[size_t(i)], g.ns[size_t(i)], k, pd.c, ps.c, ScaleType::ue8m0});
      wg.push_back({g.formats[size_t(i)], g.ns[size_t(i)], k, pd.g, ps.g, ScaleType::ue8m0});
      bias.push_back(normal(size_t(g.ns[size_t(i)])));
      pb.push_back(put(bias.back()));
    }
    for (int64_t m : {1, 3, 5, 17})
      for (bool swiglu : {false, true})
        for (bool accumulate : {false, true})
          for (bool with_bias : {false, true}) {
            const auto x = normal(size_t(m * k)), up = normal(size_t(m * k));
            Pair px = put(x), pu = put(up);
            std::vector<std::vector<float>> y0;
            std::vector<Pair> py;
            std::vector<MatmulTarget> tc(static_cast<size_t>(count)), tg(static_cast<size_t>(count));
            for (int i = 0; i < count; ++i) {
              y0.push_back(normal(size_t(m * g.ns[size_t(i)])));
              py.push_back(put(y0.back()));
              tc[size_t(i)] = {wc[size_t(i)], (float*)py.back().c,
                               with_bias ? (const float*)pb[size_t(i)].c : nullptr};
              tg[size_t(i)] = {wg[size_t(i)], (float*)py.back().g,
                               with_bias ? (const float*)pb[size_t(i)].g : nullptr};
            }
            // An FP8 target with m > gemv_max_rows takes the FP8 GEMM (unless MX8_CUDA_WGMMA=0),
            // which quantizes its input: its reference is the CPU product of the quantized x and its
            // tolerance the GEMM's (MatmulEveryFormatMatchesCpu says why). Not with SwiGLU: the GPU forms
            // silu(x) * up with CUDA's expf (within 2 ulp of the CPU's), which can move an E4M3 rounding
            // by a whole step; the GEMM on a given input is covered by the cases without it.
            auto quantized = [&](int i) {
              return quantized_block(g.formats[size_t(i)], m, g.ns[size_t(i)], k) > 0;
            };
            // Each target's x as its path quantizes it (the formats of a group may differ).
            std::vector<std::vector<float>> xqs;
            for (int i = 0; i < count; ++i) {
              const int qb = quantized_block(g.formats[size_t(i)], m, g.ns[size_t(i)], k);
              xqs.push_back(qb > 0 ? quantize_ceil(x, m, k, qb) : x);
            }
            std::vector<Pair> pyq;  // the CPU reference on target i's quantized x, for the quantized targets
            std::vector<MatmulTarget> tq = tc;
            for (int i = 0; i < count; ++i) {
              pyq.push_back(put(y0[size_t(i)]));
              tq[size_t(i)].y = (float*)pyq.back().c;
              Pair pxq = put(xqs[size_t(i)]);
              cpu->matmul_fused({(const float*)pxq.c, nullptr, m, accumulate}, &tq[size_t(i)], 1);
            }
            cpu->matmul_fused({(const float*)px.c, swiglu ? (const float*)pu.c : nullptr, m, accumulate},
                              tc.data(), count);
            gpu->matmul_fused({(const float*)px.g, swiglu ? (const float*)pu.g : nullptr, m, accumulate},
                              tg.data(), count);
            std::vector<double> in(size_t(m * k));
            for (size_t i = 0; i < in.size(); ++i)
              in[i] = swiglu ? double(x[i]) / (1.0 + std::exp(-double(x[i]))) * up[i] : double(x[i]);
            for (int i = 0; i < count; ++i) {
              const int64_t n = g.ns[size_t(i)];
              const bool q = quantized(i);
              if (q && swiglu) continue;
              auto a = get_cpu<float>(q ? pyq[size_t(i)] : py[size_t(i)], size_t(m * n)),
                   b = get_gpu<float>(py[size_t(i)], size_t(m * n));
              for (int64_t r = 0; r < m; ++r)
                for (int64_t c = 0; c < n; ++c) {
                  const double adds = (with_bias ? std::fabs(bias[size_t(i)][size_t(c)]) : 0.0) +
                                      (accumulate ? std::fabs(y0[size_t(i)][size_t(r * n + c)]) : 0.0);
                  double mag = adds, abs_sum = 0.0, group_max_sum = 0.0, group_max = 0.0;
                  for (int64_t j = 0; j < k; ++j) {
                    const double w = hw[size_t(i)].deq[size_t(c * k + j)];
                    mag += std::fabs(w * in[size_t(r * k + j)]);
                    const double pq = std::fabs(w * xqs[size_t(i)][size_t(r * k + j)]);
                    abs_sum += pq;
                    group_max = std::max(group_max, pq);
                    if (j % 32 == 31) group_max_sum += std::exchange(group_max, 0.0);
                  }
                  const size_t o = size_t(r * n + c);
                  ASSERT_NEAR(b[o], a[o],
                              q ? abs_sum / 512 + group_max_sum / 256 + 96 * kU * adds : 96 * kU * mag)
                      << "target " << i << " of " << count << " (" << weight_format_name(g.formats[size_t(i)])
                      << ", n " << n << ") m " << m << " swiglu " << swiglu << " accumulate " << accumulate
                      << " bias " << with_bias << " row " << r << " col " << c << (q ? " (wgmma)" : "");
                }
            }
          }
  }
}

// Attention over layer 0 of a cache for nq query tokens, scale 1 / sqrt(hd), no window.
AttentionArgs attention_args(int nq, int n_heads, int n_kv, int hd, int max_pages) {
  AttentionArgs a;
  a.n_tokens = nq;
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv;
  a.head_dim = hd;
  a.scale = 1.0f / std::sqrt(float(hd));
  a.layer = 0;
  a.max_pages_per_seq = max_pages;
  return a;
}

// Block tables (max_pages per sequence) of sequences with lengths `lens` over pages in shuffled order,
// and the cache slot of every position, sequence by sequence.
struct PagedSeqs {
  std::vector<int32_t> tables, slots;
};
PagedSeqs shuffled_pages(const std::vector<int>& lens, int max_pages, int n_pages, int ps,
                         std::mt19937& rng) {
  std::vector<int32_t> perm(static_cast<size_t>(n_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  PagedSeqs r;
  r.tables.assign(lens.size() * size_t(max_pages), 0);
  for (size_t s = 0, next = 0; s < lens.size(); ++s) {
    for (int p = 0; p < (lens[s] + ps - 1) / ps; ++p)
      r.tables[s * size_t(max_pages) + size_t(p)] = perm[next++];
    for (int p = 0; p < lens[s]; ++p)
      r.slots.push_back(r.tables[s * size_t(max_pages) + size_t(p / ps)] * ps + p % ps);
  }
  return r;
}

// Split attention (opt-in: positions spread over blocks, partial softmaxes merged by a second
// kernel) against the CPU backend, for block tables wider than 1024 positions: lengths 1 (one split
// holds everything), 700 (some splits empty), 3000 (12 splits) and a 2-token causal chunk; GQA groups
// of 4, 2 and 1 with 1, 2 or 4 query heads per block (the default, 2, and the forced others), with
// sliding windows; then Llama-3-8B's shape as a decode step runs it (8 kv heads of 4 query heads, one
// token over 4183 of 4256 positions: 17 splits, the last one partly empty, the positions past the query's
// NaN). Every partial kernel: the tensor-core ones (attention_split_mma.cu: q and the probabilities
// enter as three 16-bit parts, ~24 bits; attention_split_fp8.cu for fp8 caches: two f16 parts, ~22
// bits, an error an order of magnitude below the bound) and the SIMT one. Same tolerance as
// KvWriteBytesEqualCpuAndAttentionMatches (2e-5 max|V|): the merge adds one level of rescaled partial
// sums, which moves results by a few u of max|V|; a wrong split range (a position missed or counted
// twice) or a wrong merge moves outputs by ~1/len of max|V| or more, which at 3000 positions is
// ~3e-4 > 1.2e-4; the 700-position sequence has ~1e-3 per position.
TEST_F(CudaVsCpu, SplitAttentionMatchesCpu) {
  SCOPED_TRACE(trace());
  struct SplitSwitch {
    bool was = cuda_impl::split_attention_enabled(), was_mma = cuda_impl::split_attention_mma_enabled();
    bool was_t = cuda_impl::split_fp8_transposed_enabled();
    SplitSwitch() { cuda_impl::set_split_attention_enabled(true); }
    ~SplitSwitch() {
      cuda_impl::set_split_attention_enabled(was);
      cuda_impl::set_split_attention_mma_enabled(was_mma);
      cuda_impl::set_split_fp8_transposed_enabled(was_t);
      cuda_impl::set_split_attention_heads_per_block(0);
    }
  } on;
  // Sequences of seq_len positions (pages shuffled) in block tables of `cap` positions, queries (seq,
  // kv_len), each window in turn.
  // Positions from poison_from on hold NaN in K and V: no query reaches them, but they share pages
  // (and the tensor-core kernel's 16-position tiles) with positions that are read.
  auto check = [&](KvFormat f, int n_kv, int group, int cap, const std::vector<int>& seq_len,
                   const std::vector<int32_t>& seq, const std::vector<int32_t>& kv_len,
                   std::initializer_list<int> windows, int poison_from = 1 << 30) {
    const int hd = 128, n_heads = n_kv * group, ps = 16;
    const int max_pages = (cap + ps - 1) / ps;
    const int n_pages = int(seq_len.size()) * max_pages;
    KvCacheDesc d{f, 1, n_kv, hd, ps, n_pages};
    auto kv_c = cpu->create_kv_cache(d);
    auto kv_g = gpu->create_kv_cache(d);
    const auto [tables, slots] = shuffled_pages(seq_len, max_pages, n_pages, ps, rng);
    const int64_t T = int64_t(slots.size());
    auto k = normal(size_t(T) * size_t(n_kv * hd)), v = normal(size_t(T) * size_t(n_kv * hd));
    for (size_t sq = 0, row = 0; sq < seq_len.size(); ++sq)
      for (int pos = 0; pos < seq_len[sq]; ++pos, ++row)
        if (pos >= poison_from)
          for (size_t i = 0; i < size_t(n_kv * hd); ++i)
            k[row * size_t(n_kv * hd) + i] = v[row * size_t(n_kv * hd) + i] = NAN;
    Pair pk = put(k), pv = put(v), psl = put(slots);
    cpu->kv_write(*kv_c, 0, (const float*)pk.c, (const float*)pv.c, (const int32_t*)psl.c, T);
    gpu->kv_write(*kv_g, 0, (const float*)pk.g, (const float*)pv.g, (const int32_t*)psl.g, T);
    const int nq = int(seq.size());
    auto q = normal(size_t(nq) * size_t(n_heads * hd));
    Pair pq = put(q), pseq = put(seq), plen = put(kv_len), pbt = put(tables), pout = zeros<float>(q.size());
    AttentionArgs a = attention_args(nq, n_heads, n_kv, hd, max_pages);
    for (int window : windows) {
      SCOPED_TRACE("window " + std::to_string(window));
      a.window = window;
      const auto [ac, ag] = on_both(a, pq, pout, pseq, plen, pbt);
      ASSERT_GT(cuda_impl::attention_scratch_floats(dynamic_cast<cuda_impl::CudaKvCache&>(*kv_g), ag), 0u)
          << "split attention does not apply";
      cpu->attention(*kv_c, ac);
      gpu->attention(*kv_g, ag);
      auto r_c = get_cpu<float>(pout, q.size()), r_g = get_gpu<float>(pout, q.size());
      for (size_t i = 0; i < r_c.size(); ++i) {
        ASSERT_FALSE(std::isnan(r_g[i])) << "attention output " << i;
        ASSERT_NEAR(r_g[i], r_c[i], 2e-5 * 6) << "attention output " << i;  // max |v| < 6, as above
      }
    }
  };
  // The kernels: tensor cores (for fp8 the transposed products, then attention_split_mma.cu's), SIMT.
  for (int kernel : {0, 1, 2}) {
    const bool mma = kernel < 2, transposed = kernel == 0;
    cuda_impl::set_split_attention_mma_enabled(mma);
    cuda_impl::set_split_fp8_transposed_enabled(transposed);
    const std::string name = !mma         ? "SIMT "
                             : transposed ? "tensor cores "
                                          : "tensor cores, fp8 untransposed ";
    for (KvFormat f : {KvFormat::bf16, KvFormat::fp8, KvFormat::f32})
      for (int group : {4, 2, 1})
        for (int gb : {0, 1, 4}) {
          // The tensor-core kernels take every head of a group (f32 caches take the SIMT one); kernel 1
          // differs from kernel 0 for fp8 only.
          if (gb > group || (mma && gb != 0) || (kernel == 1 && f != KvFormat::fp8)) continue;
          cuda_impl::set_split_attention_heads_per_block(gb);
          SCOPED_TRACE(name + kv_format_name(f) + " group " + std::to_string(group) + " heads/block " +
                       std::to_string(gb));
          // Sliding windows too: 100 leaves whole splits without positions, 1000 cuts one in the middle.
          check(f, 2, group, 3000, {1, 700, 3000}, {0, 1, 2, 2, 2}, {1, 700, 2999, 3000, 17}, {0, 100, 1000});
          if (HasFatalFailure()) return;
        }
    cuda_impl::set_split_attention_heads_per_block(0);
    for (KvFormat f : {KvFormat::bf16, KvFormat::fp8}) {
      if (kernel == 1 && f != KvFormat::fp8) continue;
      SCOPED_TRACE(name + kv_format_name(f) + " Llama-3-8B shape");
      // Positions 4190.. poisoned: the query's last tile (4176..4191) and page hold them.
      check(f, 8, 4, 4256, {4200}, {0}, {4183}, {0, 1000}, 4190);
      if (HasFatalFailure()) return;
    }
  }
}

// A block table that names a page past the cache is reported, not read: every attention kernel flags it
// (the page is replaced by page 0 and its keys masked), and synchronize() throws the message that names
// it, once. Kernels: decode over a short table (the cluster kernel), split attention over a long one
// (the tensor-core kernels for bf16 and both fp8 ones, the SIMT one), and a 20-token prompt step.
TEST_F(CudaVsCpu, AttentionReportsABlockTablePageOutsideTheCache) {
  SCOPED_TRACE(trace());
  struct Restore {
    bool mma = cuda_impl::split_attention_mma_enabled(), t = cuda_impl::split_fp8_transposed_enabled();
    ~Restore() {
      cuda_impl::set_split_attention_mma_enabled(mma);
      cuda_impl::set_split_fp8_transposed_enabled(t);
    }
  } restore;
  auto check = [&](KvFormat f, int cap, int len, int n_tokens) {
    const int n_kv = 2, group = 4, hd = 128, ps = 16, n_heads = n_kv * group;
    const int max_pages = cap / ps, n_pages = max_pages;
    auto kv = gpu->create_kv_cache(KvCacheDesc{f, 1, n_kv, hd, ps, n_pages});
    std::vector<int32_t> table(static_cast<size_t>(max_pages));
    std::iota(table.begin(), table.end(), 0);
    table[size_t(len / ps / 2)] = n_pages;  // one past the cache, in the middle of the attended pages
    std::vector<int32_t> seq(static_cast<size_t>(n_tokens), 0), kv_len(static_cast<size_t>(n_tokens));
    for (int i = 0; i < n_tokens; ++i) kv_len[size_t(i)] = len - n_tokens + 1 + i;
    auto q = normal(size_t(n_tokens) * size_t(n_heads * hd));
    Pair pq = put(q), pseq = put(seq), plen = put(kv_len), pbt = put(table), pout = zeros<float>(q.size());
    const AttentionArgs a =
        on_both(attention_args(n_tokens, n_heads, n_kv, hd, max_pages), pq, pout, pseq, plen, pbt).second;
    gpu->attention(*kv, a);
    try {
      gpu->synchronize();
      ADD_FAILURE() << "a page outside the cache was not reported";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("page outside the KV cache"), std::string::npos) << e.what();
    }
    gpu->synchronize();  // reported once, then cleared
  };
  for (KvFormat f : {KvFormat::bf16, KvFormat::fp8}) {
    SCOPED_TRACE(kv_format_name(f));
    check(f, 256, 200, 1);   // decode, short table
    check(f, 256, 200, 20);  // prompt step
    for (int kernel : {0, 1, 2}) {
      SCOPED_TRACE("split kernel " + std::to_string(kernel));
      cuda_impl::set_split_attention_mma_enabled(kernel < 2);
      cuda_impl::set_split_fp8_transposed_enabled(kernel == 0);
      check(f, 2048, 1500, 1);  // split attention (tables over 1024 positions)
    }
  }
}

// Prompt-step attention (attention_prefill.cu: tensor-core tiles of 64 query rows) against the CPU
// backend: three sequences with 0, 37 and 300 cached positions and prompt chunks of 20, 33 and 50
// tokens (kv_len = cached + i + 1: causal within the chunk), laid out sequence by sequence and
// interleaved (every block then mixes sequences and runs one pass per sequence), GQA groups of 1, 2,
// 4 and 8, bf16 and fp8 caches, pages in shuffled order, with and without a sliding window.
// Both kernels: attention_prefill_mma.cu (m16n8k16; pages of 16 positions) and the TF32 one.
// Tolerance 2e-5 max|V| (as SplitAttentionMatchesCpu): q enters the mma as tf32 hi + lo (~2^-22
// relative; m16n8k16: three bf16 parts, ~24 bits, or two f16 parts, 22 bits), K and V exactly, the
// probabilities in as many parts; what is left is f32 accumulation order and
// the online softmax's rescaling, a few u of the scores' and outputs' magnitudes. A missed or doubled
// position moves an output by ~1/len of max|V| (>= 3e-3 here), a wrong row/head mapping by O(1).
// m16n8k16 also with rounded operands (AttentionArgs::round_operands: q and the probabilities as one
// bf16 part, one f16 part with an fp8 cache, as FlashAttention takes them): bf16 keeps 8 significant
// bits (relative 2^-9), so a score of |q| |k| ~ 11 (q, k ~ N(0, 1), hd 128) moves by ~2^-9 x 11 /
// sqrt(128) ~ 2e-3 typically, and an output by that times |V - out| plus the probabilities' own 2^-9;
// the largest over every case measured 8.0e-3 (bf16) and 9.9e-4 (fp8: f16's 11 bits) on the H200,
// and 2e-2 allows 2.5x. A missed or doubled position still moves the outputs of the 20-token chunk
// without cached positions (1..20 positions) by ~|V - out| / 20, ~0.05, a wrong row or head by O(1).
// The rounded results must differ from the exact ones (the flag reaches the kernel).
TEST_F(CudaVsCpu, PrefillAttentionMatchesCpu) {
  SCOPED_TRACE(trace());
  struct MmaSwitch {
    bool was = cuda_impl::attention_prefill_mma_enabled();
    ~MmaSwitch() { cuda_impl::set_attention_prefill_mma_enabled(was); }
  } restore;
  double worst_rounded[2] = {0, 0};  // bf16, fp8 caches
  for (bool mma : {true, false}) {
    cuda_impl::set_attention_prefill_mma_enabled(mma);
    for (KvFormat f : {KvFormat::bf16, KvFormat::fp8}) {
      // Pages of 32: a 16-position tile starts mid-page (its slot and scale offsets within the page).
      for (const std::pair<int, int>& gp :
           {std::pair{4, 16}, std::pair{1, 16}, std::pair{2, 16}, std::pair{8, 16}, std::pair{4, 32}}) {
        const int group = gp.first, ps = gp.second;
        SCOPED_TRACE(std::string(mma ? "m16n8k16 " : "TF32 ") + kv_format_name(f) + " group " +
                     std::to_string(group) + " page " + std::to_string(ps));
        const int hd = 128, n_kv = 2, n_heads = n_kv * group;
        const std::vector<int> cached = {0, 37, 300}, chunk = {20, 33, 50};
        const int max_pages = (350 + ps - 1) / ps;
        const int n_pages = 3 * max_pages;
        KvCacheDesc d{f, 1, n_kv, hd, ps, n_pages};
        auto kv_c = cpu->create_kv_cache(d);
        auto kv_g = gpu->create_kv_cache(d);
        const auto [tables, slots] = shuffled_pages(
            {cached[0] + chunk[0], cached[1] + chunk[1], cached[2] + chunk[2]}, max_pages, n_pages, ps, rng);
        const int64_t W = int64_t(slots.size());  // every position's K/V, the chunks' included
        auto k = normal(size_t(W) * size_t(n_kv * hd)), v = normal(size_t(W) * size_t(n_kv * hd));
        Pair pk = put(k), pv = put(v), psl = put(slots);
        cpu->kv_write(*kv_c, 0, (const float*)pk.c, (const float*)pv.c, (const int32_t*)psl.c, W);
        gpu->kv_write(*kv_g, 0, (const float*)pk.g, (const float*)pv.g, (const int32_t*)psl.g, W);
        for (bool interleaved : {false, true}) {
          // Grouped: sequence 0's tokens, then 1's, then 2's; interleaved: round robin.
          std::vector<int32_t> seq, kv_len;
          auto add = [&](int s, int i) {
            seq.push_back(s);
            kv_len.push_back(cached[size_t(s)] + i + 1);
          };
          if (interleaved) {
            for (int i = 0; i < 50; ++i)
              for (int s = 0; s < 3; ++s)
                if (i < chunk[size_t(s)]) add(s, i);
          } else {
            for (int s = 0; s < 3; ++s)
              for (int i = 0; i < chunk[size_t(s)]; ++i) add(s, i);
          }
          const int nq = int(seq.size());
          auto q = normal(size_t(nq) * size_t(n_heads * hd));
          Pair pq = put(q), pseq = put(seq), plen = put(kv_len), pbt = put(tables),
               pout = zeros<float>(q.size());
          AttentionArgs a = attention_args(nq, n_heads, n_kv, hd, max_pages);
          for (int window : {0, 25}) {
            SCOPED_TRACE(std::string(interleaved ? "interleaved" : "grouped") + " window " +
                         std::to_string(window));
            a.window = window;
            const auto [ac, ag] = on_both(a, pq, pout, pseq, plen, pbt);
            ASSERT_TRUE(
                cuda_impl::attention_prefill_applies(dynamic_cast<cuda_impl::CudaKvCache&>(*kv_g), ag))
                << "the prompt-step kernel does not apply";
            cpu->attention(*kv_c, ac);
            gpu->attention(*kv_g, ag);
            auto r_c = get_cpu<float>(pout, q.size()), r_g = get_gpu<float>(pout, q.size());
            for (size_t i = 0; i < r_c.size(); ++i) {
              ASSERT_FALSE(std::isnan(r_g[i])) << "attention output " << i;
              ASSERT_NEAR(r_g[i], r_c[i], 2e-5 * 6) << "attention output " << i << " (token "
                                                    << i / size_t(n_heads * hd) << ")";  // max |v| < 6
            }
            if (!mma) continue;
            AttentionArgs rounded = ag;
            rounded.round_operands = true;
            gpu->attention(*kv_g, rounded);
            const auto r_r = get_gpu<float>(pout, q.size());
            double worst = 0, moved = 0;
            for (size_t i = 0; i < r_c.size(); ++i) {
              ASSERT_FALSE(std::isnan(r_r[i])) << "rounded attention output " << i;
              worst = std::max(worst, double(std::fabs(r_r[i] - r_c[i])));
              moved = std::max(moved, double(std::fabs(r_r[i] - r_g[i])));
            }
            EXPECT_LT(worst, 2e-2) << "rounded operands";
            EXPECT_GT(moved, 0.0) << "round_operands did not change the kernel";
            worst_rounded[f == KvFormat::fp8] = std::max(worst_rounded[f == KvFormat::fp8], worst);
          }
        }
      }
    }
  }
  std::printf("[ rounded attention operands ] max |out - cpu|: bf16 cache %.3g, fp8 cache %.3g\n",
              worst_rounded[0], worst_rounded[1]);
}

// The one_token_per_seq hint (decode tokens of many sequences): 20 tokens of 20 sequences with 300
// cached positions each take the per-token kernels with the hint and the prompt-step kernel without
// it; both match the CPU within the attention tolerance above (2e-5 max|V|, max |V| < 6).
TEST_F(CudaVsCpu, OneTokenPerSeqHintRoutesAndMatches) {
  SCOPED_TRACE(trace());
  const int hd = 128, n_kv = 2, group = 4, n_heads = n_kv * group, ps = 16, n_seq = 20, len = 300;
  const int max_pages = (len + ps - 1) / ps, n_pages = n_seq * max_pages;
  KvCacheDesc d{KvFormat::bf16, 1, n_kv, hd, ps, n_pages};
  auto kv_c = cpu->create_kv_cache(d);
  auto kv_g = gpu->create_kv_cache(d);
  const auto [tables, slots] = shuffled_pages(std::vector<int>(n_seq, len), max_pages, n_pages, ps, rng);
  const int64_t W = int64_t(slots.size());
  auto k = normal(size_t(W) * size_t(n_kv * hd)), v = normal(size_t(W) * size_t(n_kv * hd));
  Pair pk = put(k), pv = put(v), psl = put(slots);
  cpu->kv_write(*kv_c, 0, (const float*)pk.c, (const float*)pv.c, (const int32_t*)psl.c, W);
  gpu->kv_write(*kv_g, 0, (const float*)pk.g, (const float*)pv.g, (const int32_t*)psl.g, W);
  std::vector<int32_t> seq, kv_len;
  for (int s = 0; s < n_seq; ++s) {
    seq.push_back(s);
    kv_len.push_back(len - s);  // different lengths per sequence
  }
  auto q = normal(size_t(n_seq) * size_t(n_heads * hd));
  Pair pq = put(q), pseq = put(seq), plen = put(kv_len), pbt = put(tables), pout = zeros<float>(q.size());
  AttentionArgs a = attention_args(n_seq, n_heads, n_kv, hd, max_pages);
  for (bool hint : {true, false}) {
    SCOPED_TRACE(hint ? "hint" : "no hint");
    a.one_token_per_seq = hint;
    const auto [ac, ag] = on_both(a, pq, pout, pseq, plen, pbt);
    EXPECT_EQ(cuda_impl::attention_prefill_applies(dynamic_cast<cuda_impl::CudaKvCache&>(*kv_g), ag), !hint);
    cpu->attention(*kv_c, ac);
    gpu->attention(*kv_g, ag);
    auto r_c = get_cpu<float>(pout, q.size()), r_g = get_gpu<float>(pout, q.size());
    for (size_t i = 0; i < r_c.size(); ++i) ASSERT_NEAR(r_g[i], r_c[i], 2e-5 * 6) << "attention output " << i;
  }
}

// rope_kv_write: the fused kernel against the composition of the GPU's own rope and kv_write (the
// default Backend::rope_kv_write called on the CUDA backend), bit for bit: q, k and every cache
// byte. Both round each rotation alike (rope_pair) and store with the same codecs; the composed ops
// are checked against the CPU by RopeMatchesCpu and KvWriteBytesEqualCpuAndAttentionMatches.
TEST_F(CudaVsCpu, RopeKvWriteFusedEqualsComposed) {
  SCOPED_TRACE(trace());
  struct Case {
    KvFormat f;
    RopeStyle style;
    int hd, rot, n_heads, n_kv, T;
  };
  for (Case cs : {Case{KvFormat::bf16, RopeStyle::half, 128, 128, 32, 8, 1},
                  Case{KvFormat::fp8, RopeStyle::half, 128, 128, 8, 2, 5},
                  Case{KvFormat::f32, RopeStyle::interleaved, 64, 64, 6, 3, 3},
                  Case{KvFormat::fp8, RopeStyle::half, 256, 192, 4, 4, 2},
                  Case{KvFormat::bf16, RopeStyle::interleaved, 48, 32, 4, 1, 17}}) {
    const KvCacheDesc d{cs.f, 2, cs.n_kv, cs.hd, 16, 4};
    auto fused = gpu->create_kv_cache(d), composed = gpu->create_kv_cache(d);
    std::vector<float> inv(size_t(cs.rot / 2));
    for (size_t j = 0; j < inv.size(); ++j) inv[j] = std::pow(10000.0f, -2.0f * float(j) / float(cs.rot));
    Pair pinv = put(inv);
    const RopeArgs r{cs.style, cs.hd, cs.rot, (const float*)pinv.g};
    std::vector<int32_t> pos, slots;
    for (int t = 0; t < cs.T; ++t) {
      pos.push_back(1000 * t + 7);
      slots.push_back((t * 13 + 5) % 64);
    }
    const auto q = normal(size_t(cs.T * cs.n_heads * cs.hd)), k = normal(size_t(cs.T * cs.n_kv * cs.hd)),
               v = normal(size_t(cs.T * cs.n_kv * cs.hd));
    Pair pq1 = put(q), pq2 = put(q), pk1 = put(k), pk2 = put(k), pv = put(v), ppos = put(pos),
         psl = put(slots);
    gpu->rope_kv_write(*fused, 1, (float*)pq1.g, (float*)pk1.g, (const float*)pv.g, (const int32_t*)ppos.g,
                       (const int32_t*)psl.g, cs.T, cs.n_heads, r);
    gpu->Backend::rope_kv_write(*composed, 1, (float*)pq2.g, (float*)pk2.g, (const float*)pv.g,
                                (const int32_t*)ppos.g, (const int32_t*)psl.g, cs.T, cs.n_heads, r);
    const std::string what =
        std::string(kv_format_name(cs.f)) + " hd " + std::to_string(cs.hd) + " T " + std::to_string(cs.T);
    EXPECT_EQ(get_gpu<float>(pq1, q.size()), get_gpu<float>(pq2, q.size())) << what;
    EXPECT_EQ(get_gpu<float>(pk1, k.size()), get_gpu<float>(pk2, k.size())) << what;
    std::vector<uint8_t> a(d.total_bytes()), b(d.total_bytes());
    gpu->download(a.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*fused).base(), a.size());
    gpu->download(b.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*composed).base(), b.size());
    EXPECT_TRUE(a == b) << what;
  }
}

// rope_kv_write_attention at one token: the fused kernel (the cluster attention kernel with a
// rope + kv_write prologue) against the GPU's own rope_kv_write + attention (the default), bit for
// bit on q, k, the output and every cache byte, over a cache that already holds earlier positions.
// Same code on both sides (rope_pair, write_head, the same attention loop), hence bit equality. The
// last case (rot_dim 64) is not fused: it checks the fallback.
TEST_F(CudaVsCpu, RopeKvWriteAttentionFusedEqualsComposed) {
  SCOPED_TRACE(trace());
  struct Case {
    KvFormat f;
    int group, history, rot;
  };
  for (Case cs :
       {Case{KvFormat::bf16, 4, 37, 128}, Case{KvFormat::fp8, 2, 0, 128}, Case{KvFormat::f32, 1, 16, 128},
        Case{KvFormat::fp8, 4, 50, 128}, Case{KvFormat::bf16, 4, 5, 64}}) {
    const int hd = 128, n_kv = 2, n_heads = n_kv * cs.group, pages = 4, page = 16;
    const KvCacheDesc d{cs.f, 2, n_kv, hd, page, pages};
    auto fused = gpu->create_kv_cache(d), composed = gpu->create_kv_cache(d);
    // Earlier positions 0 .. history-1 at slots 63 - p (pages in reverse through the block table below).
    std::vector<int32_t> table{3, 2, 1, 0};
    auto slot_of = [&](int p) { return table[size_t(p / page)] * page + p % page; };
    if (cs.history > 0) {
      std::vector<int32_t> hs;
      for (int p = 0; p < cs.history; ++p) hs.push_back(slot_of(p));
      auto hk = normal(size_t(cs.history * n_kv * hd)), hv = normal(size_t(cs.history * n_kv * hd));
      Pair phk = put(hk), phv = put(hv), phs = put(hs);
      for (auto* kv : {fused.get(), composed.get()})
        gpu->kv_write(*kv, 1, (const float*)phk.g, (const float*)phv.g, (const int32_t*)phs.g, cs.history);
    }
    std::vector<float> inv(size_t(cs.rot / 2));
    for (size_t j = 0; j < inv.size(); ++j) inv[j] = std::pow(500000.0f, -2.0f * float(j) / float(cs.rot));
    Pair pinv = put(inv);
    const RopeArgs r{RopeStyle::half, hd, cs.rot, (const float*)pinv.g};
    const int pos = cs.history;
    const std::vector<int32_t> vpos{pos}, vslot{slot_of(pos)}, vseq{0}, vlen{pos + 1};
    const auto q = normal(size_t(n_heads * hd)), k = normal(size_t(n_kv * hd)), v = normal(size_t(n_kv * hd));
    Pair pq1 = put(q), pq2 = put(q), pk1 = put(k), pk2 = put(k), pv = put(v), ppos = put(vpos),
         psl = put(vslot), pseq = put(vseq), plen = put(vlen), pbt = put(table), po1 = zeros<float>(q.size()),
         po2 = zeros<float>(q.size());
    AttentionArgs a = gpu_decode_args(n_heads, n_kv, hd, 1, pseq, plen, pbt, pages);
    run_fused_and_composed({*fused, *composed, pq1, pq2, pk1, pk2, pv, ppos, psl, po1, po2}, r, a);
    const std::string what = std::string(kv_format_name(cs.f)) + " group " + std::to_string(cs.group) +
                             " history " + std::to_string(cs.history) + " rot " + std::to_string(cs.rot);
    EXPECT_EQ(get_gpu<float>(pq1, q.size()), get_gpu<float>(pq2, q.size())) << what;
    EXPECT_EQ(get_gpu<float>(pk1, k.size()), get_gpu<float>(pk2, k.size())) << what;
    EXPECT_EQ(get_gpu<float>(po1, q.size()), get_gpu<float>(po2, q.size())) << what;
    std::vector<uint8_t> ba(d.total_bytes()), bb(d.total_bytes());
    gpu->download(ba.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*fused).base(), ba.size());
    gpu->download(bb.data(), dynamic_cast<cuda_impl::CudaKvCache&>(*composed).base(), bb.size());
    EXPECT_TRUE(ba == bb) << what;
  }
}

// ---- KV cache and attention ------------------------------------------------------------------------

struct KvCase {
  KvFormat f;
  int hd, page_size, n_kv, group;
};

TEST_F(CudaVsCpu, KvWriteBytesEqualCpuAndAttentionMatches) {
  SCOPED_TRACE(trace());
  const KvCase cases[] = {{KvFormat::f32, 8, 16, 4, 2},   {KvFormat::bf16, 128, 16, 2, 4},
                          {KvFormat::fp8, 128, 16, 2, 4}, {KvFormat::fp8, 200, 5, 1, 3},
                          {KvFormat::bf16, 64, 5, 2, 1},  {KvFormat::fp8, 256, 8, 2, 2},
                          {KvFormat::f32, 96, 7, 3, 2},   {KvFormat::fp8, 8, 16, 4, 2}};
  for (const KvCase& kc : cases) {
    SCOPED_TRACE(std::string(kv_format_name(kc.f)) + " hd " + std::to_string(kc.hd) + " page " +
                 std::to_string(kc.page_size));
    const int n_layers = 2, n_heads = kc.n_kv * kc.group;
    const std::vector<int> seq_len = {1, 37, 130};
    const int max_pages = (130 + kc.page_size - 1) / kc.page_size;
    const int n_pages = 3 * max_pages + 2;
    KvCacheDesc d{kc.f, n_layers, kc.n_kv, kc.hd, kc.page_size, n_pages};
    auto kv_c = cpu->create_kv_cache(d);
    auto kv_g = gpu->create_kv_cache(d);
    // Pages handed out in a shuffled order, as a KV manager would after churn.
    std::vector<int32_t> perm(static_cast<size_t>(n_pages));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> tables(size_t(3 * max_pages), -1);
    for (int s = 0, next = 0; s < 3; ++s)
      for (int p = 0; p < (seq_len[size_t(s)] + kc.page_size - 1) / kc.page_size; ++p)
        tables[size_t(s * max_pages + p)] = perm[size_t(next++)];
    // Every position of every sequence, written in two calls per layer (a prefill and the rest).
    std::vector<int32_t> slots;
    for (int s = 0; s < 3; ++s)
      for (int p = 0; p < seq_len[size_t(s)]; ++p)
        slots.push_back(tables[size_t(s * max_pages + p / kc.page_size)] * kc.page_size + p % kc.page_size);
    const int64_t T = int64_t(slots.size());
    const size_t per_tok = size_t(kc.n_kv * kc.hd);
    Pair pslots = put(slots);
    for (int layer = 0; layer < n_layers; ++layer) {
      auto k = normal(size_t(T) * per_tok), v = normal(size_t(T) * per_tok);
      if (layer == 1) {  // special values: they must convert exactly as on the CPU (no attention on layer 1)
        const float specials[] = {0.0f,         -0.0f,   1e-40f,
                                  -3e-39f,      448.0f,  464.0f,
                                  1e30f,        -1e-30f, std::numeric_limits<float>::infinity(),
                                  std::nanf("")};
        for (size_t i = 0; i < std::size(specials); ++i) {
          k[i * 37 % k.size()] = specials[i];
          v[(i * 53 + 5) % v.size()] = specials[i] * 0.5f;
        }
        for (size_t i = 0; i < k.size(); i += 97) k[i] *= 1e-38f;  // whole blocks of tiny values
      }
      Pair pk = put(k), pv = put(v);
      const int64_t first = 10;
      cpu->kv_write(*kv_c, layer, (const float*)pk.c, (const float*)pv.c, (const int32_t*)pslots.c, T);
      gpu->kv_write(*kv_g, layer, (const float*)pk.g, (const float*)pv.g, (const int32_t*)pslots.g, first);
      gpu->kv_write(*kv_g, layer, (const float*)pk.g + first * per_tok, (const float*)pv.g + first * per_tok,
                    (const int32_t*)pslots.g + first, T - first);
    }
    // The cache bytes, all layers, K and V, elements and scales.
    auto& cc = dynamic_cast<cpu_impl::CpuKvCache&>(*kv_c);
    auto& gc = dynamic_cast<cuda_impl::CudaKvCache&>(*kv_g);
    std::vector<uint8_t> gbytes(d.total_bytes());
    gpu->download(gbytes.data(), gc.base(), gbytes.size());
    const uint8_t* cbytes = cc.page(0, 0, 0);
    for (size_t i = 0; i < gbytes.size(); ++i)
      ASSERT_EQ(int(gbytes[i]), int(cbytes[i])) << "KV cache byte " << i << " of " << gbytes.size();

    // Queries: every position of sequence 2 as a causal prefill chunk, plus decode tokens of
    // sequences 0 and 1, in one batch.
    std::vector<int32_t> seq, kv_len;
    for (int p = 0; p < 130; ++p) {
      seq.push_back(2);
      kv_len.push_back(p + 1);
    }
    seq.insert(seq.end(), {0, 1, 1});
    kv_len.insert(kv_len.end(), {1, 37, 20});
    const int nq = int(seq.size());
    auto q = normal(size_t(nq) * size_t(n_heads * kc.hd));
    Pair pq = put(q), pseq = put(seq), plen = put(kv_len), pbt = put(tables), pout = zeros<float>(q.size());
    AttentionArgs a;
    a.n_tokens = nq;
    a.n_heads = n_heads;
    a.n_kv_heads = kc.n_kv;
    a.head_dim = kc.hd;
    a.scale = 1.0f / std::sqrt(float(kc.hd));
    a.layer = 0;
    a.max_pages_per_seq = max_pages;
    for (int window : {0, 9}) {  // and a sliding window shorter than most lengths here
      SCOPED_TRACE("window " + std::to_string(window));
      a.window = window;
      const auto [ac, ag] = on_both(a, pq, pout, pseq, plen, pbt);
      cpu->attention(*kv_c, ac);
      gpu->attention(*kv_g, ag);
      auto r_c = get_cpu<float>(pout, q.size()), r_g = get_gpu<float>(pout, q.size());
      for (size_t i = 0; i < r_c.size(); ++i) {
        ASSERT_FALSE(std::isnan(r_g[i])) << "attention output " << i;
        // V values are N(0, 1) (max |v| < 6 with overwhelming probability; fp8 keeps that).
        ASSERT_NEAR(r_g[i], r_c[i], 2e-5 * 6) << "attention output " << i;
      }
    }
  }
}

}  // namespace
}  // namespace mx8::backend
