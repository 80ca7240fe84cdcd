// matmul for many rows of activations (prefill): a tiled SIMT GEMM, every weight format.
//
// The correct fallback for m > 16: a 64x64 output tile per block of 256 threads, each thread 4x4
// outputs; per step of 16 along k, the x tile (f32) and the W tile (decoded to f32 with its block
// scale, through the same codecs the CPU uses) are staged in shared memory. f32 products and sums
// throughout, so its results differ from the CPU's only by summation order.
#include <cuda_runtime.h>

#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/backend_cuda_weight.cuh"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16;

__global__ void __launch_bounds__(256)
    gemm_simt_kernel(WeightView w, const float* x, int64_t m, float* y, const float* bias) {
  pdl_trigger();
  pdl_wait();
  __shared__ float xs[kBK][kBM + 4];
  __shared__ float ws[kBK][kBN + 4];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = int64_t(blockIdx.y) * kBM, n0 = int64_t(blockIdx.x) * kBN;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < w.k; k0 += kBK) {
    // 64 x 16 values each for x and W: 4 per thread; kk fastest so that global reads are contiguous.
    for (int i = threadIdx.x; i < kBM * kBK; i += 256) {
      const int r = i / kBK, kk = i % kBK;
      const int64_t gm = m0 + r, gk = k0 + kk;
      xs[kk][r] = (gm < m && gk < w.k) ? x[gm * w.k + gk] : 0.0f;
      const int64_t gn = n0 + r;
      ws[kk][r] = (gn < w.n && gk < w.k) ? weight_at(w, gn, gk) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + ty * 4 + i;
    if (gm >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tx * 4 + j;
      if (gn < w.n) y[gm * w.n + gn] = acc[i][j] + (bias ? bias[gn] : 0.0f);
    }
  }
}

}  // namespace

void launch_gemm_simt(const WeightView& w, const float* x, int64_t m, float* y, const float* bias,
                      cudaStream_t s) {
  if (m <= 0) return;
  const int64_t gx = (w.n + kBN - 1) / kBN, gy = (m + kBM - 1) / kBM;
  if (gx > 0x7fffffff || gy > 65535) throw Error("cuda backend: matmul shape too large for the SIMT GEMM");
  launch("gemm_simt_kernel", gemm_simt_kernel, dim3(dim3(unsigned(gx), unsigned(gy))), dim3(256), s, w, x, m,
         y, bias);
  check_launch("matmul (simt gemm)");
}

}  // namespace mx8::backend::cuda_impl
