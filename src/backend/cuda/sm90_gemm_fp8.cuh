// The sm_90a FP8 block-scaled GEMM kernel (see include/mx8/backend/cuda/gemm.h for the contract).
//
// Structure (one CTA per SM, persistent):
//   * warpgroups 0..W-1 are "math" warpgroups, warpgroup W is the producer; the producer gives
//     registers away (setmaxnreg.dec) and one of its threads issues every TMA load;
//   * a ring of `stages` shared-memory slots, each holding the A tile (BM x 128 bytes), the B tile
//     (BN x 128 bytes) and the A scales of that K block, all written by TMA with 128-byte swizzle;
//     slot s has a "full" mbarrier (producer arrive + TMA bytes) and an "empty" mbarrier (one arrive
//     per math warp once it no longer reads the slot);
//   * tiles are visited in the same order by producer and math warps: tile = blockIdx.x + i * grid,
//     M-block fastest, so CTAs running at the same time share B tiles and the A panel in L2;
//   * each math warpgroup owns BM/W rows, processed as 64-row "waves": per K block of 128 it runs
//     four wgmma m64nBNk32 into a scratch accumulator, waits, and promotes it into the FP32 result
//     with scale_a[row] * scale_b[block]: FP32 promotion every 128 of K, as in DeepSeek-V3;
//     256x128 tiles issue the next tile's first wave before storing their accumulators;
//   * kMX (MXFP8): scales are UE8M0 per 1x32 on both operands; the slot also holds 4 x BM and
//     4 x BN scale bytes, and the promotion happens after every wgmma (every 32 of K).
//   * kPairA: 256x128 tiles (m, 2j), (m, 2j + 1) run on the two blocks of a cluster, each block's
//     producer loading half of their common A tile into both (TMA multicast); a slot is refilled
//     once the math warps of both blocks have released it;
//   * KC > 1 (cluster K split): the KC blocks of a thread-block cluster take one tile (the grid has a
//     cluster per tile, not persistent) over KC consecutive K ranges. Block r owns slice r of the
//     tile's columns: every block pushes its promoted FP32 partial sums of the other slices into
//     their owners' shared memory (distributed shared memory stores), one cluster barrier, and each
//     owner adds the KC partials of its slice in rank order and stores it. Small M: KC times fewer
//     K blocks per tile chain, and KC times fewer A re-reads through L2, than the narrow tiles that
//     would otherwise fill the SMs.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "backend/cuda/ptx/cluster.cuh"
#include "backend/cuda/ptx/griddep.cuh"
#include "backend/cuda/ptx/mbarrier.cuh"
#include "backend/cuda/ptx/stmatrix.cuh"
#include "backend/cuda/ptx/tma.cuh"
#include "backend/cuda/ptx/wgmma.cuh"
#include "backend/cuda/sm90_gemm_fp8_params.h"
#include "backend/cuda/warp_uniform.cuh"

namespace mx8::cuda::detail {

// A flag known only at run time, read as `.value` like std::bool_constant (see the K loop).
struct RuntimeFlag {
  bool value;
};

__device__ __forceinline__ float ue8m0_to_float(uint32_t b) {
  // 0 -> 2^-127 (an fp32 subnormal), 255 -> NaN, else 2^(b-127).
  const uint32_t bits = b == 0 ? 0x00400000u : (b == 255 ? 0x7FC00000u : b << 23);
  return __uint_as_float(bits);
}

// Tile `tile` of the launch: its target g (see GemmParams) and its first row and column there.
// Selects, not an indexed parameter read: a run-time index into the parameters would copy them to
// the stack.
static_assert(kMaxGemmGroup == 3, "tile_at and of_target select among three targets");
struct TileAt {
  int g, m0, n0;
};
__device__ __forceinline__ int target_of(const GemmParams& p, int tile) {
  return p.targets < 2 ? 0 : (tile >= p.first_tile[1]) + (p.targets > 2 && tile >= p.first_tile[2]);
}
// kPairA: `tile` is a pair of tiles of one target that share their A tile, (m, 2 j) and (m, 2 j + 1)
// (first_tile then counts pairs), and this block (of a cluster of 2) computes the one of its rank.
template <int BM, int BN, bool kPairA = false>
__device__ __forceinline__ TileAt tile_at(const GemmParams& p, int tile) {
  const int g = target_of(p, tile);
  const int local = tile - (g == 0 ? 0 : g == 1 ? p.first_tile[1] : p.first_tile[2]);
  const int nb = kPairA ? 2 * (local / p.num_m_blocks) + int(ptx::cluster_rank()) : local / p.num_m_blocks;
  return {g, (local % p.num_m_blocks) * BM, nb * BN};
}
template <typename T>
__device__ __forceinline__ T of_target(int g, T t0, T t1, T t2) {
  return g == 0 ? t0 : g == 1 ? t1 : t2;
}

template <int BM, int BN, int W, bool kMX, int KC, bool kPairA>
__global__ void __launch_bounds__((W + 1) * 128, 1)
    sm90_gemm_fp8_kernel(const __grid_constant__ CUtensorMap tm_a, const __grid_constant__ GemmMapsB tm_b,
                         const __grid_constant__ CUtensorMap tm_sa, const __grid_constant__ CUtensorMap tm_sb,
                         const __grid_constant__ CUtensorMap tm_d, const GemmParams p) {
  // Split-K tiles (64 rows, two math warpgroups): both warpgroups own the same 64 rows and take
  // alternate K blocks, so two wgmma chains are in flight per SM where one 64-row chain is
  // latency-bound (small M); partial sums meet in shared memory at the end of the tile.
  constexpr bool kSplitK = is_split_k(BM, W, kMX);
  static_assert(kSplitK || BM % (64 * W) == 0, "each math warpgroup owns whole 64-row waves");
  static_assert(BN % 16 == 0 && BN <= 256, "wgmma N");
  constexpr int kRowsPerWg = kSplitK ? 64 : BM / W;
  constexpr int kWaves = kRowsPerWg / 64;
  constexpr int kRegs = BN / 2;
  // Widths that divide 128 never straddle a B-scale block boundary (n0 is a multiple of BN).
  constexpr bool kOneScaleBlock = 128 % BN == 0;
  using Mma = ptx::WgmmaFp8<BN>;
  constexpr bool kCK = KC > 1;
  static_assert(!kCK || !kMX, "the cluster K split is compiled for the 1x128 path only");
  // kCK: threads that hold the block's partial sums after the split-K hand-over (warpgroup 0 of a
  // split-K tile, else every math thread), and the accumulator registers of a block's slice per
  // wave: whole 8-column groups (4 registers each).
  constexpr int kSumThreads = kSplitK ? 128 : W * 128;
  constexpr int kSlice = kRegs / KC;
  static_assert(kRegs % (4 * KC) == 0, "a slice is whole 8-column groups");

  extern __shared__ uint8_t smem_raw[];
  // TMA with 128-byte swizzle and the wgmma descriptors need 1024-byte aligned tiles. Aligned by
  // pointer arithmetic on the shared array, not through an integer, so that the compiler still
  // knows every pointer below is shared memory: through generic pointers the scale reads were LD,
  // not LDS, and sat in each K block's chain (ncu).
  uint8_t* smem = smem_raw + ((1024 - (ptx::smem_addr(smem_raw) & 1023)) & 1023);
  const int stages = p.stages;
  const SmemLayout L = smem_layout(BM, BN, W, kMX, stages, p.tma_store != 0, kCK);
  uint8_t* smem_a = smem + L.a;
  uint8_t* smem_b = smem + L.b;
  uint8_t* smem_sa = smem + L.sa;     // BM * 4 bytes per slot
  uint8_t* smem_sb = smem + L.sb_mx;  // kMX: 4 * BN bytes per slot
  uint8_t* staging = smem + L.staging;
  float* sb_tile = reinterpret_cast<float*>(smem + L.sb_tile);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L.bars);
  uint64_t* empty = full + stages;
  // kCK: the partial sums pushed to this block, [sender rank][wave][kSlice][kSumThreads] floats.
  float* sums = reinterpret_cast<float*>(smem + L.cluster_sums);

