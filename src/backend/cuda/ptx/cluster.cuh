// Thin wrappers over the sm_90 thread-block-cluster instructions: the cluster barrier, and addresses
// of a peer block's shared memory (distributed shared memory).
#pragma once

#include <cstdint>

#include "backend/cuda/ptx/mbarrier.cuh"

namespace mx8::cuda::ptx {

__device__ __forceinline__ uint32_t cluster_rank() {
  uint32_t r;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

// Every thread of every block of the cluster: arrive (release) and wait (acquire).
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release;\n\tbarrier.cluster.wait.acquire;" ::: "memory");
}
// Split barrier: arrive (no ordering), and later wait: every block of the cluster has started
// (the condition for touching its shared memory).
__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire;" ::: "memory");
}

// The same shared variable in block `rank` of the cluster, as a generic address (plain loads and
// stores work on it).
template <typename T>
__device__ __forceinline__ T* cluster_peer(T* p, int rank) {
  T* r;
  asm("mapa.u64 %0, %1, %2;" : "=l"(r) : "l"(p), "r"(rank));
  return r;
}

// The shared::cluster address of the same shared variable in block `rank`, for st_cluster.
__device__ __forceinline__ uint32_t cluster_peer_addr(const void* p, int rank) {
  uint32_t r;
  asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem_addr(p)), "r"(rank));
  return r;
}
__device__ __forceinline__ void st_cluster(uint32_t addr, float v) {
  asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(addr), "f"(v) : "memory");
}

// One arrival on the mbarrier at `bar`'s offset in block `rank` of the cluster (which may be this
// block), with the default CTA-scope release: what the arrival announces (a slot's reads, by wgmma,
// already waited for) needs no cluster-scope ordering, and a cluster-scope release made the math
// warps of the GEMM ~50% slower (H200, docs/CUDA.md).
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t* bar, int rank) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(cluster_peer_addr(bar, rank)) : "memory");
}

}  // namespace mx8::cuda::ptx
