// x86 attention kernels (attention_tile.h). AVX2 + FMA: scores with one key per lane (16 keys in two
// vectors, up to 4 query rows: 8 accumulators, one FMA per row, key pair and dimension), weighted V
// rows with one dimension per lane (16 dimensions, up to 4 rows). AVX-512 (at the end): the scores
// and weighted V rows on 16 lanes, with AVX2's key blocks, V rows and exps. Every lane does the
// scalar kernels' operations in their order, so the results are the same bits. Functions carry
// target attributes instead of the file being built with -mavx2 (ODR: see gemv_avx2.cpp).
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "backend/cpu/attention_tile.h"
#include "backend/cpu/avx512_common.h"
#include "backend/cpu/backend_cpu.h"
#include "mx8/format/ue8m0.h"

#define MX8_AVX2 __attribute__((target("avx2,fma")))

namespace mx8::backend::cpu_impl {
namespace {

// f(0), f(1), ..., f(N - 1), each index a compile-time constant (std::integral_constant). The kernels'
// accumulator arrays are indexed this way, not by loops that the compiler unrolls: GCC 12 unrolls such
// loops only after its pass that turns arrays into registers, and then stores every accumulator to the
// stack on every step of the loop around them (prompt attention ran at half its FMA rate).
template <int N, class F>
MX8_AVX2 inline void each(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) MX8_AVX2 {
    (f(std::integral_constant<int, I>{}), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

template <KvFormat F>
constexpr size_t kElemBytes = F == KvFormat::f32    ? 4
                              : F == KvFormat::bf16 ? 2
                                                    : 1;

// 8 stored values at `src` (consecutive elements) to f32; fp8 values times `scale`, per lane.
template <KvFormat F>
MX8_AVX2 inline __m256 load8(const uint8_t* src, __m256 scale, const float* lut) {
  if constexpr (F == KvFormat::f32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(src));
  } else if constexpr (F == KvFormat::bf16) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  } else {
    // E4M3 by bits: exponent and mantissa moved into f32's fields make 2^-120 times the value (codes
    // with exponent 0 become f32 subnormals, the same ratio), which 2^120 scales back exactly; the
    // NaN code is set apart; then the sign.
    const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
    const __m256i em = _mm256_and_si256(c, _mm256_set1_epi32(0x7F));
    __m256 v = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(em, 20)), _mm256_set1_ps(0x1p120f));
    v = _mm256_blendv_ps(v, _mm256_set1_ps(lut[0x7F]),
                         _mm256_castsi256_ps(_mm256_cmpeq_epi32(em, _mm256_set1_epi32(0x7F))));
    v = _mm256_or_ps(
        v, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24)));
    return _mm256_mul_ps(v, scale);
  }
}

// r[i] = column i of the 8 x 8 matrix whose rows are r[0..7].
MX8_AVX2 inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int k = 0; k < 2; ++k) {
      u[i + k] = _mm256_shuffle_ps(t[i + k], t[i + k + 2], _MM_SHUFFLE(1, 0, 1, 0));
      u[i + k + 2] = _mm256_shuffle_ps(t[i + k], t[i + k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    }
  // u[0..3] hold columns 0, 2, 1, 3 of rows 0-3 (low lanes) and columns 4, 6, 5, 7 (high); u[4..7] of rows
  // 4-7.
  const int order[4] = {0, 2, 1, 3};
  for (int k = 0; k < 4; ++k) {
    r[order[k]] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x20);
    r[order[k] + 4] = _mm256_permute2f128_ps(u[k], u[k + 4], 0x31);
  }
}

// fp8 rows, 8 codes at a time, the fast way where it is exact: a code sign-extended and shifted left
// by 20, masked to the sign and the exponent-mantissa bits, is 2^-120 times its value (codes with
// exponent 0 become f32 subnormals, exactly), so one multiply by 2^120 x scale gives the value x scale,
// rounded once as load8's two steps round it. Exact while 2^120 x scale is finite (UE8M0 codes up to
// 134, scales up to 2^7) and where no code is NaN, which load8 sets apart; rows with a NaN code or a
// larger scale take load8.
struct Fp8Row {
  const uint8_t* codes;
  const uint8_t* scales;  // one per 128 values
  bool any_nan;           // a code of 0x7F or 0xFF in the row's hd values
};
constexpr uint8_t kLargestFoldedScale = 134;

