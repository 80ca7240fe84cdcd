// The FP8 GEMV on the tensor cores (gemv_fp8_mma.cu): fp8_block weights, up to 4 rows of x per
// launch, the grouped-GEMV semantics of launch_gemv_group (backend_cuda.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

// Rows of x the tensor-core GEMV takes in one launch for this group (1, 2 or 4), or 0 when it does not
// apply: fp8_block weights, k % 128 == 0, 16-byte aligned rows, and x staged in shared memory fits.
int gemv_fp8_mma_rows(const MatmulInput& in, const MatmulTarget* targets, int count);

// Rows [r0, r0 + m) of the group's input, m <= gemv_fp8_mma_rows(...).
void launch_gemv_fp8_mma(const MatmulInput& in, const MatmulTarget* targets, int count, int64_t r0, int m,
                         cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
