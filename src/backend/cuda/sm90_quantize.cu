// GPU quantizers and dequantizer (include/mx8/backend/cuda/quantize.h). Every kernel computes the
// block scale with the format layer's own compute_block_scale and encodes with either the format
// layer's encode_element or, for saturating E4M3/E5M2, the hardware cvt.rn.satfinite instruction,
// which rounds identically (RNE, NaN -> 0x7F, overflow -> max); tests/cuda checks every byte
// against quantize_ref. The bandwidth-bound paths live in their own headers: the streaming 1xK
// kernel (quantize_stream.cuh: activations 1x128 and MXFP8 1x32) and the dual X / X^T kernels
// (quantize_dual.cuh); docs/CUDA.md has their design and measurements.
#include <cuda_fp8.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/quantize_dual.cuh"
#include "backend/cuda/quantize_stream.cuh"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/backend/cuda/quantize.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::cuda {
namespace {

namespace fmt = mx8::format;

using qdev::ScaleWriter;

__device__ __forceinline__ float load_src(fmt::SourceType t, const void* src, int64_t i) {
  switch (t) {
    case fmt::SourceType::f32:
      return static_cast<const float*>(src)[i];
    case fmt::SourceType::bf16:
      return fmt::bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    default:
      return fmt::f16_to_f32(static_cast<const uint16_t*>(src)[i]);
  }
}

using qdev::cvt2;

__device__ __forceinline__ uint32_t unpack_bf16_lo(uint32_t w) {
  return w << 16;
}
__device__ __forceinline__ uint32_t unpack_bf16_hi(uint32_t w) {
  return w & 0xFFFF0000u;
}

// ---------------------------------------------------------------------------------------------
// 1xK tile quantizer for what the streaming kernel does not take (ragged widths, cols % 16 == 0
// but not % K; misaligned codes; 2^31 values or more): bf16 input, 8-bit elements. Each thread
// owns 16 consecutive values (two 16-byte loads, one 16-byte store of codes); a group of K/16
// lanes owns one block and reduces its amax with shuffles. Row = blockIdx.y (grid-stride), so all
// index math is 32-bit.
template <int K>
__global__ void __launch_bounds__(256)
    quantize_tile_bf16_kernel(const uint16_t* __restrict__ src, int rows, int cols, fmt::ElementFormat elem,
                              fmt::ScaleOptions opt, bool saturate, ScaleWriter sw,
                              uint8_t* __restrict__ codes, uint8_t* __restrict__ scales) {
  constexpr int L = K / 16;
  const int chunk = blockIdx.x * blockDim.x + threadIdx.x;  // 16-value chunk within the row
  const int c0 = chunk * 16;
  const int li = chunk % L;
  const bool active = c0 < cols;
  const bool hw = saturate && (elem == fmt::ElementFormat::e4m3 || elem == fmt::ElementFormat::e5m2);
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const uint16_t* row = src + static_cast<size_t>(r) * cols;
    uint4 v0 = make_uint4(0, 0, 0, 0), v1 = v0;
    if (active) {
      v0 = __ldg(reinterpret_cast<const uint4*>(row + c0));
      v1 = __ldg(reinterpret_cast<const uint4*>(row + c0 + 8));
    }
    const uint32_t w[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    float x[16];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      x[2 * i] = __uint_as_float(unpack_bf16_lo(w[i]));
      x[2 * i + 1] = __uint_as_float(unpack_bf16_hi(w[i]));
    }
    uint32_t amax = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) amax = fmt::amax_bits_accumulate(amax, x[i]);
#pragma unroll
    for (int off = L / 2; off > 0; off /= 2) amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off, L));
    if (!active) continue;
    const fmt::BlockScale sc = fmt::compute_block_scale(__uint_as_float(amax), elem, opt);
    uint32_t q[4];
    if (hw) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
        q[i] = cvt2(x[4 * i] * sc.inv_scale, x[4 * i + 1] * sc.inv_scale, elem) |
               cvt2(x[4 * i + 2] * sc.inv_scale, x[4 * i + 3] * sc.inv_scale, elem) << 16;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        q[i] = 0;
#pragma unroll
        for (int b = 0; b < 4; ++b)
          q[i] |= static_cast<uint32_t>(fmt::encode_element(elem, x[4 * i + b] * sc.inv_scale, saturate))
                  << (8 * b);
      }
    }
    *reinterpret_cast<uint4*>(codes + static_cast<size_t>(r) * cols + c0) =
        make_uint4(q[0], q[1], q[2], q[3]);
    if (li == 0) sw.write(scales, r, c0 / K, sc);
  }
}

