// The FP8 x FP8 GEMV (gemv_fp8x8.cuh): 1..8 rows of E4M3 activations times fp8_block weights on
// mma.sync m16n8k32 (E4M3 inputs, f32 accumulation).
//
// Why: a batched decode step has a few rows per product, and the wgmma GEMM gives them 64-row tiles
// whose K loop waits on a TMA ring that starts cold at every tile; at 8 rows it streamed Llama-3-8B's
// weights at about half the rate the one-row GEMV reaches. This kernel is that GEMV's weight stream
// (gemv_fp8_mma.cu: 16-row tiles, the block's warps splitting k, each warp loading the next round of
// weights while it multiplies the current one, the first round before griddepcontrol.wait) with the
// activations already E4M3, as the GEMM takes them: the 8 columns of n8 are 8 rows of activations, and
// no weight is converted (the one-row GEMV decodes two per cvt and splits x into f16 hi and lo parts).
//
// Fragments (PTX ISA, mma.m16n8k32, 8-bit inputs): lane = 4 g + t holds A rows g and g + 8 at k slots
// 4t .. 4t + 3 (registers a0, a1) and 16 + 4t .. 16 + 4t + 3 (a2, a3), B column g at the same slots,
// and D rows g, g + 8 at columns 2t, 2t + 1. Which k a slot stands for is free as long as A and B
// agree: a lane loads 16 consecutive bytes of each of its two weight rows per 64-wide chunk, and the
// chunk's two mma take bytes 0-7 and 8-15, with the same 16 bytes of activation row g as B.
//
// Promotion: the four mma of a 128-wide block sum into f32 registers, which are added into the
// accumulator times the weight block's scale and the activation row's scale once per 128 of k, as the
// GEMM does (DeepSeek-V3's recipe). The activations of the block's rows are staged in shared memory
// by the warps that multiply them (each warp its own blocks of k, so no warp waits for another's loads).
#include "backend/cuda/gemv_fp8x8.cuh"

#include <algorithm>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemv_fp8_common.cuh"
#include "backend/cuda/gemv_target.cuh"
#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kU = 2;  // scale blocks (128 of k) per warp per round
// Bytes after each staged row of activations: the 8 lanes of a quarter warp read rows g, g + 1 at
// 16 t, which a stride of 64 mod 128 bytes puts on different banks.
constexpr int kRowPad = 64;
constexpr size_t kSmemPerSm = size_t(224) << 10;     // shared memory of the blocks on one SM, at most
constexpr size_t kSmemPerBlock = size_t(227) << 10;  // a block's, static and dynamic (sm_90)
template <int W>
constexpr size_t kStaticSmem = sizeof(float) * 4 * 2 * W * 32;  // the kernel's `partial`

struct Fp8x8Params {
  GemvTarget t[kMaxGemvTargets];
  int count;
  int64_t k;
  int kblocks;       // k / 128
  const uint8_t* a;  // [m][k] E4M3
  const void* sa;    // [kblocks][ld]: UE8M0 bytes, or f32 with scale_f32
  int ld;
  int m;
  bool accumulate;
  bool scale_f32;  // weights' and activations' scales (fp8_block only)
};

__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t load_scale_bits(bool f32, const void* s, int64_t i) {
  return f32 ? __float_as_uint(__ldg(static_cast<const float*>(s) + i))
             : uint32_t(__ldg(static_cast<const uint8_t*>(s) + i));
}
__device__ __forceinline__ float scale_of(bool f32, uint32_t bits) {
  return f32 ? __uint_as_float(bits) : format::ue8m0_to_f32(uint8_t(bits));
}

