// The FP8 GEMMs launched as programmatic dependents (GemmFp8Args::pdl, GemmMxfp8Args::pdl): the kernel
// starts while the kernel before it still runs and requests its first B tiles before waiting for it.
// Before each GEMM a kernel lets its dependents launch, waits 200 us, and only then writes A, A's
// scales, d (the residual that the product accumulates into) and, for MXFP8, B's scales; the product
// must equal, bit for bit, the one launched plainly on the finished inputs. A control also writes B
// late and must see the difference: that shows the GEMM really started before the writer ended.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "cuda/late_copy.h"
#include "mx8/backend/cuda/gemm.h"

namespace mx8::cuda::test {
namespace {

constexpr int kDelayUs = 200;  // far longer than a block's launch and its first TMA requests

// Random E4M3 codes without the NaN codes, and UE8M0 scales near 1 (2^-3 .. 2^4).
std::vector<uint8_t> random_codes(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) {
    b = uint8_t(rng());
    if ((b & 0x7F) == 0x7F) b ^= 1;
  }
  return v;
}
std::vector<uint8_t> random_scales(size_t n, std::mt19937& rng) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = uint8_t(124 + rng() % 8);
  return v;
}

// A device buffer holding `v`, and a second of the same size that a GEMM reads: it either holds
// `v` too (`now`) or starts as `poison` bytes and gets `v` from a late copy.
struct Operand {
  DeviceBuffer<uint8_t> real, live;
  Operand(const std::vector<uint8_t>& v, bool now, uint8_t poison) : real(v.size()), live(v.size()) {
    real.upload(v);
    if (now)
      live.upload(v);
    else
      live.poison(poison);
  }
  LateCopy late() { return {live.get(), real.get(), live.count()}; }
};

struct Case {
  int m, n, k;
  GemmConfig tile;  // block_m 0: the heuristic's pick
  bool mx = false;
  bool accumulate = false;  // f32 output accumulated into a residual (written late), else bf16
  bool b_late = false;      // the control: B (which the contract says must be final) written late too
};

// d of the GEMM launched as a programmatic dependent of the late writer, downloaded; and (`plain`)
// of the same GEMM launched after a finished writer, without the attribute.
std::vector<uint8_t> run(const Case& c, uint32_t seed, bool plain) {
  std::mt19937 rng(seed);
  const int kb = c.mx ? 32 : 128;
  const auto a = random_codes(size_t(c.m) * c.k, rng), b = random_codes(size_t(c.n) * c.k, rng);
  const auto sa = random_scales(size_t(c.k / kb) * sa_ld(c.m), rng);
  const auto sb =
      random_scales(c.mx ? size_t(c.k / 32) * sa_ld(c.n) : size_t((c.n + 127) / 128) * (c.k / 128), rng);
  const size_t out_bytes = size_t(c.m) * c.n * (c.accumulate ? 4 : 2);
  std::vector<uint8_t> base(out_bytes);
  for (size_t i = 0; i < base.size() / 4; ++i) {
    const float f = float(int(i % 13) - 6) * 0.25f;
    std::memcpy(&base[4 * i], &f, 4);
  }
  // NaN poison: E4M3 0x7F codes, UE8M0 255 scales, f32/bf16 all-ones outputs.
  Operand A(a, plain, 0x7F), SA(sa, plain, 0xFF), B(b, plain || !c.b_late, 0x7F),
      SB(sb, plain || !c.mx, 0xFF);
  Operand D(c.accumulate ? base : std::vector<uint8_t>(out_bytes, 0xFF), plain || !c.accumulate, 0xFF);
  cudaStream_t s;
  MX8_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<LateCopy> late;
  if (!plain) {
    late = {A.late(), SA.late()};
    if (c.b_late) late.push_back(B.late());
    if (c.mx) late.push_back(SB.late());
    if (c.accumulate) late.push_back(D.late());
  }
  launch_late_copies(late, plain ? 0 : kDelayUs, s);
  const GemmConfig* forced = c.tile.block_m ? &c.tile : nullptr;
  if (c.mx) {
    GemmMxfp8Args g;
    g.a = A.live.get();
    g.scale_a = SA.live.get();
    g.scale_a_ld = sa_ld(c.m);
    g.b = B.live.get();
    g.scale_b = SB.live.get();
    g.scale_b_ld = sa_ld(c.n);
    g.d = D.live.get();
    g.out_type = c.accumulate ? OutType::kF32 : OutType::kBF16;
    g.accumulate = c.accumulate;
    g.m = c.m, g.n = c.n, g.k = c.k;
    g.pdl = !plain;
    gemm_mxfp8(g, s, forced);
  } else {
    GemmFp8Args g;
    g.a = A.live.get();
    g.scale_a = SA.live.get();
    g.scale_a_ld = sa_ld(c.m);
    g.b = B.live.get();
    g.scale_b = SB.live.get();
    g.scale_type = ScaleType::kUE8M0;
    g.d = D.live.get();
    g.out_type = c.accumulate ? OutType::kF32 : OutType::kBF16;
    g.accumulate = c.accumulate;
    g.m = c.m, g.n = c.n, g.k = c.k;
    g.pdl = !plain;
    gemm_fp8_1x128(g, s, forced);
  }
  MX8_CUDA_CHECK(cudaStreamSynchronize(s));
  MX8_CUDA_CHECK(cudaStreamDestroy(s));
  return D.live.download();
}

