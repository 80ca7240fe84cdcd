// Fused activation quantizer writing X (1x128 tiles) and X^T (1x128 tiles of X^T = 128x1 blocks of
// X) from one read. One thread block per 128x128 tile of X, whose input never goes through shared
// memory: thread (warp w, lane l) holds an 8x8 sub-block in registers, rows 32(w%4) + 8(l/8) .. +7,
// columns 64(w/4) + 8(l%8) .. +7 (eight 16-byte loads, all in flight before any arithmetic).
//  * row amax: 16-bit magnitudes (two rows per word) reduced over the 8 lanes of a row, then over
//    the two column halves through shared memory;
//  * column amax: per-halfword maxima down the thread's 8 rows, reduced over the 4 lanes of a column
//    strip, then over the 4 row quarters through shared memory;
//  * 256 threads compute the 128 row scales and 128 column scales (one each);
//  * each thread encodes its 64 values twice: with the row scales (8-byte stores along X's rows,
//    64 contiguous bytes per 8 lanes) and with the column scales, then transposes the 8x8 bytes in
//    registers (byte permutes). Where rows % 16 == 0 the transposed codes go through a 16 KB shared
//    tile and out as whole 128-byte lines of X^T (2-4% faster than storing 8 bytes down each column,
//    32 contiguous bytes per 4 lanes, which the other shapes still do). Shared memory otherwise holds
//    only 2.5 KB of partial maxima and reciprocal scales;
//  * X^T's scales follow X's layout: MN-major keeps a tile's 128 column scales in one run.
#pragma once

#include <cuda_runtime_api.h>

#include "backend/cuda/quantize_device.cuh"

