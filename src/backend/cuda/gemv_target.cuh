// One target of a grouped GEMV as its kernels see it, and the selection of a tile's target; shared
// by the SIMT GEMV (backend_cuda_gemv.cu) and the tensor-core FP8 GEMV (gemv_fp8_mma.cu).
#pragma once

#include <cstdint>

#include "backend/cuda/backend_cuda.cuh"

namespace mx8::backend::cuda_impl {

struct GemvTarget {
  const uint8_t* w;
  const void* scales;
  float* y;
  const float* bias;
  int64_t n;
  int tile_begin;  // first tile of this target (tiles of all targets are numbered consecutively)
};

#if defined(__CUDACC__)
// The target that `tile` belongs to, for kernel parameters `p` with `t[kMaxGemvTargets]` and `count`.
// Selected field by field: a dynamic index into the kernel parameters would copy them to local memory.
template <typename Params>
__device__ __forceinline__ GemvTarget target_of(const Params& p, int tile) {
  GemvTarget g = p.t[0];
#pragma unroll
  for (int i = 1; i < kMaxGemvTargets; ++i)
    if (i < p.count && tile >= p.t[i].tile_begin) g = p.t[i];
  return g;
}
#endif

}  // namespace mx8::backend::cuda_impl
