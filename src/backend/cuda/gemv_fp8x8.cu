// The FP8 x FP8 GEMV (gemv_fp8x8.cuh): 1..16 rows of E4M3 activations times fp8_block or MXFP8
// weights on mma.sync m16n8k32 (E4M3 inputs, f32 accumulation).
//
// Why: batched decode with MXFP8 weights. The wgmma MXFP8 GEMM promotes its accumulators every 32 of
// k, a latency chain that a few rows of activations cannot hide (Llama-3-8B batch 8 decoded at 0.67x
// the BF16 path). This kernel is the one-row GEMV's weight stream (gemv_fp8_mma.cu: 16-row tiles, the
// block's warps splitting k, each warp loading the next round of weights while it multiplies the
// current one, the first round before griddepcontrol.wait) with the activations already E4M3, as the
// GEMMs take them: the 8 columns of n8 are 8 rows of activations, and no weight is converted (the
// one-row GEMV decodes two per cvt and splits x into f16 hi and lo parts). With fp8_block weights it
// is no faster than the wgmma FP8 GEMM, which the runtime keeps for them (docs/CUDA_BACKEND.md).
//
// Fragments (PTX ISA, mma.m16n8k32, 8-bit inputs): lane = 4 g + t holds A rows g and g + 8 at k slots
// 4t .. 4t + 3 (registers a0, a1) and 16 + 4t .. 16 + 4t + 3 (a2, a3), B column g at the same slots,
// and D rows g, g + 8 at columns 2t, 2t + 1. Which k a slot stands for is free as long as A and B
// agree: with fp8_block weights a lane loads 16 consecutive bytes of each of its two weight rows per
// 64-wide chunk, and the chunk's two mma take bytes 0-7 and 8-15, with the same 16 bytes of activation
// row g as B; with MXFP8 weights, whose every mma must stay in one 32-wide scale block, 8 bytes of each
// block (k = 8t .. 8t + 7), one mma per block. Up to 16 rows: each weight fragment goes to two mma,
// rows 0-7 and 8-15 of the activations.
//
// Promotion: fp8_block, the four mma of a 128-wide block sum into f32 registers, which are added into
// the accumulator times the weight block's scale and the activation row's scale once per 128 of k, as
// the GEMM does (DeepSeek-V3's recipe); MXFP8, every 32 of k (mx_block). The activations of the block's rows
// are staged in shared memory by the warps that multiply them (each warp its own blocks of k, so no warp
// waits for another's loads).
#include "backend/cuda/gemv_fp8x8.cuh"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/gemv_fp8_common.cuh"
#include "backend/cuda/gemv_target.cuh"
#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

// Scale blocks (128 of k) per warp per round: 2 for fp8_block, or 1 where a weight fragment feeds two
// groups of 8 activation rows (kNG = 2: the accumulators and activation loads double, the round's
// weights halve to stay within 128 registers) and for MXFP8, whose per-32 promotion needs the
// registers: with 2 it spilled 72-120 bytes and decoded 10-14% slower (H200, Llama-3-8B, batch 3..8).
template <int kNG, bool kMX>
constexpr int kU = kNG == 2 || kMX ? 1 : 2;
// Bytes after each staged row of activations, so that a warp's B loads take the fewest wavefronts:
// fp8_block, lanes read 16 bytes at 16 t of rows g (a quarter warp: rows g, g + 1), which a stride of
// 64 mod 128 bytes puts on different banks; MXFP8, 8 bytes at 8 t (32 bytes per row, 8 rows), which a
// stride of 32 mod 128 spreads over all banks, two rows each.
template <bool kMX>
constexpr int kRowPad = kMX ? 32 : 64;
constexpr size_t kSmemPerBlock = size_t(227) << 10;  // a block's, static and dynamic (sm_90)

