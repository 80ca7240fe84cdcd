// matmul for few rows of activations (decode): for up to kMaxGemvTargets weights that share one
// input, y_t = in W_t^T (+ bias_t) or y_t += in W_t^T (+ bias_t), in = x or silu(x) * x_up, all in
// one launch (launch_gemv_group); launch_gemv is the one-target case.
//
// Decode is a stream of weight bytes: each weight is used once per row of x, so the kernel's job is
// to keep enough 16-byte loads in flight to saturate HBM and to do the decoding in registers.
//
// Work split. A block is G = NT / T groups of T threads; a group owns R rows of one target's W and
// its T threads split the rows' 16-byte chunks (thread i takes chunks i, i + T, ..., U per row per
// round), so a warp's loads are 512 contiguous bytes of a row and each thread reuses the x values it
// loads for its R rows. A tile is the G * R rows of one block; the tiles of all targets are numbered
// consecutively (blocks map to (target, rows)). The grid is persistent (at most the resident blocks,
// sized so that every block gets the same number of tiles) and each block walks its tiles round by
// round with the next round's loads issued before the current round is decoded - also across a
// tile boundary, so one tile's reduction (shuffles, then a fixed-order sum over the group's warps in
// shared memory: deterministic, no atomics) overlaps the next tile's loads.
//
// Two ways to keep loads in flight. S = 0: the next round goes to registers (ld.global.nc, 256-thread
// blocks). S > 0: it goes to shared memory with cp.async.cg, S rounds deep, 128-thread blocks; each
// thread reads back only its own copies, so no barrier is needed. Defaults: one token with fp8_block or
// bf16 weights takes R = 8, U = 1, S = 2 (in `mx8 bench gemv-cuda --ab`: the fastest variant on all
// five decode shapes for FP8, within 4% of the fastest for BF16; R = 8 matters most, x is loaded once
// per 8 rows); other cases R = 4, U = 2 (or fewer rows for more tokens), S = 0. gemv_tuning.h exposes the
// knobs for A/B runs.
//
// Numerics: each chunk holds 16 E4M3 codes (4 f32, 8 bf16) inside one scale block (16 divides 32 and
// 128); its partial sum is multiplied by its block scale before joining the thread's total - the
// CPU backend's "partial sum per scale block, times the scale". Sums are f32. The SwiGLU input
// silu(g) * u is formed as the CPU's silu_mul does, g * (1 / (1 + exp(-g))) * u, with __expf and an
// approximate reciprocal (a few ulp of the input, well inside the matmul tolerance, and 6
// instructions per x value, which each thread loads once per R rows).
//
// Activations stay f32: nothing is quantized (activation_quantization() says so).
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/backend_cuda_weight.cuh"
#include "backend/cuda/device_info.h"
#include "backend/cuda/gemv_fp8_mma.cuh"
#include "backend/cuda/gemv_fp8_skinny.cuh"
#include "backend/cuda/gemv_target.cuh"
#include "backend/cuda/gemv_tuning.h"
#include "backend/cuda/ptx/cp_async.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = 8;  // scalar path: one warp per output row

// kHint: with .L2::256B, a miss fetches the whole 256-byte block into L2 (an A/B option).
template <bool kHint = false>
__device__ __forceinline__ uint4 load_stream(const uint8_t* p) {
  uint4 r;
  if constexpr (kHint) {
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
  }
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// Decodes a 16-byte chunk into kElems f32 values.
template <WeightFormat F>
struct Chunk;

template <>
struct Chunk<WeightFormat::f32> {
  static constexpr int kElems = 4;
  __device__ static void decode(const uint4& r, float* v) {
    v[0] = __uint_as_float(r.x);
    v[1] = __uint_as_float(r.y);
    v[2] = __uint_as_float(r.z);
    v[3] = __uint_as_float(r.w);
  }
};

template <>
struct Chunk<WeightFormat::bf16> {
  static constexpr int kElems = 8;
  __device__ static void decode(const uint4& r, float* v) {
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[2 * i] = __uint_as_float(w[i] << 16);
      v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

// 16 E4M3 codes; decode_e4m3 below decodes them.
struct ChunkE4m3 {
  static constexpr int kElems = 16;
};

// 16 E4M3 codes to f32 with the hardware conversions: E4M3x2 -> f16x2 (F2FP, exact: E4M3 is a subset
// of f16, NaN codes become NaN) and f16 -> f32, which sm_90 SASS does as HADD2.F32 on the FMA pipe (not
// the conversion pipe, as an earlier note here assumed). 1.5 instructions per weight; an integer-only
// decode (the code's bits moved into an f32 and multiplied by 2^120, plus a NaN-code check) costs
// ~4 and measured slower (A/B 2026-11-28: gate/up 51% vs 61% of copy bandwidth).
__device__ __forceinline__ void decode_e4m3(const uint4& r, float* v) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i] & 0xffffu), __NV_E4M3);
    __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i] >> 16), __NV_E4M3);
    const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
    v[4 * i] = a.x;
    v[4 * i + 1] = a.y;
    v[4 * i + 2] = b.x;
    v[4 * i + 3] = b.y;
  }
}

