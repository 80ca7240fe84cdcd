// AVX2 + FMA + F16C GEMV kernels.
//
// FP8 decode without a table: an E4M3 byte S.EEEE.MMM becomes the f16 bit pattern
// S.0EEEE.MMM0000000 (sign to bit 15, the other 7 bits shifted left by 7). That f16 is exactly the E4M3
// value times 2^-8, subnormals included (both formats have the same subnormal spacing relative to
// their biases), so F16C's vcvtph2ps then gives exact f32 values; the 2^8 is folded into the final
// result. E5M2 is the upper byte of an f16, so it needs no shift at all (Inf and NaN carry over).
// In registers: unpack the byte above a zero byte (c << 8), shift right arithmetically by one (sign
// lands in bits 15 and 14) and clear bit 14. The E4M3 NaN code 0x7F reads as 480 (see gemv.h).
//
// M = 1 decodes and multiplies in one pass over 4 weight rows at a time with one f32 accumulator per
// row per scale block; the block's scale is applied once per block (a single FMA). M = 2..4 decodes
// 2 rows into registers, multiplies the scale in, and feeds all M activation rows. M > 4 decodes a
// 4-row x 256-column tile of weights (scales applied) into an L1 scratch once, then runs a 4x2
// register-blocked dot-product kernel over pairs of activation rows, so the decode is shared by all M.
//
// Every function carries target("avx2,fma,f16c") instead of the file being built with -mavx2: no
// inline function from a header can be emitted here with AVX2 instructions and then picked by the
// linker for generic callers (the ODR trap), and the library still runs on any x86-64.
#if defined(__x86_64__)

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/gemv_kernels.h"
#include "mx8/format/element.h"

#define MX8_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace mx8::cpu::detail {
namespace {

enum class Decode { e4m3, e5m2, lut };

MX8_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 256-entry tables for the gather variant (exact decoded values).
struct LutTables {
  alignas(64) float e4m3[256];
  alignas(64) float e5m2[256];
  LutTables() {
    for (int c = 0; c < 256; ++c) {
      e4m3[c] = format::e4m3_to_f32(uint8_t(c));
      e5m2[c] = format::e5m2_to_f32(uint8_t(c));
    }
  }
};
const LutTables& lut_tables() {
  static const LutTables t;
  return t;
}

// 32 codes at p -> 32 f32 in order (v[0]: codes 0..7, v[1]: 8..15, v[2]: 16..23, v[3]: 24..31). E4M3
// values come out times 2^-8. The byte unpack works within 128-bit lanes, which happens to give the
// natural order: lane 0 of unpacklo(0, c) holds codes 0..7 and lane 1 holds 16..23.
template <Decode D>
MX8_AVX2 inline void decode32(const uint8_t* p, const float* lut, __m256 v[4]) {
  if constexpr (D == Decode::lut) {
    for (int q = 0; q < 4; ++q)
      v[q] = _mm256_i32gather_ps(
          lut, _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * q))), 4);
  } else {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i z = _mm256_setzero_si256();
    __m256i a = _mm256_unpacklo_epi8(z, c), b = _mm256_unpackhi_epi8(z, c);
    if constexpr (D == Decode::e4m3) {
      const __m256i keep = _mm256_set1_epi16(short(0xBFFF));
      a = _mm256_and_si256(_mm256_srai_epi16(a, 1), keep);
      b = _mm256_and_si256(_mm256_srai_epi16(b, 1), keep);
    }
    v[0] = _mm256_cvtph_ps(_mm256_castsi256_si128(a));
    v[1] = _mm256_cvtph_ps(_mm256_castsi256_si128(b));
    v[2] = _mm256_cvtph_ps(_mm256_extracti128_si256(a, 1));
    v[3] = _mm256_cvtph_ps(_mm256_extracti128_si256(b, 1));
  }
}

template <Decode D>
constexpr float decode_factor() {
  return D == Decode::e4m3 ? 256.f : 1.f;
}

