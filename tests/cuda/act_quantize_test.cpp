// The runtime's activation quantizer (quantize_fp8_act: the FP8 GEMMs' input for prompt steps and
// batched decode) against the scalar reference quantizer (format::quantize_ref), byte for byte: E4M3
// codes with `ceil` scales, 1x128 blocks with UE8M0 or f32 scales (fp8_block weights) and 1x32 UE8M0
// blocks (mxfp8), written MN-major ([k / block][ld], ld = sa_ld(m)) for the GEMMs' TMA. Inputs carry
// what every branch of the encode and the scale rule sees: NaN (both signs), +-Inf, -0, f32 subnormals,
// an all-zero block, values that land exactly on E4M3 rounding ties once scaled, and blocks whose
// magnitudes span 2^-100 .. 2^100. Outputs start poisoned. Skips without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/backend_cuda.cuh"
#include "cuda/cuda_test_util.h"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::backend {
namespace {

using cuda::test::DeviceBuffer;

// Normal values scaled per 32-wide block by 2^e, e in [-100, 100], with the special values planted past
// row 0's first 256 values, which hold: an E4M3 tie block (amax 448, so the scale is 1, then every
// rounding tie between 1 and 2, 1 + (2j + 1) / 16, and their negatives, which round to even), an
// all-zero 1x32 block, moderate values up to 128 columns, then (k >= 256) an all-zero 1x128 block.
std::vector<float> tricky_rows(int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> ex(-100, 100);
  std::vector<float> x(size_t(m * k));
  for (int64_t b = 0; b < m * k / 32; ++b) {
    const float s = std::ldexp(1.0f, ex(rng));
    for (int64_t i = 0; i < 32; ++i) x[size_t(b * 32 + i)] = nd(rng) * s;
  }
  x[0] = 448.0f;
  for (int j = 0; j < 8; ++j) {
    x[size_t(1 + j)] = 1.0f + float(2 * j + 1) / 16.0f;
    x[size_t(9 + j)] = -(1.0f + float(2 * j + 1) / 16.0f);
  }
  for (int64_t i = 17; i < 32; ++i) x[size_t(i)] = 0.5f;
  for (int64_t i = 32; i < 64; ++i) x[size_t(i)] = 0.0f;
  for (int64_t i = 64; i < 128; ++i) x[size_t(i)] = 10.0f * nd(rng);
  for (int64_t i = 128; i < 256 && i < k; ++i) x[size_t(i)] = 0.0f;
  auto bits = [](uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  };
  if (m * k > 512) {
    std::uniform_int_distribution<int64_t> pick(256, m * k - 1);
    x[size_t(pick(rng))] = std::numeric_limits<float>::quiet_NaN();
    x[size_t(pick(rng))] = bits(0xFFC00001u);  // a negative NaN with a payload
    x[size_t(pick(rng))] = std::numeric_limits<float>::infinity();
    x[size_t(pick(rng))] = -std::numeric_limits<float>::infinity();
    x[size_t(pick(rng))] = -0.0f;
    x[size_t(pick(rng))] = bits(0x00000001u);  // the smallest f32 subnormal
    x[size_t(pick(rng))] = bits(0x807FFFFFu);  // the largest negative subnormal
  }
  return x;
}

class ActQuantize : public ::testing::Test {
 protected:
  void SetUp() override {
    MX8_REQUIRE_GPU();
    gpu = make_cuda_backend(0);  // the device and the backend's kernels' settings
    seed = cuda::test::fresh_seed();
    rng.seed(seed);
  }
  std::unique_ptr<Backend> gpu;
  uint32_t seed = 0;
  std::mt19937 rng;
};

TEST_F(ActQuantize, EqualsTheReferenceQuantizerByteForByte) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  struct Fmt {
    WeightFormat f;
    ScaleType st;
    int block;
  };
  const Fmt fmts[] = {{WeightFormat::fp8_block, ScaleType::ue8m0, 128},
                      {WeightFormat::fp8_block, ScaleType::f32, 128},
                      {WeightFormat::mxfp8, ScaleType::ue8m0, 32}};
  for (const Fmt& fm : fmts)
    for (const int64_t k : {128, 640, 4096})
      for (const int64_t m : {1, 5, 37}) {
        const std::string what = std::string(weight_format_name(fm.f)) +
                                 (fm.st == ScaleType::f32 ? "/f32 scales" : "") + " k " + std::to_string(k) +
                                 " m " + std::to_string(m);
        const std::vector<float> x = tricky_rows(m, k, rng);
        const int ld = mx8::cuda::sa_ld(int(m));
        const size_t sb = fm.st == ScaleType::f32 ? 4 : 1, nb = size_t(k / fm.block);
        DeviceBuffer<float> dx(x.size());
        dx.upload(x);
        DeviceBuffer<uint8_t> codes(size_t(m * k)), scales(nb * size_t(ld) * sb);
        codes.poison(0xEE);
        scales.poison(0xEE);
        const WeightView w{fm.f, 16, k, nullptr, nullptr, fm.st};
        cuda_impl::quantize_fp8_act(w, dx.get(), nullptr, nullptr, 0.0f, m, codes.get(), scales.get(),
                                    nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;

        format::QuantSpec spec;
        spec.blocking = format::Blocking::tile(fm.block);
        spec.storage = fm.st == ScaleType::f32 ? format::ScaleStorage::f32 : format::ScaleStorage::ue8m0;
        std::vector<uint8_t> ref_codes(size_t(m * k)), ref_scales(format::scale_bytes(spec, m, k));
        format::quantize_ref(format::SourceType::f32, x.data(), m, k, spec, ref_codes.data(),
                             ref_scales.data());
        const std::vector<uint8_t> got_codes = codes.download(), got_scales = scales.download();
        for (size_t i = 0; i < ref_codes.size(); ++i)
          ASSERT_EQ(int(got_codes[i]), int(ref_codes[i]))
              << what << ": code of row " << i / size_t(k) << " column " << i % size_t(k) << " (x = " << x[i]
              << ")";
        for (int64_t row = 0; row < m; ++row)
          for (size_t b = 0; b < nb; ++b)
            ASSERT_EQ(0, std::memcmp(&got_scales[(b * size_t(ld) + size_t(row)) * sb],
                                     &ref_scales[(size_t(row) * nb + b) * sb], sb))
                << what << ": scale of row " << row << " block " << b;
      }
}

}  // namespace
}  // namespace mx8::backend
