// Attention over the paged KV cache (kv_cache.cu), and the dispatch of every attention call.
//
// Attention: one thread block per (query token, query head), 4 warps. The keys of the sequence are
// taken 32 positions at a time (a "chunk"), chunk c by warp c % 4: lane j scores position 32c + j
// against the whole head (q is in shared memory), the warp takes the chunk's max and sum with
// shuffles and folds the chunk into its running (max, sum, output) - the online softmax - reading V
// coalesced (lane owns dims lane, lane + 32, ...). At the end the 4 warps' partial results are
// merged in shared memory. This reads each K and V row once per query head; GQA's sibling heads hit
// the same rows in L2.
// That kernel remains the general path. head_dim 128 (Llama-3) takes attention_cluster_kernel
// (attention_cluster.cu): one (query token, kv head) over a thread block cluster, split by query heads
// and positions, merged through distributed shared memory; block tables of more than 1024 positions
// take split attention (partials in scratch from attention_split_mma.cu's tensor-core kernel, or for
// f32 caches and other page sizes from attention_gqa_kernel<..., kSplit>; attention_merge_kernel).
// attention_gqa_kernel without the split (one block per (query token, kv head), each K/V row read
// once for the whole group) is kept for A/B comparisons (MX8_CUDA_CLUSTER_ATTN=0). Prompt steps of
// many tokens take attention_prefill.cu.
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "backend/cuda/attention_cluster.cuh"
#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/attention_decode.cuh"
#include "backend/cuda/attention_split_mma.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/device_info.h"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {

namespace {
std::atomic<bool> g_split_attention{false};
}  // namespace

bool split_attention_enabled() {
  return g_split_attention.load(std::memory_order_relaxed);
}
void set_split_attention_enabled(bool on) {
  g_split_attention.store(on, std::memory_order_relaxed);
}

namespace {

// MX8_CUDA_GQA_ATTN=0 selects the per-query-head kernel everywhere (for A/B measurements).
bool gqa_attention_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("MX8_CUDA_GQA_ATTN");
    return !(e && e[0] == '0');
  }();
  return on;
}

constexpr int kMaxHeadDim = 256;  // lanes own ceil(head_dim / 32) <= 8 output dims each
constexpr int kAttnWarps = 4;

// ---- attention ------------------------------------------------------------------------------------

// Element i of a stored head vector as f32 (fp8: times its block's scale, as the CPU decodes it).
template <KvFormat F>
__device__ __forceinline__ float kv_elem(const uint8_t* row, const uint8_t* scales, int i) {
  if constexpr (F == KvFormat::f32)
    return reinterpret_cast<const float*>(row)[i];
  else if constexpr (F == KvFormat::bf16)
    return format::bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  else
    return format::e4m3_to_f32(row[i]) * format::ue8m0_to_f32(scales[i >> 7]);
}

// q . k over one head, k stored at `row` (16-byte loads when the head's bytes allow it).
template <KvFormat F>
__device__ __forceinline__ float dot_q_k(const float* q, const uint8_t* row, const uint8_t* scales, int hd) {
  float s = 0.0f;
  constexpr int E = 16 / kElemBytes<F>;
  if ((hd * kElemBytes<F>) % 16 == 0) {
#pragma unroll 8
    for (int c = 0; c < hd / E; ++c) {
      uint4 raw = *reinterpret_cast<const uint4*>(row + c * 16);
      const uint8_t* b = reinterpret_cast<const uint8_t*>(&raw);
      float part = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        float kv;
        if constexpr (F == KvFormat::f32)
          kv = reinterpret_cast<const float*>(b)[e];
        else if constexpr (F == KvFormat::bf16)
          kv = format::bf16_to_f32(reinterpret_cast<const uint16_t*>(b)[e]);
        else
          kv = format::e4m3_to_f32(b[e]);
        part += q[c * E + e] * kv;
      }
      if constexpr (F == KvFormat::fp8) part *= format::ue8m0_to_f32(scales[(c * E) >> 7]);
      s += part;
    }
  } else {
    for (int i = 0; i < hd; ++i) s += q[i] * kv_elem<F>(row, scales, i);
  }
  return s;
}

