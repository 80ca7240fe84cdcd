// The fast GEMV kernels against the scalar references (double accumulation) on every ISA.
//
// Tolerance: the references round once; the fast paths round every product and accumulate in f32,
// each term passing through at most D = K/8 + block_cols + K/block_cols + 16 roundings (the longest
// chain over the kernels: 8-lane partial sums over K for M > 1, sequential sums within a block plus
// one per block for the scalar path, the horizontal sum). So |y - ref| <= D * 2^-24 * sum_k |x_k w_k|
// (+ a tiny absolute term for subnormal products). The bound is ~1000x below the size of a typical
// single term at these K, so a dropped, doubled or mis-scaled element fails the test.
#include "mx8/backend/cpu/gemv.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/gemv_kernels.h"
#include "backend_cpu/isa_list.h"
#include "mx8/backend/cpu/quantize.h"
#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::cpu {
namespace {

using format::ElementFormat;
using format::ScaleStorage;

struct Problem {
  int64_t m, n, k;
  std::vector<float> x;
  std::vector<double> abs_dot;  // sum_k |x_k w_k| per output, for the tolerance
};

double tolerance(const Problem& p, int64_t block_cols, double abs_dot) {
  double depth = double(p.k) / 8 + double(block_cols) + double(p.k) / double(block_cols) + 16;
  // Absolute part: products and block partials that fall into f32 subnormals are rounded to 2^-149
  // in the kernels' scaled units (up to 2^8 larger in real units); one per term and per block.
  double floor = (double(p.k) + double(p.k) / double(block_cols) + 8) * std::ldexp(1.0, -140);
  return depth * std::ldexp(1.0, -24) * abs_dot + floor;
}

std::vector<float> random_x(int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(size_t(m * k));
  for (auto& v : x) v = normal(rng);
  return x;
}

struct Fp8Case {
  std::vector<uint8_t> codes;
  std::vector<uint8_t> scales_u8;
  std::vector<float> scales_f32;
  Fp8Matrix w;
};

Fp8Case random_fp8(int64_t n, int64_t k, int64_t br, int64_t bc, ElementFormat e, ScaleStorage st,
                   std::mt19937& rng) {
  Fp8Case c;
  c.codes.resize(size_t(n * k));
  for (auto& v : c.codes) {
    v = uint8_t(rng());
    // No NaN codes here (tested separately); E5M2 also has Inf codes 0x7C/0xFC: avoid them too.
    if (e == ElementFormat::e4m3 && (v & 0x7F) == 0x7F) v ^= 1;
    if (e == ElementFormat::e5m2 && (v & 0x7F) >= 0x7C) v &= 0xBF;
  }
  const int64_t gr = (n + br - 1) / br, gc = (k + bc - 1) / bc;
  c.scales_u8.resize(size_t(gr * gc));
  c.scales_f32.resize(size_t(gr * gc));
  std::uniform_real_distribution<float> u(0.5f, 2.f);
  for (size_t i = 0; i < c.scales_u8.size(); ++i) {
    c.scales_u8[i] = uint8_t(110 + rng() % 20);
    c.scales_f32[i] = format::ue8m0_to_f32(c.scales_u8[i]) * u(rng);  // DeepSeek f32 scales: any value
  }
  c.w.codes = c.codes.data();
  c.w.rows = n;
  c.w.cols = k;
  c.w.block_rows = br;
  c.w.block_cols = bc;
  c.w.element = e;
  c.w.scale_storage = st;
  c.w.scales = st == ScaleStorage::f32 ? static_cast<const void*>(c.scales_f32.data()) : c.scales_u8.data();
  return c;
}

// sum_k |x_k * w_k| in double, for each output.
std::vector<double> abs_dots(const std::vector<float>& x, int64_t m, int64_t n, int64_t k,
                             const std::vector<double>& wvals) {
  std::vector<double> out(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double s = 0;
      for (int64_t c = 0; c < k; ++c) s += std::fabs(double(x[i * k + c]) * wvals[r * k + c]);
      out[i * n + r] = s;
    }
  return out;
}

std::vector<double> fp8_values(const Fp8Matrix& w) {
  std::vector<double> v(size_t(w.rows * w.cols));
  const int64_t gc = (w.cols + w.block_cols - 1) / w.block_cols;
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c) {
      int64_t si = (r / w.block_rows) * gc + c / w.block_cols;
      double s = w.scale_storage == ScaleStorage::f32
                     ? double(static_cast<const float*>(w.scales)[si])
                     : double(format::ue8m0_to_f32(static_cast<const uint8_t*>(w.scales)[si]));
      v[r * w.cols + c] = double(format::decode_element(w.element, w.codes[r * w.cols + c])) * s;
    }
  return v;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& ref,
                  const std::vector<double>& absdot, const Problem& p, int64_t block_cols,
                  const std::string& what) {
  for (size_t i = 0; i < got.size(); ++i) {
    double tol = tolerance(p, block_cols, absdot[i]);
    ASSERT_LE(std::fabs(double(got[i]) - double(ref[i])), tol)
        << what << " output " << i << " got " << got[i] << " ref " << ref[i] << " (m=" << p.m << " n=" << p.n
        << " k=" << p.k << ", isa " << isa_name(active_isa()) << ")";
  }
}

