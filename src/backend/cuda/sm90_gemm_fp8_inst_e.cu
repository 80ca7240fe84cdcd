// Explicit instantiations of the GEMM kernel: 64-row split-K tiles (two math warpgroups).
#include "backend/cuda/sm90_gemm_fp8_launch.cuh"

namespace mx8::cuda::detail {

template void launch_gemm<64, 16, 2, false>(const CUtensorMap&, const CUtensorMap&, const CUtensorMap&,
                                            const CUtensorMap&, const CUtensorMap&, const GemmParams&, int,
                                            cudaStream_t);
template void launch_gemm<64, 32, 2, false>(const CUtensorMap&, const CUtensorMap&, const CUtensorMap&,
                                            const CUtensorMap&, const CUtensorMap&, const GemmParams&, int,
                                            cudaStream_t);
template void launch_gemm<64, 64, 2, false>(const CUtensorMap&, const CUtensorMap&, const CUtensorMap&,
                                            const CUtensorMap&, const CUtensorMap&, const GemmParams&, int,
                                            cudaStream_t);
template void launch_gemm<64, 128, 2, false>(const CUtensorMap&, const CUtensorMap&, const CUtensorMap&,
                                             const CUtensorMap&, const CUtensorMap&, const GemmParams&, int,
                                             cudaStream_t);

}  // namespace mx8::cuda::detail