struct Fp8x8Params {
  GemvTarget t[kMaxGemvTargets];
  int count;
  int64_t k;         // this launch's part of k (weights, activations and their scales start there)
  int kblocks;       // k / 128
  int64_t row_k;     // the whole k: the distance between rows of the weights and of the activations
  int row_kblocks;   // row_k / 128: between rows of the weights' scales
  const uint8_t* a;  // [m][k] E4M3
  const void* sa;    // [kblocks][ld]: UE8M0 bytes, or f32 with scale_f32
  int ld;
  int m;
  bool accumulate;
  bool scale_f32;  // weights' and activations' scales (fp8_block only)
};

__device__ __forceinline__ uint32_t load_scale_bits(bool f32, const void* s, int64_t i) {
  return f32 ? __float_as_uint(__ldg(static_cast<const float*>(s) + i))
             : uint32_t(__ldg(static_cast<const uint8_t*>(s) + i));
}
__device__ __forceinline__ float scale_of(bool f32, uint32_t bits) {
  return f32 ? __uint_as_float(bits) : format::ue8m0_to_f32(uint8_t(bits));
}

// The 16 rows of a tile as a lane sees them in its loads: rows row0 + g (wa) and row0 + g + 8 (wb) at
// its bytes of a 64-wide chunk (16 at 16t; MXFP8 8 at 8t of each 32-wide block), rows past n read
// (clamped to the last row) and never stored, and their scales. Only what the loads need: the target's
// outputs are found again at the store (each register held across the loop is one of 128).
struct Rows {
  const uint8_t* wa;
  const void* sa;  // fp8_block: the tile's 128-row block's scales (+ kb); kMX: row wa's 4-byte words (+ kb)
  int drow;        // row wb - row wa: 8, or less where row0 + g + 8 is past n
  bool active;     // row0 < n
  __device__ const uint8_t* wb(int64_t row_k) const { return wa + drow * row_k; }
  __device__ const uint32_t* sb(int row_kblocks) const {
    return static_cast<const uint32_t*>(sa) + drow * row_kblocks;
  }
};
template <bool kMX>
__device__ __forceinline__ Rows rows_of(const Fp8x8Params& p, int tile, int g, int t) {
  const GemvTarget tg = target_of(p, tile);
  const int64_t row0 = int64_t(tile - tg.tile_begin) * 16;
  const int64_t ra = min(row0 + g, tg.n - 1), rb = min(row0 + g + 8, tg.n - 1);
  Rows r;
  r.active = row0 < tg.n;
  r.drow = int(rb - ra);
  r.wa = tg.w + ra * p.row_k + t * (kMX ? 8 : 16);
  if (kMX) {
    r.sa = static_cast<const uint32_t*>(tg.scales) + ra * p.row_kblocks;
  } else {
    const int64_t first = (row0 >> 7) * int64_t(p.row_kblocks);  // a tile's rows share one 128-row block
    r.sa = p.scale_f32 ? static_cast<const void*>(static_cast<const float*>(tg.scales) + first)
                       : static_cast<const void*>(static_cast<const uint8_t*>(tg.scales) + first);
  }
  return r;
}

// A warp's round: kU scale blocks of its two rows, and their weight scales (bits, decoded where used:
// decoding at the load would wait for it).
template <int U>
struct Round {
  uint4 w[U][4];
  uint32_t scale[U];    // fp8_block: the tile's block scale; kMX: row wa's four 1x32 scales
  uint32_t scale_b[U];  // kMX: row wb's four
};
template <bool kMX, int U>
__device__ __forceinline__ void load_round(const Fp8x8Params& p, const Rows& r, int base, Round<U>& v) {
#pragma unroll
  for (int j = 0; j < U; ++j)
    if (base + j < p.kblocks) {
      const int64_t off = int64_t(base + j) * 128;
      const uint8_t* wb = r.wb(p.row_k);
      if (kMX) {  // chunk c: 8 bytes of its first 32-wide block (x, y), 8 of its second (z, w)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          v.w[j][c] = join(load_stream8(r.wa + off + 64 * c), load_stream8(r.wa + off + 64 * c + 32));
          v.w[j][2 + c] = join(load_stream8(wb + off + 64 * c), load_stream8(wb + off + 64 * c + 32));
        }
        v.scale[j] = __ldg(static_cast<const uint32_t*>(r.sa) + base + j);
        v.scale_b[j] = __ldg(r.sb(p.row_kblocks) + base + j);
      } else {
        v.w[j][0] = load_stream(r.wa + off);
        v.w[j][1] = load_stream(r.wa + off + 64);
        v.w[j][2] = load_stream(wb + off);
        v.w[j][3] = load_stream(wb + off + 64);
        v.scale[j] = load_scale_bits(p.scale_f32, r.sa, base + j);
      }
    }
}

