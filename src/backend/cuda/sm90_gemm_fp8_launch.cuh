// Definition of launch_gemm (declared in sm90_gemm_fp8_params.h), included only by the
// instantiation units sm90_gemm_fp8_inst_*.cu.
#pragma once

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch_ex.cuh"
#include "backend/cuda/sm90_gemm_fp8.cuh"

namespace mx8::cuda::detail {

template <int BM, int BN, int W, bool kMX, int KC, bool kPairA>
void launch_gemm(const CUtensorMap& ta, const GemmMapsB& tb, const CUtensorMap& tsa, const CUtensorMap& tsb,
                 const CUtensorMap& td, const GemmParams& p, int grid, bool pdl, cudaStream_t stream) {
  auto kernel = sm90_gemm_fp8_kernel<BM, BN, W, kMX, KC, kPairA>;
  const int smem = smem_bytes(BM, BN, W, kMX, p.stages, p.tma_store != 0, KC > 1);
  static int configured = 0;  // the largest dynamic smem size set so far for this instantiation
  if (smem > configured) {
    MX8_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = smem;
  }
  MX8_CUDA_CHECK(launch_ex(kernel, dim3(grid), dim3((W + 1) * 128), size_t(smem), stream,
                           unsigned(kPairA ? 2 : KC), pdl, ta, tb, tsa, tsb, td, p));
}

}  // namespace mx8::cuda::detail

// Explicit instantiation of one compiled shape (in sm90_gemm_fp8_inst_*.cu).
#define MX8_INSTANTIATE_GEMM(BM, BN, W, MX, KC, ...)                                                   \
  template void mx8::cuda::detail::launch_gemm<BM, BN, W, MX, KC __VA_OPT__(, ) __VA_ARGS__>(          \
      const CUtensorMap&, const mx8::cuda::detail::GemmMapsB&, const CUtensorMap&, const CUtensorMap&, \
      const CUtensorMap&, const mx8::cuda::detail::GemmParams&, int, bool, cudaStream_t);
