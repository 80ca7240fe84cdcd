// The linear FP8 GEMV (gemv_fp8_linear.cuh): 1..4 rows of E4M3 activations times fp8_block weights on
// mma.sync m16n8k32 (E4M3 inputs, f32 accumulation), each warp load 512 contiguous bytes of a row.
//
// Why: the other FP8 GEMVs read their weights in tiles, 8..64 rows at a time with 64 or 128 bytes of
// each; on the H200 a weight stream read that way runs 5-30% slower than the same bytes read in
// order, loads alone, whatever feeds them (registers or TMA; thirty-ninth session, docs/CUDA.md).
//
// The diagonal trick. A unit of work is a pair of weight rows (2q, 2q + 1) times a 512-byte segment
// of k; lane L = 4g + t loads 16 bytes at 16 L of each row, so a warp load is 512 contiguous bytes.
// mma.m16n8k32 (PTX ISA, 8-bit fragments) gives lane (g, t) A rows g and g + 8 at k slots 4t..4t+3
// (a0, a1) and 16+4t..16+4t+3 (a2, a3), B column g at the same slots, and D rows g, g + 8 at columns
// 2t, 2t + 1. With a0/a2 = bytes 0-7 of the lane's 16 of row 2q (a second mma takes bytes 8-15),
// a1/a3 = the same of row 2q + 1, and b0/b1 = the activations at the same k, A row g is the 64-byte
// sub-segment g of row 2q and B column g the activations' sub-segment g: D[g][g] is the dot product
// of sub-segment g (D[g][j], j != g, pairs one sub-segment of weights with another of activations and
// is dropped), and D[g + 8][g] the same of row 2q + 1. The diagonal sits on lane (g, g / 2), element
// g % 2 (row 2q) and 2 + g % 2 (row 2q + 1). A sub-segment lies inside one 128-wide scale block, so
// each diagonal element is promoted with its own block's scales (every 64 of k, within the GEMM's
// every 128). The tensor cores do 8x the useful work, which at one to four rows is still far below
// their rate. (On sm_90 the E4M3 mma.sync is itself run as F2FP decodes of both operands into f16 and
// m16n8k16 HMMA; decoding the weights once here for several rows was slower, docs/CUDA.md.)
//
// Work split: two blocks per SM with equal numbers of row pairs; the block's 8 warps take contiguous
// ranges of its (pair, segment) units, so the block reads its rows in order and each warp's loads stay
// D units ahead. Each warp leaves its sums of the pairs its range touches in shared memory; after a
// barrier the block adds each pair's sums in warp order and stores them (deterministic). Weights are
// loaded before griddepcontrol.wait (kernels never write them), activations after.
#include "backend/cuda/gemv_fp8_linear.cuh"

#include <algorithm>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/gemv_fp8_common.cuh"
#include "backend/cuda/gemv_target.cuh"
#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kWarps = 8;
constexpr int kSeg = 512;  // bytes of a row per warp load: 32 lanes x 16

struct LinearParams {
  GemvTarget t[kMaxGemvTargets];  // tile_begin: the target's first row pair
  int count;
  int64_t k;
  int kblocks;     // k / 128
  int segs;        // ceil(k / 512)
  int tail_lanes;  // lanes with bytes in the last segment (32 where k % 512 == 0)
  int pairs;       // row pairs of all targets
  int per_block;   // row pairs per block (the last block may have fewer)
  int warp_pairs;  // most pairs one warp's range touches: the rows of `part` per warp
  const uint8_t* a;
  const void* sa;
  int ld;
  int m;
  bool accumulate;
};

// One unit's operands as a lane holds them: 16 bytes of each of the two rows, the activations at the
// same k for each row of activations, and the scale bits of the lane's sub-segment's block.
template <int P>
struct Unit {
  uint4 wa, wb;
  uint4 x[P];
  uint32_t ws;
  uint32_t xs[P];
};

// Where a warp loads next: unit (pair q, segment seg) and its pair's rows and scale row. Found again
// only when the pair changes (target_of on every unit made the loop slower; H200, thirty-ninth session).
struct Cursor {
  int q, seg;
  const uint8_t* ra;  // row 2q of its target
  const uint8_t* rb;  // row 2q + 1 (row n - 1 where 2q + 1 = n: read, never stored)
  const void* scales;
  int64_t srow;  // first scale of row 2q's 128-row block
};

