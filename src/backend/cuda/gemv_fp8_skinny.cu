// The skinny FP8 GEMM: y = x W^T for fp8_block weights and up to 16 rows of x, every weight byte read
// once for all rows (gemv_fp8_mma.cu takes at most 4 rows per pass and streams W again per pass).
//
// Arithmetic: as in gemv_fp8_mma.cu (read its top comment): the weights are the A operand of
// mma.m16n8k16 (f16 in, f32 accumulation; one cvt.f16x2.e4m3x2 per two weights, exact), x is split per
// 128 values into f16 hi + lo planes under a power of two, and plane p is column p of B: row i of x
// is planes 2i (hi) and 2i + 1 (lo), so M rows of x are NT = ceil(M / 4) n8 tiles and every A fragment
// feeds NT mmas. Lane (g, t) of tile j gets columns 8j + 2t, 8j + 2t + 1 = hi and lo of x row 4j + t,
// for weight rows g and g + 8: their sum, times the weights' block scale and x's 2^e, joins the
// row's f32 total once per 128 of k.
//
// Work split. A warp owns a 16-row tile of one target; a block's W warps own W consecutive tiles (a
// "cluster tile"). k is split between the C blocks of a thread-block cluster (C = 1..8): block rank r
// takes scale blocks [r kb / C, (r + 1) kb / C), converts only that slice of x into its shared memory
// (once: the grid is persistent and a block keeps its slice for every cluster tile it takes) and
// multiplies its tiles' slices. The C partial sums of an output are added in rank order through
// distributed shared memory (deterministic; no atomics, no workspace): each block writes its
// partials, the cluster synchronizes, and rank r adds up and stores the outputs of warps r, r + C, ...
// (double-buffered by tile parity, so one cluster barrier per cluster tile). With C = 1 each lane
// stores its own sums. C and W are chosen on the host from the shape (plan_for): enough warps in
// flight on every SM, x's slice within shared memory, and few idle clusters in the last round.
//
// Loads: two kernels, the plan picks one (the ring only for up to 4 rows of x unless a test or A/B
// run asks for it; plan_for says why). The register kernel loads the next KU scale blocks of a
// warp's rows (or of its next tile) into registers while it multiplies the current ones; the ring
// kernel keeps the next S - 1 scale blocks of its (tile, scale block) sequence in flight with cp.async
// into a per-warp shared-memory ring, so that more bytes are in flight than registers could hold
// twice (current + next). Either way the first loads precede griddepcontrol.wait (weights are never
// written by kernels). An L2 prefetch (cp.async.bulk.prefetch) of the blocks 4 or 8 ahead of the
// register loads was tried and was 5-20% slower on the H200 (M = 8, 16), so there is none.
#include "backend/cuda/gemv_fp8_skinny.cuh"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemv_fp8_common.cuh"
#include "backend/cuda/gemv_target.cuh"
#include "backend/cuda/ptx/cp_async.cuh"
#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kMaxWarps = 16;
constexpr int kMaxSplit = 8;                    // portable cluster size
constexpr int kPad = 8;                         // halfs after each x plane: no bank conflicts between planes
constexpr size_t kMaxSmem = size_t(220) << 10;  // dynamic shared memory per block, at most

struct SkinnyParams {
  GemvTarget t[kMaxGemvTargets];
  int count;
  int64_t k;
  int kblocks;        // k / 128
  int split;          // C: blocks per cluster, each a slice of k
  int ctiles;         // cluster tiles: ceil(tiles / warps per block)
  int max_nkb;        // scale blocks in the largest slice
  const float* x;     // [m][k]
  const float* x_up;  // [m][k] or nullptr: the input is silu(x) * x_up
  int m;
  bool accumulate;
  bool scale_f32;
};

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 r;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "r"(addr));
  return r;
}

__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::
                   : "memory");
}

// A float at shared-memory address `addr` of block `rank` of this cluster.
__device__ __forceinline__ float ld_cluster(uint32_t addr, int rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(addr), "r"(rank));
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote) : "memory");
  return v;
}

// The rows of a tile (16 rows of one target) as one lane sees them while it multiplies (the rest of
// the target is looked up again at the tile's end: fewer live registers).
struct WarpRows {
  const uint8_t* wa;      // row row0 + g, at this lane's 16 bytes of a 64-wide chunk
  const uint8_t* wb;      // row row0 + g + 8
  const uint8_t* scales;  // the scales of row0's 128-row block (bytes of UE8M0 or f32)
  bool active;            // row0 < n (tiles past the last one map to the last target, past its n)
};

