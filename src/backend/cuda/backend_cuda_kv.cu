// The paged KV cache on the GPU: storage, kv_write (f32 / bf16 / fp8 E4M3 with one UE8M0 `ceil`
// scale per (token, head, 128 values)) and attention over the pages.
//
// Page layout is the CPU backend's (backend_cpu_attention.cpp), byte for byte, head-major: elements
// [kv head][slot][head_dim] in the cache's format, then for fp8 the scales [kv head][slot][nb]
// (the CPU backend moved to head-major pages in f296e73; the test compares the bytes).
// kv_write converts with the format layer's codecs, so the bytes equal the CPU backend's.
//
// Attention: one thread block per (query token, query head), 4 warps. The keys of the sequence are
// taken 32 positions at a time (a "chunk"), chunk c by warp c % 4: lane j scores position 32c + j
// against the whole head (q is in shared memory), the warp takes the chunk's max and sum with
// shuffles and folds the chunk into its running (max, sum, output) - the online softmax - reading V
// coalesced (lane owns dims lane, lane + 32, ...). At the end the 4 warps' partial results are
// merged in shared memory. This reads each K and V row once per query head; GQA's sibling heads hit
// the same rows in L2.
// That kernel remains the general path. head_dim 128 (Llama-3) takes attention_cluster_kernel: one
// (query token, kv head) over a thread block cluster, split by query heads and positions, merged
// through distributed shared memory (see its comment); block tables of more than 1024 positions
// take split attention (partials in scratch from attention_split_mma.cu's tensor-core kernel, or for
// f32 caches and other page sizes from attention_gqa_kernel<..., kSplit>; attention_merge_kernel).
// attention_gqa_kernel without the split (one block per (query token, kv head), each K/V row read
// once for the whole group) is kept for A/B comparisons (MX8_CUDA_CLUSTER_ATTN=0).
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/attention_split_mma.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/device_info.h"
#include "backend/cuda/ptx/cluster.cuh"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"
#include "mx8/format/ue8m0.h"

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

CudaKvCache::CudaKvCache(const KvCacheDesc& d, cudaStream_t s) : KvCache(d) {
  page_bytes_ = d.page_bytes();
  const size_t bytes = d.total_bytes();
  cudaError_t e = cudaMalloc(&base_, bytes);
  if (e != cudaSuccess)
    throw Error("cuda backend: cannot allocate " + std::to_string(bytes >> 20) + " MiB for the KV cache (" +
                cudaGetErrorString(e) + ")");
  // Zeroed so that a cache is deterministic even where nothing was written yet.
  check(cudaMemsetAsync(base_, 0, bytes, s), "KV cache memset");
}

CudaKvCache::~CudaKvCache() {
  bump_memory_epoch();  // recorded steps that wrote or read these pages must not be replayed
  if (base_) cudaFree(base_);
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

// ---- kv_write: one warp per (token, kv head, K or V) --------------------------------------------

// One warp stores head `h` of one token, src[hd], at slot id `s` of `pool` (K or V of a layer).
template <KvFormat F>
__device__ void write_head(uint8_t* pool, const KvGeom& g, const float* src, int32_t s, int h, int lane,
                           uint32_t* err) {
  if (s < 0 || s >= g.capacity) {
    if (lane == 0) atomicOr(err, kErrKvSlot);
    return;
  }
  const int page = s / g.ps, slot = s % g.ps;
  uint8_t* pg = pool + size_t(page) * g.page_bytes;
  uint8_t* dst = pg + elem_off<F>(g, slot, h);
  if constexpr (F == KvFormat::f32) {
    float* d32 = reinterpret_cast<float*>(dst);
    for (int i = lane; i < g.hd; i += 32) d32[i] = src[i];
  } else if constexpr (F == KvFormat::bf16) {
    uint16_t* d16 = reinterpret_cast<uint16_t*>(dst);
    for (int i = lane; i < g.hd; i += 32) d16[i] = format::f32_to_bf16_rne(src[i]);
  } else {
    uint8_t* scales = pg + scale_off(g, slot, h);
    for (int b = 0; b < g.nb; ++b) {
      const int i0 = b * 128, i1 = min(g.hd, i0 + 128);
      uint32_t amax = 0;
      for (int i = i0 + lane; i < i1; i += 32) amax = format::amax_bits_accumulate(amax, src[i]);
      amax = __reduce_max_sync(0xffffffffu, amax);
      const format::BlockScale bs = format::compute_block_scale(
          format::f32_from_bits(amax), format::ElementFormat::e4m3, {format::ScaleRule::ceil});
      if (lane == 0) scales[b] = bs.ue8m0;
      for (int i = i0 + lane; i < i1; i += 32)
        dst[i] = format::e4m3_from_f32(__fmul_rn(src[i], bs.inv_scale), true);
    }
  }
}

template <KvFormat F>
__global__ void kv_write_kernel(uint8_t* kpool, uint8_t* vpool, KvGeom g, const float* k, const float* v,
                                const int32_t* slots, int64_t n_tokens, uint32_t* err) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (gw >= n_tokens * g.n_kv * 2) return;
  const int which = int(gw & 1);  // 0: K, 1: V
  const int64_t th = gw >> 1;
  const int64_t t = th / g.n_kv;
  write_head<F>(which ? vpool : kpool, g, (which ? v : k) + th * g.hd, slots[t], int(th % g.n_kv), lane, err);
}