GemmConfig tile(int bm, int bn, int w = 0, int splits = 1, int grid = 0) {
  GemmConfig t;
  t.block_m = bm, t.block_n = bn, t.math_warpgroups = w, t.splits = splits, t.grid = grid;
  return t;
}

std::string name(const Case& c) {
  return "M " + std::to_string(c.m) + " N " + std::to_string(c.n) + " K " + std::to_string(c.k) + " tile " +
         (c.tile.block_m ? c.tile.str() : "picked") + (c.mx ? " MXFP8" : " 1x128") +
         (c.accumulate ? " f32 +=" : " bf16");
}

TEST(CudaGemmPdl, MatchesThePlainLaunchWhenItsInputsComeLate) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  // The picked tile, the split-K 64-row tile with a cluster K split over 2 blocks, one-warpgroup
  // 64-row tiles, 128- and 256-row persistent tiles with several tiles per block (the 256-row one
  // issues the next tile's first wave early), fewer K blocks than ring slots, and both MXFP8 tiles.
  const std::vector<Case> cases = {
      {64, 1024, 1024, {}},
      {8, 2112, 2048, tile(64, 64, 2, 2)},
      {40, 640, 384, tile(64, 32, 1)},
      {200, 2048, 1024, tile(128, 128, 0, 1, 10)},
      {600, 4352, 512, tile(256, 128, 0, 1, 10)},
      {70, 512, 1024, tile(64, 64), true},
      {200, 512, 512, tile(128, 128), true},
  };
  for (Case c : cases)
    for (const bool acc : {true, false}) {
      c.accumulate = acc;
      SCOPED_TRACE(name(c) + " seed " + std::to_string(seed));
      EXPECT_TRUE(run(c, seed, false) == run(c, seed, true));
    }
}

// The control: B is read before the wait, so a B written late is missed, and NaN codes reach d.
// Were the GEMM not started early, this would pass as plain and the test above would prove nothing.
TEST(CudaGemmPdl, StartsBeforeTheKernelBeforeItEnds) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  Case c{64, 1024, 1024, {}};
  c.b_late = true;
  SCOPED_TRACE(name(c) + " seed " + std::to_string(seed));
  EXPECT_FALSE(run(c, seed, false) == run(c, seed, true));
}

}  // namespace
}  // namespace mx8::cuda::test