TEST(Gemv, Fp8MatchesReferenceOnEveryIsa) {
  std::mt19937 rng(7);
  ThreadPool pool(2);
  struct Shape {
    int64_t m, n, k, br, bc;
  };
  // DeepSeek 128x128 blocks and MXFP8 1x32, plus ragged K and N (not multiples of 4, 16, 32 or the
  // block), block_cols 64, and a block_cols of 48 (the scalar fallback), M from 1 to 17 (each of the
  // M = 1, M = 2..4 and M > 4 kernels). M = 50 to 260 with N = 13 to 130 and K up to 1000 take the
  // AVX-512 GEMM through a second pass over rows of x (256 a pass) that ends in 4 rows, blocks of 16
  // weight rows of which the last holds 4, 6 or 13, and 256-column tiles with a ragged last one. MXFP8
  // at M = 1 also over 33 blocks and over 32 with a partial last one (K = 1056, 1000).
  const Shape shapes[] = {{1, 37, 300, 128, 128},   {1, 130, 256, 1, 32},   {3, 9, 77, 1, 32},
                          {4, 64, 384, 128, 128},   {5, 70, 200, 16, 64},   {16, 33, 130, 128, 128},
                          {17, 8, 96, 1, 32},       {2, 21, 144, 1, 48},    {1, 5, 31, 128, 128},
                          {1, 260, 1000, 128, 128}, {2, 7, 333, 128, 128},  {2, 12, 64, 1, 32},
                          {3, 5, 500, 128, 64},     {2, 9, 97, 1, 32},  // 97 = 3 * 32 + 1
                          {50, 70, 300, 128, 128},  {100, 13, 1000, 1, 32}, {49, 130, 520, 128, 64},
                          {260, 20, 300, 128, 128}, {1, 40, 1056, 1, 32},   {1, 11, 1000, 1, 32}};
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    for (const Shape& s : shapes)
      for (ElementFormat e : {ElementFormat::e4m3, ElementFormat::e5m2})
        for (ScaleStorage st : {ScaleStorage::ue8m0, ScaleStorage::f32}) {
          Fp8Case c = random_fp8(s.n, s.k, s.br, s.bc, e, st, rng);
          Problem p{s.m, s.n, s.k, random_x(s.m, s.k, rng), {}};
          p.abs_dot = abs_dots(p.x, s.m, s.n, s.k, fp8_values(c.w));
          std::vector<float> ref(size_t(s.m * s.n)), got(size_t(s.m * s.n), NAN);
          gemv_fp8_ref(p.x.data(), s.m, c.w, ref.data());
          gemv_fp8(p.x.data(), s.m, c.w, got.data(), (s.n & 1) ? &pool : nullptr);
          expect_close(got, ref, p.abs_dot, p, s.bc, std::string("fp8 ") + format::element_traits(e).name);
          if (HasFatalFailure()) return;
        }
  }
}

