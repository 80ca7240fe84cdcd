// Helpers for the CUDA tests: skip without a GPU, RAII device buffers, poisoning, random data.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"

namespace mx8::cuda::test {

// Every GPU test starts with this: CI and the development machine have nvcc but no GPU.
#define MX8_REQUIRE_GPU()                                                                   \
  do {                                                                                      \
    if (!::mx8::cuda::device_available()) GTEST_SKIP() << "no CUDA device on this machine"; \
  } while (0)

template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    MX8_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), count ? count * sizeof(T) : 16));
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return ptr_; }
  size_t count() const { return count_; }
  void upload(const std::vector<T>& v) {
    MX8_CUDA_CHECK(cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> v(count_);
    MX8_CUDA_CHECK(cudaDeviceSynchronize());
    MX8_CUDA_CHECK(cudaMemcpy(v.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
  }
  // Fills every byte with `byte` so that unwritten outputs are caught (0xA5 is no likely result).
  void poison(uint8_t byte = 0xA5) {
    MX8_CUDA_CHECK(cudaMemset(ptr_, byte, count_ ? count_ * sizeof(T) : 16));
  }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// A fresh seed per test run (printed on failure through SCOPED_TRACE by the caller).
inline uint32_t fresh_seed() {
  return std::random_device{}();
}

// bf16 bit patterns of normal(0, sigma) values, with a sprinkling of outliers.
inline std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng, float sigma = 1.f) {
  std::normal_distribution<float> nd(0.f, sigma);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    float x = nd(rng);
    if (u(rng) < 0.002f) x *= 300.f;  // outliers set their block's scale
    uint32_t b;
    std::memcpy(&b, &x, 4);
    b += 0x7FFFu + ((b >> 16) & 1u);
    v[i] = static_cast<uint16_t>(b >> 16);
  }
  return v;
}

}  // namespace mx8::cuda::test
