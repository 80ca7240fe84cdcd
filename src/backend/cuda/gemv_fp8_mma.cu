// The FP8 GEMV on the tensor cores: y = x W^T for fp8_block weights and 1..4 rows of x (MXFP8
// weights too, 1..2 rows: mx_block).
//
// Why: the SIMT GEMV (backend_cuda_gemv.cu) decodes every E4M3 weight to f32 (a cvt to f16 and a
// conversion to f32) and multiplies it with one FMA per row of x: ~2.5x the instructions per byte of
// the BF16 GEMV, and on the H200 it stops at 35-70% of the copy bandwidth, compute-bound. Here one
// cvt.f16x2.e4m3x2 decodes two weights (exact: every E4M3 value is an f16) and mma.sync m16n8k16
// (f16 inputs, products exact, f32 accumulation) does the multiplications: 0.5 conversions per
// weight byte, and no FMA per weight.
//
// x keeps (nearly) f32 precision: each row of x is split, per 128 values along k, into two f16
// parts, hi = f16(x * 2^-e) and lo = f16(x * 2^-e - hi), with the power of two 2^e chosen from the
// 128 values' largest finite magnitude so that it lands in [2^14, 2^15) (no f16 overflow). hi + lo
// carries 22 significant bits: each product's error is <= 2^-22 |w x| (the matmul tolerance is
// 64 u = 2^-18 of sum |w x|). A non-finite x keeps its hi part (Inf or NaN) and lo = 0, so Inf and
// NaN reach y as in the f32 product. hi and lo are two columns of the mma's B operand (4 rows of x
// x {hi, lo} = the 8 columns of n8); their results are added in f32, times 2^e and the weights'
// 128x128 block scale once per 128 of k (DeepSeek's promotion point).
//
// Fragments (PTX ISA, mma.m16n8k16, f16): lane = 4 g + t holds A rows g and g + 8 at k slots
// {2t, 2t+1, 2t+8, 2t+9}, B column g at the same slots. A dot product does not care which k a slot
// stands for, as long as A and B agree: slot 2t+{0,1} is k = 16t + 4s + {0,1} and slot 2t+8+{0,1}
// is k = 16t + 4s + {2,3} in step s of a 64-wide chunk. So a lane's A data for a whole chunk is 16
// consecutive bytes of each of its two rows (one 16-byte load each), and its B data 16 consecutive
// values of x (two 16-byte shared-memory loads).
//
// Work split: a tile is 16 rows of one target; the block's 8 warps split its k (in whole 128-wide
// scale blocks) and their partial sums of a row are added in a fixed order in shared memory
// (deterministic). Each warp loads the next U = 2 scale blocks of weights while it multiplies the
// current ones; the first loads are issued before griddepcontrol.wait (weights are never written by
// kernels). Every warp first stages the part of x it multiplies as f16 planes in shared memory; the
// input may be x, silu(x) * x_up (SwiGLU) or rmsnorm(x) (the staging multiplies by the norm weights
// and sums the squares; the 1/rms factor scales the finished product, so the decode step has no
// rmsnorm kernel).
#include "backend/cuda/gemv_fp8_mma.cuh"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/gemv_fp8_common.cuh"
#include "backend/cuda/gemv_target.cuh"
#include "backend/cuda/warp_uniform.cuh"
#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kWarps = 8;  // warps per block (2 blocks per SM); one row with a wide k: 16 (w16_min_k)
constexpr int kU = 2;      // scale blocks (128 of k) per warp per round
constexpr int kPad = 8;    // halfs after each x plane: no bank conflicts between planes
constexpr size_t kMaxSmem = size_t(200) << 10;  // dynamic shared memory for x, at most

struct MmaParams {
  GemvTarget t[kMaxGemvTargets];
  int count;
  int64_t k;
  int kblocks;        // k / 128
  const float* x;     // [m][k], this launch's rows
  const float* x_up;  // [m][k] or nullptr: the input is silu(x) * x_up
  const float* norm;  // [k] or nullptr: the input is rmsnorm(x) with these weights
  float norm_eps;
  int m;  // rows of x in this launch (<= P)
  bool accumulate;
  bool scale_f32;
  int wpt;  // warps per tile: W, or fewer where k is short (kernel comment)
};

// The overlapped FFN (gemv_fp8_mma.cuh, swiglu_ffn): a row of h not yet stored by this step's pair holds
// these bits, a NaN that no arithmetic makes (GPU arithmetic returns the canonical NaN 0x7fffffff).
constexpr uint32_t kNotYet = 0xffffffffu;

// The overlapped down kernel's x for one round (P = 1): scale blocks base + [0, kU) at this lane's 4
// values, through L2 (ld.global.cg: this kernel does not wait for the pair's grid, and an SM's L1 may
// hold the previous layer's h).
__device__ __forceinline__ void load_x_round(const MmaParams& p, int base, int lane, float4 (&a)[kU]) {
#pragma unroll
  for (int j = 0; j < kU; ++j)
    a[j] = base + j < p.kblocks ? __ldcg(reinterpret_cast<const float4*>(p.x + (base + j) * 128 + lane * 4))
                                : make_float4(0, 0, 0, 0);
}

