// Definition of launch_gemm (declared in sm90_gemm_fp8_params.h), included only by the
// instantiation units sm90_gemm_fp8_inst_*.cu.
#pragma once

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sm90_gemm_fp8.cuh"

namespace mx8::cuda::detail {

template <int BM, int BN, int W, bool kMX>
void launch_gemm(const CUtensorMap& ta, const CUtensorMap& tb, const CUtensorMap& tsa, const CUtensorMap& tsb,
                 const CUtensorMap& td, const GemmParams& p, int grid, cudaStream_t stream) {
  auto kernel = sm90_gemm_fp8_kernel<BM, BN, W, kMX>;
  const int smem = smem_bytes(BM, BN, W, kMX, p.stages, p.tma_store != 0);
  static int configured = 0;  // the largest dynamic smem size set so far for this instantiation
  if (smem > configured) {
    MX8_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = smem;
  }
  kernel<<<grid, (W + 1) * 128, smem, stream>>>(ta, tb, tsa, tsb, td, p);
  MX8_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mx8::cuda::detail
