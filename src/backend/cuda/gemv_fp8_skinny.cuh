// The skinny FP8 GEMM on the tensor cores (gemv_fp8_skinny.cu): y = x W^T for fp8_block weights and
// up to 16 rows of x in one pass over the weights, with the grouped-GEMV semantics of
// launch_gemv_group (backend_cuda.cuh): up to kMaxGemvTargets targets sharing one input, the input
// x or silu(x) * x_up, optional biases, y = or y +=.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

// Launch shape: 0 / -1 = the heuristic's choice. split = blocks of a cluster that split k (1..8),
// warps = warps per block (4, 8, 12 or 16; 12 and 16 as the kernel's registers allow), ku = scale
// blocks each warp of the register kernel loads ahead (1 or 2; then the register kernel unless stages
// says otherwise), stages = 0 for the register kernel, 4 or 8 for the shared-memory ring kernel. Tests pin
// them to cover every path; `MX8_SKINNY` (see gemv_fp8_skinny.cu) sets the defaults for A/B runs.
struct SkinnyConfig {
  int split = 0;
  int warps = 0;
  int ku = 0;
  int stages = -1;
};

// True when the skinny kernel can take this group at all: fp8_block weights with one scale type,
// k % 128 == 0, 16-byte aligned rows and x, 1 <= m <= 16, and x's k-slice fits in shared memory.
bool gemv_fp8_skinny_supports(const MatmulInput& in, const MatmulTarget* targets, int count);
// True when launch_gemv_group should route the group here: supported and m in the routed range
// (5..16, and 2..4 from k = 4096 on: where it is faster than the 1..4-row GEMV of gemv_fp8_mma.cu).
bool gemv_fp8_skinny_applies(const MatmulInput& in, const MatmulTarget* targets, int count);
// All m rows of the group in one launch; throws mx8::Error unless gemv_fp8_skinny_supports.
void launch_gemv_fp8_skinny(const MatmulInput& in, const MatmulTarget* targets, int count, cudaStream_t s,
                            const SkinnyConfig& cfg = {});

}  // namespace mx8::backend::cuda_impl