MX8_AVX2 inline bool has_nan_code(const uint8_t* codes, int hd) {
  __m256i top = _mm256_setzero_si256();  // the largest exponent-mantissa bits per byte lane
  int d = 0;
  for (; d + 32 <= hd; d += 32)
    top =
        _mm256_max_epu8(top, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + d)),
                                              _mm256_set1_epi8(0x7F)));
  if (_mm256_movemask_epi8(_mm256_cmpeq_epi8(top, _mm256_set1_epi8(0x7F))) != 0) return true;
  for (; d < hd; ++d)
    if ((codes[d] & 0x7F) == 0x7F) return true;
  return false;
}

MX8_AVX2 inline __m256 load8_fp8(const Fp8Row& row, int d, const float* lut) {
  const uint8_t e = row.scales[d / 128];
  if (row.any_nan || e > kLargestFoldedScale)
    return load8<KvFormat::fp8>(row.codes + d, _mm256_set1_ps(format::ue8m0_to_f32(e)), lut);
  const __m256i bits = _mm256_slli_epi32(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row.codes + d))), 20);
  const __m256 v = _mm256_castsi256_ps(_mm256_and_si256(bits, _mm256_set1_epi32(int(0x87F00000u))));
  return _mm256_mul_ps(v, _mm256_set1_ps(format::ue8m0_to_f32(uint8_t(e + 120))));
}

// The K or V rows of positions [p, p + n) of one key block (n <= kKeyBlock), located with one cursor
// and requested from memory in address order before anything reads them. The loaders read a block
// column by column (k_block) or span by span (pv_cache), an order the hardware prefetchers do not
// follow: asking for every line up front made a decode step at 32768 positions 1.4x faster.
template <KvFormat F>
struct BlockRows {
  const uint8_t* row[kKeyBlock];
  Fp8Row fp8[kKeyBlock];  // fp8 only
};

template <KvFormat F>
MX8_AVX2 void fetch_rows(const AttentionTile& j, const uint8_t* pool, int p, int n, BlockRows<F>* b) {
  AttentionTile::Cursor c = j.cursor(pool, p);
  for (int i = 0; i < n; ++i, c.next()) {
    b->row[i] = c.row();
    for (int o = 0; o < j.hd * int(kElemBytes<F>); o += 64)
      _mm_prefetch(reinterpret_cast<const char*>(b->row[i] + o), _MM_HINT_T0);
    if constexpr (F == KvFormat::fp8) b->fp8[i].scales = c.scales();
  }
  if constexpr (F == KvFormat::fp8)
    for (int i = 0; i < n; ++i) b->fp8[i] = {b->row[i], b->fp8[i].scales, has_nan_code(b->row[i], j.hd)};
}

// Keys p0 .. p0 + 15 into kt, 8 rows of 8 values at a time decoded and transposed; keys outside
// [lo, hi) read a row of zeros instead of the cache. hd a multiple of 8, at most 1024.
template <KvFormat F>
MX8_AVX2 void k_block_fmt(const AttentionTile& j, int p0, int lo, int hi, float* kt) {
  static const uint8_t zeros[1024 * 4 + 8] = {};
  const float* lut = e4m3_table();                                             // for its NaN
  const int a = std::max(lo, p0) - p0, b = std::min(hi, p0 + kKeyBlock) - p0;  // the keys in the cache
  BlockRows<F> in;
  fetch_rows<F>(j, j.k_pool, p0 + a, b - a, &in);
  const uint8_t* rows[kKeyBlock];
  Fp8Row fp8[kKeyBlock];
  for (int i = 0; i < kKeyBlock; ++i) {
    const bool cached = i >= a && i < b;
    rows[i] = cached ? in.row[i - a] : zeros;
    if constexpr (F == KvFormat::fp8) fp8[i] = cached ? in.fp8[i - a] : Fp8Row{zeros, zeros, false};
  }
  for (int h = 0; h < 2; ++h)
    for (int d = 0; d < j.hd; d += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i)
        r[i] = F == KvFormat::fp8 ? load8_fp8(fp8[8 * h + i], d, lut)
                                  : load8<F>(rows[8 * h + i] + d * kElemBytes<F>, __m256{}, lut);
      transpose8(r);
      for (int k = 0; k < 8; ++k) _mm256_storeu_ps(kt + (d + k) * kKeyBlock + 8 * h, r[k]);
    }
}

