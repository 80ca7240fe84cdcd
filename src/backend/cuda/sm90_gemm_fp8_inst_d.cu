// Explicit instantiations of the GEMM kernel (one file per group so that they compile in parallel).
#include "backend/cuda/sm90_gemm_fp8_launch.cuh"

MX8_INSTANTIATE_GEMM(256, 128, 2, false, 1)
MX8_INSTANTIATE_GEMM(256, 128, 2, false, 1, true)
MX8_INSTANTIATE_GEMM(192, 128, 3, false, 1)
