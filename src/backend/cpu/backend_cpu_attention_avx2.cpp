// AVX2 + FMA attention kernel for one (token, kv head) group (see GroupAttention in backend_cpu.h):
// K/V rows are decoded to f32 eight values at a time (bf16: widen and shift; fp8: table gather times
// the row's UE8M0 scale; f32: load), q.k uses 8-lane FMA partial sums reduced in a fixed order, and
// the weighted sum of V rows is an FMA per 8 values. Used for head_dim >= 64 (multiple of 8); the
// scalar kernel stays the definition for short heads. Functions carry target attributes instead of
// the file being built with -mavx2 (ODR: see gemv_avx2.cpp).
#if defined(__x86_64__)

#include <immintrin.h>

#include <cstring>
#include <vector>

#include "backend/cpu/backend_cpu.h"
#include "mx8/format/ue8m0.h"

#define MX8_AVX2 __attribute__((target("avx2,fma")))

namespace mx8::backend::cpu_impl {
namespace {

MX8_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Decodes the hd values of (slot, head) in `page` to f32 `dst` (hd a multiple of 8).
MX8_AVX2 void decode_row(const uint8_t* page, const GroupAttention& j, int slot, float* dst,
                         const float* lut) {
  switch (j.fmt) {
    case KvFormat::f32:
      std::memcpy(dst, j.head_elements(page, slot, 4), size_t(j.hd) * 4);
      return;
    case KvFormat::bf16: {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(j.head_elements(page, slot, 2));
      for (int i = 0; i < j.hd; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
      return;
    }
    case KvFormat::fp8: {
      const uint8_t* codes = j.head_elements(page, slot, 1);
      const uint8_t* scales = j.head_scales(page, slot);
      for (int i = 0; i < j.hd; i += 8) {
        __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
        __m256 v = _mm256_i32gather_ps(lut, idx, 4);
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(v, _mm256_set1_ps(format::ue8m0_to_f32(scales[i / 128]))));
      }
      return;
    }
  }
}

}  // namespace

MX8_AVX2 void attend_group_avx2(const GroupAttention& j) {
  const float* lut = e4m3_table();
  std::vector<float> buf(size_t(j.hd));
  float* row = buf.data();
  auto page_of = [&](const uint8_t* pool, int p) {
    return pool + size_t(j.table[p / j.page_size]) * j.page_bytes;
  };
  const int n = j.len - j.first;
  for (int p = j.first; p < j.len; ++p) {
    decode_row(page_of(j.k_pool, p), j, p % j.page_size, row, lut);
    for (int g = 0; g < j.group; ++g) {
      const float* q = j.q + size_t(g) * j.hd;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      int i = 0;
      for (; i + 16 <= j.hd; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(row + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(row + i + 8), a1);
      }
      if (i < j.hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(row + i), a0);
      j.att[size_t(g) * n + (p - j.first)] = hsum(_mm256_add_ps(a0, a1)) * j.scale;
    }
  }
  softmax_rows(j.att, j.group, n);
  std::memset(j.out, 0, size_t(j.hd) * j.group * 4);
  for (int p = j.first; p < j.len; ++p) {
    decode_row(page_of(j.v_pool, p), j, p % j.page_size, row, lut);
    for (int g = 0; g < j.group; ++g) {
      const __m256 w = _mm256_set1_ps(j.att[size_t(g) * n + (p - j.first)]);
      float* o = j.out + size_t(g) * j.hd;
      for (int i = 0; i < j.hd; i += 8)
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(w, _mm256_loadu_ps(row + i), _mm256_loadu_ps(o + i)));
    }
  }
}

}  // namespace mx8::backend::cpu_impl

#else

#include "backend/cpu/backend_cpu.h"

namespace mx8::backend::cpu_impl {
void attend_group_avx2(const GroupAttention& j) {
  attend_group_scalar(j);
}
}  // namespace mx8::backend::cpu_impl

#endif