template <>
struct Chunk<WeightFormat::fp8_block> : ChunkE4m3 {};
template <>
struct Chunk<WeightFormat::mxfp8> : ChunkE4m3 {};

constexpr int esize(WeightFormat f) {
  return f == WeightFormat::f32 ? 4 : f == WeightFormat::bf16 ? 2 : 1;
}

struct GroupParams {
  GemvTarget t[kMaxGemvTargets];
  int count;
  int tiles;    // of all targets
  int rounds;   // per tile: ceil(k / E / (T * U))
  int threads;  // T
  int64_t k;
  const float* x;     // [m][k], this pass's rows
  const float* x_up;  // [m][k] or nullptr
  int m;              // rows of x in this pass (<= M)
  int64_t x_ld;       // == k; y's row stride is the target's n
  bool accumulate;
  bool scale_f32;
};

// silu(g) * u as the CPU backend's silu_mul forms it: g * (1 / (1 + exp(-g))) * u.
__device__ __forceinline__ float swiglu(float g, float u) {
  return g * __fdividef(1.0f, 1.0f + __expf(-g)) * u;
}

using mx8::cuda::ptx::cp_async16;
using mx8::cuda::ptx::cp_async_commit;
using mx8::cuda::ptx::cp_async_wait;

// Threads per block: 256 for the register pipeline (S = 0), 128 for the shared-memory one.
constexpr int block_threads(int stages) {
  return stages ? 128 : kThreads;
}

// One round of one tile for this thread: where its loads go and what they are multiplied by.
struct Item {
  GemvTarget tg;
  int64_t row0;  // first of the group's R rows (>= n: the group has no rows in this tile)
  int64_t c0;    // first chunk of the round for this thread
  int round;
  int tile;
};

// S = 0: the next round's loads go to registers (two rounds of registers). S > 0: they go to shared
// memory with cp.async, S rounds deep (S - 1 in flight while one is decoded), each thread reading
// back only what it copied itself (no barrier); registers then no longer bound the loads in flight.
template <WeightFormat F, int M, int R, int U, int D, int S>
__global__ void __launch_bounds__(block_threads(S)) gemv_group_kernel(GroupParams p) {
  pdl_trigger();
  constexpr int NT = block_threads(S);
  constexpr int E = Chunk<F>::kElems;
  constexpr bool kFp8 = F == WeightFormat::fp8_block || F == WeightFormat::mxfp8;
  constexpr bool kHint = D == 4;  // D = 4: weight loads with the L2::256B hint (an A/B option)
  const int T = p.threads;
  const int group = threadIdx.x / T, lt = threadIdx.x % T;
  const int rows_per_tile = (NT / T) * R;
  const int64_t nchunk = p.k / E;
  const int64_t row_bytes = p.k * esize(F);
  const int my_tiles = int(blockIdx.x) < p.tiles ? (p.tiles - 1 - int(blockIdx.x)) / int(gridDim.x) + 1 : 0;
  const int items = my_tiles * p.rounds;

  auto make_item = [&](int tile, int round) {
    Item it;
    it.tg = target_of(p, tile);
    it.row0 = int64_t(tile - it.tg.tile_begin) * rows_per_tile + int64_t(group) * R;
    it.c0 = lt + int64_t(round) * T * U;
    it.round = round;
    it.tile = tile;
    return it;
  };
  auto next_item = [&](const Item& it) {
    const bool next_tile = it.round + 1 == p.rounds;
    return make_item(next_tile ? it.tile + int(gridDim.x) : it.tile, next_tile ? 0 : it.round + 1);
  };
  __shared__ __align__(16) uint4 stage[S ? S : 1][S ? R * U : 1][S ? NT : 1];
  auto issue = [&](const Item& it, int slot) {
    if (it.row0 >= it.tg.n) return;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int64_t r = it.row0 + j < it.tg.n ? it.row0 + j : it.tg.n - 1;  // read (never stored)
      const uint8_t* row = it.tg.w + r * row_bytes;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = it.c0 + int64_t(u) * T;
        if (c < nchunk) cp_async16<kHint>(&stage[slot][j * U + u][threadIdx.x], row + c * 16);
      }
    }
  };
  auto load = [&](const Item& it, uint4(&raw)[R][U]) {
    if (it.row0 >= it.tg.n) return;
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int64_t r = it.row0 + j < it.tg.n ? it.row0 + j : it.tg.n - 1;  // read (never stored)
      const uint8_t* row = it.tg.w + r * row_bytes;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = it.c0 + int64_t(u) * T;
        if (c < nchunk) raw[j][u] = load_stream<kHint>(row + c * 16);
      }
    }
  };

  float acc[R][M];