// Stages a round loaded by load_x_round as stage_x does, once none of its values is kNotYet (reloading
// until then).
__device__ __forceinline__ void stage_round_when_made(const MmaParams& p, __half* planes, float* xscale,
                                                      int base, int lane, float4 (&a)[kU]) {
  auto not_yet = [&] {
    bool any = false;
#pragma unroll
    for (int j = 0; j < kU; ++j)
      any |= __float_as_uint(a[j].x) == kNotYet || __float_as_uint(a[j].y) == kNotYet ||
             __float_as_uint(a[j].z) == kNotYet || __float_as_uint(a[j].w) == kNotYet;
    return __any_sync(0xffffffffu, any);
  };
  while (not_yet()) {
    __nanosleep(100);
    load_x_round(p, base, lane, a);
  }
#pragma unroll
  for (int j = 0; j < kU; ++j) {
    if (base + j >= p.kblocks) break;
    const float v[4] = {a[j].x, a[j].y, a[j].z, a[j].w};
    uint2 hi, lo;
    const int e = split_hi_lo(v, hi, lo);
    const int64_t col = int64_t(base + j) * 128 + lane * 4;
    *reinterpret_cast<uint2*>(planes + col) = hi;
    *reinterpret_cast<uint2*>(planes + (p.k + kPad) + col) = lo;
    if (lane == 0) xscale[base + j] = pow2(e);
  }
  __syncwarp();
}

// Dynamic shared memory of one warp group's staged x: 2P f16 planes and P x (k / 128) powers of two,
// rounded to 16 bytes so that the next group's planes stay aligned.
__host__ __device__ inline size_t smem_bytes(int P, int64_t k) {
  const size_t b =
      size_t(2 * P) * size_t(k + kPad) * sizeof(__half) + size_t(P) * size_t(k / 128) * sizeof(float);
  return (b + 15) / 16 * 16;
}

// Stages this warp's part of rows [0, P) of the input as f16 planes in shared memory: the scale
// blocks it multiplies (wl * kU + i * wpt * kU + [0, kU), wl its place in its group of wpt warps), so
// that no other warp waits for them (a block barrier here cost the slowest warp's L2 round trips to
// every warp). Plane 2r = hi parts of row r, plane 2r + 1 = lo parts, xscale[r][kb] = 2^e of scale
// block kb; rows past p.m are zeros. The input is x, silu(x) * x_up, or x * norm (rmsnorm's weights;
// its 1/rms factor is applied to the products instead, from the sums of squares that each warp leaves
// in ssq[warp][row]).
template <int P>
__device__ __forceinline__ void stage_x(const MmaParams& p, __half* planes, float* xscale, float* ssq,
                                        int warp, int wl, int wpt, int lane) {
  const int64_t plane = p.k + kPad;
  const int first = wl * kU, stride = wpt * kU;
  float sumsq[P] = {};
  // kJ scale blocks of all P rows at a time, all loads first (k = 14336 is 7 blocks per warp of 16).
  constexpr int kJ = P >= 4 ? 1 : 4 / P;
  const float* second = p.x_up ? p.x_up : p.norm;
  for (int j0 = 0; first + (j0 / kU) * stride < p.kblocks; j0 += kJ) {
    int kb[kJ];
    float v[P][kJ][4], u[P][kJ][4];
#pragma unroll
    for (int j = 0; j < kJ; ++j) kb[j] = first + ((j0 + j) / kU) * stride + (j0 + j) % kU;
#pragma unroll
    for (int r = 0; r < P; ++r)
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
        const bool real = kb[j] < p.kblocks && r < p.m;
        const int64_t col = int64_t(kb[j]) * 128 + lane * 4;
        const float4 a =
            real ? *reinterpret_cast<const float4*>(p.x + int64_t(r) * p.k + col) : make_float4(0, 0, 0, 0);
        const int64_t o2 = p.x_up ? int64_t(r) * p.k + col : col;
        const float4 b =
            real && second ? *reinterpret_cast<const float4*>(second + o2) : make_float4(0, 0, 0, 0);
        v[r][j][0] = a.x, v[r][j][1] = a.y, v[r][j][2] = a.z, v[r][j][3] = a.w;
        u[r][j][0] = b.x, u[r][j][1] = b.y, u[r][j][2] = b.z, u[r][j][3] = b.w;
      }
#pragma unroll
    for (int r = 0; r < P; ++r)
#pragma unroll
      for (int j = 0; j < kJ; ++j) {
        if (kb[j] >= p.kblocks) continue;  // warp-uniform: the last round's blocks past k
        if (p.x_up) {
#pragma unroll
          for (int i = 0; i < 4; ++i) v[r][j][i] = silu_times(v[r][j][i], u[r][j][i]);
        } else if (p.norm) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            sumsq[r] = fmaf(v[r][j][i], v[r][j][i], sumsq[r]);
            v[r][j][i] *= u[r][j][i];
          }
        }
        uint2 hi, lo;
        const int e = split_hi_lo(v[r][j], hi, lo);
        const int64_t col = int64_t(kb[j]) * 128 + lane * 4;
        *reinterpret_cast<uint2*>(planes + 2 * r * plane + col) = hi;
        *reinterpret_cast<uint2*>(planes + (2 * r + 1) * plane + col) = lo;
        if (lane == 0) xscale[r * p.kblocks + kb[j]] = pow2(e);
      }
  }
  if (ssq) {
#pragma unroll
    for (int r = 0; r < P; ++r) {
      float s = sumsq[r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lane == 0) ssq[warp * P + r] = s;
    }
  }
  __syncwarp();  // the warp's lanes read each other's stores
}

