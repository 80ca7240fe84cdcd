// What the decode attention kernels (attention_decode.cu, attention_cluster.cu) and the KV cache's
// writers (kv_cache.cu) share: a head row's store in the cache's format (write_head) and its load as f32
// (load16), and the "streams" of the grouped kernels with their online softmax and merges.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "backend/cuda/attention_common.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {

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
// A stream's start: this lane's 16 dims [d0, d0 + 16) of each of the G query heads (head h at qh + h *
// kGqaHd, 16-byte aligned: global or shared memory), and an empty online softmax.
template <int G>
__device__ __forceinline__ void start_streams(const float* qh, int d0, float (&q)[G][kGqaDims],
                                              float (&acc)[G][kGqaDims], float (&m)[G], float (&l)[G]) {
#pragma unroll
  for (int h = 0; h < G; ++h) {
    const float4* qp = reinterpret_cast<const float4*>(qh + h * kGqaHd + d0);
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
}

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
}  // namespace mx8::backend::cuda_impl
