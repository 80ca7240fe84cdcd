// NEON attention kernel for one (token, kv head) group (see GroupAttention in backend_cpu.h), the
// AVX2 kernel's structure on 4-lane vectors: K/V rows decoded to f32 (bf16: widen and shift; fp8: the
// f16 shift decode of neon_fp8.h with the NaN code kept NaN, so each value equals e4m3_table()'s,
// times the row's UE8M0 scale; f32: load), q.k as 4-lane FMA partial sums reduced in a fixed order,
// and the weighted sum of V rows as an FMA per 4 values. Heads of 64 or more in multiples of 8.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <cstring>
#include <vector>

#include "backend/cpu/backend_cpu.h"
#include "backend/cpu/neon_fp8.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cpu_impl {
namespace {

// 8 E4M3 codes -> 8 exact f32 values (NaN codes -> NaN).
inline void decode8_e4m3(const uint8_t* p, float32x4_t v[2]) {
  const float16x8_t f = mx8::cpu::detail::fp8_as_f16<true, true>(vshll_n_u8(vld1_u8(p), 8));
  v[0] = vmulq_n_f32(vcvt_f32_f16(vget_low_f16(f)), 256.f);  // exact: the f16 holds value * 2^-8
  v[1] = vmulq_n_f32(vcvt_high_f32_f16(f), 256.f);
}

// Decodes the hd values of (slot, head) in `page` to f32 `dst` (hd a multiple of 8).
void decode_row(const uint8_t* page, const GroupAttention& j, int slot, float* dst) {
  switch (j.fmt) {
    case KvFormat::f32:
      std::memcpy(dst, j.head_elements(page, slot, 4), size_t(j.hd) * 4);
      return;
    case KvFormat::bf16: {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(j.head_elements(page, slot, 2));
      for (int i = 0; i < j.hd; i += 4)
        vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(src + i), 16)));
      return;
    }
    case KvFormat::fp8: {
      const uint8_t* codes = j.head_elements(page, slot, 1);
      const uint8_t* scales = j.head_scales(page, slot);
      for (int i = 0; i < j.hd; i += 8) {
        float32x4_t v[2];
        decode8_e4m3(codes + i, v);
        const float s = format::ue8m0_to_f32(scales[i / 128]);
        vst1q_f32(dst + i, vmulq_n_f32(v[0], s));
        vst1q_f32(dst + i + 4, vmulq_n_f32(v[1], s));
      }
      return;
    }
  }
}

}  // namespace

void attend_group_neon(const GroupAttention& j) {
  std::vector<float> buf(size_t(j.hd));
  float* row = buf.data();
  auto page_of = [&](const uint8_t* pool, int p) {
    return pool + size_t(j.table[p / j.page_size]) * j.page_bytes;
  };
  const int n = j.len - j.first;
  for (int p = j.first; p < j.len; ++p) {
    decode_row(page_of(j.k_pool, p), j, p % j.page_size, row);
    for (int g = 0; g < j.group; ++g) {
      const float* q = j.q + size_t(g) * j.hd;
      float32x4_t a0 = vdupq_n_f32(0.f), a1 = a0;
      for (int i = 0; i < j.hd; i += 8) {
        a0 = vfmaq_f32(a0, vld1q_f32(q + i), vld1q_f32(row + i));
        a1 = vfmaq_f32(a1, vld1q_f32(q + i + 4), vld1q_f32(row + i + 4));
      }
      j.att[size_t(g) * n + (p - j.first)] = vaddvq_f32(vaddq_f32(a0, a1)) * j.scale;
    }
  }
  softmax_rows(j.att, j.group, n);
  std::memset(j.out, 0, size_t(j.hd) * j.group * 4);
  for (int p = j.first; p < j.len; ++p) {
    decode_row(page_of(j.v_pool, p), j, p % j.page_size, row);
    for (int g = 0; g < j.group; ++g) {
      const float w = j.att[size_t(g) * n + (p - j.first)];
      float* o = j.out + size_t(g) * j.hd;
      for (int i = 0; i < j.hd; i += 4)
        vst1q_f32(o + i, vfmaq_n_f32(vld1q_f32(o + i), vld1q_f32(row + i), w));
    }
  }
}

}  // namespace mx8::backend::cpu_impl

#endif  // __aarch64__
