// NEON attention kernels (attention_tile.h), the AVX2 kernels' structure on 4-lane vectors: scores
// with one key per lane (16 keys in four vectors, up to 4 query rows), weighted V rows with one
// dimension per lane. E4M3 values come from the f16 shift decode of neon_fp8.h with the NaN code kept
// NaN, so each equals e4m3_table()'s. Every lane does the scalar kernels' operations in their order
// (vfmaq_f32 is a fused multiply-add), so the results are the same bits.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "backend/cpu/attention_tile.h"
#include "backend/cpu/backend_cpu.h"
#include "backend/cpu/neon_fp8.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cpu_impl {
namespace {

// f(0), f(1), ..., f(N - 1) with compile-time indices (std::integral_constant), for the accumulator
// arrays: loops over them, unrolled only after GCC's pass that puts arrays in registers, left the
// scores' accumulators stored to the stack on every step (the AVX2 file has the same helper).
template <int N, class F>
inline void each(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }
  (std::make_integer_sequence<int, N>{});
}

// 8 E4M3 codes -> 8 exact f32 values (NaN codes -> NaN).
inline void decode8_e4m3(const uint8_t* p, float32x4_t v[2]) {
  const float16x8_t f = mx8::cpu::detail::fp8_as_f16<true, true>(vshll_n_u8(vld1_u8(p), 8));
  v[0] = vmulq_n_f32(vcvt_f32_f16(vget_low_f16(f)), 256.f);  // exact: the f16 holds value * 2^-8
  v[1] = vmulq_n_f32(vcvt_high_f32_f16(f), 256.f);
}

// 8 stored values at `src` to f32 in v[0..1]; fp8 values times s[0..1], per lane.
inline void load8(const uint8_t* src, KvFormat fmt, const float32x4_t* s, float32x4_t v[2]) {
  switch (fmt) {
    case KvFormat::f32:
      v[0] = vld1q_f32(reinterpret_cast<const float*>(src));
      v[1] = vld1q_f32(reinterpret_cast<const float*>(src) + 4);
      return;
    case KvFormat::bf16: {
      const uint16x8_t w = vld1q_u16(reinterpret_cast<const uint16_t*>(src));
      v[0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(w), 16));
      v[1] = vreinterpretq_f32_u32(vshll_high_n_u16(w, 16));
      return;
    }
    case KvFormat::fp8:
      break;
  }
  decode8_e4m3(src, v);  // out of the switch: every path then writes v, as GCC can see
  v[0] = vmulq_f32(v[0], s[0]);
  v[1] = vmulq_f32(v[1], s[1]);
}

// Keys p0 .. p0 + 15 into kt, 4 rows of 4 values at a time decoded and transposed; keys outside
// [lo, hi) read a row of zeros instead of the cache.
void k_block_neon(const AttentionTile& j, int p0, int lo, int hi, float* kt) {
  static const uint8_t zeros[1024 * 4 + 8] = {};
  if (j.hd % 8 != 0 || j.hd > 1024) return k_block_scalar(j, p0, lo, hi, kt);
  const size_t eb = size_t(j.elem_bytes());
  AttentionTile::Cursor c = j.cursor(j.k_pool, std::max(lo, p0));  // the block's keys in [lo, hi), in order
  for (int g = 0; g < kKeyBlock; g += 4) {
    const uint8_t* rows[4];
    const uint8_t* scales[4];
    for (int i = 0; i < 4; ++i) {
      const int p = p0 + g + i;
      const bool in = p >= lo && p < hi;
      rows[i] = in ? c.row() : zeros;
      scales[i] = in && j.fmt == KvFormat::fp8 ? c.scales() : zeros;
      if (in) c.next();
    }
    for (int d = 0; d < j.hd; d += 8) {
      float32x4_t v[4][2];  // v[row][half]: values d .. d + 3 and d + 4 .. d + 7
      for (int i = 0; i < 4; ++i) {
        float32x4_t s[2];
        s[0] = s[1] = vdupq_n_f32(j.fmt == KvFormat::fp8 ? format::ue8m0_to_f32(scales[i][d / 128]) : 1.0f);
        load8(rows[i] + d * eb, j.fmt, s, v[i]);
      }
      for (int half = 0; half < 2; ++half) {
        // The 4 x 4 transpose: pairs of rows interleaved, then pairs of pairs.
        const float32x4x2_t a = vtrnq_f32(v[0][half], v[1][half]), b = vtrnq_f32(v[2][half], v[3][half]);
        const float32x4_t col[4] = {
            vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0])),
            vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1])),
            vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0])),
            vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1])),
        };
        for (int k = 0; k < 4; ++k) vst1q_f32(kt + (d + 4 * half + k) * kKeyBlock + g, col[k]);
      }
    }
  }
}

void v_rows_neon(const AttentionTile& j, int p0, int lo, int hi, float* vt) {
  if (j.hd % 8 != 0) return v_rows_scalar(j, p0, lo, hi, vt);
  const size_t eb = size_t(j.elem_bytes());
  AttentionTile::Cursor c = j.cursor(j.v_pool, lo);
  for (int p = lo; p < hi; ++p, c.next()) {
    const uint8_t* row = c.row();
    const uint8_t* sc = j.fmt == KvFormat::fp8 ? c.scales() : nullptr;
    float* dst = vt + size_t(p - p0) * j.hd;
    for (int d = 0; d < j.hd; d += 8) {
      float32x4_t s[2];
      s[0] = s[1] = vdupq_n_f32(sc ? format::ue8m0_to_f32(sc[d / 128]) : 1.0f);
      float32x4_t v[2];
      load8(row + d * eb, j.fmt, s, v);
      vst1q_f32(dst + d, v[0]);
      vst1q_f32(dst + d + 4, v[1]);
    }
  }
}

