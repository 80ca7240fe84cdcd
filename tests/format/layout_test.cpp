// Scale grids and storages: shapes of ragged grids, the Blackwell offsets against nvmath's worked
// examples and against an independent transcription of torchao's to_blocked permutation, packing
// contents, round trips through every storage, and the errors for impossible conversions.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "mx8/error.h"
#include "mx8/format/layout.h"
#include "mx8/format/ue8m0.h"

using namespace mx8::format;

TEST(Layout, GridShapes) {
  auto g = scale_grid(Blocking::tile(128), 3, 300);
  EXPECT_EQ(g.rows, 3);
  EXPECT_EQ(g.cols, 3);  // 300 = 128 + 128 + 44: a ragged last tile
  g = scale_grid(Blocking::block(128), 130, 256);
  EXPECT_EQ(g.rows, 2);
  EXPECT_EQ(g.cols, 2);
  g = scale_grid(Blocking::block(32), 33, 31);
  EXPECT_EQ(g.rows, 2);
  EXPECT_EQ(g.cols, 1);
  g = scale_grid(Blocking::per_row(), 7, 5);
  EXPECT_EQ(g.rows, 7);
  EXPECT_EQ(g.cols, 1);
  g = scale_grid(Blocking::per_tensor(), 7, 5);
  EXPECT_EQ(g.rows, 1);
  EXPECT_EQ(g.cols, 1);
  g = scale_grid(Blocking::per_tensor(), 0, 5);
  EXPECT_EQ(g.rows * g.cols, 0);
}

TEST(Layout, BlockingNames) {
  for (Blocking b : {Blocking::per_tensor(), Blocking::per_row(), Blocking::tile(128), Blocking::tile(32),
                     Blocking::block(128), Blocking::block(32)}) {
    auto p = parse_blocking(blocking_name(b));
    ASSERT_TRUE(p.has_value()) << blocking_name(b);
    EXPECT_EQ(blocking_name(*p), blocking_name(b));
  }
  EXPECT_EQ(blocking_name(Blocking::tile(128)), "1x128");
  EXPECT_EQ(blocking_name(Blocking::block(32)), "32x32");
  EXPECT_FALSE(parse_blocking("64x32").has_value());
  EXPECT_FALSE(parse_blocking("1x0").has_value());
  EXPECT_FALSE(parse_blocking("1x").has_value());
  // A number must be the whole field: trailing or leading text is refused, not read up to where it stops.
  for (const char* bad : {"1x128a", "1x128 ", "128ax128", "x128", "1x-128", "1x+128", "1x1x128"})
    EXPECT_FALSE(parse_blocking(bad).has_value()) << bad;
  for (ScaleStorage s :
       {ScaleStorage::f32, ScaleStorage::ue8m0, ScaleStorage::ue8m0_packed4, ScaleStorage::ue8m0_blackwell})
    EXPECT_EQ(parse_scale_storage(scale_storage_name(s)), s);
}

// What each storage takes: f32 4 bytes a scale, UE8M0 one, packed4 whole 4-byte words per row, Blackwell
// 128-row x 4-column tiles; an empty tensor nothing, whichever side is empty.
TEST(Layout, StorageBytes) {
  const Blocking t32 = Blocking::tile(32);
  EXPECT_EQ(scale_storage_bytes(ScaleStorage::f32, t32, 3, 100), 3u * 4 * 4);  // 4 scales a row
  EXPECT_EQ(scale_storage_bytes(ScaleStorage::ue8m0, t32, 3, 100), 3u * 4);
  EXPECT_EQ(scale_storage_bytes(ScaleStorage::ue8m0_packed4, t32, 3, 170), 3u * 8);  // 6 scales: 2 words
  EXPECT_EQ(scale_storage_bytes(ScaleStorage::ue8m0_blackwell, t32, 3, 100), 128u * 4);
  EXPECT_EQ(scale_storage_bytes(ScaleStorage::ue8m0_blackwell, t32, 0, 64), 0u);
  EXPECT_EQ(scale_storage_bytes(ScaleStorage::ue8m0_blackwell, t32, 5, 0), 0u);
}

