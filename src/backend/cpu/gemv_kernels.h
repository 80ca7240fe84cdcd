// Internal interface between the GEMV dispatcher (gemv.cpp) and the per-ISA kernels
// (gemv_scalar.cpp, gemv_avx2.cpp, gemv_avx512.cpp, gemm_avx512.cpp, gemv_neon.cpp).
// Every kernel computes the outputs of weight rows [n0, n1) for all M activation rows.
#pragma once

#include <atomic>
#include <cstdint>

#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/backend/cpu/gemv.h"

namespace mx8::cpu::detail {

// The activations, copied so that each row is zero-padded to `stride` floats (a multiple of 32) and
// 64-byte aligned: kernels may read x[i, k] for k < stride without bounds checks.
// The AVX-512 E4M3 kernel pre-scales rows of x by powers of two, up to kPrescaledRows rows.
constexpr int64_t kPrescaledRows = 16;

struct XPanel {
  const float* data;
  int64_t m;
  int64_t k;
  int64_t stride;
  // Row i of data holds x_i * 2^pow2[i] (only the AVX-512 E4M3 kernel pre-scales; see gemv_avx512.cpp).
  int pow2[kPrescaledRows] = {};
};

// FP8 weights with everything the kernels need precomputed.
struct Fp8Operand {
  const uint8_t* codes;
  int64_t n, k;
  int64_t block_rows, block_cols;
  int64_t grid_cols;
  const float* scales_f32;  // one of the two is set
  const uint8_t* scales_u8;
  const float* ue8m0_lut;  // ue8m0_table()
  bool e5m2;
  // The scales of weight row n (one division per row, not per block): row(n)[kb] is the scale of
  // block kb along K.
  struct ScaleRow {
    const float* f32;
    const uint8_t* u8;
    const float* lut;
    float operator[](int64_t kb) const { return f32 ? f32[kb] : lut[u8[kb]]; }
  };
  ScaleRow row(int64_t n_row) const {
    int64_t base = (n_row / block_rows) * grid_cols;
    return {scales_f32 ? scales_f32 + base : nullptr, scales_f32 ? nullptr : scales_u8 + base, ue8m0_lut};
  }
};

// Benchmarks only: when set, gemv_fp8 on AVX2 uses the gather-table decode (gemv_fp8_rows_avx2_lut).
extern std::atomic<bool> g_fp8_table_decode;

// UE8M0 byte -> f32, as a table (exact: format::ue8m0_to_f32 of every byte).
const float* ue8m0_table();

void gemv_fp8_rows_scalar(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1);
using Fp8RowsFn = void (*)(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1);
// The kernel gemv_fp8 runs for these inputs when `isa` is active: a function of its arguments so that
// tests can check the choice, not only the results (a choice that fell back to the scalar kernel on
// every ISA would pass every comparison with the reference).
Fp8RowsFn fp8_rows_kernel(Isa isa, int64_t block_cols, int64_t m, bool e5m2, bool table_decode);
void gemv_bf16_rows_scalar(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1);
void gemv_f32_rows_scalar(const XPanel& x, const float* w, int64_t n, float* y, int64_t n0, int64_t n1);
using Bf16RowsFn = void (*)(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1);
using F32RowsFn = void (*)(const XPanel& x, const float* w, int64_t n, float* y, int64_t n0, int64_t n1);
// The BF16 and F32 kernels gemv_bf16 / gemv_f32 run when `isa` is active, for m rows of x (AVX-512
// machines take the AVX2 ones, but for BF16 at m > kPrescaledRows: gemm_bf16_rows_avx512; ARM the
// NEON ones).
Bf16RowsFn bf16_rows_kernel(Isa isa, int64_t m);
F32RowsFn f32_rows_kernel(Isa isa);

#if defined(__x86_64__)
// Requires block_cols % 32 == 0 (the dispatcher falls back to scalar otherwise).
void gemv_fp8_rows_avx2(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1);
void gemv_bf16_rows_avx2(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1);
void gemv_f32_rows_avx2(const XPanel& x, const float* w, int64_t n, float* y, int64_t n0, int64_t n1);
// AVX-512: E4M3 at M <= kPrescaledRows (other cases forward to the AVX2 kernel). Needs each row of
// the panel pre-scaled by prescale_panel_for_avx512 (which returns the power of two to store in
// XPanel::pow2).
void gemv_fp8_rows_avx512(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1);
int prescale_panel_for_avx512(float* data, int64_t count);
// AVX-512: E4M3 and BF16 at M > kPrescaledRows (prompt chunks), blocked for the caches; x as given.
void gemm_fp8_rows_avx512(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1);
void gemm_bf16_rows_avx512(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1);
// The same product with a 256-entry table and vgatherdps instead of the shift decode; kept only so
// that `mx8 bench gemv` can show why the shift decode was chosen. Reads x as given (not pre-scaled).
void gemv_fp8_rows_avx2_lut(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1);
#endif

#if defined(__aarch64__)
// NEON: E4M3 and E5M2 (block_cols % 32 == 0, like AVX2), BF16 and F32, every M.
void gemv_fp8_rows_neon(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1);
void gemv_bf16_rows_neon(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1);
void gemv_f32_rows_neon(const XPanel& x, const float* w, int64_t n, float* y, int64_t n0, int64_t n1);
#endif

}  // namespace mx8::cpu::detail