// Scales per activation row: one per 128 of k, or (kMX) one per 32.
template <bool kMX>
__host__ __device__ inline int64_t act_scales_per_row(int64_t k) {
  return kMX ? k / 32 : k / 128;
}
// Rows of each scale block's staged activation scales: 8 kNG, rows past m zero. Block-major, so that
// the lanes of a quarter warp, which read columns 2t and 2t + 1 of one block, read 8 consecutive
// floats (one float2 each, no bank conflicts; row-major rows k / 32 floats apart were 4-way).
__host__ __device__ constexpr int scale_rows(int64_t m) {
  return m > 8 ? 16 : 8;
}

// Stages the warp's blocks of k (first + i * stride + [0, U)) of the m activation rows into xs
// ([m][k + kRowPad] bytes) and their scales into xscale ([act_scales_per_row][8 kNG] floats): a
// round's loads first, then its stores, so that a warp waits for L2 once per round.
template <bool kMX, int U, int kNG>
__device__ __forceinline__ void stage_a(const Fp8x8Params& p, uint8_t* xs, float* xscale, int first,
                                        int stride, int lane) {
  // The scales a lane stages per block: row lane (1x128), or rows lane / 4 + 8 h's 32-wide block lane % 4.
  constexpr int kS = kMX ? kNG : 1, kSR = 8 * kNG;
  const int sq = kMX ? lane & 3 : 0;
  const int64_t row_bytes = p.k + kRowPad<kMX>;
  for (int base = first; base < p.kblocks; base += stride) {
    uint4 v[U][2 * kNG];  // U blocks x m rows x 8 chunks of 16 bytes, 2 kNG per lane (m <= 8 kNG)
    uint32_t s[U][kS];
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int kb = base + j;
#pragma unroll
      for (int h = 0; h < 2 * kNG; ++h) {
        const int i = lane + 32 * h, r = i >> 3, c = i & 7;
        v[j][h] =
            kb < p.kblocks && r < p.m
                ? *reinterpret_cast<const uint4*>(p.a + int64_t(r) * p.row_k + int64_t(kb) * 128 + c * 16)
                : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int h = 0; h < kS; ++h) {
        const int sr = kMX ? (lane >> 2) + 8 * h : lane;
        const int64_t si = kMX ? int64_t(kb * 4 + sq) * p.ld + sr : int64_t(kb) * p.ld + sr;
        s[j][h] = kb < p.kblocks && sr < p.m ? load_scale_bits(!kMX && p.scale_f32, p.sa, si) : 0u;
      }
    }
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int kb = base + j;
      if (kb >= p.kblocks) break;
#pragma unroll
      for (int h = 0; h < 2 * kNG; ++h) {
        const int i = lane + 32 * h, r = i >> 3, c = i & 7;
        if (r < p.m) *reinterpret_cast<uint4*>(xs + r * row_bytes + int64_t(kb) * 128 + c * 16) = v[j][h];
      }
#pragma unroll
      for (int h = 0; h < kS; ++h) {
        const int sr = kMX ? (lane >> 2) + 8 * h : lane;
        if (sr < kSR)
          xscale[(kMX ? kb * 4 + sq : kb) * kSR + sr] =
              sr < p.m ? scale_of(!kMX && p.scale_f32, s[j][h]) : 0.0f;
      }
    }
  }
  __syncwarp();  // the warp's lanes read each other's stores
}

