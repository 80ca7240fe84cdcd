// AVX2 + F16C row-segment kernels of the quantizer: block max for f32/bf16/f16 and the E4M3/E5M2
// encode and decode. 32 elements per step; the ragged tail goes through the scalar kernels.
//
// Encode (f32 v = x * inv_scale, exactly the reference's product) -> FP8 with M mantissa bits, bias B,
// round to nearest even, as integer arithmetic on a = bits(|v|):
//   |v| >= min normal: a + (2^(22-M) - 1) + lsb rounds the f32 mantissa to M bits (a carry walks into
//                      the exponent, which is right); >> (23-M) and subtracting (127-B) << M rebiases.
//   |v| <  min normal: adding C, a power of two whose f32 ulp is the FP8 subnormal step, makes the
//                      FPU round |v| to a multiple of that step (RNE), and bits(|v| + C) - bits(C) is
//                      the code (E4M3: C = 2^14, ulp 2^-9; E5M2: C = 2^7, ulp 2^-16). A value that
//                      rounds up to the min normal gives its code (8 or 4) too.
//   then overflow (code > max) saturates to max or becomes NaN/Inf, NaN inputs become 0x7F (sign
//   dropped), and the sign is ORed in. tests/backend_cpu compares this with format::encode_element on
//   every bf16 and f16 pattern and a structured f32 sweep.
// Functions carry target attributes instead of the file being built with -mavx2 (ODR: see gemv_avx2.cpp).
#if defined(__x86_64__)

#include <immintrin.h>

#include "backend/cpu/quantize_kernels.h"
#include "mx8/format/scale_rule.h"

#define MX8_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace mx8::cpu::detail {
namespace {

// 8 source elements -> exact f32.
template <SourceType T>
MX8_AVX2 inline __m256 load8(const void* row, int64_t c) {
  if constexpr (T == SourceType::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(row) + c);
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + c));
    if constexpr (T == SourceType::bf16)
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    else
      return _mm256_cvtph_ps(h);  // exact for every f16, subnormals included
  }
}

MX8_AVX2 inline uint32_t hmax_epu32(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
  return uint32_t(_mm_cvtsi128_si32(m));
}

MX8_AVX2 inline uint32_t hmax_epu16(__m256i v) {
  __m128i m = _mm_max_epu16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu16(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epu16(m, _mm_shuffle_epi32(m, 0xB1));
  m = _mm_max_epu16(m, _mm_srli_epi32(m, 16));
  return uint32_t(_mm_cvtsi128_si32(m)) & 0xFFFF;
}

// The SIMD part of the block max over [c0, c1); returns where it stopped (the caller finishes the
// tail with the scalar kernel).
template <SourceType T>
MX8_AVX2 inline int64_t amax_simd(const void* row, int64_t c0, int64_t c1, uint32_t& acc) {
  int64_t c = c0;
  if constexpr (T == SourceType::f32) {
    const float* p = static_cast<const float*>(row);
    const __m256i abs = _mm256_set1_epi32(0x7FFFFFFF);
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    for (; c + 16 <= c1; c += 16) {
      m0 = _mm256_max_epu32(
          m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c)), abs));
      m1 = _mm256_max_epu32(
          m1, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c + 8)), abs));
    }
    uint32_t m = hmax_epu32(_mm256_max_epu32(m0, m1));
    acc = m > acc ? m : acc;
  } else {
    // Integer max of the 16-bit magnitudes orders bf16/f16 values like their f32 widenings, NaN on top.
    const uint16_t* p = static_cast<const uint16_t*>(row);
    const __m256i abs = _mm256_set1_epi16(0x7FFF);
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    for (; c + 32 <= c1; c += 32) {
      m0 = _mm256_max_epu16(
          m0, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c)), abs));
      m1 = _mm256_max_epu16(
          m1, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c + 16)), abs));
    }
    uint16_t h = uint16_t(hmax_epu16(_mm256_max_epu16(m0, m1)));
    float wide = T == SourceType::bf16 ? format::bf16_to_f32(h) : format::f16_to_f32(h);
    acc = format::amax_bits_accumulate(acc, wide);
  }
  return c;
}