// Software prefetch of the same columns of the next row tile (R rows further on) into L2: the decode
// keeps the core busy enough that the hardware prefetcher alone leaves DRAM latency exposed. Measured
// on 14336x4096, 1 thread, cold: 7.6-8.6 -> 10.6-11.5 GB of weights per CPU-second (T0 into L1 and two
// tiles ahead were no better). Prefetches past the end of the matrix are harmless hints.
MX8_AVX2 inline void prefetch_next_tile(const uint8_t* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1);
}

// ---- FP8, M = 1 (per activation row): R weight rows at once ----
// One accumulator chain per row: with R = 4 rows there are 4 independent FMA chains, enough here
// because the decode, not the FMA latency, bounds the loop (measured: two chains per row gained
// nothing with the 32-wide decode).
template <Decode D, int R>
MX8_AVX2 void fp8_rows_m1(const float* xr, const Fp8Operand& w, const float* lut, float* y, int64_t n) {
  const Fp8RowGroup<R> g(w, n);
  __m256 total[R];
  for (int r = 0; r < R; ++r) total[r] = _mm256_setzero_ps();
  for (int64_t kb = 0, k0 = 0; k0 < w.k; ++kb, k0 += w.block_cols) {
    const int64_t k1 = std::min(k0 + w.block_cols, g.kfull);
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    int64_t k = k0;
    for (; k < k1; k += 32) {
      const __m256 x0 = _mm256_load_ps(xr + k), x1 = _mm256_load_ps(xr + k + 8);
      const __m256 x2 = _mm256_load_ps(xr + k + 16), x3 = _mm256_load_ps(xr + k + 24);
      for (int r = 0; r < R; ++r) {
        __m256 v[4];
        prefetch_next_tile(g.rows[r] + R * w.k + k);
        decode32<D>(g.rows[r] + k, lut, v);
        acc[r] = _mm256_fmadd_ps(v[0], x0, acc[r]);
        acc[r] = _mm256_fmadd_ps(v[1], x1, acc[r]);
        acc[r] = _mm256_fmadd_ps(v[2], x2, acc[r]);
        acc[r] = _mm256_fmadd_ps(v[3], x3, acc[r]);
      }
    }
    if (k == g.kfull && g.kfull < w.k && g.kfull < k0 + w.block_cols) {  // the ragged end of the last block
      const __m256 x0 = _mm256_load_ps(xr + k), x1 = _mm256_load_ps(xr + k + 8);
      const __m256 x2 = _mm256_load_ps(xr + k + 16), x3 = _mm256_load_ps(xr + k + 24);
      for (int r = 0; r < R; ++r) {
        __m256 v[4];
        decode32<D>(g.tail[r], lut, v);
        acc[r] = _mm256_fmadd_ps(v[0], x0, acc[r]);
        acc[r] = _mm256_fmadd_ps(v[1], x1, acc[r]);
        acc[r] = _mm256_fmadd_ps(v[2], x2, acc[r]);
        acc[r] = _mm256_fmadd_ps(v[3], x3, acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) total[r] = _mm256_fmadd_ps(acc[r], _mm256_set1_ps(g.scale[r][kb]), total[r]);
  }
  for (int r = 0; r < R; ++r) y[n + r] = hsum(total[r]) * decode_factor<D>();
}

// ---- small M (2..4): decode once into registers, scale, and feed M activation rows ----
// The block scale is multiplied into the decoded weights (one multiply per 8 weights, shared by the M
// FMAs), so the accumulators run over all of K; E4M3's 2^-8 is folded into the result as for M = 1.
template <Decode D, int M, int R>
MX8_AVX2 void fp8_rows_small_m(const XPanel& x, const Fp8Operand& w, float* y, int64_t n) {
  const Fp8RowGroup<R> g(w, n);
  const float* xm[M];
  for (int m = 0; m < M; ++m) xm[m] = x.data + m * x.stride;
  __m256 acc[M][R];
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int64_t kb = 0, k0 = 0; k0 < w.k; ++kb, k0 += w.block_cols) {
    const int64_t k1 = std::min(k0 + w.block_cols, w.k);
    __m256 s[R];
    for (int r = 0; r < R; ++r) s[r] = _mm256_set1_ps(g.scale[r][kb]);
    for (int64_t k = k0; k < k1; k += 32) {
      for (int r = 0; r < R; ++r) {
        __m256 v[4];
        prefetch_next_tile(g.rows[r] + R * w.k + k);
        decode32<D>(g.codes(r, k), nullptr, v);
        for (int q = 0; q < 4; ++q) {
          v[q] = _mm256_mul_ps(v[q], s[r]);
          for (int m = 0; m < M; ++m)
            acc[m][r] = _mm256_fmadd_ps(v[q], _mm256_load_ps(xm[m] + k + 8 * q), acc[m][r]);
        }
      }
    }
  }
  for (int m = 0; m < M; ++m)
    for (int r = 0; r < R; ++r) y[m * w.n + n + r] = hsum(acc[m][r]) * decode_factor<D>();
}

template <Decode D, int M>
MX8_AVX2 void fp8_rows_small_m_range(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) fp8_rows_small_m<D, M, 2>(x, w, y, n);
  for (; n < n1; ++n) fp8_rows_small_m<D, M, 1>(x, w, y, n);
}

