// Material shared by the GEMV tests (gemv_group_test.cpp, gemv_skinny_test.cpp, gemv_swiglu_test.cpp):
// their fixture, random weights of any format with their exact decode, normal vectors, and device
// copies.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "mx8/backend/backend.h"
#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::gemv_test {

using cuda::test::DeviceBuffer;

// The suites' fixture: skips without a GPU, a fresh seed per test (in every failure message, to
// reproduce it), an rng seeded with it, and the backend the suite runs on (kCuda) or checks against.
template <bool kCuda>
class GemvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MX8_REQUIRE_GPU();
    backend = kCuda ? make_cuda_backend(0) : make_cpu_backend(0);
    seed = cuda::test::fresh_seed();
    rng.seed(seed);
  }
  std::unique_ptr<Backend> backend;
  uint32_t seed = 0;
  std::mt19937 rng;
};

struct HostW {
  WeightFormat f;
  ScaleType st;
  int64_t n, k;
  std::vector<uint8_t> data, scales;
  std::vector<float> deq;  // [n][k] exactly decoded
};

inline HostW make_weight(WeightFormat f, ScaleType st, int64_t n, int64_t k, std::mt19937& rng) {
  HostW w{f, st, n, k, {}, {}, std::vector<float>(size_t(n * k))};
  w.data.resize(weight_data_bytes(f, n, k));
  w.scales.resize(weight_scale_bytes(f, st, n, k));
  std::normal_distribution<float> nd(0.0f, 0.05f);
  if (f == WeightFormat::f32) {
    for (auto& v : w.deq) v = nd(rng);
    std::memcpy(w.data.data(), w.deq.data(), w.data.size());
    return w;
  }
  if (f == WeightFormat::bf16) {
    auto* d = reinterpret_cast<uint16_t*>(w.data.data());
    for (size_t i = 0; i < w.deq.size(); ++i) {
      d[i] = format::f32_to_bf16_rne(nd(rng));
      w.deq[i] = format::bf16_to_f32(d[i]);
    }
    return w;
  }
  std::uniform_int_distribution<int> code(0, 255), ex(127 - 9, 127 - 3);
  for (auto& c : w.data) {
    do c = uint8_t(code(rng));
    while ((c & 0x7F) == 0x7F);  // no NaN codes here (the NaN tests make their own)
  }
  const bool f32s = f == WeightFormat::fp8_block && st == ScaleType::f32;
  std::uniform_real_distribution<float> fs(0.001f, 0.03f);
  const size_t ns = f32s ? w.scales.size() / 4 : w.scales.size();
  std::vector<float> sv(ns);
  for (size_t i = 0; i < ns; ++i) {
    if (f32s) {
      sv[i] = fs(rng);  // DeepSeek's weight_scale_inv: not a power of two
    } else {
      w.scales[i] = uint8_t(ex(rng));
      sv[i] = format::ue8m0_to_f32(w.scales[i]);
    }
  }
  if (f32s) std::memcpy(w.scales.data(), sv.data(), ns * 4);
  const int64_t kb = f == WeightFormat::mxfp8 ? (k + 31) / 32 : (k + 127) / 128;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const size_t si = f == WeightFormat::mxfp8 ? size_t(r * kb + c / 32) : size_t((r / 128) * kb + c / 128);
      w.deq[size_t(r * k + c)] = format::e4m3_to_f32(w.data[size_t(r * k + c)]) * sv[si];
    }
  return w;
}

inline std::vector<float> normal(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

template <typename T>
std::unique_ptr<DeviceBuffer<T>> dev(const std::vector<T>& v) {
  auto b = std::make_unique<DeviceBuffer<T>>(v.size());
  if (!v.empty()) b->upload(v);
  return b;
}

}  // namespace mx8::backend::gemv_test
