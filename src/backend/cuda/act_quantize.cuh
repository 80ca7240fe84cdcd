// The activation quantizer's step for one 128-wide tile of a row (E4M3 codes, `ceil` scales, MN-major
// scale layout for the FP8 GEMMs' TMA), shared by the GEMM input quantizers (backend_cuda_fp8gemm.cu)
// and the kernels that hand a GEMM its input already quantized (attention_cluster.cu), so that every
// producer of an activation tile writes the same bytes.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#include "backend/cuda/quantize_device.cuh"
#endif

#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/scale_rule.h"

namespace mx8::backend::cuda_impl {

// Where a kernel that quantizes its output writes it: codes [m][k] E4M3, scales MN-major [k / block][ld]
// (UE8M0 bytes, or f32 powers of two), block 128 (fp8_block weights) or 32 (MXFP8). codes == nullptr:
// no quantized output.
struct ActQuantOut {
  uint8_t* codes = nullptr;
  void* scales = nullptr;
  int ld = 0;
  bool ue8m0 = true;
  int block = 128;
};

#if defined(__CUDACC__)
// Quantizes the 128 values of tile kb of a row held by a warp (lane l: values 4l .. 4l + 3 of the
// tile) into codes and scales. kBlock = 128 (one scale per warp) or 32 (lanes 8j .. 8j + 7 hold
// block j of the tile). The amax is an integer max over |x| bit patterns (NaN-propagating, as the
// format layer does), the scale format::compute_block_scale(ceil), and the codes the hardware's
// cvt.rn.satfinite.e4m3x2.f32, which rounds as format::e4m3_from_f32(x, true) does (RNE, NaN -> 0x7F;
// the ceil scale keeps every finite scaled value within +-448, and a NaN or Inf amax makes the scale
// NaN), so a block's bytes equal the CPU reference quantizer's (tests/cuda/act_quantize_test.cpp). Two
// cvt instead of four software encodes: H200, Llama-3-8B, batch-16 FP8 decode 4.5% and 512-token prompt
// steps 1-4% faster (docs/CUDA_BACKEND.md, forty-first session).
template <int kBlock>
__device__ __forceinline__ void quantize_tile(float4 v, int lane, int64_t row, int64_t kb, int64_t k,
                                              bool ue8m0, uint8_t* codes, void* scales, int ld) {
  static_assert(kBlock == 128 || kBlock == 32, "1x128 or 1x32 blocks");
  uint32_t amax = 0;
  amax = format::amax_bits_accumulate(amax, v.x);
  amax = format::amax_bits_accumulate(amax, v.y);
  amax = format::amax_bits_accumulate(amax, v.z);
  amax = format::amax_bits_accumulate(amax, v.w);
  if (kBlock == 128) {
    amax = __reduce_max_sync(0xffffffffu, amax);
  } else {
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  }
  const format::BlockScale bs = format::compute_block_scale(
      format::f32_from_bits(amax), format::ElementFormat::e4m3, {format::ScaleRule::ceil});
  auto encode2 = [&](float a, float b) {  // low byte: a
    return mx8::cuda::qdev::cvt2(__fmul_rn(a, bs.inv_scale), __fmul_rn(b, bs.inv_scale),
                                 format::ElementFormat::e4m3);
  };
  const uint32_t four = encode2(v.x, v.y) | encode2(v.z, v.w) << 16;
  *reinterpret_cast<uint32_t*>(codes + row * k + kb * 128 + lane * 4) = four;
  if (lane % (kBlock / 4) == 0) {
    const int64_t b = kb * (128 / kBlock) + lane / (kBlock / 4);  // block index along k
    if (ue8m0)
      static_cast<uint8_t*>(scales)[b * ld + row] = bs.ue8m0;
    else
      static_cast<float*>(scales)[b * ld + row] = bs.scale;
  }
}

// quantize_tile with the block size of `q`.
__device__ __forceinline__ void quantize_tile(const ActQuantOut& q, float4 v, int lane, int64_t row,
                                              int64_t kb, int64_t k) {
  if (q.block == 32)
    quantize_tile<32>(v, lane, row, kb, k, q.ue8m0, q.codes, q.scales, q.ld);
  else
    quantize_tile<128>(v, lane, row, kb, k, q.ue8m0, q.codes, q.scales, q.ld);
}

#endif  // __CUDACC__

}  // namespace mx8::backend::cuda_impl
