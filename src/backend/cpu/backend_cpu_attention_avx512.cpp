// AVX-512 attention kernels (attention_tile.h): the scores and weighted V rows on 16 lanes (16 keys,
// or 16 dimensions, a vector), 8 query rows a call, and fp8 key blocks 16 values at a time, with the
// same operations per lane as the AVX2 kernels, so the same bits; the other key blocks, the V rows
// and the exps are AVX2's (attention_x86.h).
#if defined(__x86_64__)

#include <algorithm>

#include "backend/cpu/attention_x86.h"
#include "backend/cpu/avx512_common.h"

namespace mx8::backend::cpu_impl::x86 {
namespace {

// Half the instructions per FMA of the 8-lane kernels: one key-vector load and one broadcast per 16
// products instead of per 8.

// each() (attention_x86.h) for MX8_AVX512 functions: a lambda of a wider target is not inlined into a
// function of a narrower one.
template <int N, class F>
MX8_AVX512 inline void each16(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) MX8_AVX512 {
    (f(std::integral_constant<int, I>{}), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

// with_rows() (attention_x86.h) for MX8_AVX512 functions.
template <int N, class F>
MX8_AVX512 inline void with_rows16(int rows, F&& f) {
  each16<N>([&](auto i) MX8_AVX512 {
    if (rows == i + 1) f(std::integral_constant<int, decltype(i)::value + 1>());
  });
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
  with_rows16<8>(rows, [&](auto r) MX8_AVX512 { qk_rows16<r>(q, kt, hd, scale, s); });
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
    if (row.scales[d / 128] > kLargestFoldedScale)
      return _mm512_insertf32x8(_mm512_castps256_ps512(load8_fp8(row, d, lut)), load8_fp8(row, d + 8, lut),
                                1);
    return _mm512_mul_ps(mx8::cpu::detail::e4m3_16(row.codes + d), _mm512_set1_ps(fold(row, d)));
  }
}

// for_nan_codes (attention_x86.h), its test for the whole block 64 bytes at a time.
template <class F>
MX8_AVX512 inline void for_nan_codes16(const uint8_t* const* rows, int n, int hd, F&& f) {
  if (hd % 64 == 0) {
    __m512i top = _mm512_setzero_si512();
    for (int i = 0; i < n; ++i)
      for (int d = 0; d < hd; d += 64)
        top = _mm512_max_epu8(top, _mm512_and_si512(_mm512_loadu_si512(rows[i] + d), _mm512_set1_epi8(0x7F)));
    if (_mm512_cmpeq_epi8_mask(top, _mm512_set1_epi8(0x7F)) == 0) return;
  }
  for_nan_codes(rows, n, hd, f);
}

// r[k] becomes column k of the 16 x 16 matrix whose rows were r[0..15].
MX8_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {  // pairs of rows interleaved within each 128-bit lane
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // u[g + c], lane l: rows g..g+3 of column c + 4 l
    const __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 1]);
    const __m512d c = _mm512_castps_pd(t[g + 2]), e = _mm512_castps_pd(t[g + 3]);
    u[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    u[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 p01 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 q01 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 p23 = _mm512_shuffle_f32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512 q23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
    r[c] = _mm512_shuffle_f32x4(p01, q01, _MM_SHUFFLE(2, 0, 2, 0));
    r[c + 4] = _mm512_shuffle_f32x4(p01, q01, _MM_SHUFFLE(3, 1, 3, 1));
    r[c + 8] = _mm512_shuffle_f32x4(p23, q23, _MM_SHUFFLE(2, 0, 2, 0));
    r[c + 12] = _mm512_shuffle_f32x4(p23, q23, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// An fp8 key block the fast way 16 values a row at a time (AVX2's k_block decodes 8 and transposes
// 8 x 8): the same values, so the same kt. Other formats, blocks that need the exact decode and head
// sizes that are not a multiple of 16 take AVX2's.
MX8_AVX512 void k_block_avx512(const AttentionTile& j, int p0, int lo, int hi, float* kt) {
  if (j.fmt != KvFormat::fp8 || j.hd % 16 != 0 || j.hd > 1024) return k_block_avx2(j, p0, lo, hi, kt);
  static const uint8_t zeros[1024 + 16] = {};
  const int a = std::max(lo, p0) - p0, b = std::min(hi, p0 + kKeyBlock) - p0;  // the keys in the cache
  BlockRows<KvFormat::fp8> in;
  fetch_rows(j, j.k_pool, p0 + a, b - a, &in);
  if (in.exact) return k_block_avx2(j, p0, lo, hi, kt);
  Fp8Row rows[kKeyBlock];
  for (int i = 0; i < kKeyBlock; ++i) rows[i] = i >= a && i < b ? in.fp8[i - a] : Fp8Row{zeros, zeros};
  for (int b0 = 0; b0 < j.hd; b0 += 128) {
    float factor[kKeyBlock];
    for (int i = 0; i < kKeyBlock; ++i) factor[i] = fold(rows[i], b0);
    for (int d = b0; d < std::min(b0 + 128, j.hd); d += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i)
        r[i] = _mm512_mul_ps(mx8::cpu::detail::e4m3_16(rows[i].codes + d), _mm512_set1_ps(factor[i]));
      transpose16(r);
      for (int k = 0; k < 16; ++k) _mm512_storeu_ps(kt + (d + k) * kKeyBlock, r[k]);
    }
  }
  for_nan_codes16(in.row, b - a, j.hd, [&](int i, int d) { kt[d * kKeyBlock + a + i] = kNan; });
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
  if constexpr (F == KvFormat::fp8)
    for_nan_codes16(v.row, n, j.hd, [&](int, int d) {
      for (int r = 0; r < R; ++r) out[r][d] = kNan;
    });
}

MX8_AVX512 void pv_avx512(const float* const* w, int rows, const float* vt, int n, int hd,
                          float* const* out) {
  if (hd % 32 != 0) {  // AVX2's kernel, which has the tails, 4 rows at a time
    for (int r = 0; r < rows; r += 4) pv_avx2(w + r, std::min(4, rows - r), vt, n, hd, out + r);
    return;
  }
  with_rows16<8>(rows, [&](auto r) MX8_AVX512 { pv_rows16<r>(w, vt, n, hd, out); });
}

template <KvFormat F>
MX8_AVX512 void pv_cache_fmt16(const float* const* w, int rows, const AttentionTile& j, int p, int n,
                               float* const* out) {
  with_rows16<8>(rows, [&](auto r) MX8_AVX512 { pv_cache_rows16<F, r>(w, j, p, n, out); });
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
}  // namespace mx8::backend::cpu_impl::x86

namespace mx8::backend::cpu_impl {

// 8 rows: 8 independent FMA chains (two FMA units of 4 cycles' latency), 16 accumulators of 32 registers.
const TileKernels kAvx512TileKernels = {x86::k_block_avx512,
                                        x86::v_rows_avx2,
                                        x86::qk_avx512,
                                        x86::exp_sum_avx2,
                                        x86::pv_avx512,
                                        x86::pv_cache_avx512,
                                        8};

}  // namespace mx8::backend::cpu_impl

#endif  // __x86_64__
