// Fast CPU quantize and dequantize: the same arguments and, bit for bit, the same results as the
// scalar references format::quantize_ref / format::dequantize_ref (codes and scales identical for
// every input, NaN/Inf/subnormal included; dequantized values identical, with NaN wherever the
// reference has NaN), plus a thread pool.
//
// Every element format, scale rule, granularity and scale storage is supported. SIMD kernels
// (AVX2 + F16C) cover the block max and the element encode/decode of E4M3 and E5M2 from f32, bf16
// and f16; the other element formats use a scalar kernel with the format fixed at compile time.
// Work is split over the pool by rows (tiles, per-row), by stripes of block rows (BxB blocks), or in
// two parallel passes (per-tensor: max, then encode).
//
//   quantize(SourceType::bf16, w, rows, cols, spec, codes, scales, &pool);
//     codes: format::code_bytes(spec, rows, cols) bytes; scales: format::scale_bytes(spec, rows, cols)
//
// Throws mx8::Error for a malformed spec (format::validate_spec). pool == nullptr runs on the calling
// thread. The active ISA (cpu_features.h; MX8_CPU_ISA) picks the kernels.
#pragma once

#include <cstdint>

#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::cpu {

void quantize(format::SourceType src_type, const void* src, int64_t rows, int64_t cols,
              const format::QuantSpec& spec, uint8_t* codes, uint8_t* scales, ThreadPool* pool);

void dequantize(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                const format::QuantSpec& spec, float* dst, ThreadPool* pool);

}  // namespace mx8::cpu