// ---- M > 1: decode a tile to f32 once, then a register-blocked kernel over activation rows ----
constexpr int kTileRows = 4;
constexpr int64_t kTileCols = 256;  // 4 x 256 f32 = 4 KiB of L1

// acc[i][r] += sum over kk < kc of ws[r][kk] * x[i][k0 + kk], for activation rows i0..i0+ni (ni <= 16).
MX8_AVX2 void tile_kernel(const float (*ws)[kTileCols], const XPanel& x, int64_t i0, int64_t ni, int64_t k0,
                          int64_t kc, __m256 (*acc)[kTileRows]) {
  int64_t i = 0;
  for (; i + 2 <= ni; i += 2) {
    const float* x0 = x.data + (i0 + i) * x.stride + k0;
    const float* x1 = x0 + x.stride;
    __m256 a00 = acc[i][0], a01 = acc[i][1], a02 = acc[i][2], a03 = acc[i][3];
    __m256 a10 = acc[i + 1][0], a11 = acc[i + 1][1], a12 = acc[i + 1][2], a13 = acc[i + 1][3];
    for (int64_t kk = 0; kk < kc; kk += 8) {
      __m256 w0 = _mm256_load_ps(ws[0] + kk), w1 = _mm256_load_ps(ws[1] + kk);
      __m256 w2 = _mm256_load_ps(ws[2] + kk), w3 = _mm256_load_ps(ws[3] + kk);
      __m256 xa = _mm256_load_ps(x0 + kk);
      a00 = _mm256_fmadd_ps(w0, xa, a00);
      a01 = _mm256_fmadd_ps(w1, xa, a01);
      a02 = _mm256_fmadd_ps(w2, xa, a02);
      a03 = _mm256_fmadd_ps(w3, xa, a03);
      __m256 xb = _mm256_load_ps(x1 + kk);
      a10 = _mm256_fmadd_ps(w0, xb, a10);
      a11 = _mm256_fmadd_ps(w1, xb, a11);
      a12 = _mm256_fmadd_ps(w2, xb, a12);
      a13 = _mm256_fmadd_ps(w3, xb, a13);
    }
    acc[i][0] = a00, acc[i][1] = a01, acc[i][2] = a02, acc[i][3] = a03;
    acc[i + 1][0] = a10, acc[i + 1][1] = a11, acc[i + 1][2] = a12, acc[i + 1][3] = a13;
  }
  if (i < ni) {
    const float* x0 = x.data + (i0 + i) * x.stride + k0;
    __m256 a0 = acc[i][0], a1 = acc[i][1], a2 = acc[i][2], a3 = acc[i][3];
    for (int64_t kk = 0; kk < kc; kk += 8) {
      __m256 xa = _mm256_load_ps(x0 + kk);
      a0 = _mm256_fmadd_ps(_mm256_load_ps(ws[0] + kk), xa, a0);
      a1 = _mm256_fmadd_ps(_mm256_load_ps(ws[1] + kk), xa, a1);
      a2 = _mm256_fmadd_ps(_mm256_load_ps(ws[2] + kk), xa, a2);
      a3 = _mm256_fmadd_ps(_mm256_load_ps(ws[3] + kk), xa, a3);
    }
    acc[i][0] = a0, acc[i][1] = a1, acc[i][2] = a2, acc[i][3] = a3;
  }
}

