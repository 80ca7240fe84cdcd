// cp.async (sm_80+): 16-byte copies from global to shared memory that do not occupy registers, in
// groups a thread commits and later waits for.
#pragma once

#include <cstdint>

namespace mx8::cuda::ptx {

// 16 bytes global -> shared through L2 only (.cg), optionally with the L2::256B prefetch hint; the
// destination as a shared-window address or as a generic pointer to shared memory.
template <bool kHint = false>
__device__ __forceinline__ void cp_async16(uint32_t s, const void* gmem) {
  if constexpr (kHint)
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
template <bool kHint = false>
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  cp_async16<kHint>(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), gmem);
}
// Closes the thread's copies issued since the last commit into a group.
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
// Waits until at most N of the thread's groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

}  // namespace mx8::cuda::ptx
