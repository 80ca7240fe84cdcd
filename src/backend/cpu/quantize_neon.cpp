// NEON (AArch64 Advanced SIMD) row-segment kernels of the quantizer: block max for f32/bf16/f16 and
// the E4M3/E5M2 encode and decode, 16 elements per step; quantize_simd.h turns them into QuantKernels.
// The arithmetic is quantize_avx2.cpp's, lane for lane (quantize_simd.h explains the integer
// round-to-nearest-even encode and its subnormal trick, which needs subnormals on, as AArch64 Linux
// runs), so both agree with format::encode_element bit for bit; tests/backend_cpu holds every ISA to
// the scalar kernels on every bf16 and f16 pattern and a structured f32 sweep.
#if defined(__aarch64__)

#include <arm_neon.h>

#include "backend/cpu/neon_fp8.h"
#include "backend/cpu/quantize_simd.h"

namespace mx8::cpu::detail {
namespace {

// 4 source elements -> exact f32 (FCVTL widens every f16, subnormals included).
template <SourceType T>
inline float32x4_t load4(const void* row, int64_t c) {
  if constexpr (T == SourceType::f32) {
    return vld1q_f32(static_cast<const float*>(row) + c);
  } else {
    const uint16x4_t h = vld1_u16(static_cast<const uint16_t*>(row) + c);
    if constexpr (T == SourceType::bf16)
      return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
    else
      return vcvt_f32_f16(vreinterpret_f16_u16(h));
  }
}

// The SIMD part of the block max over [c0, c1); returns where it stopped.
template <SourceType T>
inline int64_t amax_simd(const void* row, int64_t c0, int64_t c1, uint32_t& acc) {
  int64_t c = c0;
  if constexpr (T == SourceType::f32) {
    const uint32_t* p = static_cast<const uint32_t*>(row);
    const uint32x4_t abs = vdupq_n_u32(0x7FFFFFFF);
    uint32x4_t m0 = vdupq_n_u32(0), m1 = m0;
    for (; c + 8 <= c1; c += 8) {
      m0 = vmaxq_u32(m0, vandq_u32(vld1q_u32(p + c), abs));
      m1 = vmaxq_u32(m1, vandq_u32(vld1q_u32(p + c + 4), abs));
    }
    const uint32_t m = vmaxvq_u32(vmaxq_u32(m0, m1));
    acc = m > acc ? m : acc;
  } else {
    // Integer max of the 16-bit magnitudes orders bf16/f16 values like their f32 widenings, NaN on top.
    const uint16_t* p = static_cast<const uint16_t*>(row);
    const uint16x8_t abs = vdupq_n_u16(0x7FFF);
    uint16x8_t m0 = vdupq_n_u16(0), m1 = m0;
    for (; c + 16 <= c1; c += 16) {
      m0 = vmaxq_u16(m0, vandq_u16(vld1q_u16(p + c), abs));
      m1 = vmaxq_u16(m1, vandq_u16(vld1q_u16(p + c + 8), abs));
    }
    const uint16_t h = vmaxvq_u16(vmaxq_u16(m0, m1));
    const float wide = T == SourceType::bf16 ? format::bf16_to_f32(h) : format::f16_to_f32(h);
    acc = format::amax_bits_accumulate(acc, wide);
  }
  return c;
}

// 4 f32 -> 4 codes in the low byte of each 32-bit lane.
template <ElementFormat F, bool Saturate>
inline uint32x4_t encode4(float32x4_t v) {
  using K = Fp8EncodeConsts<F>;
  const uint32x4_t b = vreinterpretq_u32_f32(v);
  const uint32x4_t a = vandq_u32(b, vdupq_n_u32(0x7FFFFFFF));
  const uint32x4_t sign = vandq_u32(vshrq_n_u32(b, 24), vdupq_n_u32(0x80));
  const uint32x4_t lsb = vandq_u32(vshrq_n_u32(a, K::kShift), vdupq_n_u32(1));
  const uint32x4_t rounded = vaddq_u32(a, vaddq_u32(vdupq_n_u32((1u << (K::kShift - 1)) - 1), lsb));
  const uint32x4_t normal = vsubq_u32(vshrq_n_u32(rounded, K::kShift), vdupq_n_u32(K::kRebias));
  const float32x4_t magic = vreinterpretq_f32_u32(vdupq_n_u32(K::kMagic));
  const uint32x4_t sub = vsubq_u32(vreinterpretq_u32_f32(vaddq_f32(vreinterpretq_f32_u32(a), magic)),
                                   vreinterpretq_u32_f32(magic));
  uint32x4_t mag = vbslq_u32(vcltq_u32(a, vdupq_n_u32(K::kMinNormal)), sub, normal);
  if constexpr (Saturate)
    mag = vminq_u32(mag, vdupq_n_u32(K::kMaxCode));  // +-Inf and overflow -> +-max
  else
    mag = vbslq_u32(vcgtq_u32(mag, vdupq_n_u32(K::kMaxCode)), vdupq_n_u32(K::kOverflowCode), mag);
  const uint32x4_t code = vorrq_u32(mag, sign);
  return vbslq_u32(vcgtq_u32(a, vdupq_n_u32(0x7F800000)), vdupq_n_u32(0x7F), code);  // NaN -> 0x7F
}

template <ElementFormat F, bool Saturate, SourceType T>
int64_t encode_t(const void* row, int64_t c0, int64_t c1, float inv_scale, uint8_t* codes) {
  int64_t c = c0;
  for (; c + 16 <= c1; c += 16) {
    uint32x4_t q[4];
    for (int i = 0; i < 4; ++i) q[i] = encode4<F, Saturate>(vmulq_n_f32(load4<T>(row, c + 4 * i), inv_scale));
    const uint16x8_t lo = vcombine_u16(vmovn_u32(q[0]), vmovn_u32(q[1]));
    const uint16x8_t hi = vcombine_u16(vmovn_u32(q[2]), vmovn_u32(q[3]));
    vst1q_u8(codes + c, vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)));
  }
  return c;
}

