// Split decode attention on the tensor cores (attention_split_mma.cu): the partial results of split
// attention for bf16 and fp8 caches, in the records attention_merge_kernel combines.
#pragma once

#include <cstdint>

#include "backend/cuda/attention_common.cuh"

namespace mx8::backend::cuda_impl {

// Whether a split-attention call with this cache format, group and page size (a power of two of at
// least 16) can take the kernel (head_dim 128 and the grouped kernel's alignment are the caller's
// split_for conditions).
bool split_mma_applies(KvFormat f, int group, int page_size);

// One block per (kv head, token, split): writes part[token][kv head][split][group * (2 + 128)]
// (m[group], l[group], unnormalized output[group][128], as attention_gqa_kernel<..., kSplit> does with
// all of a kv head's query heads in one block).
void launch_split_mma_partials(KvFormat f, const uint8_t* kp, const uint8_t* vp, const KvGeom& g,
                               const AttnParams& p, int n_kv, int n_tokens, uint32_t* err, float* part,
                               int split_len, int n_splits, cudaStream_t s);

// The same records for an fp8 cache from the transposed products (attention_split_fp8.cu).
void launch_split_fp8_partials(const uint8_t* kp, const uint8_t* vp, const KvGeom& g, const AttnParams& p,
                               int n_kv, int n_tokens, uint32_t* err, float* part, int split_len,
                               int n_splits, cudaStream_t s);

}  // namespace mx8::backend::cuda_impl