// rmsnorm's 1/rms of row `row` from the sums of squares (stage_x) of the group's warps w0.., with the
// operations of rmsnorm_vec_kernel after its sum; 1 without a fused rmsnorm.
template <int P>
__device__ __forceinline__ float rms_factor(const MmaParams& p, const float* ssq, int w0, int wpt, int row) {
  if (!p.norm || row >= P) return 1.0f;
  float s = 0.0f;
  for (int w = w0; w < w0 + wpt; ++w) s += ssq[w * P + row];
  s /= float(p.k);
  s += p.norm_eps;
  return 1.0f / sqrtf(s);
}

// The rows of a tile (16 rows of one target) as one lane sees them.
struct WarpRows {
  GemvTarget tg;
  const uint8_t* wa;     // row row0 + g, at this lane's 16 bytes of a 64-wide chunk
  const uint8_t* wb;     // row row0 + g + 8 (SwiGLU pairs: row row0 + g of the up weights)
  const void* scales_b;  // the scales of wb's rows: tg's, or the up weights'
  int64_t row0;
  int64_t srow;  // first scale of row0's 128-row block
  bool active;   // row0 < n
};

// kPair (SwiGLU pairs): targets 0 and 1 are the gate and up weights, of the same shape; a tile is 8
// rows of both, A rows g from the gate weights and g + 8 from the up weights, so that a lane ends
// with the gate and up products of one output row.
template <bool kPair>
__device__ __forceinline__ WarpRows rows_of(const MmaParams& p, int tile, int g, int t) {
  WarpRows r;
  if (kPair) {
    r.tg = p.t[0];
    r.row0 = int64_t(tile) * 8;
    r.active = r.row0 < r.tg.n;
    const int64_t ra = min(r.row0 + g, r.tg.n - 1);  // past n: read, never stored
    r.wa = r.tg.w + ra * p.k + t * 16;
    r.wb = p.t[1].w + ra * p.k + t * 16;
    r.scales_b = p.t[1].scales;
  } else {
    r.tg = target_of(p, tile);
    r.row0 = int64_t(tile - r.tg.tile_begin) * 16;
    r.active = r.row0 < r.tg.n;
    const int64_t ra = min(r.row0 + g, r.tg.n - 1),
                  rb = min(r.row0 + g + 8, r.tg.n - 1);  // past n: read, never stored
    r.wa = r.tg.w + ra * p.k + t * 16;
    r.wb = r.tg.w + rb * p.k + t * 16;
    r.scales_b = r.tg.scales;
  }
  r.srow = (r.row0 >> 7) * int64_t(p.kblocks);  // a tile's rows share one 128-row scale block
  return r;
}

// One round of a warp: kU scale blocks of this lane's two rows (two 64-wide chunks each) and their
// weight scales (f32 bits or the UE8M0 byte). The scales travel with the weights: loaded where they
// are used, each one was a dependent global load in the multiply loop, one exposed memory latency
// per scale block (ncu: the top stall of every FP8 GEMV).
struct Round {
  uint4 w[kU][4];
  uint32_t scale[kU];    // kMX: the four 1x32 scales of row wa in this 128 of k
  uint32_t scale_b[kU];  // SwiGLU pairs: the up rows' scales; kMX: row wb's four (else unused)
};

__device__ __forceinline__ uint32_t load_scale(const MmaParams& p, const void* scales, int64_t i) {
  return p.scale_f32 ? __float_as_uint(__ldg(static_cast<const float*>(scales) + i))
                     : uint32_t(__ldg(static_cast<const unsigned char*>(scales) + i));
}

template <bool kPair, bool kMX>
__device__ __forceinline__ void load_round(const MmaParams& p, const WarpRows& r, int base, Round& v) {
#pragma unroll
  for (int j = 0; j < kU; ++j)
    if (base + j < p.kblocks) {
      const int64_t off = int64_t(base + j) * 128;
      v.w[j][0] = load_stream(r.wa + off);
      v.w[j][1] = load_stream(r.wa + off + 64);
      v.w[j][2] = load_stream(r.wb + off);
      v.w[j][3] = load_stream(r.wb + off + 64);
      if (kMX) {
        // Row r's 1x32 scales start at byte r k / 32, which (k % 128 == 0) is 4 (the row's offset in
        // its weights, wa - w, over 128): the lane's t 16 bytes drop out of the shift. Four bytes
        // (one 32-bit load) per 128 of k.
        const uint8_t* wb0 = kPair ? p.t[1].w : r.tg.w;
        const auto* sa = static_cast<const uint32_t*>(r.tg.scales) + ((r.wa - r.tg.w) >> 7);
        const auto* sb = static_cast<const uint32_t*>(r.scales_b) + ((r.wb - wb0) >> 7);
        v.scale[j] = __ldg(sa + base + j);
        v.scale_b[j] = __ldg(sb + base + j);
        continue;
      }
      const int64_t si = r.srow + base + j;
      v.scale[j] = load_scale(p, r.tg.scales, si);
      if (kPair) v.scale_b[j] = load_scale(p, r.scales_b, si);
    }
}

