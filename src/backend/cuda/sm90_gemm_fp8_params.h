// Parameters shared by the GEMM kernel (sm90_gemm_fp8.cuh) and its host launcher, and the
// declaration of the per-shape launch functions, which are instantiated in separate translation
// units (sm90_gemm_fp8_inst_*.cu) so that the heavy kernel instantiations compile in parallel.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "mx8/backend/cuda/gemm.h"

namespace mx8::cuda::detail {

// Up to kMaxGemmGroup (gemm.h) products that share A (a group such as q/k/v or gate/up) run as one launch:
// each target has its own B (tensor map GemmMapsB::m[g]), B scales, d and N; tiles are numbered
// target by target, target g owning tiles [first_tile[g], first_tile[g + 1]) (with kPairA: pairs of
// tiles, numbered the same way).
struct GemmTarget {
  const void* scale_b;  // 1x128 path: [ceil(N/128)][K/128]
  void* d;
  int n;
};
struct GemmMapsB {
  CUtensorMap m[kMaxGemmGroup];
};

struct GemmParams {
  GemmTarget t[kMaxGemmGroup];
  int targets;
  int first_tile[kMaxGemmGroup + 1];
  int m, k;
  int num_m_blocks;
  int stages;
  int scale_ue8m0;  // 1x128 path: scales are UE8M0 bytes rather than float32
  int out_f32;
  int accumulate;  // f32 output: d += the product
  int tma_store;   // bf16 output through a swizzled shared-memory tile and TMA stores (BN % 64 == 0)
  int debug;       // bit 0: skip the output stores (timing experiments only)
  int pre_b;       // launched as a programmatic dependent: the ring's first B tiles before the wait
  // Rows of A (and of its 1x128 scales) that one TMA load brings: BM, or M rounded up to 16 where
  // one block of rows covers M (a_rows_for). The slot's rows past it keep stale values; the output
  // rows they feed lie past M and are never stored. MXFP8 loads its A scales as whole [4][BM] boxes.
  int a_rows;
};

// Out-of-bounds rows of a TMA box are filled slowly: with M = 16 and 64-row tiles, 7168 x 16384
// took 47 us against 36 at M = 64 (H200), so a lone block of rows loads only the rows that exist.
// 16: the A-scale box must be a multiple of 16 bytes also for UE8M0 bytes, and the swizzle atom is 8.
inline int a_rows_for(int m, int bm) {
  return m >= bm ? bm : (m + 15) / 16 * 16;
}

constexpr int kBlockK = 128;
constexpr int kSmemLimit = 232448;  // sm_90 opt-in maximum per block

// Per math warpgroup, the tile's two B-scale rows are staged in shared memory (2 x kSbCap floats)
// once per tile, or once per kSbCap K blocks where K > 128 kSbCap, so the K loop never waits on a
// global load.
constexpr int kSbCap = 256;

__host__ __device__ constexpr int stage_bytes(int bm, int bn, bool mx) {
  return bm * kBlockK + bn * kBlockK + bm * 4 + (mx ? bn * 4 : 0);
}
__host__ __device__ constexpr int align1024(int x) {
  return (x + 1023) / 1024 * 1024;
}
// 64-row tiles with two math warpgroups split K between them (sm90_gemm_fp8.cuh), 1x128 and MXFP8.
__host__ __device__ constexpr bool is_split_k(int bm, int w, bool mx) {
  return bm == 64 && w == 2;
}
// MXFP8: floats per math warpgroup for one K block's scales, converted from the slot's UE8M0 bytes
// once per K block: [4][bn] column scales, then [4][rows the warpgroup owns] row scales.
__host__ __device__ constexpr int mx_scale_floats(int bm, int bn, int w) {
  return 4 * bn + 4 * (is_split_k(bm, w, true) ? 64 : bm / w);
}
// Offsets inside the (1024-aligned) dynamic shared memory. `ck`: the cluster K split's buffer for
// the partial sums that the other blocks of the cluster push (BM x BN floats). `sb_tile` holds the
// 1x128 path's staged B scales, or MXFP8's converted scales (two K blocks per math warpgroup).
struct SmemLayout {
  int a, b, sa, sb_mx, staging, sb_tile, reduce, cluster_sums, bars, total;
};
__host__ __device__ constexpr SmemLayout smem_layout(int bm, int bn, int w, bool mx, int stages,
                                                     bool tma_store, bool ck = false) {
  SmemLayout l{};
  l.a = 0;
  l.b = l.a + stages * bm * kBlockK;
  l.sa = l.b + stages * bn * kBlockK;
  l.sb_mx = l.sa + stages * bm * 4;
  l.staging = align1024(l.sb_mx + (mx ? stages * bn * 4 : 0));
  l.sb_tile = l.staging + (tma_store ? bm * bn * 2 : 0);
  l.reduce = l.sb_tile + w * 2 * (mx ? mx_scale_floats(bm, bn, w) : kSbCap) * 4;
  l.cluster_sums = l.reduce + (is_split_k(bm, w, mx) ? bm * bn * 4 : 0);
  l.bars = l.cluster_sums + (ck ? bm * bn * 4 : 0);
  l.total = l.bars + stages * 16;
  return l;
}
// Dynamic shared memory to request: the layout plus 1024 bytes of alignment slack.
__host__ __device__ constexpr int smem_bytes(int bm, int bn, int w, bool mx, int stages, bool tma_store,
                                             bool ck = false) {
  return 1024 + smem_layout(bm, bn, w, mx, stages, tma_store, ck).total;
}

// KC > 1: clusters of KC blocks split each tile's K range (sm90_gemm_fp8.cuh); then `grid` must be
// KC x the tile count (one cluster per tile). kPairA: clusters of 2 blocks take pairs of tiles that
// share their A tile, each loading half of it into both (`ta`'s box is BM / 2 rows; every target an
// even number of N blocks: gemm_fp8_pairs_share_a); `grid` even.
template <int BM, int BN, int W, bool kMX, int KC = 1, bool kPairA = false>
void launch_gemm(const CUtensorMap& ta, const GemmMapsB& tb, const CUtensorMap& tsa, const CUtensorMap& tsb,
                 const CUtensorMap& td, const GemmParams& p, int grid, bool pdl, cudaStream_t stream);

}  // namespace mx8::cuda::detail