// rope on q and k, then kv_write, in one launch: one warp per (token, row), rows = the token's query
// heads, then its kv heads (rotated in place, then stored), then its V heads (stored). The rotation
// is rope_kernel's (rope_pair), so the results are bit-identical to rope + rope + kv_write.
template <KvFormat F>
__global__ void rope_kv_write_kernel(uint8_t* kpool, uint8_t* vpool, KvGeom g, float* q, float* k,
                                     const float* v, const int32_t* positions, const int32_t* slots,
                                     int64_t n_tokens, int n_heads, RopeArgs r, uint32_t* err) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int rows = n_heads + 2 * g.n_kv;
  if (gw >= n_tokens * rows) return;
  const int64_t t = gw / rows;
  const int row = int(gw % rows);
  if (row < n_heads + g.n_kv) {
    float* x =
        row < n_heads ? q + (t * n_heads + row) * r.head_dim : k + (t * g.n_kv + row - n_heads) * r.head_dim;
    const int32_t pos = positions[t];
    for (int j = lane; j < r.rot_dim / 2; j += 32) rope_pair(x, j, pos, r);
    if (row < n_heads) return;
    __syncwarp();  // the warp's rotated k is read back by other lanes below
    write_head<F>(kpool, g, x, slots[t], row - n_heads, lane, err);
    return;
  }
  const int h = row - n_heads - g.n_kv;
  write_head<F>(vpool, g, v + (t * g.n_kv + h) * g.hd, slots[t], h, lane, err);
}

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

// ---- attention, GQA-grouped (head_dim 128, group <= 4) --------------------------------------------
//
// One block per (query token, kv head) serves all G query heads of the group, so every K and V row
// is read once (the per-query-head kernel above reads it G times). 8 warps; each warp is 4 "streams"
// of 8 lanes, stream s of the block takes positions s, s + 32, ...; inside a stream lane `sub` owns
// the 16 contiguous dims [16 sub, 16 sub + 16) of the head (one to four 16-byte loads per row), so
// the 8 lanes of a stream read one row coalesced and a dot product needs only a 3-step shuffle
// reduction over the stream's lanes. Each stream keeps its own online softmax (max, sum, output) per
// query head; the 32 streams are merged at the end (shuffles inside a warp, shared memory across
// warps). Loads of the next position are independent of the running softmax, so the loop is
// unrolled by 2 to keep two rows' loads in flight per stream.
constexpr int kGqaWarps = 8;
constexpr int kGqaHd = 128;
constexpr int kGqaDims = 16;  // dims per lane

// One K/V row against a stream's G query heads: the dot products (the stream's 8 lanes hold 16
// dims each: xor 4, 2, 1 stays inside the stream), then each head's online-softmax update with the
// row's value. `valid` is uniform over the stream, so the shuffles have all 32 lanes; an invalid
// stream computes on zeros and skips its update.
// kLazy (split attention, long rows of positions): the running output is rescaled only when a
// stream's max grows (a warp-wide vote; corr = 1 on the other streams), which past the first rounds is
// rare, so a row costs one FFMA per output value instead of a multiply and an FFMA; and ks, vs are the
// row's K and V scales (fp8 codes loaded unscaled: a power of two applied to the dot product and to
// the probability instead of to 16 values each).
template <int G, bool kLazy = false>
__device__ __forceinline__ void attend_row(const float (&q)[G][kGqaDims], const float (&kv)[kGqaDims],
                                           const float (&vv)[kGqaDims], bool valid, float scale,
                                           float (&m)[G], float (&l)[G], float (&acc)[G][kGqaDims],
                                           float ks = 1.0f, float vs = 1.0f) {
#pragma unroll
  for (int h = 0; h < G; ++h) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kGqaDims; ++i) s += q[h][i] * kv[i];
    s += __shfl_xor_sync(0xffffffffu, s, 4);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if constexpr (kLazy) {
      s *= scale * ks;
      const float m_new = valid ? fmaxf(m[h], s) : m[h];
      if (__any_sync(0xffffffffu, m_new != m[h])) {
        const float corr = m[h] == -INFINITY ? 0.0f : expf(m[h] - m_new);
        l[h] *= corr;
#pragma unroll
        for (int i = 0; i < kGqaDims; ++i) acc[h][i] *= corr;
        m[h] = m_new;
      }
      if (valid) {
        const float pw = expf(s - m[h]);
        l[h] += pw;
        const float pv = pw * vs;
#pragma unroll
        for (int i = 0; i < kGqaDims; ++i) acc[h][i] = fmaf(pv, vv[i], acc[h][i]);
      }
    } else if (valid) {
      s *= scale;
      const float m_new = fmaxf(m[h], s);
      const float corr = m[h] == -INFINITY ? 0.0f : expf(m[h] - m_new);
      const float pw = expf(s - m_new);
      l[h] = l[h] * corr + pw;
#pragma unroll
      for (int i = 0; i < kGqaDims; ++i) acc[h][i] = acc[h][i] * corr + pw * vv[i];
      m[h] = m_new;
    }
  }
}

// Merges a warp's 4 streams (lanes sub, sub + 8, sub + 16, sub + 24 hold the same dims): after it,
// every lane holds its dims' state of the whole warp.
template <int G>
__device__ __forceinline__ void merge_streams(float (&m)[G], float (&l)[G], float (&acc)[G][kGqaDims]) {
#pragma unroll
  for (int o = 8; o <= 16; o <<= 1) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m[h], o);
      const float l2 = __shfl_xor_sync(0xffffffffu, l[h], o);
      const float M = fmaxf(m[h], m2);
      const float f1 = m[h] == -INFINITY ? 0.0f : expf(m[h] - M);
      const float f2 = m2 == -INFINITY ? 0.0f : expf(m2 - M);
      l[h] = l[h] * f1 + l2 * f2;
#pragma unroll
      for (int i = 0; i < kGqaDims; ++i) {
        const float a2 = __shfl_xor_sync(0xffffffffu, acc[h][i], o);
        acc[h][i] = acc[h][i] * f1 + a2 * f2;
      }
      m[h] = M;
    }
  }
}

// A warp's merged state into shared memory (after merge_streams lanes 0..7 hold all 128 dims).
template <int W, int G>
__device__ __forceinline__ void stash_warp(float (&m_s)[W][G], float (&l_s)[W][G],
                                           float (&acc_s)[W][G][kGqaHd], int warp, int lane, int d0,
                                           const float (&m)[G], const float (&l)[G],
                                           const float (&acc)[G][kGqaDims]) {
  if (lane < 8) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
      if (lane == 0) m_s[warp][h] = m[h], l_s[warp][h] = l[h];
#pragma unroll
      for (int i = 0; i < kGqaDims; ++i) acc_s[warp][h][d0 + i] = acc[h][i];
    }
  }
}