__device__ __forceinline__ void set_pair(const LinearParams& p, int q, Cursor& c) {
  const GemvTarget tg = target_of(p, q);
  const int64_t ra = int64_t(q - tg.tile_begin) * 2, rb = min(ra + 1, tg.n - 1);
  c.q = q;
  c.ra = tg.w + ra * p.k;
  c.rb = tg.w + rb * p.k;
  c.scales = tg.scales;
  c.srow = (ra >> 7) * p.kblocks;
}
__device__ __forceinline__ void advance(const LinearParams& p, Cursor& c) {
  if (++c.seg == p.segs) {
    c.seg = 0;
    set_pair(p, c.q + 1, c);
  }
}

// Scales as their bits (f32, or the UE8M0 byte) and as values; the type is a template choice so that the
// loop holds no branch on it.
template <bool F32>
__device__ __forceinline__ uint32_t scale_bits(const void* s, int64_t i) {
  if constexpr (F32) return __float_as_uint(__ldg(static_cast<const float*>(s) + i));
  return uint32_t(__ldg(static_cast<const uint8_t*>(s) + i));
}
template <bool F32>
__device__ __forceinline__ float scale_value(uint32_t bits) {
  if constexpr (F32) return __uint_as_float(bits);
  return format::ue8m0_to_f32(uint8_t(bits));
}

// 16 bytes read once (not kept in L1) where `pred`, else zeros, as one predicated load: a load under a
// branch or a select of its result (a wait for it) keeps the stream's loads from issuing together
// (H200, 7168 x 16384, the select: 50 against 38 us).
__device__ __forceinline__ uint4 load_stream_if(const uint8_t* ptr, bool pred) {
  uint4 r;
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %5, 0;\nmov.b32 %0, 0;\nmov.b32 %1, 0;\nmov.b32 %2, 0;\nmov.b32 %3, "
      "0;\n"
      "@p ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n}"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(ptr), "r"(int(pred)));
  return r;
}

// What a lane adds to every unit's addresses: its 16 bytes of a segment, and its sub-segment's k block
// within the segment (g / 2).
struct Lane {
  int byte;   // 16 lane
  int block;  // lane / 8
  int id;
};

// The weights (and their scale) of the cursor's unit: weights are never written by kernels, so this may
// run before griddepcontrol.wait. Lanes past k (the last segment of a k that is not whole segments) load
// zeros, and their scale from the last block (a real one of the row: no Inf or NaN that a zero weight
// would not already meet there).
template <int P, bool F32>
__device__ __forceinline__ void load_weights(const LinearParams& p, const Cursor& c, const Lane& l,
                                             Unit<P>& u) {
  const bool has = c.seg + 1 < p.segs || l.id < p.tail_lanes;
  const int off = c.seg * kSeg + l.byte;
  u.wa = load_stream_if(c.ra + off, has);
  u.wb = load_stream_if(c.rb + off, has);
  u.ws = scale_bits<F32>(c.scales, c.srow + min(c.seg * 4 + l.block, p.kblocks - 1));
}

// The activations at the unit's k, every row of P: rows past m repeat row m - 1 (multiplied, never
// stored), and lanes past k read the segment's first bytes against their zero weights. No load here is
// conditional: a row test around the multiply or the loads made the loop 25-35% slower (H200,
// thirty-ninth session).
template <int P, bool F32>
__device__ __forceinline__ void load_acts(const LinearParams& p, int seg, const Lane& l, Unit<P>& u) {
  const bool has = seg + 1 < p.segs || l.id < p.tail_lanes;
  const int byte = seg * kSeg + (has ? l.byte : 0);
  const int64_t blk = min(seg * 4 + l.block, p.kblocks - 1);
#pragma unroll
  for (int r = 0; r < P; ++r) {
    const int row = min(r, p.m - 1);
    u.x[r] = __ldg(reinterpret_cast<const uint4*>(p.a + int64_t(row) * p.k + byte));
    u.xs[r] = scale_bits<F32>(p.sa, blk * p.ld + row);
  }
}

// The units [u0, u1) of warp w among a block's `units` (contiguous, in order).
__device__ __forceinline__ int2 warp_range(int w, int units) {
  return make_int2(int(int64_t(w) * units / kWarps), int(int64_t(w + 1) * units / kWarps));
}