// 128x128 weight blocks (DeepSeek's weight_scale_inv granularity): one thread block per scale
// block, bf16 input, 8-bit elements, cols % 8 == 0. Thread t loads rows t/16 + 16i (i < 8), columns
// 8 (t % 16) .. +7: eight 16-byte loads held in registers across the block-wide amax.
__global__ void __launch_bounds__(256)
    quantize_block128_bf16_kernel(const uint16_t* __restrict__ src, int rows, int cols,
                                  fmt::ElementFormat elem, fmt::ScaleOptions opt, bool saturate,
                                  ScaleWriter sw, uint8_t* __restrict__ codes, uint8_t* __restrict__ scales) {
  __shared__ uint32_t warp_amax[8];
  const int r0 = blockIdx.y * 128, c0 = blockIdx.x * 128 + (threadIdx.x % 16) * 8;
  const bool col_ok = c0 < cols;
  uint4 v[8];
  uint32_t amax = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = r0 + threadIdx.x / 16 + 16 * i;
    v[i] = make_uint4(0, 0, 0, 0);
    if (col_ok && r < rows)
      v[i] = __ldg(reinterpret_cast<const uint4*>(src + static_cast<size_t>(r) * cols + c0));
    const uint32_t w[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      amax = fmt::amax_bits_accumulate(amax, __uint_as_float(unpack_bf16_lo(w[j])));
      amax = fmt::amax_bits_accumulate(amax, __uint_as_float(unpack_bf16_hi(w[j])));
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off /= 2) amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
  amax = 0;
#pragma unroll
  for (int w = 0; w < 8; ++w) amax = max(amax, warp_amax[w]);
  const fmt::BlockScale sc = fmt::compute_block_scale(__uint_as_float(amax), elem, opt);
  const bool hw = saturate && (elem == fmt::ElementFormat::e4m3 || elem == fmt::ElementFormat::e5m2);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = r0 + threadIdx.x / 16 + 16 * i;
    if (!col_ok || r >= rows) continue;
    const uint32_t w[4] = {v[i].x, v[i].y, v[i].z, v[i].w};
    float x[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      x[2 * j] = __uint_as_float(unpack_bf16_lo(w[j])) * sc.inv_scale;
      x[2 * j + 1] = __uint_as_float(unpack_bf16_hi(w[j])) * sc.inv_scale;
    }
    uint32_t lo, hi;
    if (hw) {
      lo = cvt2(x[0], x[1], elem) | cvt2(x[2], x[3], elem) << 16;
      hi = cvt2(x[4], x[5], elem) | cvt2(x[6], x[7], elem) << 16;
    } else {
      lo = hi = 0;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        lo |= static_cast<uint32_t>(fmt::encode_element(elem, x[b], saturate)) << (8 * b);
        hi |= static_cast<uint32_t>(fmt::encode_element(elem, x[4 + b], saturate)) << (8 * b);
      }
    }
    *reinterpret_cast<uint2*>(codes + static_cast<size_t>(r) * cols + c0) = make_uint2(lo, hi);
  }
  if (threadIdx.x == 0) sw.write(scales, blockIdx.y, blockIdx.x, sc);
}

