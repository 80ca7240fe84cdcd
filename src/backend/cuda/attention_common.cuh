// What the attention kernels share: the paged KV cache's geometry and byte offsets (the CPU
// backend's page layout), and the attention arguments as the kernels take them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cuda/backend_cuda.cuh"

namespace mx8::backend::cuda_impl {

struct KvGeom {
  int n_kv, hd, ps, nb, n_pages;
  size_t page_bytes;
  int64_t capacity;  // slots per layer
};

inline KvGeom geom_of(const CudaKvCache& c) {
  const KvCacheDesc& d = c.desc();
  return {d.n_kv_heads,
          d.head_dim,
          d.page_size,
          (d.head_dim + 127) / 128,
          d.n_pages,
          c.page_bytes(),
          int64_t(d.n_pages) * d.page_size};
}

template <KvFormat F>
constexpr int kElemBytes = F == KvFormat::f32    ? 4
                           : F == KvFormat::bf16 ? 2
                                                 : 1;

// Byte offsets inside a page (as the CPU backend computes them).
template <KvFormat F>
__device__ __forceinline__ size_t elem_off(const KvGeom& g, int slot, int head) {
  return (size_t(head) * g.ps + slot) * size_t(g.hd) * kElemBytes<F>;
}
__device__ __forceinline__ size_t scale_off(const KvGeom& g, int slot, int head) {
  return size_t(g.ps) * g.n_kv * g.hd + (size_t(head) * g.ps + slot) * g.nb;
}

struct AttnParams {
  const float* q;
  float* out;
  int n_heads, group;
  float scale;
  const int32_t* seq;
  const int32_t* kv_len;
  const int32_t* block_tables;
  int max_pages_per_seq;
  int window;  // AttentionArgs::window
};

// A token's cached length and sequence can be attended: 0 < len <= the block table's positions, seq >= 0.
__device__ __forceinline__ bool token_ok(const AttnParams& p, const KvGeom& g, int len, int seq) {
  return len > 0 && int64_t(len) <= int64_t(p.max_pages_per_seq) * g.ps && seq >= 0;
}

// The prompt-step kernels' table of a block's tokens t0 .. t0 + ntok - 1 (threads tid, tid + n, ...):
// sequence (-1 for a token that cannot be attended, flagged once per token, and past ntok) and length.
__device__ __forceinline__ void stage_block_tokens(const AttnParams& p, const KvGeom& g, int t0, int ntok,
                                                   int rows, int tid, int n, bool flag, uint32_t* err,
                                                   int* tok_seq, int* tok_len) {
  for (int lt = tid; lt < rows; lt += n) {
    int sq = -1, len = 0;
    if (lt < ntok) {
      sq = p.seq[t0 + lt];
      len = p.kv_len[t0 + lt];
      if (!token_ok(p, g, len, sq)) {
        if (flag) atomicOr(err, kErrAttnKvLen);
        sq = -1;  // no pass serves it: its output stays unwritten, as in the other kernels
      }
    }
    tok_seq[lt] = sq;
    tok_len[lt] = len;
  }
}

// Whether local token `first` of a prompt kernel's block starts a pass: it can be attended, and no
// earlier token of the block belongs to its sequence.
__device__ __forceinline__ bool starts_pass(const int* tok_seq, int first) {
  const int sq = tok_seq[first];
  if (sq < 0) return false;
  for (int j = 0; j < first; ++j)
    if (tok_seq[j] == sq) return false;
  return true;
}

// The first position a token with `len` cached positions attends to.
__device__ __forceinline__ int first_attended(const AttnParams& p, int len) {
  return p.window > 0 ? max(0, len - p.window) : 0;
}

// What a decode block of token t attends: split z of split_len positions (split_len 0: one split of
// them all), clipped to the token's window and length. False, the error flagged once, for a token that
// cannot be attended (the block then returns: its output stays unwritten).
struct TokenSpan {
  const int32_t* table;  // the token's block table
  int split0;            // the split's first position
  int lo, hi;            // the positions attended: [lo, hi)
};
__device__ __forceinline__ bool token_span(const AttnParams& p, const KvGeom& g, int t, int z, int split_len,
                                           uint32_t* err, TokenSpan& s) {
  const int len = p.kv_len[t], sq = p.seq[t];
  if (!token_ok(p, g, len, sq)) {
    if (threadIdx.x == 0) atomicOr(err, kErrAttnKvLen);
    return false;
  }
  s.table = p.block_tables + size_t(sq) * p.max_pages_per_seq;
  s.split0 = z * split_len;
  s.lo = max(s.split0, first_attended(p, len));
  s.hi = split_len > 0 ? min(len, s.split0 + split_len) : len;
  return true;
}

}  // namespace mx8::backend::cuda_impl
