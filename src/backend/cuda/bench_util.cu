#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/bench_util.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/kernel_clock.h"
#include "backend/cuda/ptx/mbarrier.cuh"
#include "backend/cuda/ptx/tma.cuh"
#include "backend/cuda/tensor_map.h"
#include "mx8/error.h"

namespace mx8::cuda {
namespace {

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__global__ void fill_random_bf16_kernel(uint16_t* dst, size_t n, uint64_t seed, float sigma) {
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = mix64(seed * 0x9E3779B97F4A7C15ull + i);
    float s = 0.f;
    for (int j = 0; j < 4; ++j) s += static_cast<float>((h >> (16 * j)) & 0xFFFF) * (1.f / 65536.f);
    const float x = (s - 2.f) * 1.7320508f * sigma;
    uint32_t b = __float_as_uint(x);
    b += 0x7FFFu + ((b >> 16) & 1u);
    dst[i] = static_cast<uint16_t>(b >> 16);
  }
}

__global__ void transpose_u8_kernel(const uint8_t* src, int rows, int cols, uint8_t* dst, int ld) {
  const int64_t n = static_cast<int64_t>(rows) * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    dst[c * ld + r] = src[i];
  }
}

}  // namespace

void transpose_u8(const uint8_t* src, int rows, int cols, uint8_t* dst, int ld, cudaStream_t stream) {
  transpose_u8_kernel<<<132 * 8, 256, 0, stream>>>(src, rows, cols, dst, ld);
  MX8_CUDA_CHECK(cudaGetLastError());
}

void fill_random_bf16(uint16_t* dst, size_t n, uint64_t seed, float sigma, cudaStream_t stream) {
  fill_random_bf16_kernel<<<132 * 16, 256, 0, stream>>>(dst, n, seed, sigma);
  MX8_CUDA_CHECK(cudaGetLastError());
}

