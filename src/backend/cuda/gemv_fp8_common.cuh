// Pieces shared by the tensor-core FP8 GEMVs (gemv_fp8_mma.cu, gemv_fp8_skinny.cu, gemv_fp8x8.cu):
// streaming weight loads, the exact E4M3 -> f16 decode, mma.sync m16n8k16 (f16 in) and m16n8k32 (E4M3
// in), both with f32 accumulation, the split of x into f16 hi + lo parts under a power of two
// (gemv_fp8_mma.cu says why), and the size of their persistent grids.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/device_info.h"

namespace mx8::backend::cuda_impl {

// 16 bytes read once: not kept in L1.
__device__ __forceinline__ uint4 load_stream(const uint8_t* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// 8 bytes read once: not kept in L1.
__device__ __forceinline__ uint2 load_stream8(const uint8_t* p) {
  uint2 r;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
  return r;
}
__device__ __forceinline__ uint4 join(uint2 lo, uint2 hi) {
  return make_uint4(lo.x, lo.y, hi.x, hi.y);
}

// Two E4M3 codes (low byte first) -> f16x2 (low half first), exact.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two & 0xffffu), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

__device__ __forceinline__ void mma_f16_f32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// mma.sync m16n8k32 with E4M3 A and B (products exact, f32 accumulation; sm_89 and later).
__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// silu(g) * u exactly as silu_mul_kernel (backend_cuda_elementwise.cu) forms it.
__device__ __forceinline__ float silu_times(float g, float u) {
  g *= (1.0f / (1.0f + expf(-g)));
  return g * u;
}

__device__ __forceinline__ float pow2(int e) {  // e in [-126, 127]
  return __int_as_float((127 + e) << 23);
}

// One 128-value block of x, 4 values per lane of the warp: hi = f16(v 2^-e), lo = f16(v 2^-e - hi)
// with 2^e putting the block's largest finite magnitude in [2^14, 2^15) (no f16 overflow); returns
// e. The clamp keeps 2^e and 2^-e normal f32 (a block whose largest value is below 2^-86 keeps fewer
// bits of it: far below any tolerance). A non-finite value keeps its hi part and lo = 0.
__device__ __forceinline__ int split_hi_lo(const float (&v)[4], uint2& hi, uint2& lo) {
  uint32_t amax = 0;  // largest finite magnitude, as bits
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t b = __float_as_uint(v[i]) & 0x7fffffffu;
    if (b < 0x7f800000u) amax = max(amax, b);
  }
  amax = __reduce_max_sync(0xffffffffu, amax);
  const int e = amax == 0 ? 0 : min(max(int(amax >> 23) - 127 - 14, -100), 113);
  const float down = pow2(-e);
  __half h[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float sv = v[i] * down;  // exact: a power of two, no overflow
    h[i] = __float2half_rn(sv);
    const float rest = sv - __half2float(h[i]);  // exact in f32
    l[i] = __float2half_rn(isfinite(sv) ? rest : 0.0f);
  }
  hi = *reinterpret_cast<const uint2*>(h);
  lo = *reinterpret_cast<const uint2*>(l);
  return e;
}

// Blocks of a persistent grid for `work` items: as many as fit on the device, or, where that is not
// enough for one item each, the fewest that take the same number of items each (q/k/v's 384 tiles: 192
// blocks of 2, not 264 of which 120 take a second tile while the rest idle). H200, decode FP8: 385.4
// -> 390.6 tok/s (three runs each, .carry/lead/e36.sh); q/k/v alone 14.1 -> 13.5 us. Allows max_smem
// of dynamic shared memory once per kernel, before its first launch (and so before any graph capture).
template <auto Kernel>
unsigned grid_for(int threads, size_t smem, size_t max_smem, int work, const char* op) {
  static const cudaError_t configured =
      cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(max_smem));
  check(configured, op);
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, threads, smem), op);
  const int most = std::max(per_sm, 1) * mx8::cuda::num_sms();
  const int per = (work + most - 1) / most;  // items per block
  return unsigned((work + per - 1) / per);
}

}  // namespace mx8::backend::cuda_impl
