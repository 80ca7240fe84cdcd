// How a block's scale is chosen from its amax (the largest |x| in the block). The rule is always an
// explicit parameter; docs/FORMATS.md explains each and where it comes from.
//
//   ceil   2^ceil(log2(amax / max_elem)): the smallest power of two that keeps the block max in
//          range, so nothing saturates. DeepSeek-V3.1 (UE8M0), NVIDIA RCEIL, cuBLAS, torchao RCEIL.
//          Computed as RoundPosInf-to-UE8M0 of amax * fp32(1 / max_elem) (torchao, cuBLAS, TE do the
//          same multiply). For every FP element format this equals the exact ceil for all normal amax
//          (tests/format checks a whole binade); the exceptions, where the block max saturates by at
//          most 2 ulps, are E4M3's amax 0x04600001 (numerics.md 5.4) and, for INT8, amax within 2 ulps
//          above 127/64 * 2^k (fp32(64/127) rounds down).
//   floor  2^(floor(log2(amax)) - emax_elem): OCP MX v1.0. Blocks whose max has a large significand
//          saturate (E4M3: significand > 1.8125).
//   fp32   amax / max_elem as an f32, not a power of two (DeepSeek-V3's original scales).
//
// Exponents come from the f32 bit fields, never from log2f (wrong next to powers of two).
// Non-finite amax (a NaN or Inf anywhere in the block) gives scale NaN (UE8M0 0xFF) and a NaN
// inv_scale, so every element of the block encodes NaN (0x7F for FP8; the formats without NaN get
// their NaN code, +max, and the block still decodes to NaN through its scale).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"

namespace mx8::format {

enum class ScaleRule : uint8_t { ceil, floor, fp32 };

inline constexpr const char* scale_rule_name(ScaleRule r) {
  return r == ScaleRule::ceil ? "ceil" : r == ScaleRule::floor ? "floor" : "fp32";
}
inline constexpr std::optional<ScaleRule> parse_scale_rule(std::string_view s) {
  if (s == "ceil") return ScaleRule::ceil;
  if (s == "floor") return ScaleRule::floor;
  if (s == "fp32") return ScaleRule::fp32;
  return std::nullopt;
}
// True for the rules whose scales are powers of two (storable as UE8M0).
MX8_HD constexpr bool scale_rule_is_pow2(ScaleRule r) {
  return r != ScaleRule::fp32;
}

struct ScaleOptions {
  ScaleRule rule = ScaleRule::ceil;
  float amax_floor = 0.f;  // amax = max(amax, amax_floor) first; DeepSeek uses 1e-4 (zero blocks -> 0x69)
};

struct BlockScale {
  float scale;      // dequantize: x ~= decode(code) * scale
  float inv_scale;  // quantize:   code = encode(x * inv_scale)
  uint8_t ue8m0;    // the scale's UE8M0 byte (ceil/floor rules; 0xFF when non-finite); 0 for fp32
};

// The fp32 rule keeps scale >= 2^-126 so that its reciprocal is finite: a zero block then quantizes
// to zeros instead of 0 * Inf = NaN. (DeepSeek-V3 itself divided by zero there; V3.1 clamps amax.)
inline constexpr float kFp32RuleMinScale = 1.1754943508222875e-38f;  // 2^-126

// fp32(1 / max_elem), the multiplier of the ceil rule (E4M3: 0x3B124925).
MX8_HD constexpr float element_max_reciprocal(ElementFormat f) {
  return 1.0f / element_traits(f).max_normal;
}

// The scale of a block whose largest magnitude is `amax` (a NaN or Inf amax marks a non-finite block).
MX8_HD constexpr BlockScale compute_block_scale(float amax, ElementFormat f, ScaleOptions opt) {
  const float nan = f32_from_bits(0x7FC00000u);
  uint32_t a = f32_bits(amax) & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return {nan, nan, 0xFF};
  amax = f32_from_bits(a);
  if (amax < opt.amax_floor) amax = opt.amax_floor;
  if (opt.rule == ScaleRule::fp32) {
    float s = amax / element_traits(f).max_normal;
    if (s < kFp32RuleMinScale) s = kFp32RuleMinScale;
    return {s, 1.0f / s, 0};
  }
  uint8_t b;
  if (opt.rule == ScaleRule::ceil) {
    // Saturating: only a huge amax with INT8 (max < 2) can reach 2^128; clamp to 2^127.
    b = ue8m0_from_f32(amax * element_max_reciprocal(f), Ue8m0Round::up, true);
  } else {
    int e = int(f32_bits(amax) >> 23);  // 0 for zero and subnormals: unbiased -127
    int s = (e - 127) - element_traits(f).emax;
    s = s < -127 ? -127 : s > 127 ? 127 : s;
    b = uint8_t(s + 127);
  }
  return {ue8m0_to_f32(b), ue8m0_reciprocal_f32(b), b};
}

// Block amax over f32 values with NaN propagation: max of |x| as integers orders finite values and Inf
// correctly and puts every NaN above Inf, so one integer max does both (a plain fmaxf drops NaN).
MX8_HD constexpr uint32_t amax_bits_accumulate(uint32_t acc, float x) {
  uint32_t a = f32_bits(x) & 0x7FFFFFFFu;
  return a > acc ? a : acc;
}

static_assert(compute_block_scale(0.f, ElementFormat::e4m3, {ScaleRule::ceil, 1e-4f}).ue8m0 == 0x69);
static_assert(compute_block_scale(448.f, ElementFormat::e4m3, {ScaleRule::ceil}).ue8m0 == 127);
static_assert(compute_block_scale(480.f, ElementFormat::e4m3, {ScaleRule::floor}).ue8m0 == 127);

}  // namespace mx8::format