__device__ __forceinline__ WarpRows rows_of(const SkinnyParams& p, int tile, int g, int t) {
  WarpRows r;
  const GemvTarget tg = target_of(p, tile);
  const int64_t row0 = int64_t(tile - tg.tile_begin) * 16;
  r.active = row0 < tg.n;
  const int64_t ra = min(row0 + g, tg.n - 1), rb = min(row0 + g + 8, tg.n - 1);  // past n: read, never stored
  r.wa = tg.w + ra * p.k + t * 16;
  r.wb = tg.w + rb * p.k + t * 16;
  r.scales =
      static_cast<const uint8_t*>(tg.scales) + (row0 >> 7) * int64_t(p.kblocks) * (p.scale_f32 ? 4 : 1);
  return r;
}

// Scale blocks [base, base + KU) of this lane's two rows (those below kend), two 64-wide chunks
// each.
template <int KU>
__device__ __forceinline__ void load_round(const WarpRows& r, int base, int kend, uint4 (&v)[KU][4]) {
#pragma unroll
  for (int j = 0; j < KU; ++j)
    if (base + j < kend) {
      const int64_t off = int64_t(base + j) * 128;
      v[j][0] = load_stream(r.wa + off);
      v[j][1] = load_stream(r.wa + off + 64);
      v[j][2] = load_stream(r.wb + off);
      v[j][3] = load_stream(r.wb + off + 64);
    }
}

// Block geometry shared by both kernels.
struct Geometry {
  int warps, warp, lane, g, t;
  int C, rank, cid, G;
  int kb0, kb1, nkb;  // this block's slice of scale blocks
};

__device__ __forceinline__ Geometry geometry(const SkinnyParams& p) {
  Geometry q;
  q.warps = int(blockDim.x >> 5);
  q.warp = int(threadIdx.x >> 5);
  q.lane = int(threadIdx.x & 31);
  q.g = q.lane >> 2;
  q.t = q.lane & 3;
  q.C = p.split;
  q.rank = int(blockIdx.x) % q.C;
  q.cid = int(blockIdx.x) / q.C;
  q.G = int(gridDim.x) / q.C;
  q.kb0 = int(int64_t(q.rank) * p.kblocks / q.C);
  q.kb1 = int(int64_t(q.rank + 1) * p.kblocks / q.C);
  q.nkb = q.kb1 - q.kb0;  // >= 1: C <= kblocks
  return q;
}

// Shared memory: x planes [2 MP][plane] (halfs), xscale [MP][max_nkb], partial sums [2][warps][256]
// when C > 1, then (ring kernel) the weight ring. Offsets in bytes.
struct SmemLayout {
  int64_t plane;  // halfs per plane
  size_t xscale, part, ring, end;
};

__host__ __device__ __forceinline__ SmemLayout smem_layout(int nt, int max_nkb, int split, int warps,
                                                           int stages) {
  SmemLayout s;
  s.plane = int64_t(max_nkb) * 128 + kPad;
  s.xscale = size_t(8 * nt) * size_t(s.plane) * 2;
  s.part = s.xscale + ((size_t(4 * nt) * size_t(max_nkb) * 4 + 15) / 16) * 16;
  s.ring = s.part + (split > 1 ? size_t(2 * warps * 256) * 4 : 0);
  s.end = s.ring + size_t(warps) * size_t(stages) * 2048;
  return s;
}

// Stages this block's slice of x as f16 planes: plane 2i = hi parts of row i, 2i + 1 = lo parts;
// xscale[i][kl] = 2^e of row i's scale block kb0 + kl. Rows >= m are zeros (scale 1).
template <int MP>
__device__ __forceinline__ void stage_x(const SkinnyParams& p, const Geometry& q, __half* planes,
                                        float* xscale, int64_t plane) {
  constexpr int kX = 4;  // (row, scale block) pairs per warp at a time, all loads first
  const int pairs = MP * q.nkb, lane = q.lane;
  for (int pair0 = q.warp; pair0 < pairs; pair0 += kX * q.warps) {
    float v[kX][4], u[kX][4];
#pragma unroll
    for (int i = 0; i < kX; ++i) {
      const int pair = pair0 + i * q.warps, row = pair / q.nkb, kl = pair % q.nkb;
      const bool real = pair < pairs && row < p.m;
      const int64_t o = int64_t(row) * p.k + int64_t(q.kb0 + kl) * 128 + lane * 4;
      const float4 a = real ? *reinterpret_cast<const float4*>(p.x + o) : make_float4(0, 0, 0, 0);
      const float4 b =
          real && p.x_up ? *reinterpret_cast<const float4*>(p.x_up + o) : make_float4(0, 0, 0, 0);
      v[i][0] = a.x, v[i][1] = a.y, v[i][2] = a.z, v[i][3] = a.w;
      u[i][0] = b.x, u[i][1] = b.y, u[i][2] = b.z, u[i][3] = b.w;
    }
#pragma unroll
    for (int i = 0; i < kX; ++i) {
      const int pair = pair0 + i * q.warps, row = pair / q.nkb, kl = pair % q.nkb;
      if (pair >= pairs) break;  // warp-uniform
      if (p.x_up && row < p.m)
#pragma unroll
        for (int j = 0; j < 4; ++j) v[i][j] = silu_times(v[i][j], u[i][j]);
      uint2 hi, lo;
      const int e = split_hi_lo(v[i], hi, lo);
      const int64_t col = int64_t(kl) * 128 + lane * 4;
      *reinterpret_cast<uint2*>(planes + 2 * row * plane + col) = hi;
      *reinterpret_cast<uint2*>(planes + (2 * row + 1) * plane + col) = lo;
      if (lane == 0) xscale[row * p.max_nkb + kl] = pow2(e);
    }
  }
}

