// Golden vectors: numerics.md section 1.3 (FP8 edge cases, measured on the CUDA toolkit host path and an
// H200) and section 2.2 (f32 -> UE8M0 in both roundings and saturations). These hold with or without
// the toolkit headers present.
#include <gtest/gtest.h>

#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"

using namespace mx8::format;

namespace {

struct Fp8Case {
  uint32_t bits;
  uint8_t e4m3_sat, e4m3_nosat, e5m2_sat, e5m2_nosat;
};

// input (f32 bits) | E4M3 SAT | E4M3 NOSAT | E5M2 SAT | E5M2 NOSAT
constexpr Fp8Case kFp8Cases[] = {
    {0x00000000, 0x00, 0x00, 0x00, 0x00},  // +0
    {0x80000000, 0x80, 0x80, 0x80, 0x80},  // -0
    {0x7FC00000, 0x7F, 0x7F, 0x7F, 0x7F},  // +NaN
    {0xFFC00000, 0x7F, 0x7F, 0x7F, 0x7F},  // -NaN: sign dropped
    {0x7F800000, 0x7E, 0x7F, 0x7B, 0x7C},  // +Inf
    {0xFF800000, 0xFE, 0xFF, 0xFB, 0xFC},  // -Inf
    {0x43E00000, 0x7E, 0x7E, 0x5F, 0x5F},  // 448
    {0x43E80000, 0x7E, 0x7E, 0x5F, 0x5F},  // 464: a tie, rounds to 448 (even)
    {0x43E80001, 0x7E, 0x7F, 0x5F, 0x5F},  // 464 + ulp
    {0x43F00000, 0x7E, 0x7F, 0x60, 0x60},  // 480
    {0x47600000, 0x7E, 0x7F, 0x7B, 0x7B},  // 57344
    {0x476FFFFF, 0x7E, 0x7F, 0x7B, 0x7B},  // 61440 - ulp
    {0x47700000, 0x7E, 0x7F, 0x7B, 0x7C},  // 61440: a tie, rounds to Inf when not saturating
    {0x3B000000, 0x01, 0x01, 0x18, 0x18},  // 2^-9
    {0x3A800000, 0x00, 0x00, 0x14, 0x14},  // 2^-10: a tie, rounds to 0
    {0x3A800001, 0x01, 0x01, 0x14, 0x14},  // 2^-10 + ulp
    {0x3AC00000, 0x01, 0x01, 0x16, 0x16},  // 1.5 * 2^-10
    {0x3B400000, 0x02, 0x02, 0x1A, 0x1A},  // 1.5 * 2^-9: a tie, rounds to 2 * 2^-9
    {0x37000000, 0x00, 0x00, 0x00, 0x00},  // 2^-17: a tie for E5M2, rounds to 0
    {0x37000001, 0x00, 0x00, 0x01, 0x01},  // 2^-17 + ulp
    {0x3F800000, 0x38, 0x38, 0x3C, 0x3C},  // 1
    {0x3FC00000, 0x3C, 0x3C, 0x3E, 0x3E},  // 1.5
    {0xC0400000, 0xC4, 0xC4, 0xC2, 0xC2},  // -3
    {0x7F7FFFFF, 0x7E, 0x7F, 0x7B, 0x7C},  // FLT_MAX
};

struct Ue8m0Case {
  uint32_t bits;
  uint8_t rz_sat, rz_nosat, rp_sat, rp_nosat;
};

constexpr Ue8m0Case kUe8m0Cases[] = {
    {0x00000000, 0x00, 0x00, 0x00, 0x00},  // +0
    {0x80000000, 0x00, 0x00, 0x00, 0x00},  // -0
    {0x00000001, 0x00, 0x00, 0x00, 0x00},  // smallest subnormal: clipped to 2^-127
    {0x00400000, 0x00, 0x00, 0x00, 0x00},  // 2^-127 exactly
    {0x00400001, 0x00, 0x00, 0x01, 0x01},  // just above 2^-127
    {0x007FFFFF, 0x00, 0x00, 0x01, 0x01},  // largest subnormal
    {0x00800000, 0x01, 0x01, 0x01, 0x01},  // 2^-126
    {0x3E800000, 0x7D, 0x7D, 0x7D, 0x7D},  // 0.25
    {0x3F7FFFFF, 0x7E, 0x7E, 0x7F, 0x7F},  // 1 - ulp
    {0x3F800000, 0x7F, 0x7F, 0x7F, 0x7F},  // 1
    {0x3F800001, 0x7F, 0x7F, 0x80, 0x80},  // 1 + ulp
    {0x3FC00000, 0x7F, 0x7F, 0x80, 0x80},  // 1.5
    {0xC0400000, 0x80, 0x80, 0x81, 0x81},  // -3: the sign is ignored
    {0x43E00000, 0x87, 0x87, 0x88, 0x88},  // 448
    {0x7F000000, 0xFE, 0xFE, 0xFE, 0xFE},  // 2^127
    {0x7F000001, 0xFE, 0xFE, 0xFE, 0xFF},  // 2^127 + ulp
    {0x7F7FFFFF, 0xFE, 0xFE, 0xFE, 0xFF},  // FLT_MAX
    {0x7F800000, 0xFE, 0xFF, 0xFE, 0xFF},  // +Inf
    {0xFF800000, 0xFE, 0xFF, 0xFE, 0xFF},  // -Inf
    {0x7FC00000, 0xFF, 0xFF, 0xFF, 0xFF},  // +NaN
    {0xFFC00000, 0xFF, 0xFF, 0xFF, 0xFF},  // -NaN
};

}  // namespace