MX8_AVX2 void k_block_avx2(const AttentionTile& j, int p0, int lo, int hi, float* kt) {
  if (j.hd % 8 != 0 || j.hd > 1024) return k_block_scalar(j, p0, lo, hi, kt);  // the zero row: 1024 values
  switch (j.fmt) {
    case KvFormat::f32:
      return k_block_fmt<KvFormat::f32>(j, p0, lo, hi, kt);
    case KvFormat::bf16:
      return k_block_fmt<KvFormat::bf16>(j, p0, lo, hi, kt);
    case KvFormat::fp8:
      return k_block_fmt<KvFormat::fp8>(j, p0, lo, hi, kt);
  }
}

template <KvFormat F>
MX8_AVX2 void v_rows_fmt(const AttentionTile& j, int p0, int lo, int hi, float* vt) {
  const float* lut = e4m3_table();
  BlockRows<F> v;
  fetch_rows<F>(j, j.v_pool, lo, hi - lo, &v);
  for (int i = 0; i < hi - lo; ++i) {
    float* dst = vt + size_t(lo - p0 + i) * j.hd;
    for (int d = 0; d < j.hd; d += 8)
      _mm256_storeu_ps(dst + d, F == KvFormat::fp8 ? load8_fp8(v.fp8[i], d, lut)
                                                   : load8<F>(v.row[i] + d * kElemBytes<F>, __m256{}, lut));
  }
}

MX8_AVX2 void v_rows_avx2(const AttentionTile& j, int p0, int lo, int hi, float* vt) {
  if (j.hd % 8 != 0) return v_rows_scalar(j, p0, lo, hi, vt);
  switch (j.fmt) {
    case KvFormat::f32:
      return v_rows_fmt<KvFormat::f32>(j, p0, lo, hi, vt);
    case KvFormat::bf16:
      return v_rows_fmt<KvFormat::bf16>(j, p0, lo, hi, vt);
    case KvFormat::fp8:
      return v_rows_fmt<KvFormat::fp8>(j, p0, lo, hi, vt);
  }
}

template <int R>
MX8_AVX2 void qk_rows(const float* const* q, const float* kt, int hd, float scale, float* const* s) {
  __m256 acc[R][2];
  each<R>([&](auto r) MX8_AVX2 { acc[r][0] = acc[r][1] = _mm256_setzero_ps(); });
  for (int d = 0; d < hd; ++d) {
    const __m256 k0 = _mm256_loadu_ps(kt + d * kKeyBlock), k1 = _mm256_loadu_ps(kt + d * kKeyBlock + 8);
    each<R>([&](auto r) MX8_AVX2 {
      const __m256 qd = _mm256_broadcast_ss(q[r] + d);
      acc[r][0] = _mm256_fmadd_ps(qd, k0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(qd, k1, acc[r][1]);
    });
  }
  const __m256 sc = _mm256_set1_ps(scale);
  each<R>([&](auto r) MX8_AVX2 {
    _mm256_storeu_ps(s[r], _mm256_mul_ps(acc[r][0], sc));
    _mm256_storeu_ps(s[r] + 8, _mm256_mul_ps(acc[r][1], sc));
  });
}

MX8_AVX2 void qk_avx2(const float* const* q, int rows, const float* kt, int hd, float scale,
                      float* const* s) {
  switch (rows) {
    case 1:
      return qk_rows<1>(q, kt, hd, scale, s);
    case 2:
      return qk_rows<2>(q, kt, hd, scale, s);
    case 3:
      return qk_rows<3>(q, kt, hd, scale, s);
    default:
      return qk_rows<4>(q, kt, hd, scale, s);
  }
}

// exp_nonpositive (attention_tile.h) on 8 lanes.
MX8_AVX2 inline __m256 exp8(__m256 x) {
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 xc = _mm256_max_ps(_mm256_set1_ps(kExpMin), x);  // max(a, b) = a > b ? a : b
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), xc);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpTaylor[7]);
  for (int i = 6; i >= 0; --i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpTaylor[i]));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_blendv_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), x, nan);
}

