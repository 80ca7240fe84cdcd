// Explicit instantiations of the GEMM kernel (one file per group so that they compile in parallel).
#include "backend/cuda/sm90_gemm_fp8_launch.cuh"

namespace mx8::cuda::detail {

template void launch_gemm<256, 128, 2, false>(const CUtensorMap&, const CUtensorMap&, const CUtensorMap&,
                                              const CUtensorMap&, const CUtensorMap&, const GemmParams&, int,
                                              cudaStream_t);
template void launch_gemm<192, 128, 3, false>(const CUtensorMap&, const CUtensorMap&, const CUtensorMap&,
                                              const CUtensorMap&, const CUtensorMap&, const GemmParams&, int,
                                              cudaStream_t);

}  // namespace mx8::cuda::detail