// Dynamic shared memory: each warp's sums of the pairs its range touches, [warp][pair][row of a][2].
template <int P, int D, bool F32>
__global__ void __launch_bounds__(kWarps * 32, 2) gemv_fp8_linear_kernel(LinearParams p) {
  pdl_trigger();
  extern __shared__ float2 part[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int q0 = int(blockIdx.x) * p.per_block, q1 = min(q0 + p.per_block, p.pairs);
  const int units = (q1 - q0) * p.segs;
  const int2 range = warp_range(warp, units);
  const int first_q = range.x / p.segs;  // block-relative
  const Lane ln{lane * 16, lane >> 3, lane};

  Unit<P> buf[D];
  Cursor lc;  // the next unit to load
  set_pair(p, q0 + first_q, lc);
  lc.seg = range.x - first_q * p.segs;
#pragma unroll
  for (int i = 0; i < D; ++i)
    if (range.x + i < range.y) {
      load_weights<P, F32>(p, lc, ln, buf[i]);
      advance(p, lc);
    }
  pdl_wait();
  {
    int seg = range.x - first_q * p.segs;
#pragma unroll
    for (int i = 0; i < D; ++i)
      if (range.x + i < range.y) {
        load_acts<P, F32>(p, seg, ln, buf[i]);
        if (++seg == p.segs) seg = 0;
      }
  }

  const bool diag = t == g / 2, odd = g & 1;
  float acc_a[P], acc_b[P];
#pragma unroll
  for (int r = 0; r < P; ++r) acc_a[r] = acc_b[r] = 0.0f;
  int cq = first_q, cseg = range.x - first_q * p.segs;  // the unit being multiplied
  float2* mine = part + size_t(warp) * p.warp_pairs * P;
  // The warp's sums of pair cq: the diagonal lanes' values added over the warp.
  auto end_pair = [&] {
#pragma unroll
    for (int r = 0; r < P; ++r) {
      float a = diag ? acc_a[r] : 0.0f, b = diag ? acc_b[r] : 0.0f;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1)
        a += __shfl_xor_sync(0xffffffffu, a, o), b += __shfl_xor_sync(0xffffffffu, b, o);
      if (lane == 0) mine[(cq - first_q) * P + r] = make_float2(a, b);
      acc_a[r] = acc_b[r] = 0.0f;
    }
  };

  for (int base = range.x; base < range.y; base += D) {
#pragma unroll
    for (int i = 0; i < D; ++i) {
      const int u = base + i;
      if (u >= range.y) break;
      Unit<P>& v = buf[i];
      const float sw = scale_value<F32>(v.ws);
#pragma unroll
      for (int r = 0; r < P; ++r) {
        float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_e4m3(d, v.wa.x, v.wb.x, v.wa.y, v.wb.y, v.x[r].x, v.x[r].y);
        mma_e4m3(d, v.wa.z, v.wb.z, v.wa.w, v.wb.w, v.x[r].z, v.x[r].w);
        const float f = sw * scale_value<F32>(v.xs[r]);
        acc_a[r] = fmaf(odd ? d[1] : d[0], f, acc_a[r]);
        acc_b[r] = fmaf(odd ? d[3] : d[2], f, acc_b[r]);
      }
      if (u + D < range.y) {
        load_weights<P, F32>(p, lc, ln, v);
        load_acts<P, F32>(p, lc.seg, ln, v);
        advance(p, lc);
      }
      if (++cseg == p.segs) {
        end_pair();
        cseg = 0, ++cq;
      }
    }
  }
  if (cseg != 0) end_pair();  // the range ends inside pair cq

  // Each pair's sum over the warps whose ranges touch it, in warp order; then the stores.
  __syncthreads();
  for (int i = threadIdx.x; i < (q1 - q0) * P; i += kWarps * 32) {
    const int q = i / P, r = i - q * P;
    if (r >= p.m) continue;
    float2 s = make_float2(0.0f, 0.0f);
    for (int w = 0; w < kWarps; ++w) {
      const int2 rw = warp_range(w, units);
      if (rw.x >= rw.y || rw.y <= q * p.segs || rw.x >= (q + 1) * p.segs) continue;
      const float2 v = part[(size_t(w) * p.warp_pairs + (q - rw.x / p.segs)) * P + r];
      s.x += v.x, s.y += v.y;
    }
    const GemvTarget tg = target_of(p, q0 + q);
    const int64_t row = int64_t(q0 + q - tg.tile_begin) * 2;
    float* out = tg.y + int64_t(r) * tg.n + row;
    // y = product + bias, or y + (product + bias) (the GEMV's order); row + 1 = n is not stored.
    const float v0 = s.x + (tg.bias ? tg.bias[row] : 0.0f);
    out[0] = p.accumulate ? out[0] + v0 : v0;
    if (row + 1 < tg.n) {
      const float v1 = s.y + (tg.bias ? tg.bias[row + 1] : 0.0f);
      out[1] = p.accumulate ? out[1] + v1 : v1;
    }
  }
}

constexpr size_t kMaxSmem = size_t(96) << 10;  // two blocks per SM

