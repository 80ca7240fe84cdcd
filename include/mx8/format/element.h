// Element formats of FP8 and OCP MX: E4M3 ("fn"), E5M2, E3M2 and E2M3 (MXFP6), E2M1 (MXFP4), and
// MXINT8. Encoding is round-to-nearest-even on the exact value of the f32 input (no double rounding),
// decoding is exact. docs/FORMATS.md is the specification; numerics.md (research) has the sources.
//
// Special values, on encode:
//   E4M3  NaN (either sign) -> 0x7F. Finite overflow (|x| > 464) and +-Inf -> +-448 (0x7E/0xFE) when
//         saturating, NaN 0x7F/0xFF (sign kept) when not. -0 -> 0x80.
//   E5M2  NaN -> 0x7F. Overflow (|x| >= 61440) and +-Inf -> +-57344 (0x7B/0xFB) when saturating,
//         +-Inf (0x7C/0xFC) when not.
//   E3M2, E2M3, E2M1, INT8 have neither Inf nor NaN: overflow and +-Inf always go to +-max whatever
//         `saturate` says, and NaN goes to +max (0x1F, 0x1F, 0x7, 0x7F). That is what the CUDA toolkit's
//         __nv_cvt_float_to_fp6/fp4 do; in a quantized block a NaN is carried by the scale (0xFF).
// These are exactly the CUDA toolkit's host conversions (tests/format compares every bf16 and f16 and
// 2^28+ f32 patterns). MXINT8: value = code (two's complement) / 64, clamped symmetrically to +-127/64;
// code 0x80 (-2.0) is never produced but decodes to -2.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "mx8/format/common.h"

