// Explicit instantiations of the GEMM kernel: 2-CTA clusters with TMA multicast (tiles of 128+ rows).
#include "backend/cuda/sm90_gemm_fp8_launch.cuh"

namespace mx8::cuda::detail {

#define MX8_GEMM_INST_MC(BM, BN)                                                                          \
  template void launch_gemm<BM, BN, 2, false, true>(                                                      \
      const CUtensorMap&, const CUtensorMap&, const CUtensorMap&, const CUtensorMap&, const CUtensorMap&, \
      const GemmParams&, int, cudaStream_t);
MX8_GEMM_INST_MC(128, 16)
MX8_GEMM_INST_MC(128, 32)
MX8_GEMM_INST_MC(128, 64)
MX8_GEMM_INST_MC(128, 128)
MX8_GEMM_INST_MC(128, 192)
MX8_GEMM_INST_MC(256, 128)
#undef MX8_GEMM_INST_MC

}  // namespace mx8::cuda::detail
