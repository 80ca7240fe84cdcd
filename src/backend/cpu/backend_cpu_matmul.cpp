// Scalar matmuls of the CPU backend, one per weight format: the obviously-correct path, used where
// no SIMD kernel exists and as the reference in tests. Each output is a dot product accumulated in
// f32 in k order (for block-scaled FP8: a partial sum per scale block, multiplied by the block
// scale and added to the row total, as the FP8 GEMMs promote every 128 of k).
#include <cstring>

#include "backend/cpu/backend_cpu.h"
#include "mx8/error.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cpu_impl {

const float* e4m3_table() {
  static const auto table = [] {
    std::vector<float> t(256);
    for (int c = 0; c < 256; ++c) t[c] = format::e4m3_to_f32(uint8_t(c));
    return t;
  }();
  return table.data();
}

namespace {

// 4-way split accumulation: f32 sums in a fixed, documented order (lane j takes k = j mod 4), then
// (s0 + s1) + (s2 + s3). Fixed order means results do not depend on threads or batch size.
inline float dot_f32(const float* a, const float* b, int64_t k) {
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= k; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += a[i + j] * b[i + j];
  for (; i < k; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

inline float dot_bf16(const uint16_t* w, const float* x, int64_t k) {
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= k; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += format::bf16_to_f32(w[i + j]) * x[i + j];
  for (; i < k; ++i) s[0] += format::bf16_to_f32(w[i]) * x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// Sum over one scale block of E4M3 codes.
inline float dot_e4m3(const uint8_t* w, const float* x, int64_t k, const float* lut) {
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= k; i += 4)
    for (int j = 0; j < 4; ++j) s[j] += lut[w[i + j]] * x[i + j];
  for (; i < k; ++i) s[0] += lut[w[i]] * x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

float block_scale(const WeightView& w, int64_t row, int64_t kb) {
  if (w.format == WeightFormat::mxfp8) {
    int64_t nb = (w.k + 31) / 32;
    return format::ue8m0_to_f32(static_cast<const uint8_t*>(w.scales)[row * nb + kb]);
  }
  int64_t nb = (w.k + 127) / 128;
  int64_t idx = (row / 128) * nb + kb;
  if (w.scale_type == ScaleType::f32) return static_cast<const float*>(w.scales)[idx];
  return format::ue8m0_to_f32(static_cast<const uint8_t*>(w.scales)[idx]);
}

float dot_row(const WeightView& w, int64_t row, const float* x) {
  switch (w.format) {
    case WeightFormat::f32:
      return dot_f32(static_cast<const float*>(w.data) + row * w.k, x, w.k);
    case WeightFormat::bf16:
      return dot_bf16(static_cast<const uint16_t*>(w.data) + row * w.k, x, w.k);
    case WeightFormat::fp8_block:
    case WeightFormat::mxfp8: {
      const int64_t bk = w.format == WeightFormat::mxfp8 ? 32 : 128;
      const uint8_t* codes = static_cast<const uint8_t*>(w.data) + row * w.k;
      const float* lut = e4m3_table();
      float acc = 0;
      for (int64_t k0 = 0, kb = 0; k0 < w.k; k0 += bk, ++kb) {
        int64_t len = w.k - k0 < bk ? w.k - k0 : bk;
        acc += dot_e4m3(codes + k0, x + k0, len, lut) * block_scale(w, row, kb);
      }
      return acc;
    }
  }
  return 0;
}

}  // namespace

void matmul_scalar(const WeightView& w, const float* x, int64_t m, float* y, mx8::cpu::ThreadPool* pool) {
  // Threads split the output features; each weight row is read once for all m inputs. Products too
  // small to repay waking the workers (about 10 us) run on the calling thread.
  if (w.n * w.k * m < (int64_t(1) << 17)) pool = nullptr;
  mx8::cpu::parallel_for(pool, size_t(w.n), 16, [&](size_t begin, size_t end) {
    for (size_t row = begin; row < end; ++row)
      for (int64_t r = 0; r < m; ++r) y[r * w.n + int64_t(row)] = dot_row(w, int64_t(row), x + r * w.k);
  });
}

void weight_row_to_f32(const WeightView& w, int64_t row, float* out) {
  switch (w.format) {
    case WeightFormat::f32:
      std::memcpy(out, static_cast<const float*>(w.data) + row * w.k, size_t(w.k) * 4);
      return;
    case WeightFormat::bf16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + row * w.k;
      for (int64_t i = 0; i < w.k; ++i) out[i] = format::bf16_to_f32(src[i]);
      return;
    }
    case WeightFormat::fp8_block:
    case WeightFormat::mxfp8: {
      const int64_t bk = w.format == WeightFormat::mxfp8 ? 32 : 128;
      const uint8_t* codes = static_cast<const uint8_t*>(w.data) + row * w.k;
      const float* lut = e4m3_table();
      for (int64_t i = 0; i < w.k; ++i) out[i] = lut[codes[i]] * block_scale(w, row, i / bk);
      return;
    }
  }
}

}  // namespace mx8::backend::cpu_impl
