// The FP8 GEMMs vs a float64 CPU product of the dequantized operands.
//
// Tolerance: |gpu - ref| <= 2^-9 * sum_k |a_k b_k| + 2^-8 * sum over 32-wide K groups of
// max_k |a_k b_k| (+ one bf16 rounding, 2^-8 |ref|, for bf16 output). Why: the products of E4M3
// values are exact, but Hopper's FP8 tensor cores add them with a narrow internal accumulator
// (about 14 bits, aligned to the largest term: DeepSeek-V3 report 3.3.2), which is why the kernel
// promotes every 128 (or 32) of K into FP32. Each wgmma k32 step therefore loses up to about
// 2^-13..2^-14 of its largest product per term, i.e. below 2^-8 of that product in total (first
// bound, measured on the H200: an element whose chunk held a 300x outlier was off by 2^-8.6 of
// it), and the FP32 promotions add ~2^-24 per step (second bound, with a wide margin). Real
// defects are far larger: a wrong or swapped scale is a factor >= 2 on a 128-chunk, a dropped k32
// slice removes ~sqrt(32) typical products while the bound allows under one, and unwritten outputs
// are poisoned with NaN.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::cuda::test {
namespace {

namespace fmt = mx8::format;

struct Operand {
  std::vector<uint8_t> codes, scales;  // quantize_ref layout
  std::vector<float> deq;              // dequantize_ref
};

Operand quantize_operand(const std::vector<uint16_t>& x, int rows, int cols, const fmt::QuantSpec& spec) {
  Operand o;
  o.codes.resize(fmt::code_bytes(spec, rows, cols));
  o.scales.resize(fmt::scale_bytes(spec, rows, cols));
  o.deq.resize(static_cast<size_t>(rows) * cols);
  fmt::quantize_ref(fmt::SourceType::bf16, x.data(), rows, cols, spec, o.codes.data(), o.scales.data());
  fmt::dequantize_ref(o.codes.data(), o.scales.data(), rows, cols, spec, o.deq.data());
  return o;
}

// Row-major grid [rows][g] of `esz`-byte scales -> MN-major [g][ld].
std::vector<uint8_t> to_mn_major(const std::vector<uint8_t>& grid, int rows, int g, int ld, size_t esz) {
  std::vector<uint8_t> out(static_cast<size_t>(g) * ld * esz, 0);
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < g; ++j) std::memcpy(&out[(j * ld + r) * esz], &grid[(r * g + j) * esz], esz);
  return out;
}

float bf16_bits_to_f32(uint16_t h) {
  return fmt::bf16_to_f32(h);
}

// Compares d (f32 or bf16 bits) against the float64 product, plus `base` where the GEMM accumulated
// into it (f32 output: its one rounded add is 2^-24 of the sum's magnitude, bounded here by 2^-23);
// returns the number of failures.
size_t check_product(const std::vector<float>& a, const std::vector<float>& b, int m, int n, int k,
                     const std::vector<uint8_t>& d_bytes, bool out_f32,
                     const std::vector<float>* base = nullptr) {
  size_t bad = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double ref = 0, mag = 0, group_max = 0, max_sum = 0;
      for (int kk = 0; kk < k; ++kk) {
        const double p = double(a[size_t(i) * k + kk]) * b[size_t(j) * k + kk];
        ref += p;
        mag += std::fabs(p);
        group_max = std::max(group_max, std::fabs(p));
        if (kk % 32 == 31) {
          max_sum += group_max;
          group_max = 0;
        }
      }
      const double b0 = base ? double((*base)[size_t(i) * n + j]) : 0.0;
      ref += b0;
      float got;
      if (out_f32) {
        std::memcpy(&got, &d_bytes[(size_t(i) * n + j) * 4], 4);
      } else {
        uint16_t h;
        std::memcpy(&h, &d_bytes[(size_t(i) * n + j) * 2], 2);
        got = bf16_bits_to_f32(h);
      }
      const double tol = std::ldexp(mag, -9) + std::ldexp(max_sum, -8) +
                         (out_f32 ? 0.0 : std::ldexp(std::fabs(ref), -8)) +
                         (base ? std::ldexp(std::fabs(b0) + std::fabs(ref), -23) : 0.0) + 1e-30;
      if (!(std::fabs(got - ref) <= tol)) {
        if (bad < 5)
          ADD_FAILURE() << "D[" << i << "][" << j << "] = " << got << ", expected " << ref << " (tol " << tol
                        << ")";
        ++bad;
      }
    }
  return bad;
}

struct GemmCase {
  int m, n, k;
  int block_m = 0, block_n = 0;  // 0: the heuristic's choice
  bool ue8m0 = true;
  bool out_f32 = false;
  bool split_k = false;     // 64-row tiles: the two-warpgroup split-K variant
  bool accumulate = false;  // f32 output: d += the product (d starts at a known pattern, not NaN)
  int splits = 1;           // > 1: a cluster of that many blocks splits each tile's K range
};

