// How the FP8 GEMMs are launched, beyond what they compute (gemm_test.cpp):
//
// As programmatic dependents (GemmFp8Args::pdl, GemmMxfp8Args::pdl): the kernel starts while the
// kernel before it still runs and requests its first B tiles before waiting for it. Before each
// GEMM a kernel lets its dependents launch, waits 200 us, and only then writes A, A's scales, d (the
// residual that the product accumulates into) and, for MXFP8, B's scales; the product must equal,
// bit for bit, the one launched plainly on the finished inputs. A control also writes B late and
// must see the difference: that shows the GEMM really started before the writer ended.
//
// As a group (gemm_fp8_1x128_group): up to three products sharing A in one launch must each equal,
// bit for bit, the product launched alone with the same tile.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/device_info.h"
#include "cuda/cuda_test_util.h"
#include "cuda/late_copy.h"
#include "mx8/backend/cuda/gemm.h"

namespace mx8::cuda::test {
namespace {

// Far longer than the host's launch of the GEMM after the writer's, a block's start and its first
// TMA requests (200 us let the control below pass once and fail once on the H200).
constexpr int kDelayUs = 2000;

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
  auto fill = [&](auto& g) {  // the fields both GEMMs' arguments share
    g.a = A.live.get();
    g.scale_a_ld = sa_ld(c.m);
    g.b = B.live.get();
    g.d = D.live.get();
    g.out_type = c.accumulate ? OutType::kF32 : OutType::kBF16;
    g.accumulate = c.accumulate;
    g.m = c.m, g.n = c.n, g.k = c.k;
    g.pdl = !plain;
  };
  if (c.mx) {
    GemmMxfp8Args g;
    fill(g);
    g.scale_a = SA.live.get();
    g.scale_b = SB.live.get();
    g.scale_b_ld = sa_ld(c.n);
    gemm_mxfp8(g, s, forced);
  } else {
    GemmFp8Args g;
    fill(g);
    g.scale_a = SA.live.get();
    g.scale_b = SB.live.get();
    g.scale_type = ScaleType::kUE8M0;
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
// compute-sanitizer serializes kernels, so under it this test fails by design (the GPU scripts'
// sanitizer runs leave it out).
TEST(CudaGemmPdl, StartsBeforeTheKernelBeforeItEnds) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  for (Case c : {Case{64, 1024, 1024, {}}, Case{64, 1024, 1024, tile(64, 64, 1)}}) {
    c.b_late = true;
    SCOPED_TRACE(name(c) + " seed " + std::to_string(seed));
    const std::vector<uint8_t> plain = run(c, seed, true), early = run(c, seed, false);
    EXPECT_FALSE(plain == early);
  }
}

// Split-K tiles (64 rows, two math warpgroups taking alternate K blocks) with rings of an odd number
// of stages, against the same tile with an even ring: bit for bit, since each warpgroup sums the same K
// blocks in the same order whatever the ring depth. An odd ring hands a slot's K blocks to the two
// warpgroups in turn, and the one that did not consume the slot's previous K block must not take
// that phase for its own (the illegal instruction fixed in the thirty-fourth session: a parity wait
// passed while the previous load was still landing). Ragged M (the rows past M make TMA's slow
// out-of-bounds fills, so loads land out of order), persistent blocks over several tiles with an odd
// number of K blocks each, and many launches in a row: the conditions it was seen under.
TEST(CudaGemmSplitK, OddRingsGiveTheEvenRingsProduct) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  struct Shape {
    int m, n, k, bn, even, odd, grid;
  };
  // 64x128 and 64x192 hold 7 and 4 stages with TMA stores (bf16 out); 64x64 up to 16.
  for (const Shape sh : {Shape{100, 6144, 896, 128, 6, 7, 40}, Shape{100, 6144, 1152, 192, 4, 3, 40},
                         Shape{70, 4096, 640, 64, 4, 5, 33}}) {
    SCOPED_TRACE("M " + std::to_string(sh.m) + " N " + std::to_string(sh.n) + " K " + std::to_string(sh.k) +
                 " 64x" + std::to_string(sh.bn) + " seed " + std::to_string(seed));
    const auto a = random_codes(size_t(sh.m) * sh.k, rng), b = random_codes(size_t(sh.n) * sh.k, rng);
    const auto sa = random_scales(size_t(sh.k / 128) * sa_ld(sh.m), rng);
    const auto sb = random_scales(size_t((sh.n + 127) / 128) * (sh.k / 128), rng);
    DeviceBuffer<uint8_t> da(a.size()), db(b.size()), dsa(sa.size()), dsb(sb.size());
    da.upload(a), db.upload(b), dsa.upload(sa), dsb.upload(sb);
    DeviceBuffer<uint16_t> d(size_t(sh.m) * sh.n);
    auto product = [&](int stages) {
      GemmFp8Args g;
      g.a = da.get(), g.scale_a = dsa.get(), g.scale_a_ld = sa_ld(sh.m);
      g.b = db.get(), g.scale_b = dsb.get(), g.scale_type = ScaleType::kUE8M0;
      g.d = d.get(), g.out_type = OutType::kBF16;
      g.m = sh.m, g.n = sh.n, g.k = sh.k;
      GemmConfig t = tile(64, sh.bn, 2, 1, sh.grid);
      t.stages = stages;
      d.poison(0xFF);
      gemm_fp8_1x128(g, nullptr, &t);
      MX8_CUDA_CHECK(cudaDeviceSynchronize());
      return d.download();
    };
    const std::vector<uint16_t> want = product(sh.even);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(product(sh.odd) == want) << "launch " << i;
  }
}

// A group against its products launched one by one, with the group's tile (picked for the summed N,
// or forced): ragged N per target, both scale types, bf16 output and f32 accumulated into a
// pattern, tiles of one block that cross from one target into the next (grid forced small), and
// groups that run as A-sharing block pairs.
TEST(CudaGemmGroup, EachProductEqualsItsOwnLaunch) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  struct GroupCase {
    int m, k;
    std::vector<int> n;
    GemmConfig tile;  // block_m 0: the heuristic's pick for the summed N
  };
  const std::vector<GroupCase> cases = {
      {8, 1024, {512, 128, 128}, {}},
      {5, 2048, {2112, 2112}, {}},
      {16, 512, {272, 48, 160}, tile(64, 32, 1, 1, 5)},
      {64, 1024, {384, 256}, tile(64, 64, 2, 2)},
      {40, 768, {336, 80, 96}, tile(64, 16, 2, 1, 7)},
      {200, 512, {640, 272, 128}, tile(128, 128, 0, 1, 4)},
      {300, 384, {512, 256, 384}, tile(256, 128, 0, 1, 3)},
      {401, 256, {384, 128}, tile(192, 128, 0, 1, 2)},
      // 256x128 tiles in A-sharing block pairs (every product whole pairs): two clusters whose pairs
      // cross from one target into the next, and a full grid.
      {300, 384, {512, 256, 256}, tile(256, 128, 0, 1, 4)},
      {600, 256, {2048, 512, 512}, tile(256, 128, 0, 1, 0)},
  };
  for (const GroupCase& c : cases)
    for (const bool ue8m0 : {true, false})
      for (const bool acc : {true, false}) {
        const int count = int(c.n.size());
        int n_sum = 0;
        for (const int n : c.n) n_sum += n;
        GemmConfig t = c.tile.block_m ? c.tile : gemm_fp8_pick_config(c.m, n_sum, c.k, num_sms());
        SCOPED_TRACE("group M " + std::to_string(c.m) + " K " + std::to_string(c.k) + " N sum " +
                     std::to_string(n_sum) + " tile " + t.str() + (ue8m0 ? " ue8m0" : " f32 scales") +
                     (acc ? " f32 +=" : " bf16") + " seed " + std::to_string(seed));
        std::mt19937 rng(seed);
        const size_t esz = ue8m0 ? 1 : 4;
        auto scales = [&](size_t count) {  // UE8M0 bytes, or the same powers of two as f32
          std::vector<uint8_t> v = random_scales(count, rng);
          if (ue8m0) return v;
          std::vector<uint8_t> f(count * 4);
          for (size_t i = 0; i < count; ++i) {
            const uint32_t bits = uint32_t(v[i]) << 23;
            std::memcpy(&f[4 * i], &bits, 4);
          }
          return f;
        };
        DeviceBuffer<uint8_t> a(size_t(c.m) * c.k), sa(size_t(c.k / 128) * sa_ld(c.m) * esz);
        a.upload(random_codes(a.count(), rng));
        sa.upload(scales(sa.count() / esz));
        std::vector<std::unique_ptr<DeviceBuffer<uint8_t>>> b, sb, d_group, d_alone;
        std::vector<GemmFp8Target> targets;
        for (const int n : c.n) {
          b.push_back(std::make_unique<DeviceBuffer<uint8_t>>(size_t(n) * c.k));
          b.back()->upload(random_codes(b.back()->count(), rng));
          const size_t sbn = size_t((n + 127) / 128) * (c.k / 128);
          sb.push_back(std::make_unique<DeviceBuffer<uint8_t>>(sbn * esz));
          sb.back()->upload(scales(sbn));
          std::vector<uint8_t> start(size_t(c.m) * n * (acc ? 4 : 2), 0xFF);  // NaN
          for (size_t i = 0; acc && i < start.size() / 4; ++i) {
            const float f = float(int(i % 13) - 6) * 0.25f;
            std::memcpy(&start[4 * i], &f, 4);
          }
          for (auto* out : {&d_group, &d_alone}) {
            out->push_back(std::make_unique<DeviceBuffer<uint8_t>>(start.size()));
            out->back()->upload(start);
          }
          targets.push_back({b.back()->get(), sb.back()->get(), d_group.back()->get(), n});
        }
        GemmFp8Args shared;
        shared.a = a.get();
        shared.scale_a = sa.get();
        shared.scale_a_ld = sa_ld(c.m);
        shared.scale_type = ue8m0 ? ScaleType::kUE8M0 : ScaleType::kF32;
        shared.out_type = acc ? OutType::kF32 : OutType::kBF16;
        shared.accumulate = acc;
        shared.m = c.m;
        shared.k = c.k;
        gemm_fp8_1x128_group(shared, targets.data(), count, nullptr, &t);
        for (int g = 0; g < count; ++g) {
          GemmFp8Args one = shared;
          one.b = targets[size_t(g)].b;
          one.scale_b = targets[size_t(g)].scale_b;
          one.d = d_alone[size_t(g)]->get();
          one.n = targets[size_t(g)].n;
          GemmConfig alone = t;
          alone.grid = 0;
          gemm_fp8_1x128(one, nullptr, &alone);
        }
        MX8_CUDA_CHECK(cudaDeviceSynchronize());
        for (int g = 0; g < count; ++g)
          EXPECT_TRUE(d_group[size_t(g)]->download() == d_alone[size_t(g)]->download()) << "target " << g;
      }
}

TEST(CudaGemmGroup, RejectsBadGroups) {
  GemmFp8Args shared;
  shared.m = 8;
  shared.k = 128;
  GemmFp8Target t[4];
  auto message = [&](int count) {
    try {
      gemm_fp8_1x128_group(shared, t, count, nullptr);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(0).find("a group of 0 products"), std::string::npos) << message(0);
  EXPECT_NE(message(4).find("a group of 4 products"), std::string::npos) << message(4);
  // A null operand of the second target is named like one of a single product.
  alignas(16) static uint8_t bytes[64];
  shared.a = bytes;
  shared.scale_a = bytes;
  shared.scale_a_ld = 16;
  t[0] = {bytes, bytes, bytes, 16};
  t[1] = {nullptr, bytes, bytes, 16};
  EXPECT_NE(message(2).find("operand pointers must be non-null"), std::string::npos) << message(2);
  t[1] = {bytes, bytes, bytes, 24};
  EXPECT_NE(message(2).find("N must be a positive multiple of 16, got 24"), std::string::npos) << message(2);
}

}  // namespace
}  // namespace mx8::cuda::test
