// Quantization and dequantization on the GPU, bit for bit equal to mx8::format::quantize_ref /
// dequantize_ref (tests/cuda compares every byte). All pointers are device pointers; every call is
// asynchronous on `stream` and throws mx8::Error on invalid arguments.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "mx8/format/quantize_ref.h"

namespace mx8::cuda {

// Where the 1x128 scales of an activation go. kRowMajor is quantize_ref's grid [rows][cols/128];
// kMnMajor is the GEMM's transposed layout [cols/128][ld] with ld = sa_ld(rows) (gemm.h).
enum class ScaleLayout : int { kRowMajor = 0, kMnMajor = 1 };

// Any QuantSpec quantize_ref accepts (every element format, rule, granularity and storage), from
// f32, bf16 or f16. `codes` and `scales` are laid out exactly as quantize_ref lays them out. Fast
// paths: bf16 input, 8-bit elements, 1x128 or 1x32 tiles, cols % 8 == 0; other specs run a generic
// kernel (one thread block per scale block; per-tensor scales take two passes).
void quantize(format::SourceType src_type, const void* src, int64_t rows, int64_t cols,
              const format::QuantSpec& spec, uint8_t* codes, uint8_t* scales, cudaStream_t stream);

// The fused activation quantizer of the GEMM: bf16 [rows][cols] -> E4M3 codes [rows][cols] with
// 1x128 scales (rule `rule`, UE8M0 bytes if ue8m0 else float32) in `layout`. cols % 128 == 0.
void quantize_act_1x128(const uint16_t* src, int64_t rows, int64_t cols, format::ScaleRule rule, bool ue8m0,
                        float amax_floor, ScaleLayout layout, uint8_t* codes, void* scales,
                        cudaStream_t stream);

// The same, also writing the transposed operand (for the backward pass): codes_t [cols][rows] and
// its scales, i.e. quantize_ref of src^T with 1x128 tiles, which are 128x1 blocks of src. scales_t
// takes `layout` too: row-major [cols][ceil(rows/128)] as quantize_ref writes it, or MN-major
// [ceil(rows/128)][cols] (the GEMM's layout for src^T as an operand; cols % 16 == 0, so cols is its
// own sa_ld). One read of src; cols % 128 == 0, rows may be ragged (any rows >= 1).
void quantize_act_1x128_dual(const uint16_t* src, int64_t rows, int64_t cols, format::ScaleRule rule,
                             bool ue8m0, float amax_floor, ScaleLayout layout, uint8_t* codes, void* scales,
                             uint8_t* codes_t, void* scales_t, cudaStream_t stream);

// dequantize_ref on the GPU: f32 [rows][cols] from codes and scales in any storage.
void dequantize(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                const format::QuantSpec& spec, float* dst, cudaStream_t stream);

}  // namespace mx8::cuda
