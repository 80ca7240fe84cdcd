// AVX-512 product of E4M3 or BF16 weights with many rows of activations (M > kPrescaledRows: prompt
// chunks and large batches), blocked for the caches. The AVX2 tile path this replaces on AVX-512 machines
// decoded each 4 x 256 weight tile again for every 16 rows of x and kept no block of x in L2.
//
// Per task (weight rows [n0, n1)): 16 weight rows at a time; for each pass over up to 256 rows of x
// (a whole prompt chunk, so each weight is decoded once per chunk), the weights are decoded 256
// columns at a time into a 16 x 256 f32 tile (16 KB, L1), each E4M3 value times its block scale (one
// rounding, as the AVX2 tile does; BF16 widens exactly), and a micro-kernel of 3 rows of x by 8
// weight rows (24 zmm accumulators) runs over it. Each output's 16 lanes carry their sums across the
// column tiles in a 256 x 16 buffer of vectors (256 KB, L2); the lanes are added once at the end.
// The block sizes are the fastest of those tried on the dev machine's Zen 4 (docs/PERF.md,
// decode-cpu-prefill): 16 / 256 / 256 against 32 or 64 weight rows, 128-512 columns, 48-128 rows of x.
// Rounding: every product is rounded, each lane sums K/16 of them in column order, then the 16 lanes
// are added (the AVX2 tile kernel: K/8 per lane, then 8).
#if defined(__x86_64__)

#include <algorithm>
#include <cstring>

#include "backend/cpu/avx512_common.h"
#include "backend/cpu/gemv_kernels.h"

