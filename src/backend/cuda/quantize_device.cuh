// Device building blocks shared by the quantizer kernels (sm90_quantize.cu, quantize_stream.cuh,
// quantize_dual.cuh, act_quantize.cuh): where a block scale goes (ScaleWriter), bf16 unpacking, the hardware
// FP8 encode, packed 16-bit magnitude maxima, and streaming loads/stores.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "mx8/format/quantize_ref.h"

namespace mx8::cuda::qdev {

namespace fmt = mx8::format;

struct ScaleWriter {
  fmt::ScaleStorage storage;
  int64_t grid_cols;   // canonical grid columns
  int64_t words4;      // ue8m0_packed4: bytes per grid row (multiple of 4)
  int64_t rows, cols;  // the tensor (Blackwell expansion)
  int64_t block_rows, block_cols;
  int mn_major_ld;  // > 0: the GEMM's transposed layout scales[gc * ld + gr] (1xK tiles only)

  __device__ void write(uint8_t* scales, int64_t gr, int64_t gc, const fmt::BlockScale& s) const {
    if (mn_major_ld > 0) {
      const int64_t i = gc * mn_major_ld + gr;
      if (storage == fmt::ScaleStorage::f32)
        reinterpret_cast<float*>(scales)[i] = s.scale;
      else
        scales[i] = s.ue8m0;
      return;
    }
    switch (storage) {
      case fmt::ScaleStorage::f32:
        reinterpret_cast<float*>(scales)[gr * grid_cols + gc] = s.scale;
        break;
      case fmt::ScaleStorage::ue8m0:
        scales[gr * grid_cols + gc] = s.ue8m0;
        break;
      case fmt::ScaleStorage::ue8m0_packed4:
        scales[gr * words4 + gc] = s.ue8m0;
        break;
      case fmt::ScaleStorage::ue8m0_blackwell: {
        // Every (row, 32-column group) of the block gets the byte.
        const int64_t ks = fmt::ceil_div(cols, 32);
        const int64_t r0 = gr * block_rows, r1 = min(rows, r0 + block_rows);
        const int64_t j0 = gc * block_cols / 32, j1 = min(ks, fmt::ceil_div((gc + 1) * block_cols, 32));
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t j = j0; j < j1; ++j) scales[fmt::blackwell_offset(r, j, ks)] = s.ue8m0;
        break;
      }
    }
  }
};

// Hardware encode of two values (RNE, satfinite); low byte = a.
__device__ __forceinline__ uint32_t cvt2(float a, float b, fmt::ElementFormat f) {
  return __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE,
                                  f == fmt::ElementFormat::e4m3 ? __NV_E4M3 : __NV_E5M2);
}

// The two bf16 of a word as f32 (exact: a bf16 is the top half of an f32).
__device__ __forceinline__ float bf16_lo(uint32_t w) {
  return __uint_as_float(w << 16);
}
__device__ __forceinline__ float bf16_hi(uint32_t w) {
  return __uint_as_float(w & 0xFFFF0000u);
}

