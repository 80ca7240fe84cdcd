// GEMV dispatch (ISA choice, activation panel, thread split), validation, and the scalar references.
#include "mx8/backend/cpu/gemv.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "backend/cpu/gemv_kernels.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::cpu {
namespace detail {

std::atomic<bool> g_fp8_table_decode{false};

Fp8RowsFn fp8_rows_kernel(Isa isa, int64_t block_cols, int64_t m, bool e5m2, bool table_decode) {
#if defined(__x86_64__)
  // The AVX2 kernels also serve AVX-512 machines where no AVX-512 kernel exists.
  if ((isa == Isa::avx2 || isa == Isa::avx512) && block_cols % 32 == 0) {
    if (table_decode) return gemv_fp8_rows_avx2_lut;
    if (isa == Isa::avx512 && m <= kPrescaledRows && !e5m2) return gemv_fp8_rows_avx512;
    if (isa == Isa::avx512 && !e5m2) return gemm_fp8_rows_avx512;
    return gemv_fp8_rows_avx2;
  }
#elif defined(__aarch64__)
  if (isa == Isa::neon && block_cols % 32 == 0) return gemv_fp8_rows_neon;
#endif
  (void)m, (void)e5m2, (void)table_decode;
  return gemv_fp8_rows_scalar;
}

Bf16RowsFn bf16_rows_kernel(Isa isa, int64_t m) {
#if defined(__x86_64__)
  if (isa == Isa::avx512 && m > kPrescaledRows) return gemm_bf16_rows_avx512;
  if (isa == Isa::avx2 || isa == Isa::avx512) return gemv_bf16_rows_avx2;
#elif defined(__aarch64__)
  if (isa == Isa::neon) return gemv_bf16_rows_neon;
#endif
  (void)isa, (void)m;
  return gemv_bf16_rows_scalar;
}

F32RowsFn f32_rows_kernel(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::avx2 || isa == Isa::avx512) return gemv_f32_rows_avx2;
#elif defined(__aarch64__)
  if (isa == Isa::neon) return gemv_f32_rows_neon;
#endif
  (void)isa;
  return gemv_f32_rows_scalar;
}

const float* ue8m0_table() {
  static const auto table = [] {
    std::unique_ptr<float[]> t(new float[256]);
    for (int b = 0; b < 256; ++b) t[b] = format::ue8m0_to_f32(uint8_t(b));
    return t;
  }();
  return table.get();
}

}  // namespace detail