// One scale block (128 of k) of this lane's two rows: w = {row g chunk 0, chunk 1, row g + 8 chunk 0,
// chunk 1}, 16 bytes each. acc[j][0 / 1] += (rows g / g + 8) . (row 4 j + t of x) for this block.
template <int NT>
__device__ __forceinline__ void mma_block(const uint4 (&w)[4], uint32_t xrow, uint32_t tile_stride, int kl,
                                          float wscale, const float* xscale, int max_nkb, int t,
                                          float (&acc)[NT][2]) {
  constexpr int NC = NT == 1 ? 2 : 1;  // independent mma chains per n8 tile
  float d[NC][NT][4];
#pragma unroll
  for (int c = 0; c < NC; ++c)
#pragma unroll
    for (int jt = 0; jt < NT; ++jt) d[c][jt][0] = d[c][jt][1] = d[c][jt][2] = d[c][jt][3] = 0.0f;
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const uint4 va = w[c], vb = w[2 + c];
    const uint32_t wa4[4] = {va.x, va.y, va.z, va.w}, wb4[4] = {vb.x, vb.y, vb.z, vb.w};
    uint32_t a[4][4];
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      a[s][0] = e4m3x2_to_f16x2(wa4[s]);
      a[s][1] = e4m3x2_to_f16x2(wb4[s]);
      a[s][2] = e4m3x2_to_f16x2(wa4[s] >> 16);
      a[s][3] = e4m3x2_to_f16x2(wb4[s] >> 16);
    }
#pragma unroll
    for (int jt = 0; jt < NT; ++jt) {
      const uint32_t xp = xrow + uint32_t(jt) * tile_stride + uint32_t(kl * 256 + c * 128);
      const uint4 x0 = lds128(xp), x1 = lds128(xp + 16);
      const uint32_t xb[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
      for (int s = 0; s < 4; ++s)
        mma_f16_f32(d[c % NC][jt], a[s][0], a[s][1], a[s][2], a[s][3], xb[2 * s], xb[2 * s + 1]);
    }
  }
#pragma unroll
  for (int jt = 0; jt < NT; ++jt) {
    const float sc = wscale * xscale[(4 * jt + t) * max_nkb + kl];
    float sa = d[0][jt][0] + d[0][jt][1], sb = d[0][jt][2] + d[0][jt][3];  // hi + lo columns
#pragma unroll
    for (int c = 1; c < NC; ++c) {
      sa += d[c][jt][0] + d[c][jt][1];
      sb += d[c][jt][2] + d[c][jt][3];
    }
    acc[jt][0] = fmaf(sa, sc, acc[jt][0]);
    acc[jt][1] = fmaf(sb, sc, acc[jt][1]);
  }
}

__device__ __forceinline__ float block_scale(const SkinnyParams& p, const WarpRows& r, int kb) {
  return p.scale_f32 ? reinterpret_cast<const float*>(r.scales)[kb] : format::ue8m0_to_f32(r.scales[kb]);
}

