// GPU quantize/dequantize vs the scalar reference (mx8::format::quantize_ref / dequantize_ref):
// every code byte and every scale byte must be equal, on fresh random inputs with special values
// (NaN, Inf, zeros, subnormals, outliers), ragged shapes, and poisoned outputs.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/backend/cuda/quantize.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::cuda::test {
namespace {

namespace fmt = mx8::format;

// Random bf16 with special values planted: a NaN block, an Inf block, an all-zero block and
// bf16 subnormals, so every branch of the scale rules runs.
std::vector<uint16_t> tricky_bf16(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::vector<uint16_t> v = random_bf16(static_cast<size_t>(rows * cols), rng);
  std::uniform_int_distribution<int64_t> pick(0, rows * cols - 1);
  if (rows * cols > 1000) {
    v[pick(rng)] = 0x7FC0;                      // NaN
    v[pick(rng)] = 0xFF80;                      // -Inf
    v[pick(rng)] = 0x0001;                      // smallest subnormal
    v[pick(rng)] = 0x7F7F;                      // bf16 max
    v[pick(rng)] = 0xFFFF;                      // a negative NaN with the largest 16-bit magnitude
    v[pick(rng)] = 0x8001;                      // a negative subnormal
    v[pick(rng)] = 0x8000;                      // -0
    const int64_t z = pick(rng) / cols * cols;  // zero the start of a row (a whole 1x32 tile at least)
    for (int64_t i = z; i < std::min(z + 64, rows * cols); ++i) v[i] = 0;
    const int64_t s = pick(rng) / cols * cols;  // a run of subnormals and tiny normals
    for (int64_t i = s; i < std::min(s + 40, rows * cols); ++i)
      v[i] = static_cast<uint16_t>(0x0001 + i % 200);
  }
  return v;
}

std::vector<float> to_f32(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = fmt::bf16_to_f32(h[i]);
  return f;
}

struct Case {
  const char* name;
  fmt::QuantSpec spec;
  int64_t rows, cols;
  fmt::SourceType src = fmt::SourceType::bf16;
};

fmt::QuantSpec make_spec(fmt::ElementFormat e, fmt::ScaleRule r, fmt::Blocking b, fmt::ScaleStorage s,
                         float floor = 0.f, bool sat = true) {
  fmt::QuantSpec q;
  q.element = e;
  q.rule = r;
  q.blocking = b;
  q.storage = s;
  q.amax_floor = floor;
  q.saturate = sat;
  return q;
}

void run_case(const Case& c, uint32_t seed) {
  SCOPED_TRACE(std::string(c.name) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols) + " seed " +
               std::to_string(seed));
  std::mt19937 rng(seed);
  const std::vector<uint16_t> h = tricky_bf16(c.rows, c.cols, rng);
  const std::vector<float> f = to_f32(h);
  const void* host_src = c.src == fmt::SourceType::f32 ? static_cast<const void*>(f.data()) : h.data();
  const size_t nbytes_src = h.size() * (c.src == fmt::SourceType::f32 ? 4 : 2);
  const size_t ncodes = fmt::code_bytes(c.spec, c.rows, c.cols),
               nscales = fmt::scale_bytes(c.spec, c.rows, c.cols);
  std::vector<uint8_t> ref_codes(ncodes), ref_scales(nscales);
  fmt::quantize_ref(c.src, host_src, c.rows, c.cols, c.spec, ref_codes.data(), ref_scales.data());

  DeviceBuffer<uint8_t> d_src(nbytes_src), d_codes(ncodes), d_scales(nscales);
  MX8_CUDA_CHECK(cudaMemcpy(d_src.get(), host_src, nbytes_src, cudaMemcpyHostToDevice));
  d_codes.poison();
  d_scales.poison();
  quantize(c.src, d_src.get(), c.rows, c.cols, c.spec, d_codes.get(), d_scales.get(), nullptr);
  const std::vector<uint8_t> codes = d_codes.download(), scales = d_scales.download();
  size_t bad = 0;
  for (size_t i = 0; i < ncodes; ++i)
    if (codes[i] != ref_codes[i] && bad++ < 5)
      ADD_FAILURE() << "code " << i << ": gpu 0x" << std::hex << int(codes[i]) << " ref 0x"
                    << int(ref_codes[i]);
  for (size_t i = 0; i < nscales; ++i)
    if (scales[i] != ref_scales[i] && bad++ < 10)
      ADD_FAILURE() << "scale byte " << i << ": gpu 0x" << std::hex << int(scales[i]) << " ref 0x"
                    << int(ref_scales[i]);
  EXPECT_EQ(bad, 0u);