// ---------------------------------------------------------------------------------------------
// Generic quantizer: one thread block per scale block, any source type, element, blocking, storage.
__global__ void quantize_generic_kernel(fmt::SourceType st, const void* __restrict__ src, int64_t rows,
                                        int64_t cols, fmt::ScaleGrid g, fmt::ElementFormat elem,
                                        fmt::ScaleOptions opt, bool saturate, ScaleWriter sw,
                                        const uint32_t* tensor_amax, uint8_t* __restrict__ codes,
                                        uint8_t* __restrict__ scales) {
  __shared__ uint32_t warp_amax[32];
  const int64_t gr = blockIdx.y, gc = blockIdx.x;
  const int64_t r0 = gr * g.block_rows, r1 = min(rows, r0 + g.block_rows);
  const int64_t c0 = gc * g.block_cols, c1 = min(cols, c0 + g.block_cols);
  const int64_t bc = c1 - c0, n = (r1 - r0) * bc;
  uint32_t amax = 0;
  if (tensor_amax) {
    amax = *tensor_amax;
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      amax = fmt::amax_bits_accumulate(amax, load_src(st, src, (r0 + i / bc) * cols + c0 + i % bc));
    for (int off = 16; off > 0; off /= 2) amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
    if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
    __syncthreads();
    amax = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) amax = max(amax, warp_amax[w]);
  }
  const fmt::BlockScale s = fmt::compute_block_scale(__uint_as_float(amax), elem, opt);
  if (elem == fmt::ElementFormat::e2m1) {
    // Two elements per byte; block column extents are even (or whole rows), so a byte never spans
    // two blocks. Element 2i in the low nibble.
    const int64_t row_bytes = (cols + 1) / 2, pairs = (bc + 1) / 2;
    for (int64_t i = threadIdx.x; i < (r1 - r0) * pairs; i += blockDim.x) {
      const int64_t r = r0 + i / pairs, c = c0 + 2 * (i % pairs);
      const uint8_t lo = fmt::encode_element(elem, load_src(st, src, r * cols + c) * s.inv_scale, saturate);
      const uint8_t hi =
          c + 1 < c1 ? fmt::encode_element(elem, load_src(st, src, r * cols + c + 1) * s.inv_scale, saturate)
                     : 0;
      codes[r * row_bytes + c / 2] = static_cast<uint8_t>(lo | hi << 4);
    }
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const int64_t idx = (r0 + i / bc) * cols + c0 + i % bc;
      codes[idx] = fmt::encode_element(elem, load_src(st, src, idx) * s.inv_scale, saturate);
    }
  }
  if (threadIdx.x == 0) sw.write(scales, gr, gc, s);
}

// Per-tensor amax, NaN-propagating (as integer max of |x| bits).
__global__ void tensor_amax_kernel(fmt::SourceType st, const void* __restrict__ src, int64_t n,
                                   uint32_t* out) {
  uint32_t amax = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    amax = fmt::amax_bits_accumulate(amax, load_src(st, src, i));
  for (int off = 16; off > 0; off /= 2) amax = max(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
  if (threadIdx.x % 32 == 0) atomicMax(out, amax);
}

// Per-tensor encode (grid-stride; the single scale block is the whole tensor).
__global__ void encode_tensor_kernel(fmt::SourceType st, const void* __restrict__ src, int64_t n,
                                     fmt::ElementFormat elem, fmt::ScaleOptions opt, bool saturate,
                                     const uint32_t* amax, uint8_t* __restrict__ codes) {
  const fmt::BlockScale s = fmt::compute_block_scale(__uint_as_float(*amax), elem, opt);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    codes[i] = fmt::encode_element(elem, load_src(st, src, i) * s.inv_scale, saturate);
}

// ---------------------------------------------------------------------------------------------
__global__ void dequantize_kernel(const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scales,
                                  int64_t rows, int64_t cols, fmt::ScaleGrid g, fmt::ElementFormat elem,
                                  fmt::ScaleStorage storage, float* __restrict__ dst) {
  const int64_t n = rows * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const int64_t gr = r / g.block_rows, gc = c / g.block_cols;
    float scale;
    switch (storage) {
      case fmt::ScaleStorage::f32:
        scale = reinterpret_cast<const float*>(scales)[gr * g.cols + gc];
        break;
      case fmt::ScaleStorage::ue8m0:
        scale = fmt::ue8m0_to_f32(scales[gr * g.cols + gc]);
        break;
      case fmt::ScaleStorage::ue8m0_packed4:
        scale = fmt::ue8m0_to_f32(scales[gr * fmt::ceil_div(g.cols, 4) * 4 + gc]);
        break;
      default:
        scale = fmt::ue8m0_to_f32(scales[fmt::blackwell_offset(r, c / 32, fmt::ceil_div(cols, 32))]);
        break;
    }
    uint8_t code;
    if (elem == fmt::ElementFormat::e2m1) {
      const uint8_t byte = codes[r * ((cols + 1) / 2) + c / 2];
      code = (c & 1) ? static_cast<uint8_t>(byte >> 4) : static_cast<uint8_t>(byte & 0xF);
    } else {
      code = codes[i];
    }
    dst[i] = fmt::decode_element(elem, code) * scale;
  }
}

