// Shared building blocks of the format layer: the host/device qualifier, bit casts, and exact
// conversions between bf16/f16 bit patterns and f32. Everything here is constexpr-friendly, has no
// dependence on the floating-point environment (no FTZ assumption) and compiles under g++ and nvcc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MX8_HD __host__ __device__
#else
#define MX8_HD
#endif

namespace mx8::format {

// __builtin_bit_cast is constexpr under g++ and clang and accepted by nvcc in device code.
MX8_HD constexpr uint32_t f32_bits(float x) {
  return __builtin_bit_cast(uint32_t, x);
}
MX8_HD constexpr float f32_from_bits(uint32_t b) {
  return __builtin_bit_cast(float, b);
}

MX8_HD constexpr bool f32_is_nan(float x) {
  return (f32_bits(x) & 0x7FFFFFFFu) > 0x7F800000u;
}
MX8_HD constexpr bool f32_is_finite(float x) {
  return (f32_bits(x) & 0x7F800000u) != 0x7F800000u;
}
MX8_HD constexpr float f32_abs(float x) {
  return f32_from_bits(f32_bits(x) & 0x7FFFFFFFu);
}

// 2^e as an f32, for e in [-149, 127]; exact (subnormal powers included).
MX8_HD constexpr float f32_pow2(int e) {
  return e >= -126 ? f32_from_bits(uint32_t(e + 127) << 23) : f32_from_bits(1u << (e + 149));
}

// bf16 -> f32 is a shift: every bf16 (NaN payloads included) is an f32 with 16 zero low bits.
MX8_HD constexpr float bf16_to_f32(uint16_t h) {
  return f32_from_bits(uint32_t(h) << 16);
}

// f16 -> f32, exact for every pattern. NaN keeps its sign and payload (shifted), Inf stays Inf.
MX8_HD constexpr float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  if (exp == 0x1Fu) return f32_from_bits(sign | 0x7F800000u | (man << 13));
  if (exp != 0) return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
  // Zero or subnormal: man * 2^-24 is exact in f32 (a 10-bit integer times a power of two).
  return f32_from_bits(sign | f32_bits(float(man) * f32_pow2(-24)));
}

// f32 -> bf16, round to nearest even; NaN becomes a quiet NaN with the same sign.
MX8_HD constexpr uint16_t f32_to_bf16_rne(float x) {
  uint32_t b = f32_bits(x);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((b >> 16) | 0x0040u);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return uint16_t(b >> 16);
}

// f32 -> f16, round to nearest even, overflow to Inf; NaN stays NaN (quieted; sign and top payload kept).
MX8_HD constexpr uint16_t f32_to_f16_rne(float x) {
  uint32_t b = f32_bits(x);
  uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return uint16_t(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return uint16_t(sign | 0x7C00u);  // >= 65520 (65504 + half ulp) rounds to Inf
  int e = int(a >> 23);
  if (e == 0) return sign;  // f32 subnormals are far below half of f16's smallest subnormal
  int te = e - 127 + 15;
  uint32_t sig = (a & 0x7FFFFFu) | 0x800000u;
  int shift = te >= 1 ? 13 : 13 + (1 - te);
  if (shift > 25) return sign;
  uint32_t code = te >= 1 ? ((uint32_t(te) << 10) | ((a & 0x7FFFFFu) >> 13)) : (sig >> shift);
  uint32_t rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (code & 1u))) ++code;
  return uint16_t(sign | code);
}

}  // namespace mx8::format
