#include "backend/cuda/gemv_bench_util.h"

#include <cstdint>

#include "backend/cuda/cuda_check.h"

namespace mx8::cuda {
namespace {

__global__ void read_through_kernel(const uint4* p, size_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) *sink = acc;  // keeps the loads; practically never stores
}

}  // namespace

void l2_read_through(const void* buf, size_t bytes, cudaStream_t s) {
  static uint32_t* sink = nullptr;
  if (!sink) MX8_CUDA_CHECK(cudaMalloc(&sink, sizeof(uint32_t)));
  read_through_kernel<<<132 * 8, 512, 0, s>>>(static_cast<const uint4*>(buf), bytes / 16, sink);
  MX8_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mx8::cuda