  const int wg = warp_uniform(int(threadIdx.x) / 128);
  const int num_kb = p.k / kBlockK;
  // kPairA: the unit of work is a pair of tiles (tile_at), dealt to the block pairs.
  const int num_tiles = p.first_tile[p.targets];
  // Tiles are dealt to blocks, or (kCK) one to each cluster, whose blocks split the K blocks evenly.
  constexpr int kClusterBlocks = kPairA ? 2 : KC;
  const int crank = kCK ? int(ptx::cluster_rank()) : 0;
  const int first_tile = blockIdx.x / kClusterBlocks, tile_step = gridDim.x / kClusterBlocks;
  const int kb_begin = crank * num_kb / KC, kb_end = (crank + 1) * num_kb / KC;

  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      ptx::mbar_init(&full[s], 1);
      ptx::mbar_init(&empty[s], (kSplitK ? 4 : W * 4) * (kPairA ? 2 : 1));  // kPairA: both blocks' warps
    }
    ptx::fence_barrier_init();
  }
  if (threadIdx.x == W * 128) {
    ptx::tma_prefetch_desc(&tm_a);
    for (int g = 0; g < p.targets; ++g) ptx::tma_prefetch_desc(&tm_b.m[g]);
    ptx::tma_prefetch_desc(&tm_sa);
    if (kMX) ptx::tma_prefetch_desc(&tm_sb);
    if (p.tma_store) ptx::tma_prefetch_desc(&tm_d);
  }
  __syncthreads();
  // kPairA: the other block's copies complete on this block's barriers, which must be initialized.
  if constexpr (kPairA) ptx::cluster_sync_all();
  // The dependent kernel may launch now (launched with programmatic stream serialization): a block
  // of this kernel takes a whole SM's registers, so the dependent's blocks fill only SMs that this
  // kernel leaves free or has left, and they wait for its completion before reading its output.
  ptx::griddep_launch_dependents();
  // kCK: a block's shared memory may be written by the others only once it has started; the
  // math threads wait for this arrival before their pushes, long after (split barrier).
  if constexpr (kCK) ptx::cluster_arrive_relaxed();

  if (wg == W) {
    // ---------------- producer warpgroup ----------------
    if constexpr (W > 1) ptx::setmaxnreg_dec<24>();
    if (threadIdx.x == W * 128) {
      // Bytes the slot's TMA copies deliver: p.a_rows rows of A, BN of B, plus the scales (1x128: a
      // float or a UE8M0 byte per row loaded; MXFP8: 4 x BM and 4 x BN bytes). Must be exact or the
      // barrier never completes.
      const uint32_t tx =
          (p.a_rows + BN) * kBlockK + (kMX ? 4 * BM + 4 * BN : (p.scale_ue8m0 ? p.a_rows : 4 * p.a_rows));
      // The A tile of K block kb into slot s. kPairA: each block of the pair loads half of the shared
      // tile into both (tm_a's box is BM / 2 rows; a half starts at a multiple of 8 rows, so the
      // 128-byte swizzle is the whole tile's).
      auto load_a = [&](int s, int kb, int m0) {
        if constexpr (kPairA) {
          const int half = int(ptx::cluster_rank()) * BM / 2;
          ptx::tma_load_2d_multicast(smem_a + (s * BM + half) * kBlockK, &tm_a, &full[s], kb * kBlockK,
                                     m0 + half, 0b11);
        } else {
          ptx::tma_load_2d(smem_a + s * BM * kBlockK, &tm_a, &full[s], kb * kBlockK, m0);
        }
      };
      // Launched as a programmatic dependent (p.pre_b), the block starts while the kernel before it
      // still runs: the first tile's B tiles of the whole ring are requested before
      // griddepcontrol.wait (B must not be written by that kernel: the contract of
      // GemmFp8Args::pdl), so the weights stream while it finishes; A and every scale are loaded
      // after the wait. Launched plainly, the slots keep their order (A queued behind a ring of B
      // made the first K block late: M = 128, 7168 x 16384 38.3 -> 45.6 us on the H200).
      // `map_of(g)`: target g's B tensor map. A launch of one product takes the map's address as a
      // constant (through a selected pointer, M = 128 x 24576 x 1536 took 5% longer on the H200).
      auto produce = [&](auto map_of) {
        int pre = 0;
        if (p.pre_b && first_tile < num_tiles) {
          const TileAt at = tile_at<BM, BN, kPairA>(p, first_tile);
          pre = min(stages, kb_end - kb_begin);
          for (int i = 0; i < pre; ++i) {  // slots 0 .. pre - 1 of the first pass: free
            ptx::mbar_arrive_expect_tx(&full[i], tx);
            ptx::tma_load_2d(smem_b + i * BN * kBlockK, map_of(at.g), &full[i], (kb_begin + i) * kBlockK,
                             at.n0);
          }
        }
        ptx::griddep_wait();
        int s = 0;
        uint32_t phase = 0;
        for (int tile = first_tile; tile < num_tiles; tile += tile_step) {
          const TileAt at = tile_at<BM, BN, kPairA>(p, tile);
          const int m0 = at.m0, n0 = at.n0;
          for (int kb = kb_begin; kb < kb_end; ++kb) {
            ptx::mbar_wait(&empty[s], phase ^ 1);
            const bool b_requested = pre > 0;  // its bytes expected and its B tile requested already
            if (b_requested)
              --pre;
            else
              ptx::mbar_arrive_expect_tx(&full[s], tx);
            load_a(s, kb, m0);
            if (!b_requested)
              ptx::tma_load_2d(smem_b + s * BN * kBlockK, map_of(at.g), &full[s], kb * kBlockK, n0);
            if constexpr (kMX) {
              ptx::tma_load_2d(smem_sa + s * BM * 4, &tm_sa, &full[s], m0, kb * 4);
              ptx::tma_load_2d(smem_sb + s * BN * 4, &tm_sb, &full[s], n0, kb * 4);
            } else {
              ptx::tma_load_2d(smem_sa + s * BM * 4, &tm_sa, &full[s], m0, kb);
            }
            if (++s == stages) {
              s = 0;
              phase ^= 1;
            }
          }
        }
      };
      if (p.targets == 1)
        produce([&](int) { return &tm_b.m[0]; });
      else
        produce([&](int g) { return of_target(g, &tm_b.m[0], &tm_b.m[1], &tm_b.m[2]); });
    }
    return;
  }

  // ---------------- math warpgroups ----------------
  // Registers per math thread: the whole file (64K) less the producer's 128 x 24, shared by the
  // math warpgroups (multiples of 8): 240 for two, 160 for three (one 64-row wave each).
  if constexpr (W > 1) ptx::setmaxnreg_inc<W >= 3 ? 160 : 240>();
  const int tid_wg = threadIdx.x % 128;
  const int warp = tid_wg / 32;
  const int lane = threadIdx.x % 32;
  const int row_in_wave = warp * 16 + lane / 4;  // and row_in_wave + 8
  const int col_in_group = 2 * (lane % 4);       // and + 1, for each 8-column group j
  const int wg_row0 = kSplitK ? 0 : wg * kRowsPerWg;
  float* my_sb = sb_tile + wg * 2 * kSbCap;
  constexpr int kMxFloats = mx_scale_floats(BM, BN, W);
  [[maybe_unused]] float* mx_scales = sb_tile + wg * 2 * kMxFloats;  // kMX: two K blocks' converted scales
  [[maybe_unused]] int mx_buf = 0;
  bool stores_pending = false;

  const uint64_t desc_a0 = ptx::make_desc_sw128(smem_a + wg_row0 * kBlockK);  // slot 0, first wave
  const uint64_t desc_b0 = ptx::make_desc_sw128(smem_b);
  float acc[kWaves][kRegs];
  float tmp[kRegs];
  // One-wave 1x128 tiles of up to 128 columns with one or two math warpgroups keep two K blocks'
  // groups in flight (kPipeK, below); wider tiles, two-wave tiles and three warpgroups (160 registers
  // each) have no room for a second scratch accumulator. The cluster K split's 128x128 tiles were
  // slower with it (H200, M = 128: 7168 x 16384 38.8 -> 40.0 us over 2 blocks, docs/CUDA.md).
  constexpr bool kPipeK = !kMX && !kSplitK && !kCK && kWaves == 1 && kRegs <= 64 && W <= 2;
  [[maybe_unused]] float tmp2[kMX || kPipeK ? kRegs : 1];  // the second scratch accumulator
  // 128x192 splits the wave's columns into two halves, each its own wgmma group into its own
  // half-size scratch accumulator (kPipeHalf, below): as many registers as one full scratch, and
  // one half is always in flight while the other is promoted (H200: 3-10% faster at M = 128 and
  // 4096; 192x128 on three warpgroups was not faster so, docs/CUDA.md).
  constexpr bool kPipeHalf = !kMX && !kSplitK && !kCK && kWaves == 1 && !kPipeK && W <= 2;
  using MmaHalf = ptx::WgmmaFp8<kPipeHalf ? BN / 2 : 16>;
  constexpr int kHalfRegs = MmaHalf::kRegs;
  [[maybe_unused]] float half_a[kHalfRegs], half_b[kHalfRegs];  // columns [0, BN / 2) and the rest
  int s = 0;
  uint32_t phase = 0;

  // The B scales of tile t's target. Found again where needed, from t (live anyway), not held across
  // the K loop: a pointer and the target index kept there cost M = 128, 7168 x 16384 15% (128x128c2).
  auto scale_b_of = [&](int t) {
    return of_target(target_of(p, t), p.t[0].scale_b, p.t[1].scale_b, p.t[2].scale_b);
  };
  auto load_sb = [&](const void* sb, int nb, int kb) -> float {
    if (p.scale_ue8m0) return ue8m0_to_float(__ldg(static_cast<const uint8_t*>(sb) + nb * num_kb + kb));
    return __ldg(static_cast<const float*>(sb) + nb * num_kb + kb);
  };
  // Persistent tiles fetch the B-scale rows of a tile's first 128 K blocks (K block tid_wg, both
  // rows) one tile ahead, during the previous tile's epilogue, so that a tile does not start with a
  // dependent global load; split-K and cluster-split tiles are usually their block's only tile.
  // fetch_sb derives everything from the parameters and special registers again (a value kept from
  // before the K loop to the epilogue spilled in the 256x128 loop) and writes sb_next on every path,
  // so that sb_next is dead during the K loop. It repeats load_sb's two reads on purpose: one helper
  // for both changed the code of the split-K tiles, 128 x 4096 x 7168 went 16.3 -> 17.4 us.
  constexpr bool kPrefetchSb = !kMX && !kSplitK && !kCK;
  float sb_next[2];
  auto fetch_sb = [&](int t) {
    const int kbs = p.k / kBlockK, kb = threadIdx.x % 128;
    const TileAt at = tile_at<BM, BN, kPairA>(p, t);
    const void* sb = of_target(at.g, p.t[0].scale_b, p.t[1].scale_b, p.t[2].scale_b);
    const int nb = at.n0 / 128, nb_last = (of_target(at.g, p.t[0].n, p.t[1].n, p.t[2].n) - 1) / 128;
    const bool in = kb < kbs;
    auto get = [&](int row) -> float {
      if (!in) return 0.f;
      if (p.scale_ue8m0) return ue8m0_to_float(__ldg(static_cast<const uint8_t*>(sb) + row * kbs + kb));
      return __ldg(static_cast<const float*>(sb) + row * kbs + kb);
    };
    sb_next[0] = get(nb);
    sb_next[1] = get(min(nb + 1, nb_last));
  };
  if (kPrefetchSb && first_tile < num_tiles) fetch_sb(first_tile);
  // Nothing the kernel before this one wrote is read before this (A arrives through the producer,
  // which waited too; the epilogue reads d when it accumulates).
  ptx::griddep_wait();

  // Wave w of the K block in `slot`: four wgmma m64nBNk32 into t (tmp unless said), committed as one
  // group.
  auto issue_wave_to = [&](int slot, int w, float(&t)[kRegs]) {
    const uint64_t desc_a = ptx::desc_plus(desc_a0, (slot * BM + w * 64) * kBlockK / 16);
    const uint64_t desc_b = ptx::desc_plus(desc_b0, slot * BN * kBlockK / 16);
    ptx::fence_regs(t);
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      // +32 bytes along K = +2 in the descriptor's 16-byte address units.
      Mma::mma(ptx::desc_plus(desc_a, 2 * kk), ptx::desc_plus(desc_b, 2 * kk), t, kk > 0);
    }
    ptx::wgmma_commit();
  };
  auto issue_wave = [&](int slot, int w) { issue_wave_to(slot, w, tmp); };
  // Persistent 256x128 tiles (kPipeTiles) issue the next tile's first wave before their epilogue,
  // so every tile starts with that group in flight (H200: M = 4096 1.3-3.7% faster; 192x128 was 10%
  // slower, 128x192 4%, 128x128 within the spread: docs/CUDA.md). The issue is unconditional: the
  // block's last tile issues a wave on whatever slot s holds, without waiting for it, and discards
  // the result. ptxas must see tmp written by a wgmma on every path into the K loop, or it waits
  // for the group where the paths join (C7517).
  constexpr bool kPipeTiles = kPrefetchSb && BM == 256;
  auto issue_next = [&](bool exists) {
    if (exists) ptx::mbar_wait(&full[s], phase);
    issue_wave(s, 0);
  };
  if constexpr (kPipeTiles) issue_next(first_tile < num_tiles);

  for (int tile = first_tile; tile < num_tiles; tile += tile_step) {
    const TileAt at = tile_at<BM, BN, kPairA>(p, tile);
    const int m0 = at.m0, n0 = at.n0;
    const int num_sb_blocks = (of_target(at.g, p.t[0].n, p.t[1].n, p.t[2].n) + 127) / 128;
#pragma unroll
    for (int w = 0; w < kWaves; ++w)
#pragma unroll
      for (int i = 0; i < kRegs; ++i) acc[w][i] = 0.f;

    // B-scale rows of this tile: a tile spans at most two 128-column scale blocks (see the
    // allowed widths in sm90_gemm_fp8.cu); columns at or past 128 - n0 % 128 use the second.
    const int nb0 = n0 / 128;
    const int nb1 = min(nb0 + 1, num_sb_blocks - 1);
    const int n_off = n0 % 128;
    if constexpr (kPrefetchSb) {
      // Stage both B-scale rows of the first kSbCap K blocks (all of them unless K > 128 kSbCap),
      // fetched during the previous tile: the K loop then reads shared memory, never a dependent
      // global load. The first barrier keeps the previous tile's readers safe.
      ptx::named_barrier(1 + wg, 128);
      if (tid_wg < num_kb) {
        my_sb[tid_wg] = sb_next[0];
        my_sb[kSbCap + tid_wg] = sb_next[1];
      }
      const void* sb = scale_b_of(tile);
      for (int i = tid_wg + 128; i < min(kSbCap, num_kb); i += 128) {
        my_sb[i] = load_sb(sb, nb0, i);
        my_sb[kSbCap + i] = load_sb(sb, nb1, i);
      }
      ptx::named_barrier(1 + wg, 128);
    }
    // The K loop. Tiles of 192 and 256 rows compile it once per scale type, so the scale type is
    // not tested in the loop (UE8M0 2-7% faster at M = 4096); for the smaller tiles the second copy
    // of the loop cost 3-5% at M = 128 (docs/CUDA.md, fourteenth session).
    auto stage_sb = [&](int kb, int kr) {
      if (!kMX && kr % kSbCap == 0 && (kr > 0 || !kPrefetchSb)) {
        // Stage both B-scale rows of the next kSbCap K blocks (kPrefetchSb: of K blocks past the
        // first kSbCap). The first barrier keeps the previous readers safe.
        ptx::named_barrier(1 + wg, 128);
        const void* sb = scale_b_of(tile);
        for (int i = tid_wg; i < min(kSbCap, kb_end - kb); i += 128) {
          my_sb[i] = load_sb(sb, nb0, kb + i);
          my_sb[kSbCap + i] = load_sb(sb, nb1, kb + i);
        }
        ptx::named_barrier(1 + wg, 128);
      }
    };
    // A scales of this thread's two rows of wave w in slot s, read before the slot is released.
    auto read_sa = [&](int w, auto ue8m0, float(&sa)[2]) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = wg_row0 + w * 64 + row_in_wave + 8 * h;
        sa[h] = ue8m0.value ? ue8m0_to_float(smem_sa[s * BM * 4 + r])
                            : reinterpret_cast<const float*>(smem_sa + s * BM * 4)[r];
      }
    };
    // acc[w] += t * scale_a[row] * scale_b[block]: the FP32 promotion of one K block.
    auto promote = [&](int w, const float(&t)[kRegs], const float(&sa)[2], float sb0, float sb1) {
      const float s00 = sa[0] * sb0, s10 = sa[1] * sb0;
      if constexpr (kOneScaleBlock) {
#pragma unroll
        for (int i = 0; i < kRegs; ++i) acc[w][i] = fmaf(t[i], (i % 4) >= 2 ? s10 : s00, acc[w][i]);
      } else {
        const float s01 = sa[0] * sb1, s11 = sa[1] * sb1;
#pragma unroll
        for (int j = 0; j < kRegs / 4; ++j) {
          const bool second = n_off + 8 * j >= 128;
          const float lo = second ? s01 : s00, hi = second ? s11 : s10;
          acc[w][4 * j + 0] = fmaf(t[4 * j + 0], lo, acc[w][4 * j + 0]);
          acc[w][4 * j + 1] = fmaf(t[4 * j + 1], lo, acc[w][4 * j + 1]);
          acc[w][4 * j + 2] = fmaf(t[4 * j + 2], hi, acc[w][4 * j + 2]);
          acc[w][4 * j + 3] = fmaf(t[4 * j + 3], hi, acc[w][4 * j + 3]);
        }
      }
    };
    auto next_slot = [&] {
      if (++s == stages) {
        s = 0;
        phase ^= 1;
      }
    };
    auto k_block = [&](int kb, auto ue8m0, auto pre_issued) {
      const int kr = kb - kb_begin;  // K blocks into this block's range
      stage_sb(kb, kr);
      if (kSplitK && (kr & 1) != wg) {  // the other warpgroup's K block: only keep the ring in step
        next_slot();
        return;
      }
      [[maybe_unused]] float sb0 = 0.f, sb1 = 0.f;
      if constexpr (!kMX) {
        sb0 = my_sb[kr % kSbCap];
        if constexpr (!kOneScaleBlock) sb1 = my_sb[kSbCap + kr % kSbCap];
      }
      // Split-K: the slot's previous K block may have been the other warpgroup's (a ring of an odd
      // number of stages, or a tile of an odd number of K blocks), and this one never waited for it.
      // A parity wait on `full` alone cannot tell that phase from this one: it passed while that load
      // was still landing, the early release let the producer arm the barrier again with a phase
      // pending, and the GPU stopped with an illegal instruction at the producer's arrive (H200,
      // docs/CUDA_BACKEND.md, thirty-fourth session). `empty` cannot run ahead of the slot's consumers,
      // so the wait for that K block's release is exact, and then so is the parity wait.
      if constexpr (kSplitK) ptx::mbar_wait(&empty[s], phase ^ 1);
      ptx::mbar_wait(&full[s], phase);
      // Slot s's B descriptor from slot 0's, one add on the low word (see desc_plus); used by the
      // MXFP8 path below (issue_wave computes its own).
      const uint64_t desc_b = ptx::desc_plus(desc_b0, s * BN * kBlockK / 16);

      if constexpr (!kMX) {
        float sa[kWaves][2];
#pragma unroll
        for (int w = 0; w < kWaves; ++w) read_sa(w, ue8m0, sa[w]);
#pragma unroll
        for (int w = 0; w < kWaves; ++w) {
          if (!(pre_issued.value && w == 0)) issue_wave(s, w);
          ptx::wgmma_wait<0>();
          ptx::fence_regs(tmp);
          if (w == kWaves - 1) {
            if constexpr (kPairA) {  // the slot in both blocks: the other block's A half lands in it too
              __syncwarp();
              if (lane < 2) ptx::mbar_arrive_cluster(&empty[s], lane);
            } else {
              ptx::mbar_arrive_one_lane(&empty[s]);
            }
          }
          promote(w, tmp, sa[w], sb0, sb1);
        }
      } else {
        auto issue = [&](int w, int kk, float(&t)[kRegs]) {
          const uint64_t desc_a = ptx::desc_plus(desc_a0, (s * BM + w * 64) * kBlockK / 16);
          ptx::fence_regs(t);
          ptx::wgmma_fence();
          Mma::mma(ptx::desc_plus(desc_a, 2 * kk), ptx::desc_plus(desc_b, 2 * kk), t, false);
          ptx::wgmma_commit();
        };
        issue(0, 0, tmp);
        // While the first wgmma runs, the warpgroup converts the slot's UE8M0 scale bytes that it
        // multiplies by into floats, 4 bytes per thread, into the buffer it did not use for the
        // previous K block: a thread writes a buffer only after every thread of the warpgroup has
        // passed the barrier of the K block in between, so one barrier per K block is enough.
        // Converting inside the promotion (two conversions per pair of columns) took 6.0 SASS
        // instructions per accumulator every 32 of K; now 2.9 (the 128x128 K loop: 1549 -> 748 per
        // K block), and M = 4096 runs 1.5x faster.
        float* fsb = mx_scales + mx_buf * kMxFloats;  // [4][BN]
        float* fsa = fsb + 4 * BN;                    // [4][kRowsPerWg]
        mx_buf ^= 1;
        auto convert4 = [](const uint8_t* from, float* to) {
          const uint32_t q = *reinterpret_cast<const uint32_t*>(from);
          *reinterpret_cast<float4*>(to) =
              make_float4(ue8m0_to_float(q & 0xFF), ue8m0_to_float((q >> 8) & 0xFF),
                          ue8m0_to_float((q >> 16) & 0xFF), ue8m0_to_float(q >> 24));
        };
        const uint8_t* sa_slot = smem_sa + s * BM * 4;  // [4][BM] bytes
        const uint8_t* sb_slot = smem_sb + s * BN * 4;  // [4][BN] bytes
        for (int i = 4 * tid_wg; i < 4 * BN; i += 512) convert4(sb_slot + i, fsb + i);
        for (int i = 4 * tid_wg; i < 4 * kRowsPerWg; i += 512)
          convert4(sa_slot + i / kRowsPerWg * BM + wg_row0 + i % kRowsPerWg, fsa + i);
        ptx::named_barrier(1 + wg, 128);
#pragma unroll
        for (int w = 0; w < kWaves; ++w) {
          // Two scratch accumulators: the wgmma of step kk + 1 runs on the tensor cores while step kk
          // is promoted (a multiply and an FFMA per element every 32 of K).
          if (w > 0) issue(w, 0, tmp);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) {
            float(&cur)[kRegs] = kk % 2 == 0 ? tmp : tmp2;
            const float* row_scale = fsa + kk * kRowsPerWg + w * 64 + row_in_wave;
            float sa0, sa1;
            float2 b[kRegs / 4];
            auto load_scales = [&] {
              sa0 = row_scale[0];
              sa1 = row_scale[8];
#pragma unroll
              for (int j = 0; j < kRegs / 4; ++j)
                b[j] = *reinterpret_cast<const float2*>(fsb + kk * BN + 8 * j + col_in_group);
            };
            // 64-column tiles read the step's scales before the wait (a compiler barrier), so that
            // their latency overlaps it: 7-9% faster; 128-column tiles were 1-2% slower so (H200).
            if constexpr (kRegs <= 32) load_scales();
            if (kk + 1 < 4) {
              issue(w, kk + 1, kk % 2 == 0 ? tmp2 : tmp);
              ptx::wgmma_wait<1>();
            } else {
              ptx::wgmma_wait<0>();
            }
            if constexpr (kRegs > 32) load_scales();
            ptx::fence_regs(cur);
#pragma unroll
            for (int j = 0; j < kRegs / 4; ++j) {
              acc[w][4 * j + 0] = fmaf(cur[4 * j + 0], sa0 * b[j].x, acc[w][4 * j + 0]);
              acc[w][4 * j + 1] = fmaf(cur[4 * j + 1], sa0 * b[j].y, acc[w][4 * j + 1]);
              acc[w][4 * j + 2] = fmaf(cur[4 * j + 2], sa1 * b[j].x, acc[w][4 * j + 2]);
              acc[w][4 * j + 3] = fmaf(cur[4 * j + 3], sa1 * b[j].y, acc[w][4 * j + 3]);
            }
          }
        }
        __syncwarp();
        if (lane == 0) ptx::mbar_arrive(&empty[s]);
      }
      next_slot();
    };
    // kPipeK: K block kb's group (in cur) is in flight on entry; the next one's goes into nxt before
    // kb is promoted (has_next), so the tensor cores work while the warpgroup promotes.
    auto pipe_step = [&](int kb, float(&cur)[kRegs], float(&nxt)[kRegs], bool has_next, RuntimeFlag ue8m0) {
      const int kr = kb - kb_begin;
      stage_sb(kb, kr);
      const float sb0 = my_sb[kr % kSbCap];
      const float sb1 = kOneScaleBlock ? 0.f : my_sb[kSbCap + kr % kSbCap];
      float sa[2];
      read_sa(0, ue8m0, sa);
      const int done = s;
      next_slot();
      if (has_next) {
        ptx::mbar_wait(&full[s], phase);
        issue_wave_to(s, 0, nxt);
        ptx::wgmma_wait<1>();
      } else {
        ptx::wgmma_wait<0>();
      }
      ptx::fence_regs(cur);
      ptx::mbar_arrive_one_lane(&empty[done]);
      promote(0, cur, sa, sb0, sb1);
    };
    // kPipeHalf: half h of the wave's columns of the K block in `slot` into t, one group.
    auto issue_half = [&](int slot, int h, float(&t)[kHalfRegs]) {
      const uint64_t desc_a = ptx::desc_plus(desc_a0, slot * BM * kBlockK / 16);
      const uint64_t desc_b = ptx::desc_plus(desc_b0, (slot * BN + h * BN / 2) * kBlockK / 16);
      ptx::fence_regs(t);
      ptx::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        MmaHalf::mma(ptx::desc_plus(desc_a, 2 * kk), ptx::desc_plus(desc_b, 2 * kk), t, kk > 0);
      ptx::wgmma_commit();
    };
    // promote() for half h: register i of t is register h * kHalfRegs + i of the wave.
    auto promote_half = [&](int h, const float(&t)[kHalfRegs], const float(&sa)[2], float sb0, float sb1) {
      const float s00 = sa[0] * sb0, s10 = sa[1] * sb0, s01 = sa[0] * sb1, s11 = sa[1] * sb1;
#pragma unroll
      for (int i = 0; i < kHalfRegs; ++i) {
        const int r = h * kHalfRegs + i;
        const bool second = !kOneScaleBlock && n_off + 8 * (r / 4) >= 128;
        const bool row8 = (i % 4) >= 2;  // the thread's second row (+ 8)
        acc[0][r] = fmaf(t[i], second ? (row8 ? s11 : s01) : (row8 ? s10 : s00), acc[0][r]);
      }
    };
    // kPipeHalf: the first half of K block kb is in flight on entry (its slot waited for), and
    // (has_next) the first half of kb + 1 on exit; each half is promoted while the group after it
    // runs.
    auto half_step = [&](int kb, bool has_next, auto ue8m0) {
      const int kr = kb - kb_begin;
      issue_half(s, 1, half_b);
      stage_sb(kb, kr);
      const float sb0 = my_sb[kr % kSbCap];
      const float sb1 = kOneScaleBlock ? 0.f : my_sb[kSbCap + kr % kSbCap];
      float sa[2];
      read_sa(0, ue8m0, sa);
      ptx::wgmma_wait<1>();
      ptx::fence_regs(half_a);
      promote_half(0, half_a, sa, sb0, sb1);
      const int done = s;
      next_slot();
      if (has_next) {
        ptx::mbar_wait(&full[s], phase);
        issue_half(s, 0, half_a);
        ptx::wgmma_wait<1>();
      } else {
        ptx::wgmma_wait<0>();
      }
      ptx::fence_regs(half_b);
      ptx::mbar_arrive_one_lane(&empty[done]);
      promote_half(1, half_b, sa, sb0, sb1);
    };
    auto k_loop = [&](auto ue8m0) {
      int kb = kb_begin;
      if constexpr (kPipeHalf) {
        ptx::mbar_wait(&full[s], phase);
        issue_half(s, 0, half_a);
        // Unrolled by two like kPipeK's loop: one step per iteration made ptxas serialize the
        // wgmma (C7514), though each half keeps its registers.
        for (; kb + 2 < kb_end; kb += 2) {
          half_step(kb, true, ue8m0);
          half_step(kb + 1, true, ue8m0);
        }
        if (kb + 1 < kb_end) {
          half_step(kb, true, ue8m0);
          half_step(kb + 1, false, ue8m0);
        } else {
          half_step(kb, false, ue8m0);
        }
      } else if constexpr (kPipeK) {
        // Unrolled by two so that cur and nxt are fixed registers in each step (an accumulator
        // chosen at run time would make ptxas serialize every wgmma, C7514): tmp holds the group in
        // flight at the top of every iteration (a pipelined tile has at least one K block).
        ptx::mbar_wait(&full[s], phase);
        issue_wave_to(s, 0, tmp);
        for (; kb + 2 < kb_end; kb += 2) {
          pipe_step(kb, tmp, tmp2, true, ue8m0);
          pipe_step(kb + 1, tmp2, tmp, true, ue8m0);
        }
        if (kb + 1 < kb_end) {
          pipe_step(kb, tmp, tmp2, true, ue8m0);
          pipe_step(kb + 1, tmp2, tmp, false, ue8m0);
        } else {
          pipe_step(kb, tmp, tmp2, false, ue8m0);
        }
      } else {
        if constexpr (kPipeTiles) k_block(kb++, ue8m0, std::true_type{});
        for (; kb < kb_end; ++kb) k_block(kb, ue8m0, std::false_type{});
      }
    };
    if constexpr (kMX || BM < 192)
      k_loop(RuntimeFlag{p.scale_ue8m0 != 0});
    else if (p.scale_ue8m0)
      k_loop(std::true_type{});
    else
      k_loop(std::false_type{});
    // The next tile's first wave goes to the tensor cores now, and runs while this tile's epilogue
    // converts and stores the accumulators (tmp is free: this tile's promotions are done).
    if constexpr (kPipeTiles) issue_next(tile + tile_step < num_tiles);

    // Two-wave tiles (256x128) fetch after their first wave's output, when its registers are free:
    // before the epilogue, the fetched values would push 256x128 past its register budget.
    const bool fetch_next = kPrefetchSb && tile + tile_step < num_tiles;
    if (kWaves < 2 && fetch_next) fetch_sb(tile + tile_step);
    if constexpr (kSplitK) {
      // Warpgroup 1 hands its partial sums to warpgroup 0, which finishes the tile. The first
      // barrier also proves warpgroup 0 is done reading the previous tile's partials.
      float* red = reinterpret_cast<float*>(smem + L.reduce);
      ptx::named_barrier(15, 256);
      if (wg == 1) {
#pragma unroll
        for (int i = 0; i < kRegs; ++i) red[i * 128 + tid_wg] = acc[0][i];
      }
      ptx::named_barrier(15, 256);
      if (wg == 1) continue;
#pragma unroll
      for (int i = 0; i < kRegs; ++i) acc[0][i] += red[i * 128 + tid_wg];
    }
    // kCK: this block's slice of the tile's columns, 8-column groups [j_lo, j_hi); all of them
    // otherwise.
    int j_lo = 0, j_hi = kRegs / 4;
    if constexpr (kCK) {
      const int mt = kSplitK ? tid_wg : int(threadIdx.x);  // index among the kSumThreads
      // Slot of (sender, wave, register of the slice) for this thread: stride kSumThreads, so the
      // stores and loads of a warp are conflict-free.
      auto slot = [&](int sender, int w, int i) {
        return ((sender * kWaves + w) * kSlice + i % kSlice) * kSumThreads + mt;
      };
      uint32_t peer[KC];
#pragma unroll
      for (int q = 0; q < KC; ++q) peer[q] = ptx::cluster_peer_addr(sums, q);
      ptx::cluster_wait();  // every block of the cluster has started
#pragma unroll
      for (int w = 0; w < kWaves; ++w)
#pragma unroll
        for (int i = 0; i < kRegs; ++i)
          if (i / kSlice != crank) ptx::st_cluster(peer[i / kSlice] + 4 * slot(crank, w, i), acc[w][i]);
      // Every thread still running in the cluster (the producers have issued their last loads and
      // exited; so have a split-K tile's second warpgroups): the pushes are visible after it, and no
      // block exits while another may still write to it.
      ptx::cluster_sync_all();
      // Added in rank order, the same order whichever block owns the slice.
#pragma unroll
      for (int w = 0; w < kWaves; ++w)
#pragma unroll
        for (int i = 0; i < kRegs; ++i) {
          if (i / kSlice != crank) continue;
          float v = 0.f;
#pragma unroll
          for (int q = 0; q < KC; ++q) v += q == crank ? acc[w][i] : sums[slot(q, w, i)];
          acc[w][i] = v;
        }
      j_lo = crank * kSlice / 4;
      j_hi = j_lo + kSlice / 4;
    }
    if (p.debug & 1) {
      if (kWaves == 2 && fetch_next) fetch_sb(tile + tile_step);
      continue;
    }
    if (p.tma_store) {
      // Epilogue through shared memory: bf16 pairs into a 128-byte-swizzled tile (16-byte chunk c
      // of row r stored at chunk c ^ (r % 8): conflict-free, and the layout TMA's SWIZZLE_128B
      // expects), then one thread of the warpgroup stores its rows with TMA, asynchronously: the
      // next tile's K loop overlaps the store. The tile is split into 64-column panels. An 8-column
      // group of a 16-row half-wave is one 8x8 matrix of the accumulator layout: one stmatrix.x4
      // writes two groups of both halves (lane t addresses row t % 8 of matrix t / 8).
      if (tid_wg == 0 && stores_pending) ptx::bulk_wait_read<0>();
      ptx::named_barrier(1 + wg, 128);
#pragma unroll
      for (int w = 0; w < kWaves; ++w) {
        const int r = wg_row0 + w * 64 + warp * 16 + ((lane / 8) % 2) * 8 + lane % 8;
#pragma unroll
        for (int j = 0; j < kRegs / 4; j += 2) {
          const int jq = j + lane / 16, panel = jq / 8, chunk = jq % 8;
          auto pack = [&](int i) {
            const __nv_bfloat162 v = __floats2bfloat162_rn(acc[w][i], acc[w][i + 1]);
            return *reinterpret_cast<const uint32_t*>(&v);
          };
          ptx::stmatrix_x4(staging + panel * BM * 128 + r * 128 + ((chunk ^ (lane % 8)) * 16), pack(4 * j),
                           pack(4 * j + 2), pack(4 * j + 4), pack(4 * j + 6));
        }
        if (kWaves == 2 && w == 0 && fetch_next) fetch_sb(tile + tile_step);
      }
      ptx::fence_proxy_async_smem();
      ptx::named_barrier(1 + wg, 128);
      if (tid_wg == 0) {
#pragma unroll
        for (int panel = 0; panel < BN / 64; ++panel)
          ptx::tma_store_2d(&tm_d, staging + panel * BM * 128 + wg_row0 * 128, n0 + panel * 64, m0 + wg_row0);
        ptx::bulk_commit();
        stores_pending = true;
      }
      continue;
    }
    // Epilogue straight from registers, masked to M x N (N % 16 == 0, so a column pair is either
    // wholly inside or wholly outside). The target is found again (see scale_b_of).
    const int g = target_of(p, tile);
    const int n = of_target(g, p.t[0].n, p.t[1].n, p.t[2].n);
    void* const d = of_target(g, p.t[0].d, p.t[1].d, p.t[2].d);
