// What the AVX-512 kernels (gemv_avx512.cpp, gemm_avx512.cpp) share: their target attribute and the
// integer E4M3 decode. Include only from x86-64 kernel files.
#pragma once

#include <immintrin.h>

#include <cstdint>

#define MX8_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

// GCC 12 reports the don't-care pass-through operand inside its _mm512_cvtepi8_epi32 and
// _mm512_reduce_add_ps as maybe uninitialized once they are inlined into the kernels.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace mx8::cpu::detail {

// 16 E4M3 bytes as f32 values times 2^-120: each byte S.EEEE.MMM sign-extended, shifted left by 20
// and masked to bits 31 and 26..20 is the value with the exponent biased by 127 instead of 7 (E4M3
// subnormals become f32 subnormals with the same relative spacing), with three integer ops.
MX8_AVX512 inline __m512 e4m3_16(const uint8_t* p) {
  const __m512i bits =
      _mm512_slli_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 20);
  return _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(int(0x87F00000u))));
}

}  // namespace mx8::cpu::detail