// Dequantize for one-byte codes in rows of whole 4-code groups with one scale per group (block_cols
// a multiple of 4; f32 or UE8M0 scales, packed4 included): a lane loads 4 codes and stores one
// float4, so a warp's loads and stores are both contiguous, and the index arithmetic (32-bit where
// the tensor allows) is paid once per 4 elements. The element-wise kernel above divides a 64-bit
// index per element: 16% of copy bandwidth on the H200; 16 codes per lane with strided float4
// stores: 29%.
template <typename Index>
__global__ void dequantize_vec4_kernel(const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scales,
                                       Index rows, Index cols, fmt::ScaleGrid g, fmt::ElementFormat elem,
                                       fmt::ScaleStorage storage, float* __restrict__ dst) {
  const Index per_row = cols / 4, n = rows * per_row;
  const Index scale_ld =
      Index(storage == fmt::ScaleStorage::ue8m0_packed4 ? fmt::ceil_div(g.cols, 4) * 4 : g.cols);
  const Index block_rows = Index(g.block_rows), block_cols = Index(g.block_cols);
  for (Index q = Index(blockIdx.x) * blockDim.x + threadIdx.x; q < n; q += Index(gridDim.x) * blockDim.x) {
    const Index r = q / per_row, c = (q - r * per_row) * 4;
    const Index si = (r / block_rows) * scale_ld + c / block_cols;
    const float scale = storage == fmt::ScaleStorage::f32 ? reinterpret_cast<const float*>(scales)[si]
                                                          : fmt::ue8m0_to_f32(scales[si]);
    const uint32_t w = reinterpret_cast<const uint32_t*>(codes)[q];
    float f[4];
#pragma unroll
    for (int b = 0; b < 4; ++b) f[b] = fmt::decode_element(elem, static_cast<uint8_t>(w >> (8 * b))) * scale;
    reinterpret_cast<float4*>(dst)[q] = make_float4(f[0], f[1], f[2], f[3]);
  }
}

ScaleWriter make_writer(const fmt::QuantSpec& spec, int64_t rows, int64_t cols, int mn_ld) {
  const fmt::ScaleGrid g = fmt::scale_grid(spec.blocking, rows, cols);
  return ScaleWriter{spec.storage, g.cols, fmt::ceil_div(g.cols, 4) * 4, rows, cols, g.block_rows,
                     g.block_cols, mn_ld};
}

int stride_grid() {
  return 132 * 8;
}

// Kernel configurations. The defaults are the best measured on the H200 (docs/CUDA.md, "Quantizer
// tuning"); the environment overrides them for benchmark experiments:
//   MX8_QUANT_CFG128 / MX8_QUANT_CFG32 = "P,S,B,H,F": the streaming kernel on 1x128 / 1x32 tiles:
//     pieces per lane, sets in flight, minimum blocks per SM (launch bounds), cache-hint mask
//     (qdev::kHint*: 1 streaming loads, 2 evict-first stores, 4 evict-first-policy loads, 8 loads
//     without L1 allocation), 1 = software-pipelined loads. Only the instantiations in
//     launch_stream_any exist; other values take the default.
//   MX8_QUANT_ACT = "M,C,R,O,H": quantize_act_1x128's kernel, M 0 the streaming kernel, 1 the 2-D
//     tile kernel (default) with C column strips per block (1 or 2), R rows per lane (2 or 4),
//     O 1 = row blocks fastest in the grid (measured 4-6 points slower), H the cache-hint mask.
//   MX8_QUANT_DUAL = B: the dual kernel's minimum blocks per SM (launch bounds: 2 or 3).
//   MX8_QUANT_BPS: a cap on the streaming kernel's blocks per SM.
struct StreamCfg {
  int p, s, b, hints, pf;
};
struct ActCfg {
  int mode, cw, r, rows_fast, hints;
};
struct Knobs {
  StreamCfg k128, k32;
  int dual_blocks;
  ActCfg act;
  int bps;
};
const Knobs& knobs() {
  static const Knobs k = [] {
    auto get = [](const char* name, int dflt) {
      const char* v = std::getenv(name);
      return v && *v ? std::atoi(v) : dflt;
    };
    auto cfg = [](const char* name, StreamCfg dflt) {
      const char* v = std::getenv(name);
      StreamCfg c = dflt;
      if (v && std::sscanf(v, "%d,%d,%d,%d,%d", &c.p, &c.s, &c.b, &c.hints, &c.pf) != 5) c = dflt;
      return c;
    };
    // The defaults: the best measured (docs/CUDA.md, "Quantizer tuning").
    // The 2-D tile kernel, two rows per lane (H200, mx8 bench cuda-quantize, 2026-11-29: 4096 x 16384
    // 54.0 us, 16384 x 7168 88.4 us against the streaming kernel's 60.3 and 101.1; four rows per lane
    // and two column strips measured the same within 1%).
    const ActCfg act_default{1, 1, 2, 0, 0};
    ActCfg act = act_default;
    if (const char* v = std::getenv("MX8_QUANT_ACT"))
      if (std::sscanf(v, "%d,%d,%d,%d,%d", &act.mode, &act.cw, &act.r, &act.rows_fast, &act.hints) != 5)
        act = act_default;
    return Knobs{cfg("MX8_QUANT_CFG128", {2, 1, 6, 0, 0}), cfg("MX8_QUANT_CFG32", {1, 2, 1, 0, 1}),
                 // The dual kernel: 3 blocks per SM (80 registers). 4 per SM (64 registers) spills
                 // 12-20 bytes and gained at most one point (docs/CUDA.md), so it is not built.
                 get("MX8_QUANT_DUAL", 3), act, get("MX8_QUANT_BPS", 0)};
  }();
  return k;
}

