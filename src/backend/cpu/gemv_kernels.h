// Internal interface between the GEMV dispatcher (gemv.cpp) and the per-ISA kernels
// (gemv_scalar.cpp, gemv_avx2.cpp, gemv_avx512.cpp, gemm_avx512.cpp, gemv_neon.cpp).
// Every kernel computes the outputs of weight rows [n0, n1) for all M activation rows.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>

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

// Weight rows [n, n + R) of an FP8 operand as the SIMD kernels read them, 32 codes at a time: in place
// up to kfull (K rounded down to 32), then from `tail`, each row's last K % 32 codes zero-padded to
// 32. Reading on in place would read the next row's codes (or past the matrix), and an E5M2 Inf
// there times x's zero padding would be NaN.
template <int R>
struct Fp8RowGroup {
  const uint8_t* rows[R];
  Fp8Operand::ScaleRow scale[R];
  int64_t kfull;
  alignas(64) uint8_t tail[R][32];

  Fp8RowGroup(const Fp8Operand& w, int64_t n) : kfull(w.k & ~int64_t(31)) {
    for (int r = 0; r < R; ++r) rows[r] = w.codes + (n + r) * w.k, scale[r] = w.row(n + r);
    if (kfull < w.k)
      for (int r = 0; r < R; ++r) {
        std::memset(tail[r], 0, 32);
        std::memcpy(tail[r], rows[r] + kfull, size_t(w.k - kfull));
      }
  }
  // The 32 codes of row r from column k (a multiple of 32 below K).
  const uint8_t* codes(int r, int64_t k) const { return k < kfull ? rows[r] + k : tail[r]; }
};

// The 32 codes of a weight row (K codes) from column k, a multiple of 32: in place, or copied into
// `buf` and zero-padded where they run past K (the tile kernels' padding beyond K included).
inline const uint8_t* codes32(const uint8_t* row, int64_t K, int64_t k, uint8_t* buf) {
  if (k + 32 <= K) return row + k;
  std::memset(buf, 0, 32);
  if (k < K) std::memcpy(buf, row + k, size_t(K - k));
  return buf;
}

// kc f32 weights of an F32 row (K values) from column k0, zeros past K (the tile kernels' fill).
inline void f32_fill(const float* row, int64_t K, int64_t k0, int64_t kc, float* dst) {
  const int64_t valid = k0 >= K ? 0 : K - k0 < kc ? K - k0 : kc;
  std::memcpy(dst, row + k0, size_t(valid) * 4);
  std::memset(dst + valid, 0, size_t(kc - valid) * 4);
}

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
