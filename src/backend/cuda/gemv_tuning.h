// Knobs of the grouped GEMV (backend_cuda_gemv.cu) for A/B measurements (`mx8 bench gemv-cuda`).
// The backend always uses the defaults (all zero = the heuristics); nothing here is global state.
#pragma once

#include <cuda_runtime_api.h>

#include "mx8/backend/backend.h"

namespace mx8::backend::cuda_impl {

struct GemvTuning {
  int rows = 0;          // rows of W per thread group (R): 2, 4 or 8 for one token; 0 = heuristic
  int unroll = 0;        // 16-byte chunks per row a thread loads per round (U): 1, 2 or 4; 0 = heuristic
  int threads = 0;       // threads sharing one row's k (T): 32, 64, 128 or 256; 0 = heuristic
  bool l2_hint = false;  // weight loads with .L2::256B
  int stages = -1;       // 0: loads into registers, one round ahead; S > 0: cp.async into shared memory,
                         // S rounds deep (128-thread blocks); -1 = default
  bool simt = false;     // fp8_block weights: the SIMT kernels even where the tensor-core GEMV
                         // (gemv_fp8_mma.cu) applies; any knob above also selects them
};

// launch_gemv_group with explicit knobs (values the kernel set does not instantiate throw mx8::Error).
void launch_gemv_group_tuned(const MatmulInput& in, const MatmulTarget* targets, int count,
                             const GemvTuning& tuning, cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