void run_gemm_case(const GemmCase& c, uint32_t seed) {
  SCOPED_TRACE("M " + std::to_string(c.m) + " N " + std::to_string(c.n) + " K " + std::to_string(c.k) +
               " tile " + std::to_string(c.block_m) + "x" + std::to_string(c.block_n) +
               (c.split_k ? " split-K" : "") + " cluster splits " + std::to_string(c.splits) + " ue8m0 " +
               std::to_string(c.ue8m0) + " f32out " + std::to_string(c.out_f32) + " seed " +
               std::to_string(seed));
  std::mt19937 rng(seed);
  const auto xa = random_bf16(size_t(c.m) * c.k, rng), xb = random_bf16(size_t(c.n) * c.k, rng, 0.05f);
  fmt::QuantSpec sa_spec, sb_spec;
  sa_spec.blocking = fmt::Blocking::tile(128);
  sb_spec.blocking = fmt::Blocking::block(128);
  sa_spec.storage = sb_spec.storage = c.ue8m0 ? fmt::ScaleStorage::ue8m0 : fmt::ScaleStorage::f32;
  sa_spec.rule = sb_spec.rule = c.ue8m0 ? fmt::ScaleRule::ceil : fmt::ScaleRule::fp32;
  const Operand A = quantize_operand(xa, c.m, c.k, sa_spec), B = quantize_operand(xb, c.n, c.k, sb_spec);
  const size_t esz = c.ue8m0 ? 1 : 4;
  const int ld = sa_ld(c.m);
  const auto sa_mn = to_mn_major(A.scales, c.m, c.k / 128, ld, esz);

  DeviceBuffer<uint8_t> da(A.codes.size()), db(B.codes.size()), dsa(sa_mn.size()), dsb(B.scales.size());
  da.upload(A.codes);
  db.upload(B.codes);
  dsa.upload(sa_mn);
  dsb.upload(B.scales);
  const size_t out_bytes = size_t(c.m) * c.n * (c.out_f32 ? 4 : 2);
  DeviceBuffer<uint8_t> dd(out_bytes);
  dd.poison(0xFF);  // NaN in both bf16 and f32
  std::vector<float> base;
  if (c.accumulate) {
    base.resize(size_t(c.m) * c.n);
    for (size_t i = 0; i < base.size(); ++i) base[i] = float(int(i % 13) - 6) * 0.25f;
    MX8_CUDA_CHECK(cudaMemcpy(dd.get(), base.data(), out_bytes, cudaMemcpyHostToDevice));
  }

  GemmFp8Args args;
  args.a = da.get();
  args.scale_a = dsa.get();
  args.scale_a_ld = ld;
  args.b = db.get();
  args.scale_b = dsb.get();
  args.scale_type = c.ue8m0 ? ScaleType::kUE8M0 : ScaleType::kF32;
  args.d = dd.get();
  args.out_type = c.out_f32 ? OutType::kF32 : OutType::kBF16;
  args.accumulate = c.accumulate;
  args.m = c.m;
  args.n = c.n;
  args.k = c.k;
  GemmConfig forced;
  forced.block_m = c.block_m;
  forced.block_n = c.block_n;
  forced.math_warpgroups = c.split_k ? 2 : 0;
  forced.splits = c.splits;
  gemm_fp8_1x128(args, nullptr, c.block_m ? &forced : nullptr);
  MX8_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(
      check_product(A.deq, B.deq, c.m, c.n, c.k, dd.download(), c.out_f32, c.accumulate ? &base : nullptr),
      0u);
}

// f32 output accumulated into (the backend's residual adds): the tiles of a 64-row split-K, a
// 128-row and a 256-row instantiation, on ragged M; d starts at a pattern that a plain store would
// overwrite (and the poison is not used, so an unwritten element fails as a wrong value).
TEST(CudaGemmFp8, AccumulatesIntoF32Output) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  GemmCase c1{17, 64, 2560};
  GemmCase c2{129, 272, 640, 128, 128};
  GemmCase c3{300, 512, 1024, 256, 128};
  GemmCase c4{401, 272, 640, 192, 128};  // three math warpgroups, ragged in M and N
  for (GemmCase c : {c1, c2, c3, c4}) {
    c.out_f32 = true;
    c.accumulate = true;
    run_gemm_case(c, seed);
  }
}

// 70 x 32784 x 512 has more tiles than SMs and 4 K blocks: the short-K stage cap's 3-slot ring wraps
// inside each tile and between a block's tiles.
TEST(CudaGemmFp8, HeuristicTilesOnRaggedShapes) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  for (const GemmCase& c :
       {GemmCase{1, 2112, 512}, GemmCase{7, 256, 384}, GemmCase{17, 64, 2560}, GemmCase{17, 144, 384},
        GemmCase{64, 2112, 256}, GemmCase{129, 272, 640}, GemmCase{300, 400, 256, 0, 0, false},
        GemmCase{513, 1040, 256, 0, 0, true, true}, GemmCase{70, 32784, 512}})
    run_gemm_case(c, seed);
}