// Dim d of head h over the block's W warps, in warp order: running max M, sum L, unnormalized o.
template <int W, int G>
__device__ __forceinline__ void combine_warps(const float (&m_s)[W][G], const float (&l_s)[W][G],
                                              const float (&acc_s)[W][G][kGqaHd], int h, int d, float& M,
                                              float& L, float& o) {
  M = -INFINITY;
#pragma unroll
  for (int w = 0; w < W; ++w) M = fmaxf(M, m_s[w][h]);
  L = 0.0f, o = 0.0f;
#pragma unroll
  for (int w = 0; w < W; ++w) {
    const float f = m_s[w][h] == -INFINITY ? 0.0f : expf(m_s[w][h] - M);
    L += l_s[w][h] * f;
    o += acc_s[w][h][d] * f;
  }
}

// 16 dims of a stored head row (starting at element d0) as f32; fp8 is times its block's scale, or
// with kScaled false the codes' values, the scale returned for the caller to apply (1 for the other
// formats). kL2: loads that bypass L1 (__ldcg), for rows another SM of the cluster has just stored.
template <KvFormat F, bool kL2 = false, bool kScaled = true>
__device__ __forceinline__ float load16(const uint8_t* row, const uint8_t* scales, int d0, float* v) {
  auto ld = [](const auto* p) { return kL2 ? __ldcg(p) : *p; };
  if constexpr (F == KvFormat::f32) {
    const float4* p = reinterpret_cast<const float4*>(row) + d0 / 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 t = ld(p + i);
      v[4 * i] = t.x, v[4 * i + 1] = t.y, v[4 * i + 2] = t.z, v[4 * i + 3] = t.w;
    }
  } else if constexpr (F == KvFormat::bf16) {
    const uint4* p = reinterpret_cast<const uint4*>(row + size_t(d0) * 2);
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const uint4 r = ld(p + i);
      const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[8 * i + 2 * j] = __uint_as_float(w[j] << 16);
        v[8 * i + 2 * j + 1] = __uint_as_float(w[j] & 0xffff0000u);
      }
    }
  } else {
    const uint4 r = ld(reinterpret_cast<const uint4*>(row + d0));
    const float s = format::ue8m0_to_f32(ld(scales + (d0 >> 7)));
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      // E4M3 -> f16 is exact (hardware cvt), f16 -> f32 exact, times a power of two: equals the
      // format layer's e4m3_to_f32(code) * scale.
      const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[j] & 0xffffu), __NV_E4M3);
      const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[j] >> 16), __NV_E4M3);
      const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
      const float m = kScaled ? s : 1.0f;
      v[4 * j] = a.x * m, v[4 * j + 1] = a.y * m, v[4 * j + 2] = b.x * m, v[4 * j + 3] = b.y * m;
    }
    return s;
  }
  return 1.0f;
}

// The new token's q, k, v for attention_gqa_kernel<..., kNew = true> (one token per launch).
struct NewKv {
  float* q;  // == AttnParams::q
  float* k;
  const float* v;
  const int32_t* positions;
  const int32_t* slots;
  RopeArgs r;
};

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
#pragma unroll
  for (int h = 0; h < G; ++h) {
    const float4* qp =
        reinterpret_cast<const float4*>(p.q + (size_t(t) * p.n_heads + size_t(bx) * G + h) * kGqaHd + d0);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 v = qp[i];
      q[h][4 * i] = v.x, q[h][4 * i + 1] = v.y, q[h][4 * i + 2] = v.z, q[h][4 * i + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < kGqaDims; ++i) acc[h][i] = 0.0f;
    m[h] = -INFINITY;
    l[h] = 0.0f;
  }
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

// ---- attention, cluster-split (head_dim 128, decode and short prefill chunks) ---------------------
//
// attention_gqa_kernel with one block per kv head leaves most SMs idle at batch 1 and runs its
// positions as a chain of dependent rounds (table, then K/V rows, then the softmax) on those few
// SMs: 14.5 us per layer at ~126 positions (ncu, H200, Llama-3-8B shapes, 8 blocks). This kernel
// spreads one (token, kv head) over a thread block cluster of n_hs * S blocks (at most 8 by
// default, 16 allowed):
// - head split: block hs of the n_hs serves query heads [hs * Gb, (hs + 1) * Gb) of the group
//   (Gb = 1 by default, 2 or 4: fewer registers and less softmax/merge work per thread; the
//   sibling blocks read the same K/V rows, mostly from L2);
// - position split: the S blocks of a head split take the positions round-robin by stream (stream
//   j of block z, 32 streams per block, takes positions 32 z + j, 32 z + j + 32 S, ...), so the
//   work adapts to the actual length (read on the device; a recorded step only knows the block
//   table's capacity) and up to 32 S positions cost one round of loads.
// Streams are attention_gqa_kernel's (8 lanes, 16 dims each, own online softmax per query head),
// merged in the warp, then across the block's warps in shared memory, then across the S blocks of
// the cluster through distributed shared memory: each block merges a slice of the Gb * 128
// outputs; the others push their partials for it into its shared memory, and it sums them in the
// order z = 0 .. S-1 (deterministic; one cluster barrier).
// Llama-3-8B at ~126 positions (G = 4: clusters of 4 x 2 blocks, 64 blocks): 9.5-10 us in ncu,
// decode 305 -> 319 tok/s (FP8 weights, graphs on).
// The table entries and the K/V rows of a stream's first two rounds are loaded before anything else
// (the q load, the rope + kv_write prologue, the cluster barrier), so their DRAM latency overlaps it.
// With nk.q set (rope_kv_write_attention, one token): block 0 of the cluster rotates k and stores
// K/V head kvh (warps 0 and 1, rope_angle + rope_rotate + write_head as the composed ops), every
// block rotates its own copy of its query heads into shared memory (the same bits as rope_kernel),
// and a cluster barrier orders the stores before every read of the cache; a preloaded row that is
// the slot just written is loaded again after it. The rope angles are computed before the wait and
// each pair is rotated in registers by the thread that loads it, so q and k cost one round trip each
// (H200, decode FP8 at ~130 positions: 391 -> 394 tok/s with the second round). Block z = 0 of each
// head split writes the rotated q back (after the barrier, when every sibling has read the raw q).
constexpr int kCluWarps = 8;
constexpr int kCluStreams = kCluWarps * 4;
constexpr int kCluMaxS = 16;
// Rounds of a stream's K/V rows loaded before the prologue: with up to 32 S kPreRounds positions,
// nothing is left to load after the cluster barrier but the new token's row.
constexpr int kPreRounds = 2;

