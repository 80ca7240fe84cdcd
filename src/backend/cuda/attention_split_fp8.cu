// Split decode attention partials for an fp8 cache with the products transposed: S^T = K Q^T and
// O^T += V^T P^T, so that the tile's 16 keys (and O's head dims) are the mma's 16 rows and the query
// columns its 8 columns. attention_split_mma.cu puts the query rows in the rows instead: three 16-bit
// parts of four heads fill 12 of 16 rows, and each product takes two n-tiles of keys (S) or sixteen
// of dims (O). An fp8 cache needs only two f16 parts of q (hi + lo, ~22 bits, q first scaled by a power
// of two as there), and two parts of four heads are exactly 8 columns, so here
//   * S^T takes one m16n8k16 per k step (8 per tile instead of 16), K as the A operand straight from
//     its 16-byte loads (one cvt per pair, as before), q's parts as B fragments staged once per block;
//   * O^T takes one per 16 dims (8 per tile instead of 16), V as the A operand (a prmt and two cvt per
//     two registers) and the probabilities as B: the S^T accumulators hold keys g, g + 8 of columns
//     2t, 2t + 1, a B fragment wants keys 2t, 2t + 1 (and + 8) of column g, and one movmatrix.trans per
//     8 keys turns one into the other;
//   * the O accumulators are 32 registers per lane instead of 64.
// The probability's two f16 parts are the two halves of P's 8 columns: lanes t < 2 put the high part of
// heads 2t, 2t + 1 in columns 2t, 2t + 1, lanes t >= 2 (which hold the same scores) the low part in
// columns 4 + 2(t - 2), ... so that column c is (part c >> 2, head c & 3) for q and for p alike.
// Everything else (splits, records, fp8 scales folded into score and probability, masks, the merge
// of the block's warps) is attention_split_mma.cu's. H200, one layer at 65536 positions: 79.7 -> 65.5 us
// (14.1 M warp instructions instead of 16.4 M); decode with FP8 weights 220 -> 236 tok/s there
// (docs/CUDA_BACKEND.md, "Twenty-fourth session").
#include <cuda_runtime.h>

#include <cmath>

#include "backend/cuda/attention_mma.cuh"
#include "backend/cuda/attention_split_mma.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/warp_uniform.cuh"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

using namespace attn_mma;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kDimTiles = kHd / 16;  // m-tiles of O^T
constexpr KvFormat F = KvFormat::fp8;

// An 8x8 matrix of 16-bit values (lane (g, t) holding row g, columns 2t, 2t + 1), transposed.
__device__ __forceinline__ uint32_t transpose8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
  return y;
}

// Tile `base` on `page`: K and V rows as fetch_tile reads them; the scale bytes of keys g and g + 8 (the
// rows of S^T this lane holds) in bytes 0 and 1 of ksc and vsc.
__device__ __forceinline__ void fetch_tile_t(const uint8_t* kpool, const uint8_t* vpool, const TileGeom& tg,
                                             const LaneOffsets& lo, int gq, int base, int page,
                                             KvTile<F>& x) {
  const TileAddr a = tile_addr<F>(tg, base, page);
  x.ok = a.ok;
  const size_t sc0 = a.page_off + tg.scale_off + a.slot0 + gq;
  load_rows<F>(kpool + a.row0, vpool + a.row0, lo, x);
  x.ksc = uint32_t(kpool[sc0]) | uint32_t(kpool[sc0 + 8]) << 8;
  x.vsc = uint32_t(vpool[sc0]) | uint32_t(vpool[sc0 + 8]) << 8;
}

struct WarpStateT {
  float o[kDimTiles][4];  // O^T: dims (16 g + 2 i, + 1) x columns 2t, 2t + 1
  float m[2], l[2];       // heads 2 (t & 1) and + 1, in log2 units; l over keys g, g + 8
  int vmax;               // the largest V scale byte so far (-1000: none)
};