MX8_AVX2 uint32_t amax_avx2(SourceType t, const void* row, int64_t c0, int64_t c1, uint32_t acc) {
  int64_t c;
  switch (t) {
    case SourceType::f32:
      c = amax_simd<SourceType::f32>(row, c0, c1, acc);
      break;
    case SourceType::bf16:
      c = amax_simd<SourceType::bf16>(row, c0, c1, acc);
      break;
    case SourceType::f16:
    default:
      c = amax_simd<SourceType::f16>(row, c0, c1, acc);
      break;
  }
  return c < c1 ? quant_kernels_scalar().amax(t, row, c, c1, acc) : acc;
}

// Per-format constants of the integer encode.
template <ElementFormat F>
struct Fp8Consts;
template <>
struct Fp8Consts<ElementFormat::e4m3> {
  static constexpr int kShift = 20;                   // 23 - M
  static constexpr int kRebias = (127 - 7) << 3;      // (127 - B) << M
  static constexpr uint32_t kMinNormal = 0x3C800000;  // 2^-6
  static constexpr uint32_t kMagic = 0x46800000;      // 2^14: f32 ulp 2^-9, the subnormal step
  static constexpr int kMaxCode = 0x7E;
  static constexpr int kOverflowCode = 0x7F;  // NaN (non-saturating)
};
template <>
struct Fp8Consts<ElementFormat::e5m2> {
  static constexpr int kShift = 21;
  static constexpr int kRebias = (127 - 15) << 2;
  static constexpr uint32_t kMinNormal = 0x38800000;  // 2^-14
  static constexpr uint32_t kMagic = 0x43000000;      // 2^7: f32 ulp 2^-16
  static constexpr int kMaxCode = 0x7B;
  static constexpr int kOverflowCode = 0x7C;  // Inf (non-saturating)
};

// 8 f32 -> 8 codes in the low byte of each 32-bit lane.
template <ElementFormat F, bool Saturate>
MX8_AVX2 inline __m256i encode8(__m256 v) {
  using K = Fp8Consts<F>;
  const __m256i b = _mm256_castps_si256(v);
  const __m256i a = _mm256_and_si256(b, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(b, 24), _mm256_set1_epi32(0x80));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, K::kShift), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_add_epi32(a, _mm256_add_epi32(_mm256_set1_epi32((1 << (K::kShift - 1)) - 1), lsb));
  const __m256i normal =
      _mm256_sub_epi32(_mm256_srli_epi32(rounded, K::kShift), _mm256_set1_epi32(K::kRebias));
  const __m256 magic = _mm256_castsi256_ps(_mm256_set1_epi32(int(K::kMagic)));
  const __m256i sub = _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a), magic)),
                                       _mm256_castps_si256(magic));
  const __m256i is_sub = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(K::kMinNormal)), a);
  __m256i mag = _mm256_blendv_epi8(normal, sub, is_sub);
  if constexpr (Saturate) {
    mag = _mm256_min_epu32(mag, _mm256_set1_epi32(K::kMaxCode));  // +-Inf and overflow -> +-max
  } else {
    const __m256i over = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(K::kMaxCode));
    mag = _mm256_blendv_epi8(mag, _mm256_set1_epi32(K::kOverflowCode), over);
  }
  __m256i code = _mm256_or_si256(mag, sign);
  const __m256i is_nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000));
  return _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7F), is_nan);
}

// Four vectors of 8 codes (elements 0..7, 8..15, 16..23, 24..31) -> 32 bytes in order.
MX8_AVX2 inline void store32(__m256i c0, __m256i c1, __m256i c2, __m256i c3, uint8_t* dst) {
  // packus works per 128-bit lane, leaving dwords in the order 0-3 of c0,c1,c2,c3 then 4-7 of each.
  const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
  const __m256i ordered = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), ordered);
}

