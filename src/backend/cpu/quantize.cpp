// The fast quantizer's driver: validation, the scale grid, the split over threads, scale storage.
// The arithmetic per block is the reference's (format/quantize_ref.cpp): amax by integer max of
// |x| bits, format::compute_block_scale, encode(x * inv_scale); only the loops differ.
#include "mx8/backend/cpu/quantize.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "backend/cpu/quantize_kernels.h"
#include "mx8/backend/cpu/cpu_features.h"
#include "mx8/format/scale_rule.h"

namespace mx8::cpu {

const detail::QuantKernels& detail::quant_kernels_for(Isa isa) {
#if defined(__x86_64__)
  if (isa == Isa::avx2 || isa == Isa::avx512) return quant_kernels_avx2();
#elif defined(__aarch64__)
  if (isa == Isa::neon) return quant_kernels_neon();
#endif
  return quant_kernels_scalar();
}

namespace {

using detail::QuantKernels;
using format::ElementFormat;
using format::SourceType;

const QuantKernels& kernels() {
  return detail::quant_kernels_for(active_isa());
}

size_t source_size(SourceType t) {
  return t == SourceType::f32 ? 4 : 2;
}

// Rows per task: about 64K elements, so that the pool's per-task cost is noise.
size_t rows_grain(int64_t cols) {
  return size_t(std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(cols, 1)));
}

void encode_segment(const QuantKernels& k, SourceType t, const void* src_row, int64_t c0, int64_t c1,
                    float inv_scale, const format::QuantSpec& spec, uint8_t* codes_row) {
  if (!k.encode(t, src_row, c0, c1, inv_scale, spec.element, spec.saturate, codes_row))
    detail::quant_kernels_scalar().encode(t, src_row, c0, c1, inv_scale, spec.element, spec.saturate,
                                          codes_row);
}

}  // namespace

void quantize(SourceType src_type, const void* src, int64_t rows, int64_t cols, const format::QuantSpec& spec,
              uint8_t* codes, uint8_t* scales, ThreadPool* pool) {
  format::validate_spec(spec, rows, cols);
  const QuantKernels& k = kernels();
  const format::ScaleGrid g = format::scale_grid(spec.blocking, rows, cols);
  const format::ScaleOptions opt{spec.rule, spec.amax_floor};
  const size_t esize = source_size(src_type);
  const size_t code_row = format::code_row_bytes(spec.element, cols);
  const auto* in = static_cast<const uint8_t*>(src);
  if (spec.element == ElementFormat::e2m1 && format::code_bytes(spec, rows, cols) > 0)
    std::memset(codes, 0, format::code_bytes(spec, rows, cols));
  std::vector<float> grid_f32(size_t(g.rows * g.cols));
  std::vector<uint8_t> grid_u8(size_t(g.rows * g.cols));

  if (spec.blocking.kind == format::Granularity::per_tensor) {
    // Two passes: the tensor's amax (a parallel max), then every row with the one scale.
    std::atomic<uint32_t> amax{0};
    parallel_for(pool, size_t(rows), rows_grain(cols), [&](size_t r0, size_t r1) {
      uint32_t m = 0;
      for (size_t r = r0; r < r1; ++r) m = k.amax(src_type, in + r * cols * esize, 0, cols, m);
      uint32_t seen = amax.load(std::memory_order_relaxed);
      while (m > seen && !amax.compare_exchange_weak(seen, m, std::memory_order_relaxed)) {
      }
    });
    if (!grid_f32.empty()) {
      format::BlockScale s =
          format::compute_block_scale(format::f32_from_bits(amax.load()), spec.element, opt);
      grid_f32[0] = s.scale;
      grid_u8[0] = s.ue8m0;
      parallel_for(pool, size_t(rows), rows_grain(cols), [&](size_t r0, size_t r1) {
        for (size_t r = r0; r < r1; ++r)
          encode_segment(k, src_type, in + r * cols * esize, 0, cols, s.inv_scale, spec,
                         codes + r * code_row);
      });
    }
  } else {
    // One task unit = one stripe of block_rows rows (1 for tiles and per-row scales). Each block is
    // read twice (max, then encode) while it is still in L1/L2. Stripes go to the ISA's fused kernel
    // when it has one for the element format.
    const size_t grain = g.block_rows == 1 ? rows_grain(cols) : 1;
    parallel_for(pool, size_t(g.rows), grain, [&](size_t gr0, size_t gr1) {
      for (int64_t gr = int64_t(gr0); gr < int64_t(gr1); ++gr) {
        const int64_t r0 = gr * g.block_rows, r1 = std::min(rows, r0 + g.block_rows);
        if (k.quantize_stripe &&
            k.quantize_stripe(src_type, in + r0 * cols * esize, r1 - r0, cols, g.block_cols, spec.element,
                              spec.saturate, opt, codes + r0 * code_row, grid_f32.data() + gr * g.cols,
                              grid_u8.data() + gr * g.cols))
          continue;
        for (int64_t gc = 0; gc < g.cols; ++gc) {
          const int64_t c0 = gc * g.block_cols, c1 = std::min(cols, c0 + g.block_cols);
          uint32_t amax = 0;
          for (int64_t r = r0; r < r1; ++r) amax = k.amax(src_type, in + r * cols * esize, c0, c1, amax);
          format::BlockScale s = format::compute_block_scale(format::f32_from_bits(amax), spec.element, opt);
          grid_f32[gr * g.cols + gc] = s.scale;
          grid_u8[gr * g.cols + gc] = s.ue8m0;
          for (int64_t r = r0; r < r1; ++r)
            encode_segment(k, src_type, in + r * cols * esize, c0, c1, s.inv_scale, spec,
                           codes + r * code_row);
        }
      }
    });
  }

  if (format::scale_bytes(spec, rows, cols) == 0) return;  // nothing to store (and scales may be null)
  if (spec.storage == format::ScaleStorage::f32) {
    std::memcpy(scales, grid_f32.data(), grid_f32.size() * 4);
  } else {
    format::pack_ue8m0_scales(grid_u8.data(), spec.storage, spec.blocking, rows, cols, scales);
  }
}

void dequantize(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                const format::QuantSpec& spec, float* dst, ThreadPool* pool) {
  format::validate_spec(spec, rows, cols);
  const QuantKernels& k = kernels();
  const format::ScaleGrid g = format::scale_grid(spec.blocking, rows, cols);
  std::vector<float> grid(size_t(g.rows * g.cols));
  format::scales_to_f32_grid(scales, spec, rows, cols, grid.data());
  const size_t code_row = format::code_row_bytes(spec.element, cols);
  parallel_for(pool, size_t(rows), rows_grain(cols), [&](size_t r0, size_t r1) {
    for (int64_t r = int64_t(r0); r < int64_t(r1); ++r) {
      const float* srow = grid.data() + (r / g.block_rows) * g.cols;
      for (int64_t gc = 0; gc < g.cols; ++gc) {
        const int64_t c0 = gc * g.block_cols, c1 = std::min(cols, c0 + g.block_cols);
        if (!k.decode(codes + r * code_row, c0, c1, srow[gc], spec.element, dst + r * cols))
          detail::quant_kernels_scalar().decode(codes + r * code_row, c0, c1, srow[gc], spec.element,
                                                dst + r * cols);
      }
    }
  });
}

}  // namespace mx8::cpu
