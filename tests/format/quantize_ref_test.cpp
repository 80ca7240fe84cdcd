// The scalar reference quantizer: semantic blocks (torchao-style cases from numerics.md 5.1, hand
// computed), NaN/Inf/zero/subnormal blocks, ragged shapes, E2M1 packing, bf16/f16 sources, spec
// validation, and quantize-then-dequantize error within the bound each format guarantees.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "mx8/error.h"
#include "mx8/format/quantize_ref.h"

using namespace mx8::format;

namespace {

struct Quantized {
  std::vector<uint8_t> codes, scales;
};

Quantized quantize(const std::vector<float>& x, int64_t rows, int64_t cols, const QuantSpec& spec) {
  Quantized q;
  q.codes.assign(code_bytes(spec, rows, cols), 0xCD);
  q.scales.assign(scale_bytes(spec, rows, cols), 0xCD);
  quantize_ref(SourceType::f32, x.data(), rows, cols, spec, q.codes.data(), q.scales.data());
  return q;
}

QuantSpec mx(ElementFormat f, ScaleRule r, Blocking b = Blocking::tile(32)) {
  QuantSpec s;
  s.element = f;
  s.rule = r;
  s.blocking = b;
  s.storage = r == ScaleRule::fp32 ? ScaleStorage::f32 : ScaleStorage::ue8m0;
  return s;
}

// One 32-element block whose first element is `v` and the rest `rest`.
std::vector<float> block(float v, float rest = 0.f) {
  std::vector<float> x(32, rest);
  x[0] = v;
  return x;
}

TEST(QuantizeRef, SemanticBlocksE4m3) {
  struct Case {
    const char* name;
    uint32_t first_bits;
    uint8_t floor_scale, floor_code, ceil_scale, ceil_code;
  } cases[] = {
      {"satfinite 480", 0x43F00000, 127, 0x7E, 128, 0x77},   // 480 saturates under floor; 240 under ceil
      {"-satfinite 480", 0xC3F00000, 127, 0xFE, 128, 0xF7},  //
      {"fp8 max 448", 0x43E00000, 127, 0x7E, 127, 0x7E},     //
      {"FLT_MAX", 0x7F7FFFFF, 246, 0x7E, 247, 0x78},         // floor saturates; ceil gives 256 = 0x78
      {"rceil premature bf16", 0x40600001, 120, 0x7E, 121, 0x76},  // 3.5000002: floor 448 (sat), ceil 224
      {"floor premature bf16", 0x43FFFFFF, 127, 0x7E, 128, 0x78},  // 511.99997: floor sat, ceil 256
      {"smallest normal", 0x00800000, 0, 0x40, 0, 0x40},           // 2^-126 at scale 2^-127 is 2.0 (no FTZ)
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto x = block(f32_from_bits(c.first_bits));
    auto qf = quantize(x, 1, 32, mx(ElementFormat::e4m3, ScaleRule::floor));
    auto qc = quantize(x, 1, 32, mx(ElementFormat::e4m3, ScaleRule::ceil));
    EXPECT_EQ(qf.scales[0], c.floor_scale);
    EXPECT_EQ(qf.codes[0], c.floor_code);
    EXPECT_EQ(qc.scales[0], c.ceil_scale);
    EXPECT_EQ(qc.codes[0], c.ceil_code);
    for (int i = 1; i < 32; ++i) EXPECT_EQ(qf.codes[size_t(i)], 0);
  }
}

TEST(QuantizeRef, SubnormalInputsSurvive) {
  // bf16's smallest subnormal (2^-133): scale byte 0 (2^-127), element 2^-6 = E4M3 0x08 (no FTZ).
  std::vector<uint16_t> x(32, 0x0001);
  QuantSpec s = mx(ElementFormat::e4m3, ScaleRule::ceil);
  std::vector<uint8_t> codes(32), scales(1);
  quantize_ref(SourceType::bf16, x.data(), 1, 32, s, codes.data(), scales.data());
  EXPECT_EQ(scales[0], 0);
  for (uint8_t c : codes) EXPECT_EQ(c, 0x08);
  std::vector<float> back(32);
  dequantize_ref(codes.data(), scales.data(), 1, 32, s, back.data());
  EXPECT_EQ(back[0], 0x1p-133f);
}

TEST(QuantizeRef, ZeroBlocks) {
  std::vector<float> x(64, 0.f);
  x[40] = -0.f;
  auto q = quantize(x, 1, 64, mx(ElementFormat::e4m3, ScaleRule::ceil));
  EXPECT_EQ(q.scales[0], 0x00);
  EXPECT_EQ(q.scales[1], 0x00);
  EXPECT_EQ(q.codes[40], 0x80);  // -0 keeps its sign
  QuantSpec ds = mx(ElementFormat::e4m3, ScaleRule::ceil, Blocking::tile(128));
  ds.amax_floor = 1e-4f;
  q = quantize(x, 1, 64, ds);
  EXPECT_EQ(q.scales[0], 0x69);  // DeepSeek's clamp: 2^-22
  q = quantize(x, 1, 64, mx(ElementFormat::e4m3, ScaleRule::floor));
  EXPECT_EQ(q.scales[0], 0x00);
}

TEST(QuantizeRef, NanAndInfPoisonOnlyTheirBlock) {
  for (uint32_t bad : {0x7FC00000u, 0xFFC00000u, 0x7F800000u, 0xFF800000u})
    for (ScaleRule r : {ScaleRule::ceil, ScaleRule::floor, ScaleRule::fp32})
      for (ElementFormat f : {ElementFormat::e4m3, ElementFormat::e5m2, ElementFormat::e2m1}) {
        std::vector<float> x(64, 1.f);
        x[5] = f32_from_bits(bad);
        x[6] = 0.f;
        x[7] = 448.f;
        QuantSpec s = mx(f, r);
        auto q = quantize(x, 1, 64, s);
        std::vector<float> back(64);
        dequantize_ref(q.codes.data(), q.scales.data(), 1, 64, s, back.data());
        for (int i = 0; i < 32; ++i) EXPECT_TRUE(std::isnan(back[size_t(i)])) << i;
        for (int i = 32; i < 64; ++i) EXPECT_EQ(back[size_t(i)], 1.f) << i;
        if (r != ScaleRule::fp32) {
          EXPECT_EQ(q.scales[0], 0xFF);
        }
        if (f != ElementFormat::e2m1) {
          for (int i = 0; i < 32; ++i) EXPECT_EQ(q.codes[size_t(i)], 0x7F);  // canonical NaN
        }
      }
}

TEST(QuantizeRef, RaggedShapesAndBlocks) {
  // 130 x 300 with 128x128 blocks: a 2 x 3 grid, last row block 2 rows, last column block 44 columns.
  const int64_t rows = 130, cols = 300;
  std::vector<float> x(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[size_t(r * cols + c)] = float((r / 128) * 3 + (c / 128) + 1);
  QuantSpec s = mx(ElementFormat::e4m3, ScaleRule::ceil, Blocking::block(128));
  auto q = quantize(x, rows, cols, s);
  ASSERT_EQ(q.scales.size(), 6u);
  for (int i = 0; i < 6; ++i)  // block value v = i+1 -> 2^ceil(log2(v / 448))
    EXPECT_EQ(q.scales[size_t(i)], compute_block_scale(float(i + 1), ElementFormat::e4m3, {}).ue8m0);
  std::vector<float> back(x.size());
  dequantize_ref(q.codes.data(), q.scales.data(), rows, cols, s, back.data());
  EXPECT_EQ(back, x);  // small integers are exact in E4M3 after a power-of-two scale
}

TEST(QuantizeRef, E2m1PacksTwoPerByteLowNibbleFirst) {
  std::vector<float> x = {1.f, 2.f, 3.f, 0.5f, 6.f, -1.f, -6.f};  // odd column count
  QuantSpec s = mx(ElementFormat::e2m1, ScaleRule::floor, Blocking::per_row());
  ASSERT_EQ(code_bytes(s, 1, 7), 4u);
  auto q = quantize(x, 1, 7, s);
  // amax 6: floor(log2 6) - 2 = 0 -> scale 1. Codes: 1=0x2, 2=0x4, 3=0x5, .5=0x1, 6=0x7, -1=0xA, -6=0xF.
  EXPECT_EQ(q.scales[0], 127);
  EXPECT_EQ(q.codes[0], 0x42);
  EXPECT_EQ(q.codes[1], 0x15);
  EXPECT_EQ(q.codes[2], 0xA7);
  EXPECT_EQ(q.codes[3], 0x0F);  // the unused high nibble is 0
  std::vector<float> back(7);
  dequantize_ref(q.codes.data(), q.scales.data(), 1, 7, s, back.data());
  EXPECT_EQ(back, x);
}

TEST(QuantizeRef, E2m1PaddingNibbleIsZeroInADirtyBuffer) {
  // The caller's buffer is not cleared for it: one element (one byte, half used) and seven.
  QuantSpec s = mx(ElementFormat::e2m1, ScaleRule::floor, Blocking::per_row());
  for (int cols : {1, 7}) {
    std::vector<float> x(size_t(cols), 1.f);
    std::vector<uint8_t> codes(code_bytes(s, 1, cols), 0xFF), scales(scale_bytes(s, 1, cols), 0xFF);
    quantize_ref(SourceType::f32, x.data(), 1, cols, s, codes.data(), scales.data());
    EXPECT_EQ(codes.back(), 0x06) << cols;  // 1.0 / 2^-2 = 4.0 is code 0x6; the high nibble 0
  }
}

TEST(QuantizeRef, Bf16AndF16SourcesEqualTheirF32Widening) {
  std::mt19937 rng(7);
  std::vector<uint16_t> h(3 * 200);
  for (auto& v : h) v = uint16_t(rng());
  for (SourceType t : {SourceType::bf16, SourceType::f16})
    for (ElementFormat f :
         {ElementFormat::e4m3, ElementFormat::e5m2, ElementFormat::e2m3, ElementFormat::int8}) {
      QuantSpec s = mx(f, ScaleRule::ceil, Blocking::tile(32));
      std::vector<float> wide(h.size());
      for (size_t i = 0; i < h.size(); ++i)
        wide[i] = t == SourceType::bf16 ? bf16_to_f32(h[i]) : f16_to_f32(h[i]);
      auto want = quantize(wide, 3, 200, s);
      std::vector<uint8_t> codes(want.codes.size()), scales(want.scales.size());
      quantize_ref(t, h.data(), 3, 200, s, codes.data(), scales.data());
      EXPECT_EQ(codes, want.codes);
      EXPECT_EQ(scales, want.scales);
    }
}

TEST(QuantizeRef, SpecValidation) {
  std::vector<float> x(64, 1.f);
  std::vector<uint8_t> c(256), sc(4096);
  QuantSpec bad = mx(ElementFormat::e4m3, ScaleRule::fp32);
  bad.storage = ScaleStorage::ue8m0;
  EXPECT_THROW(quantize_ref(SourceType::f32, x.data(), 1, 64, bad, c.data(), sc.data()), mx8::Error);
  try {
    validate_spec(bad, 1, 64);
  } catch (const mx8::Error& e) {
    EXPECT_NE(std::string(e.what()).find("fp32"), std::string::npos) << e.what();
  }
  QuantSpec s = mx(ElementFormat::e4m3, ScaleRule::ceil);
  s.amax_floor = -1.f;
  EXPECT_THROW(validate_spec(s, 1, 64), mx8::Error);
  s.amax_floor = 0.f;
  s.blocking = Blocking{Granularity::block, 32, 16};
  EXPECT_THROW(validate_spec(s, 1, 64), mx8::Error);
  s.blocking = Blocking::tile(32);
  EXPECT_THROW(validate_spec(s, -1, 64), mx8::Error);
  EXPECT_NO_THROW(validate_spec(s, 0, 0));
  // Every entry point checks the spec, the reading ones too: an unknown element format would index
  // the decode table out of its range.
  QuantSpec unknown = mx(ElementFormat(99), ScaleRule::ceil);
  std::vector<float> out(64), grid(64);
  EXPECT_THROW(dequantize_ref(c.data(), sc.data(), 1, 64, unknown, out.data()), mx8::Error);
  EXPECT_THROW(scales_to_f32_grid(sc.data(), unknown, 1, 64, grid.data()), mx8::Error);
  EXPECT_THROW(quantize_ref(SourceType(7), x.data(), 1, 64, mx(ElementFormat::e4m3, ScaleRule::ceil),
                            c.data(), sc.data()),
               mx8::Error);
}

// Error bound of quantize -> dequantize, checked element by element on random data with outliers.
// For an element whose scaled value y = x / X is in range, RNE with M mantissa bits gives
//   |deq - x| <= 2^-(M+1) * |x|            when |y| is at least the element's smallest normal,
//   |deq - x| <= X * min_subnormal / 2     below it (a fixed absolute step),
// INT8 (fixed point, step 1/64): |deq - x| <= X / 128. A saturated element (|y| > max, floor rule only)
// dequantizes to exactly +-max * X. The fp32 rule's reciprocal is rounded, so its y carries one extra
// relative rounding (2^-24) and the bounds get a factor (1 + 2^-22).
TEST(QuantizeRef, RoundTripErrorWithinFormatBound) {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t rows = 37, cols = 300;
  std::vector<float> x(size_t(rows * cols));
  for (auto& v : x) v = normal(rng) * std::ldexp(1.f, int(rng() % 24) - 12);
  for (int i = 0; i < 50; ++i) x[rng() % x.size()] *= 1000.f;  // outliers
  const Blocking blockings[] = {Blocking::per_tensor(), Blocking::per_row(),  Blocking::tile(128),
                                Blocking::tile(32),     Blocking::block(128), Blocking::block(32)};
  for (ElementFormat f : {ElementFormat::e4m3, ElementFormat::e5m2, ElementFormat::e3m2, ElementFormat::e2m3,
                          ElementFormat::e2m1, ElementFormat::int8})
    for (ScaleRule r : {ScaleRule::ceil, ScaleRule::floor, ScaleRule::fp32})
      for (const Blocking& b : blockings) {
        SCOPED_TRACE(std::string(element_traits(f).name) + " " + scale_rule_name(r) + " " + blocking_name(b));
        QuantSpec s = mx(f, r, b);
        auto q = quantize(x, rows, cols, s);
        std::vector<float> back(x.size()), grid(q.scales.size());
        dequantize_ref(q.codes.data(), q.scales.data(), rows, cols, s, back.data());
        ScaleGrid g = scale_grid(b, rows, cols);
        std::vector<float> sg(size_t(g.rows * g.cols));
        scales_to_f32_grid(q.scales.data(), s, rows, cols, sg.data());
        const auto t = element_traits(f);
        const double slack = r == ScaleRule::fp32 ? 1.0 + 0x1p-22 : 1.0;
        int failures = 0;
        for (int64_t i = 0; i < rows * cols && failures < 5; ++i) {
          double X = sg[size_t((i / cols) / g.block_rows * g.cols + (i % cols) / g.block_cols)];
          double xv = x[size_t(i)], d = back[size_t(i)], y = std::fabs(xv) / X;
          double bound;
          if (y > t.max_normal * slack) {
            ASSERT_NE(r, ScaleRule::ceil) << "ceil never saturates";
            bound = std::fabs(xv) - t.max_normal * X;  // clipped to the max
            EXPECT_EQ(std::fabs(d), t.max_normal * X);
          } else if (f == ElementFormat::int8) {
            bound = X / 128 * slack;
          } else if (y >= t.min_normal) {
            bound = std::ldexp(std::fabs(xv), -(t.man_bits + 1)) * slack;
          } else {
            bound = X * t.min_subnormal / 2 * slack;
          }
          if (std::fabs(d - xv) > bound) {
            ++failures;
            ADD_FAILURE() << "x " << xv << " deq " << d << " scale " << X << " bound " << bound;
          }
        }
      }
}

TEST(QuantizeRef, EveryStorageHoldsTheSameScales) {
  // The same tensor quantized into each storage: identical codes, identical dequantization, and the
  // packed storages convert back to the plain UE8M0 grid byte for byte.
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 2.f);
  const int64_t rows = 150, cols = 200;
  std::vector<float> x(size_t(rows * cols));
  for (auto& v : x) v = normal(rng);
  for (Blocking b : {Blocking::tile(32), Blocking::tile(128), Blocking::block(128), Blocking::block(32),
                     Blocking::per_row(), Blocking::per_tensor()}) {
    SCOPED_TRACE(blocking_name(b));
    QuantSpec base = mx(ElementFormat::e4m3, ScaleRule::ceil, b);
    auto ref = quantize(x, rows, cols, base);
    std::vector<float> ref_back(x.size());
    dequantize_ref(ref.codes.data(), ref.scales.data(), rows, cols, base, ref_back.data());
    for (ScaleStorage st : {ScaleStorage::f32, ScaleStorage::ue8m0_packed4, ScaleStorage::ue8m0_blackwell}) {
      SCOPED_TRACE(scale_storage_name(st));
      QuantSpec s = base;
      s.storage = st;
      auto q = quantize(x, rows, cols, s);
      EXPECT_EQ(q.codes, ref.codes);
      std::vector<float> back(x.size());
      dequantize_ref(q.codes.data(), q.scales.data(), rows, cols, s, back.data());
      EXPECT_EQ(back, ref_back);
      std::vector<uint8_t> grid(ref.scales.size());
      convert_scales(q.scales.data(), st, grid.data(), ScaleStorage::ue8m0, b, rows, cols);
      EXPECT_EQ(grid, ref.scales);
    }
  }
}

TEST(QuantizeRef, NonSaturatingModeOnlyMattersWhereTheRuleOverflows) {
  // 480 under floor scales to 480 > 464: saturating gives 448 (0x7E), non-saturating NaN (0x7F/0xFF).
  // Under ceil the block max never overflows, so both modes agree.
  auto x = block(480.f, -480.f);
  QuantSpec f = mx(ElementFormat::e4m3, ScaleRule::floor);
  f.saturate = false;
  auto q = quantize(x, 1, 32, f);
  EXPECT_EQ(q.codes[0], 0x7F);
  EXPECT_EQ(q.codes[1], 0xFF);
  QuantSpec c = mx(ElementFormat::e4m3, ScaleRule::ceil);
  c.saturate = false;
  EXPECT_EQ(quantize(x, 1, 32, c).codes, quantize(x, 1, 32, mx(ElementFormat::e4m3, ScaleRule::ceil)).codes);
  // E5M2 under floor: X = 2^(8 - 15), and 480 * 2^7 = 61440 is the tie above 57344 that rounds up:
  // Inf when not saturating, 57344 when saturating (floor clips E5M2 blocks with significand >= 1.875).
  QuantSpec e = mx(ElementFormat::e5m2, ScaleRule::floor);
  EXPECT_EQ(quantize(x, 1, 32, e).codes[0], 0x7B);
  e.saturate = false;
  EXPECT_EQ(quantize(x, 1, 32, e).codes[0], 0x7C);
}

TEST(QuantizeRef, EmptyTensorsWriteNothingThroughNullBuffers) {
  // A tensor with no rows or no columns has no codes and no scales; callers (an empty vector's
  // data()) may pass null buffers, which must never reach memset/memcpy (UBSan flags that even with
  // a zero size, and the sanitizer run in CI runs this test).
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{0, 64}, {64, 0}, {0, 0}})
    for (ElementFormat f : {ElementFormat::e4m3, ElementFormat::e2m1})
      for (Blocking b : {Blocking::tile(32), Blocking::block(128), Blocking::per_row()})
        for (ScaleStorage st :
             {ScaleStorage::ue8m0, ScaleStorage::ue8m0_packed4, ScaleStorage::ue8m0_blackwell}) {
          QuantSpec s = mx(f, ScaleRule::ceil, b);
          s.storage = st;
          ASSERT_EQ(code_bytes(s, rows, cols), 0u);
          ASSERT_EQ(scale_bytes(s, rows, cols), 0u);
          quantize_ref(SourceType::f32, nullptr, rows, cols, s, nullptr, nullptr);
          dequantize_ref(nullptr, nullptr, rows, cols, s, nullptr);
        }
}

}  // namespace