// The end of cluster tile ct: with C = 1 each lane stores its sums; otherwise the block writes its
// partial sums, the cluster synchronizes (every thread of the cluster, once per cluster tile) and
// rank r adds up warps r, r + C, ... in rank order and stores them.
template <int NT>
__device__ __forceinline__ void finish_tile(const SkinnyParams& p, const Geometry& q, int ct, int parity,
                                            bool active, const float (&acc)[NT][2], float* part) {
  const int g = q.g, t = q.t;
  if (q.C == 1) {
    if (!active) return;
    const int tile = ct * q.warps + q.warp;
    const GemvTarget tg = target_of(p, tile);
    const int64_t row0 = int64_t(tile - tg.tile_begin) * 16;
#pragma unroll
    for (int jt = 0; jt < NT; ++jt) {
      const int xr = 4 * jt + t;
      if (xr >= p.m) continue;
      float* y = tg.y + int64_t(xr) * tg.n;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int64_t row = row0 + g + 8 * i;
        if (row >= tg.n) continue;
        float v = acc[jt][i];
        if (tg.bias) v += tg.bias[row];
        y[row] = p.accumulate ? y[row] + v : v;
      }
    }
    return;
  }
  float* pw = part + (parity * q.warps + q.warp) * 256;
#pragma unroll
  for (int jt = 0; jt < NT; ++jt) {
    pw[(4 * jt + t) * 16 + g] = acc[jt][0];
    pw[(4 * jt + t) * 16 + g + 8] = acc[jt][1];
  }
  cluster_sync();
  const uint32_t part_addr = uint32_t(__cvta_generic_to_shared(part + parity * q.warps * 256));
  const int per_warp = p.m * 16, mine = (q.warps - q.rank + q.C - 1) / q.C;
  for (int idx = int(threadIdx.x); idx < mine * per_warp; idx += int(blockDim.x)) {
    const int ws = q.rank + (idx / per_warp) * q.C, rem = idx % per_warp, xr = rem >> 4, rr = rem & 15;
    const int tile = ct * q.warps + ws;
    const GemvTarget tg = target_of(p, tile);
    const int64_t row = int64_t(tile - tg.tile_begin) * 16 + rr;
    if (row >= tg.n) continue;
    const uint32_t a = part_addr + uint32_t((ws * 256 + xr * 16 + rr) * 4);
    float s[kMaxSplit];
#pragma unroll
    for (int r = 0; r < kMaxSplit; ++r)
      if (r < q.C) s[r] = ld_cluster(a, r);
    float v = s[0];
#pragma unroll
    for (int r = 1; r < kMaxSplit; ++r)
      if (r < q.C) v += s[r];
    if (tg.bias) v += tg.bias[row];
    float* y = tg.y + int64_t(xr) * tg.n + row;
    *y = p.accumulate ? *y + v : v;
  }
}

// Weights through registers: each warp loads the next KU scale blocks of its rows (or of its next
// tile) while it multiplies the current ones. NT n8 tiles of x columns (rows of x 4 NT), at most MAXW
// warps per block (the register budget: 65536 / (32 MAXW) per thread).
template <int NT, int KU, int MAXW>
__global__ void __launch_bounds__(MAXW * 32, 1) gemv_fp8_skinny_kernel(SkinnyParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_trigger();
  const Geometry q = geometry(p);
  const int g = q.g, t = q.t, kb0 = q.kb0, kb1 = q.kb1;

  int ct = q.cid;  // < ctiles: the grid has at most ctiles clusters
  WarpRows cr = rows_of(p, ct * q.warps + q.warp, g, t);
  uint4 cur[KU][4];
  if (cr.active) load_round<KU>(cr, kb0, kb1, cur);
  pdl_wait();

  const SmemLayout L = smem_layout(NT, p.max_nkb, q.C, q.warps, 0);
  __half* planes = reinterpret_cast<__half*>(smem);
  float* xscale = reinterpret_cast<float*>(smem + L.xscale);
  float* part = reinterpret_cast<float*>(smem + L.part);
  stage_x<4 * NT>(p, q, planes, xscale, L.plane);
  __syncthreads();

  // B column g of n8 tile j = plane 8j + g; this lane's 16 values of a 64-wide chunk start at 16 t.
  const uint32_t xrow = uint32_t(__cvta_generic_to_shared(planes + int64_t(g) * L.plane + t * 16));
  const uint32_t tile_stride = uint32_t(8 * L.plane * 2);
  for (int parity = 0; ct < p.ctiles; ct += q.G, parity ^= 1) {
    float acc[NT][2];
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = 0.0f;
    WarpRows nr = cr;
    for (int base = kb0; base < kb1; base += KU) {
      // The next round of this tile, or the first round of the warp's tile in the next cluster tile
      // (past the last one: inactive).
      const bool same_tile = base + KU < kb1;
      if (!same_tile) nr = rows_of(p, (ct + q.G) * q.warps + q.warp, g, t);
      uint4 next[KU][4];
      if (nr.active) load_round<KU>(nr, same_tile ? base + KU : kb0, kb1, next);
      if (cr.active) {
#pragma unroll
        for (int j = 0; j < KU; ++j) {
          const int kb = base + j;
          if (kb >= kb1) break;
          mma_block<NT>(cur[j], xrow, tile_stride, kb - kb0, block_scale(p, cr, kb), xscale, p.max_nkb, t,
                        acc);
        }
      }
#pragma unroll
      for (int j = 0; j < KU; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) cur[j][i] = next[j][i];
    }
    finish_tile<NT>(p, q, ct, parity, cr.active, acc, part);
    cr = nr;
  }
  if (q.C > 1) cluster_sync();  // no block leaves while another may still read its partial sums
}