// One 128-wide block of MXFP8 weights (scales every 32 of k, on both operands). Each 32-wide block is
// one mma: a lane holds 8 bytes of it per row (k = 8t .. 8t + 7 of the block, load_round), and B takes
// the same 8 bytes of its activation row. Each block's sum is promoted with its two weight rows' and
// two activation rows' scales.
template <int U, int kNG>
__device__ __forceinline__ void mx_block(const Round<U>& cur, int j, const uint8_t* xblk, int64_t group_bytes,
                                         int g, int m, const float* sx, int t, float (&acc)[kNG][4]) {
#pragma unroll
  for (int q = 0; q < 4; ++q) {  // the 32-wide block within the 128: chunk q / 2, half q % 2
    const int c = q >> 1;
    const uint4 wa = cur.w[j][c], wb = cur.w[j][2 + c];
    const uint32_t a0 = q & 1 ? wa.z : wa.x, a2 = q & 1 ? wa.w : wa.y;
    const uint32_t a1 = q & 1 ? wb.z : wb.x, a3 = q & 1 ? wb.w : wb.y;
    const float sa = format::ue8m0_to_f32(uint8_t(cur.scale[j] >> (8 * q)));
    const float sb = format::ue8m0_to_f32(uint8_t(cur.scale_b[j] >> (8 * q)));
#pragma unroll
    for (int ng = 0; ng < kNG; ++ng) {  // activation rows 8 ng .. 8 ng + 7
      const uint2 x = g + 8 * ng < m ? *reinterpret_cast<const uint2*>(xblk + ng * group_bytes + 32 * q)
                                     : make_uint2(0, 0);
      float d[4] = {};
      mma_e4m3(d, a0, a1, a2, a3, x.x, x.y);
      const float2 x01 = *reinterpret_cast<const float2*>(sx + q * (8 * kNG) + 2 * t + 8 * ng);
      acc[ng][0] = fmaf(d[0], sa * x01.x, acc[ng][0]);
      acc[ng][1] = fmaf(d[1], sa * x01.y, acc[ng][1]);
      acc[ng][2] = fmaf(d[2], sb * x01.x, acc[ng][2]);
      acc[ng][3] = fmaf(d[3], sb * x01.y, acc[ng][3]);
    }
  }
}