// One scale block (128 of k) of MXFP8 weights, whose scales change every 32 of k. A lane's 16 bytes
// of a 64-wide chunk are k = 16t .. 16t + 15, inside one 32-wide scale block (t < 2: the chunk's
// first, else its second), but every mma step sums over all four t. So the two scale blocks of a
// chunk get their own columns of B: column g holds x's hi or lo part (g & 1) of row g >> 2 on the
// lanes of block (g >> 1) & 1 and zeros on the others (mx_lane_x). With one or two rows of x that is
// at most the mma's 8 columns, so one mma per step sums each block apart, and lane t's accumulators
// are block t & 1 of row t >> 1 (hi and lo), promoted with that block's two weight-row scales. (Two
// mma per step with B masked to one block's lanes: ~2x the instructions per weight byte; 8 bytes of
// each block per lane, so that every step stays in one block: slower, H200, .carry/lead/e54.sh.) The
// scales are exponents: 2^(b - 127) is b << 23 except for b = 0 (2^-127, subnormal) and 255 (NaN),
// which take format::ue8m0_to_f32 in a round that has them (mx_round_exact).
__device__ __forceinline__ bool has_byte_00_or_ff(uint32_t w) {
  const uint32_t n = ~w;
  return (((w - 0x01010101u) & ~w) | ((n - 0x01010101u) & ~n)) & 0x80808080u;
}
__device__ __forceinline__ bool mx_round_exact(const Round& cur, int base, int kblocks) {
  bool any = false;
#pragma unroll
  for (int j = 0; j < kU; ++j)
    if (base + j < kblocks) any |= has_byte_00_or_ff(cur.scale[j]) || has_byte_00_or_ff(cur.scale_b[j]);
  return __any_sync(0xFFFFFFFFu, any);
}
// Whether lane (g, t) holds x in its B fragment (else zeros), for P rows of x.
__device__ __forceinline__ bool mx_lane_x(int g, int t, int P) {
  return g < 4 * P && ((g >> 1) & 1) == (t >> 1);
}
// xb: this lane's 16 values of B for the block (x or the zero row), at chunk c's offset c * 64.
__device__ __forceinline__ void mx_block(const Round& cur, int j, const __half* xb, int t, float xs,
                                         bool exact, float& acc_a, float& acc_b) {
  auto scale_of = [&](uint32_t word, int byte) {
    const uint32_t b = (word >> (8 * byte)) & 0xFFu;
    return exact ? format::ue8m0_to_f32(uint8_t(b)) : __uint_as_float(b << 23);
  };
  float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const uint4 x0 = *reinterpret_cast<const uint4*>(xb + c * 64),
                x1 = *reinterpret_cast<const uint4*>(xb + c * 64 + 8);
    const uint32_t x8[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
    const uint4 va = cur.w[j][c], vb = cur.w[j][2 + c];
    const uint32_t wa4[4] = {va.x, va.y, va.z, va.w}, wb4[4] = {vb.x, vb.y, vb.z, vb.w};
    float d[4] = {};  // row g hi, lo, row g + 8 hi, lo of this lane's block and row of x
#pragma unroll
    for (int s = 0; s < 4; ++s)
      mma_f16_f32(d, e4m3x2_to_f16x2(wa4[s]), e4m3x2_to_f16x2(wb4[s]), e4m3x2_to_f16x2(wa4[s] >> 16),
                  e4m3x2_to_f16x2(wb4[s] >> 16), x8[2 * s], x8[2 * s + 1]);
    const int byte = 2 * c + (t & 1);
    sum_a = fmaf(d[0] + d[1], scale_of(cur.scale[j], byte), sum_a);
    sum_b = fmaf(d[2] + d[3], scale_of(cur.scale_b[j], byte), sum_b);
  }
  acc_a = fmaf(sum_a, xs, acc_a);
  acc_b = fmaf(sum_b, xs, acc_b);
}