namespace mx8::format {

enum class ElementFormat : uint8_t { e4m3, e5m2, e3m2, e2m3, e2m1, int8 };
inline constexpr int kElementFormatCount = 6;

struct ElementTraits {
  const char* name;     // "e4m3", ...
  const char* mx_name;  // OCP MX name of the block format built on it: "MXFP8", ...
  int bits;             // storage bits of one element (8, 6 or 4)
  int exp_bits;         // 0 for int8
  int man_bits;         // 7 for int8 (magnitude bits)
  int bias;             // exponent bias (0 for int8)
  int emax;             // exponent of the largest power of two representable (OCP emax_elem)
  float max_normal;     // largest finite value
  float min_normal;     // smallest positive normal (int8: 1/64, its step)
  float min_subnormal;  // smallest positive value
  bool has_inf;
  bool has_nan;
  uint8_t max_code;  // code of +max_normal
  uint8_t nan_code;  // code produced for NaN (canonical NaN, or +max for formats without NaN)
};

MX8_HD constexpr ElementTraits element_traits(ElementFormat f) {
  switch (f) {
    case ElementFormat::e4m3:
      return {"e4m3", "MXFP8", 8, 4, 3, 7, 8, 448.f, 0.015625f, 0.001953125f, false, true, 0x7E, 0x7F};
    case ElementFormat::e5m2:
      return {"e5m2", "MXFP8", 8,    5,   2, 15, 15, 57344.f, 6.103515625e-05f, 1.52587890625e-05f,
              true,   true,    0x7B, 0x7F};
    case ElementFormat::e3m2:
      return {"e3m2", "MXFP6", 6, 3, 2, 3, 4, 28.f, 0.25f, 0.0625f, false, false, 0x1F, 0x1F};
    case ElementFormat::e2m3:
      return {"e2m3", "MXFP6", 6, 2, 3, 1, 2, 7.5f, 1.f, 0.125f, false, false, 0x1F, 0x1F};
    case ElementFormat::e2m1:
      return {"e2m1", "MXFP4", 4, 2, 1, 1, 2, 6.f, 1.f, 0.5f, false, false, 0x07, 0x07};
    case ElementFormat::int8:
    default:
      return {"int8", "MXINT8", 8, 0, 7, 0, 0, 127.f / 64.f, 0.015625f, 0.015625f, false, false, 0x7F, 0x7F};
  }
}

inline constexpr ElementFormat kAllElementFormats[kElementFormatCount] = {
    ElementFormat::e4m3, ElementFormat::e5m2, ElementFormat::e3m2,
    ElementFormat::e2m3, ElementFormat::e2m1, ElementFormat::int8};

// Parses the names element_traits() prints ("e4m3", ...). Host only.
inline constexpr std::optional<ElementFormat> parse_element_format(std::string_view s) {
  for (ElementFormat f : kAllElementFormats)
    if (s == element_traits(f).name) return f;
  return std::nullopt;
}

namespace detail {

// Round-to-nearest-even of |x| (f32 bits a, finite, sign cleared) to a sign-less minifloat with E
// exponent bits, M mantissa bits and bias B. Returns the magnitude code; a result above the format's
// largest code means overflow and is the caller's to handle. Works for any target whose smallest
// subnormal is >= 2^-24 (all of ours, and f16), so f32 subnormal inputs always round to zero.
template <int M, int B>
MX8_HD constexpr uint32_t rne_magnitude(uint32_t a) {
  int e = int(a >> 23);
  if (e == 0) return 0;
  uint32_t man = a & 0x7FFFFFu;
  int te = e - 127 + B;  // biased exponent in the target
  uint32_t code, rem, half;
  if (te >= 1) {
    constexpr int shift = 23 - M;
    code = (uint32_t(te) << M) | (man >> shift);
    rem = man & ((1u << shift) - 1u);
    half = 1u << (shift - 1);
  } else {
    int shift = 23 - M + (1 - te);  // value in units of the subnormal step
    if (shift > 25) return 0;       // below a quarter of the smallest subnormal
    uint32_t sig = man | 0x800000u;
    code = sig >> shift;
    rem = sig & ((1u << shift) - 1u);
    half = 1u << (shift - 1);
  }
  if (rem > half || (rem == half && (code & 1u))) ++code;  // a carry walks into the exponent: correct
  return code;
}

// Shared encoder of the 8-bit FP8 formats (sign in bit 7).
template <int M, int B, uint32_t MaxCode, bool InfOnOverflow>
MX8_HD constexpr uint8_t fp8_encode(float x, bool saturate) {
  uint32_t b = f32_bits(x);
  uint32_t a = b & 0x7FFFFFFFu;
  uint8_t sign = uint8_t((b >> 24) & 0x80u);
  if (a > 0x7F800000u) return 0x7F;  // NaN, sign dropped (as __nv_cvt_float_to_fp8)
  uint32_t mag = a == 0x7F800000u ? 0xFFFFFFFFu : rne_magnitude<M, B>(a);
  if (mag > MaxCode) {
    if (saturate) return uint8_t(sign | MaxCode);
    return uint8_t(sign | (InfOnOverflow ? 0x7Cu : 0x7Fu));
  }
  return uint8_t(sign | mag);
}

// Shared encoder of the MX sub-byte formats (FP6: sign in bit 5, FP4: sign in bit 3). Always saturating.
template <int M, int B, int SignBit, uint32_t MaxCode>
MX8_HD constexpr uint8_t fpx_encode(float x) {
  uint32_t b = f32_bits(x);
  uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return uint8_t(MaxCode);  // NaN -> +max
  uint8_t sign = uint8_t((b >> 31) << SignBit);
  uint32_t mag = a == 0x7F800000u ? MaxCode : rne_magnitude<M, B>(a);
  return uint8_t(sign | (mag > MaxCode ? MaxCode : mag));
}

// Shared decoder of every minifloat: exact, since every value is an f32 normal or zero.
template <int E, int M, int B, bool IeeeSpecials, bool E4m3Nan>
MX8_HD constexpr float fpx_decode(uint8_t code) {
  constexpr uint32_t kSignBit = 1u << (E + M);
  constexpr uint32_t kExpMask = (1u << E) - 1u;
  uint32_t sign = (code & kSignBit) ? 0x80000000u : 0u;
  uint32_t exp = (code >> M) & kExpMask;
  uint32_t man = code & ((1u << M) - 1u);
  if (IeeeSpecials && exp == kExpMask) return f32_from_bits(sign | 0x7F800000u | (man ? 0x400000u : 0u));
  if (E4m3Nan && exp == kExpMask && man == ((1u << M) - 1u)) return f32_from_bits(sign | 0x7FC00000u);
  if (exp == 0) return f32_from_bits(sign | f32_bits(float(man) * f32_pow2(1 - B - M)));
  return f32_from_bits(sign | ((exp - B + 127u) << 23) | (man << (23 - M)));
}

}  // namespace detail

// ---- E4M3 ("fn": bias 7, max 448, NaN = S.1111.111, no Inf) ----
MX8_HD constexpr uint8_t e4m3_from_f32(float x, bool saturate = true) {
  return detail::fp8_encode<3, 7, 0x7E, false>(x, saturate);
}
MX8_HD constexpr float e4m3_to_f32(uint8_t c) {
  return detail::fpx_decode<4, 3, 7, false, true>(c);
}

// ---- E5M2 (bias 15, max 57344, IEEE-style Inf and NaN) ----
MX8_HD constexpr uint8_t e5m2_from_f32(float x, bool saturate = true) {
  return detail::fp8_encode<2, 15, 0x7B, true>(x, saturate);
}
MX8_HD constexpr float e5m2_to_f32(uint8_t c) {
  return detail::fpx_decode<5, 2, 15, true, false>(c);
}

// ---- E3M2 (MXFP6; bias 3, max 28, codes 0..63) ----
MX8_HD constexpr uint8_t e3m2_from_f32(float x, bool = true) {
  return detail::fpx_encode<2, 3, 5, 0x1F>(x);
}
MX8_HD constexpr float e3m2_to_f32(uint8_t c) {
  return detail::fpx_decode<3, 2, 3, false, false>(c & 0x3F);
}

// ---- E2M3 (MXFP6; bias 1, max 7.5, codes 0..63) ----
MX8_HD constexpr uint8_t e2m3_from_f32(float x, bool = true) {
  return detail::fpx_encode<3, 1, 5, 0x1F>(x);
}
MX8_HD constexpr float e2m3_to_f32(uint8_t c) {
  return detail::fpx_decode<2, 3, 1, false, false>(c & 0x3F);
}

// ---- E2M1 (MXFP4; bias 1, max 6, codes 0..15) ----
MX8_HD constexpr uint8_t e2m1_from_f32(float x, bool = true) {
  return detail::fpx_encode<1, 1, 3, 0x7>(x);
}
MX8_HD constexpr float e2m1_to_f32(uint8_t c) {
  return detail::fpx_decode<2, 1, 1, false, false>(c & 0xF);
}

// ---- INT8 (MXINT8; value = code / 64, symmetric clamp to +-127) ----
MX8_HD constexpr uint8_t int8_from_f32(float x, bool = true) {
  uint32_t b = f32_bits(x);
  uint32_t a = b & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7F;                      // NaN -> +max
  if (a >= 0x3FFF0000u) return (b >> 31) ? 0x81 : 0x7F;  // |x| >= 127.5/64 (ties to even -> 128) and Inf
  // |x| * 64 < 127.5: round to nearest even integer. 64 = 2^6, so the exponent just moves by 6.
  int e = int(a >> 23) - 127 + 6;  // unbiased exponent of |x| * 64
  uint32_t q = 0;
  if (e >= -1) {
    uint32_t sig = (a & 0x7FFFFFu) | 0x800000u;
    int shift = 23 - e;  // 17..24
    q = sig >> shift;
    uint32_t rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
  }
  return uint8_t((b >> 31) ? (0u - q) & 0xFFu : q);
}
MX8_HD constexpr float int8_to_f32(uint8_t c) {
  return float(int8_t(c)) * 0.015625f;
}

// ---- encodes from bf16 and f16 bit patterns: the exact widening to f32, then the f32 encode. This
// equals __nv_cvt_bfloat16raw_to_fp8 / __nv_cvt_halfraw_to_fp8 (and the fp6/fp4 variants) exactly.
MX8_HD constexpr uint8_t e4m3_from_bf16(uint16_t h, bool saturate = true) {
  return e4m3_from_f32(bf16_to_f32(h), saturate);
}
MX8_HD constexpr uint8_t e4m3_from_f16(uint16_t h, bool saturate = true) {
  return e4m3_from_f32(f16_to_f32(h), saturate);
}
MX8_HD constexpr uint8_t e5m2_from_bf16(uint16_t h, bool saturate = true) {
  return e5m2_from_f32(bf16_to_f32(h), saturate);
}
MX8_HD constexpr uint8_t e5m2_from_f16(uint16_t h, bool saturate = true) {
  return e5m2_from_f32(f16_to_f32(h), saturate);
}

// ---- run-time format selection (a switch; hot loops should hoist it, see quantize_ref.cpp) ----
MX8_HD constexpr uint8_t encode_element(ElementFormat f, float x, bool saturate = true) {
  switch (f) {
    case ElementFormat::e4m3:
      return e4m3_from_f32(x, saturate);
    case ElementFormat::e5m2:
      return e5m2_from_f32(x, saturate);
    case ElementFormat::e3m2:
      return e3m2_from_f32(x);
    case ElementFormat::e2m3:
      return e2m3_from_f32(x);
    case ElementFormat::e2m1:
      return e2m1_from_f32(x);
    case ElementFormat::int8:
    default:
      return int8_from_f32(x);
  }
}

MX8_HD constexpr float decode_element(ElementFormat f, uint8_t code) {
  switch (f) {
    case ElementFormat::e4m3:
      return e4m3_to_f32(code);
    case ElementFormat::e5m2:
      return e5m2_to_f32(code);
    case ElementFormat::e3m2:
      return e3m2_to_f32(code);
    case ElementFormat::e2m3:
      return e2m3_to_f32(code);
    case ElementFormat::e2m1:
      return e2m1_to_f32(code);
    case ElementFormat::int8:
    default:
      return int8_to_f32(code);
  }
}

MX8_HD constexpr uint8_t encode_element_from_bf16(ElementFormat f, uint16_t h, bool saturate = true) {
  return encode_element(f, bf16_to_f32(h), saturate);
}
MX8_HD constexpr uint8_t encode_element_from_f16(ElementFormat f, uint16_t h, bool saturate = true) {
  return encode_element(f, f16_to_f32(h), saturate);
}

// Compile-time spot checks (the tests cover every code and the toolkit's conversions).
static_assert(e4m3_from_f32(448.f) == 0x7E && e4m3_from_f32(464.f) == 0x7E && e4m3_from_f32(1.f) == 0x38);
static_assert(e5m2_from_f32(61440.f, false) == 0x7C && e5m2_from_f32(61440.f) == 0x7B);
static_assert(e4m3_to_f32(0x7E) == 448.f && e5m2_to_f32(0x7B) == 57344.f && e2m1_to_f32(0x7) == 6.f);

}  // namespace mx8::format