template <ElementFormat F, bool Saturate, SourceType T>
MX8_AVX2 int64_t encode_t(const void* row, int64_t c0, int64_t c1, float inv_scale, uint8_t* codes) {
  const __m256 s = _mm256_set1_ps(inv_scale);
  int64_t c = c0;
  for (; c + 32 <= c1; c += 32) {
    __m256i q0 = encode8<F, Saturate>(_mm256_mul_ps(load8<T>(row, c), s));
    __m256i q1 = encode8<F, Saturate>(_mm256_mul_ps(load8<T>(row, c + 8), s));
    __m256i q2 = encode8<F, Saturate>(_mm256_mul_ps(load8<T>(row, c + 16), s));
    __m256i q3 = encode8<F, Saturate>(_mm256_mul_ps(load8<T>(row, c + 24), s));
    store32(q0, q1, q2, q3, codes + c);
  }
  return c;
}

template <ElementFormat F, bool Saturate>
MX8_AVX2 int64_t encode_s(SourceType t, const void* row, int64_t c0, int64_t c1, float inv_scale,
                          uint8_t* codes) {
  switch (t) {
    case SourceType::f32:
      return encode_t<F, Saturate, SourceType::f32>(row, c0, c1, inv_scale, codes);
    case SourceType::bf16:
      return encode_t<F, Saturate, SourceType::bf16>(row, c0, c1, inv_scale, codes);
    case SourceType::f16:
    default:
      return encode_t<F, Saturate, SourceType::f16>(row, c0, c1, inv_scale, codes);
  }
}

MX8_AVX2 bool encode_avx2(SourceType t, const void* row, int64_t c0, int64_t c1, float inv_scale,
                          ElementFormat f, bool saturate, uint8_t* codes) {
  int64_t done;
  if (f == ElementFormat::e4m3)
    done = saturate ? encode_s<ElementFormat::e4m3, true>(t, row, c0, c1, inv_scale, codes)
                    : encode_s<ElementFormat::e4m3, false>(t, row, c0, c1, inv_scale, codes);
  else if (f == ElementFormat::e5m2)
    done = saturate ? encode_s<ElementFormat::e5m2, true>(t, row, c0, c1, inv_scale, codes)
                    : encode_s<ElementFormat::e5m2, false>(t, row, c0, c1, inv_scale, codes);
  else
    return false;
  return done < c1 ? quant_kernels_scalar().encode(t, row, done, c1, inv_scale, f, saturate, codes) : true;
}

// A stripe of nrows rows of nrows x bc blocks (1 x bc tiles when nrows = 1) with everything fixed
// at compile time: no calls per block except the scalar tails of ragged blocks. Each block is read
// twice (max, then encode) while it is still in L1/L2.
template <ElementFormat F, bool Saturate, SourceType T>
MX8_AVX2 void stripe_t(const void* src, int64_t nrows, int64_t cols, int64_t bc, format::ScaleOptions opt,
                       uint8_t* codes, float* scales_f32, uint8_t* scales_u8) {
  constexpr int64_t kElem = T == SourceType::f32 ? 4 : 2;
  const uint8_t* base = static_cast<const uint8_t*>(src);
  const QuantKernels& scalar = quant_kernels_scalar();
  for (int64_t c0 = 0, g = 0; c0 < cols; c0 += bc, ++g) {
    const int64_t c1 = c0 + bc < cols ? c0 + bc : cols;
    uint32_t amax = 0;
    for (int64_t r = 0; r < nrows; ++r) {
      const void* row = base + r * cols * kElem;
      int64_t c = amax_simd<T>(row, c0, c1, amax);
      if (c < c1) amax = scalar.amax(T, row, c, c1, amax);
    }
    const format::BlockScale s = format::compute_block_scale(format::f32_from_bits(amax), F, opt);
    scales_f32[g] = s.scale;
    scales_u8[g] = s.ue8m0;
    for (int64_t r = 0; r < nrows; ++r) {
      const void* row = base + r * cols * kElem;
      int64_t c = encode_t<F, Saturate, T>(row, c0, c1, s.inv_scale, codes + r * cols);
      if (c < c1) scalar.encode(T, row, c, c1, s.inv_scale, F, Saturate, codes + r * cols);
    }
  }
}