TEST(Golden, Fp8EdgeCases) {
  for (const auto& c : kFp8Cases) {
    float x = f32_from_bits(c.bits);
    SCOPED_TRACE(testing::Message() << std::hex << "f32 0x" << c.bits);
    EXPECT_EQ(e4m3_from_f32(x, true), c.e4m3_sat);
    EXPECT_EQ(e4m3_from_f32(x, false), c.e4m3_nosat);
    EXPECT_EQ(e5m2_from_f32(x, true), c.e5m2_sat);
    EXPECT_EQ(e5m2_from_f32(x, false), c.e5m2_nosat);
    EXPECT_EQ(encode_element(ElementFormat::e4m3, x), c.e4m3_sat);  // saturating is the default
    EXPECT_EQ(encode_element(ElementFormat::e5m2, x), c.e5m2_sat);
  }
}

TEST(Golden, Ue8m0EdgeCases) {
  for (const auto& c : kUe8m0Cases) {
    float x = f32_from_bits(c.bits);
    SCOPED_TRACE(testing::Message() << std::hex << "f32 0x" << c.bits);
    EXPECT_EQ(ue8m0_from_f32(x, Ue8m0Round::down, true), c.rz_sat);
    EXPECT_EQ(ue8m0_from_f32(x, Ue8m0Round::down, false), c.rz_nosat);
    EXPECT_EQ(ue8m0_from_f32(x, Ue8m0Round::up, true), c.rp_sat);
    EXPECT_EQ(ue8m0_from_f32(x, Ue8m0Round::up, false), c.rp_nosat);
  }
}

TEST(Golden, Ue8m0DecodeAndReciprocal) {
  EXPECT_EQ(f32_bits(ue8m0_to_f32(0x00)), 0x00400000u);  // 2^-127, an f32 subnormal
  EXPECT_EQ(ue8m0_to_f32(0x7F), 1.f);
  EXPECT_EQ(ue8m0_to_f32(0xFE), 0x1p127f);
  EXPECT_TRUE(f32_is_nan(ue8m0_to_f32(0xFF)));
  EXPECT_TRUE(f32_is_nan(ue8m0_reciprocal_f32(0xFF)));
  for (int b = 0; b < 255; ++b) {
    // The reciprocal is exact: scale * reciprocal == 1, and both are powers of two.
    float s = ue8m0_to_f32(uint8_t(b)), r = ue8m0_reciprocal_f32(uint8_t(b));
    EXPECT_EQ(double(s) * double(r), 1.0) << b;
    EXPECT_EQ(ue8m0_from_f32(s, Ue8m0Round::down, false), b);
    EXPECT_EQ(ue8m0_from_f32(s, Ue8m0Round::up, false), b);
    EXPECT_TRUE(f32_is_ue8m0_value(s));
  }
  EXPECT_FALSE(f32_is_ue8m0_value(3.f));
  EXPECT_FALSE(f32_is_ue8m0_value(0.f));
  EXPECT_FALSE(f32_is_ue8m0_value(-1.f));
  EXPECT_FALSE(f32_is_ue8m0_value(0x1p-128f));
}

