// The GEMVs of E4M3 activations: gemv_fp8x8 (src/backend/cuda/gemv_fp8x8.cu), 1..16 rows times fp8_block
// weights or MXFP8, and gemv_fp8_linear (gemv_fp8_linear.cu), 1..4 rows times fp8_block weights.
// gemv_fp8x8: 1..16 rows of E4M3 activations times fp8_block weights
// (1x128 activation scales) or MXFP8 weights (1x32 scales on both), against a double-precision
// product of the decoded operands. Fresh random
// codes and scales per run (the seed is printed on failure), ragged n (rows past n in a tile), 1..3
// targets, both scale types, bias and accumulation, k from one scale block to 14336 (every launch
// plan: one or two groups of 8 rows, 8- or 16-warp blocks, launches over parts of k), NaN codes, and a
// poisoned row past m that must stay untouched.
//
// Tolerance: the FP8 GEMM's (tests/cuda/gemm_test.cpp says why): 2^-9 sum |w a| plus 2^-8 of the
// largest |w a| of every 32-wide k group. The products are exact in f32, but the tensor cores add
// a k32 step's 32 products into the accumulator with limited width (mma.m16n8k32 is one such step,
// as a wgmma k32 is); the promotion into the f32 accumulator every 128 (MXFP8: 32) of k bounds how far that
// error carries. With accumulation, y + (product + bias) rounds once more: 2^-23 |y| on top. A wrong
// scale or a missed block moves results by at least a block's share of sum |w a|, over 2^-6 of it.
// gemv_fp8_linear's k32 steps take their 32 products from a 64-wide group of k (bytes 0-7 or 8-15 of
// each lane's 16, two steps per group), so its second term is 2^-8 of twice each 64-wide group's
// largest |w a|: the same per-step bound over the groups its steps actually add.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/gemv_fp8_linear.cuh"
#include "backend/cuda/gemv_fp8x8.cuh"
#include "cuda/cuda_test_util.h"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend {
namespace {

using cuda::test::DeviceBuffer;

uint8_t finite_e4m3(std::mt19937& rng) {
  std::uniform_int_distribution<int> code(0, 255);
  uint8_t c;
  do c = uint8_t(code(rng));
  while ((c & 0x7F) == 0x7F);
  return c;
}

// Scales of `count` blocks: UE8M0 bytes 2^-20 .. 2^20, or f32 values 1e-3 .. 3e-2 times the same
// powers of two (not powers of two themselves: a DeepSeek checkpoint's f32 weight scales).
struct Scales {
  std::vector<uint8_t> bytes;  // what the kernel reads
  std::vector<double> value;
};
Scales random_scales(size_t count, ScaleType st, bool powers_of_two, std::mt19937& rng) {
  std::uniform_int_distribution<int> e(-20, 20);
  std::uniform_real_distribution<float> f(0.001f, 0.03f);
  Scales s;
  s.value.resize(count);
  s.bytes.resize(count * (st == ScaleType::f32 ? 4 : 1));
  for (size_t i = 0; i < count; ++i) {
    const int x = e(rng);
    if (st == ScaleType::ue8m0) {
      s.bytes[i] = uint8_t(127 + x);
      s.value[i] = format::ue8m0_to_f32(s.bytes[i]);
    } else {
      const float v = std::ldexp(powers_of_two ? 1.0f : f(rng), x);
      std::memcpy(s.bytes.data() + 4 * i, &v, 4);
      s.value[i] = v;
    }
  }
  return s;
}

struct Case {
  int m;
  std::vector<int64_t> ns;
  int64_t k;
  ScaleType st;
  bool accumulate, bias;
  WeightFormat f = WeightFormat::fp8_block;  // or mxfp8 (with UE8M0 scales)
  bool linear = false;                       // gemv_fp8_linear instead of gemv_fp8x8
};

void run_case(const Case& c, std::mt19937& rng, const std::string& what, int nan_weight_row = -1,
              int nan_act_row = -1) {
  const bool mx = c.f == WeightFormat::mxfp8;
  const int m = c.m, ld = mx8::cuda::sa_ld(m), kb = int(c.k / 128), block = mx ? 32 : 128;
  const int64_t kblocks = c.k / block;
  // The k group whose largest product bounds one tensor-core step's error, and steps per group.
  const int group = c.linear ? 64 : 32;
  const double steps = c.linear ? 2.0 : 1.0;
  // Activations: codes [m][k], scales [k / block][ld] (powers of two, as the quantizer makes them).
  std::vector<uint8_t> a(size_t(m) * size_t(c.k));
  for (auto& v : a) v = finite_e4m3(rng);
  if (nan_act_row >= 0) a[size_t(nan_act_row) * size_t(c.k) + 77] = 0x7F;
  const Scales sa = random_scales(size_t(kblocks) * size_t(ld), c.st, true, rng);
  DeviceBuffer<uint8_t> da(a.size()), dsa(sa.bytes.size());
  da.upload(a);
  dsa.upload(sa.bytes);

  struct Target {
    std::vector<uint8_t> w;
    Scales s;
    std::vector<float> bias, y0;
    std::unique_ptr<DeviceBuffer<uint8_t>> dw, ds;
    std::unique_ptr<DeviceBuffer<float>> db, dy;
  };
  std::vector<Target> ts(c.ns.size());
  std::vector<MatmulTarget> mt;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (size_t i = 0; i < ts.size(); ++i) {
    Target& t = ts[i];
    const int64_t n = c.ns[i];
    t.w.resize(size_t(n * c.k));
    for (auto& v : t.w) v = finite_e4m3(rng);
    if (nan_weight_row >= 0 && nan_weight_row < n) t.w[size_t(nan_weight_row * c.k + 5)] = 0xFF;
    // fp8_block: [ceil(n / 128)][k / 128]; MXFP8: row-major [n][k / 32].
    t.s = random_scales(mx ? size_t(n * kblocks) : size_t((n + 127) / 128 * kb), c.st, false, rng);
    t.bias.resize(size_t(n));
    for (auto& v : t.bias) v = nd(rng);
    // y: m rows, then one poisoned row that no store may reach.
    t.y0.resize(size_t((m + 1) * n));
    for (auto& v : t.y0) v = c.accumulate ? nd(rng) : -777.0f;
    for (int64_t j = 0; j < n; ++j) t.y0[size_t(m * n + j)] = -999.0f;
    t.dw = std::make_unique<DeviceBuffer<uint8_t>>(t.w.size());
    t.ds = std::make_unique<DeviceBuffer<uint8_t>>(t.s.bytes.size());
    t.db = std::make_unique<DeviceBuffer<float>>(t.bias.size());
    t.dy = std::make_unique<DeviceBuffer<float>>(t.y0.size());
    t.dw->upload(t.w);
    t.ds->upload(t.s.bytes);
    t.db->upload(t.bias);
    t.dy->upload(t.y0);
    mt.push_back({WeightView{c.f, n, c.k, t.dw->get(), t.ds->get(), c.st}, t.dy->get(),
                  c.bias ? t.db->get() : nullptr});
  }
  if (c.linear) {
    ASSERT_TRUE(cuda_impl::gemv_fp8_linear_applies(mt.data(), int(mt.size()), m)) << what;
    cuda_impl::launch_gemv_fp8_linear(mt.data(), int(mt.size()), da.get(), dsa.get(), ld, m, c.accumulate,
                                      nullptr);
  } else {
    ASSERT_TRUE(cuda_impl::gemv_fp8x8_applies(mt.data(), int(mt.size()), m)) << what;
    cuda_impl::launch_gemv_fp8x8(mt.data(), int(mt.size()), da.get(), dsa.get(), ld, m, c.accumulate,
                                 nullptr);
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;

  for (size_t i = 0; i < ts.size(); ++i) {
    const Target& t = ts[i];
    const int64_t n = c.ns[i];
    const std::vector<float> y = t.dy->download();
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(y[size_t(m * n + j)], -999.0f) << what << ": row m stored";
    for (int r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0, abs_sum = 0, group_max = 0, group_max_sum = 0;
        bool nan = false;
        for (int64_t q = 0; q < c.k; ++q) {
          const uint8_t wc = t.w[size_t(j * c.k + q)], ac = a[size_t(r * c.k + q)];
          nan |= (wc & 0x7F) == 0x7F || (ac & 0x7F) == 0x7F;
          const double ws =
              mx ? t.s.value[size_t(j * kblocks + q / 32)] : t.s.value[size_t((j / 128) * kb + q / 128)];
          const double p = double(format::e4m3_to_f32(wc)) * ws * double(format::e4m3_to_f32(ac)) *
                           sa.value[size_t((q / block) * ld + r)];
          sum += nan ? 0.0 : p;
          abs_sum += nan ? 0.0 : std::fabs(p);
          group_max = std::max(group_max, nan ? 0.0 : std::fabs(p));
          if (q % group == group - 1) group_max_sum += steps * std::exchange(group_max, 0.0);
        }
        const size_t o = size_t(r * n + j);
        if (nan) {
          ASSERT_TRUE(std::isnan(y[o])) << what << ": row " << r << " col " << j << " = " << y[o];
          continue;
        }
        double want = sum + (c.bias ? t.bias[size_t(j)] : 0.0);
        double tol = abs_sum / 512 + group_max_sum / 256 + (c.bias ? std::ldexp(std::fabs(want), -22) : 0.0);
        if (c.accumulate) {
          want += t.y0[o];
          tol += std::ldexp(std::fabs(t.y0[o]) + std::fabs(want), -22);
        }
        ASSERT_NEAR(y[o], want, tol) << what << ": target " << i << " row " << r << " col " << j;
      }
  }
}

class GemvFp8x8 : public ::testing::Test {
 protected:
  void SetUp() override {
    MX8_REQUIRE_GPU();
    seed = cuda::test::fresh_seed();
    rng.seed(seed);
  }
  uint32_t seed = 0;
  std::mt19937 rng;
};

TEST_F(GemvFp8x8, EveryRowCountMatchesTheDecodedProduct) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int m = 1; m <= cuda_impl::kFp8x8MaxRows; ++m)
    for (ScaleType st : {ScaleType::ue8m0, ScaleType::f32}) {
      const Case c{m, {16, 40, 272}, 1024, st, m % 2 == 0, m % 3 != 0};
      run_case(c, rng, "m " + std::to_string(m) + (st == ScaleType::f32 ? " f32" : " ue8m0"));
    }
}