using mx8::cuda::ptx::cp_async16;
using mx8::cuda::ptx::cp_async_commit;
using mx8::cuda::ptx::cp_async_wait;

// Weights through a shared-memory ring: each warp walks the flat sequence of its (cluster tile,
// scale block) items and keeps the next S - 1 of them in flight with cp.async (16 bytes per lane and
// row chunk; a lane reads back only what it copied, so no barrier is needed, only wait_group). No
// registers hold loads in flight, so many more bytes are in flight than with the register kernel.
// Item i goes to slot i % S; it is issued at the start of iteration i - S + 1, after slot (i - S) %
// S = its slot was read back in iteration i - S.
template <int NT, int S>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) gemv_fp8_skinny_ring_kernel(SkinnyParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_trigger();
  const Geometry q = geometry(p);
  const int g = q.g, t = q.t, kb0 = q.kb0, kb1 = q.kb1;
  const int n_it = (p.ctiles - q.cid + q.G - 1) / q.G;  // cluster tiles of this cluster
  const int items = n_it * q.nkb;
  const SmemLayout L = smem_layout(NT, p.max_nkb, q.C, q.warps, S);
  // This lane's 16-byte chunk j of slot s: ring + ((s * 4 + j) * 32 + lane) * 16 (conflict-free).
  const uint32_t ring =
      uint32_t(__cvta_generic_to_shared(smem + L.ring)) + uint32_t(q.warp * S * 2048 + q.lane * 16);

  // The issue side: item `issued` is (cluster tile it_i, scale block kb_i) of rows ir.
  int issued = 0, it_i = 0, kb_i = kb0;
  WarpRows ir = rows_of(p, q.cid * q.warps + q.warp, g, t);
  auto issue = [&]() {
    if (issued < items && ir.active) {
      const uint32_t dst = ring + uint32_t((issued % S) * 4 * 512);
      const int64_t off = int64_t(kb_i) * 128;
      cp_async16(dst, ir.wa + off);
      cp_async16(dst + 512, ir.wa + off + 64);
      cp_async16(dst + 1024, ir.wb + off);
      cp_async16(dst + 1536, ir.wb + off + 64);
    }
    cp_async_commit();  // possibly empty: one group per item keeps wait_group's count exact
    ++issued;
    if (++kb_i == kb1) {
      kb_i = kb0;
      ++it_i;
      ir = rows_of(p, (q.cid + it_i * q.G) * q.warps + q.warp, g, t);
    }
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) issue();
  pdl_wait();

  __half* planes = reinterpret_cast<__half*>(smem);
  float* xscale = reinterpret_cast<float*>(smem + L.xscale);
  float* part = reinterpret_cast<float*>(smem + L.part);
  stage_x<4 * NT>(p, q, planes, xscale, L.plane);
  __syncthreads();

  const uint32_t xrow = uint32_t(__cvta_generic_to_shared(planes + int64_t(g) * L.plane + t * 16));
  const uint32_t tile_stride = uint32_t(8 * L.plane * 2);
  int ct = q.cid, parity = 0, kb = kb0;
  WarpRows cr = rows_of(p, ct * q.warps + q.warp, g, t);
  float acc[NT][2];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = 0.0f;
  for (int i = 0; i < items; ++i) {
    issue();                 // item i + S - 1
    cp_async_wait<S - 1>();  // item i has landed
    if (cr.active) {
      const uint32_t src = ring + uint32_t((i % S) * 4 * 512);
      const uint4 w[4] = {lds128(src), lds128(src + 512), lds128(src + 1024), lds128(src + 1536)};
      mma_block<NT>(w, xrow, tile_stride, kb - kb0, block_scale(p, cr, kb), xscale, p.max_nkb, t, acc);
    }
    if (++kb == kb1) {
      finish_tile<NT>(p, q, ct, parity, cr.active, acc, part);
#pragma unroll
      for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = 0.0f;
      kb = kb0;
      ct += q.G;
      parity ^= 1;
      cr = rows_of(p, ct * q.warps + q.warp, g, t);
    }
  }
  cp_async_wait<0>();
  if (q.C > 1) cluster_sync();  // no block leaves while another may still read its partial sums
}