template <KvFormat F>
__device__ __forceinline__ void attention_body(const uint8_t* kpool, const uint8_t* vpool, const KvGeom& g,
                                               const AttnParams& p, uint32_t* err) {
  pdl_trigger();
  pdl_wait();
  constexpr int D = kMaxHeadDim / 32;
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float m_s[kAttnWarps], l_s[kAttnWarps];
  __shared__ float acc_s[kAttnWarps][kMaxHeadDim];
  const int h = blockIdx.x, t = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hd = g.hd, kvh = h / p.group;
  const float* q = p.q + (size_t(t) * p.n_heads + h) * hd;
  float* out = p.out + (size_t(t) * p.n_heads + h) * hd;

  const int len = p.kv_len[t];
  const int sq = p.seq[t];
  if (!token_ok(p, g, len, sq)) {
    if (threadIdx.x == 0) atomicOr(err, kErrAttnKvLen);
    return;
  }
  const int32_t* table = p.block_tables + size_t(sq) * p.max_pages_per_seq;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) q_s[i] = q[i];
  __syncthreads();

  float m = -INFINITY, l = 0.0f, acc[D];
#pragma unroll
  for (int j = 0; j < D; ++j) acc[j] = 0.0f;
  bool bad_page = false;
  const int first = first_attended(p, len);

  for (int c0 = first / 32 * 32 + warp * 32; c0 < len; c0 += kAttnWarps * 32) {
    const int pos = c0 + lane;
    float sc = -INFINITY;
    int page = 0;
    if (pos >= first && pos < len) {
      page = table[pos / g.ps];
      if (page < 0 || page >= g.n_pages) {
        bad_page = true;
        page = 0;
      } else {
        const uint8_t* pg = kpool + size_t(page) * g.page_bytes;
        const int slot = pos % g.ps;
        sc = dot_q_k<F>(q_s, pg + elem_off<F>(g, slot, kvh), pg + scale_off(g, slot, kvh), hd) * p.scale;
      }
    }
    float cmax = sc;
    for (int o = 16; o > 0; o >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, o));
    const float m_new = fmaxf(m, cmax);
    const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
    const float pw = sc == -INFINITY ? 0.0f : expf(sc - m_new);
    float psum = pw;
    for (int o = 16; o > 0; o >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
    l = l * corr + psum;
#pragma unroll
    for (int j = 0; j < D; ++j) acc[j] *= corr;
    const int n_in_chunk = min(32, len - c0);
    // Unrolled so that the V loads of 8 positions are in flight together (they are independent; a
    // rolled loop waits for one DRAM/L2 round trip per position).
#pragma unroll 8
    for (int pp = 0; pp < n_in_chunk; ++pp) {
      const float w = __shfl_sync(0xffffffffu, pw, pp);
      const int pg_id = __shfl_sync(0xffffffffu, page, pp);
      const uint8_t* pg = vpool + size_t(pg_id) * g.page_bytes;
      const int slot = (c0 + pp) % g.ps;
      const uint8_t* row = pg + elem_off<F>(g, slot, kvh);
      const uint8_t* scales = pg + scale_off(g, slot, kvh);
#pragma unroll
      for (int j = 0; j < D; ++j) {
        const int d = lane + 32 * j;
        if (d < hd) acc[j] += w * kv_elem<F>(row, scales, d);
      }
    }
    m = m_new;
  }
  if (__any_sync(0xffffffffu, bad_page) && lane == 0) atomicOr(err, kErrAttnPage);

  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < D; ++j) {
    const int d = lane + 32 * j;
    if (d < hd) acc_s[warp][d] = acc[j];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, m_s[w]);
  float L = 0.0f, f[kAttnWarps];
  for (int w = 0; w < kAttnWarps; ++w) {
    f[w] = m_s[w] == -INFINITY ? 0.0f : expf(m_s[w] - M);
    L += l_s[w] * f[w];
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) o += acc_s[w][d] * f[w];
    out[d] = o / L;
  }
}