// Every compiled tile shape, on a shape that is ragged for it in both M and N and spans several
// K blocks and (for the persistent loop) more tiles than one CTA's first tile.
TEST(CudaGemmFp8, EveryCompiledTileShape) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  const int shapes[][3] = {{64, 16, 0},   {64, 32, 0},   {64, 64, 0},   {64, 128, 0},
                           {64, 16, 1},   {64, 32, 1},   {64, 64, 1},   {64, 128, 1},
                           {64, 192, 1},  {128, 16, 0},  {128, 32, 0},  {128, 64, 0},
                           {128, 128, 0}, {128, 192, 0}, {256, 128, 0}, {192, 128, 0}};
  for (const auto& s : shapes) {
    ASSERT_TRUE(gemm_fp8_has_config(s[0], s[1]));
    GemmCase c{s[0] * 2 + 17, s[1] * 3 + 48, 384, s[0], s[1], (s[1] / 16) % 2 == 0, s[0] == 128};
    c.split_k = s[2] != 0;
    run_gemm_case(c, seed);
    if (c.split_k) {
      // Split-K alternates K blocks between the warpgroups: 3 blocks above, 5 here (odd counts
      // give one warpgroup an extra block), and the other output type.
      c.k = 640;
      c.out_f32 = !c.out_f32;
      run_gemm_case(c, seed + 1);
    }
  }
}

// The cluster K split (clusters of 2 or 4 blocks, each a K range of the tile, partial sums added
// through distributed shared memory), on every compiled shape: ragged M and N; K blocks that do not
// divide evenly over the blocks (5 over 4: ranges of 1, 1, 1 and 2), a rank with an empty range (3
// K blocks over 4), more clusters than the GPU runs at once (one cluster per tile: 45 tiles x 4
// blocks), bf16 and f32 output, f32 accumulation.
TEST(CudaGemmFp8, ClusterKSplit) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  // BM, BN, and the one cluster size compiled (0: 2 and 4).
  const int shapes[][3] = {{64, 64, 0}, {128, 128, 0}, {64, 96, 4}};
  int n = 0;
  for (const auto& s : shapes)
    for (int splits : {2, 4}) {
      if (s[2] != 0 && splits != s[2]) {
        EXPECT_FALSE(gemm_fp8_has_config(s[0], s[1], splits));
        continue;
      }
      ASSERT_TRUE(gemm_fp8_has_config(s[0], s[1], splits));
      GemmCase c{s[0] + 17, s[1] * 3 + 48, 5 * 128, s[0], s[1], n % 2 == 0, n % 3 == 0};
      c.split_k = s[0] == 64;
      c.splits = splits;
      run_gemm_case(c, seed + n++);
      c.k = 3 * 128;
      c.m = 2 * s[0] + 5;
      run_gemm_case(c, seed + n++);
    }
  GemmCase waves{600, 1040, 512, 128, 128};
  waves.splits = 4;
  run_gemm_case(waves, seed + n++);
  GemmCase acc{129, 272, 20 * 128, 128, 128};
  acc.splits = 4;
  acc.out_f32 = acc.accumulate = true;
  run_gemm_case(acc, seed + n++);
  EXPECT_FALSE(gemm_fp8_has_config(64, 64, 3));
  EXPECT_FALSE(gemm_fp8_has_config(256, 128, 2));
  EXPECT_FALSE(gemm_fp8_has_config(128, 64, 2));
}

// K > 128 x 256: the kernel stages the B scales 256 K blocks at a time (sm90_gemm_fp8_params.h,
// kSbCap), so the second stage, on 44 K blocks here, is exercised; with split-K too, float scales;
// and on the pipelined K loops of one-wave tiles (64 rows on one warpgroup, 128 on two, and
// 128x192's half-width groups), whose restaging runs with the previous K block's group still in
// flight, on even and odd counts; and on 192x128 (plain loop, odd count).
TEST(CudaGemmFp8, LongKRestagesBScales) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  run_gemm_case(GemmCase{65, 144, 300 * 128}, seed);
  GemmCase split{70, 272, 300 * 128, 64, 64, false};
  split.split_k = true;
  run_gemm_case(split, seed + 1);
  run_gemm_case(GemmCase{130, 272, 300 * 128, 128, 128, false}, seed + 2);
  run_gemm_case(GemmCase{70, 144, 301 * 128, 64, 64}, seed + 3);
  run_gemm_case(GemmCase{130, 464, 300 * 128, 128, 192}, seed + 4);
  run_gemm_case(GemmCase{200, 272, 301 * 128, 192, 128, false}, seed + 5);
}

TEST(CudaGemmFp8, ManyTilesPerCta) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  run_gemm_case(GemmCase{1000, 2112, 256, 64, 16}, seed);
  GemmCase split{700, 1040, 512, 64, 16};
  split.split_k = true;
  run_gemm_case(split, seed);
  // One K block per split-K tile: the second warpgroup only moves the ring on, tile after tile.
  GemmCase one{700, 1040, 128, 64, 64};
  one.split_k = true;
  run_gemm_case(one, seed + 1);
  // One K block, tile after tile (198 tiles over at most 132 blocks): 128x192's half-width loop
  // runs its last step only; 192x128 as the control.
  run_gemm_case(GemmCase{1100, 4112, 128, 128, 192}, seed + 2);
  run_gemm_case(GemmCase{1100, 4112, 128, 192, 128, false}, seed + 3);
}