  // Dequantize from the reference codes: bit-exact f32 too (NaN compared as NaN).
  std::vector<float> ref_deq(static_cast<size_t>(c.rows * c.cols));
  fmt::dequantize_ref(ref_codes.data(), ref_scales.data(), c.rows, c.cols, c.spec, ref_deq.data());
  DeviceBuffer<float> d_deq(ref_deq.size());
  d_deq.poison();
  d_codes.upload(ref_codes);
  d_scales.upload(ref_scales);
  dequantize(d_codes.get(), d_scales.get(), c.rows, c.cols, c.spec, d_deq.get(), nullptr);
  const std::vector<float> deq = d_deq.download();
  size_t bad_deq = 0;
  for (size_t i = 0; i < deq.size(); ++i) {
    uint32_t a, b;
    std::memcpy(&a, &deq[i], 4);
    std::memcpy(&b, &ref_deq[i], 4);
    const bool both_nan = deq[i] != deq[i] && ref_deq[i] != ref_deq[i];
    if (a != b && !both_nan && bad_deq++ < 5)
      ADD_FAILURE() << "dequant " << i << ": gpu " << deq[i] << " ref " << ref_deq[i];
  }
  EXPECT_EQ(bad_deq, 0u);
}

using fmt::Blocking;
using fmt::ElementFormat;
using fmt::ScaleRule;
using fmt::ScaleStorage;

TEST(CudaQuantize, EveryGranularityRuleAndStorageMatchesReference) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  const std::vector<Case> cases = {
      {"act 1x128 e4m3 ceil ue8m0 (fast path)",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::tile(128), ScaleStorage::ue8m0), 77, 1024},
      {"act 1x128 ceil amax floor 1e-4 f32",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::tile(128), ScaleStorage::f32, 1e-4f), 33,
       640},
      {"1x128 ragged cols (fast path, partial tile)",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::tile(128), ScaleStorage::ue8m0), 19, 200},
      {"1x128 fp32 rule",
       make_spec(ElementFormat::e4m3, ScaleRule::fp32, Blocking::tile(128), ScaleStorage::f32), 40, 384},
      {"MXFP8 1x32 floor",
       make_spec(ElementFormat::e4m3, ScaleRule::floor, Blocking::tile(32), ScaleStorage::ue8m0), 65, 512},
      {"MXFP8 1x32 ceil packed4",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::tile(32), ScaleStorage::ue8m0_packed4), 21,
       352},
      {"MXFP8 1x32 blackwell",
       make_spec(ElementFormat::e4m3, ScaleRule::floor, Blocking::tile(32), ScaleStorage::ue8m0_blackwell),
       130, 256},
      {"e5m2 1x32 non-saturating",
       make_spec(ElementFormat::e5m2, ScaleRule::floor, Blocking::tile(32), ScaleStorage::ue8m0, 0.f, false),
       9, 96},
      {"e4m3 1x128 non-saturating floor",
       make_spec(ElementFormat::e4m3, ScaleRule::floor, Blocking::tile(128), ScaleStorage::ue8m0, 0.f, false),
       12, 256},
      {"weights 128x128 ceil f32",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::block(128), ScaleStorage::f32), 300, 520},
      {"weights 128x128 fp32 rule",
       make_spec(ElementFormat::e4m3, ScaleRule::fp32, Blocking::block(128), ScaleStorage::f32), 256, 384},
      {"weights 32x32 ue8m0",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::block(32), ScaleStorage::ue8m0), 70, 100},
      {"per-row", make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::per_row(), ScaleStorage::f32), 17,
       300},
      {"per-tensor",
       make_spec(ElementFormat::e4m3, ScaleRule::fp32, Blocking::per_tensor(), ScaleStorage::f32), 50, 222},
      {"MXFP4 e2m1 1x32",
       make_spec(ElementFormat::e2m1, ScaleRule::floor, Blocking::tile(32), ScaleStorage::ue8m0), 10, 128},
      {"MXFP6 e2m3 1x32",
       make_spec(ElementFormat::e2m3, ScaleRule::floor, Blocking::tile(32), ScaleStorage::ue8m0), 10, 96},
      {"MXFP6 e3m2 1x32",
       make_spec(ElementFormat::e3m2, ScaleRule::ceil, Blocking::tile(32), ScaleStorage::ue8m0), 10, 96},
      {"MXINT8 1x32",
       make_spec(ElementFormat::int8, ScaleRule::floor, Blocking::tile(32), ScaleStorage::ue8m0), 10, 96},
      {"f32 source 1x128 (generic path)",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::tile(128), ScaleStorage::ue8m0), 23, 384,
       fmt::SourceType::f32},
  };
  for (const Case& c : cases) run_case(c, seed);
}