// The tests above compare each ISA's results with the reference, which a dispatch that ran the scalar
// kernel everywhere would also pass; this holds the choice itself.
TEST(Gemv, Fp8DispatchPicksEachIsasKernel) {
  using detail::fp8_rows_kernel;
  const int64_t many = detail::kPrescaledRows + 1;
  EXPECT_EQ(fp8_rows_kernel(Isa::scalar, 128, 1, false, false), detail::gemv_fp8_rows_scalar);
  EXPECT_EQ(fp8_rows_kernel(Isa::scalar, 128, 1, false, true), detail::gemv_fp8_rows_scalar);
#if defined(__x86_64__)
  for (Isa isa : {Isa::avx2, Isa::avx512}) {
    EXPECT_EQ(fp8_rows_kernel(isa, 48, 1, false, false), detail::gemv_fp8_rows_scalar);  // not whole 32s
    EXPECT_EQ(fp8_rows_kernel(isa, 128, many, false, true), detail::gemv_fp8_rows_avx2_lut);
    EXPECT_EQ(fp8_rows_kernel(isa, 32, 1, true, false), detail::gemv_fp8_rows_avx2);  // E5M2
  }
  EXPECT_EQ(fp8_rows_kernel(Isa::avx2, 128, many, false, false), detail::gemv_fp8_rows_avx2);
  EXPECT_EQ(fp8_rows_kernel(Isa::avx512, 128, many, false, false), detail::gemm_fp8_rows_avx512);
  EXPECT_EQ(fp8_rows_kernel(Isa::avx512, 128, many, true, false), detail::gemv_fp8_rows_avx2);  // E5M2
  EXPECT_EQ(fp8_rows_kernel(Isa::avx2, 128, 1, false, false), detail::gemv_fp8_rows_avx2);
  EXPECT_EQ(fp8_rows_kernel(Isa::avx512, 128, 1, false, false), detail::gemv_fp8_rows_avx512);
  EXPECT_EQ(fp8_rows_kernel(Isa::avx512, 32, detail::kPrescaledRows, false, false),
            detail::gemv_fp8_rows_avx512);
  EXPECT_EQ(fp8_rows_kernel(Isa::avx512, 128, 1, false, true), detail::gemv_fp8_rows_avx2_lut);
#elif defined(__aarch64__)
  for (int64_t m : {int64_t(1), many})
    for (bool e5m2 : {false, true})
      EXPECT_EQ(fp8_rows_kernel(Isa::neon, 32, m, e5m2, false), detail::gemv_fp8_rows_neon);
  EXPECT_EQ(fp8_rows_kernel(Isa::neon, 48, 1, false, false), detail::gemv_fp8_rows_scalar);  // not whole 32s
#endif
}

TEST(Gemv, Bf16AndF32DispatchPickEachIsasKernel) {
  const int64_t many = detail::kPrescaledRows + 1;
  EXPECT_EQ(detail::bf16_rows_kernel(Isa::scalar, 1), detail::gemv_bf16_rows_scalar);
  EXPECT_EQ(detail::bf16_rows_kernel(Isa::scalar, many), detail::gemv_bf16_rows_scalar);
  EXPECT_EQ(detail::f32_rows_kernel(Isa::scalar), detail::gemv_f32_rows_scalar);
#if defined(__x86_64__)
  for (Isa isa : {Isa::avx2, Isa::avx512}) {
    EXPECT_EQ(detail::bf16_rows_kernel(isa, 1), detail::gemv_bf16_rows_avx2);
    EXPECT_EQ(detail::bf16_rows_kernel(isa, detail::kPrescaledRows), detail::gemv_bf16_rows_avx2);
    EXPECT_EQ(detail::f32_rows_kernel(isa), detail::gemv_f32_rows_avx2);
  }
  EXPECT_EQ(detail::bf16_rows_kernel(Isa::avx2, many), detail::gemv_bf16_rows_avx2);
  EXPECT_EQ(detail::bf16_rows_kernel(Isa::avx512, many), detail::gemm_bf16_rows_avx512);
#elif defined(__aarch64__)
  EXPECT_EQ(detail::bf16_rows_kernel(Isa::neon, 1), detail::gemv_bf16_rows_neon);
  EXPECT_EQ(detail::bf16_rows_kernel(Isa::neon, many), detail::gemv_bf16_rows_neon);
  EXPECT_EQ(detail::f32_rows_kernel(Isa::neon), detail::gemv_f32_rows_neon);
#endif
}