// The 16 rows of a tile as a lane sees them in its loads: rows row0 + g (wa) and row0 + g + 8 (wb) at
// its 16 bytes of a 64-wide chunk (rows past n are read, clamped to the last row, and never stored),
// and their scales. Only what the loads need: the target's outputs are found again at the store (each
// register held across the loop is one of 128).
struct Rows {
  const uint8_t* wa;
  const void* sa;  // fp8_block: the tile's 128-row block's scales (+ kb); kMX: row wa's 4-byte words (+ kb)
  int drow;        // row wb - row wa: 8, or less where row0 + g + 8 is past n
  bool active;     // row0 < n
  __device__ const uint8_t* wb(int64_t k) const { return wa + drow * k; }
  __device__ const uint32_t* sb(int kblocks) const {
    return static_cast<const uint32_t*>(sa) + drow * kblocks;
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
  r.wa = tg.w + ra * p.k + t * 16;
  if (kMX) {
    r.sa = static_cast<const uint32_t*>(tg.scales) + ra * p.kblocks;
  } else {
    const int64_t first = (row0 >> 7) * int64_t(p.kblocks);  // a tile's rows share one 128-row block
    r.sa = p.scale_f32 ? static_cast<const void*>(static_cast<const float*>(tg.scales) + first)
                       : static_cast<const void*>(static_cast<const uint8_t*>(tg.scales) + first);
  }
  return r;
}

// A warp's round: kU scale blocks of its two rows, and their weight scales (bits, decoded where used:
// decoding at the load would wait for it).
struct Round {
  uint4 w[kU][4];
  uint32_t scale[kU];    // fp8_block: the tile's block scale; kMX: row wa's four 1x32 scales
  uint32_t scale_b[kU];  // kMX: row wb's four
};
template <bool kMX>
__device__ __forceinline__ void load_round(const Fp8x8Params& p, const Rows& r, int base, Round& v) {
#pragma unroll
  for (int j = 0; j < kU; ++j)
    if (base + j < p.kblocks) {
      const int64_t off = int64_t(base + j) * 128;
      const uint8_t* wb = r.wb(p.k);
      v.w[j][0] = load_stream(r.wa + off);
      v.w[j][1] = load_stream(r.wa + off + 64);
      v.w[j][2] = load_stream(wb + off);
      v.w[j][3] = load_stream(wb + off + 64);
      if (kMX) {
        v.scale[j] = __ldg(static_cast<const uint32_t*>(r.sa) + base + j);
        v.scale_b[j] = __ldg(r.sb(p.kblocks) + base + j);
      } else {
        v.scale[j] = load_scale_bits(p.scale_f32, r.sa, base + j);
      }
    }
}

// Scales per activation row: one per 128 of k, or (kMX) one per 32.
template <bool kMX>
__host__ __device__ inline int64_t act_scales_per_row(int64_t k) {
  return kMX ? k / 32 : k / 128;
}

// Stages the warp's blocks of k (first + i * stride + [0, kU)) of the m activation rows into xs
// ([m][k + kRowPad] bytes) and their scales into xscale ([m][act_scales_per_row] floats): a round's
// loads first, then its stores, so that a warp waits for L2 once per round.
template <bool kMX>
__device__ __forceinline__ void stage_a(const Fp8x8Params& p, uint8_t* xs, float* xscale, int first,
                                        int stride, int lane) {
  const int64_t per_row = act_scales_per_row<kMX>(p.k);
  // The scale a lane stages per block: row lane (1x128), or row lane / 4's 32-wide block lane % 4.
  const int sr = kMX ? lane >> 2 : lane, sq = kMX ? lane & 3 : 0;
  const int64_t row_bytes = p.k + kRowPad;
  for (int base = first; base < p.kblocks; base += stride) {
    uint4 v[kU][2];  // kU blocks x m rows x 8 chunks of 16 bytes, two per lane (m <= 8)
    uint32_t s[kU];
#pragma unroll
    for (int j = 0; j < kU; ++j) {
      const int kb = base + j;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int i = lane + 32 * h, r = i >> 3, c = i & 7;
        v[j][h] = kb < p.kblocks && r < p.m
                      ? *reinterpret_cast<const uint4*>(p.a + int64_t(r) * p.k + int64_t(kb) * 128 + c * 16)
                      : make_uint4(0, 0, 0, 0);
      }
      const int64_t si = kMX ? int64_t(kb * 4 + sq) * p.ld + sr : int64_t(kb) * p.ld + sr;
      s[j] = kb < p.kblocks && sr < p.m ? load_scale_bits(!kMX && p.scale_f32, p.sa, si) : 0u;
    }
#pragma unroll
    for (int j = 0; j < kU; ++j) {
      const int kb = base + j;
      if (kb >= p.kblocks) break;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int i = lane + 32 * h, r = i >> 3, c = i & 7;
        if (r < p.m) *reinterpret_cast<uint4*>(xs + r * row_bytes + int64_t(kb) * 128 + c * 16) = v[j][h];
      }
      if (sr < p.m) xscale[sr * per_row + (kMX ? kb * 4 + sq : kb)] = scale_of(!kMX && p.scale_f32, s[j]);
    }
  }
  __syncwarp();  // the warp's lanes read each other's stores
}