struct StreamCall {
  const uint16_t* src;
  int64_t rows, cols;
  fmt::ElementFormat elem;
  fmt::ScaleOptions opt;
  bool saturate;
  const ScaleWriter& sw;
  uint8_t* codes;
  uint8_t* scales;
  cudaStream_t stream;
};

template <int K, int P, int S, int B, bool Pf = false>
bool try_stream(const StreamCfg& c, const StreamCall& a, bool force = false) {
  if (!force && (c.p != P || c.s != S || c.b != B || (c.pf != 0) != Pf)) return false;
  qdev::launch_stream<K, P, S, B, Pf>(a.src, a.rows, a.cols, a.elem, a.opt, a.saturate, c.hints, a.sw,
                                      a.codes, a.scales, knobs().bps, a.stream);
  return true;
}

// The streaming 1xK kernel applies: bf16 rows of whole K-groups, 16-byte aligned input, 8-byte
// aligned codes, fewer than 2^31 values (32-bit flat indices).
bool stream_applies(const void* src, int64_t rows, int64_t cols, int k, const uint8_t* codes) {
  return cols % k == 0 && rows * cols < (int64_t{1} << 31) && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(codes) % 8 == 0;
}

void launch_stream_any(int k, const uint16_t* src, int64_t rows, int64_t cols, fmt::ElementFormat elem,
                       fmt::ScaleOptions opt, bool saturate, const ScaleWriter& sw, uint8_t* codes,
                       uint8_t* scales, cudaStream_t stream) {
  const StreamCall a{src, rows, cols, elem, opt, saturate, sw, codes, scales, stream};
  if (k == 128) {
    const StreamCfg& c = knobs().k128;
    try_stream<128, 2, 2, 1>(c, a) || try_stream<128, 1, 4, 1>(c, a) || try_stream<128, 2, 1, 1>(c, a) ||
        try_stream<128, 4, 1, 1>(c, a) || try_stream<128, 2, 1, 6>(c, a) || try_stream<128, 2, 2, 6>(c, a) ||
        try_stream<128, 4, 1, 6>(c, a) || try_stream<128, 2, 1, 8>(c, a) ||
        try_stream<128, 2, 1, 6, true>(c, a) || try_stream<128, 4, 1, 1, true>(c, a) ||
        try_stream<128, 2, 1, 6>(c, a, true);
  } else {
    const StreamCfg& c = knobs().k32;
    try_stream<32, 1, 4, 1>(c, a) || try_stream<32, 1, 2, 1>(c, a) || try_stream<32, 2, 2, 1>(c, a) ||
        try_stream<32, 1, 2, 6>(c, a) || try_stream<32, 2, 2, 6>(c, a) ||
        try_stream<32, 1, 2, 1, true>(c, a) || try_stream<32, 1, 2, 1, true>(c, a, true);
  }
}

}  // namespace