// MX8_SKINNY: "off" (never route), or comma-separated knobs for A/B runs: min=<m> (smallest m routed,
// default: 3 from k = 4096 on, else 5), c=<split>, w=<warps>, ku=<1|2> (scale blocks
// per round of the register kernel), st=<0|4|8> (0: the register kernel; 4, 8: the ring kernel with
// that many stages).
struct EnvKnobs {
  bool off = false;
  int min_m = 0, split = 0, warps = 0, ku = 0, stages = -1;
};
const EnvKnobs& env_knobs() {
  static const EnvKnobs k = [] {
    EnvKnobs r;
    const char* e = std::getenv("MX8_SKINNY");
    if (!e) return r;
    std::string s(e);
    if (s == "off" || s == "0") {
      r.off = true;
      return r;
    }
    size_t i = 0;
    while (i < s.size()) {
      size_t j = s.find(',', i);
      if (j == std::string::npos) j = s.size();
      const std::string kv = s.substr(i, j - i);
      const size_t eq = kv.find('=');
      const std::string key = kv.substr(0, eq);
      int* field = key == "min"  ? &r.min_m
                   : key == "c"  ? &r.split
                   : key == "w"  ? &r.warps
                   : key == "ku" ? &r.ku
                   : key == "st" ? &r.stages
                                 : nullptr;
      char* end = nullptr;
      const long v = eq == std::string::npos ? 0 : std::strtol(kv.c_str() + eq + 1, &end, 10);
      if (!field || eq == std::string::npos || end == kv.c_str() + eq + 1 || *end != '\0')
        throw Error("MX8_SKINNY: '" + kv + "' is not one of off, min=N, c=N, w=N, ku=N, st=N");
      *field = int(v);
      i = j + 1;
    }
    return r;
  }();
  return k;
}

using KernelFn = void (*)(SkinnyParams);

// One compiled variant: the register kernel (stages 0, ku scale blocks loaded ahead) or the ring
// kernel (stages slots, stages - 1 in flight).
struct Kernel {
  KernelFn fn;
  int max_warps, ku, stages;
  size_t inflight_per_warp() const { return size_t(stages ? stages - 1 : ku) * 2048; }
};

void allow_smem(KernelFn k) {
  check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxSmem)),
        "matmul (fp8 skinny gemm): shared memory attribute");
}

// Each set once per kernel, before any launch (and so before any graph capture): allow kMaxSmem.
template <int NT, int KU, int MAXW>
Kernel register_kernel() {
  static const Kernel k = [] {
    allow_smem(gemv_fp8_skinny_kernel<NT, KU, MAXW>);
    return Kernel{gemv_fp8_skinny_kernel<NT, KU, MAXW>, MAXW, KU, 0};
  }();
  return k;
}
template <int NT, int S>
Kernel ring_kernel() {
  static const Kernel k = [] {
    allow_smem(gemv_fp8_skinny_ring_kernel<NT, S>);
    return Kernel{gemv_fp8_skinny_ring_kernel<NT, S>, kMaxWarps, 1, S};
  }();
  return k;
}

// Registers: with NT <= 2 two scale blocks per round fit in 128 per thread (16 warps per block, or 2
// blocks of 8 per SM); NT = 3, 4 take one (two need ~160: 12 warps per block at most).
Kernel register_variant(int nt, int ku) {
  if (ku != 1 && ku != 2) ku = nt <= 2 ? 2 : 1;
  switch (nt * 4 + ku) {
    case 1 * 4 + 1:
      return register_kernel<1, 1, 16>();
    case 1 * 4 + 2:
      return register_kernel<1, 2, 16>();
    case 2 * 4 + 1:
      return register_kernel<2, 1, 16>();
    case 2 * 4 + 2:
      return register_kernel<2, 2, 16>();
    case 3 * 4 + 1:
      return register_kernel<3, 1, 16>();
    case 3 * 4 + 2:
      return register_kernel<3, 2, 12>();
    case 4 * 4 + 1:
      return register_kernel<4, 1, 16>();
    default:
      return register_kernel<4, 2, 12>();
  }
}

Kernel ring_variant(int nt, int stages) {
  const bool deep = stages == 8;
  switch (nt) {
    case 1:
      return deep ? ring_kernel<1, 8>() : ring_kernel<1, 4>();
    case 2:
      return deep ? ring_kernel<2, 8>() : ring_kernel<2, 4>();
    case 3:
      return deep ? ring_kernel<3, 8>() : ring_kernel<3, 4>();
    default:
      return deep ? ring_kernel<4, 8>() : ring_kernel<4, 4>();
  }
}

