// Thread-block cluster pieces of the GEMM's 2-CTA TMA multicast: the CTA's rank, the cluster-wide
// barrier, an mbarrier arrival on another CTA's barrier, and a TMA load delivered to several CTAs.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "backend/cuda/ptx/mbarrier.cuh"

namespace mx8::cuda::ptx {

__device__ __forceinline__ uint32_t cluster_ctarank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}

// Every thread of every CTA of the cluster arrives, then waits for all of them. Release/acquire:
// shared-memory writes before it (barrier inits) are visible to the other CTAs after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
}

// One arrival on the mbarrier at the same shared-memory offset as `bar`, in cluster CTA `cta`
// (which may be this CTA). Default (CTA-scope release) semantics: the slot reads it announces are
// wgmma reads already waited for, and a cluster-scope release here costs the math warps ~50% of
// the GEMM's time (measured, docs/CUDA_BACKEND.md).
__device__ __forceinline__ void mbar_arrive_cluster(uint64_t* bar, uint32_t cta) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(smem_addr(bar)), "r"(cta));
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}

// 2D tile load written to the same shared-memory offset in every CTA of `cta_mask`; each
// destination CTA's mbarrier at `bar`'s offset receives the bytes (complete_tx).
__device__ __forceinline__ void tma_load_2d_multicast(void* smem_dst, const CUtensorMap* map, uint64_t* bar,
                                                      int32_t x, int32_t y, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster "
      "[%0], [%1, {%3, %4}], [%2], %5;" ::"r"(smem_addr(smem_dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(x), "r"(y), "h"(cta_mask)
      : "memory");
}

}  // namespace mx8::cuda::ptx