#pragma unroll
  for (int j = 0; j < R; ++j)
#pragma unroll
    for (int i = 0; i < M; ++i) acc[j][i] = 0.0f;
  __shared__ float red[2][NT / 32][R * M];

  Item cur = make_item(int(blockIdx.x), 0);
  // The first round's weights are prefetched into L2 before waiting for the previous kernel, so the
  // stream starts while that kernel drains (into L2, the point of coherence, not into registers: it
  // stays correct even if a weight were written by the previous kernel).
  if (items > 0 && cur.row0 < cur.tg.n) {
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int64_t r = cur.row0 + j < cur.tg.n ? cur.row0 + j : cur.tg.n - 1;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = cur.c0 + int64_t(u) * T;
        if (c < nchunk) asm volatile("prefetch.global.L2 [%0];" ::"l"(cur.tg.w + r * row_bytes + c * 16));
      }
    }
  }
  pdl_wait();
  if (items == 0) return;  // uniform over the block

  uint4 rc[R][U];
  Item iss = cur;  // S > 0: the next round to copy
  if constexpr (S == 0) {
    load(cur, rc);
  } else {
#pragma unroll
    for (int s = 0; s < S - 1; ++s) {
      if (s < items) {
        issue(iss, s);
        iss = next_item(iss);
      }
      cp_async_commit();
    }
  }
  int parity = 0;
  for (int i_item = 0; i_item < items; ++i_item) {
    Item nx = cur;
    uint4 rn[R][U];
    if constexpr (S == 0) {
      if (i_item + 1 < items) {
        nx = next_item(cur);
        load(nx, rn);
      }
    } else {
      if (i_item + S - 1 < items) {
        issue(iss, (i_item + S - 1) % S);
        iss = next_item(iss);
      }
      cp_async_commit();
      cp_async_wait<S - 1>();  // this thread's copies of round i_item have landed
      if (cur.row0 < cur.tg.n) {
#pragma unroll
        for (int j = 0; j < R; ++j)
#pragma unroll
          for (int u = 0; u < U; ++u) rc[j][u] = stage[i_item % S][j * U + u][threadIdx.x];
      }
      if (i_item + 1 < items) nx = next_item(cur);
    }
    if (cur.row0 < cur.tg.n) {
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t c = cur.c0 + int64_t(u) * T;
        if (c >= nchunk) continue;
        const int64_t col = c * E;
        float sc[R];
#pragma unroll
        for (int j = 0; j < R; ++j) {
          if constexpr (F == WeightFormat::fp8_block) {
            const int64_t idx = (cur.row0 >> 7) * ((p.k + 127) >> 7) + (col >> 7);
            sc[j] =
                j > 0 ? sc[0]
                      : (p.scale_f32
                             ? __ldg(static_cast<const float*>(cur.tg.scales) + idx)
                             : format::ue8m0_to_f32(__ldg(static_cast<const uint8_t*>(cur.tg.scales) + idx)));
          } else if constexpr (F == WeightFormat::mxfp8) {
            const int64_t r = cur.row0 + j < cur.tg.n ? cur.row0 + j : cur.tg.n - 1;
            sc[j] = format::ue8m0_to_f32(
                __ldg(static_cast<const uint8_t*>(cur.tg.scales) + r * ((p.k + 31) >> 5) + (col >> 5)));
          } else {
            sc[j] = 1.0f;
          }
        }
        // x of this chunk for the pass's rows, SwiGLU applied; held across the R rows when small,
        // else re-read from L1 per row of x.
        auto load_x = [&](int i, float* xi) {
          const float4* xp = reinterpret_cast<const float4*>(p.x + i * p.x_ld + col);
#pragma unroll
          for (int e4 = 0; e4 < E / 4; ++e4) {
            float4 t = __ldg(xp + e4);
            if (p.x_up) {
              const float4 v = __ldg(reinterpret_cast<const float4*>(p.x_up + i * p.x_ld + col) + e4);
              t.x = swiglu(t.x, v.x);
              t.y = swiglu(t.y, v.y);
              t.z = swiglu(t.z, v.z);
              t.w = swiglu(t.w, v.w);
            }
            xi[4 * e4] = t.x;
            xi[4 * e4 + 1] = t.y;
            xi[4 * e4 + 2] = t.z;
            xi[4 * e4 + 3] = t.w;
          }
        };
        auto decode = [&](const uint4& r, float* wv) {
          if constexpr (kFp8)
            decode_e4m3(r, wv);
          else
            Chunk<F>::decode(r, wv);
        };
        auto finish = [&](float part, float s) { return kFp8 ? part * s : part; };
        if constexpr (M == 1) {
          float xi[E];
          load_x(0, xi);
#pragma unroll
          for (int j = 0; j < R; ++j) {
            float wv[E];
            decode(rc[j][u], wv);
            float part = 0.0f;
#pragma unroll
            for (int e = 0; e < E; ++e) part += wv[e] * xi[e];
            acc[j][0] += finish(part, sc[j]);
          }
        } else {
          float wv[R][E];
#pragma unroll
          for (int j = 0; j < R; ++j) decode(rc[j][u], wv[j]);
#pragma unroll
          for (int i = 0; i < M; ++i) {
            if (i < p.m) {
              float xi[E];
              load_x(i, xi);
#pragma unroll
              for (int j = 0; j < R; ++j) {
                float part = 0.0f;
#pragma unroll
                for (int e = 0; e < E; ++e) part += wv[j][e] * xi[e];
                acc[j][i] += finish(part, sc[j]);
              }
            }
          }
        }
      }
    }
    if (cur.round + 1 == p.rounds) {
      // Tile done: each warp's sums (shuffle tree), then the group's warps in a fixed order.
      const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
      for (int j = 0; j < R; ++j)
#pragma unroll
        for (int i = 0; i < M; ++i) {
          float v = acc[j][i];
          for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
          if (lane == 0) red[parity][warp][j * M + i] = v;
          acc[j][i] = 0.0f;
        }
      __syncthreads();  // red[parity] complete; red[parity ^ 1] was last read before the previous sync
      const int wpg = T / 32;
      const int q = threadIdx.x;
      if (q < (NT / T) * R * M) {
        const int g = q / (R * M), jm = q % (R * M), j = jm / M, i = jm % M;
        float s = 0.0f;
        for (int w = 0; w < wpg; ++w) s += red[parity][g * wpg + w][jm];
        const int64_t row = int64_t(cur.tile - cur.tg.tile_begin) * rows_per_tile + int64_t(g) * R + j;
        if (i < p.m && row < cur.tg.n) {
          if (cur.tg.bias) s += cur.tg.bias[row];
          float* yp = cur.tg.y + int64_t(i) * cur.tg.n + row;
          *yp = p.accumulate ? *yp + s : s;
        }
      }
      parity ^= 1;
    }
    cur = nx;
    if constexpr (S == 0) {
#pragma unroll
      for (int j = 0; j < R; ++j)
#pragma unroll
        for (int u = 0; u < U; ++u) rc[j][u] = rn[j][u];
    }
  }
}

