// Explicit instantiations of the GEMM kernel (one file per group so that they compile in parallel):
// 64x96 with the cluster K split over 4 blocks, for N = 2112 at M <= 64 (22 tiles, one round of clusters).
#include "backend/cuda/sm90_gemm_fp8_launch.cuh"

MX8_INSTANTIATE_GEMM(64, 96, 2, false, 4)
