// NEON (AArch64 Advanced SIMD) GEMV kernels.
//
// FP8 decode as on AVX2 (gemv_avx2.cpp): the f16 shift of neon_fp8.h, widened by FCVTL, which every
// 64-bit ARM core has. The E4M3 NaN code 0x7F reads as 480, as on AVX2 (gemv.h).
//
// M = 1: four weight rows at a time, one f32 accumulator per row per scale block, the block's scale
// applied once per block (an FMA into the row total). M > 1: a 4-row x 256-column tile of weights is
// decoded with its scales into an L1 scratch once and a register-blocked kernel runs it against pairs
// of activation rows, so the decode is shared by all M rows.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/gemv_kernels.h"
#include "backend/cpu/neon_fp8.h"
#include "mx8/format/element.h"

namespace mx8::cpu::detail {
namespace {

// 16 codes -> 16 f32 in order (E4M3 values times 2^-8).
template <bool E4M3>
inline void decode16(uint8x16_t c, float32x4_t v[4]) {
  float16x8_t f[2];
  fp8x16_as_f16<E4M3, false>(c, f);
  for (int i = 0; i < 2; ++i)
    v[2 * i] = vcvt_f32_f16(vget_low_f16(f[i])), v[2 * i + 1] = vcvt_high_f32_f16(f[i]);
}

template <bool E4M3>
constexpr float decode_factor() {
  return E4M3 ? 256.f : 1.f;
}

// ---- FP8, M = 1: R weight rows at once, 32 columns a step (block_cols is a multiple of 32) ----
template <bool E4M3, int R>
void fp8_rows_m1(const float* xr, const Fp8Operand& w, float* y, int64_t n) {
  const Fp8RowGroup<R> g(w, n);
  float32x4_t total[R];
  for (int r = 0; r < R; ++r) total[r] = vdupq_n_f32(0.f);
  for (int64_t kb = 0, k0 = 0; k0 < w.k; ++kb, k0 += w.block_cols) {
    const int64_t k1 = std::min(k0 + w.block_cols, w.k);
    float32x4_t acc[R];
    for (int r = 0; r < R; ++r) acc[r] = vdupq_n_f32(0.f);
    for (int64_t k = k0; k < k1; k += 32) {
      float32x4_t xv[8];
      for (int q = 0; q < 8; ++q) xv[q] = vld1q_f32(xr + k + 4 * q);
      for (int r = 0; r < R; ++r) {
        const uint8_t* p = g.codes(r, k);
        float32x4_t v[8];
        decode16<E4M3>(vld1q_u8(p), v);
        decode16<E4M3>(vld1q_u8(p + 16), v + 4);
        for (int q = 0; q < 8; ++q) acc[r] = vfmaq_f32(acc[r], v[q], xv[q]);
      }
    }
    for (int r = 0; r < R; ++r) total[r] = vfmaq_n_f32(total[r], acc[r], g.scale[r][kb]);
  }
  for (int r = 0; r < R; ++r) y[n + r] = vaddvq_f32(total[r]) * decode_factor<E4M3>();
}

// ---- M > 1: decode a tile to f32 once, then a register-blocked kernel over activation rows ----
constexpr int kTileRows = 4;
constexpr int64_t kTileCols = 256;  // 4 x 256 f32 = 4 KiB of L1

// acc[i][r] += sum over kk < kc of ws[r][kk] * x[i0 + i][k0 + kk] for i < ni (ni <= 16).
void tile_kernel(const float (*ws)[kTileCols], const XPanel& x, int64_t i0, int64_t ni, int64_t k0,
                 int64_t kc, float32x4_t (*acc)[kTileRows]) {
  int64_t i = 0;
  for (; i + 2 <= ni; i += 2) {
    const float* x0 = x.data + (i0 + i) * x.stride + k0;
    const float* x1 = x0 + x.stride;
    float32x4_t a0[kTileRows], a1[kTileRows];
    for (int r = 0; r < kTileRows; ++r) a0[r] = acc[i][r], a1[r] = acc[i + 1][r];
    for (int64_t kk = 0; kk < kc; kk += 4) {
      const float32x4_t xa = vld1q_f32(x0 + kk), xb = vld1q_f32(x1 + kk);
      for (int r = 0; r < kTileRows; ++r) {
        const float32x4_t wv = vld1q_f32(ws[r] + kk);
        a0[r] = vfmaq_f32(a0[r], wv, xa);
        a1[r] = vfmaq_f32(a1[r], wv, xb);
      }
    }
    for (int r = 0; r < kTileRows; ++r) acc[i][r] = a0[r], acc[i + 1][r] = a1[r];
  }
  if (i < ni) {
    const float* x0 = x.data + (i0 + i) * x.stride + k0;
    for (int64_t kk = 0; kk < kc; kk += 4) {
      const float32x4_t xa = vld1q_f32(x0 + kk);
      for (int r = 0; r < kTileRows; ++r) acc[i][r] = vfmaq_f32(acc[i][r], vld1q_f32(ws[r] + kk), xa);
    }
  }
}

// The M > 1 product for weight rows [n, n + nr) (nr <= 4); `fill(r, k0, kc, dst)` writes kc (a
// multiple of 32) f32 weights of tile row r from column k0 on, zeros past K.
template <class Fill>
void tiled_rows(const XPanel& x, int64_t n_total, float* y, int64_t n, int nr, Fill&& fill) {
  alignas(64) float ws[kTileRows][kTileCols];
  float32x4_t acc[16][kTileRows];
  for (int r = nr; r < kTileRows; ++r) std::memset(ws[r], 0, sizeof ws[r]);
  for (int64_t i0 = 0; i0 < x.m; i0 += 16) {
    const int64_t ni = std::min<int64_t>(16, x.m - i0);
    for (int64_t i = 0; i < ni; ++i)
      for (int r = 0; r < kTileRows; ++r) acc[i][r] = vdupq_n_f32(0.f);
    for (int64_t k0 = 0; k0 < x.stride; k0 += kTileCols) {
      const int64_t kc = std::min(kTileCols, x.stride - k0);
      for (int r = 0; r < nr; ++r) fill(r, k0, kc, ws[r]);
      tile_kernel(ws, x, i0, ni, k0, kc, acc);
    }
    for (int64_t i = 0; i < ni; ++i)
      for (int r = 0; r < nr; ++r) y[(i0 + i) * n_total + n + r] = vaddvq_f32(acc[i][r]);
  }
}

template <bool E4M3>
void fp8_fill(const Fp8Operand& w, int64_t row, int64_t k0, int64_t kc, float* dst) {
  const uint8_t* codes = w.codes + row * w.k;
  const Fp8Operand::ScaleRow scale = w.row(row);
  // k0, kc and block_cols are multiples of 32: track the block index without dividing.
  int64_t kb = k0 / w.block_cols, next_block = (kb + 1) * w.block_cols;
  for (int64_t kk = 0; kk < kc; kk += 32) {
    const int64_t k = k0 + kk;
    alignas(32) uint8_t tail[32];
    const uint8_t* p = codes32(codes, w.k, k, tail);
    if (k >= next_block) ++kb, next_block += w.block_cols;
    float32x4_t v[8];
    decode16<E4M3>(vld1q_u8(p), v);
    decode16<E4M3>(vld1q_u8(p + 16), v + 4);
    // (value * 2^-8) * 2^8 is exact; the scale multiply is then the single rounding of value * scale.
    const float s = k < w.k ? scale[kb] : 0.f;
    for (int q = 0; q < 8; ++q)
      vst1q_f32(dst + kk + 4 * q, vmulq_n_f32(vmulq_n_f32(v[q], decode_factor<E4M3>()), s));
  }
}

template <bool E4M3>
void fp8_rows(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  if (x.m == 1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) fp8_rows_m1<E4M3, 4>(x.data, w, y, n);
    for (; n < n1; ++n) fp8_rows_m1<E4M3, 1>(x.data, w, y, n);
    return;
  }
  for (int64_t n = n0; n < n1; n += kTileRows) {
    const int nr = int(std::min<int64_t>(kTileRows, n1 - n));
    tiled_rows(x, w.n, y, n, nr,
               [&](int r, int64_t k0, int64_t kc, float* dst) { fp8_fill<E4M3>(w, n + r, k0, kc, dst); });
  }
}

// ---- bf16 and f32 ----
inline float32x4_t bf16x4(const uint16_t* p) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

template <int R>
void bf16_rows_m1(const float* xr, const uint16_t* w, int64_t k, float* y, int64_t n) {
  float32x4_t acc[R];
  for (int r = 0; r < R; ++r) acc[r] = vdupq_n_f32(0.f);
  int64_t c = 0;
  for (; c + 4 <= k; c += 4) {
    const float32x4_t xv = vld1q_f32(xr + c);
    for (int r = 0; r < R; ++r) acc[r] = vfmaq_f32(acc[r], bf16x4(w + (n + r) * k + c), xv);
  }
  for (int r = 0; r < R; ++r) {
    float s = vaddvq_f32(acc[r]);
    for (int64_t t = c; t < k; ++t) s += format::bf16_to_f32(w[(n + r) * k + t]) * xr[t];
    y[n + r] = s;
  }
}

template <int R>
void f32_rows_m1(const float* xr, const float* w, int64_t k, float* y, int64_t n) {
  float32x4_t acc[R];
  for (int r = 0; r < R; ++r) acc[r] = vdupq_n_f32(0.f);
  int64_t c = 0;
  for (; c + 4 <= k; c += 4) {
    const float32x4_t xv = vld1q_f32(xr + c);
    for (int r = 0; r < R; ++r) acc[r] = vfmaq_f32(acc[r], vld1q_f32(w + (n + r) * k + c), xv);
  }
  for (int r = 0; r < R; ++r) {
    float s = vaddvq_f32(acc[r]);
    for (int64_t t = c; t < k; ++t) s += w[(n + r) * k + t] * xr[t];
    y[n + r] = s;
  }
}

void bf16_fill(const uint16_t* row, int64_t k, int64_t k0, int64_t kc, float* dst) {
  int64_t kk = 0;
  for (; kk < kc && k0 + kk + 4 <= k; kk += 4) vst1q_f32(dst + kk, bf16x4(row + k0 + kk));
  for (; kk < kc; ++kk) dst[kk] = k0 + kk < k ? format::bf16_to_f32(row[k0 + kk]) : 0.f;
}

// M = 1 in groups of four rows, M > 1 on the tile kernel.
template <class Row1, class Fill>
void dense_rows(const XPanel& x, int64_t n, float* y, int64_t n0, int64_t n1, Row1&& row1, Fill&& fill) {
  if (x.m == 1) {
    int64_t r = n0;
    for (; r + 4 <= n1; r += 4) row1.template operator()<4>(r);
    for (; r < n1; ++r) row1.template operator()<1>(r);
    return;
  }
  for (int64_t r = n0; r < n1; r += kTileRows) {
    const int nr = int(std::min<int64_t>(kTileRows, n1 - r));
    tiled_rows(x, n, y, r, nr, [&](int t, int64_t k0, int64_t kc, float* dst) { fill(r + t, k0, kc, dst); });
  }
}

}  // namespace

void gemv_fp8_rows_neon(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  if (w.e5m2)
    fp8_rows<false>(x, w, y, n0, n1);
  else
    fp8_rows<true>(x, w, y, n0, n1);
}

void gemv_bf16_rows_neon(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1) {
  dense_rows(
      x, n, y, n0, n1, [&]<int R>(int64_t r) { bf16_rows_m1<R>(x.data, w, x.k, y, r); },
      [&](int64_t row, int64_t k0, int64_t kc, float* dst) { bf16_fill(w + row * x.k, x.k, k0, kc, dst); });
}

void gemv_f32_rows_neon(const XPanel& x, const float* w, int64_t n, float* y, int64_t n0, int64_t n1) {
  dense_rows(
      x, n, y, n0, n1, [&]<int R>(int64_t r) { f32_rows_m1<R>(x.data, w, x.k, y, r); },
      [&](int64_t row, int64_t k0, int64_t kc, float* dst) { f32_fill(w + row * x.k, x.k, k0, kc, dst); });
}

}  // namespace mx8::cpu::detail

#endif  // __aarch64__
