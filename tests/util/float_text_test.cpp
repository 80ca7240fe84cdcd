// shortest_float_text: the shortest decimal text that reads back as the same float, on values whose
// shortest text is known, and on 200k random bit patterns (every finite one reads back exactly).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "mx8/util/float_text.h"

namespace {

using mx8::shortest_float_text;

TEST(FloatText, ShortestTextOfKnownValues) {
  EXPECT_EQ(shortest_float_text(0.1f), "0.1");
  EXPECT_EQ(shortest_float_text(-0.033222895f), "-0.033222895");
  EXPECT_EQ(shortest_float_text(1.0f), "1");
  EXPECT_EQ(shortest_float_text(0.0f), "0");
  EXPECT_EQ(shortest_float_text(3.4028235e38f), "3.4028235e+38");
  EXPECT_EQ(shortest_float_text(1e-45f), "1e-45");  // the smallest subnormal
  EXPECT_EQ(shortest_float_text(16777216.0f), "16777216");
  EXPECT_EQ(shortest_float_text(INFINITY), "inf");
}

TEST(FloatText, EveryFiniteFloatReadsBack) {
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    const uint32_t bits = rng();
    float v;
    std::memcpy(&v, &bits, 4);
    if (!std::isfinite(v)) continue;
    const std::string s = shortest_float_text(v);
    ASSERT_EQ(std::strtof(s.c_str(), nullptr), v) << s;
    ASSERT_LE(s.size(), 15u) << s;  // "-1.23456789e-38": 9 digits, a sign, a point and the exponent
  }
}

}  // namespace