// A persistent grid: block b takes tiles b, b + gridDim.x, ...; warp w multiplies the tile's rows over
// the scale blocks w * U + [0, U), + W U, ..., and loads the next (tile, round) item's weights, also
// across the tile boundary, before it multiplies the current one. The warps' partial sums are added
// in warp order (deterministic). kNG groups of 8 activation rows (B's n8 columns) share each weight
// fragment.
template <int W, bool kMX, int kNG>
__global__ void __launch_bounds__(W * 32, 16 / W) gemv_fp8x8_kernel(Fp8x8Params p, int tiles) {
  constexpr int U = kU<kNG, kMX>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float4 partial[2][W][kNG][32];  // double-buffered by tile parity
  pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int first = warp * U, stride = W * U;
  const int tile_step = int(gridDim.x);

  int tile = int(blockIdx.x);
  Rows cr = rows_of<kMX>(p, tile, g, t);
  Round<U> cur;
  bool loaded = tile < tiles && cr.active && first < p.kblocks;
  if (loaded) load_round<kMX>(p, cr, first, cur);  // weights: never written by a kernel
  pdl_wait();

  const int64_t row_bytes = p.k + kRowPad<kMX>;
  uint8_t* xs = smem;
  float* xscale = reinterpret_cast<float*>(smem + p.m * row_bytes);
  stage_a<kMX, U, kNG>(p, xs, xscale, first, stride, lane);
  const uint8_t* xrow = xs + g * row_bytes + t * (kMX ? 8 : 16);  // B column g = activation row g (+ 8 ng)

  for (int parity = 0; tile < tiles; tile += tile_step, parity ^= 1) {
    if (!loaded && cr.active && first < p.kblocks) load_round<kMX>(p, cr, first, cur);
    // D of group ng: (row g, 2t), (row g, 2t + 1), (row g + 8, 2t), (row g + 8, 2t + 1), columns + 8 ng.
    float acc[kNG][4] = {};
    Rows nr = cr;
    loaded = false;
    for (int base = first; base < p.kblocks; base += stride) {
      const bool same_tile = base + stride < p.kblocks;
      const int ntile = same_tile ? tile : tile + tile_step;
      if (!same_tile) nr = rows_of<kMX>(p, ntile, g, t);
      Round<U> next;
      loaded = ntile < tiles && nr.active;
      if (loaded) load_round<kMX>(p, nr, same_tile ? base + stride : first, next);
      if (kMX && cr.active) {
#pragma unroll
        for (int j = 0; j < U; ++j) {
          const int kb = base + j;
          if (kb >= p.kblocks) break;
          mx_block<U, kNG>(cur, j, xrow + int64_t(kb) * 128, 8 * row_bytes, g, p.m,
                           xscale + kb * 4 * (8 * kNG), t, acc);
        }
      } else if (cr.active) {
#pragma unroll
        for (int j = 0; j < U; ++j) {
          const int kb = base + j;
          if (kb >= p.kblocks) break;
          const float sw = scale_of(p.scale_f32, cur.scale[j]);
#pragma unroll
          for (int ng = 0; ng < kNG; ++ng) {
            float d2[2][4] = {};  // one per 64-wide chunk: two independent mma chains
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const uint4 x = g + 8 * ng < p.m ? *reinterpret_cast<const uint4*>(xrow + 8 * ng * row_bytes +
                                                                                 int64_t(kb) * 128 + c * 64)
                                               : make_uint4(0, 0, 0, 0);
              const uint4 wa = cur.w[j][c], wb = cur.w[j][2 + c];
              mma_e4m3(d2[c], wa.x, wb.x, wa.y, wb.y, x.x, x.y);
              mma_e4m3(d2[c], wa.z, wb.z, wa.w, wb.w, x.z, x.w);
            }
            const float2 x01 = *reinterpret_cast<const float2*>(xscale + kb * (8 * kNG) + 2 * t + 8 * ng);
            const float s0 = sw * x01.x, s1 = sw * x01.y;
            acc[ng][0] = fmaf(d2[0][0] + d2[1][0], s0, acc[ng][0]);
            acc[ng][1] = fmaf(d2[0][1] + d2[1][1], s1, acc[ng][1]);
            acc[ng][2] = fmaf(d2[0][2] + d2[1][2], s0, acc[ng][2]);
            acc[ng][3] = fmaf(d2[0][3] + d2[1][3], s1, acc[ng][3]);
          }
        }
      }
      cur = next;
    }

#pragma unroll
    for (int ng = 0; ng < kNG; ++ng)
      partial[parity][warp][ng][lane] = make_float4(acc[ng][0], acc[ng][1], acc[ng][2], acc[ng][3]);
    __syncthreads();
    if (warp == 0 && cr.active) {
      const GemvTarget tg = target_of(p, tile);
      const int64_t row0 = int64_t(tile - tg.tile_begin) * 16;
#pragma unroll
      for (int ng = 0; ng < kNG; ++ng) {
        float4 s = partial[parity][0][ng][lane];
#pragma unroll
        for (int w = 1; w < W; ++w) {
          const float4 q = partial[parity][w][ng][lane];
          s.x += q.x, s.y += q.y, s.z += q.z, s.w += q.w;
        }
        const float v[4] = {s.x, s.y, s.z, s.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int64_t row = row0 + g + (i >= 2 ? 8 : 0);
          const int col = 2 * t + 8 * ng + (i & 1);
          if (row >= tg.n || col >= p.m) continue;
          float y = v[i];
          if (tg.bias) y += tg.bias[row];
          float* out = tg.y + int64_t(col) * tg.n + row;
          *out = p.accumulate ? *out + y : y;
        }
      }
    }
    cr = rows_of<kMX>(p, tile + tile_step, g, t);
  }
}