// Left to itself, ptxas holds the fp8 instantiation at 56 registers and spills 4 bytes; asked for one
// block per SM it takes 67 and none. The same bound takes the bf16 and f32 ones from the 64 and 56
// they choose to 128 and 123 (a bound of 6 blocks makes them spill), so fp8 has a kernel of its own.
template <KvFormat F>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p, uint32_t* err) {
  attention_body<F>(kpool, vpool, g, p, err);
}
__global__ void __launch_bounds__(kAttnWarps * 32, 1)
    attention_kernel_fp8(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p, uint32_t* err) {
  attention_body<KvFormat::fp8>(kpool, vpool, g, p, err);
}

// kNew: rope_kv_write of the launch's one token first (block kvh rotates its G query heads and kv
// head kvh, and stores K/V head kvh; warps 0 and 1 store K and V, warps 2.. rotate the query heads),
// with rope_kernel's and kv_write_kernel's code (rope_pair, write_head), so the results are the
// composed ops' bit for bit. Each block reads only the K/V head it stored itself, after a barrier.
// Split attention (MX8_CUDA_SPLIT_ATTN=0 turns it off): block z of a launch takes positions
// [z * split_len, (z + 1) * split_len) of its token and writes its unnormalized partial result
// (per query head: running max m, sum l, output acc scaled to m) to `part`; attention_merge_kernel
// combines the n_splits partials. For long contexts at batch 1, where one block per kv head leaves
// most SMs idle.
// Head split (split attention only): the kernel's G query heads are a part of their kv head's group,
// n_hs blocks per kv head (blockIdx.x = kv head * n_hs + part), each reading the kv head's rows (the
// siblings' reads mostly hit L2). Fewer heads per block take fewer registers: with G = 4 one 256-thread
// block fit per SM (192-203 registers), with G = 2 two do.
struct SplitParams {
  float* part;  // [token][blockIdx.x][split][G * (2 + 128)]: m[G], l[G], acc[G][128]
  int split_len;
  int n_splits;
  int n_hs;  // blocks per kv head
  bool mma;  // the partials come from attention_split_mma.cu (all G heads of a kv head per block)
};