MX8_AVX2 void exp_sum_avx2(float* row, int n, float* m, float* z) {
  float mx = row[0];
  int i = 0;
  if (n >= 8) {
    __m256 m = _mm256_loadu_ps(row);
    for (i = 8; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(row + i));
    alignas(32) float l[8];
    _mm256_store_ps(l, m);
    for (float x : l) mx = x > mx ? x : mx;
  } else {
    i = 1;
  }
  for (; i < n; ++i) mx = row[i] > mx ? row[i] : mx;
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + i), vmx));
    _mm256_storeu_ps(row + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  alignas(32) float lane[8];
  _mm256_store_ps(lane, sum);
  if (i < n) {  // the tail through the same vector code, its lanes past n left out of the sums
    alignas(32) float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < n - i; ++k) t[k] = row[i + k] - mx;
    _mm256_store_ps(t, exp8(_mm256_load_ps(t)));
    for (int k = 0; k < n - i; ++k) lane[k] += row[i + k] = t[k];
  }
  *m = mx;
  *z = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// Dimensions [d, d + 8 W) of R rows over the n weighted V rows.
template <int R, int W>
MX8_AVX2 void pv_span(const float* const* w, const float* vt, int n, int hd, float* const* out, int d) {
  __m256 acc[R][W];
  each<R>([&](auto r) MX8_AVX2 {
    each<W>([&](auto c) MX8_AVX2 { acc[r][c] = _mm256_loadu_ps(out[r] + d + 8 * c); });
  });
  for (int i = 0; i < n; ++i) {
    __m256 v[W];
    each<W>([&](auto c) MX8_AVX2 { v[c] = _mm256_loadu_ps(vt + size_t(i) * hd + d + 8 * c); });
    each<R>([&](auto r) MX8_AVX2 {
      const __m256 wr = _mm256_broadcast_ss(w[r] + i);
      each<W>([&](auto c) MX8_AVX2 { acc[r][c] = _mm256_fmadd_ps(wr, v[c], acc[r][c]); });
    });
  }
  each<R>([&](auto r) MX8_AVX2 {
    each<W>([&](auto c) MX8_AVX2 { _mm256_storeu_ps(out[r] + d + 8 * c, acc[r][c]); });
  });
}

template <int R>
MX8_AVX2 void pv_rows(const float* const* w, const float* vt, int n, int hd, float* const* out) {
  int d = 0;
  for (; d + 16 <= hd; d += 16) pv_span<R, 2>(w, vt, n, hd, out, d);
  if (d + 8 <= hd) pv_span<R, 1>(w, vt, n, hd, out, d), d += 8;
  for (; d < hd; ++d)  // heads that are not a multiple of 8
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < n; ++i) out[r][d] = std::fma(w[r][i], vt[size_t(i) * hd + d], out[r][d]);
}

MX8_AVX2 void pv_avx2(const float* const* w, int rows, const float* vt, int n, int hd, float* const* out) {
  switch (rows) {
    case 1:
      return pv_rows<1>(w, vt, n, hd, out);
    case 2:
      return pv_rows<2>(w, vt, n, hd, out);
    case 3:
      return pv_rows<3>(w, vt, n, hd, out);
    default:
      return pv_rows<4>(w, vt, n, hd, out);
  }
}