void quantize(format::SourceType st, const void* src, int64_t rows, int64_t cols,
              const format::QuantSpec& spec, uint8_t* codes, uint8_t* scales, cudaStream_t stream) {
  fmt::validate_spec(spec, rows, cols);
  if (rows == 0 || cols == 0) return;
  const fmt::ScaleOptions opt{spec.rule, spec.amax_floor};
  const ScaleWriter sw = make_writer(spec, rows, cols, 0);
  const fmt::ScaleGrid g = fmt::scale_grid(spec.blocking, rows, cols);
  if (spec.storage == fmt::ScaleStorage::ue8m0_packed4 || spec.storage == fmt::ScaleStorage::ue8m0_blackwell)
    MX8_CUDA_CHECK(cudaMemsetAsync(scales, 0, fmt::scale_bytes(spec, rows, cols), stream));
  const bool eight_bit = spec.element != fmt::ElementFormat::e2m1;
  if (spec.element == fmt::ElementFormat::e2m1 && spec.blocking.kind != fmt::Granularity::per_row &&
      spec.blocking.kind != fmt::Granularity::per_tensor && g.block_cols % 2 != 0)
    throw mx8::Error("cuda quantize: E2M1 needs an even block width (two elements per byte), got " +
                     std::to_string(g.block_cols));
  if (st == fmt::SourceType::bf16 && eight_bit && spec.blocking.kind == fmt::Granularity::tile &&
      (spec.blocking.block_cols == 128 || spec.blocking.block_cols == 32) &&
      stream_applies(src, rows, cols, spec.blocking.block_cols, codes)) {
    launch_stream_any(spec.blocking.block_cols, static_cast<const uint16_t*>(src), rows, cols, spec.element,
                      opt, spec.saturate, sw, codes, scales, stream);
    return;
  }
  const bool aligned =
      reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(codes) % 16 == 0;
  const bool fits32 = rows < (int64_t{1} << 31) && cols < (int64_t{1} << 30);
  if (st == fmt::SourceType::bf16 && eight_bit && spec.blocking.kind == fmt::Granularity::tile &&
      (spec.blocking.block_cols == 128 || spec.blocking.block_cols == 32) && cols % 16 == 0 && aligned &&
      fits32) {
    const dim3 grid(static_cast<unsigned>((cols / 16 + 255) / 256),
                    static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
    if (spec.blocking.block_cols == 128)
      quantize_tile_bf16_kernel<128><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(src), int(rows),
                                                               int(cols), spec.element, opt, spec.saturate,
                                                               sw, codes, scales);
    else
      quantize_tile_bf16_kernel<32><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(src), int(rows),
                                                              int(cols), spec.element, opt, spec.saturate, sw,
                                                              codes, scales);
    MX8_CUDA_CHECK(cudaGetLastError());
    return;
  }
  if (st == fmt::SourceType::bf16 && eight_bit && spec.blocking.kind == fmt::Granularity::block &&
      spec.blocking.block_rows == 128 && spec.storage != fmt::ScaleStorage::ue8m0_blackwell &&
      cols % 8 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(codes) % 8 == 0 && fits32 && g.rows <= 65535) {
    const dim3 grid(static_cast<unsigned>(g.cols), static_cast<unsigned>(g.rows));
    quantize_block128_bf16_kernel<<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(src), int(rows),
                                                            int(cols), spec.element, opt, spec.saturate, sw,
                                                            codes, scales);
    MX8_CUDA_CHECK(cudaGetLastError());
    return;
  }
  if (spec.blocking.kind == fmt::Granularity::per_tensor) {
    uint32_t* amax = nullptr;
    MX8_CUDA_CHECK(cudaMallocAsync(&amax, 4, stream));
    MX8_CUDA_CHECK(cudaMemsetAsync(amax, 0, 4, stream));
    tensor_amax_kernel<<<stride_grid(), 256, 0, stream>>>(st, src, rows * cols, amax);
    if (spec.element == fmt::ElementFormat::e2m1) {
      // Whole rows per block for the nibble packing: reuse the generic kernel with the known amax.
      quantize_generic_kernel<<<dim3(1, 1), 256, 0, stream>>>(st, src, rows, cols, g, spec.element, opt,
                                                              spec.saturate, sw, amax, codes, scales);
    } else {
      encode_tensor_kernel<<<stride_grid(), 256, 0, stream>>>(st, src, rows * cols, spec.element, opt,
                                                              spec.saturate, amax, codes);
      quantize_generic_kernel<<<dim3(1, 1), 32, 0, stream>>>(st, src, 0, 0, g, spec.element, opt,
                                                             spec.saturate, sw, amax, codes, scales);
    }
    MX8_CUDA_CHECK(cudaGetLastError());
    MX8_CUDA_CHECK(cudaFreeAsync(amax, stream));
    return;
  }
  if (g.rows > 65535 && g.cols > 0) {
    // gridDim.y limit: split into slabs of rows.
    for (int64_t gr0 = 0; gr0 < g.rows; gr0 += 65535) {
      const int64_t n_gr = std::min<int64_t>(65535, g.rows - gr0);
      const int64_t r_off = gr0 * g.block_rows;
      const int64_t sub_rows = std::min(rows - r_off, n_gr * g.block_rows);
      fmt::ScaleGrid sg = g;
      sg.rows = n_gr;
      ScaleWriter ssw = sw;
      // Offsetting the pointers keeps the row-major layouts valid for f32/ue8m0/packed4; Blackwell
      // offsets depend on the absolute row, so that storage takes the unsplit path below.
      if (spec.storage == fmt::ScaleStorage::ue8m0_blackwell) break;
      const size_t scale_row_bytes = spec.storage == fmt::ScaleStorage::f32             ? g.cols * 4
                                     : spec.storage == fmt::ScaleStorage::ue8m0_packed4 ? sw.words4
                                                                                        : g.cols;
      const size_t code_row = fmt::code_row_bytes(spec.element, cols);
      const size_t src_elem = st == fmt::SourceType::f32 ? 4 : 2;
      quantize_generic_kernel<<<dim3(static_cast<unsigned>(g.cols), static_cast<unsigned>(n_gr)), 256, 0,
                                stream>>>(st, static_cast<const uint8_t*>(src) + r_off * cols * src_elem,
                                          sub_rows, cols, sg, spec.element, opt, spec.saturate, ssw, nullptr,
                                          codes + r_off * code_row, scales + gr0 * scale_row_bytes);
      MX8_CUDA_CHECK(cudaGetLastError());
      if (gr0 + 65535 >= g.rows) return;
    }
    if (spec.storage == fmt::ScaleStorage::ue8m0_blackwell)
      throw mx8::Error("cuda quantize: Blackwell storage with more than 65535 scale rows is not supported");
  }
  quantize_generic_kernel<<<dim3(static_cast<unsigned>(g.cols), static_cast<unsigned>(g.rows)), 256, 0,
                            stream>>>(st, src, rows, cols, g, spec.element, opt, spec.saturate, sw, nullptr,
                                      codes, scales);
  MX8_CUDA_CHECK(cudaGetLastError());
}