// Per-halfword unsigned max (one instruction on sm_90).
__device__ __forceinline__ uint32_t max_u16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("max.u16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// |x| of two packed bf16 as 16-bit integers. Its top half shifted left by 16 is exactly
// amax_bits_accumulate's |x| bits of the f32 value, so a 16-bit integer max orders finite values
// and Inf the same way and puts every NaN above Inf: compute_block_scale sees the same amax.
__device__ __forceinline__ uint32_t mag2(uint32_t w) {
  return w & 0x7FFF7FFFu;
}

// Largest 16-bit magnitude of the 8 bf16 of v.
__device__ __forceinline__ uint32_t mag8(const uint4& v) {
  const uint32_t m = max_u16x2(max_u16x2(mag2(v.x), mag2(v.y)), max_u16x2(mag2(v.z), mag2(v.w)));
  return max(m & 0xFFFFu, m >> 16);
}

// The f32 amax from a 16-bit bf16 magnitude.
__device__ __forceinline__ float amax_from_mag(uint32_t m16) {
  return __uint_as_float(m16 << 16);
}

// n / d for n < 2^31 by a multiply-high, add and shift (the round-up method: m = floor(2^32 (2^l - d)
// / d) + 1 with l = ceil(log2 d); exact for every n < 2^31, where the add cannot overflow).
struct FastDiv {
  uint32_t mul = 1, shift = 0, d = 1;
  static FastDiv make(uint32_t d) {
    uint32_t l = 0;
    while ((uint64_t{1} << l) < d) ++l;
    const uint64_t m = ((uint64_t{1} << 32) * ((uint64_t{1} << l) - d)) / d + 1;
    return FastDiv{static_cast<uint32_t>(m), l, d};
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return (__umulhi(n, mul) + n) >> shift; }
};

// 16-byte load that bypasses L1 (every byte is read once) and asks L2 for 256-byte prefetches.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}
__device__ __forceinline__ uint4 ld_plain(const void* p) {
  return __ldg(static_cast<const uint4*>(p));
}

// 16-byte load with no L1 allocation and an L2 evict-first policy: the bytes are read once, so
// they should be the first lines L2 gives up rather than displacing what others will read.
__device__ __forceinline__ uint4 ld_evict_first(const void* p) {
  uint64_t pol;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p), "l"(pol));
  return v;
}
__device__ __forceinline__ uint4 ld_no_alloc(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// Cache hints, a run-time bit mask (uniform branches): kHintLoad streams the loads (no L1
// allocation, 256-byte L2 prefetch), kHintStore marks the stores evict-first (.cs),
// kHintLoadEvictFirst loads with no L1 allocation and an L2 evict-first policy, kHintLoadNoL1 with
// no L1 allocation alone (these two: ld16_any). None is a default: on the H200 the load hints cost
// the 1x128 tile kernel 1-5 points of copy bandwidth (the dual kernel 4-8, tried there and not
// kept; 2026-11-29), .cs stores were neutral.
constexpr int kHintLoad = 1, kHintStore = 2, kHintLoadEvictFirst = 4, kHintLoadNoL1 = 8;

__device__ __forceinline__ uint4 ld16(const void* p, int hints) {
  return (hints & kHintLoad) ? ld_stream(p) : ld_plain(p);
}
// ld16 with every load hint (the act tile kernel's; the other kernels keep ld16's two).
__device__ __forceinline__ uint4 ld16_any(const void* p, int hints) {
  if (hints & kHintLoadEvictFirst) return ld_evict_first(p);
  if (hints & kHintLoadNoL1) return ld_no_alloc(p);
  return ld16(p, hints);
}

__device__ __forceinline__ void st8(void* p, uint32_t lo, uint32_t hi, int hints) {
  if (hints & kHintStore)
    asm volatile("st.global.cs.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(lo), "r"(hi) : "memory");
  else
    *static_cast<uint2*>(p) = make_uint2(lo, hi);
}

// Eight values (x[i] * inv) as eight 8-bit codes, element 0 in the low byte of lo.
__device__ __forceinline__ void encode8(const float (&x)[8], float inv, bool hw, fmt::ElementFormat elem,
                                        bool saturate, uint32_t& lo, uint32_t& hi) {
  if (hw) {
    lo = cvt2(x[0] * inv, x[1] * inv, elem) | cvt2(x[2] * inv, x[3] * inv, elem) << 16;
    hi = cvt2(x[4] * inv, x[5] * inv, elem) | cvt2(x[6] * inv, x[7] * inv, elem) << 16;
  } else {
    lo = hi = 0;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      lo |= static_cast<uint32_t>(fmt::encode_element(elem, x[b] * inv, saturate)) << (8 * b);
      hi |= static_cast<uint32_t>(fmt::encode_element(elem, x[4 + b] * inv, saturate)) << (8 * b);
    }
  }
}

__device__ __forceinline__ void unpack8(const uint4& v, float (&x)[8]) {
  x[0] = bf16_lo(v.x);
  x[1] = bf16_hi(v.x);
  x[2] = bf16_lo(v.y);
  x[3] = bf16_hi(v.y);
  x[4] = bf16_lo(v.z);
  x[5] = bf16_hi(v.z);
  x[6] = bf16_lo(v.w);
  x[7] = bf16_hi(v.w);
}

}  // namespace mx8::cuda::qdev