// A persistent grid: block b takes tiles b, b + gridDim.x, ...; warp w multiplies the tile's rows over
// scale blocks w * kU + [0, kU), + 8 kU, ... (many 16-row tiles per block balance the SMs better than
// fewer tiles of 32..128 rows with fewer warps per row: H200, lm_head 82% -> 94% of copy bandwidth,
// decode 305.9 -> 315.9 tok/s). Every warp walks the flat sequence of its (tile, round) items and loads the
// next item's weights - also across the tile boundary - before it multiplies the current one.
// kGrouped (k so short that at least half the warps would have no round: DeepSeek's k = 512 idled 6
// of 8): the block's warps form W / p.wpt groups of p.wpt warps, each with its own tiles (the block's
// virtual blocks), staged x and named barrier. A template choice: a run-time warp count in the other
// kernels' loops cost 4.5% of decode (.carry/lead/e34.sh).
// kOverlap, one row of x (gemv_fp8_mma.cuh, swiglu_ffn): with kPair, the block first sets its rows of h
// to kNotYet and lets the down kernel start only then; without, that down kernel: no
// griddepcontrol.wait, and each warp stages a round's x in its first tile once it holds no kNotYet
// (prefetched a round ahead), so the blocks that become resident while the pair's slowest blocks
// finish start on the rows already made.
template <int P, int W, bool kPair, bool kGrouped, bool kMX, bool kOverlap = false>
__global__ void __launch_bounds__(W * 32, 16 / W) gemv_fp8_mma_kernel(MmaParams p, int tiles) {
  static_assert(!kOverlap || (P == 1 && !kMX && (kPair || !kGrouped)),
                "overlap: one row, the pair or the down");
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float2 partial[2][W][32];  // double-buffered by tile parity
  __shared__ float ssq[W * P];
  __shared__ __align__(16) __half mx_zeros[kMX ? W : 1][80];  // kMX: B of a lane without x (mx_block)
  static_assert(!kMX || P <= 2, "MXFP8: two columns of B per row of x and scale block, 8 in all");
  if constexpr (!(kPair && kOverlap)) pdl_trigger();
  const int warp = mx8::cuda::warp_uniform(int(threadIdx.x >> 5)), lane = threadIdx.x & 31;
  if (kMX && lane < 10)  // seen after stage_x's __syncwarp
    reinterpret_cast<uint4*>(mx_zeros[warp])[lane] = make_uint4(0, 0, 0, 0);
  const int g = lane >> 2, t = lane & 3;
  const int wpt = kGrouped ? p.wpt : W;
  const int groups = W / wpt, group = kGrouped ? warp / wpt : 0, w0 = group * wpt;  // w0: its first warp
  const int first = (warp - w0) * kU, stride = wpt * kU;
  const int tile_step = int(gridDim.x) * groups;

  int tile = int(blockIdx.x) * groups + group;
  WarpRows cr = rows_of<kPair>(p, tile, g, t);
  Round cur;
  bool loaded = tile < tiles && cr.active && first < p.kblocks;
  if (loaded) load_round<kPair, kMX>(p, cr, first, cur);
  if constexpr (kPair || !kOverlap) pdl_wait();
  if constexpr (kPair && kOverlap) {
    // kNotYet on the block's rows of h (8 per tile), made visible before any thread lets the dependent
    // down kernel start (after the wait: the previous layer's down has read h by then).
    const int64_t per_step = int64_t(groups) * 8;
    for (int64_t i = threadIdx.x;; i += blockDim.x) {
      const int64_t step0 = int64_t(blockIdx.x) * groups + i / per_step * tile_step;
      if (step0 >= tiles) break;
      const int64_t tile_i = step0 + i % per_step / 8, row = tile_i * 8 + i % 8;
      if (tile_i < tiles && row < p.t[0].n) p.t[0].y[row] = __uint_as_float(kNotYet);
    }
    __threadfence();
    __syncthreads();
    pdl_trigger();
  }

  const int64_t plane = p.k + kPad;
  unsigned char* mine = kGrouped ? smem + size_t(group) * smem_bytes(P, p.k) : smem;
  __half* planes = reinterpret_cast<__half*>(mine);
  float* xscale = reinterpret_cast<float*>(mine + size_t(2 * P) * size_t(plane) * sizeof(__half));
  if constexpr (kPair || !kOverlap)
    stage_x<P>(p, planes, xscale, p.norm ? ssq : nullptr, warp, warp - w0, wpt, lane);
  bool staged = kPair || !kOverlap;        // the overlapped down: the first tile stages each round once made
  float4 xr[kOverlap && !kPair ? kU : 1];  // the overlapped down: the round's x, loaded a round ahead
  if constexpr (kOverlap && !kPair) load_x_round(p, first, lane, xr);
  float rnorm = 1.0f;

  const __half* xrow = planes + int64_t(g) * plane + t * 16;  // B column g = plane g
  const bool has_col = g < 2 * P;
  // kMX (mx_block): column g is plane 2 (g >> 2) + (g & 1) on the lanes of its block, and each lane's
  // accumulators are for row x_row of x (else x_row = t).
  const bool mx_x = kMX && mx_lane_x(g, t, P);
  const __half* mx_xrow = planes + int64_t(2 * (g >> 2) + (g & 1)) * plane + t * 16;
  const int x_row = kMX ? t >> 1 : t;
  for (int parity = 0; tile < tiles; tile += tile_step, parity ^= 1) {
    if (!loaded && cr.active && first < p.kblocks) load_round<kPair, kMX>(p, cr, first, cur);
    float acc_a = 0.0f, acc_b = 0.0f;  // rows row0 + g, row0 + g + 8 for row x_row of x (kMX: one block)
    WarpRows nr = cr;
    loaded = false;
    for (int base = first; base < p.kblocks; base += stride) {
      // The next item: the next round of this tile, or the first round of the block's next tile.
      const bool same_tile = base + stride < p.kblocks;
      const int ntile = same_tile ? tile : tile + tile_step;
      if (!same_tile) nr = rows_of<kPair>(p, ntile, g, t);
      Round next;
      loaded = ntile < tiles && nr.active;
      if (loaded) load_round<kPair, kMX>(p, nr, same_tile ? base + stride : first, next);
      if constexpr (kOverlap && !kPair) {
        if (!staged) {
          stage_round_when_made(p, planes, xscale, base, lane, xr);
          if (same_tile) load_x_round(p, base + stride, lane, xr);
        }
      }
      if (kMX && cr.active) {
        const bool exact = mx_round_exact(cur, base, p.kblocks);
#pragma unroll
        for (int j = 0; j < kU; ++j)
          if (base + j < p.kblocks)
            mx_block(cur, j, mx_x ? mx_xrow + (base + j) * 128 : mx_zeros[warp], t,
                     x_row < P ? xscale[x_row * p.kblocks + base + j] : 0.0f, exact, acc_a, acc_b);
      } else if (cr.active) {
#pragma unroll
        for (int j = 0; j < kU; ++j) {
          const int kb = base + j;
          if (kb >= p.kblocks) break;
          float d2[2][4] = {};  // one accumulator per 64-wide chunk: independent mma chains
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            float(&d)[4] = d2[c];
            uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
            if (has_col) {
              const __half* xp = xrow + int64_t(kb) * 128 + c * 64;
              x0 = *reinterpret_cast<const uint4*>(xp);
              x1 = *reinterpret_cast<const uint4*>(xp + 8);
            }
            const uint32_t xb[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
            const uint4 va = cur.w[j][c], vb = cur.w[j][2 + c];
            const uint32_t wa4[4] = {va.x, va.y, va.z, va.w}, wb4[4] = {vb.x, vb.y, vb.z, vb.w};
#pragma unroll
            for (int s = 0; s < 4; ++s)
              mma_f16_f32(d, e4m3x2_to_f16x2(wa4[s]), e4m3x2_to_f16x2(wb4[s]), e4m3x2_to_f16x2(wa4[s] >> 16),
                          e4m3x2_to_f16x2(wb4[s] >> 16), xb[2 * s], xb[2 * s + 1]);
          }
          auto decode = [&](uint32_t v) {
            return p.scale_f32 ? __uint_as_float(v) : format::ue8m0_to_f32(uint8_t(v));
          };
          const float xs = t < P ? xscale[t * p.kblocks + kb] : 0.0f;
          const float sc = decode(cur.scale[j]) * xs, sc_b = kPair ? decode(cur.scale_b[j]) * xs : sc;
          // d[0] / d[1]: row row0 + g, columns hi / lo of row t of x; d[2] / d[3]: row row0 + g + 8.
          acc_a = fmaf((d2[0][0] + d2[0][1]) + (d2[1][0] + d2[1][1]), sc, acc_a);
          acc_b = fmaf((d2[0][2] + d2[0][3]) + (d2[1][2] + d2[1][3]), sc_b, acc_b);
        }
      }
      cur = next;
    }

    staged = true;
    // The warps' partial sums of each row, added in warp order.
    if (kMX) {  // the two scale blocks' lanes of each row of x
      acc_a += __shfl_xor_sync(0xFFFFFFFFu, acc_a, 1);
      acc_b += __shfl_xor_sync(0xFFFFFFFFu, acc_b, 1);
    }
    partial[parity][warp][lane] = make_float2(acc_a, acc_b);
    if (!kGrouped)
      __syncthreads();
    else  // the group's warps only (groups may take different numbers of tiles)
      asm volatile("bar.sync %0, %1;" ::"r"(1 + group), "r"(wpt * 32) : "memory");
    const bool store = warp == w0 && cr.active && x_row < p.m && (!kMX || (t & 1) == 0);
    if (store) {
      rnorm =
          rms_factor<P>(p, ssq, w0, wpt, x_row);  // the group's sums of squares are in (the barrier above)
      acc_a = acc_b = 0.0f;
#pragma unroll
      for (int j = w0; j < w0 + wpt; ++j) {
        const float2 q = partial[parity][j][lane];
        acc_a += q.x;
        acc_b += q.y;
      }
    }
    if (kPair && store && cr.row0 + g < cr.tg.n) {
      // silu(gate) * up of row row0 + g, from the two products as the unpaired kernel stores them.
      const int64_t row = cr.row0 + g;
      float gv = acc_a * rnorm, uv = acc_b * rnorm;
      if (cr.tg.bias) gv += cr.tg.bias[row];
      if (p.t[1].bias) uv += p.t[1].bias[row];
      cr.tg.y[int64_t(x_row) * cr.tg.n + row] = silu_times(gv, uv);
    }
    if (!kPair && store) {
      float* y = cr.tg.y + int64_t(x_row) * cr.tg.n;
      const int64_t rows[2] = {cr.row0 + g, cr.row0 + g + 8};
      const float acc[2] = {acc_a, acc_b};
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        if (rows[i] >= cr.tg.n) continue;
        float v = acc[i] * rnorm;
        if (cr.tg.bias) v += cr.tg.bias[rows[i]];
        // kOverlap: the residual through L2 too (no griddepcontrol.wait here; the pair's wait saw it made).
        y[rows[i]] = p.accumulate ? (kOverlap ? __ldcg(y + rows[i]) : y[rows[i]]) + v : v;
      }
    }
    cr = rows_of<kPair>(p, tile + tile_step, g, t);
  }
}

