// AVX2 + F16C row-segment kernels of the quantizer: block max for f32/bf16/f16 and the E4M3/E5M2
// encode and decode, 32 elements per step; quantize_simd.h turns them into QuantKernels (the ragged
// tails go through the scalar kernels) and explains the integer encode. tests/backend_cpu compares
// the encode with format::encode_element on every bf16 and f16 pattern and a structured f32 sweep.
// Functions carry target attributes instead of the file being built with -mavx2 (ODR: see gemv_avx2.cpp).
#if defined(__x86_64__)

#include <immintrin.h>

#include "backend/cpu/quantize_simd.h"

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

// The SIMD part of the block max over [c0, c1); returns where it stopped.
template <SourceType T>
MX8_AVX2 int64_t amax_simd(const void* row, int64_t c0, int64_t c1, uint32_t& acc) {
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

// 8 f32 -> 8 codes in the low byte of each 32-bit lane.
template <ElementFormat F, bool Saturate>
MX8_AVX2 inline __m256i encode8(__m256 v) {
  using K = Fp8EncodeConsts<F>;
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

// Decode: the byte above a zero byte is an f16 (E5M2 exactly; E4M3 after the shift of gemv_avx2.cpp,
// worth 2^-8 times the value, with the NaN code 0x7F forced to an f16 NaN). value * 2^8 is exact, so
// (v * 2^8) * scale rounds once, like the reference's decode(code) * scale.
// The policy of quantize_simd.h.
struct Avx2 {
  template <SourceType T>
  MX8_AVX2 static int64_t amax(const void* row, int64_t c0, int64_t c1, uint32_t& acc) {
    return amax_simd<T>(row, c0, c1, acc);
  }
  template <ElementFormat F, bool Saturate, SourceType T>
  MX8_AVX2 static int64_t encode(const void* row, int64_t c0, int64_t c1, float inv_scale, uint8_t* codes) {
    return encode_t<F, Saturate, T>(row, c0, c1, inv_scale, codes);
  }
  template <ElementFormat F, bool Saturate, SourceType T>
  MX8_AVX2 static void stripe(const void* src, int64_t nrows, int64_t cols, int64_t bc,
                              format::ScaleOptions opt, uint8_t* codes, float* sf, uint8_t* su) {
    stripe_body<Avx2, F, Saturate, T>(src, nrows, cols, bc, opt, codes, sf, su);
  }
};

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
  static const QuantKernels k{simd_amax<Avx2>, simd_encode<Avx2>, decode_avx2, simd_quantize_stripe<Avx2>};
  return k;
}

}  // namespace mx8::cpu::detail

#endif  // __x86_64__