template <int R>
void qk_rows(const float* const* q, const float* kt, int hd, float scale, float* const* s) {
  float32x4_t acc[R][4];
  each<R>([&](auto r) { each<4>([&](auto c) { acc[r][c] = vdupq_n_f32(0.f); }); });
  for (int d = 0; d < hd; ++d) {
    float32x4_t k[4];
    each<4>([&](auto c) { k[c] = vld1q_f32(kt + d * kKeyBlock + 4 * c); });
    each<R>([&](auto r) {
      const float32x4_t qd = vdupq_n_f32(q[r][d]);
      each<4>([&](auto c) { acc[r][c] = vfmaq_f32(acc[r][c], qd, k[c]); });
    });
  }
  each<R>([&](auto r) { each<4>([&](auto c) { vst1q_f32(s[r] + 4 * c, vmulq_n_f32(acc[r][c], scale)); }); });
}

void qk_neon(const float* const* q, int rows, const float* kt, int hd, float scale, float* const* s) {
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

// exp_nonpositive (attention_tile.h) on 4 lanes.
inline float32x4_t exp4(float32x4_t x) {
  const uint32x4_t nan = vmvnq_u32(vceqq_f32(x, x));
  const float32x4_t lo = vdupq_n_f32(kExpMin);
  const float32x4_t xc = vbslq_f32(vcgtq_f32(lo, x), lo, x);  // kExpMin > x ? kExpMin : x
  const float32x4_t n = vrndnq_f32(vmulq_n_f32(xc, kLog2e));
  float32x4_t r = vfmaq_n_f32(xc, n, -kLn2Hi);
  r = vfmaq_n_f32(r, n, -kLn2Lo);
  float32x4_t p = vdupq_n_f32(kExpTaylor[7]);
  for (int i = 6; i >= 0; --i) p = vfmaq_f32(vdupq_n_f32(kExpTaylor[i]), p, r);
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vbslq_f32(nan, x, vmulq_f32(p, vreinterpretq_f32_s32(e)));
}

void exp_sum_neon(float* row, int n, float* m, float* z) {
  float mx = row[0];
  int i = 1;
  if (n >= 4) {
    float32x4_t m = vld1q_f32(row);
    for (i = 4; i + 4 <= n; i += 4) m = vmaxq_f32(m, vld1q_f32(row + i));
    for (int k = 0; k < 4; ++k) mx = m[k] > mx ? m[k] : mx;
  }
  for (; i < n; ++i) mx = row[i] > mx ? row[i] : mx;
  const float32x4_t vmx = vdupq_n_f32(mx);
  float32x4_t s0 = vdupq_n_f32(0.f), s1 = s0;  // lanes 0-3 and 4-7 of the definition's 8
  for (i = 0; i + 8 <= n; i += 8) {
    const float32x4_t e0 = exp4(vsubq_f32(vld1q_f32(row + i), vmx));
    const float32x4_t e1 = exp4(vsubq_f32(vld1q_f32(row + i + 4), vmx));
    vst1q_f32(row + i, e0);
    vst1q_f32(row + i + 4, e1);
    s0 = vaddq_f32(s0, e0);
    s1 = vaddq_f32(s1, e1);
  }
  float lane[8];
  vst1q_f32(lane, s0);
  vst1q_f32(lane + 4, s1);
  if (i < n) {  // the tail through the same vector code, its lanes past n left out of the sums
    float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < n - i; ++k) t[k] = row[i + k] - mx;
    vst1q_f32(t, exp4(vld1q_f32(t)));
    vst1q_f32(t + 4, exp4(vld1q_f32(t + 4)));
    for (int k = 0; k < n - i; ++k) lane[k] += row[i + k] = t[k];
  }
  *m = mx;
  *z = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

template <int R>
void pv_rows(const float* const* w, const float* vt, int n, int hd, float* const* out) {
  int d = 0;
  for (; d + 16 <= hd; d += 16) {
    float32x4_t acc[R][4];
    each<R>([&](auto r) { each<4>([&](auto c) { acc[r][c] = vld1q_f32(out[r] + d + 4 * c); }); });
    for (int i = 0; i < n; ++i) {
      float32x4_t v[4];
      each<4>([&](auto c) { v[c] = vld1q_f32(vt + size_t(i) * hd + d + 4 * c); });
      each<R>([&](auto r) {
        const float32x4_t wr = vdupq_n_f32(w[r][i]);
        each<4>([&](auto c) { acc[r][c] = vfmaq_f32(acc[r][c], wr, v[c]); });
      });
    }
    each<R>([&](auto r) { each<4>([&](auto c) { vst1q_f32(out[r] + d + 4 * c, acc[r][c]); }); });
  }
  for (; d < hd; ++d)
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < n; ++i) out[r][d] = std::fma(w[r][i], vt[size_t(i) * hd + d], out[r][d]);
}

void pv_neon(const float* const* w, int rows, const float* vt, int n, int hd, float* const* out) {
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

}  // namespace

const TileKernels kNeonTileKernels = {k_block_neon, v_rows_neon, qk_neon, exp_sum_neon, pv_neon};

}  // namespace mx8::backend::cpu_impl

#endif  // __aarch64__
