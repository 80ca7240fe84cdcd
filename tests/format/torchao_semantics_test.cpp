// torchao's MXFP8 semantic contract (numerics.md 5.1: make_mxfp8_semantic_cases and
// make_f32_to_e8m0_rceil_cases in torchao/testing/_mxfp8_test_utils.py), restated here as data: 18
// one-block cases for E4M3 with 1x32 UE8M0 scales, for f32 and bf16 inputs, under the floor (OCP) and
// ceil (RCEIL) rules; plus the RCEIL f32 -> E8M0 boundary table. Expected bytes are torchao's.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mx8/format/quantize_ref.h"

using namespace mx8::format;

namespace {

// An f32 value cast to bf16 as torch's .to() does (round to nearest even).
uint16_t bf16_of(uint32_t f32bits) {
  return f32_to_bf16_rne(f32_from_bits(f32bits));
}

struct Block {
  std::vector<uint32_t> f32;   // 32 values as f32 bits (used for f32 input)
  std::vector<uint16_t> bf16;  // 32 values as bf16 bits (used for bf16 input)
  uint8_t scale;
  std::vector<uint8_t> data;
};

// Fills a block: every element `fill`, element 0 `first` (bits in the input dtype's own encoding).
Block make(uint32_t fill_f32, uint16_t fill_bf16, uint32_t first_f32, uint16_t first_bf16, uint8_t scale,
           uint8_t data, uint8_t data0) {
  Block b{std::vector<uint32_t>(32, fill_f32), std::vector<uint16_t>(32, fill_bf16), scale,
          std::vector<uint8_t>(32, data)};
  b.f32[0] = first_f32;
  b.bf16[0] = first_bf16;
  b.data[0] = data0;
  return b;
}

Block uniform(uint32_t f32, uint16_t bf16, uint8_t scale, uint8_t data) {
  return make(f32, bf16, f32, bf16, scale, data, data);
}

void run_cases(bool floor, bool bf16) {
  const uint8_t max_scale = floor ? 246 : 247, max_data = floor ? 0x7E : 0x78;
  const uint32_t dmax32 = 0x7F7FFFFF, one = 0x3F800000, inf = 0x7F800000, nan = 0x7FC00000;
  const uint16_t dmax16 = 0x7F7F, one16 = 0x3F80, inf16 = 0x7F80, nan16 = 0x7FC0;
  const uint8_t sub_data =
      bf16 ? 0x08 : 0x00;  // bf16's 2^-133 becomes 2^-6 at scale 2^-127; f32's 2^-149 -> 0
  const uint8_t sat_scale = floor ? 127 : 128, sat_data = floor ? 0x7E : 0x77;
  const bool rceil_f32 = !floor && !bf16, floor_f32 = floor && !bf16;
  std::vector<std::pair<std::string, Block>> cases = {
      {"zero", uniform(0, 0, 0, 0x00)},
      {"smallest_normal", uniform(0x00800000, 0x0080, 0, 0x40)},
      {"mixed_inf", make(one, one16, inf, inf16, 255, 0x7F, 0x7F)},
      {"mixed_nan", make(one, one16, nan, nan16, 255, 0x7F, 0x7F)},
      {"positive_fp8_max", uniform(0x43E00000, 0x43E0, 127, 0x7E)},
      {"negative_fp8_max", uniform(0xC3E00000, 0xC3E0, 127, 0xFE)},
      {"positive_dtype_max", uniform(dmax32, dmax16, max_scale, max_data)},
      {"negative_dtype_max",
       uniform(dmax32 | 0x80000000u, dmax16 | 0x8000, max_scale, uint8_t(max_data | 0x80))},
      {"positive_smallest_subnormal", uniform(0x00000001, 0x0001, 0, sub_data)},
      {"negative_smallest_subnormal", uniform(0x80000001, 0x8001, 0, uint8_t(sub_data | 0x80))},
      {"mixed_positive_underflow", make(one, one16, 0x00000001, 0x0001, 119, 0x78, 0x00)},
      {"mixed_negative_underflow", make(one, one16, 0x80000001, 0x8001, 119, 0x78, 0x80)},
      {"mixed_saturation_and_underflow", make(one, one16, dmax32, dmax16, max_scale, 0x00, max_data)},
      // 3.5 + 1 f32 ulp: bf16 erases the ulp, and only RCEIL on f32 sees the block above 2^-7 * 448.
      {"rceil_premature_bf16_lowers_scale",
       uniform(0x40600001, bf16_of(0x40600001), rceil_f32 ? 121 : 120, rceil_f32 ? 0x76 : 0x7E)},
      // The largest f32 below 512: bf16 rounds it to 512; FLOOR on f32 must keep exponent 8.
      {"floor_premature_bf16_raises_scale",
       uniform(0x43FFFFFF, bf16_of(0x43FFFFFF), floor_f32 ? 127 : 128, floor_f32 ? 0x7E : 0x78)},
      {"all_nan", uniform(nan, nan16, 255, 0x7F)},
      {"positive_satfinite", uniform(0x43F00000, 0x43F0, sat_scale, sat_data)},
      {"negative_satfinite", uniform(0xC3F00000, 0xC3F0, sat_scale, uint8_t(sat_data | 0x80))},
  };
  QuantSpec spec;
  spec.element = ElementFormat::e4m3;
  spec.rule = floor ? ScaleRule::floor : ScaleRule::ceil;
  spec.blocking = Blocking::tile(32);
  spec.storage = ScaleStorage::ue8m0;
  for (auto& [name, b] : cases) {
    SCOPED_TRACE(name + (bf16 ? " bf16" : " f32") + (floor ? " floor" : " rceil"));
    std::vector<uint8_t> codes(32), scale(1);
    if (bf16)
      quantize_ref(SourceType::bf16, b.bf16.data(), 1, 32, spec, codes.data(), scale.data());
    else
      quantize_ref(SourceType::f32, b.f32.data(), 1, 32, spec, codes.data(), scale.data());
    EXPECT_EQ(int(scale[0]), int(b.scale));
    EXPECT_EQ(codes, b.data);
  }
}

}  // namespace

TEST(TorchaoSemantics, FloorF32) {
  run_cases(true, false);
}
TEST(TorchaoSemantics, FloorBf16) {
  run_cases(true, true);
}
TEST(TorchaoSemantics, RceilF32) {
  run_cases(false, false);
}
TEST(TorchaoSemantics, RceilBf16) {
  run_cases(false, true);
}

TEST(TorchaoSemantics, F32ToE8m0RceilBoundaries) {
  // (f32 bits, E8M0 byte) with RoundPosInf and no saturation, as torchao's _f32_to_e8m0_rceil.
  const std::pair<uint32_t, int> cases[] = {
      {0x00000000, 0},   {0x00000001, 0},   {0x00400000, 0},   {0x00400001, 1},   {0x007FFFFF, 1},
      {0x00800000, 1},   {0x1F800000, 63},  {0x1F800001, 64},  {0x3F7FFFFF, 127}, {0x3F800000, 127},
      {0x3F800001, 128}, {0x5F800000, 191}, {0x5F800001, 192}, {0x7F000000, 254}, {0x7F000001, 255},
      {0x7F7FFFFF, 255}, {0x7F800000, 255}, {0x7FC00000, 255},
  };
  for (auto [bits, want] : cases)
    EXPECT_EQ(int(ue8m0_from_f32(f32_from_bits(bits), Ue8m0Round::up, false)), want) << std::hex << bits;
}
