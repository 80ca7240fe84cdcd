// TMA (cp.async.bulk.tensor) wrappers. The tensor map (CUtensorMap, 128 bytes) is passed to the
// kernel as a __grid_constant__ parameter; copies complete on an mbarrier (complete_tx::bytes).
// Out-of-bounds elements of a box are filled with zeros and still count toward the bytes.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "backend/cuda/ptx/mbarrier.cuh"

namespace mx8::cuda::ptx {

__device__ __forceinline__ void tma_prefetch_desc(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// 2D tile load: box origin (x = innermost coordinate, y = row).
__device__ __forceinline__ void tma_load_2d(void* smem_dst, const CUtensorMap* map, uint64_t* bar, int32_t x,
                                            int32_t y) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], "
      "[%2];" ::"r"(smem_addr(smem_dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x), "r"(y)
      : "memory");
}

}  // namespace mx8::cuda::ptx
