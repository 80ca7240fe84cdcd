// matmul for few rows of activations (decode): y[m][n] = x[m][k] W^T (+ bias), m <= 8 per launch.
//
// Decode is a stream of weight bytes: each weight is used once per row of x, so the kernel's job is
// to keep enough 16-byte loads in flight to saturate HBM and to do the decoding in registers.
// One warp computes one output feature (one row of W): lane j reads 16-byte chunks j, j + 32, ...
// of the row, kUnroll chunks per round all issued before any is used, with ld.global.nc.L1::no_allocate
// (weights are streamed once; L1 keeps x, which every warp of the SM re-reads). Each chunk holds 16
// E4M3 codes (4 f32, 8 bf16) that lie inside one scale block (16 divides 32 and 128); it is decoded
// with the hardware E4M3x2 -> f16x2 conversion (exact: E4M3 is a subset of f16), multiplied by x in
// f32, and the chunk's partial sum is multiplied by its block scale - the CPU backend's "partial sum
// per scale block, times the scale" - before joining the lane's total. Lanes are summed with shuffles.
//
// Activations stay f32: nothing is quantized (activation_quantization() says so).
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/backend_cuda_weight.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kWarpsPerBlock = 8;

struct GemvParams {
  const uint8_t* w;
  const void* scales;
  bool scale_f32;
  int64_t n, k;
  const float* x;
  int64_t x_ld;  // row stride of x (== k)
  float* y;
  int64_t y_ld;  // row stride of y (== n)
  const float* bias;
  int m;  // rows of x in this launch, <= M
};

__device__ __forceinline__ uint4 load_stream(const uint8_t* p) {
  uint4 r;
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

struct ChunkE4m3 {
  static constexpr int kElems = 16;
  __device__ static void decode(const uint4& r, float* v) {
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i] & 0xffffu), __NV_E4M3);
      __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(w[i] >> 16), __NV_E4M3);
      float2 a = __half22float2(__half2(lo));
      float2 b = __half22float2(__half2(hi));
      v[4 * i] = a.x;
      v[4 * i + 1] = a.y;
      v[4 * i + 2] = b.x;
      v[4 * i + 3] = b.y;
    }
  }
};
// The same 16 E4M3 codes decoded with integer ops only (no conversion unit). The hardware
// cvt path above costs 1.5 conversions per weight byte (E4M3x2 -> f16x2, then f16 -> f32), and the
// conversion pipe (16 per clock per SM) caps that at ~2.8 TB/s on the H200 - the FP8 GEMV measured
// 2.4 TB/s (57% of copy bandwidth) while BF16, shifts only, reached 77%. Here a code's sign goes to
// bit 31 and its 7 exponent+mantissa bits to bits 26..20, which reads as an f32 equal to the E4M3
// value times 2^-120 (E4M3 subnormals become f32 subnormals, still exact); one multiply by 2^120
// (exact) restores it: 3 integer ops and 1 FMUL per weight. NaN codes (S.1111.111) would decode as
// +-480, so each chunk is also checked for them (3 integer ops per 4 codes) and a chunk holding one
// makes the row's result NaN, as the CPU's lut[code] does.
struct ChunkE4m3Int {
  __device__ static float one(uint32_t top) {  // the code in bits 31..24 of `top`
    return __uint_as_float(uint32_t(int32_t(top) >> 4) & 0x87f00000u) * 0x1p120f;
  }
  __device__ static void decode(const uint4& r, float* v) {
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      v[4 * i] = one(w[i] << 24);
      v[4 * i + 1] = one(w[i] << 16);
      v[4 * i + 2] = one(w[i] << 8);
      v[4 * i + 3] = one(w[i]);
    }
  }
  // Nonzero when a byte of the chunk is an E4M3 NaN code: (code & 0x7f) + 1 == 0x80 only for 0x7f,
  // and no byte carries into the next one.
  __device__ static uint32_t nan_bytes(const uint4& r) {
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
    uint32_t f = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) f |= (w[i] & 0x7f7f7f7fu) + 0x01010101u;
    return f & 0x80808080u;
  }
};

template <>
struct Chunk<WeightFormat::fp8_block> : ChunkE4m3 {};
template <>
struct Chunk<WeightFormat::mxfp8> : ChunkE4m3 {};