namespace mx8::cpu::detail {
namespace {

constexpr int kNr = 8;        // weight rows per micro-kernel
constexpr int kMr = 3;        // rows of x per micro-kernel: 3 x 8 accumulators + 3 x + 1 w of 32 zmm
constexpr int64_t kNb = 16;   // weight rows decoded together
constexpr int64_t kKc = 256;  // columns decoded together
constexpr int64_t kMc = 256;  // rows of x per pass

// Weight row `row`, columns [k0, k0 + kc), as f32 values times their block scale into dst; zero
// past K.
MX8_AVX512 void fill_e4m3(const Fp8Operand& w, int64_t row, int64_t k0, int64_t kc, float* dst) {
  const __m512 unbias = _mm512_set1_ps(0x1p120f);  // value x 2^-120 x 2^120: the value, exactly
  const uint8_t* codes = w.codes + row * w.k;
  const Fp8Operand::ScaleRow scale = w.row(row);
  // k0 and kc are multiples of 32, and so is block_cols (the dispatcher's condition): a block's
  // scale is looked up once per 32 columns, without a division per column.
  for (int64_t kk = 0; kk < kc; kk += 32) {
    const int64_t k = k0 + kk;
    const __m512 s = _mm512_set1_ps(k < w.k ? scale[k / w.block_cols] : 0.f);
    for (int h = 0; h < 32; h += 16) {
      alignas(16) uint8_t tail[16] = {};
      const uint8_t* p = codes + k + h;
      if (k + h + 16 > w.k) {  // the ragged end, and the panel's zero padding past K
        if (k + h < w.k) std::memcpy(tail, p, size_t(w.k - k - h));
        p = tail;
      }
      const __m512 v = _mm512_mul_ps(e4m3_16(p), unbias);
      _mm512_store_ps(dst + kk + h, _mm512_mul_ps(v, s));
    }
  }
}

// BF16 row `row` of a [.., k] matrix, columns [k0, k0 + kc), widened to f32 (exact) into dst; zero
// past K.
MX8_AVX512 void fill_bf16(const uint16_t* w, int64_t k, int64_t row, int64_t k0, int64_t kc, float* dst) {
  const uint16_t* src = w + row * k;
  for (int64_t kk = 0; kk < kc; kk += 16) {
    const int64_t c = k0 + kk;
    alignas(32) uint16_t tail[16] = {};
    const uint16_t* p = src + c;
    if (c + 16 > k) {
      if (c < k) std::memcpy(tail, p, size_t(k - c) * 2);
      p = tail;
    }
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    _mm512_store_ps(dst + kk, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
  }
}

// c[i * kNb + r] (16 lanes each) += ws[r][kk] * x_i[kk] over kk < kc, for MR rows of x and 8 weight
// rows. `first`: start from zero instead of c.
template <int MR>
MX8_AVX512 void micro(const float* ws, const float* x, int64_t stride, int64_t kc, __m512* c, bool first) {
  __m512 acc[MR][kNr];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < kNr; ++r) acc[i][r] = first ? _mm512_setzero_ps() : c[i * kNb + r];
  for (int64_t kk = 0; kk < kc; kk += 16) {
    __m512 xv[MR];
    for (int i = 0; i < MR; ++i) xv[i] = _mm512_load_ps(x + i * stride + kk);
    for (int r = 0; r < kNr; ++r) {
      const __m512 wv = _mm512_load_ps(ws + r * kKc + kk);
      for (int i = 0; i < MR; ++i) acc[i][r] = _mm512_fmadd_ps(wv, xv[i], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < kNr; ++r) c[i * kNb + r] = acc[i][r];
}

// Weight rows [n0, n1) of an [n_total, K] matrix against every row of x into y[i][n]; fill(row, k0,
// kc, dst) writes kc (a multiple of 32) f32 weights of a row from column k0, zeros past K.
template <class Fill>
MX8_AVX512 void gemm_rows(const XPanel& x, int64_t n_total, float* y, int64_t n0, int64_t n1, Fill&& fill) {
  // Per thread, reused across calls: 16 KB of weights and 256 KB of lane sums.
  alignas(64) thread_local float ws[kNb * kKc];
  alignas(64) thread_local __m512 sums[kMc * kNb];
  for (int64_t nb = n0; nb < n1; nb += kNb) {
    const int nr = int(std::min(kNb, n1 - nb));
    const int groups = (nr + kNr - 1) / kNr;
    for (int64_t i0 = 0; i0 < x.m; i0 += kMc) {
      const int64_t mc = std::min(kMc, x.m - i0);
      for (int64_t k0 = 0; k0 < x.stride; k0 += kKc) {
        const int64_t kc = std::min(kKc, x.stride - k0);
        for (int r = 0; r < nr; ++r) fill(nb + r, k0, kc, ws + r * kKc);
        for (int r = nr; r < groups * kNr; ++r) std::memset(ws + r * kKc, 0, size_t(kc) * 4);
        for (int64_t i = 0; i < mc; i += kMr) {
          const float* xi = x.data + (i0 + i) * x.stride + k0;
          for (int g = 0; g < groups; ++g) {
            const float* wg = ws + g * kNr * kKc;
            __m512* c = sums + i * kNb + g * kNr;
            switch (std::min<int64_t>(kMr, mc - i)) {
              case 3:
                micro<3>(wg, xi, x.stride, kc, c, k0 == 0);
                break;
              case 2:
                micro<2>(wg, xi, x.stride, kc, c, k0 == 0);
                break;
              default:
                micro<1>(wg, xi, x.stride, kc, c, k0 == 0);
            }
          }
        }
      }
      for (int64_t i = 0; i < mc; ++i)
        for (int r = 0; r < nr; ++r) y[(i0 + i) * n_total + nb + r] = _mm512_reduce_add_ps(sums[i * kNb + r]);
    }
  }
}

}  // namespace

MX8_AVX512 void gemm_fp8_rows_avx512(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  if (w.e5m2) return gemv_fp8_rows_avx2(x, w, y, n0, n1);
  gemm_rows(x, w.n, y, n0, n1,
            [&](int64_t row, int64_t k0, int64_t kc, float* dst) { fill_e4m3(w, row, k0, kc, dst); });
}

MX8_AVX512 void gemm_bf16_rows_avx512(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0,
                                      int64_t n1) {
  gemm_rows(x, n, y, n0, n1,
            [&](int64_t row, int64_t k0, int64_t kc, float* dst) { fill_bf16(w, x.k, row, k0, kc, dst); });
}

}  // namespace mx8::cpu::detail

#endif  // __x86_64__