// Scalar path for shapes the vector path cannot load (unaligned rows): one warp per output row,
// lanes stride over k with element loads.
__global__ void gemv_scalar_kernel(WeightView w, const float* x, int64_t m, float* y, const float* bias) {
  pdl_trigger();
  pdl_wait();
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= w.n) return;
  for (int64_t i = 0; i < m; ++i) {
    float acc = 0.0f;
    for (int64_t col = lane; col < w.k; col += 32) acc += weight_at(w, row, col) * x[i * w.k + col];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) y[i * w.n + row] = acc + (bias ? bias[row] : 0.0f);
  }
}

// Rows per group (R) and chunks per row per round (U) for rows of x per pass (M), register pipeline:
// one token holds its x values in registers across R rows; more tokens hold R decoded rows instead.
// (One token with fp8_block or bf16 weights takes R = 8 in shared memory instead: launch_pass.)
struct Shape {
  int m, r, u;
};
constexpr Shape kDefault[] = {{1, 4, 2}, {2, 4, 2}, {4, 2, 2}, {8, 2, 2}};

// A kernel instantiation: rows of x per pass (M), rows per thread group (R), chunks per row per round
// (U), load hint (D = 4: L2::256B), shared-memory stages (S, 0 = register pipeline).
struct Variant {
  int m, r, u, d, s;
};