TEST(Layout, BlackwellOffsetsMatchNvmathExamples) {
  // NVFP4 A of 128x128 (16-element blocks: 8 scale columns). (row 5, col 2) -> 82; (5, 5) -> 593.
  EXPECT_EQ(blackwell_offset(5, 2, 8), 82);
  EXPECT_EQ(blackwell_offset(5, 5, 8), 593);
  EXPECT_EQ(blackwell_bytes(1, 160), 128 * 8);  // 5 scale columns pad to 8, 1 row pads to 128
}

TEST(Layout, BlackwellOffsetMatchesTorchaoPermutation) {
  // torchao to_blocked: padded.view(RB,128,CB,4).permute(0,2,1,3).reshape(-1,4,32,4).transpose(1,2)
  // .reshape(-1,32,16). Followed index by index: (rb, i, cb, c) -> n = rb*CB + cb, i = i1*32 + i0,
  // flat = n*512 + i0*16 + i1*4 + c.
  for (int64_t rows : {1, 100, 128, 300})
    for (int64_t ks : {1, 3, 4, 9}) {
      int64_t cb_count = (ks + 3) / 4;
      std::vector<int> seen(size_t((rows + 127) / 128 * 128 * cb_count * 4), 0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < ks; ++j) {
          int64_t rb = r / 128, i = r % 128, cb = j / 4, c = j % 4;
          int64_t flat = (rb * cb_count + cb) * 512 + (i % 32) * 16 + (i / 32) * 4 + c;
          ASSERT_EQ(blackwell_offset(r, j, ks), flat);
          ASSERT_EQ(seen[size_t(flat)]++, 0);  // a bijection onto the padded buffer
        }
    }
}

namespace {

std::vector<uint8_t> random_grid(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> g(n);
  for (auto& b : g) b = uint8_t(rng() % 256);  // NaN (0xFF) included: storages carry it too
  return g;
}

}  // namespace

TEST(Layout, EveryStorageRoundTrips) {
  const Blocking blockings[] = {Blocking::per_tensor(), Blocking::per_row(),  Blocking::tile(128),
                                Blocking::tile(32),     Blocking::block(128), Blocking::block(32)};
  const int64_t shapes[][2] = {{1, 1}, {1, 32}, {5, 300}, {130, 257}, {256, 512}, {129, 96}, {3, 4096}};
  uint32_t seed = 1;
  for (const Blocking& b : blockings)
    for (auto& shape : shapes) {
      int64_t rows = shape[0], cols = shape[1];
      ScaleGrid g = scale_grid(b, rows, cols);
      auto grid = random_grid(size_t(g.rows * g.cols), seed++);
      for (ScaleStorage s :
           {ScaleStorage::ue8m0, ScaleStorage::ue8m0_packed4, ScaleStorage::ue8m0_blackwell}) {
        SCOPED_TRACE(blocking_name(b) + " " + std::to_string(rows) + "x" + std::to_string(cols) + " " +
                     scale_storage_name(s));
        std::vector<uint8_t> packed(scale_storage_bytes(s, b, rows, cols), 0xAA);
        pack_ue8m0_scales(grid.data(), s, b, rows, cols, packed.data());
        std::vector<uint8_t> back(grid.size(), 0xAA);
        unpack_ue8m0_scales(packed.data(), s, b, rows, cols, back.data());
        EXPECT_EQ(back, grid);
        // Through f32 and back into this storage: the same bytes.
        std::vector<float> f(grid.size());
        convert_scales(packed.data(), s, f.data(), ScaleStorage::f32, b, rows, cols);
        for (size_t i = 0; i < f.size(); ++i)
          if (grid[i] != 0xFF) {
            ASSERT_EQ(f[i], ue8m0_to_f32(grid[i]));
          }
        std::vector<uint8_t> again(packed.size(), 0x55);
        convert_scales(f.data(), ScaleStorage::f32, again.data(), s, b, rows, cols);
        EXPECT_EQ(again, packed);
      }
    }
}