// One 128-wide block of MXFP8 weights (scales every 32 of k, on both operands). A lane's 16 bytes of a
// 64-wide chunk (k = 16t .. 16t + 15) lie in one 32-wide block (the chunk's first for t < 2), but
// every mma sums over all four t. So each mma runs twice, with B zeroed on the lanes of the other
// block: four accumulators per 128 of k, each one 32-wide block's products, promoted with the two
// weight rows' and the two activation rows' scales of that block.
__device__ __forceinline__ void mx_block(const Round& cur, int j, const uint8_t* xblk, bool has_col,
                                         const float* sx0, const float* sx1, bool col0, bool col1, int t,
                                         float (&acc)[4]) {
  const uint32_t first_half = t < 2 ? 0xFFFFFFFFu : 0u;
#pragma unroll
  for (int q = 0; q < 4; ++q) {  // the 32-wide block within the 128: chunk q / 2, lanes t < 2 or t >= 2
    const int c = q >> 1;
    const uint32_t m = q & 1 ? ~first_half : first_half;
    const uint4 x = has_col ? *reinterpret_cast<const uint4*>(xblk + c * 64) : make_uint4(0, 0, 0, 0);
    const uint4 wa = cur.w[j][c], wb = cur.w[j][2 + c];
    float d[4] = {};
    mma_e4m3(d, wa.x, wb.x, wa.y, wb.y, x.x & m, x.y & m);
    mma_e4m3(d, wa.z, wb.z, wa.w, wb.w, x.z & m, x.w & m);
    const float sa = format::ue8m0_to_f32(uint8_t(cur.scale[j] >> (8 * q)));
    const float sb = format::ue8m0_to_f32(uint8_t(cur.scale_b[j] >> (8 * q)));
    const float x0 = col0 ? sx0[q] : 0.0f, x1 = col1 ? sx1[q] : 0.0f;
    acc[0] = fmaf(d[0], sa * x0, acc[0]);
    acc[1] = fmaf(d[1], sa * x1, acc[1]);
    acc[2] = fmaf(d[2], sb * x0, acc[2]);
    acc[3] = fmaf(d[3], sb * x1, acc[3]);
  }
}

// A persistent grid: block b takes tiles b, b + gridDim.x, ...; warp w multiplies the tile's rows over
// the scale blocks w * kU + [0, kU), + W kU, ..., and loads the next (tile, round) item's weights,
// also across the tile boundary, before it multiplies the current one. The warps' partial sums are
// added in warp order (deterministic).
template <int W, bool kMX>
__global__ void __launch_bounds__(W * 32, 16 / W) gemv_fp8x8_kernel(Fp8x8Params p, int tiles) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ float4 partial[2][W][32];  // double-buffered by tile parity
  pdl_trigger();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int first = warp * kU, stride = W * kU;
  const int tile_step = int(gridDim.x);

  int tile = int(blockIdx.x);
  Rows cr = rows_of<kMX>(p, tile, g, t);
  Round cur;
  bool loaded = tile < tiles && cr.active && first < p.kblocks;
  if (loaded) load_round<kMX>(p, cr, first, cur);  // weights: never written by a kernel
  pdl_wait();

  const int64_t row_bytes = p.k + kRowPad;
  uint8_t* xs = smem;
  float* xscale = reinterpret_cast<float*>(smem + p.m * row_bytes);
  stage_a<kMX>(p, xs, xscale, first, stride, lane);
  const int64_t per_row = act_scales_per_row<kMX>(p.k);
  const uint8_t* xrow = xs + g * row_bytes + t * 16;  // B column g = activation row g
  const bool has_col = g < p.m;
  const int c0 = 2 * t, c1 = 2 * t + 1;  // the activation rows of this lane's D columns

  for (int parity = 0; tile < tiles; tile += tile_step, parity ^= 1) {
    if (!loaded && cr.active && first < p.kblocks) load_round<kMX>(p, cr, first, cur);
    float acc[4] = {};  // D: (row g, c0), (row g, c1), (row g + 8, c0), (row g + 8, c1)
    Rows nr = cr;
    loaded = false;
    for (int base = first; base < p.kblocks; base += stride) {
      const bool same_tile = base + stride < p.kblocks;
      const int ntile = same_tile ? tile : tile + tile_step;
      if (!same_tile) nr = rows_of<kMX>(p, ntile, g, t);
      Round next;
      loaded = ntile < tiles && nr.active;
      if (loaded) load_round<kMX>(p, nr, same_tile ? base + stride : first, next);
      if (kMX && cr.active) {
#pragma unroll
        for (int j = 0; j < kU; ++j) {
          const int kb = base + j;
          if (kb >= p.kblocks) break;
          mx_block(cur, j, xrow + int64_t(kb) * 128, has_col, xscale + c0 * per_row + kb * 4,
                   xscale + c1 * per_row + kb * 4, c0 < p.m, c1 < p.m, t, acc);
        }
      } else if (cr.active) {
#pragma unroll
        for (int j = 0; j < kU; ++j) {
          const int kb = base + j;
          if (kb >= p.kblocks) break;
          float d2[2][4] = {};  // one per 64-wide chunk: two independent mma chains
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const uint4 x = has_col ? *reinterpret_cast<const uint4*>(xrow + int64_t(kb) * 128 + c * 64)
                                    : make_uint4(0, 0, 0, 0);
            const uint4 wa = cur.w[j][c], wb = cur.w[j][2 + c];
            mma_e4m3(d2[c], wa.x, wb.x, wa.y, wb.y, x.x, x.y);
            mma_e4m3(d2[c], wa.z, wb.z, wa.w, wb.w, x.z, x.w);
          }
          const float sw = scale_of(p.scale_f32, cur.scale[j]);
          const float s0 = c0 < p.m ? sw * xscale[c0 * per_row + kb] : 0.0f;
          const float s1 = c1 < p.m ? sw * xscale[c1 * per_row + kb] : 0.0f;
          acc[0] = fmaf(d2[0][0] + d2[1][0], s0, acc[0]);
          acc[1] = fmaf(d2[0][1] + d2[1][1], s1, acc[1]);
          acc[2] = fmaf(d2[0][2] + d2[1][2], s0, acc[2]);
          acc[3] = fmaf(d2[0][3] + d2[1][3], s1, acc[3]);
        }
      }
      cur = next;
    }

    partial[parity][warp][lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    __syncthreads();
    if (warp == 0 && cr.active) {
      const GemvTarget tg = target_of(p, tile);
      const int64_t row0 = int64_t(tile - tg.tile_begin) * 16;
      float4 s = partial[parity][0][lane];
#pragma unroll
      for (int w = 1; w < W; ++w) {
        const float4 q = partial[parity][w][lane];
        s.x += q.x, s.y += q.y, s.z += q.z, s.w += q.w;
      }
      const float v[4] = {s.x, s.y, s.z, s.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t row = row0 + g + (i >= 2 ? 8 : 0);
        const int col = i & 1 ? c1 : c0;
        if (row >= tg.n || col >= p.m) continue;
        float y = v[i];
        if (tg.bias) y += tg.bias[row];
        float* out = tg.y + int64_t(col) * tg.n + row;
        *out = p.accumulate ? *out + y : y;
      }
    }
    cr = rows_of<kMX>(p, tile + tile_step, g, t);
  }
}