// How attention_cluster_kernel spreads a (token, kv head): a cluster of n_hs * S blocks.
struct CluParams {
  int group;   // query heads per kv head
  int n_hs;    // head splits (group / Gb)
  int S;       // position splits
  bool early;  // one-token fused path: the first K/V round is loaded before griddepcontrol.wait
};

using mx8::cuda::ptx::cluster_arrive_relaxed;
using mx8::cuda::ptx::cluster_peer;
using mx8::cuda::ptx::cluster_sync_all;
using mx8::cuda::ptx::cluster_wait;

// Table entry and K/V rows (this lane's 16 dims) of position `pos` of head kvh; false when the
// position is outside [lo, hi) or on a bad page (then kv and vv are zeros).
template <KvFormat F, bool kL2 = false>
__device__ __forceinline__ bool clu_load(const uint8_t* kpool, const uint8_t* vpool, const KvGeom& g,
                                         const int32_t* table, int pos, int lo, int hi, int kvh, int d0,
                                         float* kv, float* vv, int& slot_id, bool& bad_page) {
  bool valid = pos >= lo && pos < hi;
  int page = 0;
  if (valid) {
    page = table[pos / g.ps];
    if (page < 0 || page >= g.n_pages) {
      bad_page = true;
      valid = false;
    }
  }
  slot_id = -1;
  if (valid) {
    const int slot = pos % g.ps;
    slot_id = page * g.ps + slot;
    const size_t off = size_t(page) * g.page_bytes;
    load16<F, kL2>(kpool + off + elem_off<F>(g, slot, kvh), kpool + off + scale_off(g, slot, kvh), d0, kv);
    load16<F, kL2>(vpool + off + elem_off<F>(g, slot, kvh), vpool + off + scale_off(g, slot, kvh), d0, vv);
  } else {
#pragma unroll
    for (int i = 0; i < kGqaDims; ++i) kv[i] = vv[i] = 0.0f;
  }
  return valid;
}