// Shapes large enough that the streaming 1xK kernel's persistent grid makes several grid-stride
// passes, with a ragged last pass (the small shapes above finish in one).
TEST(CudaQuantize, StreamingQuantizerLargeShapesMatchReference) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  const std::vector<Case> cases = {
      {"act 1x128 ceil ue8m0, several passes",
       make_spec(ElementFormat::e4m3, ScaleRule::ceil, Blocking::tile(128), ScaleStorage::ue8m0), 4096, 2048},
      {"MXFP8 1x32 floor, several passes, ragged rows",
       make_spec(ElementFormat::e4m3, ScaleRule::floor, Blocking::tile(32), ScaleStorage::ue8m0), 2051, 4096},
  };
  for (const Case& c : cases) run_case(c, seed);
}

// The fused activation quantizer and the dual variant (whose transposed output must equal
// quantize_ref of X^T) on one shape, scales in `layout`.
void check_activation(int64_t rows, int64_t cols, bool ue8m0, ScaleRule rule, ScaleLayout layout,
                      uint32_t seed) {
  SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " ue8m0 " + std::to_string(ue8m0) +
               " rule " + std::to_string(static_cast<int>(rule)) + " layout " +
               std::to_string(static_cast<int>(layout)) + " seed " + std::to_string(seed));
  std::mt19937 rng(seed + static_cast<uint32_t>(rows));
  const std::vector<uint16_t> h = tricky_bf16(rows, cols, rng);
  const fmt::QuantSpec spec = make_spec(ElementFormat::e4m3, rule, Blocking::tile(128),
                                        ue8m0 ? ScaleStorage::ue8m0 : ScaleStorage::f32, 1e-4f);
  const size_t esz = ue8m0 ? 1 : 4;
  std::vector<uint8_t> ref_codes(rows * cols), ref_scales(rows * (cols / 128) * esz);
  fmt::quantize_ref(fmt::SourceType::bf16, h.data(), rows, cols, spec, ref_codes.data(), ref_scales.data());
  // X^T and its reference.
  std::vector<uint16_t> ht(h.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) ht[c * rows + r] = h[r * cols + c];
  const int64_t gt = (rows + 127) / 128;
  std::vector<uint8_t> ref_codes_t(rows * cols), ref_scales_t(cols * gt * esz);
  fmt::quantize_ref(fmt::SourceType::bf16, ht.data(), cols, rows, spec, ref_codes_t.data(),
                    ref_scales_t.data());

  const bool mn = layout == ScaleLayout::kMnMajor;
  const int64_t ld = mn ? sa_ld(static_cast<int>(rows)) : rows;
  DeviceBuffer<uint16_t> d_src(h.size());
  d_src.upload(h);
  DeviceBuffer<uint8_t> d_codes(rows * cols), d_scales(ld * (cols / 128) * esz), d_codes_t(rows * cols),
      d_scales_t(cols * gt * esz);
  for (int variant = 0; variant < 2; ++variant) {
    d_codes.poison();
    d_scales.poison();
    d_codes_t.poison();
    d_scales_t.poison();
    if (variant == 0)
      quantize_act_1x128(d_src.get(), rows, cols, rule, ue8m0, 1e-4f, layout, d_codes.get(), d_scales.get(),
                         nullptr);
    else
      quantize_act_1x128_dual(d_src.get(), rows, cols, rule, ue8m0, 1e-4f, layout, d_codes.get(),
                              d_scales.get(), d_codes_t.get(), d_scales_t.get(), nullptr);
    const auto codes = d_codes.download();
    const auto scales = d_scales.download();
    EXPECT_EQ(0, std::memcmp(codes.data(), ref_codes.data(), codes.size())) << "variant " << variant;
    size_t bad = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t kb = 0; kb < cols / 128; ++kb) {
        const int64_t at = mn ? kb * ld + r : r * (cols / 128) + kb;
        if (std::memcmp(&scales[at * esz], &ref_scales[(r * (cols / 128) + kb) * esz], esz) != 0) ++bad;
      }
    EXPECT_EQ(bad, 0u) << "scales, variant " << variant;
    if (variant == 1) {
      const auto codes_t = d_codes_t.download();
      const auto scales_t = d_scales_t.download();
      EXPECT_EQ(0, std::memcmp(codes_t.data(), ref_codes_t.data(), codes_t.size())) << "transposed codes";
      // X^T's scales in the same layout as X's: MN-major is [ceil(rows/128)][cols] (X^T has cols rows).
      size_t bad_t = 0;
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t kb = 0; kb < gt; ++kb) {
          const int64_t at = mn ? kb * cols + c : c * gt + kb;
          if (std::memcmp(&scales_t[at * esz], &ref_scales_t[(c * gt + kb) * esz], esz) != 0) ++bad_t;
        }
      EXPECT_EQ(bad_t, 0u) << "transposed scales";
    }
  }
}

