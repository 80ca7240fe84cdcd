// The FP8 x FP8 GEMV on mma.sync (gemv_fp8x8.cu): y = a W^T, or y += a W^T, for 1..16 rows of E4M3
// activations (quantize_fp8_act's output) and fp8_block weights (activation scales per 1x128,
// products promoted into f32 once per 128 of k) or MXFP8 weights (1x32 UE8M0 scales on both
// operands, promoted every 32 of k; the weights' scales row-major as the format layer stores them).
// The small-m form of run_fp8_gemm: batched decode steps, whose few rows leave the wgmma GEMM's
// 64-row tiles mostly empty (and, for MXFP8, its per-32 promotion a latency chain).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

// Most rows of activations gemv_fp8x8 takes: two groups of mma's 8 n8 columns per weight fragment
// (where the rows' staged activations do not fit in shared memory, launches over parts of k).
constexpr int kFp8x8MaxRows = 16;

// Whether it takes this group: 1 <= m <= kFp8x8MaxRows, 1..4 targets of fp8_block weights with one
// scale type, or of MXFP8 weights with UE8M0 scales, and one k (k % 128 == 0), 16-byte aligned
// weight rows.
bool gemv_fp8x8_applies(const MatmulTarget* targets, int count, int64_t m);

// For every target: y = a W^T + bias, or y += a W^T + bias with accumulate (y + (product + bias), the
// GEMV's order). a: codes [m][k]; a_scales: one scale per (row, block of k) at [block * ld + row],
// blocks of 128 (UE8M0 bytes, or f32 as the weights' scale type says) or, for MXFP8, of 32 (UE8M0).
void launch_gemv_fp8x8(const MatmulTarget* targets, int count, const uint8_t* a, const void* a_scales, int ld,
                       int64_t m, bool accumulate, cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
