// matmul for m > 16 rows with fp8_block weights on the tensor cores: activations are quantized to
// E4M3 with one `ceil` scale per 1x128 tile along k (DeepSeek-V3.1's recipe), then the kernels
// engineer's warp-specialized wgmma GEMM (include/mx8/backend/cuda/gemm.h) computes
// y = (x_q * s_x) (W * s_W)^T with FP32 promotion every 128 of k, writing f32 directly into y.
//
// The activation quantizer: one warp per (row, 128-wide tile) - lanes read 4 values each, the tile's
// amax is an integer max over |x| bit patterns (NaN-propagating, as the format layer does), the
// scale comes from format::compute_block_scale(ceil) and the codes from format::e4m3_from_f32, so a
// tile's bytes equal the CPU reference quantizer's. Scales are written MN-major ([k/128][ld], ld =
// sa_ld(m)) as the GEMM's TMA wants them: UE8M0 bytes for UE8M0-scaled weights, f32 (the same
// powers of two) for f32-scaled weights, since the GEMM takes one scale type for both operands.
#include <cuda_runtime.h>

#include <algorithm>

#include "backend/cuda/backend_cuda.cuh"
#include "mx8/backend/cuda/gemm.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"

namespace mx8::backend::cuda_impl {
namespace {

__global__ void quantize_1x128_kernel(const float* x, int64_t m, int64_t k, bool ue8m0, uint8_t* codes,
                                      void* scales, int ld) {
  pdl_trigger();
  pdl_wait();
  const int64_t gw = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t tiles = k / 128;
  if (gw >= m * tiles) return;
  const int64_t row = gw / tiles, kb = gw % tiles;
  const float4 v = *reinterpret_cast<const float4*>(x + row * k + kb * 128 + lane * 4);
  uint32_t amax = 0;
  amax = format::amax_bits_accumulate(amax, v.x);
  amax = format::amax_bits_accumulate(amax, v.y);
  amax = format::amax_bits_accumulate(amax, v.z);
  amax = format::amax_bits_accumulate(amax, v.w);
  amax = __reduce_max_sync(0xffffffffu, amax);
  const format::BlockScale bs = format::compute_block_scale(
      format::f32_from_bits(amax), format::ElementFormat::e4m3, {format::ScaleRule::ceil});
  uchar4 c;
  c.x = format::e4m3_from_f32(__fmul_rn(v.x, bs.inv_scale), true);
  c.y = format::e4m3_from_f32(__fmul_rn(v.y, bs.inv_scale), true);
  c.z = format::e4m3_from_f32(__fmul_rn(v.z, bs.inv_scale), true);
  c.w = format::e4m3_from_f32(__fmul_rn(v.w, bs.inv_scale), true);
  *reinterpret_cast<uchar4*>(codes + row * k + kb * 128 + lane * 4) = c;
  if (lane == 0) {
    if (ue8m0)
      static_cast<uint8_t*>(scales)[kb * ld + row] = bs.ue8m0;
    else
      static_cast<float*>(scales)[kb * ld + row] = bs.scale;
  }
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t m, int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m * n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % n];
}

}  // namespace

bool fp8_gemm_applies(const WeightView& w, const float* x, int64_t m, const float* y) {
  return w.format == WeightFormat::fp8_block && m > 16 && m <= 0x7fffffff && w.n % 16 == 0 &&
         w.k % 128 == 0 && w.n <= 0x7fffffff && w.k <= 0x7fffffff &&
         reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(y) % 16 == 0;
}

Fp8GemmWorkspace fp8_gemm_workspace(const WeightView& w, int64_t m) {
  const size_t scale_bytes = w.scale_type == ScaleType::ue8m0 ? 1 : 4;
  return {size_t(m) * size_t(w.k), size_t(w.k / 128) * size_t(mx8::cuda::sa_ld(int(m))) * scale_bytes};
}

void launch_fp8_gemm(const WeightView& w, const float* x, int64_t m, float* y, const float* bias,
                     uint8_t* codes, void* scales, cudaStream_t s) {
  const bool ue8m0 = w.scale_type == ScaleType::ue8m0;
  const int ld = mx8::cuda::sa_ld(int(m));
  const int64_t warps = m * (w.k / 128);
  launch("quantize_1x128_kernel", quantize_1x128_kernel, dim3(unsigned((warps + 7) / 8)), dim3(256), s, x, m,
         w.k, ue8m0, codes, scales, ld);
  mx8::cuda::GemmFp8Args a;
  a.a = codes;
  a.scale_a = scales;
  a.scale_a_ld = ld;
  a.b = static_cast<const uint8_t*>(w.data);
  a.scale_b = w.scales;
  a.scale_type = ue8m0 ? mx8::cuda::ScaleType::kUE8M0 : mx8::cuda::ScaleType::kF32;
  a.d = y;
  a.out_type = mx8::cuda::OutType::kF32;
  a.m = int(m);
  a.n = int(w.n);
  a.k = int(w.k);
  mx8::cuda::gemm_fp8_1x128(a, s);
  if (bias) {
    const int64_t total = m * w.n;
    const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65535));
    launch("add_bias_kernel", add_bias_kernel, dim3(blocks), dim3(256), s, y, bias, m, w.n);
  }
}

}  // namespace mx8::backend::cuda_impl