size_t smem_bytes(int m, int64_t k, bool mx) {
  return size_t(m) * size_t(k + (mx ? kRowPad<true> : kRowPad<false>)) +
         size_t(scale_rows(m)) * size_t(mx ? act_scales_per_row<true>(k) : act_scales_per_row<false>(k)) *
             sizeof(float);
}

// Shared memory that the blocks on one SM take, static and dynamic, at most. MX8_FP8X8_SMEM_KB=<n>
// for A/B runs (docs/CUDA_BACKEND.md, twenty-sixth session).
size_t smem_per_sm() {
  static const size_t v = [] {
    const char* e = std::getenv("MX8_FP8X8_SMEM_KB");
    if (!e || !*e) return size_t(195) << 10;
    char* end = nullptr;
    const long kb = std::strtol(e, &end, 10);
    if (*end != '\0' || kb < 64 || kb > 228)
      throw Error(std::string("MX8_FP8X8_SMEM_KB=") + e + ": not a size in 64..228 KB");
    return size_t(kb) << 10;
  }();
  return v;
}

// The dynamic shared memory a block of W warps (two per SM for 8, one for 16) may take beside the
// kernel's `partial`.
size_t max_dynamic_smem(int W, int kNG) {
  const size_t per_block = W == 8 ? smem_per_sm() / 2 : std::min(smem_per_sm(), kSmemPerBlock);
  const size_t partial = size_t(2 * W * kNG * 32) * sizeof(float4);
  return per_block > partial ? per_block - partial : 0;
}

// How a launch of m rows runs: kNG groups of 8 rows per weight fragment (2 above 8 rows), in blocks of
// 8 warps (two per SM) or, where two blocks' staged activations do not fit, 16 (one per SM); and where
// neither fits, k in `parts` launches of at most part_kblocks scale blocks each, the later ones adding
// onto the first's output. Every launch reads its part of the weights once, so 9..16 rows with a long
// k read them once in all, where launches of 8 rows over all of k read them twice (H200, MXFP8
// 16 x 4096 x 14336: docs/CUDA_BACKEND.md, twenty-sixth session).
struct Plan {
  int W = 0;  // 0: none (k is not whole scale blocks, or m is out of range)
  int kNG = 1;
  int parts = 1;
  int part_kblocks = 0;
};
Plan plan_of(int64_t m, int64_t k, bool mx) {
  Plan plan;
  if (m < 1 || m > kFp8x8MaxRows || k <= 0 || k % 128 != 0) return plan;
  plan.kNG = m > 8 ? 2 : 1;
  const int64_t kblocks = k / 128;
  // The fewest parts whose staged activations fit (one scale block of 16 rows always does).
  for (int64_t parts = 1; parts <= kblocks; ++parts) {
    const int64_t per = (kblocks + parts - 1) / parts;
    const size_t b = smem_bytes(int(m), per * 128, mx);
    const bool w8 = b <= max_dynamic_smem(8, plan.kNG), w16 = b <= max_dynamic_smem(16, plan.kNG);
    if (w8 || w16) {
      plan.W = w8 ? 8 : 16;
      plan.parts = int((kblocks + per - 1) / per);
      plan.part_kblocks = int(per);
      return plan;
    }
  }
  return plan;
}

template <int W, bool kMX, int kNG>
void launch_w(const Fp8x8Params& p, int tiles, cudaStream_t s) {
  constexpr auto kernel = gemv_fp8x8_kernel<W, kMX, kNG>;
  const size_t smem = smem_bytes(p.m, p.k, kMX);
  const char* op = "matmul (fp8 x fp8 gemv)";
  const unsigned grid = grid_for<kernel>(W * 32, smem, max_dynamic_smem(W, kNG), tiles, op);
  launch_smem(op, kernel, dim3(grid), dim3(W * 32), smem, s, p, tiles);
}