// 256x128 tiles issue the next tile's first wave before the epilogue of the tile before: several
// tiles per block (363 and 297 tiles over at most 132 blocks; 128x128 as the control), one K block
// (the early wave is then in the next tile's only K block) and two, both scale types, bf16 output
// through TMA and f32 output accumulated from registers.
TEST(CudaGemmFp8, TileBoundariesOfPersistentBlocks) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  int n = 0;
  for (const int bm : {256, 128})
    for (const int k : {128, 256}) {
      GemmCase c{bm == 256 ? 2577 : 1100, 4112, k, bm, 128, k == 128};
      run_gemm_case(c, seed + n++);
      c.ue8m0 = !c.ue8m0;
      c.out_f32 = c.accumulate = true;
      run_gemm_case(c, seed + n++);
    }
}

// 256x128 tiles in block pairs that share A (each block of a 2-block cluster loads half of the A tile
// into both through TMA multicast): several pairs per cluster (11 x 16 pairs over at most 66
// clusters), one and two K blocks, both scale types, bf16 output through TMA and f32 accumulated from
// registers, and a ragged last pair (N = 464: the second tile of the last pair is 80 columns wide).
TEST(CudaGemmFp8, BlockPairsShareA) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  int n = 0;
  for (const int k : {128, 256}) {
    GemmCase c{2577, 4096, k, 256, 128, k == 128};
    for (const GemmCase& e : {c, GemmCase{300, 464, 3 * k, 256, 128, k != 128}}) {
      GemmConfig t;
      t.block_m = 256;
      t.block_n = 128;
      t.math_warpgroups = 2;
      const GemmFp8Target target{nullptr, nullptr, nullptr, e.n};
      ASSERT_TRUE(gemm_fp8_pairs_share_a(t, e.m, &target, 1)) << e.m << " x " << e.n;
      run_gemm_case(e, seed + n++);
      GemmCase acc = e;
      acc.out_f32 = acc.accumulate = true;
      run_gemm_case(acc, seed + n++);
    }
  }
}

// When the pairs apply: whole pairs of 256x128 tiles in every product, M >= 256 (host only).
TEST(CudaGemmFp8, PairsShareAOnlyWhereWholePairsExist) {
  GemmConfig t;
  t.block_m = 256;
  t.block_n = 128;
  t.math_warpgroups = 2;
  auto pairs = [&](int m, std::initializer_list<int> ns) {
    std::vector<GemmFp8Target> targets;
    for (const int n : ns) targets.push_back(GemmFp8Target{nullptr, nullptr, nullptr, n});
    return gemm_fp8_pairs_share_a(t, m, targets.data(), int(targets.size()));
  };
  EXPECT_TRUE(pairs(4096, {7168}));
  EXPECT_TRUE(pairs(256, {4000}));               // 32 blocks, the last ragged
  EXPECT_TRUE(pairs(4096, {4096, 1024, 1024}));  // a group of whole pairs (q/k/v)
  EXPECT_FALSE(pairs(4096, {2112}));             // 17 blocks
  EXPECT_FALSE(pairs(4096, {4112}));             // 33 blocks
  EXPECT_FALSE(pairs(4096, {3968, 128}));        // 31 + 1 blocks: 32 in all, but pairs would span products
  EXPECT_FALSE(pairs(255, {7168}));              // A tiles below 256 rows
  t.block_m = 128;
  EXPECT_FALSE(pairs(4096, {7168}));
}

// M below one block of rows: the TMA loads bring only M rounded up to 16 rows of A and its scales
// (a_rows_for), and the rest of the tile computes on stale shared memory into rows that are never
// stored. Every row count, M = 1, a multiple of 16 and ragged ones, both scale types, bf16 and
// accumulated f32 output.
TEST(CudaGemmFp8, RowsBelowOneTile) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  const int shapes[][3] = {{64, 64, 1},   {64, 128, 0},  {128, 128, 0},
                           {128, 192, 0}, {192, 128, 0}, {256, 128, 0}};
  int n = 0;
  for (const auto& s : shapes)
    for (const int m : {1, 16, 37, s[0] - 20}) {
      GemmCase c{m, 272, 384, s[0], s[1], n % 2 == 0, n % 3 == 0};
      c.split_k = s[2] != 0;
      c.accumulate = c.out_f32;
      run_gemm_case(c, seed + n++);
    }
}