template <KvFormat F, int Gb>
__global__ void __launch_bounds__(kCluWarps * 32)
    attention_cluster_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p,
                             uint32_t* err, NewKv nk, CluParams cp) {
  pdl_trigger();
  // cp.early (one token, nk.q set): everything the first round reads before the wait is stable while
  // the previous kernel runs. The block table, lengths and sequence ids are copies the host staged
  // before the step's first kernel, and every K/V row but the new token's was written by an earlier
  // step; the new token's row is loaded again after the cluster barrier below. Not with a separate
  // kv_write before this kernel (chunks of tokens): its rows would be read too early.
  const bool fresh = nk.q != nullptr;
  const bool wait_late = cp.early && fresh;
  if (!wait_late) pdl_wait();
  __shared__ __align__(16) float q_s[Gb][kGqaHd];
  __shared__ float k_s[kGqaHd];  // block 0 (fresh): the new token's rotated k, for write_head
  __shared__ float m_s[kCluWarps][Gb], l_s[kCluWarps][Gb];
  __shared__ float acc_s[kCluWarps][Gb][kGqaHd];
  // S > 1: the partials of the S blocks for the outputs this block merges (written by the others).
  __shared__ float ml_s[kCluMaxS][2 * Gb];        // [z]: m[Gb], l[Gb]
  __shared__ float po_s[Gb * kGqaHd + kCluMaxS];  // [z][per]: acc of this block's outputs
  const int C = cp.n_hs * cp.S;
  const int c = int(blockIdx.x) % C;  // rank in the cluster (clusters are C consecutive blocks along x)
  const int kvh = int(blockIdx.x) / C, hs = c / cp.S, z = c % cp.S, t = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane & 7, d0 = sub * kGqaDims;
  const size_t qrow = size_t(t) * p.n_heads + size_t(kvh) * cp.group + size_t(hs) * Gb;  // first q head

  const int len = p.kv_len[t];
  const int sq = p.seq[t];
  const bool bad_len = !token_ok(p, g, len, sq);
  const int32_t* table = p.block_tables + size_t(bad_len ? 0 : sq) * p.max_pages_per_seq;
  const int stride = kCluStreams * cp.S;
  const int base0 = z * kCluStreams + warp * 4;  // the warp's first position (its 4 streams: + 0..3)
  const int hi = bad_len ? 0 : len;
  const int lo = first_attended(p, hi);
  // Blocks push their partials into each other's shared memory at the end (S > 1); without the
  // prologue's cluster barrier, this split barrier says that all have started.
  const bool early_arrive = cp.S > 1 && !fresh;
  if (early_arrive) cluster_arrive_relaxed();

  // The first kPreRounds rounds: issued before the prologue (positions past the length load nothing).
  bool bad_page = false;
  float kv[kPreRounds][kGqaDims], vv[kPreRounds][kGqaDims];
  int slot_id[kPreRounds];
  bool valid[kPreRounds];
#pragma unroll
  for (int r = 0; r < kPreRounds; ++r)
    valid[r] = clu_load<F>(kpool, vpool, g, table, base0 + r * stride + (lane >> 3), lo, hi, kvh, d0, kv[r],
                           vv[r], slot_id[r], bad_page);
  // The new token's rope angles, also before the wait: its position comes with the same host-staged
  // upload as the table, and inv_freq is a constant table. Each pair is rotated by one thread, which
  // loads its two values after the wait, so q and k each take one round trip: q pair qt % 64 of head
  // qt / 64 by the block's last Gb * 64 threads (block 0's warps 0 and 1, which store K and V, are
  // free of them where Gb < 4), k pairs lane and lane + 32 by block 0's warp 0.
  int32_t pos = 0, new_slot = -1;
  const int qt = int(threadIdx.x) - (kCluWarps * 32 - Gb * (kGqaHd / 2));
  const bool k_warp = fresh && c == 0 && warp == 0;
  RopeAngle aq{}, ak[2]{};
  if (fresh) {
    pos = nk.positions[t];
    new_slot = nk.slots[t];
    if (qt >= 0) aq = rope_angle(qt % (kGqaHd / 2), pos, nk.r);
    if (k_warp)
#pragma unroll
      for (int i = 0; i < 2; ++i) ak[i] = rope_angle(lane + 32 * i, pos, nk.r);
  }
  if (wait_late) pdl_wait();

  if (fresh) {
    if (k_warp) {
      float* kr = nk.k + (size_t(t) * g.n_kv + kvh) * kGqaHd;
      float v[2][2];
      int at[2][2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        at[i][0] = rope_i0(lane + 32 * i, nk.r), at[i][1] = rope_i1(lane + 32 * i, nk.r);
        v[i][0] = kr[at[i][0]], v[i][1] = kr[at[i][1]];
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        rope_rotate(v[i][0], v[i][1], ak[i]);
#pragma unroll
        for (int e = 0; e < 2; ++e) kr[at[i][e]] = k_s[at[i][e]] = v[i][e];
      }
      __syncwarp();  // the warp's rotated k is read back by other lanes
      write_head<F>(const_cast<uint8_t*>(kpool), g, k_s, new_slot, kvh, lane, err);
    } else if (c == 0 && warp == 1) {
      write_head<F>(const_cast<uint8_t*>(vpool), g, nk.v + (size_t(t) * g.n_kv + kvh) * kGqaHd, new_slot, kvh,
                    lane, err);
    }
    if (qt >= 0) {
      const int h = qt / (kGqaHd / 2), j = qt % (kGqaHd / 2);
      const int i0 = rope_i0(j, nk.r), i1 = rope_i1(j, nk.r);
      float v0 = p.q[(qrow + h) * kGqaHd + i0], v1 = p.q[(qrow + h) * kGqaHd + i1];
      rope_rotate(v0, v1, aq);
      q_s[h][i0] = v0;
      q_s[h][i1] = v1;
    }
    // The cache stores of block 0 before every block's reads (the cluster barrier orders global
    // memory at cluster scope); the raw q read by every block before block z = 0 overwrites it.
    if (C > 1)
      cluster_sync_all();
    else
      __syncthreads();
    if (z == 0)
      for (int i = threadIdx.x; i < Gb * kGqaHd; i += blockDim.x)
        nk.q[qrow * kGqaHd + i] = q_s[i / kGqaHd][i % kGqaHd];
#pragma unroll
    for (int r = 0; r < kPreRounds; ++r)
      if (valid[r] && slot_id[r] == new_slot)
        valid[r] = clu_load<F, true>(kpool, vpool, g, table, base0 + r * stride + (lane >> 3), lo, hi, kvh,
                                     d0, kv[r], vv[r], slot_id[r], bad_page);
  } else {
    for (int i = threadIdx.x; i < Gb * kGqaHd; i += blockDim.x)
      q_s[i / kGqaHd][i % kGqaHd] = p.q[qrow * kGqaHd + i];
    __syncthreads();
  }
  if (bad_len) {
    if (threadIdx.x == 0 && c == 0) atomicOr(err, kErrAttnKvLen);
    if (early_arrive) cluster_wait();
    return;  // uniform over the cluster (every block reads the same length)
  }

  float q[Gb][kGqaDims], acc[Gb][kGqaDims], m[Gb], l[Gb];
#pragma unroll
  for (int h = 0; h < Gb; ++h) {
    const float4* qp = reinterpret_cast<const float4*>(&q_s[h][d0]);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float4 v = qp[i];
      q[h][4 * i] = v.x, q[h][4 * i + 1] = v.y, q[h][4 * i + 2] = v.z, q[h][4 * i + 3] = v.w;
    }
#pragma unroll
    for (int i = 0; i < kGqaDims; ++i) acc[h][i] = 0.0f;
    m[h] = -INFINITY;
    l[h] = 0.0f;
  }

  // The warp's rounds of its 4 streams, in order (the bounds are uniform over the warp, so the shuffles
  // have all 32 lanes; an invalid stream computes on zeros and skips its update).
#pragma unroll
  for (int r = 0; r < kPreRounds; ++r)
    if (base0 + r * stride < hi) attend_row<Gb>(q, kv[r], vv[r], valid[r], p.scale, m, l, acc);