TEST(Golden, MxSubByteAndInt8EdgeCases) {
  // FP6/FP4/INT8 have no NaN or Inf: NaN -> +max code, Inf -> +-max, overflow saturates either way.
  EXPECT_EQ(e3m2_from_f32(f32_from_bits(0xFFC00000)), 0x1F);
  EXPECT_EQ(e2m3_from_f32(-1.0f / 0.0f, false), 0x3F);
  EXPECT_EQ(e2m1_from_f32(100.f, false), 0x7);
  EXPECT_EQ(e2m1_from_f32(-100.f), 0xF);
  EXPECT_EQ(int8_from_f32(f32_from_bits(0x7FC00000)), 0x7F);
  // Ties to even: E2M1 codes are 0, .5, 1, 1.5, 2, 3, 4, 6.
  EXPECT_EQ(e2m1_from_f32(0.25f), 0x0);  // tie between 0 and 0.5 -> 0
  EXPECT_EQ(e2m1_from_f32(0.75f), 0x2);  // tie between 0.5 and 1 -> 1 (even mantissa)
  EXPECT_EQ(e2m1_from_f32(2.5f), 0x4);   // tie between 2 and 3 -> 2
  EXPECT_EQ(e2m1_from_f32(3.5f), 0x6);   // tie between 3 and 4 -> 4
  EXPECT_EQ(e2m1_from_f32(5.f), 0x6);    // tie between 4 and 6 -> 4
  EXPECT_EQ(e2m1_from_f32(5.0001f), 0x7);
  EXPECT_EQ(e2m1_from_f32(-0.f), 0x8);
  EXPECT_EQ(e3m2_from_f32(30.f), 0x1F);   // tie 28 / (32) -> saturates to 28
  EXPECT_EQ(e2m3_from_f32(7.75f), 0x1F);  // past max -> max
  // INT8: k/64 with ties to even.
  EXPECT_EQ(int8_from_f32(1.5f / 64), 0x02);
  EXPECT_EQ(int8_from_f32(2.5f / 64), 0x02);
  EXPECT_EQ(int8_from_f32(-0.5f / 64), 0x00);
  EXPECT_EQ(int8_from_f32(127.5f / 64), 0x7F);
  EXPECT_EQ(int8_from_f32(-126.5f / 64), uint8_t(-126));
  EXPECT_EQ(int8_from_f32(-1e30f), 0x81);
}

TEST(Golden, Bf16F16Helpers) {
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.f);
  EXPECT_EQ(f16_to_f32(0x3C00), 1.f);
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.f);
  EXPECT_EQ(f16_to_f32(0xFC00), -1.0f / 0.0f);
  EXPECT_EQ(f32_to_bf16_rne(1.f), 0x3F80);
  EXPECT_EQ(f32_to_bf16_rne(f32_from_bits(0x3F808000)), 0x3F80);  // tie -> even
  EXPECT_EQ(f32_to_bf16_rne(f32_from_bits(0x3F818000)), 0x3F82);  // tie -> even
  EXPECT_EQ(f32_to_f16_rne(65504.f), 0x7BFF);
  EXPECT_EQ(f32_to_f16_rne(65520.f), 0x7C00);   // tie at the top -> Inf
  EXPECT_EQ(f32_to_f16_rne(0x1p-25f), 0x0000);  // tie -> 0
  EXPECT_EQ(f32_to_f16_rne(0x1.8p-24f), 0x0002);
  // Every f16 and bf16 pattern round-trips through f32 (NaNs come back quiet, same sign).
  for (uint32_t h = 0; h < 65536; ++h) {
    bool f16_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
    bool bf16_nan = (h & 0x7F80) == 0x7F80 && (h & 0x7F);
    ASSERT_EQ(f32_to_f16_rne(f16_to_f32(uint16_t(h))), f16_nan ? (h | 0x200) : h) << std::hex << h;
    ASSERT_EQ(f32_to_bf16_rne(bf16_to_f32(uint16_t(h))), bf16_nan ? (h | 0x40) : h) << std::hex << h;
  }
}

TEST(Golden, MicroxcalingE4m3BlockWithEvenRounding) {
  // microxcaling test_fp8_e4m3_fix.py, scale 1: [485, 475, 400, -485, -475, -450, 2^-6, -2^-6]. Its
  // default "nearest" rounding (ties away) gives 416 for 400; OCP/CUDA round-to-nearest-even gives 384.
  const float in[] = {485.f, 475.f, 400.f, -485.f, -475.f, -450.f, 0x1p-6f, -0x1p-6f};
  const float want[] = {448.f, 448.f, 384.f, -448.f, -448.f, -448.f, 0x1p-6f, -0x1p-6f};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(e4m3_to_f32(e4m3_from_f32(in[i])), want[i]) << in[i];
}