// `mx8 bench gemv` times a gather-table decode beside the shift decode to show why the shift was
// chosen; its figures mean something only if it computes the same products. On AVX-512 the E4M3
// kernel pre-scales x in place (XPanel::pow2), which the table kernel must not be handed.
TEST(Gemv, Fp8TableDecodeOfTheBenchmarksMatchesReference) {
  std::mt19937 rng(9);
  struct TableDecode {
    TableDecode() { detail::g_fp8_table_decode = true; }
    ~TableDecode() { detail::g_fp8_table_decode = false; }
  } table_decode;
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    for (int64_t m : {1, 3, 17})
      for (ElementFormat e : {ElementFormat::e4m3, ElementFormat::e5m2}) {
        const int64_t n = 19, k = 320;
        Fp8Case c = random_fp8(n, k, 128, 128, e, ScaleStorage::ue8m0, rng);
        Problem p{m, n, k, random_x(m, k, rng), {}};
        // Inputs far from 1, so that a pre-scaling left in place (a power of two) cannot hide.
        for (float& v : p.x) v *= 1e-3f;
        p.abs_dot = abs_dots(p.x, m, n, k, fp8_values(c.w));
        std::vector<float> ref(size_t(m * n)), got(size_t(m * n), NAN);
        gemv_fp8_ref(p.x.data(), m, c.w, ref.data());
        gemv_fp8(p.x.data(), m, c.w, got.data(), nullptr);
        expect_close(got, ref, p.abs_dot, p, 128,
                     std::string("table decode ") + format::element_traits(e).name);
        if (HasFatalFailure()) return;
      }
  }
}

TEST(Gemv, DenseMatchReferenceOnEveryIsa) {
  std::mt19937 rng(8);
  ThreadPool pool(2);
  // M = 17 to 260 with N = 5 to 130 and K up to 600 take the AVX-512 BF16 GEMM through its ragged
  // passes, weight blocks and column tiles (as in Fp8MatchesReferenceOnEveryIsa).
  const int64_t shapes[][3] = {{1, 37, 300}, {1, 64, 256},  {3, 9, 77},    {4, 16, 8},    {16, 33, 130},
                               {17, 5, 1},   {50, 70, 600}, {17, 130, 33}, {260, 20, 300}};
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    for (const auto& s : shapes) {
      const int64_t m = s[0], n = s[1], k = s[2];
      Problem p{m, n, k, random_x(m, k, rng), {}};
      std::vector<float> wf = random_x(n, k, rng);
      std::vector<uint16_t> wb(wf.size());
      std::vector<double> wfv(wf.size()), wbv(wf.size());
      for (size_t i = 0; i < wf.size(); ++i) {
        wb[i] = format::f32_to_bf16_rne(wf[i]);
        wfv[i] = wf[i];
        wbv[i] = format::bf16_to_f32(wb[i]);
      }
      std::vector<float> ref(size_t(m * n)), got(size_t(m * n), NAN);
      gemv_f32_ref(p.x.data(), m, wf.data(), n, k, ref.data());
      gemv_f32(p.x.data(), m, wf.data(), n, k, got.data(), &pool);
      expect_close(got, ref, abs_dots(p.x, m, n, k, wfv), p, k, "f32");
      gemv_bf16_ref(p.x.data(), m, wb.data(), n, k, ref.data());
      gemv_bf16(p.x.data(), m, wb.data(), n, k, got.data(), nullptr);
      expect_close(got, ref, abs_dots(p.x, m, n, k, wbv), p, k, "bf16");
      if (HasFatalFailure()) return;
    }
  }
}

