// mx8::cpu::quantize / dequantize against the scalar references, bit for bit, on every ISA this
// machine runs; and the SIMD element encoders against format::encode_element on every bf16 and f16
// pattern and a structured f32 sweep.
#include "mx8/backend/cpu/quantize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/quantize_kernels.h"
#include "backend_cpu/isa_list.h"
#include "mx8/error.h"
#include "mx8/format/scale_rule.h"

namespace mx8::cpu {
namespace {

using format::Blocking;
using format::ElementFormat;
using format::QuantSpec;
using format::ScaleRule;
using format::ScaleStorage;
using format::SourceType;

std::vector<const detail::QuantKernels*> all_kernels() {
  std::vector<const detail::QuantKernels*> k{&detail::quant_kernels_scalar()};
#if defined(__x86_64__)
  if (isa_supported(Isa::avx2)) k.push_back(&detail::quant_kernels_avx2());
#elif defined(__aarch64__)
  k.push_back(&detail::quant_kernels_neon());
#endif
  return k;
}

// The whole-tensor tests compare results only; this holds which kernels each ISA gets.
TEST(QuantizeKernels, EachIsaGetsItsKernels) {
  EXPECT_EQ(&detail::quant_kernels_for(Isa::scalar), &detail::quant_kernels_scalar());
#if defined(__x86_64__)
  EXPECT_EQ(&detail::quant_kernels_for(Isa::avx2), &detail::quant_kernels_avx2());
  EXPECT_EQ(&detail::quant_kernels_for(Isa::avx512), &detail::quant_kernels_avx2());
#elif defined(__aarch64__)
  EXPECT_EQ(&detail::quant_kernels_for(Isa::neon), &detail::quant_kernels_neon());
#endif
}

// ---- element encoders on exhaustive 16-bit inputs ----

void check_encode_16bit(SourceType t) {
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  std::vector<uint8_t> got(65536);
  // 1 and powers of two are what the pow2 rules use; 0.7 is an fp32-rule reciprocal; 2^-130 makes
  // products subnormal; 2^100 makes everything overflow.
  const float inv_scales[] = {1.f, 0.125f, 32.f, 0.7f, std::ldexp(1.f, -130), std::ldexp(1.f, 100)};
  for (const auto* k : all_kernels())
    for (ElementFormat f : {ElementFormat::e4m3, ElementFormat::e5m2})
      for (bool sat : {true, false})
        for (float inv : inv_scales) {
          // Odd start and length: the SIMD body, and the scalar head/tail, both run.
          ASSERT_TRUE(k->encode(t, all.data(), 3, 65535, inv, f, sat, got.data()));
          for (int i = 3; i < 65535; ++i) {
            float x = t == SourceType::bf16 ? format::bf16_to_f32(all[i]) : format::f16_to_f32(all[i]);
            uint8_t want = format::encode_element(f, x * inv, sat);
            ASSERT_EQ(int(got[i]), int(want)) << "pattern 0x" << std::hex << i << " inv " << inv << " sat "
                                              << sat << " format " << format::element_traits(f).name;
          }
        }
}

TEST(QuantizeKernels, EncodeEveryBf16Pattern) {
  check_encode_16bit(SourceType::bf16);
}
TEST(QuantizeKernels, EncodeEveryF16Pattern) {
  check_encode_16bit(SourceType::f16);
}

TEST(QuantizeKernels, EncodeF32StructuredSweep) {
  // Every sign and exponent, with the mantissas where rounding decides: around the round bit of
  // E4M3 (bit 19) and E5M2 (bit 20), the extremes, and some random ones.
  std::vector<uint32_t> mants = {0,        1,        2,        0x7FFFF,  0x80000,  0x80001,  0xFFFFF,
                                 0x100000, 0x17FFFF, 0x180000, 0x180001, 0x1FFFFF, 0x200000, 0x3FFFFF,
                                 0x400000, 0x400001, 0x5FFFFF, 0x600000, 0x7FFFFE, 0x7FFFFF};
  std::mt19937 rng(1);
  for (int i = 0; i < 12; ++i) mants.push_back(rng() & 0x7FFFFF);
  std::vector<float> xs;
  for (uint32_t sign = 0; sign < 2; ++sign)
    for (uint32_t e = 0; e < 256; ++e)
      for (uint32_t m : mants) xs.push_back(format::f32_from_bits((sign << 31) | (e << 23) | m));
  std::vector<uint8_t> got(xs.size());
  for (const auto* k : all_kernels())
    for (ElementFormat f : {ElementFormat::e4m3, ElementFormat::e5m2})
      for (bool sat : {true, false}) {
        ASSERT_TRUE(k->encode(SourceType::f32, xs.data(), 0, int64_t(xs.size()), 1.f, f, sat, got.data()));
        for (size_t i = 0; i < xs.size(); ++i)
          ASSERT_EQ(int(got[i]), int(format::encode_element(f, xs[i], sat)))
              << "f32 0x" << std::hex << format::f32_bits(xs[i]) << " sat " << sat;
      }
}

TEST(QuantizeKernels, AmaxPropagatesNanAndMatchesScalar) {
  std::mt19937 rng(2);
  for (const auto* k : all_kernels())
    for (SourceType t : {SourceType::f32, SourceType::bf16, SourceType::f16})
      for (int trial = 0; trial < 200; ++trial) {
        std::vector<uint32_t> raw(1 + rng() % 100);
        for (auto& v : raw) v = rng();
        if (trial % 3 == 0) raw[rng() % raw.size()] = t == SourceType::f32 ? 0xFFC00001u : 0xFFC1u;  // -NaN
        std::vector<uint16_t> h(raw.size());
        for (size_t i = 0; i < raw.size(); ++i) h[i] = uint16_t(raw[i]);
        const void* row = t == SourceType::f32 ? static_cast<const void*>(raw.data()) : h.data();
        uint32_t want = detail::quant_kernels_scalar().amax(t, row, 0, int64_t(raw.size()), 0);
        uint32_t got = k->amax(t, row, 0, int64_t(raw.size()), 0);
        // Same value, or both NaN (NaN payloads may differ; only "non-finite" matters to the scale).
        if (want > 0x7F800000u)
          EXPECT_GT(got, 0x7F800000u);
        else
          EXPECT_EQ(got, want);
      }
}

// ---- whole-tensor quantize / dequantize ----

// Source data with the cases that break fast paths: NaN, Inf, signed zeros, subnormals of the source
// type, huge values, all-zero blocks, and rows of very different magnitude.
std::vector<uint8_t> make_source(SourceType t, int64_t rows, int64_t cols, uint32_t seed, bool specials) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    float row_scale = std::ldexp(1.f, int(rng() % 40) - 20);
    for (int64_t c = 0; c < cols; ++c) v[r * cols + c] = normal(rng) * row_scale;
  }
  if (specials && !v.empty()) {
    // A zero rectangle (whole blocks of zeros for most blockings), then scattered specials.
    for (int64_t r = 0; r < std::min<int64_t>(rows, 40); ++r)
      for (int64_t c = 0; c < std::min<int64_t>(cols, 70); ++c) v[r * cols + c] = (c & 1) ? -0.f : 0.f;
    const float specials_f32[] = {NAN,   -NAN,  INFINITY, -INFINITY, 1e-40f, -1e-45f, 3e38f,
                                  448.f, 464.f, -57344.f, 61440.f,   6e-8f,  1e-5f};
    for (int i = 0; i < 12; ++i) v[rng() % v.size()] = specials_f32[rng() % std::size(specials_f32)];
  }
  std::vector<uint8_t> out(v.size() * (t == SourceType::f32 ? 4 : 2));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == SourceType::f32) {
      std::memcpy(out.data() + 4 * i, &v[i], 4);
    } else {
      uint16_t h =
          t == SourceType::bf16 ? uint16_t(format::f32_bits(v[i]) >> 16) : format::f32_to_f16_rne(v[i]);
      if (specials && rng() % 97 == 0) h = uint16_t(rng() % 0x400 | (rng() & 0x8000));  // a 16-bit subnormal
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
  }
  return out;
}

