// The ISA-independent half of the SIMD quantizer kernels (quantize_avx2.cpp, quantize_neon.cpp): the
// integer encode's constants, the step from run-time choices (source type, element format,
// saturation) to compile-time kernels, and the fused stripe. An ISA supplies a policy S with
//   template <SourceType T> static int64_t amax(const void* row, int64_t c0, int64_t c1, uint32_t& acc);
//   template <ElementFormat F, bool Saturate, SourceType T>
//   static int64_t encode(const void* row, int64_t c0, int64_t c1, float inv_scale, uint8_t* codes);
// each running its SIMD body from c0 and returning where it stopped (the scalar kernels finish the
// tail, so every element is computed by one of two expressions that agree bit for bit), and
//   template <ElementFormat F, bool Saturate, SourceType T> static void stripe(...)
// that calls stripe_body<S, F, Saturate, T> (below) from inside the ISA's target attribute.
#pragma once

#include <cstdint>

#include "backend/cpu/quantize_kernels.h"
#include "mx8/format/scale_rule.h"

namespace mx8::cpu::detail {

// Encode f32 v -> FP8 with M mantissa bits and bias B, round to nearest even, as integer arithmetic on
// a = bits(|v|):
//   |v| >= min normal: a + (2^(22-M) - 1) + lsb rounds the f32 mantissa to M bits (a carry walks into
//                      the exponent, which is right); >> (23-M) and subtracting (127-B) << M rebiases.
//   |v| <  min normal: adding C, a power of two whose f32 ulp is the FP8 subnormal step, makes the
//                      FPU round |v| to a multiple of that step (RNE), and bits(|v| + C) - bits(C) is
//                      the code (E4M3: C = 2^14, ulp 2^-9; E5M2: C = 2^7, ulp 2^-16). A value that
//                      rounds up to the min normal gives its code (8 or 4) too.
//   then overflow (code > max) saturates to max or becomes NaN/Inf, NaN inputs become 0x7F (sign
//   dropped), and the sign is ORed in.
template <ElementFormat F>
struct Fp8EncodeConsts;
template <>
struct Fp8EncodeConsts<ElementFormat::e4m3> {
  static constexpr int kShift = 20;                    // 23 - M
  static constexpr uint32_t kRebias = (127 - 7) << 3;  // (127 - B) << M
  static constexpr uint32_t kMinNormal = 0x3C800000;   // 2^-6
  static constexpr uint32_t kMagic = 0x46800000;       // 2^14: f32 ulp 2^-9, the subnormal step
  static constexpr uint32_t kMaxCode = 0x7E;
  static constexpr uint32_t kOverflowCode = 0x7F;  // NaN (non-saturating)
};
template <>
struct Fp8EncodeConsts<ElementFormat::e5m2> {
  static constexpr int kShift = 21;
  static constexpr uint32_t kRebias = (127 - 15) << 2;
  static constexpr uint32_t kMinNormal = 0x38800000;  // 2^-14
  static constexpr uint32_t kMagic = 0x43000000;      // 2^7: f32 ulp 2^-16
  static constexpr uint32_t kMaxCode = 0x7B;
  static constexpr uint32_t kOverflowCode = 0x7C;  // Inf (non-saturating)
};

// fn.template operator()<T>() for the run-time source type t.
template <class Fn>
decltype(auto) with_source(SourceType t, Fn&& fn) {
  switch (t) {
    case SourceType::f32:
      return fn.template operator()<SourceType::f32>();
    case SourceType::bf16:
      return fn.template operator()<SourceType::bf16>();
    case SourceType::f16:
    default:
      return fn.template operator()<SourceType::f16>();
  }
}

// fn.template operator()<F, Saturate>() for E4M3 and E5M2; false (no call) for other formats.
template <class Fn>
bool with_fp8(ElementFormat f, bool saturate, Fn&& fn) {
  if (f == ElementFormat::e4m3)
    saturate ? fn.template operator()<ElementFormat::e4m3, true>()
             : fn.template operator()<ElementFormat::e4m3, false>();
  else if (f == ElementFormat::e5m2)
    saturate ? fn.template operator()<ElementFormat::e5m2, true>()
             : fn.template operator()<ElementFormat::e5m2, false>();
  else
    return false;
  return true;
}

template <class S>
uint32_t simd_amax(SourceType t, const void* row, int64_t c0, int64_t c1, uint32_t acc) {
  const int64_t c = with_source(t, [&]<SourceType T>() { return S::template amax<T>(row, c0, c1, acc); });
  return c < c1 ? quant_kernels_scalar().amax(t, row, c, c1, acc) : acc;
}

template <class S>
bool simd_encode(SourceType t, const void* row, int64_t c0, int64_t c1, float inv_scale, ElementFormat f,
                 bool saturate, uint8_t* codes) {
  int64_t done = c1;
  if (!with_fp8(f, saturate, [&]<ElementFormat F, bool Saturate>() {
        done = with_source(t, [&]<SourceType T>() {
          return S::template encode<F, Saturate, T>(row, c0, c1, inv_scale, codes);
        });
      }))
    return false;
  return done < c1 ? quant_kernels_scalar().encode(t, row, done, c1, inv_scale, f, saturate, codes) : true;
}

// The body of QuantKernels::quantize_stripe for one element format, saturation and source type:
// nrows rows cut into nrows x bc blocks, max, scale and encode per block, each block read twice
// (max, then encode) while it is still in L1/L2. Always inlined into the policy's own stripe<F,
// Saturate, T>, which carries the ISA's target attribute, so that S::amax and S::encode are inlined
// into the loop (a function without the attribute could only call them).
template <class S, ElementFormat F, bool Saturate, SourceType T>
[[gnu::always_inline]] inline void stripe_body(const void* src, int64_t nrows, int64_t cols, int64_t bc,
                                               format::ScaleOptions opt, uint8_t* codes, float* scales_f32,
                                               uint8_t* scales_u8) {
  constexpr int64_t kElem = T == SourceType::f32 ? 4 : 2;
  const uint8_t* base = static_cast<const uint8_t*>(src);
  const QuantKernels& scalar = quant_kernels_scalar();
  for (int64_t c0 = 0, g = 0; c0 < cols; c0 += bc, ++g) {
    const int64_t c1 = c0 + bc < cols ? c0 + bc : cols;
    uint32_t amax = 0;
    for (int64_t r = 0; r < nrows; ++r) {
      const void* row = base + r * cols * kElem;
      const int64_t c = S::template amax<T>(row, c0, c1, amax);
      if (c < c1) amax = scalar.amax(T, row, c, c1, amax);
    }
    const format::BlockScale s = format::compute_block_scale(format::f32_from_bits(amax), F, opt);
    scales_f32[g] = s.scale;
    scales_u8[g] = s.ue8m0;
    for (int64_t r = 0; r < nrows; ++r) {
      const void* row = base + r * cols * kElem;
      const int64_t c = S::template encode<F, Saturate, T>(row, c0, c1, s.inv_scale, codes + r * cols);
      if (c < c1) scalar.encode(T, row, c, c1, s.inv_scale, F, Saturate, codes + r * cols);
    }
  }
}

template <class S>
bool simd_quantize_stripe(SourceType t, const void* src, int64_t nrows, int64_t cols, int64_t bc,
                          ElementFormat f, bool saturate, format::ScaleOptions opt, uint8_t* codes,
                          float* scales_f32, uint8_t* scales_u8) {
  return with_fp8(f, saturate, [&]<ElementFormat F, bool Saturate>() {
    with_source(t, [&]<SourceType T>() {
      S::template stripe<F, Saturate, T>(src, nrows, cols, bc, opt, codes, scales_f32, scales_u8);
    });
  });
}

}  // namespace mx8::cpu::detail
