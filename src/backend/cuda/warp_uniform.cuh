// Telling the compiler that a value is the same in every lane of a warp.
#pragma once

namespace mx8::cuda {

// `v` as lane 0 holds it, in every lane (all 32 lanes must be active). For an index that is already
// the same across the warp (a warp's or a warpgroup's number from threadIdx.x) nothing changes but
// what ptxas can prove: what derives from it (rows, shared-memory offsets, wgmma descriptors) then
// stays in uniform registers instead of per-thread ones with R2UR moves before each use. The FP8
// GEMM's K loop got 1-7% faster so (docs/CUDA.md, forty-sixth session). It changes register
// allocation, so it is measured per kernel: gemv_fp8x8 got 11% slower with it, and the mma split
// attention and the activation quantizer spilled (docs/CUDA_BACKEND.md, forty-sixth session).
__device__ __forceinline__ int warp_uniform(int v) {
  return __shfl_sync(0xffffffffu, v, 0);
}

}  // namespace mx8::cuda