template <WeightFormat F>
__device__ __forceinline__ float chunk_scale(const GemvParams& p, int64_t row, int64_t col) {
  if constexpr (F == WeightFormat::fp8_block) {
    const int64_t idx = (row >> 7) * ((p.k + 127) >> 7) + (col >> 7);
    return p.scale_f32 ? static_cast<const float*>(p.scales)[idx]
                       : format::ue8m0_to_f32(static_cast<const uint8_t*>(p.scales)[idx]);
  } else if constexpr (F == WeightFormat::mxfp8) {
    return format::ue8m0_to_f32(static_cast<const uint8_t*>(p.scales)[row * ((p.k + 31) >> 5) + (col >> 5)]);
  } else {
    return 1.0f;
  }
}

constexpr int esize(WeightFormat f) {
  return f == WeightFormat::f32 ? 4 : f == WeightFormat::bf16 ? 2 : 1;
}

// Vector path: requires (k * esize) % 16 == 0, k % 4 == 0 and 16-byte aligned w and x.
// A warp computes R consecutive rows (output features): the x values a lane loads for a chunk are
// reused for all R rows, which cuts the L1 traffic for x from 4 bytes per weight byte (E4M3, one row)
// to 1 (R = 4) - with one row per warp the x loads, not DRAM, limited the FP8 GEMV to ~30% of the
// copy bandwidth on the H200. R rows never straddle a 128-row scale block (R divides 128), so
// fp8_block rows share one scale per chunk.
template <WeightFormat F, int M, int R, int U, bool kIntDecode>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) gemv_kernel(GemvParams p) {
  pdl_trigger();
  constexpr int E = Chunk<F>::kElems;
  constexpr bool kFp8 = F == WeightFormat::fp8_block || F == WeightFormat::mxfp8;
  constexpr bool kInt = kFp8 && kIntDecode;
  const int lane = threadIdx.x & 31;
  const int64_t row0 = (int64_t(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5)) * R;
  const int64_t nchunk = row0 < p.n ? p.k / E : 0;
  const uint8_t* wrow[R];
#pragma unroll
  for (int j = 0; j < R; ++j) {
    const int64_t r = row0 + j < p.n ? row0 + j : p.n - 1;  // rows past n are read (row n-1), never stored
    wrow[j] = p.w + r * p.k * esize(F);
  }
  float acc[R][M];
#pragma unroll
  for (int j = 0; j < R; ++j)
#pragma unroll
    for (int i = 0; i < M; ++i) acc[j][i] = 0.0f;

      // The first round of each row is prefetched into L2 before waiting for the previous kernel, so the
      // weight stream starts while that kernel drains. (A prefetch into L2, the point of coherence, not a
      // load into registers: it stays correct even if a weight were written by the previous kernel.)
#pragma unroll
  for (int j = 0; j < R; ++j)
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = lane + int64_t(u) * 32;
      if (c < nchunk) asm volatile("prefetch.global.L2 [%0];" ::"l"(wrow[j] + c * 16));
    }
  pdl_wait();
  if (row0 >= p.n) return;

  for (int64_t c0 = lane; c0 < nchunk; c0 += 32 * U) {
    uint4 raw[R][U];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int j = 0; j < R; ++j) {
        const int64_t c = c0 + int64_t(u) * 32;
        if (c < nchunk) raw[j][u] = load_stream(wrow[j] + c * 16);
      }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + int64_t(u) * 32;
      if (c < nchunk) {
        // Decode the R rows' chunks once, then stream x row by row (E floats live at a time).
        const float sc_shared = chunk_scale<F>(p, row0, c * E);  // fp8_block: one scale for the R rows
        float wv[R][E];
        float sc[R];
        bool nan[R];
#pragma unroll
        for (int j = 0; j < R; ++j) {
          if constexpr (kInt) {
            ChunkE4m3Int::decode(raw[j][u], wv[j]);
            nan[j] = ChunkE4m3Int::nan_bytes(raw[j][u]) != 0;
          } else {
            Chunk<F>::decode(raw[j][u], wv[j]);
            nan[j] = false;
          }
          sc[j] = F == WeightFormat::mxfp8 ? chunk_scale<F>(p, row0 + j < p.n ? row0 + j : p.n - 1, c * E)
                                           : sc_shared;
        }
#pragma unroll
        for (int i = 0; i < M; ++i) {
          if (i < p.m) {
            float xi[E];
            const float4* xp = reinterpret_cast<const float4*>(p.x + i * p.x_ld + c * E);
#pragma unroll
            for (int e4 = 0; e4 < E / 4; ++e4) {
              const float4 t = __ldg(xp + e4);
              xi[4 * e4] = t.x;
              xi[4 * e4 + 1] = t.y;
              xi[4 * e4 + 2] = t.z;
              xi[4 * e4 + 3] = t.w;
            }
#pragma unroll
            for (int j = 0; j < R; ++j) {
              float part = 0.0f;
#pragma unroll
              for (int e = 0; e < E; ++e) part += wv[j][e] * xi[e];
              if constexpr (kFp8) part *= sc[j];
              if constexpr (kInt) part = nan[j] ? __uint_as_float(0x7fffffffu) : part;
              acc[j][i] += part;
            }
          }
        }
      }
    }
  }
  // Ragged tail (k not a multiple of the chunk): element by element.
  for (int64_t col = (p.k / E) * E + lane; col < p.k; col += 32) {
#pragma unroll
    for (int j = 0; j < R; ++j) {
      const int64_t r = row0 + j < p.n ? row0 + j : p.n - 1;
      float wv;
      if constexpr (F == WeightFormat::f32)
        wv = reinterpret_cast<const float*>(wrow[j])[col];
      else if constexpr (F == WeightFormat::bf16)
        wv = format::bf16_to_f32(reinterpret_cast<const uint16_t*>(wrow[j])[col]);
      else
        wv = format::e4m3_to_f32(wrow[j][col]) * chunk_scale<F>(p, r, col);
#pragma unroll
      for (int i = 0; i < M; ++i)
        if (i < p.m) acc[j][i] += wv * p.x[i * p.x_ld + col];
    }
  }
  // Lane j * M + i ends up with output (row0 + j, x row i).
  float out = 0.0f;