template <KvFormat F, int G, bool kNew, bool kSplit = false>
__global__ void __launch_bounds__(kGqaWarps * 32)
    attention_gqa_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p, uint32_t* err,
                         NewKv nk, SplitParams sp) {
  pdl_trigger();
  pdl_wait();
  constexpr int kStreams = kGqaWarps * 4;
  __shared__ float m_s[kGqaWarps][G], l_s[kGqaWarps][G];
  __shared__ float acc_s[kGqaWarps][G][kGqaHd];
  // bx * G: the block's first query head; kvh: their kv head.
  const int bx = blockIdx.x, kvh = kSplit ? bx / sp.n_hs : bx, t = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if constexpr (kNew) {
    static_assert(G + 2 <= kGqaWarps, "one warp per query head of the group, two for K and V");
    const int32_t pos = nk.positions[t];
    if (warp == 0) {
      float* kr = nk.k + (size_t(t) * g.n_kv + kvh) * kGqaHd;
      for (int j = lane; j < kGqaHd / 2; j += 32) rope_pair(kr, j, pos, nk.r);
      __syncwarp();  // the warp's rotated k is read back by other lanes
      write_head<F>(const_cast<uint8_t*>(kpool), g, kr, nk.slots[t], kvh, lane, err);
    } else if (warp == 1) {
      write_head<F>(const_cast<uint8_t*>(vpool), g, nk.v + (size_t(t) * g.n_kv + kvh) * kGqaHd, nk.slots[t],
                    kvh, lane, err);
    } else if (warp - 2 < G) {
      float* qr = nk.q + (size_t(t) * p.n_heads + size_t(kvh) * G + (warp - 2)) * kGqaHd;
      for (int j = lane; j < kGqaHd / 2; j += 32) rope_pair(qr, j, pos, nk.r);
    }
    __syncthreads();  // the stored K/V row and the rotated q are read by the whole block below
  }
  const int sub = lane & 7;
  const int d0 = sub * kGqaDims;

  TokenSpan span;
  if (!token_span(p, g, t, kSplit ? int(blockIdx.z) : 0, kSplit ? sp.split_len : 0, err, span)) return;
  const int32_t* table = span.table;
  const int lo = span.lo, hi = span.hi;

  float q[G][kGqaDims], acc[G][kGqaDims], m[G], l[G];
  start_streams<G>(p.q + (size_t(t) * p.n_heads + size_t(bx) * G) * kGqaHd, d0, q, acc, m, l);
  bool bad_page = false;

  // The loop bound is uniform across the warp (its 4 streams run the same number of rounds), so the
  // shuffles below always have all 32 lanes; a stream past the end, or on a bad page, computes on
  // zeros and skips its update. Split fp8 rows one at a time: two spilled 16 bytes at 128 registers
  // (the limit for two blocks per SM), and one was as fast (H200, .carry/lead/r9.sh).
  constexpr int kRowsInFlight = kSplit && F == KvFormat::fp8 ? 1 : 2;
#pragma unroll kRowsInFlight
  for (int base = lo + warp * 4; base < hi; base += kStreams) {
    const int pos = base + (lane >> 3);
    bool valid = pos < hi;
    int page = 0;
    if (valid) {
      page = table[pos / g.ps];
      if (page < 0 || page >= g.n_pages) {
        bad_page = true;
        valid = false;
      }
    }
    float kv[kGqaDims], vv[kGqaDims], ks = 1.0f, vs = 1.0f;
    if (valid) {
      const int slot = pos % g.ps;
      const size_t off = size_t(page) * g.page_bytes;
      ks = load16<F, false, !kSplit>(kpool + off + elem_off<F>(g, slot, kvh),
                                     kpool + off + scale_off(g, slot, kvh), d0, kv);
      vs = load16<F, false, !kSplit>(vpool + off + elem_off<F>(g, slot, kvh),
                                     vpool + off + scale_off(g, slot, kvh), d0, vv);
    } else {
#pragma unroll
      for (int i = 0; i < kGqaDims; ++i) kv[i] = vv[i] = 0.0f;
    }
    attend_row<G, kSplit>(q, kv, vv, valid, p.scale, m, l, acc, ks, vs);
  }
  if (__any_sync(0xffffffffu, bad_page) && lane == 0) atomicOr(err, kErrAttnPage);

  merge_streams<G>(m, l, acc);
  stash_warp(m_s, l_s, acc_s, warp, lane, d0, m, l, acc);
  __syncthreads();
  for (int e = threadIdx.x; e < G * kGqaHd; e += blockDim.x) {
    const int h = e / kGqaHd, d = e % kGqaHd;
    float M, L, o;
    combine_warps(m_s, l_s, acc_s, h, d, M, L, o);
    if constexpr (kSplit) {
      float* rec = sp.part + ((size_t(t) * gridDim.x + bx) * sp.n_splits + blockIdx.z) * (G * (2 + kGqaHd));
      if (d == 0) rec[h] = M, rec[G + h] = L;
      rec[2 * G + h * kGqaHd + d] = o;
    } else {
      p.out[(size_t(t) * p.n_heads + size_t(bx) * G + h) * kGqaHd + d] = o / L;
    }
  }
}

