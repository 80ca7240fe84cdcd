// AVX-512 attention kernels (attention_tile.h): the scores and weighted V rows on 16 lanes (16 keys,
// or 16 dimensions, a vector), 8 query rows a call, with the same operations per lane as the AVX2
// kernels, so the same bits; the key blocks, V rows and exps are AVX2's (attention_x86.h).
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
const TileKernels kAvx512TileKernels = {x86::k_block_avx2,
                                        x86::v_rows_avx2,
                                        x86::qk_avx512,
                                        x86::exp_sum_avx2,
                                        x86::pv_avx512,
                                        x86::pv_cache_avx512,
                                        8};

}  // namespace mx8::backend::cpu_impl

#endif  // __x86_64__
