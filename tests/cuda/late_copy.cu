#include "cuda/late_copy.h"

#include <cstdint>
#include <stdexcept>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/ptx/griddep.cuh"

namespace mx8::cuda::test {
namespace {

constexpr int kMaxCopies = 4;
struct Copies {
  LateCopy c[kMaxCopies];
  int n;
};

__device__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void late_copy_kernel(Copies copies, uint64_t delay_ns) {
  ptx::griddep_launch_dependents();
  const uint64_t t0 = global_ns();
  while (global_ns() - t0 < delay_ns) __nanosleep(1000);
  for (int i = 0; i < copies.n; ++i) {
    const uint4* src = static_cast<const uint4*>(copies.c[i].src);
    uint4* dst = static_cast<uint4*>(copies.c[i].dst);
    for (size_t j = threadIdx.x; j < copies.c[i].bytes / 16; j += blockDim.x) dst[j] = src[j];
  }
}

}  // namespace

void launch_late_copies(const std::vector<LateCopy>& copies, int delay_us, cudaStream_t s) {
  if (copies.size() > kMaxCopies) throw std::invalid_argument("launch_late_copies: at most 4 copies");
  Copies c{};
  for (const LateCopy& x : copies) {
    if (x.bytes % 16 != 0) throw std::invalid_argument("launch_late_copies: bytes must be a multiple of 16");
    c.c[c.n++] = x;
  }
  late_copy_kernel<<<1, 256, 0, s>>>(c, uint64_t(delay_us) * 1000);
  MX8_CUDA_CHECK(cudaGetLastError());
}

}  // namespace mx8::cuda::test