namespace mx8::cuda::qdev {

// 4x4 byte transpose: byte c of out[r] = byte r of in[c].
__device__ __forceinline__ void transpose4x4(uint32_t i0, uint32_t i1, uint32_t i2, uint32_t i3, uint32_t& o0,
                                             uint32_t& o1, uint32_t& o2, uint32_t& o3) {
  const uint32_t t0 = __byte_perm(i0, i1, 0x5140);  // i0.b0 i1.b0 i0.b1 i1.b1
  const uint32_t t1 = __byte_perm(i0, i1, 0x7362);  // i0.b2 i1.b2 i0.b3 i1.b3
  const uint32_t t2 = __byte_perm(i2, i3, 0x5140);
  const uint32_t t3 = __byte_perm(i2, i3, 0x7362);
  o0 = __byte_perm(t0, t2, 0x5410);  // i0.b0 i1.b0 i2.b0 i3.b0
  o1 = __byte_perm(t0, t2, 0x7632);
  o2 = __byte_perm(t1, t3, 0x5410);
  o3 = __byte_perm(t1, t3, 0x7632);
}

__device__ __forceinline__ void store_scale(void* scales, size_t i, bool ue8m0, const fmt::BlockScale& s) {
  if (ue8m0)
    static_cast<uint8_t*>(scales)[i] = s.ue8m0;
  else
    static_cast<float*>(scales)[i] = s.scale;
}

struct DualArgs {
  const uint16_t* src;
  int rows, cols;
  fmt::ScaleOptions opt;
  bool ue8m0;
  int mn_ld;   // > 0: X's scales MN-major with this leading dimension (X^T's with cols), else row-major
  bool vec_t;  // rows % 8 == 0 and codes_t 8-byte aligned: 8-row column segments go out as one store
  // X^T's codes through shared memory, so that every store instruction writes whole 128-byte lines
  // of X^T (needs rows % 16 == 0 and codes_t 16-byte aligned).
  bool stage_t;
  uint8_t* codes;
  void* scales;
  uint8_t* codes_t;
  void* scales_t;
};

struct DualSmem {
  uint32_t row_part[2][128];  // per column half: row maxima (16-bit magnitudes)
  uint32_t col_part[4][128];  // per row quarter: column maxima
  __align__(16) float row_inv[128];
  __align__(16) float col_inv[128];
  // X^T's codes (DualArgs::stage_t): [row of X^T][128 bytes], 8-byte chunks swizzled (t_chunk) so
  // that neither the 8-byte stores nor the 16-byte row reads conflict.
  __align__(16) uint8_t t_tile[128 * 128];
};

// Physical 8-byte chunk of logical chunk c in row r of the staged X^T tile: c ^ sw(r), sw even (a
// 16-byte pair stays a pair, and the map is its own inverse). A store instruction's lanes cover rows
// 8b + j and chunks 4rq + a, so rows 8 apart must take different pairs.
__device__ __forceinline__ int t_chunk(int r, int c) {
  return c ^ (2 * ((r >> 3) & 7));
}

// The thread's place in the tile: first row tr, first column tc of its 8x8 sub-block.
struct DualGeom {
  int tid, rq, ch, a, b, tr, tc;
  __device__ DualGeom() {
    tid = threadIdx.x;
    const int lane = tid % 32, warp = tid / 32;
    rq = warp % 4;
    ch = warp / 4;
    a = lane / 8;
    b = lane % 8;
    tr = 32 * rq + 8 * a;
    tc = 64 * ch + 8 * b;
  }
};

// One 128x128 tile at (m0, k0). kFull: the tile lies wholly inside X, so no row needs a bounds
// test; the ragged last tile row takes the other instantiation. (The tests, with the run-time cache
// hints this kernel no longer has, were a quarter of its instructions.)
template <bool kFull>
__device__ __forceinline__ void dual_tile(const DualArgs& p, DualSmem& sm, const DualGeom& g, int m0,
                                          int k0) {
  const int valid_rows = kFull ? 8 : min(8, p.rows - (m0 + g.tr));  // <= 0: the sub-block is past the end
  // Rows as one base plus multiples of a 64-bit stride: a signed 64-bit index per row cost ~7
  // instructions per access (5% of the kernel's; the same speed either way on the H200).
  const size_t ld = static_cast<size_t>(p.cols), base = static_cast<size_t>(m0 + g.tr) * ld + k0 + g.tc;
  const uint16_t* src = p.src + base;
  uint8_t* x_out = p.codes + base;
  uint4 d[8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
    d[i] = i < valid_rows ? ld_plain(src + i * ld) : make_uint4(0, 0, 0, 0);  // zeros never raise an amax
  // Row maxima, rows 2k and 2k+1 packed in rp[k]; column maxima, columns 2j and 2j+1 in cp[j].
  uint32_t rp[4], cp[4] = {0, 0, 0, 0};
  auto row_max2 = [](const uint4& v) {  // halfword maxima over the row's even and odd columns
    return max_u16x2(max_u16x2(mag2(v.x), mag2(v.y)), max_u16x2(mag2(v.z), mag2(v.w)));
  };
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t ra = row_max2(d[2 * k]), rb = row_max2(d[2 * k + 1]);
    // (ra.lo, rb.lo) max (ra.hi, rb.hi): both rows folded by one packed max.
    rp[k] = max_u16x2(__byte_perm(ra, rb, 0x5410), __byte_perm(ra, rb, 0x7632));
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    cp[0] = max_u16x2(cp[0], mag2(d[i].x));
    cp[1] = max_u16x2(cp[1], mag2(d[i].y));
    cp[2] = max_u16x2(cp[2], mag2(d[i].z));
    cp[3] = max_u16x2(cp[3], mag2(d[i].w));
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
#pragma unroll
    for (int off = 1; off < 8; off *= 2) rp[k] = max_u16x2(rp[k], __shfl_xor_sync(0xFFFFFFFFu, rp[k], off));
#pragma unroll
    for (int off = 8; off < 32; off *= 2) cp[k] = max_u16x2(cp[k], __shfl_xor_sync(0xFFFFFFFFu, cp[k], off));
  }
  if (g.b == 0) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      sm.row_part[g.ch][g.tr + 2 * k] = rp[k] & 0xFFFFu;
      sm.row_part[g.ch][g.tr + 2 * k + 1] = rp[k] >> 16;
    }
  }
  if (g.a == 0) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      sm.col_part[g.rq][g.tc + 2 * j] = cp[j] & 0xFFFFu;
      sm.col_part[g.rq][g.tc + 2 * j + 1] = cp[j] >> 16;
    }
  }
  __syncthreads();

  // One scale per thread: threads 0..127 the tile's rows, 128..255 its columns.
  if (g.tid < 128) {
    const int r = g.tid;
    const fmt::BlockScale s = fmt::compute_block_scale(
        amax_from_mag(max(sm.row_part[0][r], sm.row_part[1][r])), fmt::ElementFormat::e4m3, p.opt);
    sm.row_inv[r] = s.inv_scale;
    const int gr = m0 + r, gc = k0 / 128;
    if (gr < p.rows)
      store_scale(p.scales,
                  p.mn_ld > 0 ? static_cast<size_t>(gc) * p.mn_ld + gr
                              : static_cast<size_t>(gr) * (p.cols / 128) + gc,
                  p.ue8m0, s);
  } else {
    const int c = g.tid - 128;
    const uint32_t m =
        max(max(sm.col_part[0][c], sm.col_part[1][c]), max(sm.col_part[2][c], sm.col_part[3][c]));
    const fmt::BlockScale s = fmt::compute_block_scale(amax_from_mag(m), fmt::ElementFormat::e4m3, p.opt);
    sm.col_inv[c] = s.inv_scale;
    // MN-major with X's (a tile's 128 scales contiguous); row-major scatters them one per 32-byte
    // sector, which costs 4-6% of the kernel's time on the H200 (docs/CUDA.md, tenth session).
    store_scale(p.scales_t,
                p.mn_ld > 0 ? static_cast<size_t>(m0 / 128) * p.cols + k0 + c
                            : static_cast<size_t>(k0 + c) * ((p.rows + 127) / 128) + m0 / 128,
                p.ue8m0, s);
  }
  __syncthreads();

  const float4 r_lo = *reinterpret_cast<const float4*>(sm.row_inv + g.tr),
               r_hi = *reinterpret_cast<const float4*>(sm.row_inv + g.tr + 4);
  const float4 c_lo = *reinterpret_cast<const float4*>(sm.col_inv + g.tc),
               c_hi = *reinterpret_cast<const float4*>(sm.col_inv + g.tc + 4);
  const float rinv[8] = {r_lo.x, r_lo.y, r_lo.z, r_lo.w, r_hi.x, r_hi.y, r_hi.z, r_hi.w};
  const fmt::ElementFormat e4 = fmt::ElementFormat::e4m3;
  uint32_t q[8][2];  // column-scaled codes: q[i][h] = columns 4h..4h+3 of row i
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    float x[8];
    unpack8(d[i], x);
    uint32_t lo, hi;
    encode8(x, rinv[i], true, e4, true, lo, hi);
    if (i < valid_rows) *reinterpret_cast<uint2*>(x_out + i * ld) = make_uint2(lo, hi);
    q[i][0] = cvt2(x[0] * c_lo.x, x[1] * c_lo.y, e4) | cvt2(x[2] * c_lo.z, x[3] * c_lo.w, e4) << 16;
    q[i][1] = cvt2(x[4] * c_hi.x, x[5] * c_hi.y, e4) | cvt2(x[6] * c_hi.z, x[7] * c_hi.w, e4) << 16;
  }
  // t[j][h] = rows 4h..4h+3 of column j.
  uint32_t t[8][2];
  transpose4x4(q[0][0], q[1][0], q[2][0], q[3][0], t[0][0], t[1][0], t[2][0], t[3][0]);
  transpose4x4(q[0][1], q[1][1], q[2][1], q[3][1], t[4][0], t[5][0], t[6][0], t[7][0]);
  transpose4x4(q[4][0], q[5][0], q[6][0], q[7][0], t[0][1], t[1][1], t[2][1], t[3][1]);
  transpose4x4(q[4][1], q[5][1], q[6][1], q[7][1], t[4][1], t[5][1], t[6][1], t[7][1]);
  if (p.stage_t) {
    // Staged, then written out by 8 threads per row of X^T, 16 bytes each: whole 128-byte lines
    // (16-row chunks past the last row of X are left out; rows % 16 == 0).
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int r = g.tc + j;
      *reinterpret_cast<uint2*>(sm.t_tile + r * 128 + 8 * t_chunk(r, g.tr / 8)) =
          make_uint2(t[j][0], t[j][1]);
    }
    __syncthreads();  // (the next tile writes t_tile only after its first barrier)
    const int valid_chunks = kFull ? 8 : min(8, (p.rows - m0) / 16);
    const size_t ld_t = static_cast<size_t>(p.rows);
    const int c2 = g.tid % 8;
    uint8_t* t_out = p.codes_t + static_cast<size_t>(k0 + g.tid / 8) * ld_t + m0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = i * 32 + g.tid / 8;
      const uint4 v = *reinterpret_cast<const uint4*>(sm.t_tile + r * 128 + c2 * 16);
      const int q = t_chunk(r, 2 * c2) / 2;
      if (q < valid_chunks) *reinterpret_cast<uint4*>(t_out + i * 32 * ld_t + q * 16) = v;
    }
    return;
  }
  if (valid_rows <= 0) return;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    uint8_t* out = p.codes_t + static_cast<size_t>(k0 + g.tc + j) * p.rows + m0 + g.tr;
    if (p.vec_t && valid_rows == 8) {
      *reinterpret_cast<uint2*>(out) = make_uint2(t[j][0], t[j][1]);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i)  // constant indices keep t in registers
        if (i < valid_rows) out[i] = static_cast<uint8_t>(t[j][i / 4] >> (8 * (i % 4)));
    }
  }
}

// One thread block per tile (grid: cols/128 x ceil(rows/128)); the eight loads are the block's
// only memory-level parallelism, so several blocks per SM must overlap: 3 by default (80 registers).
template <int kMinBlocks>
__global__ void __launch_bounds__(256, kMinBlocks) quantize_dual_tile_kernel(DualArgs p) {
  __shared__ DualSmem sm;
  const DualGeom g;
  const int m0 = blockIdx.y * 128, k0 = blockIdx.x * 128;
  if (m0 + 128 <= p.rows)
    dual_tile<true>(p, sm, g, m0, k0);
  else
    dual_tile<false>(p, sm, g, m0, k0);
}

}  // namespace mx8::cuda::qdev