// MXFP8 on both compiled tiles: 64 rows split K over two warpgroups (one K block at K = 128: the
// second warpgroup has none; three at K = 384), 128x128 does not; ragged M and N.
// MXFP8 operands on the device (1x32 UE8M0 scales, MN-major) and the GEMM's arguments for them, with
// an output of out_bytes per element.
struct Mxfp8Device {
  DeviceBuffer<uint8_t> a, b, sa, sb, d;
  GemmMxfp8Args args;
  Mxfp8Device(const Operand& A, const Operand& B, int m, int n, int k, size_t out_bytes)
      : a(A.codes.size()),
        b(B.codes.size()),
        sa(size_t(k / 32) * sa_ld(m)),
        sb(size_t(k / 32) * sa_ld(n)),
        d(size_t(m) * n * out_bytes) {
    a.upload(A.codes);
    b.upload(B.codes);
    sa.upload(to_mn_major(A.scales, m, k / 32, sa_ld(m), 1));
    sb.upload(to_mn_major(B.scales, n, k / 32, sa_ld(n), 1));
    args.a = a.get();
    args.scale_a = sa.get();
    args.scale_a_ld = sa_ld(m);
    args.b = b.get();
    args.scale_b = sb.get();
    args.scale_b_ld = sa_ld(n);
    args.d = d.get();
    args.out_type = out_bytes == 4 ? OutType::kF32 : OutType::kBF16;
    args.m = m;
    args.n = n;
    args.k = k;
  }
  // The product with tile height bm into a poisoned output, downloaded.
  std::vector<uint8_t> run(int bm) {
    GemmConfig forced;
    forced.block_m = bm;
    d.poison(0xFF);
    gemm_mxfp8(args, nullptr, &forced);
    MX8_CUDA_CHECK(cudaDeviceSynchronize());
    return d.download();
  }
};

TEST(CudaGemmMxfp8, MatchesReference) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  // 1100 x 2112: more tiles than SMs (153 at 128 rows), so blocks convert the scales of several
  // tiles' K blocks into their alternating buffers.
  for (const auto& [m, n, k] : {std::tuple{5, 128, 256}, std::tuple{9, 64, 128}, std::tuple{64, 2112, 256},
                                std::tuple{200, 272, 384}, std::tuple{1100, 2112, 256}}) {
    SCOPED_TRACE("MXFP8 M " + std::to_string(m) + " N " + std::to_string(n) + " K " + std::to_string(k) +
                 " seed " + std::to_string(seed));
    std::mt19937 rng(seed + m);
    const auto xa = random_bf16(size_t(m) * k, rng), xb = random_bf16(size_t(n) * k, rng, 0.05f);
    fmt::QuantSpec spec;
    spec.blocking = fmt::Blocking::tile(32);
    spec.rule = fmt::ScaleRule::floor;
    spec.storage = fmt::ScaleStorage::ue8m0;
    const Operand A = quantize_operand(xa, m, k, spec), B = quantize_operand(xb, n, k, spec);
    Mxfp8Device dev(A, B, m, n, k, 2);
    for (const int bm : {64, 128}) {
      EXPECT_EQ(check_product(A.deq, B.deq, m, n, k, dev.run(bm), false), 0u) << "block_m " << bm;
      // f32 output accumulated into a known pattern (the backend's residual adds).
      std::vector<float> base(size_t(m) * n);
      for (size_t i = 0; i < base.size(); ++i) base[i] = float(int(i % 13) - 6) * 0.25f;
      DeviceBuffer<float> df(base.size());
      df.upload(base);
      GemmMxfp8Args acc = dev.args;
      acc.d = df.get();
      acc.out_type = OutType::kF32;
      acc.accumulate = true;
      GemmConfig forced;
      forced.block_m = bm;
      gemm_mxfp8(acc, nullptr, &forced);
      MX8_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> got = df.download();
      std::vector<uint8_t> bytes(got.size() * 4);
      std::memcpy(bytes.data(), got.data(), bytes.size());
      EXPECT_EQ(check_product(A.deq, B.deq, m, n, k, bytes, true, &base), 0u)
          << "block_m " << bm << " accumulate";
    }
  }
}

// The heuristic runs on the host: every pick is a compiled shape and fills the GPU sensibly.
// Prints the picks for the benchmark shapes (docs/CUDA.md quotes them). No GPU needed.
TEST(CudaGemmFp8, HeuristicPicksCompiledShapes) {
  const int ms[] = {1, 16, 64, 128, 4096};
  const int nk[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512}, {7168, 16384}, {4096, 7168}, {7168, 2048}};
  for (int m : ms)
    for (const auto& s : nk) {
      const GemmConfig c = gemm_fp8_pick_config(m, s[0], s[1], 132);
      EXPECT_TRUE(gemm_fp8_has_config(c.block_m, c.block_n, c.splits)) << c.str();
      EXPECT_GE(c.stages, 2);
      EXPECT_LE(c.grid, 132);
      std::printf("  pick M=%d N=%d K=%d -> %s\n", m, s[0], s[1], c.str().c_str());
    }
}