// Warps per tile for W warps per block: all W, unless at least half of them would have no round of
// kU scale blocks (k <= 64 W). Then the largest power of two that has one each and splits k into whole
// rounds, where there is one, so that W / wpt tiles run side by side. H200, DeepSeek's k = 512 (M = 1):
// 17.1 -> 11.9 us; not where fewer than half idle: k = 1536 with 2 warps of 3 rounds was no faster at
// M = 1 and 1.6x slower at M = 4 (e34.sh). The groups' staged x must fit.
int warps_per_tile(int W, int P, int64_t k) {
  const int kblocks = int(k / 128);
  if (2 * kblocks > W * kU) return W;
  int wpt = 1;
  while (2 * wpt * kU <= kblocks) wpt *= 2;
  while (wpt > 1 && kblocks % (wpt * kU) != 0) wpt /= 2;
  while (wpt < W && size_t(W / wpt) * smem_bytes(P, k) > kMaxSmem) wpt *= 2;
  return wpt;
}

template <int P, int W, bool kPair, bool kGrouped, bool kMX, bool kOverlap = false>
void launch_kernel(const MmaParams& p, int tiles, cudaStream_t s) {
  constexpr auto kernel = gemv_fp8_mma_kernel<P, W, kPair, kGrouped, kMX, kOverlap>;
  const int groups = W / p.wpt;
  const size_t smem = size_t(groups) * smem_bytes(P, p.k);
  const unsigned grid =
      grid_for<kernel>(W * 32, smem, kMaxSmem, (tiles + groups - 1) / groups, "matmul (fp8 mma gemv)");
  launch_smem("matmul (fp8 mma gemv)", kernel, dim3(grid), dim3(W * 32), smem, s, p, tiles);
}