TEST(Layout, Packed4Contents) {
  // Row-major grid 2 x 5 -> 2 words per row; byte i of word q is column 4q + i; padding is zero.
  std::vector<uint8_t> grid = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  Blocking b = Blocking::tile(32);
  ASSERT_EQ(scale_storage_bytes(ScaleStorage::ue8m0_packed4, b, 2, 160), 16u);
  std::vector<uint8_t> packed(16, 0xAA);
  pack_ue8m0_scales(grid.data(), ScaleStorage::ue8m0_packed4, b, 2, 160, packed.data());
  uint32_t w[4];
  std::memcpy(w, packed.data(), 16);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 5; ++c) EXPECT_EQ((w[r * 2 + c / 4] >> (8 * (c % 4))) & 0xFF, grid[r * 5 + c]);
  EXPECT_EQ(w[1] >> 8, 0u);
  EXPECT_EQ(w[3] >> 8, 0u);
}

TEST(Layout, BlackwellExpandsCoarseBlocks) {
  // A 128x128 block grid on a 256x256 matrix: every (r, j) with j = k/32 carries the scale of its block,
  // so row 200, k-group 5 (k = 160..191) reads block (1, 1).
  Blocking b = Blocking::block(128);
  std::vector<uint8_t> grid = {10, 11, 12, 13};
  std::vector<uint8_t> out(scale_storage_bytes(ScaleStorage::ue8m0_blackwell, b, 256, 256), 0xAA);
  pack_ue8m0_scales(grid.data(), ScaleStorage::ue8m0_blackwell, b, 256, 256, out.data());
  EXPECT_EQ(out[size_t(blackwell_offset(200, 5, 8))], 13);
  EXPECT_EQ(out[size_t(blackwell_offset(0, 3, 8))], 10);
  EXPECT_EQ(out[size_t(blackwell_offset(127, 4, 8))], 11);
  // Padding is zero: a 1 x 32 tile grid on 100 rows pads rows 100..127 and scale columns 1..3.
  Blocking t = Blocking::tile(32);
  std::vector<uint8_t> g2(100, 0x7F);
  std::vector<uint8_t> o2(scale_storage_bytes(ScaleStorage::ue8m0_blackwell, t, 100, 32), 0xAA);
  ASSERT_EQ(o2.size(), 512u);
  pack_ue8m0_scales(g2.data(), ScaleStorage::ue8m0_blackwell, t, 100, 32, o2.data());
  int real = 0;
  for (size_t i = 0; i < o2.size(); ++i) {
    if (o2[i] == 0x7F)
      ++real;
    else
      EXPECT_EQ(o2[i], 0) << i;
  }
  EXPECT_EQ(real, 100);
}

TEST(Layout, ImpossibleConversionsThrow) {
  float not_pow2[2] = {1.f, 3.f};
  uint8_t out[8];
  EXPECT_THROW(scales_f32_to_ue8m0(not_pow2, 2, out), mx8::Error);
  float neg[1] = {-1.f};
  EXPECT_THROW(scales_f32_to_ue8m0(neg, 1, out), mx8::Error);
  float zero[1] = {0.f};
  EXPECT_THROW(scales_f32_to_ue8m0(zero, 1, out), mx8::Error);  // UE8M0 has no zero
  float ok[3] = {0x1p-127f, 0x1p127f, f32_from_bits(0x7FC00000)};
  scales_f32_to_ue8m0(ok, 3, out);
  EXPECT_EQ(out[0], 0x00);
  EXPECT_EQ(out[1], 0xFE);
  EXPECT_EQ(out[2], 0xFF);
  // Blackwell needs each 32-column group inside one block.
  EXPECT_THROW(validate_storage(ScaleStorage::ue8m0_blackwell, Blocking::tile(48), 4, 100), mx8::Error);
  EXPECT_NO_THROW(validate_storage(ScaleStorage::ue8m0_blackwell, Blocking::tile(48), 4, 40));
  EXPECT_THROW(validate_blocking(Blocking{Granularity::tile, 2, 128}), mx8::Error);
  EXPECT_THROW(validate_blocking(Blocking{Granularity::block, 128, 64}), mx8::Error);
  EXPECT_THROW(validate_blocking(Blocking::tile(0)), mx8::Error);
  EXPECT_THROW(validate_blocking(Blocking{Granularity(9), 1, 32}), mx8::Error);  // not a granularity
  uint8_t grid[4];
  EXPECT_THROW(unpack_ue8m0_scales(out, ScaleStorage::f32, Blocking::tile(32), 1, 64, grid), mx8::Error);
}