// A launch: blocks (two per SM) with equal numbers of row pairs, and the shared memory of their sums;
// more blocks where the sums of that many pairs would not fit (over ~1.5 million rows on 132 SMs).
struct Plan {
  unsigned grid;
  int per_block, warp_pairs;
  size_t smem;
};
Plan plan_of(int pairs, int segs, int P) {
  Plan pl;
  const int most = 2 * mx8::cuda::num_sms();
  // warp_pairs below is at most per_block / kWarps + 3.
  const int cap = kWarps * (int(kMaxSmem / (kWarps * P * sizeof(float2))) - 3);
  pl.per_block = std::min((pairs + most - 1) / most, cap);
  pl.grid = unsigned((pairs + pl.per_block - 1) / pl.per_block);
  // A range of ceil(units / kWarps) units that starts inside a pair touches at most this many pairs.
  const int64_t upw = (int64_t(pl.per_block) * segs + kWarps - 1) / kWarps;
  pl.warp_pairs = int((upw + segs - 1) / segs + 1);
  pl.smem = size_t(kWarps) * size_t(pl.warp_pairs) * size_t(P) * sizeof(float2);
  return pl;
}

int rows_template(int64_t m) {
  return m <= 2 ? int(m) : 4;
}

template <int P, int D, bool F32>
void launch_rows(const LinearParams& p0, cudaStream_t s) {
  constexpr auto kernel = gemv_fp8_linear_kernel<P, D, F32>;
  const char* op = "matmul (linear fp8 gemv)";
  static const cudaError_t configured =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxSmem));
  check(configured, op);
  LinearParams p = p0;
  const Plan pl = plan_of(p.pairs, p.segs, P);
  p.per_block = pl.per_block;
  p.warp_pairs = pl.warp_pairs;
  launch_smem(op, kernel, dim3(pl.grid), dim3(kWarps * 32), pl.smem, s, p);
}

}  // namespace

bool gemv_fp8_linear_applies(const MatmulTarget* targets, int count, int64_t m) {
  if (count < 1 || count > kMaxGemvTargets || m < 1 || m > kLinearMaxRows) return false;
  const WeightView& w0 = targets[0].w;
  if (w0.format != WeightFormat::fp8_block || w0.k <= 0 || w0.k % 128 != 0 || w0.k > (int64_t(1) << 30))
    return false;
  int64_t pairs = 0;
  for (int i = 0; i < count; ++i) {
    const WeightView& w = targets[i].w;
    if (w.format != w0.format || w.scale_type != w0.scale_type || w.k != w0.k || w.n <= 0 ||
        !aligned16(w.data) || !w.scales || !targets[i].y)
      return false;
    pairs += (w.n + 1) / 2;
  }
  // Pair and unit indices stay in int.
  return pairs * ((w0.k + kSeg - 1) / kSeg) < (int64_t(1) << 31);
}

void launch_gemv_fp8_linear(const MatmulTarget* targets, int count, const uint8_t* a, const void* a_scales,
                            int ld, int64_t m, bool accumulate, cudaStream_t s) {
  if (!gemv_fp8_linear_applies(targets, count, m))
    throw Error("cuda backend: gemv_fp8_linear called for a group it does not take");
  if (!a || !aligned16(a) || !a_scales || ld < m)
    throw Error("cuda backend: gemv_fp8_linear: activations must be 16-byte aligned with ld >= m");
  LinearParams p{};
  int pairs = 0;
  for (int i = 0; i < count; ++i) {
    const MatmulTarget& t = targets[i];
    p.t[i] = GemvTarget{static_cast<const uint8_t*>(t.w.data), t.w.scales, t.y, t.bias, t.w.n, pairs};
    pairs += int((t.w.n + 1) / 2);
  }
  p.count = count;
  p.k = targets[0].w.k;
  p.kblocks = int(p.k / 128);
  p.segs = int((p.k + kSeg - 1) / kSeg);
  p.tail_lanes = int((p.k - int64_t(p.segs - 1) * kSeg) / 16);
  p.pairs = pairs;
  p.a = a;
  p.sa = a_scales;
  p.ld = ld;
  p.m = int(m);
  p.accumulate = accumulate;
  const bool f32 = targets[0].w.scale_type == ScaleType::f32;
  switch (rows_template(m)) {
    case 1:
      return f32 ? launch_rows<1, 4, true>(p, s) : launch_rows<1, 4, false>(p, s);
    case 2:
      return f32 ? launch_rows<2, 4, true>(p, s) : launch_rows<2, 4, false>(p, s);
    default:
      return f32 ? launch_rows<4, 2, true>(p, s) : launch_rows<4, 2, false>(p, s);
  }
}

}  // namespace mx8::backend::cuda_impl