// kMX (MXFP8 weights) has no grouped variant: the groups are for k <= 512, which no MXFP8 model this
// serves has, and each variant is one more kernel to compile.
template <int P, int W, bool kPair, bool kMX, bool kOverlap = false>
void launch_variant(MmaParams p, int tiles, cudaStream_t s) {
  p.wpt = warps_per_tile(W, P, p.k);
  if constexpr (W == kWarps && !kMX) {  // 16-warp blocks are for k >= 7168 only: never grouped
    if (p.wpt < W) return launch_kernel<P, W, kPair, true, false, kOverlap>(p, tiles, s);
  }
  p.wpt = W;
  launch_kernel<P, W, kPair, false, kMX, kOverlap>(p, tiles, s);
}

// MX8_MMA_GEMV_W16MIN=<k> (A/B runs): one row of x with k >= this (default 7168, 0 = never) runs one
// block of 16 warps per SM instead of two of 8, so half as many blocks stage x (docs/CUDA_BACKEND.md).
int w16_min_k() {
  static const int v = [] {
    const char* e = std::getenv("MX8_MMA_GEMV_W16MIN");
    if (!e || !*e) return 7168;
    char* end = nullptr;
    const long n = std::strtol(e, &end, 10);
    if (*end != '\0' || n < 0 || n > (1L << 30))
      throw Error(std::string("MX8_MMA_GEMV_W16MIN=") + e + ": not a width k (0 = never)");
    return int(n);
  }();
  return v;
}

}  // namespace

int gemv_fp8_mma_rows(const MatmulInput& in, const MatmulTarget* targets, int count) {
  if (count < 1 || count > kMaxGemvTargets || in.m < 1 || !in.x || !aligned16(in.x) ||
      (in.x_up && !aligned16(in.x_up)) || (in.norm && in.x_up))
    return 0;
  const WeightView& w0 = targets[0].w;
  const int64_t k = w0.k;
  // MXFP8 (UE8M0 scales) up to 4 rows of x, in passes of up to 2 (mx_block): beyond, the SIMT kernel's
  // passes of 8 rows read the weights fewer times (the skinny GEMM takes fp8_block only).
  const bool mx = w0.format == WeightFormat::mxfp8 && w0.scale_type == ScaleType::ue8m0 && in.m <= 4;
  if ((w0.format != WeightFormat::fp8_block && !mx) || k <= 0 || k % 128 != 0) return 0;
  for (int i = 0; i < count; ++i) {
    const WeightView& w = targets[i].w;
    if (w.format != w0.format || w.scale_type != w0.scale_type || w.k != k || w.n <= 0 ||
        w.n > (int64_t(1) << 30) || !aligned16(w.data) || !w.scales || !targets[i].y)
      return 0;
  }
  for (int P : {4, 2, 1}) {
    if (smem_bytes(P, k) <= kMaxSmem && (!mx || P <= 2)) return P;  // MXFP8: 2 rows at most (mx_block)
  }
  return 0;
}

namespace {

// The kernel parameters of rows [r0, r0 + m) of the group (kPair: the gate/up pair, 8-row tiles of
// both) and their number of tiles.
MmaParams params_of(const MatmulInput& in, const MatmulTarget* targets, int count, int64_t r0, int m,
                    bool pair, int64_t& tiles) {
  const int capacity = gemv_fp8_mma_rows(in, targets, count);
  if (capacity == 0 || m < 1 || m > capacity)
    throw Error("cuda backend: fp8 mma gemv: " + std::to_string(m) +
                " rows of x do not meet gemv_fp8_mma_rows");
  const int64_t k = targets[0].w.k;
  MmaParams p{};
  tiles = 0;
  for (int i = 0; i < count; ++i) {
    const MatmulTarget& t = targets[i];
    p.t[i] = GemvTarget{
        static_cast<const uint8_t*>(t.w.data), t.w.scales, t.y + r0 * t.w.n, t.bias, t.w.n, int(tiles)};
    tiles += pair ? 0 : (t.w.n + 15) / 16;
  }
  if (pair) tiles = (targets[0].w.n + 7) / 8;  // 8 rows of both weights per tile
  for (int i = count; i < kMaxGemvTargets; ++i) p.t[i] = p.t[0];
  p.count = count;
  p.k = k;
  p.kblocks = int(k / 128);
  p.x = in.x + r0 * k;
  p.x_up = in.x_up ? in.x_up + r0 * k : nullptr;
  p.norm = in.norm;
  p.norm_eps = in.norm_eps;
  p.m = m;
  p.accumulate = in.accumulate;
  p.scale_f32 = targets[0].w.scale_type == ScaleType::f32;
  return p;
}

// Launches rows [r0, r0 + m) of the group; kPair with `overlapped`: the pair of the overlapped FFN
// (swiglu_ffn).
template <bool kPair, bool kMX>
void launch_rows(const MatmulInput& in, const MatmulTarget* targets, int count, int64_t r0, int m,
                 cudaStream_t s, bool overlapped = false) {
  int64_t tiles = 0;
  const MmaParams p = params_of(in, targets, count, r0, m, kPair, tiles);
  const int64_t k = p.k;
  const int P = m == 1 ? 1 : m == 2 ? 2 : 4;  // rows of x staged: fewer planes, more blocks per SM
  switch (P) {
    case 4:
      if constexpr (kMX)
        throw Error("cuda backend: fp8 mma gemv: MXFP8 takes 2 rows of x at a time");
      else
        return launch_variant<4, kWarps, kPair, kMX>(p, int(tiles), s);
    case 2:
      // At k >= w16_min_k two rows of x take over half the shared memory (k = 14336: 115 KB), so one
      // 8-warp block per SM would stream alone: 16 warps keep the single-row kernel's bytes in flight.
      if (w16_min_k() > 0 && k >= w16_min_k()) return launch_variant<2, 16, kPair, kMX>(p, int(tiles), s);
      return launch_variant<2, kWarps, kPair, kMX>(p, int(tiles), s);
    default:
      // The same split for the pair as for the group: its products must be the group's bit for bit.
      if constexpr (kPair && !kMX) {
        // Overlapped with the 8-warp pair only (gemv_fp8_mma_ffn_applies): the 16-warp one spilled.
        if (overlapped) return launch_variant<1, kWarps, true, false, true>(p, int(tiles), s);
      }
      if (w16_min_k() > 0 && k >= w16_min_k()) return launch_variant<1, 16, kPair, kMX>(p, int(tiles), s);
      return launch_variant<1, kWarps, kPair, kMX>(p, int(tiles), s);
  }
}

}  // namespace

