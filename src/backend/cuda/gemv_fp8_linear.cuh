// The linear FP8 GEMV (gemv_fp8_linear.cu): y = a W^T, or y += a W^T, for 1..4 rows of E4M3
// activations (quantize_fp8_act's output, 1x128 scales) and fp8_block weights (128x128 scales),
// products promoted into f32 once per 128 of k as the GEMM does. Every warp load reads 512
// contiguous bytes of one weight row, where the tile-shaped GEMVs (gemv_fp8x8, the wgmma GEMM's TMA
// boxes) read 64 or 128 bytes of each of 8..64 rows; on the H200 that is what lets a weight stream
// reach the speed of a plain read (docs/CUDA.md, thirty-ninth session).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

// Most rows of activations it takes: each row is its own mma per weight fragment (the 8 columns of
// n8 hold the 8 segments of one row), so its tensor work grows with the rows.
constexpr int kLinearMaxRows = 4;

// Whether it takes this group: 1 <= m <= kLinearMaxRows, 1..4 targets of fp8_block weights with one
// scale type and one k (k % 128 == 0), 16-byte aligned weight rows.
bool gemv_fp8_linear_applies(const MatmulTarget* targets, int count, int64_t m);

// For every target: y = a W^T + bias, or y += a W^T + bias with accumulate (y + (product + bias), the
// GEMV's order). a: codes [m][k]; a_scales: one scale per (row, block of 128 of k) at
// [block * ld + row] (UE8M0 bytes, or f32 as the weights' scale type says).
void launch_gemv_fp8_linear(const MatmulTarget* targets, int count, const uint8_t* a, const void* a_scales,
                            int ld, int64_t m, bool accumulate, cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