// Combines the partials of attention_gqa_kernel<..., kSplit>: one block per (query head, token),
// kMergeParts groups of 128 threads, thread d of a group owning output dim d. The block first finds
// the largest m of the head's records (one per thread), then group j sums records j, j + kMergeParts,
// ... in order and the groups' sums are added in group order: a fixed order, and a few L2 round trips
// where one group over all records waited one per 8 records (H200, 63 records: 27.6 us). Splits past
// the token's length hold m = -inf, l = 0.
constexpr int kMergeParts = 4;
constexpr int kMergeThreads = kMergeParts * kGqaHd;
template <int G>
__global__ void __launch_bounds__(kMergeThreads)
    attention_merge_kernel(AttnParams p, SplitParams sp, int n_bx) {
  pdl_trigger();
  pdl_wait();
  constexpr int kRec = G * (2 + kGqaHd);
  __shared__ float m_s[kMergeThreads / 32], l_s[kMergeParts], o_s[kMergeParts][kGqaHd];
  const int qh = blockIdx.x, t = blockIdx.y, d = threadIdx.x % kGqaHd, j = threadIdx.x / kGqaHd;
  const int bx = qh / G, h = qh % G;
  const float* base = sp.part + (size_t(t) * n_bx + bx) * sp.n_splits * kRec;
  float M = -INFINITY;
  for (int z = threadIdx.x; z < sp.n_splits; z += blockDim.x) M = fmaxf(M, base[size_t(z) * kRec + h]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
  if ((threadIdx.x & 31) == 0) m_s[threadIdx.x >> 5] = M;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kMergeThreads / 32; ++w) M = fmaxf(M, m_s[w]);
  float L = 0.0f, o = 0.0f;
#pragma unroll 4
  for (int z = j; z < sp.n_splits; z += kMergeParts) {
    const float* rec = base + size_t(z) * kRec;
    const float f = rec[h] == -INFINITY ? 0.0f : expf(rec[h] - M);
    L += rec[G + h] * f;
    o += rec[2 * G + h * kGqaHd + d] * f;
  }
  o_s[j][d] = o;
  if (d == 0) l_s[j] = L;
  __syncthreads();
  if (j != 0) return;
  L = 0.0f, o = 0.0f;
#pragma unroll
  for (int i = 0; i < kMergeParts; ++i) L += l_s[i], o += o_s[i][d];
  p.out[(size_t(t) * p.n_heads + qh) * kGqaHd + d] = o / L;
}

template <KvFormat F, bool kNew>
void launch_attention_gqa(const uint8_t* kp, const uint8_t* vp, const KvGeom& g, const AttnParams& p,
                          int n_kv, int n_tokens, uint32_t* err, const NewKv& nk, cudaStream_t s) {
  const dim3 grid{unsigned(n_kv), unsigned(n_tokens)}, block{kGqaWarps * 32};
  switch (p.group) {
    case 1:
      launch("attention_gqa_kernel", attention_gqa_kernel<F, 1, kNew>, grid, block, s, kp, vp, g, p, err, nk,
             SplitParams{});
      break;
    case 2:
      launch("attention_gqa_kernel", attention_gqa_kernel<F, 2, kNew>, grid, block, s, kp, vp, g, p, err, nk,
             SplitParams{});
      break;
    default:
      launch("attention_gqa_kernel", attention_gqa_kernel<F, 4, kNew>, grid, block, s, kp, vp, g, p, err, nk,
             SplitParams{});
      break;
  }
}

// G: query heads per block (sp.n_hs blocks per kv head).
template <KvFormat F, int G>
void launch_split(const uint8_t* kp, const uint8_t* vp, const KvGeom& g, const AttnParams& p, int n_kv,
                  int n_tokens, uint32_t* err, const SplitParams& sp, cudaStream_t s) {
  const int n_bx = n_kv * sp.n_hs;
  launch("attention_gqa_kernel (split)", attention_gqa_kernel<F, G, false, true>,
         dim3(unsigned(n_bx), unsigned(n_tokens), unsigned(sp.n_splits)), dim3(kGqaWarps * 32), s, kp, vp, g,
         p, err, NewKv{}, sp);
}

void launch_merge(const AttnParams& p, const SplitParams& sp, int n_bx, int n_tokens, cudaStream_t s) {
  const dim3 grid(unsigned(p.n_heads), unsigned(n_tokens));
  switch (p.group / sp.n_hs) {
    case 1:
      launch("attention_merge_kernel", attention_merge_kernel<1>, grid, dim3(kMergeThreads), s, p, sp, n_bx);
      break;
    case 2:
      launch("attention_merge_kernel", attention_merge_kernel<2>, grid, dim3(kMergeThreads), s, p, sp, n_bx);
      break;
    default:
      launch("attention_merge_kernel", attention_merge_kernel<4>, grid, dim3(kMergeThreads), s, p, sp, n_bx);
      break;
  }
}