// pv_span with each V value loaded from the cache where it is used: the same products in the same
// order, without the f32 copy that v_rows writes and pv reads back.
template <KvFormat F, int R>
MX8_AVX2 void pv_cache_span(const float* const* w, const BlockRows<F>& v, int n, float* const* out, int d,
                            const float* lut) {
  __m256 acc[R][2];
  each<R>([&](auto r) MX8_AVX2 {
    each<2>([&](auto c) MX8_AVX2 { acc[r][c] = _mm256_loadu_ps(out[r] + d + 8 * c); });
  });
  for (int i = 0; i < n; ++i) {
    __m256 x[2];
    each<2>([&](auto c) MX8_AVX2 {
      x[c] = F == KvFormat::fp8 ? load8_fp8(v.fp8[i], d + 8 * c, lut)
                                : load8<F>(v.row[i] + (d + 8 * c) * kElemBytes<F>, __m256{}, lut);
    });
    each<R>([&](auto r) MX8_AVX2 {
      const __m256 wr = _mm256_broadcast_ss(w[r] + i);
      each<2>([&](auto c) MX8_AVX2 { acc[r][c] = _mm256_fmadd_ps(wr, x[c], acc[r][c]); });
    });
  }
  each<R>([&](auto r) MX8_AVX2 {
    each<2>([&](auto c) MX8_AVX2 { _mm256_storeu_ps(out[r] + d + 8 * c, acc[r][c]); });
  });
}

template <KvFormat F, int R>
MX8_AVX2 void pv_cache_fmt(const float* const* w, const AttentionTile& j, int p, int n, float* const* out) {
  const float* lut = e4m3_table();
  BlockRows<F> v;
  fetch_rows<F>(j, j.v_pool, p, n, &v);
  for (int d = 0; d < j.hd; d += 16) pv_cache_span<F, R>(w, v, n, out, d, lut);
}

template <KvFormat F>
MX8_AVX2 void pv_cache_rows(const float* const* w, int rows, const AttentionTile& j, int p, int n,
                            float* const* out) {
  switch (rows) {
    case 1:
      return pv_cache_fmt<F, 1>(w, j, p, n, out);
    case 2:
      return pv_cache_fmt<F, 2>(w, j, p, n, out);
    case 3:
      return pv_cache_fmt<F, 3>(w, j, p, n, out);
    default:
      return pv_cache_fmt<F, 4>(w, j, p, n, out);
  }
}

MX8_AVX2 void pv_cache_avx2(const float* const* w, int rows, const AttentionTile& j, int p, int n, float* vt,
                            float* const* out) {
  if (j.hd % 16 != 0) {  // the two-step path, which has the tails
    v_rows_avx2(j, p, p, p + n, vt);
    return pv_avx2(w, rows, vt, n, j.hd, out);
  }
  switch (j.fmt) {
    case KvFormat::f32:
      return pv_cache_rows<KvFormat::f32>(w, rows, j, p, n, out);
    case KvFormat::bf16:
      return pv_cache_rows<KvFormat::bf16>(w, rows, j, p, n, out);
    case KvFormat::fp8:
      return pv_cache_rows<KvFormat::fp8>(w, rows, j, p, n, out);
  }
}

// ---- AVX-512: scores and weighted V rows on 16 lanes (16 keys, or 16 dimensions, a vector) with the
// same operations per lane as above, so the same bits; the key blocks, V rows and exps stay AVX2's.
// Half the instructions per FMA of the 8-lane kernels (one key vector load and one broadcast per 16
// products instead of per 8), which is what a decode step's blocks are bound by.

