// AVX-512 GEMV kernels for E4M3 weights at M = 1 (the decode case) and M = 2..16 (batched decode);
// every other case goes to the AVX2 kernels, which AVX-512 machines also run.
//
// Decode without F16C: an E4M3 byte S.EEEE.MMM placed at bits 31 and 26..20 of an f32 (sign-extend
// the byte to 32 bits, shift left by 20, keep bits 31 and 26..20) is exactly the E4M3 value times
// 2^-120 -- the exponent field EEEE with bias 127 instead of 7, the 3 mantissa bits on top, and E4M3
// subnormals becoming f32 subnormals with the same relative spacing. Three integer ops per 16
// weights, no conversion instruction: on Zen 4 this ran ~25% faster than the F16C decode at 512 bits
// (21-22 vs 17.5 G weights/s per core, weights in cache). The 2^-120 would push products of small
// weights and activations into f32 subnormals, so the dispatcher pre-scales the activation panel by
// an exact power of two 2^a that puts max|x| near 2^100 (products then stay normal unless they are
// ~2^-100 below the largest one), and the result is multiplied by 2^(120 - a) at the end. Every
// scaling is by a power of two, hence exact; the rounding is the same as the AVX2 kernel's up to
// the order of the sums. The NaN code 0x7F decodes to 480 here too (gemv.h). Rows of a batch are
// pre-scaled each by its own power of two.
//
// M = 2..16: two weight rows against up to four rows of x at a time (8 block sums and 8 totals in
// registers, 22 of the 32), the two weight rows decoded again for each group of four x rows while
// they are in L1. The AVX2 kernels decode W to f32 first, into registers (M <= 4) or an L1 tile.
#if defined(__x86_64__)

#include <algorithm>
#include <cstring>

#include "backend/cpu/avx512_common.h"
#include "backend/cpu/gemv_kernels.h"
#include "mx8/format/common.h"

namespace mx8::cpu::detail {
namespace {

// Rows [i0, i0 + MT) of x against weight rows [n, n + R): per 32 columns two decodes per weight row
// and 2 R MT FMAs into one sum per scale block, then one FMA per block for the scale. `prefetch`:
// the same columns of the next R weight rows into L2 (the decode keeps the core busy enough that the
// hardware prefetcher alone left DRAM latency exposed at M = 1); the first group of x rows issues it.
template <int R, int MT>
MX8_AVX512 void e4m3_rows_mt(const XPanel& x, int64_t i0, const Fp8Operand& w, float* y, int64_t n,
                             bool prefetch) {
  const Fp8RowGroup<R> g(w, n);
  const float* xr[MT];
  for (int i = 0; i < MT; ++i) xr[i] = x.data + (i0 + i) * x.stride;
  __m512 total[MT][R];
  for (int i = 0; i < MT; ++i)
    for (int r = 0; r < R; ++r) total[i][r] = _mm512_setzero_ps();
  for (int64_t kb = 0, k0 = 0; k0 < w.k; ++kb, k0 += w.block_cols) {
    const int64_t k1 = std::min(k0 + w.block_cols, w.k);
    __m512 acc[MT][R];
    for (int i = 0; i < MT; ++i)
      for (int r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; k += 32) {
      __m512 w0[R], w1[R];
      for (int r = 0; r < R; ++r) {
        if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(g.rows[r] + R * w.k + k), _MM_HINT_T1);
        const uint8_t* p = g.codes(r, k);
        w0[r] = e4m3_16(p);
        w1[r] = e4m3_16(p + 16);
      }
      for (int i = 0; i < MT; ++i) {
        const __m512 x0 = _mm512_load_ps(xr[i] + k), x1 = _mm512_load_ps(xr[i] + k + 16);
        for (int r = 0; r < R; ++r) {
          acc[i][r] = _mm512_fmadd_ps(w0[r], x0, acc[i][r]);
          acc[i][r] = _mm512_fmadd_ps(w1[r], x1, acc[i][r]);
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m512 s = _mm512_set1_ps(g.scale[r][kb]);
      for (int i = 0; i < MT; ++i) total[i][r] = _mm512_fmadd_ps(acc[i][r], s, total[i][r]);
    }
  }
  for (int i = 0; i < MT; ++i) {
    // y = sum * 2^(120 - a), with 120 - a in [0, 140]: two exact power-of-two factors.
    const int e = 120 - x.pow2[i0 + i], e1 = std::min(e, 100);
    const float f1 = format::f32_pow2(e1), f2 = format::f32_pow2(e - e1);
    for (int r = 0; r < R; ++r) y[(i0 + i) * w.n + n + r] = _mm512_reduce_add_ps(total[i][r]) * f1 * f2;
  }
}

template <int R>
MX8_AVX512 void e4m3_rows_batch(const XPanel& x, const Fp8Operand& w, float* y, int64_t n) {
  for (int64_t i0 = 0; i0 < x.m; i0 += 4) {
    const bool prefetch = i0 == 0;
    switch (std::min<int64_t>(4, x.m - i0)) {
      case 4:
        e4m3_rows_mt<R, 4>(x, i0, w, y, n, prefetch);
        break;
      case 3:
        e4m3_rows_mt<R, 3>(x, i0, w, y, n, prefetch);
        break;
      case 2:
        e4m3_rows_mt<R, 2>(x, i0, w, y, n, prefetch);
        break;
      default:
        e4m3_rows_mt<R, 1>(x, i0, w, y, n, prefetch);
    }
  }
}

}  // namespace

int prescale_panel_for_avx512(float* data, int64_t count) {
  uint32_t max_bits = 0;
  for (int64_t i = 0; i < count; ++i) max_bits = std::max(max_bits, format::f32_bits(data[i]) & 0x7FFFFFFFu);
  if (max_bits == 0 || max_bits >= 0x7F800000u) return 0;  // all zero, or Inf/NaN to propagate as is
  const int e = int(max_bits >> 23) - 127;                 // -127 for a subnormal max
  const int a = std::clamp(100 - e, -20, 120);
  const float s = format::f32_pow2(a);
  for (int64_t i = 0; i < count; ++i) data[i] *= s;
  return a;
}

void gemv_fp8_rows_avx512(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  if (w.e5m2 || x.m > kPrescaledRows) return gemv_fp8_rows_avx2(x, w, y, n0, n1);
  // One row of x streams 4 weight rows at a time; a batch, 2 (against groups of 4 rows of x).
  int64_t n = n0;
  if (x.m == 1) {
    for (; n + 4 <= n1; n += 4) e4m3_rows_mt<4, 1>(x, 0, w, y, n, true);
  } else {
    for (; n + 2 <= n1; n += 2) e4m3_rows_batch<2>(x, w, y, n);
  }
  for (; n < n1; ++n) e4m3_rows_batch<1>(x, w, y, n);
}

}  // namespace mx8::cpu::detail

#endif  // __x86_64__
