// Explicit instantiations of the GEMM kernel (one file per group so that they compile in parallel).
#include "backend/cuda/sm90_gemm_fp8_launch.cuh"

MX8_INSTANTIATE_GEMM(64, 64, 2, true, 1)
MX8_INSTANTIATE_GEMM(128, 128, 2, true, 1)
