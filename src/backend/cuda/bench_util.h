// Measurement helpers for the CUDA benchmarks (mx8 bench cuda-*): random device data, an L2
// flush, event timing with medians, and the device's copy bandwidth (the memory floor).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>

namespace mx8::cuda {

// n bf16 values ~ sigma * (sum of 4 uniforms - 2) * sqrt(3) (roughly normal), from a hash of (seed, i).
void fill_random_bf16(uint16_t* dst, size_t n, uint64_t seed, float sigma, cudaStream_t stream);

// dst[c * ld + r] = src[r * cols + c]: a row-major byte grid to the MN-major layout the GEMMs read.
void transpose_u8(const uint8_t* src, int rows, int cols, uint8_t* dst, int ld, cudaStream_t stream);

class GpuTimer {
 public:
  // flush_bytes: a buffer written before every timed run so that no operand stays in L2 (60 MB on
  // an H200; 512 MB is several times that).
  explicit GpuTimer(size_t flush_bytes = 512u << 20);
  ~GpuTimer();
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;

  // Median microseconds of `iters` runs of `fn` (enqueued on stream 0), each preceded by the flush
  // and bracketed by events; `warmup` untimed runs first.
  double median_us(const std::function<void()>& fn, int iters = 30, int warmup = 3);
  // Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written.
  double copy_bandwidth(size_t bytes = size_t{1} << 30);

 private:
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace mx8::cuda
