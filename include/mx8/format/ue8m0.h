// UE8M0 (OCP "E8M0"): an 8-bit unsigned biased exponent, value 2^(b-127) for b in 0..254, 0xFF = NaN.
// No zero, no sign, no Inf. The byte 0x00 is 2^-127, an f32 subnormal: never build with FTZ.
#pragma once

#include <cstdint>

#include "mx8/format/common.h"

namespace mx8::format {

// down = toward zero (cudaRoundZero), up = toward +Inf (cudaRoundPosInf), both applied to |x|.
enum class Ue8m0Round : uint8_t { down, up };

// Exactly __nv_cvt_float_to_e8m0(x, saturate ? __NV_SATFINITE : __NV_NOSAT, down ? cudaRoundZero :
// cudaRoundPosInf). The sign is ignored. Zero and anything below 2^-127 give 0x00 (2^-127; "up" gives
// 0x01 for |x| in (2^-127, 2^-126)). NaN gives 0xFF. Inf and results above 2^127 give 0xFE when
// saturating, 0xFF (NaN) otherwise.
MX8_HD constexpr uint8_t ue8m0_from_f32(float x, Ue8m0Round round, bool saturate = true) {
  uint32_t a = f32_bits(x) & 0x7FFFFFFFu;
  uint32_t e = a >> 23, m = a & 0x7FFFFFu;
  if (a > 0x7F800000u) return 0xFF;
  if (round == Ue8m0Round::up && a < 0x7F800000u) {
    // f32 normals: any mantissa bit rounds up. f32 subnormals (e == 0) are 2^-127 * (m / 2^22):
    // above 2^-127 exactly when m > 2^22, and then the next power of two is 2^-126 (b = 1).
    e += (e == 0) ? (m > 0x400000u) : (m != 0);
  }
  if (e == 0xFFu && saturate) return 0xFE;
  return uint8_t(e);
}

MX8_HD constexpr float ue8m0_to_f32(uint8_t b) {
  if (b == 0xFF) return f32_from_bits(0x7FC00000u);
  if (b == 0) return f32_from_bits(0x00400000u);
  return f32_from_bits(uint32_t(b) << 23);
}

// 1 / 2^(b-127) = 2^(127-b), exactly, as an f32 (2^-127 for b = 254 is subnormal; NaN for 0xFF).
// Multiplying by it gives the same bits as dividing by ue8m0_to_f32(b), subnormal results included.
MX8_HD constexpr float ue8m0_reciprocal_f32(uint8_t b) {
  if (b == 0xFF) return f32_from_bits(0x7FC00000u);
  uint32_t r = 254u - b;
  return r == 0 ? f32_from_bits(0x00400000u) : f32_from_bits(r << 23);
}

// True when x is exactly 2^k for some k in [-127, 127] (the values UE8M0 can hold).
MX8_HD constexpr bool f32_is_ue8m0_value(float x) {
  uint32_t b = f32_bits(x);
  if (b == 0x00400000u) return true;
  uint32_t e = b >> 23;  // sign bit must be 0
  return (b & 0x7FFFFFu) == 0 && e >= 1 && e <= 254;
}

static_assert(ue8m0_from_f32(448.f, Ue8m0Round::up) == 0x88 &&
              ue8m0_from_f32(448.f, Ue8m0Round::down) == 0x87);
static_assert(ue8m0_to_f32(127) == 1.f && ue8m0_reciprocal_f32(0) == ue8m0_to_f32(254));

}  // namespace mx8::format
