// matmul for m > gemv_max_rows rows with FP8 weights on the tensor cores: activations are quantized to E4M3
// on the fly with `ceil` UE8M0 scales, then the kernels engineer's warp-specialized wgmma GEMM
// (include/mx8/backend/cuda/gemm.h) computes y = (x_q * s_x) (W * s_W)^T with FP32 promotion, writing
// f32 directly into y:
//   * fp8_block weights: one activation scale per 1x128 tile along k (DeepSeek-V3.1's recipe),
//     gemm_fp8_1x128, promotion every 128 of k;
//   * mxfp8 weights: one activation scale per 1x32 (the OCP MX block), gemm_mxfp8, promotion every
//     32 of k. That GEMM takes both operands' scales MN-major ([k/32][ld]) for its TMA (a K-major
//     row of k/32 bytes per weight row is below TMA's 16-byte box minimum), so the weights' scales
//     (row-major [n][k/32], the format layer's layout) are transposed into scratch per call: n k / 32
//     bytes, under 1% of the GEMM's time at prefill sizes (docs/CUDA_BACKEND.md).
//
// The activation quantizer: one warp per (row, 128-wide tile), lanes reading 4 values each, quantized by
// quantize_tile (act_quantize.cuh), so a block's bytes equal the CPU reference quantizer's. Scales are
// written MN-major ([k/B][ld], ld = sa_ld(m)) as the GEMM's TMA wants them: UE8M0 bytes, or f32 (the same
// powers of two) for f32-scaled fp8_block weights, since the GEMM takes one scale type for both operands.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "backend/cuda/act_quantize.cuh"
#include "backend/cuda/backend_cuda.cuh"
#include "backend/cuda/block_reduce.cuh"
#include "backend/cuda/gemv_fp8_common.cuh"
#include "backend/cuda/gemv_fp8x8.cuh"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/error.h"

namespace mx8::backend::cuda_impl {
namespace {

// One warp per (row, 128-wide tile).
template <int kBlock>
__global__ void quantize_act_kernel(const float* x, const float* x_up, int64_t m, int64_t k, bool ue8m0,
                                    uint8_t* codes, void* scales, int ld) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t tiles = k / 128;
  if (gw >= m * tiles) return;
  const int64_t row = gw / tiles, kb = gw % tiles;
  float4 v = *reinterpret_cast<const float4*>(x + row * k + kb * 128 + lane * 4);
  if (x_up) {  // the input is silu(x) * x_up, formed as silu_mul_kernel forms it
    const float4 u = *reinterpret_cast<const float4*>(x_up + row * k + kb * 128 + lane * 4);
    v = make_float4(silu_times(v.x, u.x), silu_times(v.y, u.y), silu_times(v.z, u.z), silu_times(v.w, u.w));
  }
  quantize_tile<kBlock>(v, lane, row, kb, k, ue8m0, codes, scales, ld);
}

// rmsnorm(x) with weights `norm` quantized: one block per row, laid out as rmsnorm_vec_kernel's
// (rms_scale_vec, then float4 j by thread j % blockDim.x), so the normalized values are that kernel's
// bits; and since k % 128 == 0 and blockDim.x % 32 == 0, the float4s of a warp in one pass are one
// 128-wide tile, quantized as quantize_act_kernel quantizes it. One launch instead of two per norm.
template <int kBlock>
__global__ void rmsnorm_quantize_act_kernel(const float* x, const float* norm, float eps, int64_t k,
                                            bool ue8m0, uint8_t* codes, void* scales, int ld) {
  pdl_trigger();
  pdl_wait();
  const int64_t row = blockIdx.x;
  const float4* xr = reinterpret_cast<const float4*>(x + row * k);
  const float4* w4 = reinterpret_cast<const float4*>(norm);
  const float ss = rms_scale_vec(xr, k, eps);
  for (int64_t j = threadIdx.x; j < k / 4; j += blockDim.x) {
    const float4 v = xr[j], g = w4[j];
    const float4 y = make_float4(g.x * (ss * v.x), g.y * (ss * v.y), g.z * (ss * v.z), g.w * (ss * v.w));
    quantize_tile<kBlock>(y, int(threadIdx.x & 31), row, j / 32, k, ue8m0, codes, scales, ld);
  }
}

// MXFP8 weight scales, row-major [n][kc] bytes -> MN-major [kc][ld] (columns n .. ld - 1 are never
// read: the GEMM's TMA box stops at n). 32 x 32 tiles through shared memory, so that both the reads
// and the writes are coalesced.
__global__ void transpose_scales_kernel(const uint8_t* src, int64_t n, int64_t kc, uint8_t* dst, int ld) {
  pdl_trigger();
  pdl_wait();
  __shared__ uint8_t tile[32][33];
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < n && c < kc) tile[i][threadIdx.x] = src[r * kc + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (r < n && c < kc) dst[c * ld + r] = tile[threadIdx.x][i];
  }
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t m, int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m * n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % n];
}