// Activations far from 1 (the AVX-512 kernel pre-scales them by a power of two), alone and as rows of
// a batch, and non-finite ones.
TEST(Gemv, Fp8ActivationMagnitudesAndNonFinite) {
  std::mt19937 rng(10);
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    for (int e : {-100, -40, 0, 40, 90}) {
      Fp8Case c = random_fp8(12, 300, 128, 128, ElementFormat::e4m3, ScaleStorage::ue8m0, rng);
      Problem p{1, 12, 300, random_x(1, 300, rng), {}};
      for (auto& v : p.x) v = std::ldexp(v, e);
      p.abs_dot = abs_dots(p.x, 1, 12, 300, fp8_values(c.w));
      std::vector<float> ref(12), got(12, NAN);
      gemv_fp8_ref(p.x.data(), 1, c.w, ref.data());
      gemv_fp8(p.x.data(), 1, c.w, got.data(), nullptr);
      expect_close(got, ref, p.abs_dot, p, 128, "x scaled by 2^" + std::to_string(e));
      if (HasFatalFailure()) return;
    }
    {
      // A batch whose rows lie 2^190 apart (the AVX-512 kernel pre-scales each row by its own power
      // of two: one factor for all of them would push the small rows' products below f32's range).
      const int exps[] = {-100, -40, 0, 40, 90};
      Fp8Case c = random_fp8(12, 300, 128, 128, ElementFormat::e4m3, ScaleStorage::ue8m0, rng);
      Problem p{5, 12, 300, random_x(5, 300, rng), {}};
      for (int i = 0; i < 5; ++i)
        for (int j = 0; j < 300; ++j)
          p.x[size_t(i * 300 + j)] = std::ldexp(p.x[size_t(i * 300 + j)], exps[i]);
      p.abs_dot = abs_dots(p.x, 5, 12, 300, fp8_values(c.w));
      std::vector<float> ref(60), got(60, NAN);
      gemv_fp8_ref(p.x.data(), 5, c.w, ref.data());
      gemv_fp8(p.x.data(), 5, c.w, got.data(), nullptr);
      expect_close(got, ref, p.abs_dot, p, 128, "rows scaled by 2^-100 .. 2^90");
      if (HasFatalFailure()) return;
    }
    Fp8Case c = random_fp8(12, 300, 128, 128, ElementFormat::e4m3, ScaleStorage::ue8m0, rng);
    std::vector<float> x = random_x(1, 300, rng);
    x[77] = INFINITY;
    std::vector<float> ref(12), got(12);
    gemv_fp8_ref(x.data(), 1, c.w, ref.data());
    gemv_fp8(x.data(), 1, c.w, got.data(), nullptr);
    for (int i = 0; i < 12; ++i) {
      EXPECT_EQ(std::isnan(got[i]), std::isnan(ref[i])) << i << " " << isa_name(isa);
      if (!std::isnan(ref[i])) {
        EXPECT_EQ(got[i], ref[i]) << i << " " << isa_name(isa);  // +-Inf
      }
    }
  }
}

// Weights made by the quantizer feed the GEMV directly (fp8_matrix_from_spec), and the product is
// close to the product with the dequantized weights.
TEST(Gemv, QuantizedWeightsRoundTrip) {
  std::mt19937 rng(9);
  const int64_t n = 40, k = 256;
  std::vector<float> w = random_x(n, k, rng), x = random_x(2, k, rng);
  for (auto [blocking, storage] : {std::pair{format::Blocking::block(128), ScaleStorage::ue8m0},
                                   std::pair{format::Blocking::block(128), ScaleStorage::f32},
                                   std::pair{format::Blocking::tile(32), ScaleStorage::ue8m0}}) {
    format::QuantSpec spec{ElementFormat::e4m3, format::ScaleRule::ceil, blocking, storage, true, 0.f};
    std::vector<uint8_t> codes(format::code_bytes(spec, n, k)), scales(format::scale_bytes(spec, n, k));
    quantize(format::SourceType::f32, w.data(), n, k, spec, codes.data(), scales.data(), nullptr);
    Fp8Matrix m = fp8_matrix_from_spec(codes.data(), scales.data(), n, k, spec);
    std::vector<float> deq(size_t(n * k)), y(size_t(2 * n)), y_deq(size_t(2 * n));
    dequantize(codes.data(), scales.data(), n, k, spec, deq.data(), nullptr);
    gemv_fp8(x.data(), 2, m, y.data(), nullptr);
    gemv_f32_ref(x.data(), 2, deq.data(), n, k, y_deq.data());
    std::vector<double> dv(deq.begin(), deq.end());
    Problem p{2, n, k, x, {}};
    expect_close(y, y_deq, abs_dots(x, 2, n, k, dv), p, m.block_cols, "quantized round trip");
  }
  format::QuantSpec packed{ElementFormat::e4m3,
                           format::ScaleRule::ceil,
                           format::Blocking::tile(32),
                           ScaleStorage::ue8m0_blackwell,
                           true,
                           0.f};
  EXPECT_THROW(fp8_matrix_from_spec(nullptr, nullptr, n, k, packed), Error);
}