// Clusters of `split` blocks of `warps` warps with `smem` bytes that the device holds at once.
int resident_clusters(KernelFn k, int split, int warps, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<KernelFn, int, int, size_t>, int> cache;
  const auto key = std::make_tuple(k, split, warps, smem);
  std::lock_guard<std::mutex> lock(mu);
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  int n = 0;
  if (split == 1) {
    int per_sm = 0;
    // An error (a shape the device cannot hold) counts as none resident.
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, warps * 32, smem) != cudaSuccess) {
      (void)cudaGetLastError();
      per_sm = 0;
    }
    n = per_sm * mx8::cuda::num_sms();
  } else {
    cudaLaunchAttribute attrs[2];
    const cudaLaunchConfig_t cfg = mx8::cuda::launch_config(
        dim3(unsigned(split * 64)), dim3(unsigned(warps * 32)), smem, nullptr, unsigned(split), false, attrs);
    if (cudaOccupancyMaxActiveClusters(&n, k, &cfg) != cudaSuccess) {
      (void)cudaGetLastError();
      n = 0;
    }
  }
  cache[key] = n;
  return n;
}

struct Plan {
  Kernel kernel;
  int split, warps, clusters, ctiles, max_nkb;
  size_t smem;
};

constexpr double kTargetInflight = 96 << 10;  // bytes in flight per SM that the plan aims at

// The (kernel, split, warps) with the least estimated time: rounds of cluster tiles x scale blocks
// per warp per tile, divided by how much of kTargetInflight per SM the grid's warps keep in flight.
Plan plan_for(int nt, int64_t tiles, int kblocks, const SkinnyConfig& cfg) {
  std::vector<Kernel> kernels;
  if (cfg.stages <= 0) kernels.push_back(register_variant(nt, cfg.ku));
  // The ring only for NT = 1 unless asked for: there it is up to 1.25x faster at large k (H200, M = 2, 4,
  // 7168 x 16384: 39.8 vs 46.0 us); with more rows of x it was no faster than the register kernel and
  // on some shapes 1.3x slower (M = 16, 4096 x 7168: 29.7 vs 23.4 us).
  if (cfg.stages < 0 && cfg.ku == 0 && nt == 1) {
    kernels.push_back(ring_variant(nt, 4));
    kernels.push_back(ring_variant(nt, 8));
  }
  if (cfg.stages > 0) kernels.push_back(ring_variant(nt, cfg.stages));
  Plan best{};
  double best_score = 0;
  const int sms = mx8::cuda::num_sms();
  for (const Kernel& k : kernels)
    for (int warps : {k.max_warps, 8, 4}) {
      if (cfg.warps && warps != cfg.warps) continue;
      const int64_t ctiles = (tiles + warps - 1) / warps;
      for (int split = 1; split <= std::min(kMaxSplit, kblocks); ++split) {
        if (cfg.split && split != cfg.split) continue;
        const int max_nkb = (kblocks + split - 1) / split;
        const size_t smem = smem_layout(nt, max_nkb, split, warps, k.stages).end;
        if (smem > kMaxSmem) continue;
        const int resident = resident_clusters(k.fn, split, warps, smem);
        if (resident < 1) continue;
        const int64_t clusters = std::min<int64_t>(ctiles, resident);
        const int64_t rounds = (ctiles + clusters - 1) / clusters;
        const double inflight = double(clusters * split * warps) * double(k.inflight_per_warp());
        const double fill = std::min(1.0, inflight / (double(sms) * kTargetInflight));
        const double score = double(rounds) * double(max_nkb) / fill;
        if (best.split == 0 || score < best_score * 0.999) {
          best = Plan{k, split, warps, int(clusters), int(ctiles), max_nkb, smem};
          best_score = score;
        }
      }
    }
  return best;
}

