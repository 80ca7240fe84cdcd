// Portable GEMV kernels: the path on CPUs without a SIMD kernel (and with MX8_CPU_ISA=scalar).
// f32 accumulation, FP8 decoded through a 256-entry table, scales applied once per block.
#include <cstring>

#include "backend/cpu/gemv_kernels.h"
#include "mx8/format/element.h"

namespace mx8::cpu::detail {
namespace {

struct DecodeTables {
  float e4m3[256], e5m2[256];
  DecodeTables() {
    for (int c = 0; c < 256; ++c) {
      e4m3[c] = format::e4m3_to_f32(uint8_t(c));
      e5m2[c] = format::e5m2_to_f32(uint8_t(c));
    }
  }
};

const DecodeTables& tables() {
  static const DecodeTables t;
  return t;
}

}  // namespace

void gemv_fp8_rows_scalar(const XPanel& x, const Fp8Operand& w, float* y, int64_t n0, int64_t n1) {
  const float* lut = w.e5m2 ? tables().e5m2 : tables().e4m3;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.codes + n * w.k;
    const Fp8Operand::ScaleRow scale = w.row(n);
    for (int64_t i = 0; i < x.m; ++i) {
      const float* xr = x.data + i * x.stride;
      float total = 0.f;
      for (int64_t kb = 0, k0 = 0; k0 < w.k; ++kb, k0 += w.block_cols) {
        int64_t k1 = k0 + w.block_cols < w.k ? k0 + w.block_cols : w.k;
        float acc = 0.f;
        for (int64_t k = k0; k < k1; ++k) acc += lut[row[k]] * xr[k];
        total += acc * scale[kb];
      }
      y[i * w.n + n] = total;
    }
  }
}

void gemv_bf16_rows_scalar(const XPanel& x, const uint16_t* w, int64_t n, float* y, int64_t n0, int64_t n1) {
  for (int64_t r = n0; r < n1; ++r) {
    const uint16_t* row = w + r * x.k;
    for (int64_t i = 0; i < x.m; ++i) {
      const float* xr = x.data + i * x.stride;
      float acc = 0.f;
      for (int64_t k = 0; k < x.k; ++k) acc += format::bf16_to_f32(row[k]) * xr[k];
      y[i * n + r] = acc;
    }
  }
}

void gemv_f32_rows_scalar(const XPanel& x, const float* w, int64_t n, float* y, int64_t n0, int64_t n1) {
  for (int64_t r = n0; r < n1; ++r) {
    const float* row = w + r * x.k;
    for (int64_t i = 0; i < x.m; ++i) {
      const float* xr = x.data + i * x.stride;
      float acc = 0.f;
      for (int64_t k = 0; k < x.k; ++k) acc += row[k] * xr[k];
      y[i * n + r] = acc;
    }
  }
}

}  // namespace mx8::cpu::detail
