// stmatrix (sm_90): a warp stores 8x8 matrices of 16-bit values to shared memory in one instruction.
#pragma once

#include <cstdint>

#include "backend/cuda/ptx/mbarrier.cuh"

namespace mx8::cuda::ptx {

// Four 8x8 b16 matrices. Register i of lane t holds row t / 4, columns 2 (t % 4) and 2 (t % 4) + 1 of
// matrix i (the layout of an mma / wgmma accumulator's 8-column group); lane t gives the address of
// row t % 8 of matrix t / 8 (16 bytes, 16-byte aligned).
__device__ __forceinline__ void stmatrix_x4(const void* row_addr, uint32_t r0, uint32_t r1, uint32_t r2,
                                            uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(smem_addr(row_addr)),
               "r"(r0), "r"(r1), "r"(r2), "r"(r3)
               : "memory");
}

}  // namespace mx8::cuda::ptx
