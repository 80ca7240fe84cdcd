// Matrix-vector and skinny matrix products for LLM decode on the CPU:
//
//     y[m, n] = sum_k x[m, k] * W[n, k]        (y = x W^T; x: [M, K] f32, W: [N, K], y: [M, N] f32)
//
// All arrays are dense row-major: x row i at x + i*K, W row n at n*K, y row i at y + i*N. M is the
// batch of tokens (decode: 1..16 is what the kernels are tuned for; any M >= 1 works). W is read once
// per call whatever M is, which is the point: at M = 1 the product is bound by reading W.
//
// Weight types:
//   gemv_fp8   W is FP8 (E4M3, or E5M2) with one scale per block of block_rows x block_cols weights
//              (DeepSeek layout: 128x128 with f32 or UE8M0 scales; MXFP8: 1x32 with UE8M0 scales).
//              The value of weight (n, k) is decode(code) * scale[n / block_rows][k / block_cols]; this
//              is exactly what mx8::cpu::quantize / format::quantize_ref produce for Blocking::block(128)
//              or Blocking::tile(32) with ScaleStorage::f32 or ::ue8m0 (see fp8_matrix_from_spec).
//   gemv_bf16  W is bf16 bit patterns (uint16_t), for comparison and for unquantized models.
//   gemv_f32   W is f32.
//
// Numerics: the *_ref functions are the definition (scalar, products and sums in double, rounded to
// f32 once). The fast functions accumulate in f32 in a different order, so they agree with the
// reference to about K * 2^-24 relative to sum |x * w| (tests/backend_cpu/gemv_test.cpp states the
// bound). FP8 codes that are NaN (E4M3 0x7F/0xFF; E5M2 0x7D-0x7F, 0xFD-0xFF) never come out of
// quantizing finite weights; the reference and the E5M2 fast path propagate them as NaN, the E4M3
// fast paths read them as +-480 (documented, tested). A NaN scale (UE8M0 0xFF) gives NaN everywhere
// the block contributes. Weight values (code * scale) must be f32 normal numbers or zero for the
// fast path to agree with the reference within the bound (true of every real checkpoint: weights
// are ~2^-20..2^4); tiny subnormal products are rounded in f32.
//
// Threads: `pool` splits the N outputs over its threads (nullptr = the calling thread only). The
// calls allocate nothing after the first call on a thread of a given size (scratch is thread-local).
#pragma once

#include <cstdint>

#include "mx8/backend/cpu/thread_pool.h"
#include "mx8/format/element.h"
#include "mx8/format/quantize_ref.h"

namespace mx8::cpu {

struct Fp8Matrix {
  const uint8_t* codes = nullptr;  // [rows, cols] row-major, one byte per weight
  const void* scales = nullptr;    // row-major grid [ceil(rows/block_rows), ceil(cols/block_cols)]
  int64_t rows = 0;                // N: outputs
  int64_t cols = 0;                // K: inputs (the reduction dimension)
  int64_t block_rows = 128;        // DeepSeek 128; MXFP8 1
  int64_t block_cols = 128;        // DeepSeek 128; MXFP8 32
  format::ElementFormat element = format::ElementFormat::e4m3;       // e4m3 or e5m2
  format::ScaleStorage scale_storage = format::ScaleStorage::ue8m0;  // f32 (floats) or ue8m0 (bytes)
};

// Describes codes/scales made by quantize(..., spec, ...) of a [rows, cols] weight as an Fp8Matrix.
// Accepts spec.element e4m3/e5m2, blocking tile or block (or per_row), storage f32 or ue8m0; throws
// mx8::Error naming what is unsupported otherwise (packed and Blackwell storages: unpack first).
Fp8Matrix fp8_matrix_from_spec(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                               const format::QuantSpec& spec);

// Throws mx8::Error if the matrix is malformed (null pointers, non-positive blocks, bad element).
void validate_fp8_matrix(const Fp8Matrix& w);

void gemv_fp8(const float* x, int64_t m, const Fp8Matrix& w, float* y, ThreadPool* pool);
void gemv_bf16(const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y,
               ThreadPool* pool);
void gemv_f32(const float* x, int64_t m, const float* w, int64_t n, int64_t k, float* y, ThreadPool* pool);

// Scalar references (single-threaded, double accumulation).
void gemv_fp8_ref(const float* x, int64_t m, const Fp8Matrix& w, float* y);
void gemv_bf16_ref(const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y);
void gemv_f32_ref(const float* x, int64_t m, const float* w, int64_t n, int64_t k, float* y);

}  // namespace mx8::cpu