std::string describe(const QuantSpec& s, SourceType t, int64_t rows, int64_t cols) {
  const char* src = t == SourceType::f32 ? "f32" : t == SourceType::bf16 ? "bf16" : "f16";
  return std::string(src) + " -> " + format::element_traits(s.element).name + " rule " +
         format::scale_rule_name(s.rule) + " " + format::blocking_name(s.blocking) + " " +
         format::scale_storage_name(s.storage) + (s.saturate ? " sat" : " nosat") + " amax_floor " +
         std::to_string(s.amax_floor) + " shape " + std::to_string(rows) + "x" + std::to_string(cols) +
         " isa " + isa_name(active_isa());
}

// Returns false (and records a failure) when quantize or dequantize differ from the reference.
void check_against_ref(SourceType t, const std::vector<uint8_t>& src, int64_t rows, int64_t cols,
                       const QuantSpec& spec, ThreadPool* pool) {
  const std::string what = describe(spec, t, rows, cols);
  const size_t cb = format::code_bytes(spec, rows, cols), sb = format::scale_bytes(spec, rows, cols);
  // Poisoned outputs: bytes a path forgets to write show up as differences.
  // At least one byte each: an empty vector's data() is null, which memset/memcpy must not get even
  // for zero bytes (UBSan).
  std::vector<uint8_t> codes_ref(cb + 1, 0xA5), scales_ref(sb + 1, 0x5A), codes(cb + 1, 0x3C),
      scales(sb + 1, 0xC3);
  format::quantize_ref(t, src.data(), rows, cols, spec, codes_ref.data(), scales_ref.data());
  quantize(t, src.data(), rows, cols, spec, codes.data(), scales.data(), pool);
  for (size_t i = 0; i < cb; ++i)
    ASSERT_EQ(int(codes[i]), int(codes_ref[i]))
        << "code byte " << i << " (row " << i / format::code_row_bytes(spec.element, cols) << ") of " << what;
  for (size_t i = 0; i < sb; ++i)
    ASSERT_EQ(int(scales[i]), int(scales_ref[i])) << "scale byte " << i << " of " << what;

  std::vector<float> deq_ref(size_t(rows * cols) + 1), deq(size_t(rows * cols) + 1, 1234.f);
  format::dequantize_ref(codes_ref.data(), scales_ref.data(), rows, cols, spec, deq_ref.data());
  dequantize(codes_ref.data(), scales_ref.data(), rows, cols, spec, deq.data(), pool);
  for (size_t i = 0; i < size_t(rows * cols); ++i) {
    if (std::isnan(deq_ref[i]))
      ASSERT_TRUE(std::isnan(deq[i])) << "dequantized element " << i << " of " << what;
    else
      ASSERT_EQ(format::f32_bits(deq[i]), format::f32_bits(deq_ref[i]))
          << "dequantized element " << i << " of " << what;
  }
}