template <WeightFormat F, int M, int R, int U, int D, int S>
bool try_launch(const Variant& v, GroupParams p, cudaStream_t s) {
  if (v.m != M || v.r != R || v.u != U || v.d != D || v.s != S) return false;
  auto kernel = gemv_group_kernel<F, M, R, U, D, S>;
  constexpr int NT = block_threads(S);
  // Resident blocks per SM: a property of the compiled kernel, computed once per instantiation.
  static const int per_sm = [kernel] {
    int v = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, kernel, NT, 0) != cudaSuccess || v < 1) return 1;
    return v;
  }();
  // Persistent grid: at most the resident blocks, and as few as give every block the same number of
  // tiles (the last wave is not a partial one).
  const int64_t slots = int64_t(mx8::cuda::num_sms()) * per_sm;
  const int64_t per_block = (p.tiles + slots - 1) / slots;
  const unsigned grid = unsigned(std::max<int64_t>(1, (p.tiles + per_block - 1) / per_block));
  launch("gemv_group", kernel, dim3(grid), dim3(NT), s, p);
  return true;
}

// The instantiated variants. Every format: the register-pipeline defaults for M = 1, 2, 4, 8 and the
// 5-stage shared-memory pipeline for one token; fp8_block and bf16 also their default (R = 8, S = 2)
// and the A/B set of `mx8 bench gemv-cuda --ab`.
template <WeightFormat F>
bool dispatch(const Variant& v, const GroupParams& p, cudaStream_t s) {
  constexpr bool kAb = F == WeightFormat::fp8_block || F == WeightFormat::bf16;
  if (try_launch<F, 1, 4, 2, 0, 0>(v, p, s) || try_launch<F, 2, 4, 2, 0, 0>(v, p, s) ||
      try_launch<F, 4, 2, 2, 0, 0>(v, p, s) || try_launch<F, 8, 2, 2, 0, 0>(v, p, s) ||
      try_launch<F, 1, 4, 1, 0, 5>(v, p, s))
    return true;
  if constexpr (kAb) {
    if (try_launch<F, 1, 8, 1, 0, 0>(v, p, s) || try_launch<F, 1, 8, 1, 4, 0>(v, p, s) ||
        try_launch<F, 1, 4, 1, 4, 5>(v, p, s) || try_launch<F, 1, 2, 2, 0, 5>(v, p, s) ||
        try_launch<F, 1, 8, 1, 0, 2>(v, p, s) || try_launch<F, 1, 4, 1, 0, 3>(v, p, s))
      return true;
  }
  return false;
}

int elems_per_chunk(WeightFormat f) {
  return 16 / esize(f);
}