// MXFP8 products of up to 16 rows take gemv_fp8x8: H200, Llama-3-8B decode, tok/s with the MXFP8 GEMM
// -> gemv_fp8x8: batch 8 917 -> 1911, 16 1709 -> 2351. FP8 keeps the wgmma GEMM, as fast or faster
// there (batch 6 1867 against 1719; `mx8 bench cuda-gemv`). MX8_CUDA_FP8X8=0 keeps MXFP8 on its GEMM
// too (comparisons).
bool fp8x8_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("MX8_CUDA_FP8X8");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

}  // namespace

void launch_add_bias(float* y, const float* bias, int64_t m, int64_t n, cudaStream_t s) {
  const int64_t total = m * n;
  const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65535));
  launch("add_bias_kernel", add_bias_kernel, dim3(blocks), dim3(256), s, y, bias, m, n);
}

bool fp8_gemm_applies(const WeightView& w, const float* x, int64_t m, const float* y) {
  const bool format_ok = w.format == WeightFormat::fp8_block ||
                         (w.format == WeightFormat::mxfp8 && w.scale_type == ScaleType::ue8m0);
  return format_ok && m > gemv_max_rows(w.format) && m <= 0x7fffffff && w.n % 16 == 0 && w.k % 128 == 0 &&
         w.n <= 0x7fffffff && w.k <= 0x7fffffff && reinterpret_cast<uintptr_t>(w.data) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
}

namespace {
// mxfp8: the activations' scales, then (at a 16-byte boundary) the weights' transposed ones.
size_t mx_act_scale_bytes(int64_t m, int64_t k) {
  return (size_t(k / 32) * size_t(mx8::cuda::sa_ld(int(m))) + 15) / 16 * 16;
}
}  // namespace

Fp8GemmWorkspace fp8_gemm_workspace(const WeightView& w, int64_t m) {
  if (w.format == WeightFormat::mxfp8)
    return {size_t(m) * size_t(w.k),
            mx_act_scale_bytes(m, w.k) + size_t(w.k / 32) * size_t(mx8::cuda::sa_ld(int(w.n)))};
  const size_t scale_bytes = w.scale_type == ScaleType::ue8m0 ? 1 : 4;
  return {size_t(m) * size_t(w.k), size_t(w.k / 128) * size_t(mx8::cuda::sa_ld(int(m))) * scale_bytes};
}

void quantize_fp8_act(const WeightView& w, const float* x, const float* x_up, const float* norm, float eps,
                      int64_t m, uint8_t* codes, void* scales, cudaStream_t s) {
  const int ld = mx8::cuda::sa_ld(int(m));
  const bool ue8m0 = w.format == WeightFormat::mxfp8 || w.scale_type == ScaleType::ue8m0;
  if (norm) {
    const int threads = int(std::min<int64_t>(1024, w.k / 4));  // rmsnorm_vec_kernel's: k % 128 == 0
    if (w.format == WeightFormat::mxfp8)
      launch("rmsnorm_quantize_act_kernel<32>", rmsnorm_quantize_act_kernel<32>, dim3(unsigned(m)),
             dim3(threads), s, x, norm, eps, w.k, ue8m0, codes, scales, ld);
    else
      launch("rmsnorm_quantize_act_kernel<128>", rmsnorm_quantize_act_kernel<128>, dim3(unsigned(m)),
             dim3(threads), s, x, norm, eps, w.k, ue8m0, codes, scales, ld);
    return;
  }
  const int64_t warps = m * (w.k / 128);
  const dim3 grid(unsigned((warps + 7) / 8)), block(256);
  if (w.format == WeightFormat::mxfp8)
    launch("quantize_act_kernel<32>", quantize_act_kernel<32>, grid, block, s, x, x_up, m, w.k, ue8m0, codes,
           scales, ld);
  else
    launch("quantize_act_kernel<128>", quantize_act_kernel<128>, grid, block, s, x, x_up, m, w.k, ue8m0,
           codes, scales, ld);
}

