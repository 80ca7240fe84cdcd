// Every code of every element format decodes to the value an independent formula (ldexp on the
// fields) gives, and re-encodes to itself (the canonical codes) in both saturation modes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "mx8/format/element.h"

using namespace mx8::format;

namespace {

// Independent decode: ldexp on the sign, exponent and mantissa fields of a 1.E.M code.
double formula(int e_bits, int m_bits, int bias, unsigned code) {
  unsigned man = code & ((1u << m_bits) - 1);
  unsigned exp = (code >> m_bits) & ((1u << e_bits) - 1);
  int sign = (code >> (e_bits + m_bits)) & 1;
  double v = exp == 0 ? std::ldexp(double(man), 1 - bias - m_bits)
                      : std::ldexp(1.0 + double(man) / (1 << m_bits), int(exp) - bias);
  return sign ? -v : v;
}

bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, 4) == 0;
}

}  // namespace

TEST(ElementDecode, E4M3All256) {
  for (unsigned c = 0; c < 256; ++c) {
    float got = e4m3_to_f32(uint8_t(c));
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << c;
      continue;
    }
    EXPECT_EQ(double(got), formula(4, 3, 7, c)) << std::hex << c;
    EXPECT_EQ(e4m3_from_f32(got, true), c) << std::hex << c;
    EXPECT_EQ(e4m3_from_f32(got, false), c) << std::hex << c;
    EXPECT_EQ(decode_element(ElementFormat::e4m3, uint8_t(c)), got);
  }
  EXPECT_EQ(e4m3_to_f32(0x7E), 448.f);
  EXPECT_EQ(e4m3_to_f32(0x01), std::ldexp(1.f, -9));
  EXPECT_TRUE(same_bits(e4m3_to_f32(0x80), -0.f));
}

TEST(ElementDecode, E5M2All256) {
  for (unsigned c = 0; c < 256; ++c) {
    float got = e5m2_to_f32(uint8_t(c));
    unsigned mag = c & 0x7F;
    if (mag > 0x7C) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << c;
      continue;
    }
    if (mag == 0x7C) {
      EXPECT_TRUE(std::isinf(got) && std::signbit(got) == bool(c & 0x80)) << std::hex << c;
      EXPECT_EQ(e5m2_from_f32(got, false), c);
      EXPECT_EQ(e5m2_from_f32(got, true), (c & 0x80) | 0x7B);
      continue;
    }
    EXPECT_EQ(double(got), formula(5, 2, 15, c)) << std::hex << c;
    EXPECT_EQ(e5m2_from_f32(got, true), c) << std::hex << c;
    EXPECT_EQ(e5m2_from_f32(got, false), c) << std::hex << c;
  }
  EXPECT_EQ(e5m2_to_f32(0x7B), 57344.f);
}

TEST(ElementDecode, FP6AndFP4AllCodes) {
  struct F {
    ElementFormat f;
    int e, m, bias, codes;
    float max;
  } fs[] = {{ElementFormat::e3m2, 3, 2, 3, 64, 28.f},
            {ElementFormat::e2m3, 2, 3, 1, 64, 7.5f},
            {ElementFormat::e2m1, 2, 1, 1, 16, 6.f}};
  for (auto& f : fs) {
    float max_seen = 0;
    for (int c = 0; c < f.codes; ++c) {
      float got = decode_element(f.f, uint8_t(c));
      EXPECT_EQ(double(got), formula(f.e, f.m, f.bias, c)) << element_traits(f.f).name << " " << c;
      EXPECT_EQ(encode_element(f.f, got, true), c) << element_traits(f.f).name << " " << c;
      EXPECT_EQ(encode_element(f.f, got, false), c) << element_traits(f.f).name << " " << c;
      max_seen = std::fmax(max_seen, got);
    }
    EXPECT_EQ(max_seen, f.max);
    EXPECT_EQ(max_seen, element_traits(f.f).max_normal);
  }
}

TEST(ElementDecode, Int8All256) {
  for (int c = 0; c < 256; ++c) {
    float got = int8_to_f32(uint8_t(c));
    EXPECT_EQ(double(got), double(int8_t(c)) / 64.0);
    if (c != 0x80) {
      EXPECT_EQ(int8_from_f32(got), c) << c;
    }
  }
  EXPECT_EQ(int8_from_f32(-2.f), 0x81);  // symmetric clamp: 0x80 is never produced
}