// The policy of quantize_simd.h.
struct Neon {
  template <SourceType T>
  static int64_t amax(const void* row, int64_t c0, int64_t c1, uint32_t& acc) {
    return amax_simd<T>(row, c0, c1, acc);
  }
  template <ElementFormat F, bool Saturate, SourceType T>
  static int64_t encode(const void* row, int64_t c0, int64_t c1, float inv_scale, uint8_t* codes) {
    return encode_t<F, Saturate, T>(row, c0, c1, inv_scale, codes);
  }
  template <ElementFormat F, bool Saturate, SourceType T>
  static void stripe(const void* src, int64_t nrows, int64_t cols, int64_t bc, format::ScaleOptions opt,
                     uint8_t* codes, float* sf, uint8_t* su) {
    stripe_body<Neon, F, Saturate, T>(src, nrows, cols, bc, opt, codes, sf, su);
  }
};

// Decode as in quantize_avx2.cpp: the f16 patterns of neon_fp8.h with E4M3's NaN codes kept NaN;
// (v * 2^8) * scale rounds once, like the reference's decode(code) * scale.
template <ElementFormat F>
inline void decode16(uint8x16_t c, float scale, float* dst) {
  constexpr bool kE4M3 = F == ElementFormat::e4m3;
  float16x8_t f[2];
  fp8x16_as_f16<kE4M3, true>(c, f);
  for (int i = 0; i < 2; ++i) {
    float32x4_t v[2] = {vcvt_f32_f16(vget_low_f16(f[i])), vcvt_high_f32_f16(f[i])};
    for (int j = 0; j < 2; ++j) {
      if constexpr (kE4M3) v[j] = vmulq_n_f32(v[j], 256.f);
      vst1q_f32(dst + 8 * i + 4 * j, vmulq_n_f32(v[j], scale));
    }
  }
}

bool decode_neon(const uint8_t* codes, int64_t c0, int64_t c1, float scale, ElementFormat f, float* dst) {
  if (f != ElementFormat::e4m3 && f != ElementFormat::e5m2) return false;
  int64_t c = c0;
  for (; c + 16 <= c1; c += 16) {
    const uint8x16_t v = vld1q_u8(codes + c);
    if (f == ElementFormat::e4m3)
      decode16<ElementFormat::e4m3>(v, scale, dst + c);
    else
      decode16<ElementFormat::e5m2>(v, scale, dst + c);
  }
  return c < c1 ? quant_kernels_scalar().decode(codes, c, c1, scale, f, dst) : true;
}

}  // namespace

const QuantKernels& quant_kernels_neon() {
  static const QuantKernels k{simd_amax<Neon>, simd_encode<Neon>, decode_neon, simd_quantize_stripe<Neon>};
  return k;
}

}  // namespace mx8::cpu::detail

#endif  // __aarch64__