// k of one scale block (7 of 8 warps idle), Llama-3-8B's 4096 and 14336 (8 rows: 16-warp blocks,
// staged activations too large for two blocks per SM; 16 rows: two launches over halves of k), one
// weight row, and k in more parts: two uneven ones (113 scale blocks: 57 + 56), three (16 rows of
// 38400), two for 8 rows (38400: 300 KB of activations). The later parts add onto the first's output
// and the bias once: a part at a wrong offset, a bias added twice or a part that overwrites instead of
// adding moves results by a part's share of sum |w a| or by |bias|.
TEST_F(GemvFp8x8, ShortAndLongK) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_case({3, {48}, 128, ScaleType::ue8m0, false, true}, rng, "k 128");
  run_case({5, {1}, 4096, ScaleType::f32, true, false}, rng, "n 1");
  run_case({12, {64, 48}, 4096, ScaleType::ue8m0, true, true}, rng, "m 12 k 4096");
  run_case({4, {200}, 14336, ScaleType::ue8m0, true, false}, rng, "m 4 k 14336");
  run_case({8, {136}, 14336, ScaleType::f32, true, true}, rng, "m 8 k 14336");
  run_case({16, {40}, 14336, ScaleType::f32, true, true}, rng, "m 16 k 14336");
  run_case({16, {40}, 14464, ScaleType::ue8m0, true, true}, rng, "m 16 k 14464 (uneven parts)");
  run_case({12, {24}, 38400, ScaleType::ue8m0, false, true}, rng, "m 12 k 38400 (three parts)");
  run_case({8, {48}, 38400, ScaleType::f32, true, true}, rng, "m 8 k 38400 (two parts)");
}