void quantize_act_1x128(const uint16_t* src, int64_t rows, int64_t cols, format::ScaleRule rule, bool ue8m0,
                        float amax_floor, ScaleLayout layout, uint8_t* codes, void* scales,
                        cudaStream_t stream) {
  if (rows < 1 || cols < 128 || cols % 128 != 0)
    throw mx8::Error("quantize_act_1x128: need rows >= 1 and cols a positive multiple of 128, got " +
                     std::to_string(rows) + "x" + std::to_string(cols));
  if (ue8m0 && rule == format::ScaleRule::fp32)
    throw mx8::Error("quantize_act_1x128: the fp32 rule cannot be stored as UE8M0");
  fmt::QuantSpec spec;
  spec.rule = rule;
  spec.storage = ue8m0 ? fmt::ScaleStorage::ue8m0 : fmt::ScaleStorage::f32;
  spec.amax_floor = amax_floor;
  const ScaleWriter sw =
      make_writer(spec, rows, cols, layout == ScaleLayout::kMnMajor ? sa_ld(static_cast<int>(rows)) : 0);
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0 || reinterpret_cast<uintptr_t>(codes) % 16 != 0)
    throw mx8::Error("quantize_act_1x128: src and codes must be 16-byte aligned");
  const ActCfg& ac = knobs().act;
  if (ac.mode == 1 && cols <= (int64_t{1} << 30) && rows < (int64_t{1} << 31)) {
    const bool mn = layout == ScaleLayout::kMnMajor;
    const qdev::ActTileArgs args{src,
                                 int(rows),
                                 int(cols),
                                 fmt::ScaleOptions{rule, amax_floor},
                                 ue8m0,
                                 sw.mn_major_ld,
                                 mn && reinterpret_cast<uintptr_t>(scales) % (ue8m0 ? 4 : 16) == 0,
                                 ac.hints,
                                 ac.rows_fast != 0,
                                 codes,
                                 scales};
    const bool done = ac.cw == 2 ? (ac.r == 2 ? qdev::launch_act_tile<2, 2>(args, stream)
                                              : qdev::launch_act_tile<2, 4>(args, stream))
                                 : (ac.r == 2 ? qdev::launch_act_tile<1, 2>(args, stream)
                                              : qdev::launch_act_tile<1, 4>(args, stream));
    if (done) return;
  }
  if (stream_applies(src, rows, cols, 128, codes)) {
    launch_stream_any(128, src, rows, cols, fmt::ElementFormat::e4m3, fmt::ScaleOptions{rule, amax_floor},
                      true, sw, codes, static_cast<uint8_t*>(scales), stream);
    return;
  }
  const dim3 grid(static_cast<unsigned>((cols / 16 + 255) / 256),
                  static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  quantize_tile_bf16_kernel<128><<<grid, 256, 0, stream>>>(
      src, int(rows), int(cols), fmt::ElementFormat::e4m3, fmt::ScaleOptions{rule, amax_floor}, true, sw,
      codes, static_cast<uint8_t*>(scales));
  MX8_CUDA_CHECK(cudaGetLastError());
}