#pragma unroll 2
  for (int base = base0 + kPreRounds * stride; base < hi; base += stride) {
    valid[0] = clu_load<F>(kpool, vpool, g, table, base + (lane >> 3), lo, hi, kvh, d0, kv[0], vv[0],
                           slot_id[0], bad_page);
    attend_row<Gb>(q, kv[0], vv[0], valid[0], p.scale, m, l, acc);
  }
  if (__any_sync(0xffffffffu, bad_page) && lane == 0) atomicOr(err, kErrAttnPage);

  merge_streams<Gb>(m, l, acc);
  stash_warp(m_s, l_s, acc_s, warp, lane, d0, m, l, acc);
  __syncthreads();
  // Across the block's warps; S == 1: the result, else the block's partial goes to the block that
  // merges output e (block w = e / per of the head split), into its po_s[z][e - w * per], with
  // m and l to all S of them.
  const int per = (Gb * kGqaHd + cp.S - 1) / cp.S;
  if (early_arrive) cluster_wait();
  for (int e = threadIdx.x; e < Gb * kGqaHd; e += blockDim.x) {
    const int h = e / kGqaHd, d = e % kGqaHd;
    float M, L, o;
    combine_warps(m_s, l_s, acc_s, h, d, M, L, o);
    if (cp.S == 1) {
      p.out[(qrow + h) * kGqaHd + d] = o / L;
    } else {
      const int w = e / per;
      cluster_peer(po_s, hs * cp.S + w)[z * per + e - w * per] = o;
      if (d == 0)
        for (int w2 = 0; w2 < cp.S; ++w2) {
          float* ml = cluster_peer(&ml_s[0][0], hs * cp.S + w2) + z * 2 * Gb;
          ml[h] = M;
          ml[Gb + h] = L;
        }
    }
  }
  if (cp.S == 1) return;
  // Block z merges outputs [z * per, (z + 1) * per) from the S partials, in the order 0 .. S-1.
  cluster_sync_all();  // the pushes above are visible (nothing remote is touched after this)
  const int e_end = min(Gb * kGqaHd, (z + 1) * per);
  for (int e = z * per + int(threadIdx.x); e < e_end; e += blockDim.x) {
    const int h = e / kGqaHd;
    float M = -INFINITY;
#pragma unroll
    for (int zz = 0; zz < kCluMaxS; ++zz)
      if (zz < cp.S) M = fmaxf(M, ml_s[zz][h]);
    float L = 0.0f, o = 0.0f;
#pragma unroll
    for (int zz = 0; zz < kCluMaxS; ++zz) {
      if (zz < cp.S) {
        const float f = ml_s[zz][h] == -INFINITY ? 0.0f : expf(ml_s[zz][h] - M);
        L += ml_s[zz][Gb + h] * f;
        o += po_s[zz * per + e - z * per] * f;
      }
    }
    p.out[(qrow + h) * kGqaHd + e % kGqaHd] = o / L;
  }
}