namespace {

// Four independent 16-byte loads per thread in flight, then the next four. kStream: loads that L2
// keeps first in line for eviction (read_once, the plain streaming read a GEMV's weight traffic is
// compared with); plain loads for the flush's read, which is there to displace L2's dirty lines.
template <bool kStream>
__global__ void read_kernel(const uint4* p, size_t n, uint32_t* sink) {
  auto ld = [](const uint4* q) { return kStream ? __ldcs(q) : *q; };
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  uint32_t acc = 0;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = ld(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = ld(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) *sink = acc;  // keeps the loads; practically never stores
}

template <bool kStream>
void launch_read(const void* buf, size_t bytes, int blocks_per_sm, cudaStream_t s) {
  static uint32_t* sink = nullptr;
  if (!sink) MX8_CUDA_CHECK(cudaMalloc(&sink, sizeof(uint32_t)));
  read_kernel<kStream>
      <<<num_sms() * blocks_per_sm, 512, 0, s>>>(static_cast<const uint4*>(buf), bytes / 16, sink);
  MX8_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void read_once(const void* buf, size_t bytes, int blocks_per_sm, cudaStream_t s) {
  launch_read<true>(buf, bytes, blocks_per_sm, s);
}

namespace {

// tma_read_once: warp 0's first lane issues the loads; warps 1..4 consume a slot (XOR it into a
// checksum only when asked) and release it.
constexpr int kTmaReadThreads = 160;

__global__ void __launch_bounds__(kTmaReadThreads, 1)
    tma_read_kernel(const __grid_constant__ CUtensorMap map, int tiles, int box_rows, int kblocks, int splits,
                    int stages, uint32_t* checksum) {
  extern __shared__ uint8_t smem_raw[];
  // The 128-byte swizzle needs 1024-byte aligned boxes (tma_read_once asks for the slack).
  uint8_t* smem = smem_raw + ((1024 - (ptx::smem_addr(smem_raw) & 1023)) & 1023);
  const int box = box_rows * 128;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + stages * box);
  uint64_t* empty = full + stages;
  if (threadIdx.x == 0) {
    for (int i = 0; i < stages; ++i) {
      ptx::mbar_init(&full[i], 1);
      ptx::mbar_init(&empty[i], kTmaReadThreads / 32 - 1);
    }
    ptx::fence_barrier_init();
  }
  __syncthreads();
  // Unit u: tile u / splits over K blocks [part * kblocks / splits, (part + 1) * kblocks / splits).
  const int units = tiles * splits;
  auto walk = [&](auto&& visit) {
    int slot = 0;
    uint32_t phase = 0;
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
      const int tile = u / splits, part = u % splits;
      for (int kb = part * kblocks / splits; kb < (part + 1) * kblocks / splits; ++kb) {
        visit(slot, phase, tile, kb);
        if (++slot == stages) {
          slot = 0;
          phase ^= 1;
        }
      }
    }
  };
  if (threadIdx.x == 0) {
    walk([&](int slot, uint32_t phase, int tile, int kb) {
      ptx::mbar_wait(&empty[slot], phase ^ 1);
      ptx::mbar_arrive_expect_tx(&full[slot], box);
      ptx::tma_load_2d(smem + slot * box, &map, &full[slot], kb * 128, tile * box_rows);
    });
  } else if (threadIdx.x >= 32) {
    uint32_t x = 0;
    walk([&](int slot, uint32_t phase, int, int) {
      ptx::mbar_wait(&full[slot], phase);
      if (checksum)
        for (int i = threadIdx.x - 32; i < box / 4; i += kTmaReadThreads - 32)
          x ^= reinterpret_cast<const uint32_t*>(smem + slot * box)[i];
      __syncwarp();
      if (threadIdx.x % 32 == 0) ptx::mbar_arrive(&empty[slot]);
    });
    if (checksum && x) atomicXor(checksum, x);
  }
}

}  // namespace

void tma_read_once(const void* buf, int rows, int cols, int box_rows, int splits, uint32_t* checksum,
                   cudaStream_t s) {
  if (rows < 1 || cols < 128 || cols % 128 != 0 || box_rows < 8 || box_rows > 256 || box_rows % 8 != 0 ||
      splits < 1 || splits > cols / 128)
    throw mx8::Error("tma_read_once: a " + std::to_string(rows) + " x " + std::to_string(cols) +
                     " matrix in boxes of " + std::to_string(box_rows) + " rows over " +
                     std::to_string(splits) + " K parts (cols a multiple of 128, boxes of 8..256 rows)");
  const CUtensorMap map = make_tensor_map_2d(buf, 1, rows, cols, cols, box_rows, 128, true);
  // About 128 KB of slots: at least 8 of the 64-row boxes the bandwidth needs (docs/CUDA.md).
  const int stages = std::clamp((128 << 10) / (box_rows * 128), 2, 16);
  const int smem = 1024 + stages * box_rows * 128 + stages * 16;
  static int configured = 0;
  if (smem > configured) {
    MX8_CUDA_CHECK(cudaFuncSetAttribute(tma_read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = smem;
  }
  const int tiles = (rows + box_rows - 1) / box_rows;
  const int grid = std::min(tiles * splits, num_sms());
  tma_read_kernel<<<grid, kTmaReadThreads, smem, s>>>(map, tiles, box_rows, cols / 128, splits, stages,
                                                      checksum);
  MX8_CUDA_CHECK(cudaGetLastError());
}

void l2_read_through(const void* buf, size_t bytes, cudaStream_t s) {
  launch_read<false>(buf, bytes, 8, s);
}

GpuTimer::GpuTimer(size_t flush_bytes) : write_bytes_(std::max(flush_bytes, kDefaultFlush)) {
  MX8_CUDA_CHECK(cudaMalloc(&write_, write_bytes_));
  MX8_CUDA_CHECK(cudaMalloc(&read_, kRead));
  MX8_CUDA_CHECK(cudaMemset(read_, 1, kRead));
  MX8_CUDA_CHECK(cudaEventCreate(&start_));
  MX8_CUDA_CHECK(cudaEventCreate(&stop_));
}

GpuTimer::~GpuTimer() {
  cudaEventDestroy(start_);
  cudaEventDestroy(stop_);
  cudaFree(write_);
  cudaFree(read_);
}

double GpuTimer::median_us(const std::function<void()>& fn, int iters, int warmup, bool clean) {
  for (int i = 0; i < warmup; ++i) fn();
  MX8_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    MX8_CUDA_CHECK(cudaMemsetAsync(write_, i & 0xFF, write_bytes_, nullptr));
    if (clean) l2_read_through(read_, kRead, nullptr);
    MX8_CUDA_CHECK(cudaEventRecord(start_, nullptr));
    fn();
    MX8_CUDA_CHECK(cudaEventRecord(stop_, nullptr));
    MX8_CUDA_CHECK(cudaEventSynchronize(stop_));
    MX8_CUDA_CHECK(cudaEventElapsedTime(&ms[static_cast<size_t>(i)], start_, stop_));
  }
  std::nth_element(ms.begin(), ms.begin() + iters / 2, ms.end());
  return ms[static_cast<size_t>(iters / 2)] * 1000.0;
}

double GpuTimer::median_kernel_us(const std::function<void()>& fn, int iters, int warmup) {
  std::string why;
  auto unavailable = [&why] {
    static bool said = false;
    if (!said) std::fprintf(stderr, "kernel times: n/a (%s)\n", why.c_str());
    said = true;
    return std::nan("");
  };
  KernelClock* clock = KernelClock::get(&why);
  if (!clock) return unavailable();
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> us(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    MX8_CUDA_CHECK(cudaMemsetAsync(write_, i & 0xFF, write_bytes_, nullptr));
    l2_read_through(read_, kRead, nullptr);
    us[static_cast<size_t>(i)] = clock->busy_us(fn, &why);  // waits for the flush first, and leaves it out
    if (!why.empty()) return unavailable();
  }
  std::nth_element(us.begin(), us.begin() + iters / 2, us.end());
  return us[static_cast<size_t>(iters / 2)];
}

double GpuTimer::copy_bandwidth(size_t bytes) {
  void *a = nullptr, *b = nullptr;
  MX8_CUDA_CHECK(cudaMalloc(&a, bytes));
  MX8_CUDA_CHECK(cudaMalloc(&b, bytes));
  MX8_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double us = median_us(
      [&] { MX8_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr)); }, 10, 2);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / (us * 1e-6);
}

}  // namespace mx8::cuda