// The stage caps that H200 measurements set (sm90_gemm_fp8.cu, docs/CUDA.md forty-second and forty-third
// sessions): 1x128 split-K 64-row tiles at most 8; products of at most 4 K blocks with more tiles than SMs
// at most 3, with one round of tiles as many as fit. Host code only: runs without a GPU.
TEST(CudaGemmFp8, HeuristicStageCaps) {
  const GemmConfig split_k = gemm_fp8_pick_config(64, 7168, 16384, 132);
  ASSERT_EQ(split_k.block_m, 64) << split_k.str();
  ASSERT_EQ(split_k.math_warpgroups, 2) << split_k.str();
  EXPECT_EQ(split_k.stages, 8) << split_k.str();
  const GemmConfig short_k_rounds = gemm_fp8_pick_config(128, 32768, 512, 132);  // 256 tiles of 128x128
  EXPECT_EQ(short_k_rounds.stages, 3) << short_k_rounds.str();
  const GemmConfig ragged = gemm_fp8_pick_config(70, 32784, 512, 132);  // HeuristicTilesOnRaggedShapes's
  EXPECT_EQ(ragged.stages, 3) << ragged.str();
  const GemmConfig short_k_one_round = gemm_fp8_pick_config(128, 4096, 512, 132);
  EXPECT_GT(short_k_one_round.stages, 4) << short_k_one_round.str();
}

// MXFP8's tile height against the H200 measurements of both tiles (docs/CUDA.md, fifteenth
// session, j12.sh: the MXFP8 column in microseconds, 64x64 with K split against 128x128, two rounds
// each agreeing within 2%): the pick must be the faster one wherever the two differ by more than
// that spread. Where they were not both measured, M <= 64 takes 64 and M = 4096 takes 128 (the
// tables in PERF.md). Host code only: runs without a GPU.
// UE8M0 scale bytes 255 (NaN) and 0 (2^-127, not zero): a NaN A scale makes its row NaN and leaves
// the others alone; a B column whose scales are all 0 gives products near 2^-128, which an f32
// output holds (as subnormals at worst), not zeros.
TEST(CudaGemmMxfp8, NaNAndZeroScaleBytes) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  const int m = 70, n = 192, k = 256, kb = k / 32, nan_row = 2, tiny_col = 5;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto xa = random_bf16(size_t(m) * k, rng), xb = random_bf16(size_t(n) * k, rng, 0.05f);
  fmt::QuantSpec spec;
  spec.blocking = fmt::Blocking::tile(32);
  spec.rule = fmt::ScaleRule::floor;
  spec.storage = fmt::ScaleStorage::ue8m0;
  Operand A = quantize_operand(xa, m, k, spec), B = quantize_operand(xb, n, k, spec);
  A.scales[nan_row * kb + 1] = 0xFF;
  for (int j = 0; j < kb; ++j) B.scales[tiny_col * kb + j] = 0x00;
  fmt::dequantize_ref(B.codes.data(), B.scales.data(), n, k, spec, B.deq.data());
  Mxfp8Device dev(A, B, m, n, k, 4);
  // The rows after the NaN row, checked against the reference on their own.
  const std::vector<float> a_rest(A.deq.begin() + size_t(nan_row + 1) * k, A.deq.end());
  for (const int bm : {64, 128}) {
    const std::vector<uint8_t> bytes = dev.run(bm);
    std::vector<float> d(size_t(m) * n);
    std::memcpy(d.data(), bytes.data(), bytes.size());
    int nan_in_row = 0;
    for (int j = 0; j < n; ++j) nan_in_row += std::isnan(d[size_t(nan_row) * n + j]);
    EXPECT_EQ(nan_in_row, n) << "block_m " << bm;
    const std::vector<uint8_t> d_rest(bytes.begin() + size_t(nan_row + 1) * n * 4, bytes.end());
    EXPECT_EQ(check_product(a_rest, B.deq, m - nan_row - 1, n, k, d_rest, true), 0u) << "block_m " << bm;
    // check_product's absolute floor (1e-30) would pass zeros in the tiny column, so it gets its own
    // check: relative to the sum of |products|, 2^-8 covers the tensor cores' 32-wide partial sums
    // (as check_product's max_sum term) and the subnormal rounding of terms near 2^-135 (2^-14 of them).
    for (int i = nan_row + 1; i < m; ++i) {
      double ref = 0, mag = 0;
      for (int c = 0; c < k; ++c) {
        const double p = double(A.deq[size_t(i) * k + c]) * B.deq[size_t(tiny_col) * k + c];
        ref += p;
        mag += std::fabs(p);
      }
      const float got = d[size_t(i) * n + tiny_col];
      EXPECT_TRUE(got != 0.f && std::fabs(got - ref) <= std::ldexp(mag, -8))
          << "row " << i << ": " << got << ", expected " << ref << " (block_m " << bm << ")";
    }
  }
}

