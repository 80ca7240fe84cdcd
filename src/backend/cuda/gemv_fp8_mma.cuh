// The FP8 GEMV on the tensor cores (gemv_fp8_mma.cu): fp8_block weights, up to 4 rows of x per launch
// (MXFP8: up to 4 rows in all, 2 per launch), the grouped-GEMV semantics of launch_gemv_group
// (backend_cuda.cuh).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

// Rows of x the tensor-core GEMV takes in one launch for this group (1, 2 or 4; MXFP8 1 or 2), or 0
// when it does not apply: fp8_block weights (or MXFP8 with UE8M0 scales and in.m <= 4), k % 128 == 0,
// 16-byte aligned rows, and x staged in shared memory fits.
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

// A decode FFN, down.y (+)= h W_down^T with h = silu(in W_gate^T) * (in W_up^T) in gate.y, whose down
// projection starts before the pair is done. A kernel boundary costs the pair's slowest blocks (every
// down block waits for the last pair block although most of h is made) and the down kernel's ramp.
// Here the pair kernel's blocks first set their rows of h to a NaN that arithmetic never makes and only
// then let the dependent down kernel start (programmatic dependent launch); the down kernel does not
// wait for the pair's grid but stages each round of h once it holds none of those NaNs. The results
// are the two plain launches' bit for bit (the same partial sums, added in the same order). It cannot
// deadlock: the down kernel starts only after every pair block has started (or, without PDL, after the
// pair has completed). Applies to one row of x with FP8 block weights, gate k < 7168 and n >= 7168.
bool gemv_fp8_mma_ffn_applies(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                              const MatmulTarget& down);
void launch_gemv_fp8_mma_ffn(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                             const MatmulTarget& down, bool accumulate, cudaStream_t s);
// Its two launches, for tests that hold the pair back (the down kernel polls h until no row is the NaN).
void launch_gemv_fp8_mma_ffn_pair(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                                  cudaStream_t s);
void launch_gemv_fp8_mma_ffn_down(const float* h, const MatmulTarget& down, bool accumulate, cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