// Runs the M > 1 product for weight rows [n, n + nr) (nr <= 4); `fill(r, k0, kc, dst)` writes
// kc (a multiple of 16) f32 weights of tile row r starting at column k0, zeros past K.
template <class Fill>
MX8_AVX2 void tiled_rows(const XPanel& x, int64_t n_total, float* y, int64_t n, int nr, Fill&& fill) {
  alignas(64) float ws[kTileRows][kTileCols];
  alignas(32) __m256 acc[16][kTileRows];
  for (int r = nr; r < kTileRows; ++r) std::memset(ws[r], 0, sizeof ws[r]);
  for (int64_t i0 = 0; i0 < x.m; i0 += 16) {
    const int64_t ni = std::min<int64_t>(16, x.m - i0);
    for (int64_t i = 0; i < ni; ++i)
      for (int r = 0; r < kTileRows; ++r) acc[i][r] = _mm256_setzero_ps();
    for (int64_t k0 = 0; k0 < x.stride; k0 += kTileCols) {
      const int64_t kc = std::min(kTileCols, x.stride - k0);
      for (int r = 0; r < nr; ++r) fill(r, k0, kc, ws[r]);
      tile_kernel(ws, x, i0, ni, k0, kc, acc);
    }
    for (int64_t i = 0; i < ni; ++i)
      for (int r = 0; r < nr; ++r) y[(i0 + i) * n_total + n + r] = hsum(acc[i][r]);
  }
}

template <Decode D>
MX8_AVX2 void fp8_fill(const Fp8Operand& w, int64_t row, int64_t k0, int64_t kc, float* dst) {
  const uint8_t* codes = w.codes + row * w.k;
  const Fp8Operand::ScaleRow scale = w.row(row);
  const __m256 factor = _mm256_set1_ps(decode_factor<D>());
  // k0, kc and block_cols are multiples of 32: track the block index without dividing.
  int64_t kb = k0 / w.block_cols, next_block = (kb + 1) * w.block_cols;
  for (int64_t kk = 0; kk < kc; kk += 32) {
    const int64_t k = k0 + kk;
    alignas(32) uint8_t tail[32];
    const uint8_t* p = codes32(codes, w.k, k, tail);
    if (k >= next_block) ++kb, next_block += w.block_cols;
    __m256 v[4];
    decode32<D>(p, nullptr, v);
    // (value * 2^-8) * 2^8 is exact; the scale multiply is then the single rounding of value * scale.
    const __m256 s = _mm256_set1_ps(k < w.k ? scale[kb] : 0.f);
    for (int q = 0; q < 4; ++q)
      _mm256_store_ps(dst + kk + 8 * q, _mm256_mul_ps(_mm256_mul_ps(v[q], factor), s));
  }
}

template <Decode D>
MX8_AVX2 void fp8_rows(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  const float* lut = D == Decode::lut ? (w.e5m2 ? lut_tables().e5m2 : lut_tables().e4m3) : nullptr;
  if constexpr (D != Decode::lut) {
    // x.m == 2..4: the register kernel (measured 1.7x faster than the tile kernel at M = 4; from M = 5
    // on the two are equal and the tile kernel keeps its register blocking).
    if (x.m == 2) return fp8_rows_small_m_range<D, 2>(x, w, y, n0, n1);
    if (x.m == 3) return fp8_rows_small_m_range<D, 3>(x, w, y, n0, n1);
    if (x.m == 4) return fp8_rows_small_m_range<D, 4>(x, w, y, n0, n1);
  }
  if (x.m == 1 || D == Decode::lut) {
    for (int64_t i = 0; i < x.m; ++i) {
      const float* xr = x.data + i * x.stride;
      float* yr = y + i * w.n;
      int64_t n = n0;
      for (; n + 4 <= n1; n += 4) fp8_rows_m1<D, 4>(xr, w, lut, yr, n);
      for (; n < n1; ++n) fp8_rows_m1<D, 1>(xr, w, lut, yr, n);
    }
    return;
  }
  for (int64_t n = n0; n < n1; n += kTileRows) {
    const int nr = int(std::min<int64_t>(kTileRows, n1 - n));
    tiled_rows(x, w.n, y, n, nr,
               [&](int r, int64_t k0, int64_t kc, float* dst) { fp8_fill<D>(w, n + r, k0, kc, dst); });
  }
}

