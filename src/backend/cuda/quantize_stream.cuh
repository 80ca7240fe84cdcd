// Streaming 1xK tile quantizer (K = 128 or 32), bf16 in, 8-bit codes out, for rows whose width is a
// multiple of K: the tensor is then a flat array of K-value groups, so the kernel walks it as
// 256-value "vectors" (one 16-byte load per lane, 512 contiguous bytes per warp instruction) with a
// persistent grid-stride loop. Each warp loads U vectors before any arithmetic (U x 16 bytes in
// flight per lane: memory-level parallelism is what a bandwidth-bound kernel needs), then reduces
// each group's amax over its K/8 lanes (two vectors' 16-bit maxima packed in one shuffle), encodes,
// and stores 8 bytes of codes per lane (256 contiguous bytes per warp).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/quantize_device.cuh"

namespace mx8::cuda::qdev {

template <int K, int U, bool kHints>
__global__ void __launch_bounds__(256)
    quantize_stream_kernel(const uint16_t* __restrict__ src, uint32_t n, uint32_t groups_per_row,
                           fmt::ElementFormat elem, fmt::ScaleOptions opt, bool saturate, ScaleWriter sw,
                           uint8_t* __restrict__ codes, uint8_t* __restrict__ scales) {
  static_assert(K == 32 || K == 128, "1x32 or 1x128 tiles");
  static_assert(U % 2 == 0, "vectors are reduced in pairs");
  constexpr uint32_t L = K / 8;  // lanes per group
  const uint32_t lane = threadIdx.x % 32;
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, n_warps = gridDim.x * blockDim.x / 32;
  const uint32_t n_vec = (n + 255) / 256;
  const bool hw = saturate && (elem == fmt::ElementFormat::e4m3 || elem == fmt::ElementFormat::e5m2);
  // Row-major f32/ue8m0 scales are indexed by the flat group number; other layouts need (row, group).
  const bool flat_scales =
      sw.mn_major_ld == 0 && (sw.storage == fmt::ScaleStorage::f32 || sw.storage == fmt::ScaleStorage::ue8m0);
  for (uint32_t v0 = warp * U; v0 < n_vec; v0 += n_warps * U) {
    uint4 d[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t e = (v0 + u) * 256 + lane * 8;
      d[u] = make_uint4(0, 0, 0, 0);
      if (e < n) d[u] = kHints ? ld_stream(src + e) : ld_plain(src + e);
    }
    uint32_t m[U];
#pragma unroll
    for (int p = 0; p < U / 2; ++p) {
      uint32_t pk = mag8(d[2 * p]) | mag8(d[2 * p + 1]) << 16;
#pragma unroll
      for (uint32_t off = L / 2; off > 0; off /= 2) pk = max_u16x2(pk, __shfl_xor_sync(0xFFFFFFFFu, pk, off));
      m[2 * p] = pk & 0xFFFFu;
      m[2 * p + 1] = pk >> 16;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t e = (v0 + u) * 256 + lane * 8;
      if (e >= n) continue;  // after every shuffle: groups are whole (n % K == 0)
      const fmt::BlockScale sc = fmt::compute_block_scale(amax_from_mag(m[u]), elem, opt);
      float x[8];
      unpack8(d[u], x);
      uint32_t lo, hi;
      encode8(x, sc.inv_scale, hw, elem, saturate, lo, hi);
      st8<kHints>(codes + e, lo, hi);
      if (lane % L == 0) {
        const uint32_t g = e / K;
        if (flat_scales) {
          sw.write(scales, 0, g, sc);
        } else {
          const uint32_t r = g / groups_per_row;
          sw.write(scales, r, g - r * groups_per_row, sc);
        }
      }
    }
  }
}

// Grid: enough warps for one pass of U vectors each, at most what fits on the device at once (the
// loop strides over the rest). blocks_per_sm_cap <= 0: the occupancy limit.
template <int K, int U, bool kHints>
void launch_stream(const uint16_t* src, int64_t rows, int64_t cols, fmt::ElementFormat elem,
                   fmt::ScaleOptions opt, bool saturate, const ScaleWriter& sw, uint8_t* codes,
                   uint8_t* scales, int blocks_per_sm_cap, cudaStream_t stream) {
  static int occupancy = 0;  // per instantiation; the same on every Hopper device
  if (occupancy == 0)
    MX8_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &occupancy, quantize_stream_kernel<K, U, kHints>, 256, 0));
  const int per_sm = blocks_per_sm_cap > 0 ? std::min(occupancy, blocks_per_sm_cap) : occupancy;
  const int64_t n = rows * cols, n_vec = (n + 255) / 256;
  const int64_t needed = (n_vec + 8 * U - 1) / (8 * U);  // 8 warps per block
  const int grid =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{num_sms()} * per_sm)));
  quantize_stream_kernel<K, U, kHints><<<grid, 256, 0, stream>>>(
      src, static_cast<uint32_t>(n), static_cast<uint32_t>(cols / K), elem, opt, saturate, sw, codes, scales);
  MX8_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mx8::cuda::qdev
