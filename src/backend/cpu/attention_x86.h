// What the x86 attention kernels share (attention_tile.h has the arithmetic they implement): the loaders
// of K/V rows, the fetch of a key block's rows, and the AVX2 kernels that the AVX-512 set reuses.
// Functions carry target attributes instead of the files being built with -mavx2 (ODR: see
// gemv_avx2.cpp); the inline ones here are defined alike in every file that includes this.
#pragma once
#if defined(__x86_64__)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>

#include "backend/cpu/attention_tile.h"
#include "backend/cpu/backend_cpu.h"
#include "mx8/format/ue8m0.h"

#define MX8_AVX2 __attribute__((target("avx2,fma")))

namespace mx8::backend::cpu_impl::x86 {

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

// f(std::integral_constant<int, rows>()) for 1 <= rows <= N: the row count as a template argument.
template <int N, class F>
MX8_AVX2 inline void with_rows(int rows, F&& f) {
  each<N>([&](auto i) MX8_AVX2 {
    if (rows == i + 1) f(std::integral_constant<int, decltype(i)::value + 1>());
  });
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

// fp8 rows, 8 codes at a time, the fast way where it is exact: a code sign-extended and shifted left
// by 20, masked to the sign and the exponent-mantissa bits, is 2^-120 times its value (codes with
// exponent 0 become f32 subnormals, exactly), so one multiply by 2^120 x scale gives the value x scale,
// rounded once as load8's two steps round it. Exact while 2^120 x scale is finite (UE8M0 codes up to
// 134, scales up to 2^7); rows with a larger scale take load8. The NaN codes (0x7F, 0xFF) come out as
// +-480 x scale on this path: the kernels set what those values became to NaN afterwards
// (for_nan_codes), which costs less than looking for them before the rows are in the cache.
struct Fp8Row {
  const uint8_t* codes;
  const uint8_t* scales;  // one per 128 values
};
constexpr uint8_t kLargestFoldedScale = 134;
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

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

// f(i, d) for every NaN code, at dimension d of row i of rows[0, n). Called once a kernel has read the
// rows (they are in L1 then): scanning them before, as they arrive from memory, made an fp8 decode step
// ~10% slower. A NaN code's dimension of a key row makes the key's scores NaN, of a V row that
// dimension of every output that weighs it, whatever the weight: the kernels set those to kNan.
template <class F>
MX8_AVX2 inline void for_nan_codes(const uint8_t* const* rows, int n, int hd, F&& f) {
  if (hd % 32 == 0) {  // the common case, no NaN code in the block, with one test for all rows
    __m256i top = _mm256_setzero_si256();
    for (int i = 0; i < n; ++i)
      for (int d = 0; d < hd; d += 32)
        top = _mm256_max_epu8(
            top, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + d)),
                                  _mm256_set1_epi8(0x7F)));
    if (_mm256_movemask_epi8(_mm256_cmpeq_epi8(top, _mm256_set1_epi8(0x7F))) == 0) return;
  }
  for (int i = 0; i < n; ++i)
    if (has_nan_code(rows[i], hd))
      for (int d = 0; d < hd; ++d)
        if ((rows[i][d] & 0x7F) == 0x7F) f(i, d);
}

// The fast way's factor for the row's values in the 128 that hold d: 2^120 x their scale.
MX8_AVX2 inline float fold(const Fp8Row& row, int d) {
  return format::ue8m0_to_f32(uint8_t(row.scales[d / 128] + 120));
}

// 8 codes the fast way, times `factor` (fold()).
MX8_AVX2 inline __m256 fp8_fast8(const uint8_t* codes, __m256 factor) {
  const __m256i bits =
      _mm256_slli_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes))), 20);
  return _mm256_mul_ps(_mm256_castsi256_ps(_mm256_and_si256(bits, _mm256_set1_epi32(int(0x87F00000u)))),
                       factor);
}

MX8_AVX2 inline __m256 load8_fp8(const Fp8Row& row, int d, const float* lut) {
  const uint8_t e = row.scales[d / 128];
  if (e > kLargestFoldedScale)
    return load8<KvFormat::fp8>(row.codes + d, _mm256_set1_ps(format::ue8m0_to_f32(e)), lut);
  return fp8_fast8(row.codes + d, _mm256_set1_ps(fold(row, d)));
}

// The K or V rows of positions [p, p + n) of one key block (n <= kKeyBlock), located with one cursor
// and requested from memory in address order before anything reads them. The loaders read a block
// column by column (k_block) or span by span (pv_cache), an order the hardware prefetchers do not
// follow: asking for every line up front made a decode step at 32768 positions 1.4x faster.
template <KvFormat F>
struct BlockRows {
  const uint8_t* row[kKeyBlock];
  Fp8Row fp8[kKeyBlock];  // fp8 only
  bool exact = false;     // fp8: some row takes load8's path (a scale past 2^7)
};

template <KvFormat F>
MX8_AVX2 void fetch_rows(const AttentionTile& j, const uint8_t* pool, int p, int n, BlockRows<F>* b) {
  AttentionTile::Cursor c = j.cursor(pool, p);
  // fp8: the line of scales of the first row requested first, since the scales are read first (a
  // block within one page has all its scales in that line).
  if constexpr (F == KvFormat::fp8)
    if (n > 0) _mm_prefetch(reinterpret_cast<const char*>(c.scales()), _MM_HINT_T0);
  for (int i = 0; i < n; ++i, c.next()) {
    b->row[i] = c.row();
    for (int o = 0; o < j.hd * int(kElemBytes<F>); o += 64)
      _mm_prefetch(reinterpret_cast<const char*>(b->row[i] + o), _MM_HINT_T0);
    if constexpr (F == KvFormat::fp8) b->fp8[i].scales = c.scales();
  }
  if constexpr (F == KvFormat::fp8)
    for (int i = 0; i < n; ++i) {
      b->fp8[i].codes = b->row[i];
      for (int s = 0; s < (j.hd + 127) / 128; ++s)
        b->exact = b->exact || b->fp8[i].scales[s] > kLargestFoldedScale;
    }
}

// The AVX2 kernels (backend_cpu_attention_avx2.cpp), as TileKernels takes them.
MX8_AVX2 void k_block_avx2(const AttentionTile& j, int p0, int lo, int hi, float* kt);
MX8_AVX2 void v_rows_avx2(const AttentionTile& j, int p0, int lo, int hi, float* vt);
MX8_AVX2 void exp_sum_avx2(float* row, int n, float* m, float* z);
MX8_AVX2 void pv_avx2(const float* const* w, int rows, const float* vt, int n, int hd, float* const* out);
MX8_AVX2 void pv_cache_avx2(const float* const* w, int rows, const AttentionTile& j, int p, int n, float* vt,
                            float* const* out);

}  // namespace mx8::backend::cpu_impl::x86

#endif  // __x86_64__
