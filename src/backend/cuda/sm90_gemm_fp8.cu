// Host side of the sm_90a FP8 GEMMs: argument checks, tensor maps, the tile-shape heuristic, and
// dispatch to the compiled instantiations of sm90_gemm_fp8_kernel.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/sm90_gemm_fp8_params.h"
#include "backend/cuda/tensor_map.h"
#include "mx8/backend/cuda/gemm.h"

namespace mx8::cuda {
namespace {

using detail::GemmParams;
using detail::kBlockK;

struct Shape {
  int bm, bn, w;
  bool ck = false;    // the cluster K split variant (GemmConfig::splits > 1)
  int ck_splits = 0;  // ck: the one cluster size compiled (0: each of kClusterSplits)
};
// Compiled 1x128 tile shapes. A tile may span at most two 128-column B-scale blocks: any width
// <= 144, or 160/192/256 (whose offsets n0 % 128 are multiples of 32/64/128), satisfies that.
// w = 2 with 64 rows is the split-K variant (two warpgroups on alternate K blocks of one tile);
// 192 rows take three math warpgroups of one 64-row wave each, a third tile height for rounding
// the tile count to whole rounds of 132 SMs (4096 x 2112 x 7168: 374 tiles fill three rounds to 94%).
// ck: clusters of 2 or 4 blocks split each tile's K range (kClusterSplits), for small M and few
// tiles: 64 x 2112 x 7168 runs 33 64x64 tiles on 66 SMs, each over half of K, instead of 132 64x16
// tiles that each read all of A (12.1 against 14.3 us, docs/CUDA.md). Of the four shapes built and
// swept with it, 64x128 and 128x64 never won, so only these two are compiled, and 64x96 over clusters of
// 4 (ck_splits): N = 2112 at M = 64 in 22 tiles, one round of 22 clusters with a quarter of K each
// (11.6-11.9 against 12.7-12.9 us for 64x64 over 2; thirty-second session, docs/CUDA.md). 96 and 112
// wide at M = 128 and over 2 blocks were built and swept in the same run and never won. 64x192 (split-K) is
// for wide N at M <= 64: 64 x 24576 x 1536 in one round of 128 tiles (15.6 against 17.8 us for 64x128).
constexpr Shape kShapes[] = {{64, 16, 1},       {64, 32, 1},         {64, 64, 1},         {64, 128, 1},
                             {64, 16, 2},       {64, 32, 2},         {64, 64, 2},         {64, 128, 2},
                             {64, 192, 2},      {128, 16, 2},        {128, 32, 2},        {128, 64, 2},
                             {128, 128, 2},     {128, 192, 2},       {256, 128, 2},       {192, 128, 3},
                             {64, 64, 2, true}, {128, 128, 2, true}, {64, 96, 2, true, 4}};
constexpr int kClusterSplits[] = {2, 4};
constexpr Shape kMxShapes[] = {{64, 64, 2}, {128, 128, 2}};

// Cost model per 128-wide K block of one tile, calibrated on the H200 (docs/CUDA.md):
//  * latency: one math warpgroup cannot finish a K block faster than its chain of TMA wait ->
//    4 wgmma -> wait -> promote -> release: ~0.35 us for the 128-row tiles that run it one K block
//    at a time (128x192, the cluster K split's 128x128). One-wave tiles up to 128 wide issue the
//    next K block's group before promoting (kPipeK in sm90_gemm_fp8.cuh): ~0.27 us for 64 rows on
//    one warpgroup, ~0.2 us for 128 rows on two; split-K 64-row tiles run two chains per SM, ~0.22.
//    A 128-row tile in a partial last block of several is charged 0.35: its A box reads rows past
//    M, which TMA fills slowly (M = 192, 2112 x 7168 on 128x32: 22.3 us, on 64x64 17.7);
//  * tensor cores: 2 BM BN 128 FLOP at the per-SM peak times an efficiency measured per shape
//    (256x128 and 192x128: 0.62, 64-row on one warpgroup: 0.45, split-K 64-row: 0.38, 128x192:
//    0.52, other 128-row: 0.51). Split-K's 0.38 (forty-fifth session) is what 64x192 reaches at
//    M = 320 (4096 x 7168: 32.5 us against 26.9 for 128x128); at 0.45 the model gave it M = 160..768
//    products where 128x128 is 11-19% faster (Llama-3-8B's 6144 x 4096 at M = 192, 21.2 -> 18.2 us);
//  * loads: (rows of A actually present + BN) x 128 bytes through one SM's share of L2/DRAM,
//    ~100 GB/s (M = 128, 7168 x 16384 on 128x64 tiles pulls 86 GB/s per SM with its loop pipelined).
// The constants were fitted (seventh session, refitted in the thirteenth, forty-fourth and forty-fifth,
// H200) to a forced-tile sweep of the six DeepSeek-V3 shapes (tests/cuda/data/gemm_tile_sweep_h200.txt,
// scripts/fit_gemm_heuristic.py): at M = 64, 128 and 4096 the pick is the measured best tile, or within
// 5% of it, on every shape; at M = 320 and 448 (partial last blocks) within 10%.
double kb_seconds(const Shape& s, int m) {
  constexpr double kPeakPerSm = 1979e12 / 132, kSmBytesPerSec = 100e9;
  const bool pipelined = s.bm == 128 && s.bn <= 128 && !s.ck && (m <= s.bm || m % s.bm == 0);
  const double latency = s.bm == 64    ? (s.w == 2 ? 0.22e-6 : 0.27e-6)
                         : s.bm == 128 ? (pipelined ? 0.2e-6 : 0.35e-6)
                                       : 0.0;
  // 192x128 (three warpgroups, one 64-row wave each) matched 256x128 per FLOP where both fill
  // whole rounds (4096 x 24576 x 1536: 267.9 vs 267.4 us, twelfth session, .carry/lead/g3.sh).
  const double eff = s.bm >= 192 ? 0.62 : s.bm == 64 ? (s.w == 2 ? 0.38 : 0.45) : s.bn >= 192 ? 0.52 : 0.51;
  const double mma = 2.0 * s.bm * s.bn * 128 / (kPeakPerSm * eff);
  const double load = double(std::min(m, s.bm) + s.bn) * 128 / kSmBytesPerSec;
  return std::max({latency, mma, load});
}

// Tiles in progress at once: one per SM, or one per cluster of `splits` blocks. A cluster's blocks
// must share a GPC, and the H200's GPCs (14-18 SMs) run only 30 clusters of 4 one-block-per-SM
// blocks at once, not 33 (cudaOccupancyMaxActiveClusters, docs/CUDA.md); 66 of 2.
long tile_slots(int num_sms, int splits) {
  return splits == 4 ? num_sms * 30L / 132 : num_sms / splits;
}

// Estimated seconds of the schedule: the busiest SM's (or cluster's) tiles, each its K blocks (its
// share of them with a cluster K split) plus a fixed per-tile cost (epilogue, pipeline turn-around;
// 3 us more with a cluster split: the exchange of partial sums and the cluster launch; 1 us more for
// a split-K 64-row tile: its warpgroups' hand-over), or the DRAM floor at the bandwidth such
// kernels reach (3.6 TB/s), whichever is larger.
double estimate_seconds(const Shape& s, int m, int n, int k, int num_sms, int splits) {
  constexpr double kDramBytesPerSec = 3.6e12, kTileOverhead = 1.5e-6, kClusterSplitCost = 3.0e-6,
                   kSplitKCost = 1.0e-6;
  const long tiles = static_cast<long>((m + s.bm - 1) / s.bm) * ((n + s.bn - 1) / s.bn);
  const long slots = tile_slots(num_sms, splits);
  const long rounds = (tiles + slots - 1) / slots;
  const int kbs = (k / 128 + splits - 1) / splits;
  const bool split_k = detail::is_split_k(s.bm, s.w, false);
  const double t_sm = rounds * (kbs * kb_seconds(s, m) + kTileOverhead +
                                (splits > 1 ? kClusterSplitCost : 0.0) + (split_k ? kSplitKCost : 0.0));
  const double t_dram = (double(m) * k + double(n) * k + 2.0 * m * n) / kDramBytesPerSec;
  return std::max(t_sm, t_dram);
}

// bf16 output of such a tile goes through shared memory and TMA stores (room for the staging tile is
// left in the stage count); the cluster K split stores each block's column slice from registers.
bool tma_store_tile(int bn, int splits) {
  return bn % 64 == 0 && splits == 1;
}

// Blocks to launch: persistent, at most one per SM; or one cluster per tile with the cluster K split
// (`cap` does not apply: the tiles' clusters run in waves).
int launch_grid(long tiles, int splits, long cap) {
  return static_cast<int>(splits > 1 ? tiles * splits : std::min(tiles, cap));
}

// As many stages as fit in shared memory, up to `want` (at most 16).
int stages_fit(int bm, int bn, int w, bool mx, bool tma_store, bool ck, int want) {
  int st = std::min(want, 16);
  while (st > 2 && detail::smem_bytes(bm, bn, w, mx, st, tma_store, ck) > detail::kSmemLimit) --st;
  return st;
}

// Stages = as many as fit, up to 16; the split-K 64-row tiles (two warpgroups, with a cluster K split or
// without) up to 8 and MXFP8's 128x128 up to 4, which stream faster than more (H200: 64 x 4096 x 7168 on
// 64x64w2c2 14.1-14.2 us at 8 stages, 14.8-15.1 at 11; 64 x 7168 x 16384 on 64x64w2 35.8-35.9 at 8,
// 37.3-37.5 at 12; MXFP8 4096 x 2112 x 7168 410 at 4, 420 at the 5 that fit). MXFP8 with f32 output (the
// runtime's) keeps as many as fit: a 4096-token MXFP8 prompt step was 0.5% slower with the caps there
// (docs/CUDA.md, forty-second and forty-third sessions).
int stages_for(int bm, int bn, int w, bool mx, bool tma_store, bool ck = false) {
  const int cap = detail::is_split_k(bm, w, mx) ? 8 : mx ? 4 : 16;
  return stages_fit(bm, bn, w, mx, tma_store, ck, !mx || tma_store ? cap : 16);
}

// A product of at most 4 K blocks with more tiles than SMs takes at most 3 stages: its blocks then load
// less of their next tile ahead, which streamed faster (H200, 128 x 32768 x 512 on 128x128: 11.8-12.0 us at
// 3 stages, 12.2-12.3 at the 5 that fit; 64 x 32768 x 512 on 64x128: 10.8 against 11.0-11.1 at 8). With
// one round of tiles the whole K in flight is as fast or 1-2% faster (docs/CUDA.md, forty-third session).
int short_k_stages(int stages, int k, long tiles, int num_sms) {
  return k / kBlockK <= 4 && tiles > num_sms ? std::min(stages, 3) : stages;
}

// MX8_GEMM_NO_SPLITK=1 keeps the heuristic off the split-K tiles, within a block or over a cluster
// (A/B comparisons); read once.
bool no_split_k() {
  static const bool off = std::getenv("MX8_GEMM_NO_SPLITK") != nullptr;
  return off;
}

// MX8_GEMM_NO_PAIR=1 keeps 256x128 tiles out of block pairs (A/B comparisons); read once.
bool no_pair() {
  static const bool off = std::getenv("MX8_GEMM_NO_PAIR") != nullptr;
  return off;
}

// MX8_GEMM_DEBUG=1 skips the output stores (timing experiments: mainloop alone); read once.
int debug_flags() {
  static const int flags = [] {
    const char* e = std::getenv("MX8_GEMM_DEBUG");
    return e ? std::atoi(e) : 0;
  }();
  return flags;
}

void check_common(const char* what, const void* a, const void* b, const void* d, int m, int n, int k) {
  const std::string w = what;
  if (m < 1) throw mx8::Error(w + ": M must be >= 1, got " + std::to_string(m));
  if (n < 16 || n % 16 != 0)
    throw mx8::Error(w + ": N must be a positive multiple of 16, got " + std::to_string(n));
  if (k < 128 || k % 128 != 0)
    throw mx8::Error(w + ": K must be a positive multiple of 128, got " + std::to_string(k));
  for (const void* ptr : {a, b, d})
    if (ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 != 0)
      throw mx8::Error(w + ": operand pointers must be non-null and 16-byte aligned");
}

}  // namespace

std::string GemmConfig::str() const {
  return std::to_string(block_m) + "x" + std::to_string(block_n) +
         (splits > 1 ? "c" + std::to_string(splits) : "") + " st" + std::to_string(stages) + " wg" +
         std::to_string(math_warpgroups) + " grid" + std::to_string(grid);
}

// Whether shape s is compiled for clusters of `splits` blocks (1: no cluster split).
static bool compiled_for(const Shape& s, int splits) {
  return s.ck ? splits > 1 && (s.ck_splits == 0 || s.ck_splits == splits) : splits == 1;
}

// The math warpgroups of a compiled (block_m, block_n) shape for clusters of `splits` blocks (1: none):
// `wanted` where that variant is compiled (64 rows: 1, or 2 for split-K), else the shape's only
// variant; 0 if none is compiled.
static int compiled_warpgroups(int block_m, int block_n, int wanted, int splits) {
  int any = 0;
  for (const Shape& s : kShapes)
    if (s.bm == block_m && s.bn == block_n && compiled_for(s, splits)) {
      if (s.w == wanted) return s.w;
      if (any == 0) any = s.w;
    }
  return any;
}

static bool valid_splits(int splits) {
  return splits == 1 ||
         std::find(std::begin(kClusterSplits), std::end(kClusterSplits), splits) != std::end(kClusterSplits);
}

bool gemm_fp8_has_config(int block_m, int block_n, int splits) {
  return valid_splits(splits) && compiled_warpgroups(block_m, block_n, 0, splits) != 0;
}

GemmConfig gemm_fp8_pick_config(int m, int n, int k, int num_sms) {
  // Order among estimates within 2% of each other (they tie mostly at the DRAM floor, where the
  // model says nothing about how well a shape fills the GPU): no cluster split, then the least idle
  // SM time over the rounds of tiles (wave efficiency, to 0.01), then fewer rounds, then the larger
  // tile (fewer re-reads through L2). 64 x 24576 x 1536: 64x192's 128 tiles in one round (15.6 us)
  // beat 64x128's 192 in two (17.8); 64 x 32768 x 512: 64x128's 256 tiles fill two rounds, 64x192's
  // 171 do not (11.0 against 12.8 us).
  auto tie_key = [&](const Shape& s, int splits) {
    const long tiles = static_cast<long>((m + s.bm - 1) / s.bm) * ((n + s.bn - 1) / s.bn);
    const long slots = tile_slots(num_sms, splits);
    const long rounds = (tiles + slots - 1) / slots;
    const long efficiency = std::lround(100.0 * tiles / (rounds * slots));
    return std::make_tuple(splits, -efficiency, rounds, -s.bm * s.bn);
  };
  const Shape* best = nullptr;
  int best_splits = 1;
  double best_t = 0;
  for (const Shape& s : kShapes) {
    if (((s.bm == 64 && s.w == 2) || s.ck) && no_split_k()) continue;
    // A tile with a whole 64-row wave below M computes nothing there, which the per-block load
    // estimate does not see (M = 128: 192x128 would tie with 128x128 and win on area).
    if (s.bm - 64 >= m) continue;
    for (const int splits : kClusterSplits) {
      const int sp = s.ck ? splits : 1;
      if (sp == 1 && splits != kClusterSplits[0]) break;  // no cluster split: one estimate
      if (!compiled_for(s, sp)) continue;
      if (tile_slots(num_sms, sp) < 1) continue;  // (a partition with few SMs)
      const double t = estimate_seconds(s, m, n, k, num_sms, sp);
      const bool tie = best && t <= best_t * 1.02 && t >= best_t * 0.98;
      if (!best || t < best_t * 0.98 || (tie && tie_key(s, sp) < tie_key(*best, best_splits))) {
        best = &s;
        best_splits = sp;
        best_t = t;
      }
    }
  }
  GemmConfig c;
  c.block_m = best->bm;
  c.block_n = best->bn;
  c.math_warpgroups = best->w;
  c.splits = best_splits;
  c.stages = stages_for(best->bm, best->bn, best->w, false, tma_store_tile(best->bn, c.splits), best->ck);
  const long tiles = static_cast<long>((m + c.block_m - 1) / c.block_m) * ((n + c.block_n - 1) / c.block_n);
  c.stages = short_k_stages(c.stages, k, tiles, num_sms);
  c.grid = launch_grid(tiles, c.splits, num_sms);
  return c;
}

// Pairs of 256x128 tiles (m, 2 j), (m, 2 j + 1) on 2-block clusters, each block loading half of their
// A tile into both through TMA multicast: 1-4% faster on each 256x128 shape of the six at M = 4096
// (H200, docs/CUDA.md, thirty-seventh session), where a pair sharing B instead gained 0-1%. Whole pairs
// need an even number of N blocks in every product of a group (a pair never spans two products); the
// half-tile boxes need whole 256-row A tiles (M >= 256).
bool gemm_fp8_pairs_share_a(const GemmConfig& c, int m, const GemmFp8Target* targets, int count) {
  if (no_pair() || c.splits != 1 || c.block_m != 256 || c.block_n != 128 || c.math_warpgroups != 2 || m < 256)
    return false;
  for (int g = 0; g < count; ++g)
    if ((targets[g].n + 127) / 128 % 2 != 0) return false;
  return true;
}

void gemm_fp8_1x128(const GemmFp8Args& a, cudaStream_t stream, const GemmConfig* forced) {
  const GemmFp8Target t{a.b, a.scale_b, a.d, a.n};
  gemm_fp8_1x128_group(a, &t, 1, stream, forced);
}

void gemm_fp8_1x128_group(const GemmFp8Args& a, const GemmFp8Target* targets, int count, cudaStream_t stream,
                          const GemmConfig* forced) {
  if (count < 1 || count > kMaxGemmGroup)
    throw mx8::Error("gemm_fp8_1x128: a group of " + std::to_string(count) + " products (1 to " +
                     std::to_string(kMaxGemmGroup) + " run as one launch)");
  int n_sum = 0;
  for (int g = 0; g < count; ++g) {
    const GemmFp8Target& t = targets[g];
    check_common("gemm_fp8_1x128", a.a, t.b, t.d, a.m, t.n, a.k);
    if (!t.scale_b) throw mx8::Error("gemm_fp8_1x128: scale pointers must be non-null");
    n_sum += t.n;
  }
  if (a.accumulate && a.out_type != OutType::kF32)
    throw mx8::Error("gemm_fp8_1x128: accumulate needs f32 output");
  if (a.scale_a_ld < a.m || a.scale_a_ld % 16 != 0)
    throw mx8::Error("gemm_fp8_1x128: scale_a_ld must be >= M and a multiple of 16 (see sa_ld()), got " +
                     std::to_string(a.scale_a_ld));
  if (!a.scale_a || reinterpret_cast<uintptr_t>(a.scale_a) % 16 != 0)
    throw mx8::Error("gemm_fp8_1x128: scale pointers must be non-null, scale_a 16-byte aligned");
  const int sms = num_sms();
  GemmConfig c = gemm_fp8_pick_config(a.m, n_sum, a.k, sms);
  if (forced) {
    if (!gemm_fp8_has_config(forced->block_m, forced->block_n, forced->splits))
      throw mx8::Error("gemm_fp8_1x128: tile " + std::to_string(forced->block_m) + "x" +
                       std::to_string(forced->block_n) + " with " + std::to_string(forced->splits) +
                       " cluster K splits is not compiled");
    c.block_m = forced->block_m;
    c.block_n = forced->block_n;
    c.splits = forced->splits;
    c.math_warpgroups =
        compiled_warpgroups(c.block_m, c.block_n, std::max(1, forced->math_warpgroups), c.splits);
    const bool store = tma_store_tile(c.block_n, c.splits), fck = c.splits > 1;
    c.stages = forced->stages > 0
                   ? stages_fit(c.block_m, c.block_n, c.math_warpgroups, false, store, fck, forced->stages)
                   : stages_for(c.block_m, c.block_n, c.math_warpgroups, false, store, fck);
  }
  const bool ck = c.splits > 1;
  const bool ue8m0 = a.scale_type == ScaleType::kUE8M0;
  const int kbs = a.k / kBlockK;
  const int a_rows = detail::a_rows_for(a.m, c.block_m);
  const bool pair_a = gemm_fp8_pairs_share_a(c, a.m, targets, count);
  const CUtensorMap ta =
      make_tensor_map_2d(a.a, 1, a.m, a.k, a.k, pair_a ? a_rows / 2 : a_rows, kBlockK, true);
  const CUtensorMap tsa =
      make_tensor_map_2d(a.scale_a, ue8m0 ? 1 : 4, kbs, a.m, a.scale_a_ld, 1, a_rows, false);
  detail::GemmMapsB tb{};
  GemmParams p{};
  p.num_m_blocks = (a.m + c.block_m - 1) / c.block_m;
  p.targets = count;
  for (int g = 0; g < count; ++g) {
    const GemmFp8Target& t = targets[g];
    tb.m[g] = make_tensor_map_2d(t.b, 1, t.n, a.k, a.k, c.block_n, kBlockK, true);
    p.t[g] = {t.scale_b, t.d, t.n};
    p.first_tile[g + 1] = p.first_tile[g] + p.num_m_blocks * ((t.n + c.block_n - 1) / c.block_n);
  }
  const long tiles = p.first_tile[count];
  const int cap = forced && forced->grid > 0 ? forced->grid : sms;
  // Pairs: as many clusters of 2 as fit under the cap, each a pair of tiles at a time.
  c.grid = pair_a ? 2 * static_cast<int>(std::min<long>(tiles / 2, std::max(1, cap / 2)))
                  : launch_grid(tiles, c.splits, cap);
  // Pairs: the kernel's unit of work is a pair of tiles, numbered target by target like the tiles.
  if (pair_a)
    for (int g = 1; g <= count; ++g) p.first_tile[g] /= 2;
  p.a_rows = a_rows;
  p.m = a.m;
  p.k = a.k;
  p.scale_ue8m0 = ue8m0 ? 1 : 0;
  p.out_f32 = a.out_type == OutType::kF32 ? 1 : 0;
  p.accumulate = a.accumulate ? 1 : 0;
  // f32 output, and groups (one output tensor map), store directly from registers.
  p.tma_store = (!p.out_f32 && count == 1 && tma_store_tile(c.block_n, c.splits)) ? 1 : 0;
  p.debug = debug_flags();
  p.pre_b = a.pdl ? 1 : 0;
  // Without TMA stores the staging tile's room goes to more stages (unless forced).
  if (!p.tma_store && !(forced && forced->stages > 0))
    c.stages = short_k_stages(
        std::min(16,
                 std::max(c.stages, stages_for(c.block_m, c.block_n, c.math_warpgroups, false, false, ck))),
        a.k, tiles, sms);
  p.stages = c.stages;
  const CUtensorMap td = make_tensor_map_2d(
      targets[0].d, p.out_f32 ? 4 : 2, a.m, targets[0].n, targets[0].n,
      detail::is_split_k(c.block_m, c.math_warpgroups, false) ? 64 : c.block_m / c.math_warpgroups,
      p.tma_store ? 64 : 16, p.tma_store != 0);
#define MX8_GEMM_CASE(BM, BN, W)                                                           \
  if (!ck && c.block_m == BM && c.block_n == BN && c.math_warpgroups == W) {               \
    detail::launch_gemm<BM, BN, W, false>(ta, tb, tsa, tsa, td, p, c.grid, a.pdl, stream); \
    return;                                                                                \
  }
#define MX8_GEMM_CK_CASE(BM, BN, W, KC)                                                        \
  if (c.splits == KC && c.block_m == BM && c.block_n == BN && c.math_warpgroups == W) {        \
    detail::launch_gemm<BM, BN, W, false, KC>(ta, tb, tsa, tsa, td, p, c.grid, a.pdl, stream); \
    return;                                                                                    \
  }
  if (pair_a) {
    detail::launch_gemm<256, 128, 2, false, 1, true>(ta, tb, tsa, tsa, td, p, c.grid, a.pdl, stream);
    return;
  }
  MX8_GEMM_CASE(64, 16, 1)
  MX8_GEMM_CASE(64, 32, 1)
  MX8_GEMM_CASE(64, 64, 1)
  MX8_GEMM_CASE(64, 128, 1)
  MX8_GEMM_CASE(64, 192, 2)
  MX8_GEMM_CASE(64, 16, 2)
  MX8_GEMM_CASE(64, 32, 2)
  MX8_GEMM_CASE(64, 64, 2)
  MX8_GEMM_CASE(64, 128, 2)
  MX8_GEMM_CASE(128, 16, 2)
  MX8_GEMM_CASE(128, 32, 2)
  MX8_GEMM_CASE(128, 64, 2)
  MX8_GEMM_CASE(128, 128, 2)
  MX8_GEMM_CASE(128, 192, 2)
  MX8_GEMM_CASE(256, 128, 2)
  MX8_GEMM_CASE(192, 128, 3)
  MX8_GEMM_CK_CASE(64, 64, 2, 2)
  MX8_GEMM_CK_CASE(64, 64, 2, 4)
  MX8_GEMM_CK_CASE(128, 128, 2, 2)
  MX8_GEMM_CK_CASE(128, 128, 2, 4)
  MX8_GEMM_CK_CASE(64, 96, 2, 4)
#undef MX8_GEMM_CASE
#undef MX8_GEMM_CK_CASE
  throw mx8::Error("gemm_fp8_1x128: no kernel for tile " + c.str());
}

// Two compiled shapes: 64x64 with K split over two warpgroups, and 128x128. A 128x128 tile takes
// ~3.2x as long as a 64x64 one (H200, 7168 x 16384, one round of tiles each: 293 us at M = 128, 92 at
// M = 64), so 64x64 is taken for M <= 64 and wherever its rounds of tiles over the SMs stay below
// 2.9x (3.2 less a 10% margin) those of 128x128: M = 128, N = 2112 makes 17 tiles of 128x128 for 132
// SMs (docs/CUDA.md, MXFP8).
int gemm_mxfp8_pick_block_m(int m, int n, int num_sms) {
  auto rounds = [&](int bm, int bn) {
    const long tiles = static_cast<long>((m + bm - 1) / bm) * ((n + bn - 1) / bn);
    return (tiles + num_sms - 1) / num_sms;
  };
  return m <= 64 || rounds(64, 64) < 2.9 * rounds(128, 128) ? 64 : 128;
}

void gemm_mxfp8(const GemmMxfp8Args& a, cudaStream_t stream, const GemmConfig* forced) {
  check_common("gemm_mxfp8", a.a, a.b, a.d, a.m, a.n, a.k);
  if (a.accumulate && a.out_type != OutType::kF32)
    throw mx8::Error("gemm_mxfp8: accumulate needs f32 output");
  if (a.scale_a_ld < a.m || a.scale_a_ld % 16 != 0 || a.scale_b_ld < a.n || a.scale_b_ld % 16 != 0)
    throw mx8::Error("gemm_mxfp8: scale_a_ld/scale_b_ld must be >= M/N and multiples of 16");
  if (!a.scale_a || !a.scale_b || reinterpret_cast<uintptr_t>(a.scale_a) % 16 ||
      reinterpret_cast<uintptr_t>(a.scale_b) % 16)
    throw mx8::Error("gemm_mxfp8: scale pointers must be non-null and 16-byte aligned");
  const int sms = num_sms();
  Shape s = gemm_mxfp8_pick_block_m(a.m, a.n, sms) == 64 ? kMxShapes[0] : kMxShapes[1];
  if (forced && forced->block_m == 128) s = kMxShapes[1];
  if (forced && forced->block_m == 64) s = kMxShapes[0];
  GemmConfig c;
  c.block_m = s.bm;
  c.block_n = s.bn;
  c.math_warpgroups = s.w;
  const bool tma_store = a.out_type == OutType::kBF16 && s.bn % 64 == 0;
  c.stages = stages_for(s.bm, s.bn, s.w, true, tma_store);
  if (forced && forced->stages > 0)
    c.stages = stages_fit(s.bm, s.bn, s.w, true, tma_store, false, forced->stages);
  const long tiles = static_cast<long>((a.m + s.bm - 1) / s.bm) * ((a.n + s.bn - 1) / s.bn);
  c.grid = static_cast<int>(std::min<long>(tiles, sms));
  const int k32 = a.k / 32;
  const int a_rows = detail::a_rows_for(a.m, c.block_m);
  const CUtensorMap ta = make_tensor_map_2d(a.a, 1, a.m, a.k, a.k, a_rows, kBlockK, true);
  detail::GemmMapsB tb{};
  tb.m[0] = make_tensor_map_2d(a.b, 1, a.n, a.k, a.k, c.block_n, kBlockK, true);
  // The scales keep whole boxes: the slot holds them as [4][BM] bytes (4 x BM: a small fill).
  const CUtensorMap tsa = make_tensor_map_2d(a.scale_a, 1, k32, a.m, a.scale_a_ld, 4, c.block_m, false);
  const CUtensorMap tsb = make_tensor_map_2d(a.scale_b, 1, k32, a.n, a.scale_b_ld, 4, c.block_n, false);
  GemmParams p{};
  p.a_rows = a_rows;
  p.t[0] = {nullptr, a.d, a.n};
  p.targets = 1;
  p.m = a.m;
  p.k = a.k;
  p.num_m_blocks = (a.m + c.block_m - 1) / c.block_m;
  p.first_tile[1] = p.num_m_blocks * ((a.n + c.block_n - 1) / c.block_n);
  p.stages = c.stages;
  p.scale_ue8m0 = 1;
  p.out_f32 = a.out_type == OutType::kF32 ? 1 : 0;
  p.accumulate = a.accumulate ? 1 : 0;
  p.tma_store = tma_store ? 1 : 0;
  p.debug = debug_flags();
  p.pre_b = a.pdl ? 1 : 0;
  // A split-K tile's first warpgroup stores all of its 64 rows.
  const CUtensorMap td = make_tensor_map_2d(
      a.d, p.out_f32 ? 4 : 2, a.m, a.n, a.n,
      detail::is_split_k(c.block_m, c.math_warpgroups, true) ? 64 : c.block_m / c.math_warpgroups,
      tma_store ? 64 : 16, tma_store);
  if (s.bm == 64)
    detail::launch_gemm<64, 64, 2, true>(ta, tb, tsa, tsb, td, p, c.grid, a.pdl, stream);
  else
    detail::launch_gemm<128, 128, 2, true>(ta, tb, tsa, tsb, td, p, c.grid, a.pdl, stream);
}

}  // namespace mx8::cuda