template <KvFormat F>
void launch_split_any_group(const uint8_t* kp, const uint8_t* vp, const KvGeom& g, const AttnParams& p,
                            int n_kv, int n_tokens, uint32_t* err, const SplitParams& sp, cudaStream_t s) {
  switch (p.group / sp.n_hs) {
    case 1:
      launch_split<F, 1>(kp, vp, g, p, n_kv, n_tokens, err, sp, s);
      break;
    case 2:
      launch_split<F, 2>(kp, vp, g, p, n_kv, n_tokens, err, sp, s);
      break;
    default:
      launch_split<F, 4>(kp, vp, g, p, n_kv, n_tokens, err, sp, s);
      break;
  }
  launch_merge(p, sp, n_kv * sp.n_hs, n_tokens, s);
}

template <bool kNew>
void launch_attention_gqa_any(KvFormat f, const uint8_t* kp, const uint8_t* vp, const KvGeom& g,
                              const AttnParams& p, int n_kv, int n_tokens, uint32_t* err, const NewKv& nk,
                              cudaStream_t s) {
  switch (f) {
    case KvFormat::f32:
      launch_attention_gqa<KvFormat::f32, kNew>(kp, vp, g, p, n_kv, n_tokens, err, nk, s);
      break;
    case KvFormat::bf16:
      launch_attention_gqa<KvFormat::bf16, kNew>(kp, vp, g, p, n_kv, n_tokens, err, nk, s);
      break;
    case KvFormat::fp8:
      launch_attention_gqa<KvFormat::fp8, kNew>(kp, vp, g, p, n_kv, n_tokens, err, nk, s);
      break;
  }
  check_launch("attention");
}

void check_attention_args(const CudaKvCache& c, const AttentionArgs& a) {
  const KvCacheDesc& d = c.desc();
  if (a.head_dim != d.head_dim || a.n_kv_heads != d.n_kv_heads || a.n_heads <= 0 || a.n_kv_heads <= 0 ||
      a.n_heads % a.n_kv_heads != 0 || a.layer < 0 || a.layer >= d.n_layers)
    throw Error("cuda backend: attention arguments (heads " + std::to_string(a.n_heads) + ", kv heads " +
                std::to_string(a.n_kv_heads) + ", head_dim " + std::to_string(a.head_dim) + ", layer " +
                std::to_string(a.layer) + ") do not match the KV cache");
  if (d.head_dim > kMaxHeadDim)
    throw Error("cuda backend: attention with head_dim " + std::to_string(d.head_dim) + " (at most " +
                std::to_string(kMaxHeadDim) + " supported)");
  if (a.n_tokens > 65535) throw Error("cuda backend: attention over more than 65535 tokens in one call");
}

constexpr int kSplitLen = 256;    // positions per block of split attention (8 rounds of the 32 streams)
constexpr int kMaxSplits = 64;    // at most this many blocks per (token, kv head)
constexpr int kSplitFrom = 1024;  // split only when the block table can hold more positions than this
// Query heads per block of split attention (SplitParams): two fit two 256-thread blocks per SM.
constexpr int kSplitHeadsPerBlock = 2;
constexpr int kSplitMmaBlocksPerSm = 2;  // the tensor-core split kernel's blocks per SM (a wave)
std::atomic<bool> g_split_mma{true};
std::atomic<int> g_split_gb{0};  // tests: force the query heads per block (0: kSplitHeadsPerBlock)

// The grouped kernel applies: head_dim 128, groups of 1, 2 or 4, 16-byte aligned rows and q.
bool gqa_applies(const CudaKvCache& c, const AttentionArgs& a) {
  const int group = a.n_heads / a.n_kv_heads;
  return gqa_attention_enabled() && c.desc().head_dim == kGqaHd && (group == 1 || group == 2 || group == 4) &&
         c.page_bytes() % 16 == 0 && reinterpret_cast<uintptr_t>(c.pool(a.layer, 0)) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(c.pool(a.layer, 1)) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.q) % 16 == 0;
}

}  // namespace