// each() for MX8_AVX512 functions (a lambda of a wider target is not inlined into a narrower one).
template <int N, class F>
MX8_AVX512 inline void each16(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) MX8_AVX512 {
    (f(std::integral_constant<int, I>{}), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

template <int R>
MX8_AVX512 void qk_rows16(const float* const* q, const float* kt, int hd, float scale, float* const* s) {
  __m512 acc[R];
  each16<R>([&](auto r) MX8_AVX512 { acc[r] = _mm512_setzero_ps(); });
  for (int d = 0; d < hd; ++d) {
    const __m512 k = _mm512_loadu_ps(kt + d * kKeyBlock);
    each16<R>([&](auto r) MX8_AVX512 { acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(q[r][d]), k, acc[r]); });
  }
  const __m512 sc = _mm512_set1_ps(scale);
  each16<R>([&](auto r) MX8_AVX512 { _mm512_storeu_ps(s[r], _mm512_mul_ps(acc[r], sc)); });
}

MX8_AVX512 void qk_avx512(const float* const* q, int rows, const float* kt, int hd, float scale,
                          float* const* s) {
  switch (rows) {
    case 1:
      return qk_rows16<1>(q, kt, hd, scale, s);
    case 2:
      return qk_rows16<2>(q, kt, hd, scale, s);
    case 3:
      return qk_rows16<3>(q, kt, hd, scale, s);
    case 4:
      return qk_rows16<4>(q, kt, hd, scale, s);
    case 5:
      return qk_rows16<5>(q, kt, hd, scale, s);
    case 6:
      return qk_rows16<6>(q, kt, hd, scale, s);
    case 7:
      return qk_rows16<7>(q, kt, hd, scale, s);
    default:
      return qk_rows16<8>(q, kt, hd, scale, s);
  }
}

// 16 values of a V row (d a multiple of 16), as load8 and load8_fp8 make them.
template <KvFormat F>
MX8_AVX512 inline __m512 load16(const BlockRows<F>& v, int i, int d, const float* lut) {
  if constexpr (F == KvFormat::f32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(v.row[i]) + d);
  } else if constexpr (F == KvFormat::bf16) {
    const __m512i w =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.row[i] + 2 * d)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  } else {
    const Fp8Row& row = v.fp8[i];
    const uint8_t e = row.scales[d / 128];
    if (row.any_nan || e > kLargestFoldedScale)
      return _mm512_insertf32x8(_mm512_castps256_ps512(load8_fp8(row, d, lut)), load8_fp8(row, d + 8, lut),
                                1);
    return _mm512_mul_ps(mx8::cpu::detail::e4m3_16(row.codes + d),
                         _mm512_set1_ps(format::ue8m0_to_f32(uint8_t(e + 120))));
  }
}

// Dimensions [d, d + 32) of R rows over the n weighted V rows v (BlockRows) or vt (f32 rows).
template <int R, class Load>
MX8_AVX512 void pv_span16(const float* const* w, int n, float* const* out, int d, Load&& load) {
  __m512 acc[R][2];
  each16<R>([&](auto r) MX8_AVX512 {
    each16<2>([&](auto c) MX8_AVX512 { acc[r][c] = _mm512_loadu_ps(out[r] + d + 16 * c); });
  });
  for (int i = 0; i < n; ++i) {
    __m512 x[2];
    each16<2>([&](auto c) MX8_AVX512 { x[c] = load(i, d + 16 * c); });
    each16<R>([&](auto r) MX8_AVX512 {
      const __m512 wr = _mm512_set1_ps(w[r][i]);
      each16<2>([&](auto c) MX8_AVX512 { acc[r][c] = _mm512_fmadd_ps(wr, x[c], acc[r][c]); });
    });
  }
  each16<R>([&](auto r) MX8_AVX512 {
    each16<2>([&](auto c) MX8_AVX512 { _mm512_storeu_ps(out[r] + d + 16 * c, acc[r][c]); });
  });
}

template <int R>
MX8_AVX512 void pv_rows16(const float* const* w, const float* vt, int n, int hd, float* const* out) {
  for (int d = 0; d < hd; d += 32)
    pv_span16<R>(w, n, out, d,
                 [&](int i, int e) MX8_AVX512 { return _mm512_loadu_ps(vt + size_t(i) * hd + e); });
}

