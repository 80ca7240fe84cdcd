// Prompt-step attention on mma.sync m16n8k16 (attention_prefill_mma.cu).
#pragma once

#include <cuda_runtime.h>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/backend_cuda.cuh"

namespace mx8::backend::cuda_impl {

// Launches the kernel for a call attention_prefill_applies() accepted, where the cache's pages hold a
// power of two of at least 16 positions; false (nothing launched) otherwise, or when it is turned off
// (attention_prefill_mma_enabled()).
bool launch_attention_prefill_mma(CudaKvCache& c, const AttentionArgs& a, const AttnParams& p, uint32_t* err,
                                  cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