// Launches `kernel` on `s` as clusters of `cluster_x` blocks along x (with the PDL attribute when
// enabled) and checks the launch.
template <typename... KArgs, typename... Args>
void launch_cluster(const char* op, void (*kernel)(KArgs...), dim3 grid, dim3 block, unsigned cluster_x,
                    cudaStream_t s, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  if (cluster_x > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster_x;
    attr[n].val.clusterDim.y = 1;
    attr[n].val.clusterDim.z = 1;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  check(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...), op);
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

// attention_cluster_kernel's knobs, read once (A/B measurements): MX8_CUDA_CLUSTER_ATTN=0 turns it
// off (the grouped kernel as before); MX8_CUDA_CLUSTER_ATTN_MAX_C caps the blocks of a cluster
// (default 8, the portable cluster size; up to 16, where the device schedules it);
// MX8_CUDA_CLUSTER_ATTN_GB forces query heads per block (1, 2 or 4, where it divides the group);
// MX8_CUDA_CLUSTER_ATTN_POS is the positions of block table capacity per split above 160 (default
// 32: one round of a block's streams); MX8_CUDA_CLUSTER_ATTN_VERBOSE prints the layouts chosen;
// MX8_CUDA_CLUSTER_ATTN_EARLY=0 loads the first K/V round after griddepcontrol.wait in the one-token
// fused path too (default: before it).
struct CluKnobs {
  bool on = true, early = true;
  int max_c = 8, gb = 0, pos = 32;
};
const CluKnobs& clu_knobs() {
  static const CluKnobs k = [] {
    CluKnobs r;
    auto num = [](const char* name, int def) {
      const char* e = std::getenv(name);
      if (!e || !*e) return def;
      char* end = nullptr;
      const long v = std::strtol(e, &end, 10);
      if (*end != '\0') throw Error(std::string(name) + "=" + e + ": not an integer");
      return int(v);
    };
    r.on = num("MX8_CUDA_CLUSTER_ATTN", 1) != 0;
    r.early = num("MX8_CUDA_CLUSTER_ATTN_EARLY", 1) != 0;
    r.max_c = std::max(1, std::min(kCluMaxS, num("MX8_CUDA_CLUSTER_ATTN_MAX_C", r.max_c)));
    r.gb = num("MX8_CUDA_CLUSTER_ATTN_GB", 0);
    r.pos = std::max(1, num("MX8_CUDA_CLUSTER_ATTN_POS", r.pos));
    return r;
  }();
  return k;
}
std::atomic<int> g_cluster_splits{0};  // tests: force the position splits (0: the heuristic)
std::atomic<int> g_cluster_gb{0};      // tests: force the query heads per block (0: the default)

// Clusters of more than 8 blocks (non-portable) for the kernel (F, gb): allowed and schedulable?
// Asked once per kernel.
template <KvFormat F, int Gb>
bool big_clusters_ok(int C) {
  static std::atomic<int> known[kCluMaxS + 1] = {};
  int v = known[C].load(std::memory_order_relaxed);
  if (v == 0) {
    auto* kern = attention_cluster_kernel<F, Gb>;
    bool ok = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
    if (ok) {
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(unsigned(C));
      cfg.blockDim = dim3(kCluWarps * 32);
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = unsigned(C);
      attr[0].val.clusterDim.y = attr[0].val.clusterDim.z = 1;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      int n = 0;
      ok = cudaOccupancyMaxActiveClusters(&n, kern, &cfg) == cudaSuccess && n > 0;
      if (std::getenv("MX8_CUDA_CLUSTER_ATTN_VERBOSE"))
        std::fprintf(stderr, "attention_cluster_kernel: clusters of %d blocks: %d active at most\n", C, n);
    }
    cudaGetLastError();  // a refusal is an answer, not a sticky error
    v = ok ? 1 : 2;
    known[C].store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

template <int Gb>
bool big_clusters_ok_any(KvFormat f, int C) {
  switch (f) {
    case KvFormat::f32:
      return big_clusters_ok<KvFormat::f32, Gb>(C);
    case KvFormat::bf16:
      return big_clusters_ok<KvFormat::bf16, Gb>(C);
    default:
      return big_clusters_ok<KvFormat::fp8, Gb>(C);
  }
}

// attention_cluster_kernel's layout for `a` (S == 0: it does not apply): head_dim 128, 16-byte
// aligned rows and q, group / Gb <= 8. S from the block table's capacity (the lengths are on the
// device, and a recorded step is replayed for every length up to the capacity): one split up to 160
// positions, above that one per `pos` positions of capacity, at most max_c blocks per cluster, no
// more blocks than ~2 per SM in all.
struct CluPlan {
  CluParams cp{0, 0, 0, false};
  int gb = 0;
};
CluPlan cluster_plan(const CudaKvCache& c, const AttentionArgs& a) {
  CluPlan pl;
  const CluKnobs& k = clu_knobs();
  const int G = a.n_heads / a.n_kv_heads;
  if (!k.on || c.desc().head_dim != kGqaHd || c.page_bytes() % 16 != 0 ||
      reinterpret_cast<uintptr_t>(c.pool(a.layer, 0)) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(c.pool(a.layer, 1)) % 16 != 0 || reinterpret_cast<uintptr_t>(a.q) % 16 != 0)
    return pl;
  // One query head per block where the group allows (G <= 8): measured fastest (H200, batch-1
  // decode at ~130 positions, tok/s with Gb 1 / 2 / 4: 318.8 / 310.8 / 301.8, the grouped kernel
  // 305): the per-thread softmax and merge work and the registers (95 / 128 / 200) scale with Gb,
  // and the repeated K/V reads of the sibling blocks are L2 hits.
  int gb = G <= 8 ? 1 : G % 2 == 0 && G <= 16 ? 2 : 4;
  const int want =
      g_cluster_gb.load(std::memory_order_relaxed) ? g_cluster_gb.load(std::memory_order_relaxed) : k.gb;
  if ((want == 1 || want == 2 || want == 4) && G % want == 0 && G / want <= 8) gb = want;
  if (G % gb != 0) return pl;
  const int n_hs = G / gb;
  if (n_hs > 8) return pl;
  const int64_t cap = int64_t(a.max_pages_per_seq) * c.desc().page_size;
  // Up to kOneSplitCap positions of capacity a block's warps take every position themselves (the
  // first two rounds loaded before the prologue, the rest one round trip each), which costs less than
  // merging the splits through distributed shared memory and a second cluster barrier (H200, Llama-3-8B
  // decode FP8, same call: capacity 160 at 8..136 positions 394.0 / 394.1 tok/s with 2 splits, 399.4 /
  // 398.8 with 1; capacity 288 at 136..264 positions 387.4 / 385.9 with 2, 379.8 / 381.1 with 1).
  constexpr int64_t kOneSplitCap = 160;
  int64_t S = cap <= kOneSplitCap ? 1 : (cap + k.pos - 1) / k.pos;
  const int64_t blocks = int64_t(a.n_kv_heads) * n_hs * std::max(1, a.n_tokens);
  S = std::min<int64_t>(S, std::max<int64_t>(1, 2 * mx8::cuda::num_sms() / blocks));
  S = std::min<int64_t>(S, std::max(1, k.max_c / n_hs));
  if (const int forced = g_cluster_splits.load(std::memory_order_relaxed); forced > 0) S = forced;
  S = std::max<int64_t>(1, std::min<int64_t>(S, kCluMaxS / n_hs));
  while (n_hs * S > 8) {
    const int C = int(n_hs * S);
    const bool ok = gb == 4   ? big_clusters_ok_any<4>(c.desc().format, C)
                    : gb == 2 ? big_clusters_ok_any<2>(c.desc().format, C)
                              : big_clusters_ok_any<1>(c.desc().format, C);
    if (ok) break;
    --S;
  }
  pl.cp = CluParams{G, n_hs, int(S), k.early};
  pl.gb = gb;
  if (std::getenv("MX8_CUDA_CLUSTER_ATTN_VERBOSE")) {
    static std::atomic<int> printed{0};
    if (printed.fetch_add(1) < 4)
      std::fprintf(stderr,
                   "attention_cluster_kernel: capacity %lld, %d tokens, group %d: %d heads/block, %d x %d "
                   "blocks per cluster\n",
                   (long long)cap, a.n_tokens, G, gb, n_hs, int(S));
  }
  return pl;
}

template <KvFormat F>
void launch_cluster_attention_f(int gb, const uint8_t* kp, const uint8_t* vp, const KvGeom& g,
                                const AttnParams& p, int n_kv, int n_tokens, uint32_t* err, const NewKv& nk,
                                const CluParams& cp, cudaStream_t s) {
  const unsigned C = unsigned(cp.n_hs * cp.S);
  const dim3 grid(unsigned(n_kv) * C, unsigned(n_tokens)), block(kCluWarps * 32);
  switch (gb) {
    case 1:
      launch_cluster("attention_cluster_kernel", attention_cluster_kernel<F, 1>, grid, block, C, s, kp, vp, g,
                     p, err, nk, cp);
      break;
    case 2:
      launch_cluster("attention_cluster_kernel", attention_cluster_kernel<F, 2>, grid, block, C, s, kp, vp, g,
                     p, err, nk, cp);
      break;
    default:
      launch_cluster("attention_cluster_kernel", attention_cluster_kernel<F, 4>, grid, block, C, s, kp, vp, g,
                     p, err, nk, cp);
      break;
  }
}

void launch_cluster_attention(KvFormat f, const CluPlan& pl, const uint8_t* kp, const uint8_t* vp,
                              const KvGeom& g, const AttnParams& p, int n_kv, int n_tokens, uint32_t* err,
                              const NewKv& nk, cudaStream_t s) {
  switch (f) {
    case KvFormat::f32:
      launch_cluster_attention_f<KvFormat::f32>(pl.gb, kp, vp, g, p, n_kv, n_tokens, err, nk, pl.cp, s);
      break;
    case KvFormat::bf16:
      launch_cluster_attention_f<KvFormat::bf16>(pl.gb, kp, vp, g, p, n_kv, n_tokens, err, nk, pl.cp, s);
      break;
    case KvFormat::fp8:
      launch_cluster_attention_f<KvFormat::fp8>(pl.gb, kp, vp, g, p, n_kv, n_tokens, err, nk, pl.cp, s);
      break;
  }
  check_launch("attention");
}

}  // namespace

void set_cluster_attention_splits(int s) {
  g_cluster_splits.store(s, std::memory_order_relaxed);
}
void set_cluster_attention_heads_per_block(int gb) {
  g_cluster_gb.store(gb, std::memory_order_relaxed);
}
void set_split_attention_heads_per_block(int gb) {
  g_split_gb.store(gb, std::memory_order_relaxed);
}
bool split_attention_mma_enabled() {
  return g_split_mma.load(std::memory_order_relaxed);
}
void set_split_attention_mma_enabled(bool on) {
  g_split_mma.store(on, std::memory_order_relaxed);
}

void launch_kv_write(CudaKvCache& c, int layer, const float* k, const float* v, const int32_t* slots,
                     int64_t n_tokens, uint32_t* err, cudaStream_t s) {
  const KvCacheDesc& d = c.desc();
  if (layer < 0 || layer >= d.n_layers)
    throw Error("cuda backend: kv_write to layer " + std::to_string(layer) + " of " +
                std::to_string(d.n_layers));
  if (n_tokens <= 0) return;
  const KvGeom g = geom_of(c);
  const int64_t warps = n_tokens * g.n_kv * 2;
  const int threads = 128;
  const unsigned blocks = unsigned((warps * 32 + threads - 1) / threads);
  uint8_t* kp = c.pool(layer, 0);
  uint8_t* vp = c.pool(layer, 1);
  switch (d.format) {
    case KvFormat::f32:
      launch("kv_write_kernel", kv_write_kernel<KvFormat::f32>, dim3(blocks), dim3(threads), s, kp, vp, g, k,
             v, slots, n_tokens, err);
      break;
    case KvFormat::bf16:
      launch("kv_write_kernel", kv_write_kernel<KvFormat::bf16>, dim3(blocks), dim3(threads), s, kp, vp, g, k,
             v, slots, n_tokens, err);
      break;
    case KvFormat::fp8:
      launch("kv_write_kernel", kv_write_kernel<KvFormat::fp8>, dim3(blocks), dim3(threads), s, kp, vp, g, k,
             v, slots, n_tokens, err);
      break;
  }
  check_launch("kv_write");
}

void launch_rope_kv_write(CudaKvCache& c, int layer, float* q, float* k, const float* v,
                          const int32_t* positions, const int32_t* slots, int64_t n_tokens, int64_t n_heads,
                          const RopeArgs& r, uint32_t* err, cudaStream_t s) {
  const KvCacheDesc& d = c.desc();
  if (layer < 0 || layer >= d.n_layers)
    throw Error("cuda backend: rope_kv_write to layer " + std::to_string(layer) + " of " +
                std::to_string(d.n_layers));
  if (r.head_dim != d.head_dim || r.rot_dim < 0 || r.rot_dim > r.head_dim || r.rot_dim % 2 != 0)
    throw Error("cuda backend: rope_kv_write with head_dim " + std::to_string(r.head_dim) + " / rot_dim " +
                std::to_string(r.rot_dim) + " for a cache of head_dim " + std::to_string(d.head_dim));
  if (n_tokens <= 0) return;
  const KvGeom g = geom_of(c);
  const int64_t warps = n_tokens * (n_heads + 2 * g.n_kv);
  const int threads = 128;
  const unsigned blocks = unsigned((warps * 32 + threads - 1) / threads);
  uint8_t* kp = c.pool(layer, 0);
  uint8_t* vp = c.pool(layer, 1);
  const int nh = int(n_heads);
  switch (d.format) {
    case KvFormat::f32:
      launch("rope_kv_write_kernel", rope_kv_write_kernel<KvFormat::f32>, dim3(blocks), dim3(threads), s, kp,
             vp, g, q, k, v, positions, slots, n_tokens, nh, r, err);
      break;
    case KvFormat::bf16:
      launch("rope_kv_write_kernel", rope_kv_write_kernel<KvFormat::bf16>, dim3(blocks), dim3(threads), s, kp,
             vp, g, q, k, v, positions, slots, n_tokens, nh, r, err);
      break;
    case KvFormat::fp8:
      launch("rope_kv_write_kernel", rope_kv_write_kernel<KvFormat::fp8>, dim3(blocks), dim3(threads), s, kp,
             vp, g, q, k, v, positions, slots, n_tokens, nh, r, err);
      break;
  }
  check_launch("rope_kv_write");
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
                                    const AttentionArgs& a, uint32_t* err, cudaStream_t s) {
  check_attention_args(c, a);
  // Several tokens only where each is its sequence's one token of the step (batched decode): a
  // cluster then reads no K/V row that another cluster of the launch writes.
  if ((a.n_tokens != 1 && !a.one_token_per_seq) || a.n_tokens < 1 || a.q != q || r.head_dim != kGqaHd ||
      r.rot_dim != kGqaHd || split_for(c, a).n_splits > 0)
    return false;
  const AttnParams p{a.q,   a.out,    a.n_heads,      a.n_heads / a.n_kv_heads, a.scale,
                     a.seq, a.kv_len, a.block_tables, a.max_pages_per_seq,      a.window};
  if (const CluPlan pl = cluster_plan(c, a); pl.cp.S > 0) {
    launch_cluster_attention(c.desc().format, pl, c.pool(a.layer, 0), c.pool(a.layer, 1), geom_of(c), p,
                             a.n_kv_heads, a.n_tokens, err, NewKv{q, k, v, positions, slots, r}, s);
    return true;
  }
  if (a.n_tokens != 1 || !gqa_applies(c, a)) return false;
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
    launch_cluster_attention(d.format, pl, kp, vp, g, p, a.n_kv_heads, a.n_tokens, err, NewKv{}, s);
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
