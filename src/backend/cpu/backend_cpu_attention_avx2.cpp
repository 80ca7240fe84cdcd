// AVX2 + FMA attention kernels (attention_tile.h): scores with one key per lane (16 keys in two
// vectors, up to 4 query rows: 8 accumulators, one FMA per row, key pair and dimension), weighted V
// rows with one dimension per lane (16 dimensions, up to 4 rows). Every lane does the scalar
// kernels' operations in their order, so the results are the same bits.
#if defined(__x86_64__)

#include <algorithm>
#include <cmath>

#include "backend/cpu/attention_x86.h"

namespace mx8::backend::cpu_impl::x86 {
namespace {

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

}  // namespace

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
    if constexpr (F == KvFormat::fp8) fp8[i] = cached ? in.fp8[i - a] : Fp8Row{zeros, zeros};
  }
  bool fast = false;  // fp8 rows the fast way: a row's factor once per 128 values
  if constexpr (F == KvFormat::fp8)
    if (!in.exact) {
      fast = true;
      for (int b0 = 0; b0 < j.hd; b0 += 128) {
        float factor[kKeyBlock];
        for (int i = 0; i < kKeyBlock; ++i) factor[i] = fold(fp8[i], b0);
        for (int h = 0; h < 2; ++h)
          for (int d = b0; d < std::min(b0 + 128, j.hd); d += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; ++i)
              r[i] = fp8_fast8(rows[8 * h + i] + d, _mm256_broadcast_ss(&factor[8 * h + i]));
            transpose8(r);
            for (int k = 0; k < 8; ++k) _mm256_storeu_ps(kt + (d + k) * kKeyBlock + 8 * h, r[k]);
          }
      }
    }
  if (!fast) {
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
  if constexpr (F == KvFormat::fp8)
    for_nan_codes(in.row, b - a, j.hd, [&](int i, int d) { kt[d * kKeyBlock + a + i] = kNan; });
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
  if constexpr (F == KvFormat::fp8)
    for_nan_codes(v.row, hi - lo, j.hd, [&](int i, int d) { vt[size_t(lo - p0 + i) * j.hd + d] = kNan; });
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
  with_rows<4>(rows, [&](auto r) MX8_AVX2 { qk_rows<r>(q, kt, hd, scale, s); });
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
  with_rows<4>(rows, [&](auto r) MX8_AVX2 { pv_rows<r>(w, vt, n, hd, out); });
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
  if constexpr (F == KvFormat::fp8)
    for_nan_codes(v.row, n, j.hd, [&](int, int d) {
      for (int r = 0; r < R; ++r) out[r][d] = kNan;
    });
}

template <KvFormat F>
MX8_AVX2 void pv_cache_rows(const float* const* w, int rows, const AttentionTile& j, int p, int n,
                            float* const* out) {
  with_rows<4>(rows, [&](auto r) MX8_AVX2 { pv_cache_fmt<F, r>(w, j, p, n, out); });
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

}  // namespace mx8::backend::cpu_impl::x86

namespace mx8::backend::cpu_impl {

const TileKernels kAvx2TileKernels = {x86::k_block_avx2, x86::v_rows_avx2, x86::qk_avx2,
                                      x86::exp_sum_avx2, x86::pv_avx2,     x86::pv_cache_avx2};

}  // namespace mx8::backend::cpu_impl

#endif  // __x86_64__