// The NaN code: the reference (and the table-decoding scalar path) propagate NaN; the E4M3 shift
// decode of the SIMD paths reads 0x7F as 480 and 0xFF as -480, as gemv.h documents.
TEST(Gemv, NanCodeBehaviourIsAsDocumented) {
  const int64_t k = 64;
  std::vector<uint8_t> codes(k, 0x38);  // 1.0
  codes[5] = 0x7F;
  std::vector<uint8_t> scale(1, 127);  // 1.0
  std::vector<float> x(k, 1.f);
  Fp8Matrix w{codes.data(), scale.data(), 1, k, 1, 64, ElementFormat::e4m3, ScaleStorage::ue8m0};
  float y_ref = 0;
  gemv_fp8_ref(x.data(), 1, w, &y_ref);
  EXPECT_TRUE(std::isnan(y_ref));
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    float y = 0;
    gemv_fp8(x.data(), 1, w, &y, nullptr);
    if (isa == Isa::scalar)
      EXPECT_TRUE(std::isnan(y));
    else
      EXPECT_EQ(y, 63.f + 480.f) << isa_name(isa);
  }
  // A NaN scale poisons every output its block feeds, on every path.
  scale[0] = 0xFF;
  codes[5] = 0x38;
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    float y = 0;
    gemv_fp8(x.data(), 1, w, &y, nullptr);
    EXPECT_TRUE(std::isnan(y)) << isa_name(isa);
  }
}

// MXFP8 (1x32) scale bytes 0 (2^-127, an f32 subnormal) and 255 (NaN) on every kernel, early and late
// in the row (blocks 3 and 18 of 20), at M = 1 (four weight rows at a time) and M = 2.
TEST(Gemv, Mx32ScaleBytesZeroAndNan) {
  const int64_t n = 4, k = 640, blocks = k / 32;
  std::vector<uint8_t> codes(size_t(n * k), 0x38);  // 1.0
  std::vector<uint8_t> scales(size_t(n * blocks), 127);
  for (int64_t b = 0; b < blocks; ++b) scales[size_t(b)] = 0;  // row 0: 2^-127 everywhere
  scales[size_t(blocks + 18)] = 0xFF;                          // row 1: NaN in block 18
  scales[size_t(3 * blocks + 3)] = 0;                          // row 3: one block of 2^-127
  const Fp8Matrix w{codes.data(), scales.data(), n, k, 1, 32, ElementFormat::e4m3, ScaleStorage::ue8m0};
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  for (const int64_t m : {1, 2}) {
    std::vector<float> x(size_t(m * k));
    for (float& v : x) v = u(rng);
    std::vector<float> ref(size_t(m * n));
    gemv_fp8_ref(x.data(), m, w, ref.data());
    for (Isa isa : testing::runnable_isas()) {
      ScopedIsa scoped(isa);
      std::vector<float> y(size_t(m * n), 0.f);
      gemv_fp8(x.data(), m, w, y.data(), nullptr);
      for (int64_t i = 0; i < m; ++i) {
        const float* yi = y.data() + i * n;
        const float* ri = ref.data() + i * n;
        SCOPED_TRACE("M " + std::to_string(m) + " row of x " + std::to_string(i) + " " + isa_name(isa));
        // 2^-5: on AVX-512 each block's sum carries the decode's 2^-120 and the pre-scaled x (~2^100),
        // so times 2^-127 it lands near 2^-142, an f32 subnormal with 7 significant bits (a byte 0 read
        // as 0.0 gives 0 here).
        EXPECT_NEAR(yi[0], ri[0], std::ldexp(std::fabs(ri[0]), -5));
        EXPECT_TRUE(std::isnan(yi[1]));  // 255 read as an exponent would be +Inf, and so the row
        // Sums of 640 positive products in f32: the longest chain (the scalar kernel's) is 640 adds
        // and 20 scale FMAs, (640 + 20) u = 2^-14.6 relative at most.
        EXPECT_NEAR(yi[2], ri[2], std::ldexp(std::fabs(ri[2]), -14));
        EXPECT_NEAR(yi[3], ri[3], std::ldexp(std::fabs(ri[3]), -14));
      }
    }
  }
}