#pragma unroll
  for (int j = 0; j < R; ++j)
#pragma unroll
    for (int i = 0; i < M; ++i) {
      float v = acc[j][i];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == j * M + i) out = v;
    }
  const int j = lane / M, i = lane % M;
  if (lane < R * M && i < p.m && row0 + j < p.n) {
    if (p.bias) out += p.bias[row0 + j];
    p.y[i * p.y_ld + row0 + j] = out;
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

// MX8_CUDA_FP8_DECODE=int selects the integer E4M3 decode (opt-in: measured slower on the H200,
// docs/CUDA_BACKEND.md); the default is the hardware conversion.
bool fp8_int_decode() {
  static const bool on = [] {
    const char* e = std::getenv("MX8_CUDA_FP8_DECODE");
    return e && std::strcmp(e, "int") == 0;
  }();
  return on;
}

// MX8_CUDA_GEMV=r4u4 / r4u8 / r2u8 / r8u2 forces rows per warp (R) and chunks per row per round (U)
// for one token and n >= 4096, for A/B measurements. The default takes R = 8, U = 2 for n >= 8192
// and R = 4, U = 4 below. Measured on the H200 (gate 14336x4096 FP8 alone, 2026-11-28): r4u4 2407
// GB/s, r8u2 3005 GB/s, r4u8 1846, r2u8 1887 - the x values a lane loads from L1 (reused over R
// rows), not the weight loads in flight, limit the FP8 GEMV. With r8u2 everywhere the whole decode
// step got slower (210.9 vs 216.0 tok/s): n = 4096 has only 64 blocks of 8 warps at R = 8, fewer
// than the 132 SMs, so n < 8192 keeps R = 4.
int gemv_variant() {
  static const int v = [] {
    const char* e = std::getenv("MX8_CUDA_GEMV");
    if (!e) return 0;
    if (std::strcmp(e, "r4u8") == 0) return 1;
    if (std::strcmp(e, "r2u8") == 0) return 2;
    if (std::strcmp(e, "r8u2") == 0) return 3;
    if (std::strcmp(e, "r4u4") == 0) return 4;
    return 0;
  }();
  return v;
}

template <WeightFormat F, int M, int R, int U>
void launch_rows(const GemvParams& p, cudaStream_t s) {
  const unsigned blocks = unsigned((p.n + kWarpsPerBlock * R - 1) / (kWarpsPerBlock * R));
  constexpr bool kFp8 = F == WeightFormat::fp8_block || F == WeightFormat::mxfp8;
  if constexpr (kFp8) {
    if (fp8_int_decode()) {
      launch("gemv_kernel", gemv_kernel<F, M, R, U, true>, dim3(blocks), dim3(kWarpsPerBlock * 32), s, p);
      return;
    }
  }
  launch("gemv_kernel", gemv_kernel<F, M, R, U, false>, dim3(blocks), dim3(kWarpsPerBlock * 32), s, p);
}

template <WeightFormat F>
void launch_vec(const GemvParams& base, int64_t m, cudaStream_t s) {
  for (int64_t r0 = 0; r0 < m; r0 += 8) {
    GemvParams p = base;
    p.x = base.x + r0 * base.x_ld;
    p.y = base.y + r0 * base.y_ld;
    p.m = int(m - r0 < 8 ? m - r0 : 8);
    // Rows per warp: 4 for one token (decode), fewer as the x registers grow with M; small n (the k/v
    // projections' 1024 rows) keeps 2 rows per warp so that more SMs take part.
    if (p.m == 1 && p.n >= 4096) {
      switch (gemv_variant()) {
        case 1:
          launch_rows<F, 1, 4, 8>(p, s);
          break;
        case 2:
          launch_rows<F, 1, 2, 8>(p, s);
          break;
        case 3:
          launch_rows<F, 1, 8, 2>(p, s);
          break;
        case 4:
          launch_rows<F, 1, 4, 4>(p, s);
          break;
        default:
          if (p.n >= 8192)
            launch_rows<F, 1, 8, 2>(p, s);
          else
            launch_rows<F, 1, 4, 4>(p, s);
      }
    } else if (p.m == 1)
      launch_rows<F, 1, 2, 4>(p, s);
    else if (p.m == 2)
      launch_rows<F, 2, 2, 4>(p, s);
    else if (p.m <= 4)
      launch_rows<F, 4, 1, 4>(p, s);
    else
      launch_rows<F, 8, 1, 4>(p, s);
  }
}

}  // namespace