namespace {

using detail::Fp8Operand;
using detail::XPanel;

constexpr int64_t round_up(int64_t a, int64_t b) {
  return (a + b - 1) / b * b;
}

// The caller's copy of x, zero-padded and aligned. Thread-local so that decode steps allocate nothing.
XPanel make_panel(const float* x, int64_t m, int64_t k) {
  struct Buffer {
    float* data = nullptr;
    size_t floats = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buf;
  int64_t stride = round_up(std::max<int64_t>(k, 1), 32);
  size_t need = size_t(m * stride);
  if (need > buf.floats) {
    std::free(buf.data);
    buf.data = static_cast<float*>(std::aligned_alloc(64, round_up(int64_t(need) * 4, 64)));
    if (!buf.data)
      throw Error("gemv: out of memory for a " + std::to_string(need) + "-float activation panel");
    buf.floats = need;
  }
  for (int64_t i = 0; i < m; ++i) {
    std::memcpy(buf.data + i * stride, x + i * k, size_t(k) * 4);
    std::memset(buf.data + i * stride + k, 0, size_t(stride - k) * 4);
  }
  return {buf.data, m, k, stride};
}

// Splits the N outputs into tasks of whole 4-row groups, ~8 tasks per thread (load balance on a
// shared, noisy machine) but at least 16 rows each.
template <class RowsFn>
void run_rows(int64_t n, ThreadPool* pool, RowsFn&& rows) {
  int threads = pool ? pool->threads() : 1;
  int64_t grain = round_up(std::clamp<int64_t>(n / (threads * 8), 16, 1024), 4);
  parallel_for(pool, size_t(n), size_t(grain), [&](size_t b, size_t e) { rows(int64_t(b), int64_t(e)); });
}

Fp8Operand make_operand(const Fp8Matrix& w) {
  Fp8Operand op{};
  op.codes = w.codes;
  op.n = w.rows;
  op.k = w.cols;
  op.block_rows = w.block_rows;
  op.block_cols = w.block_cols;
  op.grid_cols = (w.cols + w.block_cols - 1) / w.block_cols;
  if (w.scale_storage == format::ScaleStorage::f32)
    op.scales_f32 = static_cast<const float*>(w.scales);
  else
    op.scales_u8 = static_cast<const uint8_t*>(w.scales);
  op.ue8m0_lut = detail::ue8m0_table();
  op.e5m2 = w.element == format::ElementFormat::e5m2;
  return op;
}

void check_dense_args(const char* fn, const float* x, int64_t m, const void* w, int64_t n, int64_t k,
                      float* y) {
  if (m < 0 || n < 0 || k < 0)
    throw Error(std::string(fn) + ": negative shape m=" + std::to_string(m) + " n=" + std::to_string(n) +
                " k=" + std::to_string(k));
  if (m > 0 && n > 0 && (!x || !w || !y)) throw Error(std::string(fn) + ": null pointer argument");
}

}  // namespace

void validate_fp8_matrix(const Fp8Matrix& w) {
  if (w.rows < 0 || w.cols < 0)
    throw Error("gemv_fp8: negative weight shape " + std::to_string(w.rows) + "x" + std::to_string(w.cols));
  if (w.block_rows <= 0 || w.block_cols <= 0)
    throw Error("gemv_fp8: block shape must be positive, got " + std::to_string(w.block_rows) + "x" +
                std::to_string(w.block_cols));
  if (w.element != format::ElementFormat::e4m3 && w.element != format::ElementFormat::e5m2)
    throw Error(std::string("gemv_fp8: weights must be e4m3 or e5m2, not ") +
                format::element_traits(w.element).name);
  if (w.scale_storage != format::ScaleStorage::f32 && w.scale_storage != format::ScaleStorage::ue8m0)
    throw Error(std::string("gemv_fp8: scales must be stored as f32 or ue8m0 (row-major grid), not ") +
                format::scale_storage_name(w.scale_storage));
  if (w.rows > 0 && w.cols > 0 && (!w.codes || !w.scales)) throw Error("gemv_fp8: null codes or scales");
}

Fp8Matrix fp8_matrix_from_spec(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                               const format::QuantSpec& spec) {
  format::validate_spec(spec, rows, cols);
  if (spec.blocking.kind == format::Granularity::per_tensor)
    throw Error("gemv_fp8: per-tensor scales are not supported; use per-row or blocks");
  format::ScaleGrid g = format::scale_grid(spec.blocking, rows, cols);
  Fp8Matrix w;
  w.codes = codes;
  w.scales = scales;
  w.rows = rows;
  w.cols = cols;
  w.block_rows = g.block_rows;
  w.block_cols = g.block_cols;
  w.element = spec.element;
  w.scale_storage = spec.storage;
  validate_fp8_matrix(w);
  return w;
}

// ---- references: the definition of the products ----

void gemv_fp8_ref(const float* x, int64_t m, const Fp8Matrix& w, float* y) {
  validate_fp8_matrix(w);
  check_dense_args("gemv_fp8_ref", x, m, w.codes, w.rows, w.cols, y);
  // Shares nothing with the fast paths' precomputation (make_operand, ue8m0_table), so that a mistake
  // there cannot hide in both sides of a test: each scale is read from the matrix and decoded here.
  const int64_t grid_cols = (w.cols + w.block_cols - 1) / w.block_cols;
  auto scale = [&](int64_t n, int64_t k) -> double {
    const int64_t at = (n / w.block_rows) * grid_cols + k / w.block_cols;
    return w.scale_storage == format::ScaleStorage::f32
               ? double(static_cast<const float*>(w.scales)[at])
               : double(format::ue8m0_to_f32(static_cast<const uint8_t*>(w.scales)[at]));
  };
  for (int64_t i = 0; i < m; ++i)
    for (int64_t n = 0; n < w.rows; ++n) {
      double sum = 0;
      for (int64_t k = 0; k < w.cols; ++k) {
        double wv = double(format::decode_element(w.element, w.codes[n * w.cols + k])) * scale(n, k);
        sum += double(x[i * w.cols + k]) * wv;
      }
      y[i * w.rows + n] = float(sum);
    }
}

void gemv_bf16_ref(const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y) {
  check_dense_args("gemv_bf16_ref", x, m, w, n, k, y);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double sum = 0;
      for (int64_t c = 0; c < k; ++c) sum += double(x[i * k + c]) * double(format::bf16_to_f32(w[r * k + c]));
      y[i * n + r] = float(sum);
    }
}

