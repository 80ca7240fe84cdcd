// wgmma (sm_90a warpgroup MMA) helpers: shared-memory matrix descriptors for the 128-byte swizzled
// K-major tiles that TMA writes, the fence/commit/wait trio, and register-ordering fences.
#pragma once

#include <cstdint>

#include "backend/cuda/ptx/mbarrier.cuh"
#include "backend/cuda/ptx/wgmma_fp8.cuh"

namespace mx8::cuda::ptx {

// Descriptor of a K-major tile whose rows are 128 bytes, written by TMA with SWIZZLE_128B: 8-row
// groups (1024 bytes, the swizzle atom) are SBO = 1024 bytes apart; LBO is unused for swizzled
// K-major layouts. Bits: [0,14) start>>4, [16,30) LBO>>4, [32,46) SBO>>4, [62,64) layout (1 = SW128).
// Advancing along K inside the 128-byte row is done by adding the byte offset to the start address
// (the hardware applies the swizzle on the final address), which is why tiles must be 1024-aligned.
__device__ __forceinline__ uint64_t make_desc_sw128(const void* smem_tile) {
  const uint64_t start = (smem_addr(smem_tile) & 0x3FFFF) >> 4;
  const uint64_t lbo = 1;
  const uint64_t sbo = 1024 >> 4;
  return start | (lbo << 16) | (sbo << 32) | (uint64_t{1} << 62);
}

// The descriptor `units` x 16 bytes further along its tile. Only the low word changes: the start
// address field (bits 0-13) cannot carry out (shared memory is below 256 KB), and a 64-bit add
// cost a carry instruction and a second register move per wgmma (ncu).
__device__ __forceinline__ uint64_t desc_plus(uint64_t desc, uint32_t units) {
  return (desc & 0xFFFFFFFF00000000ull) | uint32_t(uint32_t(desc) + units);
}

// Orders this warpgroup's register accesses before the following wgmma (required before the first
// wgmma and whenever the accumulators were touched by ordinary instructions).
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// The compiler does not know that wgmma writes the accumulators asynchronously: pinning each
// register with an empty asm after wgmma_wait keeps the FFMAs that read them from being hoisted
// above the wait (and keeps writes before wgmma_fence from sinking below it).
template <int kRegs>
__device__ __forceinline__ void fence_regs(float (&d)[kRegs]) {
#pragma unroll
  for (int i = 0; i < kRegs; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Register-budget hand-off between warpgroups (needs __launch_bounds__(threads, 1)).
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
}

}  // namespace mx8::cuda::ptx
