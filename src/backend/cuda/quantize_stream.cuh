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

namespace mx8::cuda::qdev {

// ---------------------------------------------------------------------------------------------
// 2-D tile activation quantizer (1x128 E4M3, saturating), shaped like the 128x128 weight kernel
// (88-95% of copy where the streaming kernel above reached 79-83%): one thread block per tile, no
// grid-stride loop, every lane with 2R 16-byte loads in flight before any arithmetic. A warp owns
// 4R rows x 128 columns (one scale column): lane (g = lane / 8, li = lane % 8) holds pieces li and
// li + 8 of rows Rg .. Rg + R - 1, so a warp load covers four 128-byte lines, a row's amax takes
// three shuffle steps (two rows per packed word), and the lane's R rows are consecutive: with
// MN-major scales (scales[gc * ld + row]) lane li == 0 writes its R scales as one store and a
// block's 64 or 128 scales fill whole lines, where the streaming kernel stores one byte per row.
// Block: 8 warps in (8 / CW) row strips x CW column strips.
// H200 (mx8 bench cuda-quantize, 2026-11-29, R = 2, CW = 1): 4096 x 16384 in 53.6-54.2 us (88% of
// copy), 16384 x 7168 in 88.3-88.5 us (94%); the streaming kernel 60.2-60.7 and 101.0-101.2 us.
// The streaming kernel with the same eight loads per lane and one block per 32 sets (no
// grid-stride loop) stayed at 76-83%, so the loads in flight alone do not explain the difference.
struct ActTileArgs {
  const uint16_t* src;
  int rows, cols;
  fmt::ScaleOptions opt;
  bool ue8m0;
  int mn_ld;        // > 0: scales[gc * mn_ld + row], else row-major scales[row * (cols / 128) + gc]
  bool vec_scales;  // MN-major and the scale pointer aligned for an R-row vector store
  int hints;        // kHint* mask (quantize_device.cuh)
  bool rows_fast;   // blockIdx.x walks the row blocks (else the column tiles)
  uint8_t* codes;
  void* scales;
};

template <int CW, int R, int kMinBlocks>
__global__ void __launch_bounds__(256, kMinBlocks) quantize_act_tile_kernel(ActTileArgs p) {
  static_assert(R == 2 || R == 4, "two or four rows per lane");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 8, li = lane % 8;
  const int cw = warp % CW, rw = warp / CW;
  const int bx = p.rows_fast ? blockIdx.y : blockIdx.x, by = p.rows_fast ? blockIdx.x : blockIdx.y;
  const int k0 = (bx * CW + cw) * 128;
  // Warp-uniform, and the kernel has no block barrier.
  if (k0 >= p.cols) return;
  const int r0 = (by * (8 / CW) + rw) * 4 * R + R * g;  // the lane's first row
  uint4 d[R][2];
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      d[i][j] = make_uint4(0, 0, 0, 0);  // zeros never raise an amax
      if (r0 + i < p.rows)
        d[i][j] = ld16_any(p.src + static_cast<size_t>(r0 + i) * p.cols + k0 + (li + 8 * j) * 8, p.hints);
    }
  uint32_t m[R];
#pragma unroll
  for (int i = 0; i < R; ++i) m[i] = max(mag8(d[i][0]), mag8(d[i][1]));
#pragma unroll
  for (int i = 0; i < R; i += 2) {
    uint32_t pk = m[i] | m[i + 1] << 16;
#pragma unroll
    for (int off = 4; off > 0; off /= 2) pk = max_u16x2(pk, __shfl_xor_sync(0xFFFFFFFFu, pk, off));
    m[i] = pk & 0xFFFFu;
    m[i + 1] = pk >> 16;
  }
  const fmt::ElementFormat e4 = fmt::ElementFormat::e4m3;
  fmt::BlockScale sc[R];
#pragma unroll
  for (int i = 0; i < R; ++i) sc[i] = fmt::compute_block_scale(amax_from_mag(m[i]), e4, p.opt);
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float x[8];
      unpack8(d[i][j], x);
      uint32_t lo, hi;
      encode8(x, sc[i].inv_scale, true, e4, true, lo, hi);
      if (r0 + i < p.rows)
        st8(p.codes + static_cast<size_t>(r0 + i) * p.cols + k0 + (li + 8 * j) * 8, lo, hi, p.hints);
    }
  const int gc = k0 / 128;
  if (p.vec_scales && r0 + R - 1 < p.rows) {
    if (li == 0) {
      const size_t at = static_cast<size_t>(gc) * p.mn_ld + r0;
      if (p.ue8m0) {
        uint32_t w = 0;
#pragma unroll
        for (int i = 0; i < R; ++i) w |= static_cast<uint32_t>(sc[i].ue8m0) << (8 * i);
        if constexpr (R == 4)
          *reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(p.scales) + at) = w;
        else
          *reinterpret_cast<uint16_t*>(static_cast<uint8_t*>(p.scales) + at) = static_cast<uint16_t>(w);
      } else if constexpr (R == 4) {
        *reinterpret_cast<float4*>(static_cast<float*>(p.scales) + at) =
            make_float4(sc[0].scale, sc[1].scale, sc[2].scale, sc[3].scale);
      } else {
        *reinterpret_cast<float2*>(static_cast<float*>(p.scales) + at) =
            make_float2(sc[0].scale, sc[1].scale);
      }
    }
  } else if (li < R) {
    // Lane li writes row r0 + li; constant indices keep sc in registers.
#pragma unroll
    for (int i = 0; i < R; ++i)
      if (li == i && r0 + i < p.rows) {
        const size_t at = p.mn_ld > 0 ? static_cast<size_t>(gc) * p.mn_ld + r0 + i
                                      : static_cast<size_t>(r0 + i) * (p.cols / 128) + gc;
        if (p.ue8m0)
          static_cast<uint8_t*>(p.scales)[at] = sc[i].ue8m0;
        else
          static_cast<float*>(p.scales)[at] = sc[i].scale;
      }
  }
}

// Blocks of 32R / CW rows x 128 CW columns. False where the grid would exceed its limits.
template <int CW, int R>
bool launch_act_tile(const ActTileArgs& a, cudaStream_t stream) {
  const int64_t tiles_k = (a.cols / 128 + CW - 1) / CW, rows_per_block = 32 * R / CW;
  const int64_t tiles_m = (a.rows + rows_per_block - 1) / rows_per_block;
  const int64_t x = a.rows_fast ? tiles_m : tiles_k, y = a.rows_fast ? tiles_k : tiles_m;
  if (x > INT32_MAX || y > 65535) return false;
  // Four blocks per SM (R = 4, 64 registers) or six (R = 2, 40): 128 or 96 KB of loads in flight.
  quantize_act_tile_kernel<CW, R, R == 4 ? 4 : 6>
      <<<dim3(static_cast<unsigned>(x), static_cast<unsigned>(y)), 256, 0, stream>>>(a);
  MX8_CUDA_CHECK(cudaGetLastError());
  return true;
}

}  // namespace mx8::cuda::qdev