// One launch for up to 8 rows of x (`m` here), rows [r0, r0 + m) of the caller's input.
void launch_pass(const MatmulInput& in, const MatmulTarget* targets, int count, const GemvTuning& tn,
                 int64_t r0, int m, cudaStream_t s) {
  const WeightFormat f = targets[0].w.format;
  const int64_t k = targets[0].w.k;
  const int M = m == 1 ? 1 : m == 2 ? 2 : m <= 4 ? 4 : 8;
  int R = 0, U = 0;
  for (const Shape& d : kDefault)
    if (d.m == M) R = d.r, U = d.u;
  // One token with fp8_block or bf16 weights: 8 rows per thread, one chunk per row per round, rounds
  // double-buffered in shared memory by cp.async (S = 2), measured fastest (docs/CUDA_BACKEND.md,
  // GEMV). Other formats keep the register pipeline (R = 4, U = 2).
  const bool ab = f == WeightFormat::fp8_block || f == WeightFormat::bf16;
  int S = 0;
  if (M == 1 && ab) R = 8, U = 1, S = 2;
  if (tn.stages >= 0) S = tn.stages;
  if (tn.stages > 0 && !tn.rows) R = tn.stages == 2 ? 8 : 4, U = 1;
  if (tn.rows) R = tn.rows;
  if (tn.unroll) U = tn.unroll;
  const int D = tn.l2_hint ? 4 : 0;
  const int NT = block_threads(S);
  const int64_t nchunk = k / elems_per_chunk(f);
  // Threads per row: as many as keep every thread's U loads per round busy (T * U <= chunks), at most
  // the block; more threads per row = smaller tiles = finer balance over the SMs.
  int T = tn.threads;
  if (!T) {
    T = NT;
    while (T > 32 && int64_t(T) * U > nchunk) T /= 2;
  }
  if (T < 32 || T > NT || (T & (T - 1)))
    throw Error("cuda backend: gemv: threads per row must be a power of two in [32, " + std::to_string(NT) +
                "], got " + std::to_string(T));
  const int rows_per_tile = (NT / T) * R;
  GroupParams p{};
  int64_t tiles = 0;
  for (int i = 0; i < count; ++i) {
    const MatmulTarget& t = targets[i];
    p.t[i].w = static_cast<const uint8_t*>(t.w.data);
    p.t[i].scales = t.w.scales;
    p.t[i].y = t.y + r0 * t.w.n;
    p.t[i].bias = t.bias;
    p.t[i].n = t.w.n;
    p.t[i].tile_begin = int(tiles);
    tiles += (t.w.n + rows_per_tile - 1) / rows_per_tile;
  }
  for (int i = count; i < kMaxGemvTargets; ++i) p.t[i] = p.t[0];
  if (tiles > 0x7fffffff / 2) throw Error("cuda backend: matmul with too many rows");
  if (tiles == 0) return;
  p.count = count;
  p.tiles = int(tiles);
  p.rounds = int((nchunk + int64_t(T) * U - 1) / (int64_t(T) * U));
  p.threads = T;
  p.k = k;
  p.x = in.x + r0 * k;
  p.x_up = in.x_up ? in.x_up + r0 * k : nullptr;
  p.m = m;
  p.x_ld = k;
  p.accumulate = in.accumulate;
  p.scale_f32 = f == WeightFormat::fp8_block && targets[0].w.scale_type == ScaleType::f32;
  const Variant v{M, R, U, D, S};
  bool ok = false;
  switch (f) {
    case WeightFormat::f32:
      ok = dispatch<WeightFormat::f32>(v, p, s);
      break;
    case WeightFormat::bf16:
      ok = dispatch<WeightFormat::bf16>(v, p, s);
      break;
    case WeightFormat::fp8_block:
      ok = dispatch<WeightFormat::fp8_block>(v, p, s);
      break;
    case WeightFormat::mxfp8:
      ok = dispatch<WeightFormat::mxfp8>(v, p, s);
      break;
  }
  if (!ok)
    throw Error("cuda backend: gemv: no kernel for " + std::string(weight_format_name(f)) + " M " +
                std::to_string(M) + " R " + std::to_string(R) + " U " + std::to_string(U) + " decode " +
                std::to_string(D) + " stages " + std::to_string(S));
}

}  // namespace

bool gemv_group_applies(const MatmulInput& in, const MatmulTarget* targets, int count) {
  if (count < 1 || count > kMaxGemvTargets || in.m < 1 || in.m > 16 || !in.x) return false;
  if (in.norm) {
    // Only the mma GEMV fuses rmsnorm; where the skinny GEMM takes the rows (m >= 5), normalizing
    // first and reading the weights once beats re-reading them per 4 rows (CudaBackend::matmul_fused).
    MatmulInput plain = in;
    plain.norm = nullptr;
    return !gemv_fp8_skinny_applies(plain, targets, count) && gemv_fp8_mma_rows(in, targets, count) > 0;
  }
  const WeightView& w0 = targets[0].w;
  const int64_t k = w0.k;
  // The vector path loads 16-byte chunks of W rows and float4s of x: rows of whole chunks, aligned.
  if (k <= 0 || (k * esize(w0.format)) % 16 != 0 || k % 4 != 0 || !aligned16(in.x) ||
      (in.x_up && !aligned16(in.x_up)))
    return false;
  for (int i = 0; i < count; ++i) {
    const WeightView& w = targets[i].w;
    if (w.format != w0.format || w.k != k || !aligned16(w.data) || !targets[i].y || w.n < 0) return false;
    if (w.format == WeightFormat::fp8_block && w.scale_type != w0.scale_type) return false;
  }
  return true;
}

