// The paged KV cache on the GPU: storage, kv_write (f32 / bf16 / fp8 E4M3 with one UE8M0 `ceil`
// scale per (token, head, 128 values)) and attention over the pages.
//
// Page layout is the CPU backend's (backend_cpu_attention.cpp), byte for byte: elements
// [slot][kv head][head_dim] in the cache's format, then for fp8 the scales [slot][kv head][nb].
// kv_write converts with the format layer's codecs, so the bytes equal the CPU backend's.
//
// Attention: one thread block per (query token, query head), 4 warps. The keys of the sequence are
// taken 32 positions at a time (a "chunk"), chunk c by warp c % 4: lane j scores position 32c + j
// against the whole head (q is in shared memory), the warp takes the chunk's max and sum with
// shuffles and folds the chunk into its running (max, sum, output) - the online softmax - reading V
// coalesced (lane owns dims lane, lane + 32, ...). At the end the 4 warps' partial results are
// merged in shared memory. This reads each K and V row once per query head; GQA's sibling heads hit
// the same rows in L2.
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/backend_cuda.cuh"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {

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
  if (base_) cudaFree(base_);
}

namespace {

constexpr int kMaxHeadDim = 256;  // lanes own ceil(head_dim / 32) <= 8 output dims each
constexpr int kAttnWarps = 4;

struct KvGeom {
  int n_kv, hd, ps, nb, n_pages;
  size_t page_bytes;
  int64_t capacity;  // slots per layer
};

KvGeom geom_of(const CudaKvCache& c) {
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
  return (size_t(slot) * g.n_kv + head) * size_t(g.hd) * kElemBytes<F>;
}
__device__ __forceinline__ size_t scale_off(const KvGeom& g, int slot, int head) {
  return size_t(g.ps) * g.n_kv * g.hd + (size_t(slot) * g.n_kv + head) * g.nb;
}

// ---- kv_write: one warp per (token, kv head, K or V) --------------------------------------------

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
  const int h = int(th % g.n_kv);
  const int32_t s = slots[t];
  if (s < 0 || s >= g.capacity) {
    if (lane == 0) atomicOr(err, kErrKvSlot);
    return;
  }
  const int page = s / g.ps, slot = s % g.ps;
  uint8_t* pg = (which ? vpool : kpool) + size_t(page) * g.page_bytes;
  const float* src = (which ? v : k) + th * g.hd;
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

struct AttnParams {
  const float* q;
  float* out;
  int n_heads, group;
  float scale;
  const int32_t* seq;
  const int32_t* kv_len;
  const int32_t* block_tables;
  int max_pages_per_seq;
};

template <KvFormat F>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p, uint32_t* err) {
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
  if (len <= 0 || int64_t(len) > int64_t(p.max_pages_per_seq) * g.ps || sq < 0) {
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

  for (int c0 = warp * 32; c0 < len; c0 += kAttnWarps * 32) {
    const int pos = c0 + lane;
    float sc = -INFINITY;
    int page = 0;
    if (pos < len) {
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

}  // namespace

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

void launch_attention(CudaKvCache& c, const AttentionArgs& a, uint32_t* err, cudaStream_t s) {
  const KvCacheDesc& d = c.desc();
  if (a.head_dim != d.head_dim || a.n_kv_heads != d.n_kv_heads || a.n_heads <= 0 || a.n_kv_heads <= 0 ||
      a.n_heads % a.n_kv_heads != 0 || a.layer < 0 || a.layer >= d.n_layers)
    throw Error("cuda backend: attention arguments (heads " + std::to_string(a.n_heads) + ", kv heads " +
                std::to_string(a.n_kv_heads) + ", head_dim " + std::to_string(a.head_dim) + ", layer " +
                std::to_string(a.layer) + ") do not match the KV cache");
  if (d.head_dim > kMaxHeadDim)
    throw Error("cuda backend: attention with head_dim " + std::to_string(d.head_dim) + " (at most " +
                std::to_string(kMaxHeadDim) + " supported)");
  if (a.n_tokens <= 0) return;
  if (a.n_tokens > 65535) throw Error("cuda backend: attention over more than 65535 tokens in one call");
  const KvGeom g = geom_of(c);
  AttnParams p{a.q,   a.out,    a.n_heads,      a.n_heads / a.n_kv_heads, a.scale,
               a.seq, a.kv_len, a.block_tables, a.max_pages_per_seq};
  const dim3 grid(unsigned(a.n_heads), unsigned(a.n_tokens));
  const uint8_t* kp = c.pool(a.layer, 0);
  const uint8_t* vp = c.pool(a.layer, 1);
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
      launch("attention_kernel", attention_kernel<KvFormat::fp8>, dim3(grid), dim3(kAttnWarps * 32), s, kp,
             vp, g, p, err);
      break;
  }
  check_launch("attention");
}

}  // namespace mx8::backend::cuda_impl