void set_split_attention_heads_per_block(int gb) {
  g_split_gb.store(gb, std::memory_order_relaxed);
}
bool split_attention_mma_enabled() {
  return g_split_mma.load(std::memory_order_relaxed);
}
void set_split_attention_mma_enabled(bool on) {
  g_split_mma.store(on, std::memory_order_relaxed);
}

// Split attention's layout for `a` (n_splits 0: not split): by the block table's capacity, since the
// lengths are on the device.
SplitParams split_for(const CudaKvCache& c, const AttentionArgs& a) {
  SplitParams sp{nullptr, 0, 0, 1, false};
  const int64_t cap = int64_t(a.max_pages_per_seq) * c.desc().page_size;
  if (!split_attention_enabled() || cap <= kSplitFrom || !gqa_applies(c, a) ||
      attention_prefill_applies(c, a))
    return sp;
  const int group = a.n_heads / a.n_kv_heads;
  if (split_attention_mma_enabled() && split_mma_applies(c.desc().format, group, c.desc().page_size)) {
    // All of a kv head's query heads per block; about kSplitMmaBlocksPerSm blocks per SM in all (one wave
    // of the kernel's two per SM: two or three waves' worth of shorter splits ran 5-10% slower on the
    // H200), splits of at least kSplitLen positions.
    const int64_t units = int64_t(a.n_tokens) * a.n_kv_heads;
    int64_t n =
        std::max<int64_t>(1, (int64_t(kSplitMmaBlocksPerSm) * mx8::cuda::num_sms() + units - 1) / units);
    n = std::min({n, int64_t(kMaxSplits), (cap + kSplitLen - 1) / kSplitLen});
    const int64_t len = ((cap + n - 1) / n + 31) / 32 * 32;
    return SplitParams{nullptr, int(len), int((cap + len - 1) / len), 1, true};
  }
  int64_t len = kSplitLen;
  int64_t n = (cap + len - 1) / len;
  if (n > kMaxSplits) {
    len = ((cap + kMaxSplits - 1) / kMaxSplits + 31) / 32 * 32;
    n = (cap + len - 1) / len;
  }
  sp.split_len = int(len);
  sp.n_splits = int(n);
  const int forced = g_split_gb.load(std::memory_order_relaxed);
  const int gb = forced > 0 && group % forced == 0 ? forced : std::min(group, kSplitHeadsPerBlock);
  sp.n_hs = group / gb;
  return sp;
}

size_t attention_scratch_floats(const CudaKvCache& c, const AttentionArgs& a) {
  check_attention_args(c, a);
  const SplitParams sp = split_for(c, a);
  if (sp.n_splits == 0 || a.n_tokens <= 0) return 0;
  const int group = a.n_heads / a.n_kv_heads;
  return size_t(a.n_tokens) * size_t(a.n_kv_heads) * size_t(sp.n_splits) * size_t(group * (2 + kGqaHd));
}

bool launch_rope_kv_write_attention(CudaKvCache& c, float* q, float* k, const float* v,
                                    const int32_t* positions, const int32_t* slots, const RopeArgs& r,
                                    const AttentionArgs& a, uint32_t* err, cudaStream_t s,
                                    const ActQuantOut* qo) {
  check_attention_args(c, a);
  // Several tokens only where each is its sequence's one token of the step (batched decode): a
  // cluster then reads no K/V row that another cluster of the launch writes.
  if ((a.n_tokens != 1 && !a.one_token_per_seq) || a.n_tokens < 1 || a.q != q || r.head_dim != kGqaHd ||
      r.rot_dim != kGqaHd || split_for(c, a).n_splits > 0)
    return false;
  const AttnParams p{a.q,   a.out,    a.n_heads,      a.n_heads / a.n_kv_heads, a.scale,
                     a.seq, a.kv_len, a.block_tables, a.max_pages_per_seq,      a.window};
  if (const CluPlan pl = cluster_plan(c, a); pl.cp.S > 0) {
    if (qo && pl.gb % pl.cp.S != 0) return false;  // a block's outputs are not whole heads
    launch_cluster_attention(c.desc().format, pl, c.pool(a.layer, 0), c.pool(a.layer, 1), geom_of(c), p,
                             a.n_kv_heads, a.n_tokens, err, NewKv{q, k, v, positions, slots, r},
                             qo ? *qo : ActQuantOut{}, s);
    return true;
  }
  if (qo || a.n_tokens != 1 || !gqa_applies(c, a)) return false;
  launch_attention_gqa_any<true>(c.desc().format, c.pool(a.layer, 0), c.pool(a.layer, 1), geom_of(c), p,
                                 a.n_kv_heads, 1, err, NewKv{q, k, v, positions, slots, r}, s);
  return true;
}