// MXFP8: 1x32 UE8M0 scales on both operands, scales spanning 2^-20 .. 2^20 inside every 128 of k.
TEST_F(GemvFp8x8, Mxfp8EveryRowCountAndLongK) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int m = 1; m <= cuda_impl::kFp8x8MaxRows; ++m)
    run_case({m, {16, 40, 272}, 1024, ScaleType::ue8m0, m % 2 == 1, m % 3 == 0, WeightFormat::mxfp8}, rng,
             "mxfp8 m " + std::to_string(m));
  run_case({8, {136}, 14336, ScaleType::ue8m0, true, true, WeightFormat::mxfp8}, rng, "mxfp8 m 8 k 14336");
  run_case({13, {72}, 14336, ScaleType::ue8m0, false, true, WeightFormat::mxfp8}, rng, "mxfp8 m 13 k 14336");
  run_case({16, {72}, 16384, ScaleType::ue8m0, true, true, WeightFormat::mxfp8}, rng,
           "mxfp8 m 16 k 16384 (two parts)");
  run_case({6, {64}, 512, ScaleType::ue8m0, false, false, WeightFormat::mxfp8}, rng, "mxfp8 NaN weight", 3,
           -1);
}

TEST_F(GemvFp8x8, NaNCodesPropagate) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_case({6, {64, 32}, 512, ScaleType::ue8m0, false, false}, rng, "NaN weight row 5", 5, -1);
  run_case({6, {64}, 512, ScaleType::ue8m0, true, true}, rng, "NaN activation row 1", -1, 1);
}

