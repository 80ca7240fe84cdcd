// Internal interface between the quantize driver (quantize.cpp) and its per-ISA row-segment
// kernels (quantize_scalar.cpp, quantize_avx2.cpp, quantize_neon.cpp). A segment is columns [c0, c1) of one
// row.
#pragma once

#include <cstdint>

#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/format/element.h"
#include "mx8/format/quantize_ref.h"
#include "mx8/format/scale_rule.h"

namespace mx8::cpu::detail {

using format::ElementFormat;
using format::SourceType;

struct QuantKernels {
  // Max over the segment of the f32 bit pattern of |x| (NaN gives a value above 0x7F800000), i.e. the
  // reference's amax_bits_accumulate over the segment, started from `acc`.
  uint32_t (*amax)(SourceType t, const void* src_row, int64_t c0, int64_t c1, uint32_t acc);
  // codes of row: code(c) = encode(x[c] * inv_scale, saturate) for c in [c0, c1) (E2M1: nibbles).
  // Returns false when this ISA has no kernel for the element format (the caller uses the scalar one).
  bool (*encode)(SourceType t, const void* src_row, int64_t c0, int64_t c1, float inv_scale, ElementFormat f,
                 bool saturate, uint8_t* codes_row);
  // dst_row[c] = decode(code(c)) * scale for c in [c0, c1). Returns false like encode.
  bool (*decode)(const uint8_t* codes_row, int64_t c0, int64_t c1, float scale, ElementFormat f,
                 float* dst_row);
  // Optional (null when absent): a stripe of nrows consecutive rows (row-major, cols elements each)
  // cut into nrows x block_cols blocks (1 x K tiles and per-row scales: nrows = 1), max and scale and
  // encode fused per block, writing the stripe's scales to scales_f32[g] / scales_u8[g]. Returns
  // false when this ISA has no kernel for the element format.
  bool (*quantize_stripe)(SourceType t, const void* src, int64_t nrows, int64_t cols, int64_t block_cols,
                          ElementFormat f, bool saturate, format::ScaleOptions opt, uint8_t* codes,
                          float* scales_f32, uint8_t* scales_u8);
};

const QuantKernels& quant_kernels_scalar();
#if defined(__x86_64__)
const QuantKernels& quant_kernels_avx2();
#elif defined(__aarch64__)
const QuantKernels& quant_kernels_neon();
#endif
// The kernels quantize() and dequantize() use when `isa` is active (AVX-512 machines run the AVX2
// ones); a function of its argument so that tests can check the choice, not only the results.
const QuantKernels& quant_kernels_for(Isa isa);

}  // namespace mx8::cpu::detail