void launch_attention(CudaKvCache& c, const AttentionArgs& a, uint32_t* err, cudaStream_t s, float* scratch) {
  const KvCacheDesc& d = c.desc();
  check_attention_args(c, a);
  if (a.n_tokens <= 0) return;
  const KvGeom g = geom_of(c);
  AttnParams p{a.q,   a.out,    a.n_heads,      a.n_heads / a.n_kv_heads, a.scale,
               a.seq, a.kv_len, a.block_tables, a.max_pages_per_seq,      a.window};
  const dim3 grid(unsigned(a.n_heads), unsigned(a.n_tokens));
  const uint8_t* kp = c.pool(a.layer, 0);
  const uint8_t* vp = c.pool(a.layer, 1);
  if (attention_prefill_applies(c, a)) {
    launch_attention_prefill(c, a, err, s);
    return;
  }
  if (SplitParams sp = split_for(c, a); sp.n_splits > 0) {
    if (!scratch) throw Error("cuda backend: split attention without scratch (attention_scratch_floats)");
    sp.part = scratch;
    if (sp.mma) {
      launch_split_mma_partials(d.format, kp, vp, g, p, a.n_kv_heads, a.n_tokens, err, scratch, sp.split_len,
                                sp.n_splits, s);
      launch_merge(p, sp, a.n_kv_heads, a.n_tokens, s);
      check_launch("attention (split, tensor cores)");
      return;
    }
    switch (d.format) {
      case KvFormat::f32:
        launch_split_any_group<KvFormat::f32>(kp, vp, g, p, a.n_kv_heads, a.n_tokens, err, sp, s);
        break;
      case KvFormat::bf16:
        launch_split_any_group<KvFormat::bf16>(kp, vp, g, p, a.n_kv_heads, a.n_tokens, err, sp, s);
        break;
      case KvFormat::fp8:
        launch_split_any_group<KvFormat::fp8>(kp, vp, g, p, a.n_kv_heads, a.n_tokens, err, sp, s);
        break;
    }
    check_launch("attention (split)");
    return;
  }
  if (const CluPlan pl = cluster_plan(c, a); pl.cp.S > 0) {
    launch_cluster_attention(d.format, pl, kp, vp, g, p, a.n_kv_heads, a.n_tokens, err, NewKv{},
                             ActQuantOut{}, s);
    return;
  }
  if (gqa_applies(c, a)) {
    launch_attention_gqa_any<false>(d.format, kp, vp, g, p, a.n_kv_heads, a.n_tokens, err, NewKv{}, s);
    return;
  }
  switch (d.format) {
    case KvFormat::f32:
      launch("attention_kernel", attention_kernel<KvFormat::f32>, dim3(grid), dim3(kAttnWarps * 32), s, kp,
             vp, g, p, err);
      break;
    case KvFormat::bf16:
      launch("attention_kernel", attention_kernel<KvFormat::bf16>, dim3(grid), dim3(kAttnWarps * 32), s, kp,
             vp, g, p, err);
      break;
    case KvFormat::fp8:
      launch("attention_kernel", attention_kernel_fp8, dim3(grid), dim3(kAttnWarps * 32), s, kp, vp, g, p,
             err);
      break;
  }
  check_launch("attention");
}

}  // namespace mx8::backend::cuda_impl