// Scale bytes far from 127 in one K block (of four): A's rows at 230 there, B's column 5 at 9 in the
// block's second half and column 133 at 9 in its first, so that products of 2^103 and 2^-118 meet in
// the promotion (their scale product 2^-15 is a normal float; the block's wgmma partial sums are not
// scaled until then). The two columns' products in that block are 2^-15 x codes, larger than the rest
// of their sums (2^-15 x ~100 x ~100 against ~0.05), so a block dropped or counted twice, or scaled
// wrongly, fails check_product; the rows' other columns reach ~2^117 there, still finite in f32.
TEST(CudaGemmMxfp8, ScalesFarFromOneInOneKBlock) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  const int m = 150, n = 160, k = 512, kb = k / 32;
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto xa = random_bf16(size_t(m) * k, rng), xb = random_bf16(size_t(n) * k, rng, 0.05f);
  fmt::QuantSpec spec;
  spec.blocking = fmt::Blocking::tile(32);
  spec.rule = fmt::ScaleRule::floor;
  spec.storage = fmt::ScaleStorage::ue8m0;
  Operand A = quantize_operand(xa, m, k, spec), B = quantize_operand(xb, n, k, spec);
  for (int g = 4; g < 8; ++g)
    for (int r = 0; r < m; ++r) A.scales[r * kb + g] = 230;
  for (const int g : {6, 7}) B.scales[5 * kb + g] = 9;
  for (const int g : {4, 5}) B.scales[133 * kb + g] = 9;
  fmt::dequantize_ref(A.codes.data(), A.scales.data(), m, k, spec, A.deq.data());
  fmt::dequantize_ref(B.codes.data(), B.scales.data(), n, k, spec, B.deq.data());
  Mxfp8Device dev(A, B, m, n, k, 4);
  for (const int bm : {64, 128})
    EXPECT_EQ(check_product(A.deq, B.deq, m, n, k, dev.run(bm), true), 0u) << "block_m " << bm;
}

// Every E4M3 code (subnormals, both zeros; not the NaN codes) under scale bytes from 0 to 246, multiplied
// by a one-hot operand (1.0 at one K position per output): each output is then one product, exact in
// FP32 whatever the kernel's order of sums, so it must equal the dequantized code exactly, on either
// operand: the promotion's scale products, down to f32 subnormals (2^-127 x 2^-9), lose nothing.
TEST(CudaGemmMxfp8, EveryCodeUnderEveryScaleIsExact) {
  MX8_REQUIRE_GPU();
  const int k = 256, kb = k / 32, others = 64;
  const uint8_t scales[] = {0, 1, 5, 9, 10, 11, 60, 120, 127, 142, 143, 200, 246};
  fmt::QuantSpec spec;
  spec.blocking = fmt::Blocking::tile(32);
  spec.rule = fmt::ScaleRule::floor;
  spec.storage = fmt::ScaleStorage::ue8m0;
  // `rows` x k operands: the codes under test, or one-hot rows (row j has 1.0 at K position j % k).
  auto make = [&](int rows, bool one_hot) {
    Operand o;
    o.codes.resize(size_t(rows) * k);
    o.scales.resize(size_t(rows) * kb);
    o.deq.resize(o.codes.size());
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < k; ++c) {
        const uint8_t code = uint8_t(c + 37 * r);
        o.codes[size_t(r) * k + c] = one_hot ? (c == r % k ? 0x38 : 0) : ((code & 0x7F) == 0x7F ? 0 : code);
      }
      for (int g = 0; g < kb; ++g)
        o.scales[size_t(r) * kb + g] = one_hot ? 127 : scales[(r + 3 * g) % std::size(scales)];
    }
    fmt::dequantize_ref(o.codes.data(), o.scales.data(), rows, k, spec, o.deq.data());
    return o;
  };
  const Operand codes = make(others, false), one_hot = make(k, true);
  for (const bool codes_in_a : {true, false}) {
    const Operand& A = codes_in_a ? codes : one_hot;
    const Operand& B = codes_in_a ? one_hot : codes;
    const int m = codes_in_a ? others : k, n = codes_in_a ? k : others;
    Mxfp8Device dev(A, B, m, n, k, 4);
    for (const int bm : {64, 128}) {
      const std::vector<uint8_t> bytes = dev.run(bm);
      std::vector<float> d(size_t(m) * n);
      std::memcpy(d.data(), bytes.data(), bytes.size());
      int bad = 0;
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          const float want = codes_in_a ? codes.deq[size_t(i) * k + j] : codes.deq[size_t(j) * k + i];
          const float got = d[size_t(i) * n + j];
          if (!(got == want) && bad++ < 5)  // == : a -0 code sums to +0 with the other terms' zeros
            ADD_FAILURE() << "block_m " << bm << (codes_in_a ? ", codes in A" : ", codes in B") << ": D[" << i
                          << "][" << j << "] = " << got << ", expected " << want;
        }
      EXPECT_EQ(bad, 0) << "block_m " << bm << (codes_in_a ? ", codes in A" : ", codes in B");
    }
  }
}

