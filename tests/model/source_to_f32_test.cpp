// source_to_f32: every source type a model's tensors may come in, widened to f32 in row-major order.
// The E4M3 case reads one scale per block of a grid whose last row and column of blocks are ragged;
// the expected values below index that grid on their own.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "model/model_source.h"
#include "mx8/format/element.h"

namespace {

using mx8::model::source_to_f32;
using mx8::model::SourceTensor;

SourceTensor tensor(SourceTensor::Type type, std::vector<int64_t> shape, const void* data) {
  SourceTensor t;
  t.type = type;
  t.shape = std::move(shape);
  t.data = static_cast<const uint8_t*>(data);
  return t;
}

TEST(SourceToF32, HalfPrecisionTypes) {
  // BF16 is the top half of an f32; 0x0001 is the smallest subnormal of each type.
  const uint16_t bf16[4] = {0x3F80, 0xC040, 0x7F80, 0x0001};
  EXPECT_EQ(source_to_f32(tensor(SourceTensor::Type::bf16, {4}, bf16)),
            (std::vector<float>{1.0f, -3.0f, INFINITY, std::ldexp(1.0f, -133)}));
  const uint16_t f16[3] = {0x3C00, 0xC500, 0x0001};
  EXPECT_EQ(source_to_f32(tensor(SourceTensor::Type::f16, {3}, f16)),
            (std::vector<float>{1.0f, -5.0f, std::ldexp(1.0f, -24)}));
  const float f32[2] = {-0.0f, 7.5f};
  const std::vector<float> out = source_to_f32(tensor(SourceTensor::Type::f32, {1, 2}, f32));
  EXPECT_TRUE(std::signbit(out[0]));
  EXPECT_EQ(out[1], 7.5f);
}

TEST(SourceToF32, E4m3ScaledPerBlockOfARaggedGrid) {
  // 5 x 7 weights in 2 x 3 blocks: a 3 x 3 grid whose last block row holds one row and last block
  // column one column. Scale of block (i, j) = 2^(3i + j - 4), so a wrong block is a wrong power of two.
  const int64_t rows = 5, cols = 7, br = 2, bc = 3, gr = 3, gc = 3;
  std::mt19937 rng(5);
  std::vector<uint8_t> codes(rows * cols);
  for (uint8_t& c : codes) {
    c = uint8_t(rng());
    if ((c & 0x7F) == 0x7F) c = 0x3A;  // no NaN codes: NaN != NaN would hide a mismatch
  }
  std::vector<float> scales_f32(gr * gc);
  std::vector<uint8_t> scales_u8(gr * gc);
  for (int64_t b = 0; b < gr * gc; ++b) {
    scales_f32[b] = std::ldexp(1.0f, int(b) - 4);
    scales_u8[b] = uint8_t(127 + b - 4);  // UE8M0: 2^(byte - 127)
  }
  for (bool ue8m0 : {false, true}) {
    SourceTensor t = tensor(SourceTensor::Type::e4m3, {rows, cols}, codes.data());
    t.scales = ue8m0 ? scales_u8.data() : reinterpret_cast<const uint8_t*>(scales_f32.data());
    t.scales_ue8m0 = ue8m0;
    t.scale_block_rows = br;
    t.scale_block_cols = bc;
    const std::vector<float> out = source_to_f32(t);
    ASSERT_EQ(out.size(), size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const float scale = std::ldexp(1.0f, int((r / br) * gc + c / bc) - 4);
        EXPECT_EQ(out[r * cols + c], mx8::format::e4m3_to_f32(codes[r * cols + c]) * scale)
            << "ue8m0 " << ue8m0 << " at " << r << ", " << c;
      }
  }
}

}  // namespace