void gemv_f32_ref(const float* x, int64_t m, const float* w, int64_t n, int64_t k, float* y) {
  check_dense_args("gemv_f32_ref", x, m, w, n, k, y);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double sum = 0;
      for (int64_t c = 0; c < k; ++c) sum += double(x[i * k + c]) * double(w[r * k + c]);
      y[i * n + r] = float(sum);
    }
}

// ---- fast paths ----

void gemv_fp8(const float* x, int64_t m, const Fp8Matrix& w, float* y, ThreadPool* pool) {
  validate_fp8_matrix(w);
  check_dense_args("gemv_fp8", x, m, w.codes, w.rows, w.cols, y);
  if (m == 0 || w.rows == 0) return;
  XPanel panel = make_panel(x, m, w.cols);
  Fp8Operand op = make_operand(w);
  const detail::Fp8RowsFn kernel = detail::fp8_rows_kernel(
      active_isa(), w.block_cols, m, op.e5m2, detail::g_fp8_table_decode.load(std::memory_order_relaxed));
#if defined(__x86_64__)
  // The panel is this thread's own buffer (make_panel), so scaling it in place is safe. Row by row:
  // rows of a batch may lie far apart in magnitude.
  if (kernel == detail::gemv_fp8_rows_avx512)
    for (int64_t i = 0; i < m; ++i)
      panel.pow2[i] =
          detail::prescale_panel_for_avx512(const_cast<float*>(panel.data) + i * panel.stride, panel.stride);
#endif
  run_rows(w.rows, pool, [&](int64_t n0, int64_t n1) { kernel(panel, op, y, n0, n1); });
}

void gemv_bf16(const float* x, int64_t m, const uint16_t* w, int64_t n, int64_t k, float* y,
               ThreadPool* pool) {
  check_dense_args("gemv_bf16", x, m, w, n, k, y);
  if (m == 0 || n == 0) return;
  XPanel panel = make_panel(x, m, k);
  const detail::Bf16RowsFn kernel = detail::bf16_rows_kernel(active_isa(), m);
  run_rows(n, pool, [&](int64_t n0, int64_t n1) { kernel(panel, w, n, y, n0, n1); });
}

void gemv_f32(const float* x, int64_t m, const float* w, int64_t n, int64_t k, float* y, ThreadPool* pool) {
  check_dense_args("gemv_f32", x, m, w, n, k, y);
  if (m == 0 || n == 0) return;
  XPanel panel = make_panel(x, m, k);
  const detail::F32RowsFn kernel = detail::f32_rows_kernel(active_isa());
  run_rows(n, pool, [&](int64_t n0, int64_t n1) { kernel(panel, w, n, y, n0, n1); });
}

}  // namespace mx8::cpu