template <bool kMX>
void launch_plan(const Plan& plan, const Fp8x8Params& p, int tiles, cudaStream_t s) {
  if (plan.W == 8) return plan.kNG == 1 ? launch_w<8, kMX, 1>(p, tiles, s) : launch_w<8, kMX, 2>(p, tiles, s);
  if (plan.W == 16)
    return plan.kNG == 1 ? launch_w<16, kMX, 1>(p, tiles, s) : launch_w<16, kMX, 2>(p, tiles, s);
  throw Error("cuda backend: gemv_fp8x8: no launch plan");
}

}  // namespace

bool gemv_fp8x8_applies(const MatmulTarget* targets, int count, int64_t m) {
  if (count < 1 || count > kMaxGemvTargets || m < 1 || m > kFp8x8MaxRows) return false;
  const WeightView& w0 = targets[0].w;
  const bool mx = w0.format == WeightFormat::mxfp8;
  if (!(w0.format == WeightFormat::fp8_block || (mx && w0.scale_type == ScaleType::ue8m0)) ||
      plan_of(m, w0.k, mx).W == 0)  // plan_of: k of whole scale blocks
    return false;
  for (int i = 0; i < count; ++i) {
    const WeightView& w = targets[i].w;
    if (w.format != w0.format || w.scale_type != w0.scale_type || w.k != w0.k || w.n <= 0 ||
        w.n > (int64_t(1) << 30) || !aligned16(w.data) || !w.scales || !targets[i].y)
      return false;
  }
  return true;
}

void launch_gemv_fp8x8(const MatmulTarget* targets, int count, const uint8_t* a, const void* a_scales, int ld,
                       int64_t m, bool accumulate, cudaStream_t s) {
  if (!gemv_fp8x8_applies(targets, count, m))
    throw Error("cuda backend: gemv_fp8x8 called for a group it does not take");
  Fp8x8Params p{};
  int tiles = 0;
  for (int i = 0; i < count; ++i) {
    const MatmulTarget& t = targets[i];
    p.t[i] = GemvTarget{static_cast<const uint8_t*>(t.w.data), t.w.scales, t.y, t.bias, t.w.n, tiles};
    tiles += int((t.w.n + 15) / 16);
  }
  p.count = count;
  p.row_k = targets[0].w.k;
  p.row_kblocks = int(p.row_k / 128);
  p.ld = ld;
  p.m = int(m);
  p.scale_f32 = targets[0].w.scale_type == ScaleType::f32;
  const bool mx = targets[0].w.format == WeightFormat::mxfp8;
  const Plan plan = plan_of(m, p.row_k, mx);
  // Scale bytes per scale block (128 of k): the weights' (fp8_block: one per 128-row block and scale
  // block; MXFP8: four per row) and the activations' (per row: one, or four UE8M0 bytes).
  const size_t w_scale = mx ? 4 : p.scale_f32 ? sizeof(float) : 1, a_scale = mx ? 4 : w_scale;
  for (int part = 0; part < plan.parts; ++part) {
    const int kb0 = part * plan.part_kblocks;
    Fp8x8Params q = p;
    q.kblocks = std::min(plan.part_kblocks, p.row_kblocks - kb0);
    q.k = int64_t(q.kblocks) * 128;
    q.a = a + int64_t(kb0) * 128;
    q.sa = static_cast<const uint8_t*>(a_scales) + size_t(kb0) * size_t(ld) * a_scale;
    q.accumulate = accumulate || part > 0;  // the later parts add onto the first's output
    for (int i = 0; i < count; ++i) {
      q.t[i].w += int64_t(kb0) * 128;
      q.t[i].scales = static_cast<const uint8_t*>(p.t[i].scales) + size_t(kb0) * w_scale;
      if (part > 0) q.t[i].bias = nullptr;  // once, with the first part
    }
    mx ? launch_plan<true>(plan, q, tiles, s) : launch_plan<false>(plan, q, tiles, s);
  }
}

}  // namespace mx8::backend::cuda_impl
