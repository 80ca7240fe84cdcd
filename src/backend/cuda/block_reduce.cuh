// Warp- and block-wide reductions of the CUDA backend's row kernels, and rmsnorm's scale of a row:
// one definition, so that every kernel that normalizes a row (rmsnorm, the FP8 GEMMs' fused
// quantizer) sums its squares in the same order and gets the same bits.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace mx8::backend::cuda_impl {

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum (or max) for blockDim.x a multiple of 32, at most 1024; every thread gets the result.
template <bool kMax>
__device__ float block_reduce(float v) {
  __shared__ float part[32];
  __shared__ float result;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = kMax ? warp_max(v) : warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < nw ? part[lane] : (kMax ? -INFINITY : 0.0f);
    t = kMax ? warp_max(t) : warp_sum(t);
    if (lane == 0) result = t;
  }
  __syncthreads();
  float r = result;
  __syncthreads();  // `result` and `part` may be reused by the next call
  return r;
}

// 1 / sqrt(mean(x^2) + eps) of a row of `dim` floats (dim % 4 == 0, 16-byte aligned), for
// blockDim.x a multiple of 32 (at most 1024): thread t sums float4s t, t + blockDim.x, ...
__device__ __forceinline__ float rms_scale_vec(const float4* xr, int64_t dim, float eps) {
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < dim / 4; j += blockDim.x) {
    const float4 v = xr[j];
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  ss = block_reduce<false>(ss);
  ss /= float(dim);
  ss += eps;
  return 1.0f / sqrtf(ss);
}

}  // namespace mx8::backend::cuda_impl