// ---- bf16 and f32 ----
template <int R>
MX8_AVX2 void bf16_rows_m1(const float* xr, const uint16_t* w, int64_t k, float* y, int64_t n) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= k; c += 8) {
    __m256 xv = _mm256_load_ps(xr + c);
    for (int r = 0; r < R; ++r) {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + (n + r) * k + c));
      __m256 wv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      acc[r] = _mm256_fmadd_ps(wv, xv, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(acc[r]);
    for (int64_t t = c; t < k; ++t) s += format::bf16_to_f32(w[(n + r) * k + t]) * xr[t];
    y[n + r] = s;
  }
}

template <int R>
MX8_AVX2 void f32_rows_m1(const float* xr, const float* w, int64_t k, float* y, int64_t n) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= k; c += 8) {
    __m256 xv = _mm256_load_ps(xr + c);
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w + (n + r) * k + c), xv, acc[r]);
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(acc[r]);
    for (int64_t t = c; t < k; ++t) s += w[(n + r) * k + t] * xr[t];
    y[n + r] = s;
  }
}

MX8_AVX2 void bf16_fill(const uint16_t* row, int64_t k, int64_t k0, int64_t kc, float* dst) {
  int64_t kk = 0;
  for (; kk < kc && k0 + kk + 8 <= k; kk += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k0 + kk));
    _mm256_store_ps(dst + kk, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
  }
  for (; kk < kc; ++kk) dst[kk] = k0 + kk < k ? format::bf16_to_f32(row[k0 + kk]) : 0.f;
}

}  // namespace

void gemv_fp8_rows_avx2(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  if (w.e5m2)
    fp8_rows<Decode::e5m2>(x, w, y, n0, n1);
  else
    fp8_rows<Decode::e4m3>(x, w, y, n0, n1);
}

void gemv_fp8_rows_avx2_lut(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  fp8_rows<Decode::lut>(x, w, y, n0, n1);
}

void gemv_bf16_rows_avx2(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1) {
  if (x.m == 1) {
    int64_t r = n0;
    for (; r + 4 <= n1; r += 4) bf16_rows_m1<4>(x.data, w, x.k, y, r);
    for (; r < n1; ++r) bf16_rows_m1<1>(x.data, w, x.k, y, r);
    return;
  }
  for (int64_t r = n0; r < n1; r += kTileRows) {
    const int nr = int(std::min<int64_t>(kTileRows, n1 - r));
    tiled_rows(x, n, y, r, nr, [&](int t, int64_t k0, int64_t kc, float* dst) {
      bf16_fill(w + (r + t) * x.k, x.k, k0, kc, dst);
    });
  }
}

void gemv_f32_rows_avx2(const XPanel& x, const float* w, int64_t n, float* y, int64_t n0, int64_t n1) {
  if (x.m == 1) {
    int64_t r = n0;
    for (; r + 4 <= n1; r += 4) f32_rows_m1<4>(x.data, w, x.k, y, r);
    for (; r < n1; ++r) f32_rows_m1<1>(x.data, w, x.k, y, r);
    return;
  }
  for (int64_t r = n0; r < n1; r += kTileRows) {
    const int nr = int(std::min<int64_t>(kTileRows, n1 - r));
    tiled_rows(x, n, y, r, nr, [&](int t, int64_t k0, int64_t kc, float* dst) {
      f32_fill(w + (r + t) * x.k, x.k, k0, kc, dst);
    });
  }
}

}  // namespace mx8::cpu::detail

#endif  // __x86_64__