TEST(CudaQuantize, ActivationQuantizerAndTransposedVariantMatchReference) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  // 131 and 300: rows % 8 != 0 (the transposed codes go out byte by byte); 200: a ragged last tile
  // whose rows are still whole 8-row segments; 208 and 256: rows % 16 == 0, X^T through shared
  // memory (208: five of the last tile's eight 16-row chunks).
  for (const bool ue8m0 : {true, false})
    for (const int64_t rows :
         {int64_t{1}, int64_t{131}, int64_t{200}, int64_t{208}, int64_t{256}, int64_t{300}})
      check_activation(rows, 384, ue8m0, ScaleRule::ceil, ScaleLayout::kMnMajor, seed);
  check_activation(131, 640, true, ScaleRule::ceil, ScaleLayout::kRowMajor, seed);
  check_activation(256, 640, false, ScaleRule::ceil, ScaleLayout::kRowMajor, seed);
  check_activation(200, 384, false, ScaleRule::fp32, ScaleLayout::kMnMajor, seed);
}

// Large enough for many blocks of the tile kernels and MN-major scale rows far from the first (a
// row count that is not a power of two, 56 groups per row).
TEST(CudaQuantize, LargeActivationShapesMatchReference) {
  MX8_REQUIRE_GPU();
  const uint32_t seed = fresh_seed();
  check_activation(2304, 7168, true, ScaleRule::ceil, ScaleLayout::kMnMajor, seed);
  check_activation(1000, 2048, false, ScaleRule::ceil, ScaleLayout::kMnMajor, seed);
  // An odd row count past many 64- and 128-row blocks: the tile kernel's last lane holds one valid
  // row, so its scales take the per-row stores instead of the vector store.
  check_activation(4097, 1152, true, ScaleRule::ceil, ScaleLayout::kMnMajor, seed);
  check_activation(4097, 1152, false, ScaleRule::ceil, ScaleLayout::kRowMajor, seed);
}

TEST(CudaQuantize, RejectsBadArguments) {
  // Argument checks run before any device work, so this needs no GPU.
  EXPECT_THROW(quantize_act_1x128(nullptr, 4, 100, fmt::ScaleRule::ceil, true, 0.f, ScaleLayout::kRowMajor,
                                  nullptr, nullptr, nullptr),
               mx8::Error);
  EXPECT_THROW(quantize_act_1x128(nullptr, 4, 128, fmt::ScaleRule::fp32, true, 0.f, ScaleLayout::kRowMajor,
                                  nullptr, nullptr, nullptr),
               mx8::Error);
}

}  // namespace
}  // namespace mx8::cuda::test