size_t smem_bytes(int m, int64_t k, bool mx) {
  return size_t(m) * size_t(k + kRowPad) +
         size_t(m) * size_t(mx ? act_scales_per_row<true>(k) : act_scales_per_row<false>(k)) * sizeof(float);
}

// Blocks of 8 warps, two per SM, where two blocks' staged activations fit; else one block of 16.
bool two_blocks_fit(int m, int64_t k, bool mx) {
  return 2 * (smem_bytes(m, k, mx) + kStaticSmem<8>) <= kSmemPerSm;
}
template <int W>
constexpr size_t kMaxDynamicSmem = W == 8 ? kSmemPerSm / 2 - kStaticSmem<8> : kSmemPerBlock - kStaticSmem<16>;

// Blocks of the persistent grid: as many as fit, or the fewest that take the same number of tiles
// each (gemv_fp8_mma.cu's rule).
template <int W, bool kMX>
void launch_w(const Fp8x8Params& p, int tiles, cudaStream_t s) {
  constexpr auto kernel = gemv_fp8x8_kernel<W, kMX>;
  const size_t smem = smem_bytes(p.m, p.k, kMX);
  static const cudaError_t configured =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxDynamicSmem<W>));
  check(configured, "matmul (fp8 x fp8 gemv)");
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, W * 32, smem),
        "matmul (fp8 x fp8 gemv)");
  const int most = std::max(per_sm, 1) * mx8::cuda::num_sms();
  const int per = (tiles + most - 1) / most;
  launch_smem("matmul (fp8 x fp8 gemv)", kernel, dim3(unsigned((tiles + per - 1) / per)), dim3(W * 32), smem,
              s, p, tiles);
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

bool gemv_fp8x8_applies(const MatmulTarget* targets, int count, int64_t m) {
  if (count < 1 || count > kMaxGemvTargets || m < 1 || m > kFp8x8MaxRows) return false;
  const WeightView& w0 = targets[0].w;
  const bool mx = w0.format == WeightFormat::mxfp8;
  if (!(w0.format == WeightFormat::fp8_block || (mx && w0.scale_type == ScaleType::ue8m0)) || w0.k <= 0 ||
      w0.k % 128 != 0 || smem_bytes(int(m), w0.k, mx) > kMaxDynamicSmem<16>)
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
  p.k = targets[0].w.k;
  p.kblocks = int(p.k / 128);
  p.a = a;
  p.sa = a_scales;
  p.ld = ld;
  p.m = int(m);
  p.accumulate = accumulate;
  p.scale_f32 = targets[0].w.scale_type == ScaleType::f32;
  const bool mx = targets[0].w.format == WeightFormat::mxfp8, two = two_blocks_fit(p.m, p.k, mx);
  if (mx)
    two ? launch_w<8, true>(p, tiles, s) : launch_w<16, true>(p, tiles, s);
  else
    two ? launch_w<8, false>(p, tiles, s) : launch_w<16, false>(p, tiles, s);
}

}  // namespace mx8::backend::cuda_impl