const Blocking kBlockings[] = {Blocking::per_tensor(), Blocking::per_row(),  Blocking::tile(128),
                               Blocking::tile(32),     Blocking::block(128), Blocking::block(32),
                               Blocking::tile(48)};
const ScaleStorage kStorages[] = {ScaleStorage::f32, ScaleStorage::ue8m0, ScaleStorage::ue8m0_packed4,
                                  ScaleStorage::ue8m0_blackwell};

bool spec_valid(const QuantSpec& s, int64_t rows, int64_t cols) {
  try {
    format::validate_spec(s, rows, cols);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// The hot cases in full: E4M3/E5M2 from every source, every blocking and storage and rule, on a
// ragged shape (neither dimension a multiple of any block; two stripes of 128-row blocks), with 2
// threads. One test per ISA so that each stays short under the sanitizers.
void check_hot_cases(Isa isa) {
  if (!isa_supported(isa)) GTEST_SKIP() << isa_name(isa) << " is not supported by this CPU";
  ScopedIsa scoped(isa);
  ThreadPool pool(2);
  const int64_t rows = 133, cols = 150;
  for (SourceType t : {SourceType::f32, SourceType::bf16, SourceType::f16}) {
    auto src = make_source(t, rows, cols, 11 + int(t), true);
    for (ElementFormat f : {ElementFormat::e4m3, ElementFormat::e5m2})
      for (const Blocking& b : kBlockings)
        for (ScaleStorage st : kStorages)
          for (ScaleRule rule : {ScaleRule::ceil, ScaleRule::floor, ScaleRule::fp32}) {
            QuantSpec s{f, rule, b, st, rule != ScaleRule::floor, rule == ScaleRule::ceil ? 1e-4f : 0.f};
            if (!spec_valid(s, rows, cols)) continue;
            check_against_ref(t, src, rows, cols, s, &pool);
            if (::testing::Test::HasFatalFailure()) return;
          }
  }
}

TEST(Quantize, HotCasesMatchReferenceScalar) {
  check_hot_cases(Isa::scalar);
}
TEST(Quantize, HotCasesMatchReferenceAvx2) {
  check_hot_cases(Isa::avx2);
}
TEST(Quantize, HotCasesMatchReferenceAvx512) {
  check_hot_cases(Isa::avx512);
}
TEST(Quantize, HotCasesMatchReferenceNeon) {
  check_hot_cases(Isa::neon);
}

// Random specs over every element format, with shapes from tiny to a few blocks, single-threaded
// and threaded, fresh data each time.
TEST(Quantize, RandomSpecsAndShapesMatchReference) {
  std::mt19937 rng(12345);
  ThreadPool pool(3);
  const int64_t shapes[][2] = {{1, 1},    {1, 33},   {3, 1},    {0, 7},   {5, 0},
                               {31, 129}, {64, 256}, {129, 31}, {7, 513}, {260, 40}};
  for (Isa isa : testing::runnable_isas()) {
    ScopedIsa scoped(isa);
    for (int trial = 0; trial < 120; ++trial) {
      QuantSpec s;
      s.element = ElementFormat(rng() % format::kElementFormatCount);
      s.rule = ScaleRule(rng() % 3);
      s.blocking = kBlockings[rng() % std::size(kBlockings)];
      s.storage = s.rule == ScaleRule::fp32 ? ScaleStorage::f32 : kStorages[rng() % std::size(kStorages)];
      s.saturate = rng() % 4 != 0;
      s.amax_floor = rng() % 3 == 0 ? 1e-4f : 0.f;
      const auto& shape = shapes[rng() % std::size(shapes)];
      if (!spec_valid(s, shape[0], shape[1])) continue;
      SourceType t = SourceType(rng() % 3);
      auto src = make_source(t, shape[0], shape[1], rng(), rng() % 2 == 0);
      check_against_ref(t, src, shape[0], shape[1], s, trial % 2 ? &pool : nullptr);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Quantize, MalformedSpecThrows) {
  QuantSpec s;
  s.rule = ScaleRule::fp32;
  s.storage = ScaleStorage::ue8m0;  // fp32 scales are not powers of two
  std::vector<float> x(16, 1.f);
  std::vector<uint8_t> codes(16), scales(64);
  EXPECT_THROW(quantize(SourceType::f32, x.data(), 1, 16, s, codes.data(), scales.data(), nullptr), Error);
}

}  // namespace
}  // namespace mx8::cpu