TEST(Gemv, BadArgumentsThrow) {
  std::vector<uint8_t> codes(64), scales(1);
  std::vector<float> x(64), y(1);
  Fp8Matrix w{codes.data(), scales.data(), 1, 64, 1, 0, ElementFormat::e4m3, ScaleStorage::ue8m0};
  EXPECT_THROW(gemv_fp8(x.data(), 1, w, y.data(), nullptr), Error);  // zero block width
  w.block_cols = 32;
  w.element = ElementFormat::e2m1;
  EXPECT_THROW(gemv_fp8(x.data(), 1, w, y.data(), nullptr), Error);
  w.element = ElementFormat::e4m3;
  w.scale_storage = ScaleStorage::ue8m0_packed4;
  EXPECT_THROW(gemv_fp8(x.data(), 1, w, y.data(), nullptr), Error);
  EXPECT_THROW(gemv_f32(x.data(), -1, x.data(), 1, 64, y.data(), nullptr), Error);
  EXPECT_THROW(gemv_f32(x.data(), 1, x.data(), -1, 64, y.data(), nullptr), Error);
  EXPECT_THROW(gemv_f32(x.data(), 1, x.data(), 1, -64, y.data(), nullptr), Error);
  // Empty products are not errors: no rows of x, or a weight of no rows, write nothing.
  w.scale_storage = ScaleStorage::ue8m0;
  y[0] = 42.f;
  EXPECT_NO_THROW(gemv_fp8(x.data(), 0, w, y.data(), nullptr));
  EXPECT_NO_THROW(gemv_fp8_ref(x.data(), 0, w, y.data()));
  w.rows = 0;
  EXPECT_NO_THROW(gemv_fp8(x.data(), 1, w, y.data(), nullptr));
  EXPECT_EQ(y[0], 42.f);
  w.rows = -1;
  EXPECT_THROW(gemv_fp8(x.data(), 1, w, y.data(), nullptr), Error);
  w.rows = 1, w.cols = -64;
  EXPECT_THROW(gemv_fp8(x.data(), 1, w, y.data(), nullptr), Error);
  // The references check as much: they are the oracle of other tests.
  w.cols = 64, w.block_cols = 0;
  EXPECT_THROW(gemv_fp8_ref(x.data(), 1, w, y.data()), Error);
  w.block_cols = 32, w.scales = nullptr;
  EXPECT_THROW(gemv_fp8(x.data(), 1, w, y.data(), nullptr), Error);  // scales missing, codes there
  std::vector<uint16_t> wb(64);
  EXPECT_THROW(gemv_bf16_ref(x.data(), 1, wb.data(), 1, -64, y.data()), Error);
  EXPECT_THROW(gemv_f32(nullptr, 1, x.data(), 1, 64, y.data(), nullptr), Error);
  EXPECT_THROW(gemv_bf16(x.data(), 1, wb.data(), 1, 64, nullptr, nullptr), Error);
  // A weight of no columns: every output is the empty sum, 0, on every path.
  w.scales = scales.data(), w.cols = 0;
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    y[0] = 42.f;
    gemv_fp8(x.data(), 1, w, y.data(), nullptr);
    EXPECT_EQ(y[0], 0.f) << isa_name(isa);
    y[0] = 42.f;
    gemv_f32(x.data(), 1, x.data(), 1, 0, y.data(), nullptr);
    EXPECT_EQ(y[0], 0.f) << isa_name(isa);
  }
}

}  // namespace
}  // namespace mx8::cpu