TEST(CudaGemmMxfp8, PickIsTheFasterMeasuredTile) {
  struct Measured {
    int m, n, k;  // k: which benchmark shape (the pick does not depend on it)
    double us64, us128;
  };
  const Measured cases[] = {{128, 2112, 7168, 32.5, 87.7}, {128, 7168, 16384, 126.8, 192.6},
                            {128, 4096, 7168, 33.1, 87.4}, {128, 7168, 2048, 21.1, 29.5},
                            {256, 2112, 7168, 33.2, 88.4}, {256, 7168, 16384, 242.0, 194.8},
                            {256, 4096, 7168, 57.8, 88.1}, {256, 7168, 2048, 35.6, 30.0}};
  for (const Measured& c : cases)
    EXPECT_EQ(gemm_mxfp8_pick_block_m(c.m, c.n, 132), c.us64 < c.us128 ? 64 : 128)
        << c.m << " x " << c.n << " x " << c.k;
  for (const int n : {2112, 4096, 7168, 24576, 32768}) {
    EXPECT_EQ(gemm_mxfp8_pick_block_m(1, n, 132), 64) << n;
    EXPECT_EQ(gemm_mxfp8_pick_block_m(64, n, 132), 64) << n;
    EXPECT_EQ(gemm_mxfp8_pick_block_m(4096, n, 132), 128) << n;
  }
}

// Fewer SMs than a cluster has blocks (a small partition of the GPU): no cluster split, no division
// by zero in the estimate, and every pick still a compiled shape. No GPU needed.
TEST(CudaGemmFp8, HeuristicOnFewSms) {
  for (int sms : {1, 3, 4, 16})
    for (int m : {1, 64, 4096}) {
      const GemmConfig c = gemm_fp8_pick_config(m, 2112, 7168, sms);
      EXPECT_TRUE(gemm_fp8_has_config(c.block_m, c.block_n, c.splits)) << c.str();
      EXPECT_LE(c.splits, sms) << c.str();
      EXPECT_GE(c.grid, 1) << c.str();
    }
}

// The heuristic against a forced-tile sweep measured on the H200 (tests/cuda/data, whose header
// says how it was made; its constants were fitted to it): on every swept shape the picked tile must
// have been measured and be within 5% of the fastest one at M = 64, 128 and 4096. The fit's worst
// pick there is 4.6% off (M = 64, 24576 x 1536: 64x192w2 15.9 vs 64x64's 15.2 us, timings printed to
// 0.1 us; the thirteenth session's sweep had 64x192w2 fastest there), and run-to-run spread of these
// timings is ~3%; a pick worse than 5% is a heuristic change the sweep does not support. At M = 320
// and 448 every tile height leaves a partial last block, whose cost the model does not capture
// (docs/CUDA.md, forty-fifth session): the worst pick there is 9.7% off (M = 320, 2112 x 7168: 64x128
// 21.4 vs 128x64's 19.5 us), so the bound is 10% (the constants before that session were 17% off,
// at M = 320, 4096 x 7168). Host code only: runs without a GPU.
TEST(CudaGemmFp8, HeuristicPickIsNearTheSweepBest) {
  std::ifstream in(std::string(MX8_SOURCE_DIR) + "/tests/cuda/data/gemm_tile_sweep_h200.txt");
  ASSERT_TRUE(in) << "tests/cuda/data/gemm_tile_sweep_h200.txt is missing";
  struct Key {
    int m, n, k;
    bool operator<(const Key& o) const { return std::tie(m, n, k) < std::tie(o.m, o.n, o.k); }
  };
  std::map<Key, std::map<std::string, double>> us;  // shape -> "BMxBN[w2][cC]" -> time
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream f(line);
    std::string tile;
    Key key{};
    double t = 0;
    ASSERT_TRUE(f >> tile >> key.m >> key.n >> key.k >> t) << "bad sweep line: " << line;
    us[key][tile] = t;
  }
  ASSERT_EQ(us.size(), 30u);  // M in {64, 128, 320, 448, 4096} x the six DeepSeek-V3 (N, K)
  for (const auto& [key, times] : us) {
    const GemmConfig c = gemm_fp8_pick_config(key.m, key.n, key.k, 132);
    const std::string tile = std::to_string(c.block_m) + "x" + std::to_string(c.block_n) +
                             (c.block_m == 64 && c.math_warpgroups == 2 ? "w2" : "") +
                             (c.splits > 1 ? "c" + std::to_string(c.splits) : "");
    double best = 1e30;
    for (const auto& [name, t] : times) best = std::min(best, t);
    const auto picked = times.find(tile);
    ASSERT_NE(picked, times.end()) << key.m << "x" << key.n << "x" << key.k << ": " << tile
                                   << " was not swept";
    const bool partial_blocks = key.m == 320 || key.m == 448;
    EXPECT_LE(picked->second, (partial_blocks ? 1.10 : 1.05) * best)
        << key.m << "x" << key.n << "x" << key.k << ": " << tile;
  }
}

TEST(CudaGemmFp8, RejectsBadShapes) {
  // Argument checks run before any device work, so this needs no GPU.
  GemmFp8Args args;
  args.m = 4;
  args.n = 2112;
  args.k = 100;  // not a multiple of 128
  EXPECT_THROW(gemm_fp8_1x128(args, nullptr), mx8::Error);
  args.k = 256;
  args.n = 24;  // not a multiple of 16
  EXPECT_THROW(gemm_fp8_1x128(args, nullptr), mx8::Error);
}

}  // namespace
}  // namespace mx8::cuda::test