void run_fp8_gemm(const MatmulTarget* targets, int count, const uint8_t* codes, void* scales, int64_t m,
                  bool accumulate, cudaStream_t s) {
  auto common = [&](auto& a, const MatmulTarget& t) {  // the fields both GEMMs' arguments share
    a.a = codes;
    a.scale_a_ld = mx8::cuda::sa_ld(int(m));
    a.b = static_cast<const uint8_t*>(t.w.data);
    a.d = t.y;
    a.out_type = mx8::cuda::OutType::kF32;
    a.accumulate = accumulate;
    a.m = int(m);
    a.n = int(t.w.n);
    a.k = int(t.w.k);
  };
  if (targets[0].w.format == WeightFormat::mxfp8 && fp8x8_enabled() &&
      gemv_fp8x8_applies(targets, count, m)) {
    // Batched decode with MXFP8 weights, where the MXFP8 GEMM's promotion every 32 of k is a latency
    // chain at small M; its weights' scales are read as stored (no transpose), the bias added in its
    // epilogue.
    launch_gemv_fp8x8(targets, count, codes, scales, mx8::cuda::sa_ld(int(m)), m, accumulate, s);
    return;
  }
  if (targets[0].w.format == WeightFormat::mxfp8) {
    for (int i = 0; i < count; ++i) {
      const WeightView& w = targets[i].w;
      uint8_t* wscales = static_cast<uint8_t*>(scales) + mx_act_scale_bytes(m, w.k);
      const int64_t kc = w.k / 32;
      const int ldb = mx8::cuda::sa_ld(int(w.n));
      launch("transpose_scales_kernel", transpose_scales_kernel,
             dim3(unsigned((kc + 31) / 32), unsigned((w.n + 31) / 32)), dim3(32, 8), s,
             static_cast<const uint8_t*>(w.scales), w.n, kc, wscales, ldb);
      mx8::cuda::GemmMxfp8Args a;
      common(a, targets[i]);
      a.scale_a = static_cast<const uint8_t*>(scales);
      a.scale_b = wscales;
      a.scale_b_ld = ldb;
      mx8::cuda::gemm_mxfp8(a, s);
    }
  } else {
    mx8::cuda::GemmFp8Args a;
    common(a, targets[0]);
    // A programmatic dependent of the quantizer, which lets it launch at its start. Not so the MXFP8
    // GEMM: its early blocks, each holding a whole SM, slowed the scale transpose before it (batched
    // decode, MXFP8 batch 8 928 -> 898 tok/s on the H200).
    a.pdl = pdl_enabled();
    a.scale_a = scales;
    a.scale_type = targets[0].w.scale_type == ScaleType::ue8m0 ? mx8::cuda::ScaleType::kUE8M0
                                                               : mx8::cuda::ScaleType::kF32;
    // q/k/v and gate/up as one launch: their tiles fill the SMs together (batched decode steps).
    mx8::cuda::GemmFp8Target g[mx8::cuda::kMaxGemmGroup];
    for (int first = 0; first < count; first += mx8::cuda::kMaxGemmGroup) {
      const int n = std::min(count - first, mx8::cuda::kMaxGemmGroup);
      for (int i = 0; i < n; ++i) {
        const MatmulTarget& t = targets[first + i];
        g[i] = {static_cast<const uint8_t*>(t.w.data), t.w.scales, t.y, int(t.w.n)};
      }
      mx8::cuda::gemm_fp8_1x128_group(a, g, n, s);
    }
  }
  for (int i = 0; i < count; ++i)
    if (targets[i].bias) launch_add_bias(targets[i].y, targets[i].bias, m, targets[i].w.n, s);
}

}  // namespace mx8::backend::cuda_impl