void launch_gemv_group_tuned(const MatmulInput& in, const MatmulTarget* targets, int count,
                             const GemvTuning& tuning, cudaStream_t s) {
  if (!gemv_group_applies(in, targets, count))
    throw Error("cuda backend: gemv group: targets do not meet gemv_group_applies");
  const bool knobs =
      tuning.simt || tuning.rows || tuning.unroll || tuning.threads || tuning.l2_hint || tuning.stages >= 0;
  if (knobs && in.norm) throw Error("cuda backend: gemv group: tuning knobs with a fused rmsnorm");
  if (!knobs && gemv_fp8_skinny_applies(in, targets, count)) {  // fp8_block, m >= 5 (>= 3 at k >= 4096)
    launch_gemv_fp8_skinny(in, targets, count, s);
    return;
  }
  if (const int rows = knobs ? 0 : gemv_fp8_mma_rows(in, targets, count)) {
    for (int64_t r0 = 0; r0 < in.m; r0 += rows)
      launch_gemv_fp8_mma(in, targets, count, r0, int(std::min<int64_t>(rows, in.m - r0)), s);
    check_launch("matmul (fp8 mma gemv)");
    return;
  }
  for (int64_t r0 = 0; r0 < in.m; r0 += 8)
    launch_pass(in, targets, count, tuning, r0, int(std::min<int64_t>(8, in.m - r0)), s);
  check_launch("matmul (gemv group)");
}

void launch_gemv_group(const MatmulInput& in, const MatmulTarget* targets, int count, cudaStream_t s) {
  launch_gemv_group_tuned(in, targets, count, GemvTuning{}, s);
}

bool launch_gemv_swiglu(const MatmulInput& in, const MatmulTarget& gate, const MatmulTarget& up,
                        cudaStream_t s) {
  const MatmulTarget t[2] = {gate, up};
  // Where launch_gemv_group would take the mma GEMV (not the skinny GEMM, not the SIMT kernels).
  if (!gemv_group_applies(in, t, 2) || gemv_fp8_skinny_applies(in, t, 2) ||
      !gemv_fp8_mma_swiglu_applies(in, gate, up))
    return false;
  launch_gemv_fp8_mma_swiglu(in, gate, up, s);
  check_launch("matmul (fp8 mma gemv, swiglu)");
  return true;
}

void launch_gemv(const WeightView& w, const float* x, int64_t m, float* y, const float* bias,
                 cudaStream_t s) {
  if (m <= 0) return;
  MatmulInput in;
  in.x = x;
  in.m = m;
  MatmulTarget t;
  t.w = w;
  t.y = y;
  t.bias = bias;
  in.m = std::min<int64_t>(m, 16);
  if (gemv_group_applies(in, &t, 1)) {
    for (int64_t r0 = 0; r0 < m; r0 += 16) {  // callers pass m <= 16; more rows stream W again per 16
      in.x = x + r0 * w.k;
      in.m = std::min<int64_t>(16, m - r0);
      t.y = y + r0 * w.n;
      launch_gemv_group(in, &t, 1, s);
    }
    return;
  }
  if ((w.n + kWarpsPerBlock - 1) / kWarpsPerBlock > 0x7fffffff)
    throw Error("cuda backend: matmul with too many rows");
  const unsigned blocks = unsigned((w.n + kWarpsPerBlock - 1) / kWarpsPerBlock);
  launch("gemv_scalar_kernel", gemv_scalar_kernel, dim3(blocks), dim3(kWarpsPerBlock * 32), s, w, x, m, y,
         bias);
  check_launch("matmul (gemv, scalar)");
}

}  // namespace mx8::backend::cuda_impl