// Whether the dual kernel stages X^T's codes in shared memory (whole-line stores; H200: 2-4% faster
// on the large shapes, docs/CUDA.md). MX8_QUANT_DUAL_STAGE=0 (A/B runs) turns it off.
bool dual_stage_t(int64_t rows, const uint8_t* codes_t) {
  static const bool on = [] {
    const char* v = std::getenv("MX8_QUANT_DUAL_STAGE");
    return !(v && std::string(v) == "0");
  }();
  return on && rows % 16 == 0 && reinterpret_cast<uintptr_t>(codes_t) % 16 == 0;
}

void quantize_act_1x128_dual(const uint16_t* src, int64_t rows, int64_t cols, format::ScaleRule rule,
                             bool ue8m0, float amax_floor, ScaleLayout layout, uint8_t* codes, void* scales,
                             uint8_t* codes_t, void* scales_t, cudaStream_t stream) {
  if (rows < 1 || cols < 128 || cols % 128 != 0)
    throw mx8::Error("quantize_act_1x128_dual: need rows >= 1 and cols a positive multiple of 128, got " +
                     std::to_string(rows) + "x" + std::to_string(cols));
  if (ue8m0 && rule == format::ScaleRule::fp32)
    throw mx8::Error("quantize_act_1x128_dual: the fp32 rule cannot be stored as UE8M0");
  if (rows > 65535 * 128) throw mx8::Error("quantize_act_1x128_dual: too many rows");
  if (cols > (int64_t{1} << 30)) throw mx8::Error("quantize_act_1x128_dual: too many columns");
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0 || reinterpret_cast<uintptr_t>(codes) % 8 != 0)
    throw mx8::Error("quantize_act_1x128_dual: src must be 16-byte and codes 8-byte aligned");
  const dim3 grid(static_cast<unsigned>(cols / 128), static_cast<unsigned>((rows + 127) / 128));
  const int mn_ld = layout == ScaleLayout::kMnMajor ? sa_ld(static_cast<int>(rows)) : 0;
  const qdev::DualArgs args{src,
                            int(rows),
                            int(cols),
                            fmt::ScaleOptions{rule, amax_floor},
                            ue8m0,
                            mn_ld,
                            rows % 8 == 0 && reinterpret_cast<uintptr_t>(codes_t) % 8 == 0,
                            dual_stage_t(rows, codes_t),
                            codes,
                            scales,
                            codes_t,
                            scales_t};
  if (knobs().dual_blocks == 2)
    qdev::quantize_dual_tile_kernel<2><<<grid, 256, 0, stream>>>(args);
  else
    qdev::quantize_dual_tile_kernel<3><<<grid, 256, 0, stream>>>(args);
  MX8_CUDA_CHECK(cudaGetLastError());
}

void dequantize(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                const format::QuantSpec& spec, float* dst, cudaStream_t stream) {
  fmt::validate_spec(spec, rows, cols);
  if (rows == 0 || cols == 0) return;
  const fmt::ScaleGrid g = fmt::scale_grid(spec.blocking, rows, cols);
  const bool vec4 = spec.element != fmt::ElementFormat::e2m1 && cols % 4 == 0 && g.block_cols % 4 == 0 &&
                    (spec.storage == fmt::ScaleStorage::f32 || spec.storage == fmt::ScaleStorage::ue8m0 ||
                     spec.storage == fmt::ScaleStorage::ue8m0_packed4) &&
                    reinterpret_cast<uintptr_t>(codes) % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (vec4 && rows * cols / 4 < (int64_t(1) << 31))  // 32-bit indices, the grid stride included
    dequantize_vec4_kernel<uint32_t><<<stride_grid(), 256, 0, stream>>>(
        codes, scales, uint32_t(rows), uint32_t(cols), g, spec.element, spec.storage, dst);
  else if (vec4)
    dequantize_vec4_kernel<int64_t>
        <<<stride_grid(), 256, 0, stream>>>(codes, scales, rows, cols, g, spec.element, spec.storage, dst);
  else
    dequantize_kernel<<<stride_grid(), 256, 0, stream>>>(codes, scales, rows, cols, g, spec.element,
                                                         spec.storage, dst);
  MX8_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mx8::cuda
