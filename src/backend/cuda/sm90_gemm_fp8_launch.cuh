// Definition of launch_gemm (declared in sm90_gemm_fp8_params.h), included only by the
// instantiation units sm90_gemm_fp8_inst_*.cu.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sm90_gemm_fp8.cuh"

namespace mx8::cuda::detail {

template <int BM, int BN, int W, bool kMX, bool kCluster>
void launch_gemm(const CUtensorMap& ta, const CUtensorMap& tb, const CUtensorMap& tsa, const CUtensorMap& tsb,
                 const CUtensorMap& td, const GemmParams& p, int grid, cudaStream_t stream) {
  auto kernel = sm90_gemm_fp8_kernel<BM, BN, W, kMX, kCluster>;
  const int smem = smem_bytes(BM, BN, W, kMX, p.stages, p.tma_store != 0);
  static int configured = 0;  // the largest dynamic smem size set so far for this instantiation
  if (smem > configured) {
    MX8_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = smem;
  }
  if constexpr (!kCluster) {
    kernel<<<grid, (W + 1) * 128, smem, stream>>>(ta, tb, tsa, tsb, td, p);
    MX8_CUDA_CHECK(cudaGetLastError());
    return;
  }
  // 2-CTA clusters. The schedule is persistent, so the grid must not exceed the clusters that fit
  // at once (a GPC with an odd number of free SMs leaves one idle): a cluster that waited for a
  // free pair would run its tiles after everyone else's.
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = 2;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cfg.blockDim = dim3((W + 1) * 128);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  static int fitting_clusters = 0, fitting_smem = -1;  // per instantiation, for the last smem size
  if (fitting_smem != smem) {
    cfg.gridDim = dim3(2);
    MX8_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&fitting_clusters, kernel, &cfg));
    fitting_smem = smem;
    if (fitting_clusters < 1) throw mx8::Error("gemm: no 2-CTA cluster of this GEMM fits on the device");
  }
  cfg.gridDim = dim3(2 * std::min(grid / 2, fitting_clusters));
  static const bool verbose = std::getenv("MX8_GEMM_VERBOSE") != nullptr;
  if (verbose)
    std::fprintf(stderr, "gemm %dx%d multicast %c: %d clusters fit, grid %u (asked %d)\n", BM, BN,
                 p.multicast == kMulticastA ? 'A' : 'B', fitting_clusters, cfg.gridDim.x, grid);
  MX8_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, ta, tb, tsa, tsb, td, p));
}

}  // namespace mx8::cuda::detail