// A operand of O^T's m-tile i: V at dims 16 g + 2 i (+ 1) of keys 2t, 2t + 1 (and + 8), from the lane's
// V rows (KvTile::v: keys lane_key(t, 0..3), dims 16 g ..).
__device__ __forceinline__ uint4 v_operand(const uint4 (&v)[4], int i) {
  const int b = 2 * (i & 1), wi = i >> 1;
  const uint32_t sel = uint32_t(b) | uint32_t(4 + b) << 4 | uint32_t(b + 1) << 8 | uint32_t(5 + b) << 12;
  const uint32_t lo = __byte_perm(word(v[0], wi), word(v[1], wi), sel);
  const uint32_t hi = __byte_perm(word(v[2], wi), word(v[3], wi), sel);
  return make_uint4(e4m3x2_to_f16x2(lo), e4m3x2_to_f16x2(lo >> 16), e4m3x2_to_f16x2(hi),
                    e4m3x2_to_f16x2(hi >> 16));
}

__device__ __forceinline__ void tile_step_t(const KvTile<F>& x, const uint2 (&qb)[kKSteps][32], int lane,
                                            int base, int lo, int hi, const float (&sscale)[2],
                                            WarpStateT& w) {
  const int gq = lane >> 2, tq = lane & 3;

  // S^T in two chains (even and odd k steps): rows keys g, g + 8; columns 2t, 2t + 1.
  float s[2][4] = {};
#pragma unroll
  for (int j = 0; j < kKSteps; ++j) {
    const uint32_t wg = word(x.k[j >> 2], j & 3), wg8 = word(x.k[2 + (j >> 2)], j & 3);
    const uint4 a = make_uint4(e4m3x2_to_f16x2(wg), e4m3x2_to_f16x2(wg8), e4m3x2_to_f16x2(wg >> 16),
                               e4m3x2_to_f16x2(wg8 >> 16));
    const uint2 b = qb[j][lane];
    mma16816<true>(s[j & 1], a, b.x, b.y);
  }

  // Scores of keys g (e = 0) and g + 8 (e = 1), heads 2(t & 1) + c: the two q parts summed (lanes t and
  // t ^ 2 hold them), K's scale, masks.
  float sc[2][2], mx[2] = {-INFINITY, -INFINITY};
  int vtile = -1000;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int pos = base + gq + 8 * e;
    const bool valid = x.ok && pos >= lo && pos < hi;
    const float ks = format::ue8m0_to_f32((x.ksc >> (8 * e)) & 0xffu);
    if (valid) vtile = max(vtile, int((x.vsc >> (8 * e)) & 0xffu));
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      float v = s[0][2 * e + c] + s[1][2 * e + c];
      v += __shfl_xor_sync(kFull, v, 2);
      sc[e][c] = valid ? v * ks * sscale[c] : -INFINITY;
      mx[c] = fmaxf(mx[c], sc[e][c]);
    }
  }
  // Over the 16 keys: lanes with the same t.
#pragma unroll
  for (int sh = 4; sh < 32; sh <<= 1) {
    mx[0] = fmaxf(mx[0], __shfl_xor_sync(kFull, mx[0], sh));
    mx[1] = fmaxf(mx[1], __shfl_xor_sync(kFull, mx[1], sh));
    vtile = max(vtile, __shfl_xor_sync(kFull, vtile, sh));
  }
  const float m_new[2] = {fmaxf(w.m[0], mx[0]), fmaxf(w.m[1], mx[1])};
  const int v_new = max(w.vmax, vtile);
  if (__any_sync(kFull, m_new[0] != w.m[0] || m_new[1] != w.m[1] || v_new != w.vmax)) {
    float co[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const float corr = m_new[c] == w.m[c] ? 1.0f : w.m[c] == -INFINITY ? 0.0f : exp2f(w.m[c] - m_new[c]);
      co[c] = corr * pow2i(w.vmax - v_new);
      w.l[c] *= corr;
      w.m[c] = m_new[c];
    }
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) {
      w.o[i][0] *= co[0], w.o[i][2] *= co[0];
      w.o[i][1] *= co[1], w.o[i][3] *= co[1];
    }
    w.vmax = v_new;
  }

  // Probabilities times V's scale relative to the largest, this lane's f16 part of them, as P^T's B
  // fragments.
  uint32_t prow[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int b = int((x.vsc >> (8 * e)) & 0xffu);
    float part[2];
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const float m_sub = w.m[c] == -INFINITY ? 0.0f : w.m[c];  // every score -inf then
      const float pr = exp2f(sc[e][c] - m_sub);
      w.l[c] += pr;
      float pv = pr;
      if (sc[e][c] != -INFINITY) pv = b == 255 ? NAN : pr * pow2i(b - w.vmax);
      const float h16 = round16<true>(pv);
      part[c] = tq < 2 ? h16 : pv - h16;
    }
    prow[e] = transpose8x8(pack16<true>(part[0], part[1]));
  }

  uint4 v[KvTile<F>::kChunks];
  masked_v<F>(x, base, lo, hi, tq, v);