#pragma unroll
    for (int w = 0; w < kWaves; ++w) {
      if (kWaves == 2 && w == 1 && fetch_next) fetch_sb(tile + tile_step);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + wg_row0 + w * 64 + row_in_wave + 8 * h;
        if (row >= p.m) continue;
#pragma unroll
        for (int j = 0; j < kRegs / 4; ++j) {
          const int col = n0 + 8 * j + col_in_group;
          if (col >= n || j < j_lo || j >= j_hi) continue;
          const float v0 = acc[w][4 * j + 2 * h], v1 = acc[w][4 * j + 2 * h + 1];
          const size_t off = static_cast<size_t>(row) * n + col;
          if (p.out_f32) {
            float2* dst = reinterpret_cast<float2*>(static_cast<float*>(d) + off);
            if (p.accumulate) {
              const float2 old = *dst;
              *dst = make_float2(old.x + v0, old.y + v1);
            } else {
              *dst = make_float2(v0, v1);
            }
          } else {
            *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(d) + off) =
                __floats2bfloat162_rn(v0, v1);
          }
        }
      }
    }
  }
  if constexpr (kPipeTiles) ptx::wgmma_wait<0>();  // the discarded wave (see issue_next)
  // Shared memory must outlive the TMA stores reading it.
  if (tid_wg == 0 && stores_pending) ptx::bulk_wait<0>();
  // kPairA: and the other block's arrivals on this block's barriers (its producer has exited).
  if constexpr (kPairA) ptx::cluster_sync_all();
}

}  // namespace mx8::cuda::detail
