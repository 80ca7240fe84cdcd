// The FP8 decode that the NEON kernels share (gemv_neon.cpp, quantize_neon.cpp,
// backend_cpu_attention_neon.cpp). Include only from AArch64 kernel files.
//
// A code byte above a zero byte (c << 8 in a 16-bit lane) is an f16 bit pattern: E5M2 exactly (Inf
// and NaN included), and E4M3 after an arithmetic shift right by one and clearing bit 14, which
// gives the value times 2^-8 (subnormals included: both formats space them alike relative to their
// biases). FCVTL, part of base AArch64 SIMD, widens every f16 to f32 exactly. The shifted E4M3 NaN
// codes 0x7F / 0xFF read as +-480 (times 2^-8); KeepNan makes them an f16 NaN instead.
#pragma once

#include <arm_neon.h>

namespace mx8::cpu::detail {

template <bool E4M3, bool KeepNan>
inline float16x8_t fp8_as_f16(uint16x8_t h) {
  if constexpr (!E4M3) return vreinterpretq_f16_u16(h);
  uint16x8_t f16 =
      vandq_u16(vreinterpretq_u16_s16(vshrq_n_s16(vreinterpretq_s16_u16(h), 1)), vdupq_n_u16(0xBFFF));
  if constexpr (KeepNan) {
    const uint16x8_t is_nan = vceqq_u16(vandq_u16(h, vdupq_n_u16(0x7F00)), vdupq_n_u16(0x7F00));
    f16 = vorrq_u16(f16, vandq_u16(is_nan, vdupq_n_u16(0x7E00)));
  }
  return vreinterpretq_f16_u16(f16);
}

// 16 codes -> the f16 patterns of codes 0..7 and 8..15.
template <bool E4M3, bool KeepNan>
inline void fp8x16_as_f16(uint8x16_t c, float16x8_t f[2]) {
  const uint8x16_t z = vdupq_n_u8(0);
  f[0] = fp8_as_f16<E4M3, KeepNan>(vreinterpretq_u16_u8(vzip1q_u8(z, c)));
  f[1] = fp8_as_f16<E4M3, KeepNan>(vreinterpretq_u16_u8(vzip2q_u8(z, c)));
}

}  // namespace mx8::cpu::detail