#pragma unroll
  for (int i = 0; i < kDimTiles; ++i) mma16816<true>(w.o[i], v_operand(v, i), prow[0], prow[1]);
}

// Tiles in flight per warp besides the one being multiplied, two blocks per SM (212 registers), as
// attention_split_mma.cu's fp8 kernel. H200, decode at 65536 positions (.carry/lead/t9.sh): 247.4 tok/s;
// three tiles (243 registers) 244.0; one tile at three blocks per SM (165 registers) 226.0.
constexpr int kAhead = 2;

template <int G>
__global__ void __launch_bounds__(kThreads, 2)
    attention_split_fp8_kernel(const uint8_t* kpool, const uint8_t* vpool, KvGeom g, AttnParams p,
                               uint32_t* err, float* part, int split_len, int n_splits) {
  static_assert(G == 1 || G == 2 || G == 4, "two parts of up to four heads fill the 8 columns");
  pdl_trigger();
  pdl_wait();
  __shared__ uint2 qb_s[kKSteps][32];
  __shared__ float qinv_s[4];
  __shared__ float m_s[kWarps][G], l_s[kWarps][G], o_s[kWarps][G][kHd];
  __shared__ int v_s[kWarps];
  const int kvh = blockIdx.x, t = blockIdx.y, z = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = mx8::cuda::warp_uniform(int(threadIdx.x >> 5)), gq = lane >> 2,
            tq = lane & 3;

  TokenSpan span;
  if (!token_span(p, g, t, z, split_len, err, span)) return;
  const int32_t* table = span.table;
  const int split0 = span.split0, lo = span.lo, hi = span.hi;

  // q's B fragments, once per block (warp 0): column g is part g >> 2 of head g & 3 (heads past G zero),
  // scaled by the power of two that puts the head's largest magnitude in [2^14, 2^15).
  if (warp == 0) {
    const int h = gq & 3;
    float q[kKSteps][4], amax = 0.0f;
    load_q_row<F>(h < G ? p.q + (size_t(t) * p.n_heads + size_t(kvh) * G + h) * kHd : nullptr, tq, q, amax);
    amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, 1));
    amax = fmaxf(amax, __shfl_xor_sync(kFull, amax, 2));
    const int c = f16_scale_exp(amax);
    const float mul = pow2i(c);
    if (tq == 0 && gq < 4) qinv_s[h] = pow2i(-c);
    auto part_of = [&](float x) {
      const float h16 = round16<true>(x * mul);
      return gq < 4 ? h16 : x * mul - h16;
    };
#pragma unroll
    for (int j = 0; j < kKSteps; ++j)
      qb_s[j][lane] = make_uint2(pack16<true>(part_of(q[j][0]), part_of(q[j][1])),
                                 pack16<true>(part_of(q[j][2]), part_of(q[j][3])));
  }
  __syncthreads();
  const int ha = 2 * (tq & 1);  // the lane's heads: ha, ha + 1
  const float sscale[2] = {p.scale * kLog2e * qinv_s[ha], p.scale * kLog2e * qinv_s[ha + 1]};

  WarpStateT w;