void launch_gemv(const WeightView& w, const float* x, int64_t m, float* y, const float* bias,
                 cudaStream_t s) {
  if (m <= 0) return;
  if ((w.n + kWarpsPerBlock - 1) / kWarpsPerBlock > 0x7fffffff)
    throw Error("cuda backend: matmul with too many rows");
  const int es = w.format == WeightFormat::f32 ? 4 : w.format == WeightFormat::bf16 ? 2 : 1;
  const bool aligned = (w.k * es) % 16 == 0 && w.k % 4 == 0 &&
                       reinterpret_cast<uintptr_t>(w.data) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(x) % 16 == 0;
  if (!aligned) {
    const unsigned blocks = unsigned((w.n + kWarpsPerBlock - 1) / kWarpsPerBlock);
    launch("gemv_scalar_kernel", gemv_scalar_kernel, dim3(blocks), dim3(kWarpsPerBlock * 32), s, w, x, m, y,
           bias);
    check_launch("matmul (gemv, scalar)");
    return;
  }
  GemvParams p{static_cast<const uint8_t*>(w.data),
               w.scales,
               w.scale_type == ScaleType::f32,
               w.n,
               w.k,
               x,
               w.k,
               y,
               w.n,
               bias,
               1};
  switch (w.format) {
    case WeightFormat::f32:
      launch_vec<WeightFormat::f32>(p, m, s);
      break;
    case WeightFormat::bf16:
      launch_vec<WeightFormat::bf16>(p, m, s);
      break;
    case WeightFormat::fp8_block:
      launch_vec<WeightFormat::fp8_block>(p, m, s);
      break;
    case WeightFormat::mxfp8:
      launch_vec<WeightFormat::mxfp8>(p, m, s);
      break;
  }
  check_launch("matmul (gemv)");
}

}  // namespace mx8::backend::cuda_impl