template <KvFormat F, int R>
MX8_AVX512 void pv_cache_rows16(const float* const* w, const AttentionTile& j, int p, int n,
                                float* const* out) {
  const float* lut = e4m3_table();
  BlockRows<F> v;
  fetch_rows<F>(j, j.v_pool, p, n, &v);
  for (int d = 0; d < j.hd; d += 32)
    pv_span16<R>(w, n, out, d, [&](int i, int e) MX8_AVX512 { return load16<F>(v, i, e, lut); });
}

MX8_AVX512 void pv_avx512(const float* const* w, int rows, const float* vt, int n, int hd,
                          float* const* out) {
  if (hd % 32 != 0) {  // AVX2's kernel, which has the tails, 4 rows at a time
    for (int r = 0; r < rows; r += 4) pv_avx2(w + r, std::min(4, rows - r), vt, n, hd, out + r);
    return;
  }
  switch (rows) {
    case 1:
      return pv_rows16<1>(w, vt, n, hd, out);
    case 2:
      return pv_rows16<2>(w, vt, n, hd, out);
    case 3:
      return pv_rows16<3>(w, vt, n, hd, out);
    case 4:
      return pv_rows16<4>(w, vt, n, hd, out);
    case 5:
      return pv_rows16<5>(w, vt, n, hd, out);
    case 6:
      return pv_rows16<6>(w, vt, n, hd, out);
    case 7:
      return pv_rows16<7>(w, vt, n, hd, out);
    default:
      return pv_rows16<8>(w, vt, n, hd, out);
  }
}

template <KvFormat F>
MX8_AVX512 void pv_cache_fmt16(const float* const* w, int rows, const AttentionTile& j, int p, int n,
                               float* const* out) {
  switch (rows) {
    case 1:
      return pv_cache_rows16<F, 1>(w, j, p, n, out);
    case 2:
      return pv_cache_rows16<F, 2>(w, j, p, n, out);
    case 3:
      return pv_cache_rows16<F, 3>(w, j, p, n, out);
    case 4:
      return pv_cache_rows16<F, 4>(w, j, p, n, out);
    case 5:
      return pv_cache_rows16<F, 5>(w, j, p, n, out);
    case 6:
      return pv_cache_rows16<F, 6>(w, j, p, n, out);
    case 7:
      return pv_cache_rows16<F, 7>(w, j, p, n, out);
    default:
      return pv_cache_rows16<F, 8>(w, j, p, n, out);
  }
}

MX8_AVX512 void pv_cache_avx512(const float* const* w, int rows, const AttentionTile& j, int p, int n,
                                float* vt, float* const* out) {
  if (j.hd % 32 != 0) {  // AVX2's kernel, 4 rows at a time
    for (int r = 0; r < rows; r += 4) pv_cache_avx2(w + r, std::min(4, rows - r), j, p, n, vt, out + r);
    return;
  }
  switch (j.fmt) {
    case KvFormat::f32:
      return pv_cache_fmt16<KvFormat::f32>(w, rows, j, p, n, out);
    case KvFormat::bf16:
      return pv_cache_fmt16<KvFormat::bf16>(w, rows, j, p, n, out);
    case KvFormat::fp8:
      return pv_cache_fmt16<KvFormat::fp8>(w, rows, j, p, n, out);
  }
}

}  // namespace

const TileKernels kAvx2TileKernels = {k_block_avx2, v_rows_avx2, qk_avx2,
                                      exp_sum_avx2, pv_avx2,     pv_cache_avx2};
// 8 rows: 8 independent FMA chains (two FMA units of 4 cycles' latency), 16 accumulators of 32 registers.
const TileKernels kAvx512TileKernels = {k_block_avx2, v_rows_avx2,     qk_avx512, exp_sum_avx2,
                                        pv_avx512,    pv_cache_avx512, 8};

}  // namespace mx8::backend::cpu_impl

#endif  // __x86_64__