class GemvFp8Linear : public GemvFp8x8 {};

Case linear_case(int m, std::vector<int64_t> ns, int64_t k, ScaleType st, bool accumulate, bool bias) {
  Case c{m, std::move(ns), k, st, accumulate, bias};
  c.linear = true;
  return c;
}

// Every row count and scale type; odd n (the last pair's second row is read, never stored); 1..3
// targets whose pairs share blocks.
TEST_F(GemvFp8Linear, EveryRowCountMatchesTheDecodedProduct) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (int m = 1; m <= cuda_impl::kLinearMaxRows; ++m)
    for (ScaleType st : {ScaleType::ue8m0, ScaleType::f32}) {
      run_case(linear_case(m, {16, 41, 272}, 1024, st, m % 2 == 0, m % 3 != 0), rng,
               "linear m " + std::to_string(m) + (st == ScaleType::f32 ? " f32" : " ue8m0"));
      run_case(linear_case(m, {3}, 2048, st, m % 2 == 1, true), rng, "linear n 3 m " + std::to_string(m));
    }
}

// k not a whole number of 512-byte segments (the last segment's lanes past k load nothing): one
// scale block (8 lanes), 640 (one segment and 8 lanes), 1536 (3 segments); long k over few pairs, so
// that every pair is split between warps and summed in the block (n 2: one pair of 32 segments over 8
// warps; n 6 at k 14336: 3 pairs of 28 segments, split mid-pair); and n large enough for many pairs
// per block. A split pair summed without one of its parts, or twice, moves results by a warp's share
// of sum |w a|; a segment at a wrong offset or a tail lane that loads past k changes every product.
TEST_F(GemvFp8Linear, RaggedKSplitPairsAndManyPairs) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_case(linear_case(3, {48}, 128, ScaleType::ue8m0, false, true), rng, "linear k 128");
  run_case(linear_case(2, {34}, 640, ScaleType::f32, true, false), rng, "linear k 640");
  run_case(linear_case(1, {96}, 1536, ScaleType::ue8m0, true, true), rng, "linear k 1536");
  run_case(linear_case(1, {2}, 16384, ScaleType::f32, false, true), rng, "linear n 2 k 16384");
  run_case(linear_case(4, {6}, 14336, ScaleType::ue8m0, true, false), rng, "linear n 6 k 14336");
  run_case(linear_case(2, {1, 5}, 4224, ScaleType::f32, true, true), rng, "linear n 1 + 5 k 4224");
  run_case(linear_case(1, {2000, 1000}, 512, ScaleType::ue8m0, false, true), rng, "linear n 3000 k 512");
}

