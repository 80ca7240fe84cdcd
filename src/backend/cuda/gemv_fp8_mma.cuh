// The FP8 GEMV on the tensor cores (gemv_fp8_mma.cu): fp8_block weights (and MXFP8 for up to 4 rows
// of x in all), up to 4 rows of x per launch, the grouped-GEMV semantics of launch_gemv_group
// (backend_cuda.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

// Rows of x the tensor-core GEMV takes in one launch for this group (1, 2 or 4), or 0 when it does not
// apply: fp8_block weights (or MXFP8 with UE8M0 scales and in.m <= 4), k % 128 == 0, 16-byte aligned
// rows, and x staged in shared memory fits.
int gemv_fp8_mma_rows(const MatmulInput& in, const MatmulTarget* targets, int count);

// Rows [r0, r0 + m) of the group's input, m <= gemv_fp8_mma_rows(...).
void launch_gemv_fp8_mma(const MatmulInput& in, const MatmulTarget* targets, int count, int64_t r0, int m,
                         cudaStream_t s);

// SwiGLU pairs: y_gate = silu(in W_gate^T (+ bias)) * (in W_up^T (+ bias)), both weights of one
// shape; up.y is not written. The two products are the ones launch_gemv_fp8_mma stores, so the
// result equals silu_mul of them bit for bit. Applies where the group {gate, up} meets
// gemv_fp8_mma_rows, without x_up or accumulate.
bool gemv_fp8_mma_swiglu_applies(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up);
void launch_gemv_fp8_mma_swiglu(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                                cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
