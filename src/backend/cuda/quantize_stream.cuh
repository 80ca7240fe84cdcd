// Streaming 1xK tile quantizer (K = 128 or 32), bf16 in, 8-bit codes out, for rows whose width is a
// multiple of K: the tensor is then a flat array of K-value groups, walked by a persistent
// grid-stride loop (32-bit flat indices).
//
// A lane holds P 16-byte pieces of one group (8P values), so Lg = K / 8P lanes share a group: its
// amax takes log2(Lg) shuffle steps and each lane computes one scale per 8P values. Piece j of
// lane l is piece (l % Lg) + Lg j of group l / Lg, so each warp load covers whole runs of Lg x 16
// contiguous bytes (128 B for K = 128, P = 2) and the P loads of a "set" cover 512 P contiguous
// bytes. A warp loads S sets (S P loads per lane in flight) before any arithmetic, reduces the
// maxima of two sets per shuffle (16-bit magnitudes packed in a word), encodes, and stores 8 bytes
// of codes per piece.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/quantize_device.cuh"

namespace mx8::cuda::qdev {

// kPf: software-pipelined, the next iteration's loads are issued before this one's arithmetic
// (twice the data registers; loads stay in flight while the warp encodes).
template <int K, int P, int S, int kMinBlocks, bool kPf>
__global__ void __launch_bounds__(256, kMinBlocks)
    quantize_stream_kernel(const uint16_t* __restrict__ src, uint32_t n, FastDiv groups_per_row,
                           fmt::ElementFormat elem, fmt::ScaleOptions opt, bool saturate, int hints,
                           ScaleWriter sw, uint8_t* __restrict__ codes, uint8_t* __restrict__ scales) {
  static_assert(K == 32 || K == 128, "1x32 or 1x128 tiles");
  constexpr uint32_t Lg = K / (8 * P);  // lanes per group
  static_assert(Lg >= 1 && (Lg & (Lg - 1)) == 0, "P divides K / 8");
  constexpr uint32_t kSet = 256 * P;  // values per set
  const uint32_t lane = threadIdx.x % 32, gi = lane / Lg, li = lane % Lg;
  const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, n_warps = gridDim.x * blockDim.x / 32;
  const uint32_t n_sets = (n + kSet - 1) / kSet;
  const bool hw = saturate && (elem == fmt::ElementFormat::e4m3 || elem == fmt::ElementFormat::e5m2);
  // Row-major f32/ue8m0 scales are indexed by the flat group number; other layouts need (row, group).
  const bool flat_scales =
      sw.mn_major_ld == 0 && (sw.storage == fmt::ScaleStorage::f32 || sw.storage == fmt::ScaleStorage::ue8m0);
  auto load = [&](uint32_t s0, uint4(&d)[S][P]) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const uint32_t g0 = (s0 + s) * kSet + gi * K;  // the lane's group; whole or absent (n % K == 0)
#pragma unroll
      for (int j = 0; j < P; ++j) {
        d[s][j] = make_uint4(0, 0, 0, 0);
        if (g0 < n) d[s][j] = ld16(src + g0 + (li + Lg * j) * 8, hints);
      }
    }
  };
  uint4 d[S][P], dn[S][P];
  if constexpr (kPf) load(warp * S, dn);
  for (uint32_t s0 = warp * S; s0 < n_sets; s0 += n_warps * S) {
    if constexpr (kPf) {
#pragma unroll
      for (int s = 0; s < S; ++s)
#pragma unroll
        for (int j = 0; j < P; ++j) d[s][j] = dn[s][j];
      load(s0 + n_warps * S, dn);
    } else {
      load(s0, d);
    }
    uint32_t m[S];
#pragma unroll
    for (int s = 0; s < S; ++s) {
      m[s] = mag8(d[s][0]);
#pragma unroll
      for (int j = 1; j < P; ++j) m[s] = max(m[s], mag8(d[s][j]));
    }
    if constexpr (Lg > 1) {
#pragma unroll
      for (int s = 0; s < S; s += 2) {
        uint32_t pk = m[s] | (s + 1 < S ? m[s + 1] << 16 : 0u);
#pragma unroll
        for (uint32_t off = Lg / 2; off > 0; off /= 2)
          pk = max_u16x2(pk, __shfl_xor_sync(0xFFFFFFFFu, pk, off));
        m[s] = pk & 0xFFFFu;
        if (s + 1 < S) m[s + 1] = pk >> 16;
      }
    }
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const uint32_t g0 = (s0 + s) * kSet + gi * K;
      if (g0 >= n) continue;  // after every shuffle
      const fmt::BlockScale sc = fmt::compute_block_scale(amax_from_mag(m[s]), elem, opt);
#pragma unroll
      for (int j = 0; j < P; ++j) {
        float x[8];
        unpack8(d[s][j], x);
        uint32_t lo, hi;
        encode8(x, sc.inv_scale, hw, elem, saturate, lo, hi);
        st8(codes + g0 + (li + Lg * j) * 8, lo, hi, hints);
      }
      if (li == 0) {
        const uint32_t g = g0 / K;
        if (flat_scales) {
          sw.write(scales, 0, g, sc);
        } else {
          const uint32_t r = groups_per_row.div(g);
          sw.write(scales, r, g - r * groups_per_row.d, sc);
        }
      }
    }
  }
}

// Grid: enough warps for one pass of S sets each, at most what fits on the device at once (the
// loop strides over the rest). blocks_per_sm_cap <= 0: the occupancy limit.
template <int K, int P, int S, int kMinBlocks, bool kPf>
void launch_stream(const uint16_t* src, int64_t rows, int64_t cols, fmt::ElementFormat elem,
                   fmt::ScaleOptions opt, bool saturate, int hints, const ScaleWriter& sw, uint8_t* codes,
                   uint8_t* scales, int blocks_per_sm_cap, cudaStream_t stream) {
  static int occupancy = 0;  // per instantiation; the same on every Hopper device
  if (occupancy == 0)
    MX8_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &occupancy, quantize_stream_kernel<K, P, S, kMinBlocks, kPf>, 256, 0));
  const int per_sm = blocks_per_sm_cap > 0 ? std::min(occupancy, blocks_per_sm_cap) : occupancy;
  const int64_t n = rows * cols, n_sets = (n + 256 * P - 1) / (256 * P);
  const int64_t needed = (n_sets + 8 * S - 1) / (8 * S);  // 8 warps per block
  const int grid = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(needed, int64_t{num_sms()} * std::max(per_sm, 1))));
  quantize_stream_kernel<K, P, S, kMinBlocks, kPf><<<grid, 256, 0, stream>>>(
      src, static_cast<uint32_t>(n), FastDiv::make(static_cast<uint32_t>(cols / K)), elem, opt, saturate,
      hints, sw, codes, scales);
  MX8_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mx8::cuda::qdev