TEST_F(GemvFp8Linear, NaNCodesPropagate) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  run_case(linear_case(3, {64, 32}, 512, ScaleType::ue8m0, false, false), rng, "linear NaN weight row 5", 5,
           -1);
  run_case(linear_case(4, {64}, 1024, ScaleType::f32, true, true), rng, "linear NaN activation row 2", -1, 2);
}

TEST(GemvFp8LinearHost, TakesOnlyWhatItRuns) {
  alignas(16) uint8_t dummy[16] = {};
  float y[16];
  const WeightView w{WeightFormat::fp8_block, 16, 256, dummy, dummy, ScaleType::ue8m0};
  MatmulTarget t{w, y, nullptr};
  EXPECT_TRUE(cuda_impl::gemv_fp8_linear_applies(&t, 1, 4));
  EXPECT_FALSE(cuda_impl::gemv_fp8_linear_applies(&t, 1, 5));  // one mma per row of activations
  EXPECT_FALSE(cuda_impl::gemv_fp8_linear_applies(&t, 1, 0));
  MatmulTarget bad = t;
  bad.w.format = WeightFormat::mxfp8;  // a 64-wide sub-segment spans two 1x32 scale blocks
  EXPECT_FALSE(cuda_impl::gemv_fp8_linear_applies(&bad, 1, 1));
  bad = t;
  bad.w.k = 200;  // not whole scale blocks
  EXPECT_FALSE(cuda_impl::gemv_fp8_linear_applies(&bad, 1, 1));
  MatmulTarget two[2] = {t, t};
  two[1].w.scale_type = ScaleType::f32;  // one scale type per launch
  EXPECT_FALSE(cuda_impl::gemv_fp8_linear_applies(two, 2, 1));
}

TEST(GemvFp8x8Host, TakesOnlyWhatItRuns) {
  alignas(16) uint8_t dummy[16] = {};
  float y[16];
  const WeightView w{WeightFormat::fp8_block, 16, 256, dummy, dummy, ScaleType::ue8m0};
  MatmulTarget t{w, y, nullptr};
  EXPECT_TRUE(cuda_impl::gemv_fp8x8_applies(&t, 1, 16));
  EXPECT_FALSE(cuda_impl::gemv_fp8x8_applies(&t, 1, 17));  // more rows than two n8 column groups
  EXPECT_FALSE(cuda_impl::gemv_fp8x8_applies(&t, 1, 0));
  MatmulTarget bad = t;
  bad.w.format = WeightFormat::mxfp8;
  EXPECT_TRUE(cuda_impl::gemv_fp8x8_applies(&bad, 1, 4));
  bad.w.scale_type = ScaleType::f32;  // MXFP8 scales are UE8M0
  EXPECT_FALSE(cuda_impl::gemv_fp8x8_applies(&bad, 1, 4));
  bad = t;
  bad.w.format = WeightFormat::bf16;
  EXPECT_FALSE(cuda_impl::gemv_fp8x8_applies(&bad, 1, 4));
  bad = t;
  bad.w.k = 200;  // not whole scale blocks
  EXPECT_FALSE(cuda_impl::gemv_fp8x8_applies(&bad, 1, 4));
  MatmulTarget two[2] = {t, t};
  two[1].w.scale_type = ScaleType::f32;  // one scale type per launch
  EXPECT_FALSE(cuda_impl::gemv_fp8x8_applies(two, 2, 4));
  // Any k of whole scale blocks: where the staged activations do not fit in shared memory, k runs in
  // parts (ShortAndLongK above runs them).
  MatmulTarget wide = t;
  for (int64_t k : {16384, 32768, 1 << 20}) {
    wide.w.k = k;
    EXPECT_TRUE(cuda_impl::gemv_fp8x8_applies(&wide, 1, 8)) << k;
    EXPECT_TRUE(cuda_impl::gemv_fp8x8_applies(&wide, 1, 16)) << k;
  }
}

}  // namespace
}  // namespace mx8::backend