bool shape_ok(const MatmulInput& in, const MatmulTarget* targets, int count) {
  if (count < 1 || count > kMaxGemvTargets || in.m < 1 || in.m > 16 || !in.x || !aligned16(in.x) ||
      (in.x_up && !aligned16(in.x_up)) || in.norm)  // a fused rmsnorm: gemv_fp8_mma.cu
    return false;
  const WeightView& w0 = targets[0].w;
  const int64_t k = w0.k;
  if (w0.format != WeightFormat::fp8_block || k <= 0 || k % 128 != 0 || k / 128 > (int64_t(1) << 20))
    return false;
  int64_t tiles = 0;
  for (int i = 0; i < count; ++i) {
    const WeightView& w = targets[i].w;
    if (w.format != WeightFormat::fp8_block || w.scale_type != w0.scale_type || w.k != k || w.n <= 0 ||
        w.n > (int64_t(1) << 30) || !aligned16(w.data) || !w.scales || !targets[i].y)
      return false;
    tiles += (w.n + 15) / 16;
  }
  if (tiles > (int64_t(1) << 26)) return false;
  // The smallest slice of x (the largest split) must fit in shared memory.
  const int nt = int((in.m + 3) / 4), kblocks = int(k / 128);
  const int split = std::min(kMaxSplit, kblocks);
  return smem_layout(nt, (kblocks + split - 1) / split, split, kMaxWarps, 0).end <= kMaxSmem;
}

}  // namespace

bool gemv_fp8_skinny_supports(const MatmulInput& in, const MatmulTarget* targets, int count) {
  return shape_ok(in, targets, count);
}

bool gemv_fp8_skinny_applies(const MatmulInput& in, const MatmulTarget* targets, int count) {
  const EnvKnobs& e = env_knobs();
  if (e.off || count < 1) return false;
  // m = 3..4: faster than gemv_fp8_mma.cu's 1..4-row kernel from k = 4096 on (H200, DeepSeek-V3 shapes,
  // M = 2 / 4: k = 16384 39.8 / 40.8 us vs 51.2 / 99.0, k = 7168 15.4 / 15.5 vs 18.8 / 23.6 (n 4096) and
  // 15.2 / 15.3 vs 14.7 / 19.4 (n 2112); k = 2048: 13.6 / 13.9 vs 12.9 / 14.5, k <= 1536 no better).
  // Two rows stay on the mma GEMV all the same: in a decode step it fuses the rmsnorms and the SwiGLU
  // pair, and a Llama-3-8B step of 2 sequences ran 691 tok/s there against 564 with the skinny GEMM
  // (H200, `mx8 bench decode-cuda --batch 2`, FP8; 3 rows: 780 against 820, 4: 964 against 1063).
  const int min_m = e.min_m > 0 ? e.min_m : targets[0].w.k >= 4096 ? 3 : 5;
  return in.m >= min_m && shape_ok(in, targets, count);
}

void launch_gemv_fp8_skinny(const MatmulInput& in, const MatmulTarget* targets, int count, cudaStream_t s,
                            const SkinnyConfig& cfg_in) {
  if (!shape_ok(in, targets, count))
    throw Error("cuda backend: fp8 skinny gemm: the group does not meet gemv_fp8_skinny_supports");
  const EnvKnobs& e = env_knobs();
  SkinnyConfig cfg = cfg_in;
  if (!cfg.split) cfg.split = e.split;
  if (!cfg.warps) cfg.warps = e.warps;
  if (!cfg.ku) cfg.ku = e.ku;
  if (cfg.stages < 0) cfg.stages = e.stages;
  const int nt = int((in.m + 3) / 4);
  const int64_t k = targets[0].w.k;
  const int kblocks = int(k / 128);
  SkinnyParams p{};
  int64_t tiles = 0;
  for (int i = 0; i < count; ++i) {
    const MatmulTarget& t = targets[i];
    p.t[i] = GemvTarget{static_cast<const uint8_t*>(t.w.data), t.w.scales, t.y, t.bias, t.w.n, int(tiles)};
    tiles += (t.w.n + 15) / 16;
  }
  for (int i = count; i < kMaxGemvTargets; ++i) p.t[i] = p.t[0];
  const Plan plan = plan_for(nt, tiles, kblocks, cfg);
  if (plan.split == 0)
    throw Error("cuda backend: fp8 skinny gemm: no launch shape fits (split " + std::to_string(cfg.split) +
                ", warps " + std::to_string(cfg.warps) + ")");
  p.count = count;
  p.k = k;
  p.kblocks = kblocks;
  p.split = plan.split;
  p.ctiles = plan.ctiles;
  p.max_nkb = plan.max_nkb;
  p.x = in.x;
  p.x_up = in.x_up;
  p.m = int(in.m);
  p.accumulate = in.accumulate;
  p.scale_f32 = targets[0].w.scale_type == ScaleType::f32;

  check(mx8::cuda::launch_ex(plan.kernel.fn, dim3(unsigned(plan.clusters * plan.split)),
                             dim3(unsigned(plan.warps * 32)), plan.smem, s, unsigned(plan.split),
                             pdl_enabled(), p),
        "matmul (fp8 skinny gemm)");
}

}  // namespace mx8::backend::cuda_impl