template <ElementFormat F, bool Saturate>
MX8_AVX2 void stripe_s(SourceType t, const void* src, int64_t nrows, int64_t cols, int64_t bc,
                       format::ScaleOptions opt, uint8_t* codes, float* sf, uint8_t* su) {
  switch (t) {
    case SourceType::f32:
      return stripe_t<F, Saturate, SourceType::f32>(src, nrows, cols, bc, opt, codes, sf, su);
    case SourceType::bf16:
      return stripe_t<F, Saturate, SourceType::bf16>(src, nrows, cols, bc, opt, codes, sf, su);
    case SourceType::f16:
    default:
      return stripe_t<F, Saturate, SourceType::f16>(src, nrows, cols, bc, opt, codes, sf, su);
  }
}

MX8_AVX2 bool stripe_avx2(SourceType t, const void* src, int64_t nrows, int64_t cols, int64_t bc,
                          ElementFormat f, bool saturate, format::ScaleOptions opt, uint8_t* codes, float* sf,
                          uint8_t* su) {
  if (f == ElementFormat::e4m3) {
    if (saturate)
      stripe_s<ElementFormat::e4m3, true>(t, src, nrows, cols, bc, opt, codes, sf, su);
    else
      stripe_s<ElementFormat::e4m3, false>(t, src, nrows, cols, bc, opt, codes, sf, su);
    return true;
  }
  if (f == ElementFormat::e5m2) {
    if (saturate)
      stripe_s<ElementFormat::e5m2, true>(t, src, nrows, cols, bc, opt, codes, sf, su);
    else
      stripe_s<ElementFormat::e5m2, false>(t, src, nrows, cols, bc, opt, codes, sf, su);
    return true;
  }
  return false;
}

// Decode: the byte above a zero byte is an f16 (E5M2 exactly; E4M3 after the shift of gemv_avx2.cpp,
// worth 2^-8 times the value, with the NaN code 0x7F forced to an f16 NaN). value * 2^8 is exact, so
// (v * 2^8) * scale rounds once, like the reference's decode(code) * scale.
template <ElementFormat F>
MX8_AVX2 inline void decode16(__m128i c, __m256 scale, float* dst) {
  const __m128i z = _mm_setzero_si128();
  __m128i h[2] = {_mm_unpacklo_epi8(z, c), _mm_unpackhi_epi8(z, c)};
  for (int i = 0; i < 2; ++i) {
    __m256 v;
    if constexpr (F == ElementFormat::e4m3) {
      const __m128i is_nan =
          _mm_cmpeq_epi16(_mm_and_si128(h[i], _mm_set1_epi16(0x7F00)), _mm_set1_epi16(0x7F00));
      __m128i f16 = _mm_and_si128(_mm_srai_epi16(h[i], 1), _mm_set1_epi16(short(0xBFFF)));
      f16 = _mm_or_si128(f16, _mm_and_si128(is_nan, _mm_set1_epi16(0x7E00)));
      v = _mm256_mul_ps(_mm256_cvtph_ps(f16), _mm256_set1_ps(256.f));
    } else {
      v = _mm256_cvtph_ps(h[i]);
    }
    _mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(v, scale));
  }
}

MX8_AVX2 bool decode_avx2(const uint8_t* codes, int64_t c0, int64_t c1, float scale, ElementFormat f,
                          float* dst) {
  if (f != ElementFormat::e4m3 && f != ElementFormat::e5m2) return false;
  const __m256 s = _mm256_set1_ps(scale);
  int64_t c = c0;
  for (; c + 16 <= c1; c += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + c));
    if (f == ElementFormat::e4m3)
      decode16<ElementFormat::e4m3>(v, s, dst + c);
    else
      decode16<ElementFormat::e5m2>(v, s, dst + c);
  }
  return c < c1 ? quant_kernels_scalar().decode(codes, c, c1, scale, f, dst) : true;
}

}  // namespace

const QuantKernels& quant_kernels_avx2() {
  static const QuantKernels k{amax_avx2, encode_avx2, decode_avx2, stripe_avx2};
  return k;
}

}  // namespace mx8::cpu::detail

#endif  // __x86_64__
