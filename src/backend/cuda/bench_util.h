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

// Reads `bytes` of `buf` (16-byte aligned, bytes % 16 == 0) on `s`. After an L2 flush that writes a
// large buffer, L2 is full of dirty lines; a kernel timed right then pays for writing them back
// (~L2 size, 50-60 MB, ~12 us on an H200) as its accesses evict them. Reading a buffer larger than
// L2 first leaves L2 cold and clean.
void l2_read_through(const void* buf, size_t bytes, cudaStream_t s);

// Reads `bytes` of `buf` (16-byte aligned, bytes % 16 == 0) once, streaming, with `blocks_per_sm`
// blocks of 512 threads per SM: the memory floor of a kernel that only has to read those bytes.
void read_once(const void* buf, size_t bytes, int blocks_per_sm, cudaStream_t s);

// Reads the row-major byte matrix [rows][cols] (cols % 128 == 0, rows 16-byte aligned) once with TMA,
// the way the FP8 GEMM's producer streams its B tiles: box_rows x 128-byte boxes (128-byte swizzle),
// K-inner, through a ring of shared-memory slots refilled as soon as they are released. A unit is one
// tile of box_rows rows over 1/splits of K (the cluster K split's share); units are dealt to at most
// one block per SM. The memory floor of a kernel fed by TMA loads of those bytes: on the H200 such
// loads stream ~12% slower than plain loads into registers (read_once; docs/CUDA.md). `checksum`
// (optional, device memory, zeroed by the caller): the XOR of every 32-bit word loaded, for tests.
void tma_read_once(const void* buf, int rows, int cols, int box_rows, int splits, uint32_t* checksum,
                   cudaStream_t s);

class GpuTimer {
 public:
  // The L2 flush before every timed run: a 512 MB buffer written (no operand stays in L2: 60 MB on an
  // H200), then a 256 MB buffer read (l2_read_through: no dirty line of the flush stays either).
  // A larger write (`flush_bytes`) also leaves the GPU longer between timed runs, as DeepGEMM's
  // kernel-time protocol does (8 GB), in case the load of the runs before lowers the clock of a long
  // GEMM (on the H200 it did not: docs/CUDA.md, Running).
  explicit GpuTimer(size_t flush_bytes = kDefaultFlush);
  ~GpuTimer();
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;

  // Median microseconds of `iters` runs of `fn` (enqueued on stream 0), each preceded by the flush
  // and bracketed by events; `warmup` untimed runs first. clean = false skips the read of the flush
  // (L2 left dirty: what a kernel pays after a large write).
  double median_us(const std::function<void()>& fn, int iters = 30, int warmup = 3, bool clean = true);
  // The same with each run timed by KernelClock (kernel_clock.h): the GPU time of the kernels it
  // launched, without launch latency and event overhead. NaN when CUPTI is not available (the reason
  // is printed once per process).
  double median_kernel_us(const std::function<void()>& fn, int iters = 30, int warmup = 3);
  // Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written.
  double copy_bandwidth(size_t bytes = size_t{1} << 30);

 private:
  static constexpr size_t kDefaultFlush = size_t(512) << 20, kRead = size_t(256) << 20;
  size_t write_bytes_;
  void* write_ = nullptr;
  void* read_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace mx8::cuda