void launch_gemv_fp8_mma(const MatmulInput& in, const MatmulTarget* targets, int count, int64_t r0, int m,
                         cudaStream_t s) {
  if (targets[0].w.format == WeightFormat::mxfp8)
    launch_rows<false, true>(in, targets, count, r0, m, s);
  else
    launch_rows<false, false>(in, targets, count, r0, m, s);
}

bool gemv_fp8_mma_swiglu_applies(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up) {
  // FP8 block or MXFP8 weights, both of one format (gemv_fp8_mma_rows checks it).
  const MatmulTarget t[2] = {gate, up};
  return !in.x_up && !in.accumulate && gate.w.n == up.w.n && gemv_fp8_mma_rows(in, t, 2) > 0;
}

void launch_gemv_fp8_mma_swiglu(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                                cudaStream_t s) {
  if (!gemv_fp8_mma_swiglu_applies(in, gate, up))
    throw Error("cuda backend: fp8 mma gemv: the gate/up pair does not meet gemv_fp8_mma_swiglu_applies");
  const MatmulTarget t[2] = {gate, up};
  const int rows = gemv_fp8_mma_rows(in, t, 2);
  const bool mx = gate.w.format == WeightFormat::mxfp8;
  for (int64_t r0 = 0; r0 < in.m; r0 += rows) {
    const int m = int(std::min<int64_t>(rows, in.m - r0));
    mx ? launch_rows<true, true>(in, t, 2, r0, m, s) : launch_rows<true, false>(in, t, 2, r0, m, s);
  }
}

bool gemv_fp8_mma_ffn_applies(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                              const MatmulTarget& down) {
  // One row of x; the 8-warp pair (gate k below w16_min_k: the 16-warp one spilled with it) and
  // the 16-warp down kernel (its k, the pair's n, from w16_min_k on); FP8 block weights (the MXFP8
  // down kernel spilled 24 bytes with the overlap and decoded no faster with it: H200, decode MXFP8
  // 366.4 / 368.6 tok/s against 365.1 / 366.3 with MX8_CUDA_FFN_OVERLAP=0, .carry/lead/r2.sh).
  const MatmulInput h{gate.y, nullptr, 1, true};
  return in.m == 1 && gemv_fp8_mma_swiglu_applies(in, gate, up) && w16_min_k() > 0 &&
         gate.w.k < w16_min_k() && down.w.k == gate.w.n && down.w.k >= w16_min_k() &&
         gate.w.format == WeightFormat::fp8_block && down.w.format == WeightFormat::fp8_block && down.y &&
         gemv_fp8_mma_rows(h, &down, 1) > 0;
}

void launch_gemv_fp8_mma_ffn(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                             const MatmulTarget& down, bool accumulate, cudaStream_t s) {
  if (!gemv_fp8_mma_ffn_applies(in, gate, up, down))
    throw Error("cuda backend: fp8 mma gemv: the FFN does not meet gemv_fp8_mma_ffn_applies");
  launch_gemv_fp8_mma_ffn_pair(in, gate, up, s);
  launch_gemv_fp8_mma_ffn_down(gate.y, down, accumulate, s);
}

void launch_gemv_fp8_mma_ffn_pair(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                                  cudaStream_t s) {
  const MatmulTarget pair[2] = {gate, up};
  launch_rows<true, false>(in, pair, 2, 0, 1, s, true);
}

void launch_gemv_fp8_mma_ffn_down(const float* h, const MatmulTarget& down, bool accumulate, cudaStream_t s) {
  const MatmulInput in{h, nullptr, 1, accumulate};
  int64_t tiles = 0;
  const MmaParams p = params_of(in, &down, 1, 0, 1, false, tiles);
  launch_variant<1, 16, false, false, true>(p, int(tiles), s);
}

}  // namespace mx8::backend::cuda_impl