#pragma unroll
  for (int i = 0; i < kDimTiles; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) w.o[i][e] = 0.0f;
  w.m[0] = w.m[1] = -INFINITY;
  w.l[0] = w.l[1] = 0.0f;
  w.vmax = -1000;

  // The warp's tiles: warp, warp + 4, ... from the tile holding lo; kAhead in flight over kAhead + 1
  // buffers (the loop unrolled over them: a copy would wait for the loads), pages looked up a tile
  // before their loads (as attention_split_mma.cu does).
  bool bad_page = false;
  constexpr int kStep = kWarps * kTile;
  int base = split0 + ((lo - split0) / kTile + warp) * kTile;
  const TileGeom tg = tile_geom<F>(g, kvh);
  const LaneOffsets lof = lane_offsets<F>(gq, tq);
  auto page_at = [&](int b) { return b < hi ? table[b >> tg.ps_shift] : 0; };
  auto fetch = [&](int b, int page, KvTile<F>& x) { fetch_tile_t(kpool, vpool, tg, lof, gq, b, page, x); };
  int page_next = page_at(base + kAhead * kStep);
  auto step = [&](const KvTile<F>& x, KvTile<F>& nx) {
    const int nb = base + kAhead * kStep;
    const int page_after = page_at(nb + kStep);
    if (nb < hi) fetch(nb, page_next, nx);
    bad_page |= !x.ok;
    tile_step_t(x, qb_s, lane, base, lo, hi, sscale, w);
    base += kStep;
    page_next = page_after;
    return base < hi;
  };
  KvTile<F> buf[kAhead + 1];
#pragma unroll
  for (int i = 0; i < kAhead; ++i)
    if (base + i * kStep < hi) fetch(base + i * kStep, page_at(base + i * kStep), buf[i]);
  bool more = base < hi;
  while (more) {
#pragma unroll
    for (int u = 0; u <= kAhead; ++u)
      if (more) more = step(buf[u], buf[(u + kAhead) % (kAhead + 1)]);
  }
  if (bad_page && lane == 0) atomicOr(err, kErrAttnPage);

    // The two parts summed (lanes t, t ^ 2); lanes t < 2 then hold heads 2t, 2t + 1. Sums over the keys:
    // lanes with the same t.
#pragma unroll
  for (int i = 0; i < kDimTiles; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) w.o[i][e] += __shfl_xor_sync(kFull, w.o[i][e], 2);
#pragma unroll
  for (int sh = 4; sh < 32; sh <<= 1) {
    w.l[0] += __shfl_xor_sync(kFull, w.l[0], sh);
    w.l[1] += __shfl_xor_sync(kFull, w.l[1], sh);
  }
  if (tq < 2) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int hh = ha + c;
      if (hh >= G) continue;
#pragma unroll
      for (int i = 0; i < kDimTiles; ++i) {
        o_s[warp][hh][16 * gq + 2 * i] = w.o[i][c];
        o_s[warp][hh][16 * gq + 2 * i + 1] = w.o[i][2 + c];
      }
      if (gq == 0) m_s[warp][hh] = w.m[c], l_s[warp][hh] = w.l[c];
    }
  }
  if (lane == 0) v_s[warp] = w.vmax;
  __syncthreads();

  // The warps in order, into the split's record.
  write_split_record<G, kWarps, true>(m_s, l_s, o_s, v_s,
                                      part + ((size_t(t) * gridDim.x + kvh) * n_splits + z) * (G * (2 + kHd)),
                                      threadIdx.x);
}

}  // namespace

void launch_split_fp8_partials(const uint8_t* kp, const uint8_t* vp, const KvGeom& g, const AttnParams& p,
                               int n_kv, int n_tokens, uint32_t* err, float* part, int split_len,
                               int n_splits, cudaStream_t s) {
  const dim3 grid{unsigned(n_kv), unsigned(n_tokens), unsigned(n_splits)};
  auto* kernel = p.group == 1   ? attention_split_fp8_kernel<1>
                 : p.group == 2 ? attention_split_fp8_kernel<2>
                                : attention_split_fp8_kernel<4>;
  launch("attention_split_fp8_kernel", kernel, grid, dim3(kThreads), s, kp, vp, g, p, err, part, split_len,
         n_splits);
}

}  // namespace mx8::backend::cuda_impl
