// The scalar reference quantizer (quantize_ref.h). Structure: validate, compute one BlockScale per
// block into a canonical grid, encode the block's elements with a format-specialised encoder, then
// store the grid in the requested storage.
#include "mx8/format/quantize_ref.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "mx8/error.h"

namespace mx8::format {

namespace {

// Widens n source values starting at element `offset` to f32 (exact for every source type).
void load_span(SourceType t, const void* src, int64_t offset, int64_t n, float* out) {
  switch (t) {
    case SourceType::f32:
      std::memcpy(out, static_cast<const float*>(src) + offset, size_t(n) * 4);
      return;
    case SourceType::bf16: {
      const uint16_t* p = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]);
      return;
    }
    case SourceType::f16: {
      const uint16_t* p = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
      return;
    }
  }
  throw Error("unknown source type " + std::to_string(int(t)));
}

// Encodes one row span of a block, the element format fixed at compile time (no per-element dispatch).
template <ElementFormat F>
void encode_span(const float* x, int64_t n, float inv_scale, bool saturate, uint8_t* row_codes, int64_t c0) {
  if constexpr (F == ElementFormat::e2m1) {
    for (int64_t i = 0; i < n; ++i) {
      int64_t c = c0 + i;
      uint8_t code = encode_element(F, x[i] * inv_scale, saturate);
      uint8_t& byte = row_codes[c / 2];
      byte = (c & 1) ? uint8_t((byte & 0x0F) | (code << 4)) : uint8_t((byte & 0xF0) | code);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) row_codes[c0 + i] = encode_element(F, x[i] * inv_scale, saturate);
  }
}

using EncodeSpanFn = void (*)(const float*, int64_t, float, bool, uint8_t*, int64_t);

EncodeSpanFn encoder_for(ElementFormat f) {
  switch (f) {
    case ElementFormat::e4m3:
      return encode_span<ElementFormat::e4m3>;
    case ElementFormat::e5m2:
      return encode_span<ElementFormat::e5m2>;
    case ElementFormat::e3m2:
      return encode_span<ElementFormat::e3m2>;
    case ElementFormat::e2m3:
      return encode_span<ElementFormat::e2m3>;
    case ElementFormat::e2m1:
      return encode_span<ElementFormat::e2m1>;
    case ElementFormat::int8:
      return encode_span<ElementFormat::int8>;
  }
  throw Error("unknown element format " + std::to_string(int(f)));
}

}  // namespace

void validate_spec(const QuantSpec& spec, int64_t rows, int64_t cols) {
  if (int(spec.element) >= kElementFormatCount)
    throw Error("unknown element format " + std::to_string(int(spec.element)));
  if (spec.rule != ScaleRule::ceil && spec.rule != ScaleRule::floor && spec.rule != ScaleRule::fp32)
    throw Error("unknown scale rule " + std::to_string(int(spec.rule)));
  if (spec.rule == ScaleRule::fp32 && spec.storage != ScaleStorage::f32)
    throw Error(std::string("the fp32 scale rule makes scales that are not powers of two; they need f32 "
                            "storage, not ") +
                scale_storage_name(spec.storage));
  if (!(spec.amax_floor >= 0.f) || !std::isfinite(spec.amax_floor))
    throw Error("amax floor must be finite and >= 0, got " + std::to_string(spec.amax_floor));
  validate_storage(spec.storage, spec.blocking, rows, cols);
}

size_t code_row_bytes(ElementFormat f, int64_t cols) {
  return f == ElementFormat::e2m1 ? size_t((cols + 1) / 2) : size_t(cols);
}

size_t code_bytes(const QuantSpec& spec, int64_t rows, int64_t cols) {
  return size_t(rows) * code_row_bytes(spec.element, cols);
}

size_t scale_bytes(const QuantSpec& spec, int64_t rows, int64_t cols) {
  return scale_storage_bytes(spec.storage, spec.blocking, rows, cols);
}

void quantize_ref(SourceType src_type, const void* src, int64_t rows, int64_t cols, const QuantSpec& spec,
                  uint8_t* codes, uint8_t* scales) {
  validate_spec(spec, rows, cols);
  if (spec.element == ElementFormat::e2m1 && code_bytes(spec, rows, cols) != 0)
    std::memset(codes, 0, code_bytes(spec, rows, cols));
  const ScaleGrid g = scale_grid(spec.blocking, rows, cols);
  const ScaleOptions opt{spec.rule, spec.amax_floor};
  const EncodeSpanFn encode = encoder_for(spec.element);
  const size_t row_bytes = code_row_bytes(spec.element, cols);
  std::vector<float> grid_f32(size_t(g.rows * g.cols));
  std::vector<uint8_t> grid_u8(size_t(g.rows * g.cols));
  std::vector<float> span(size_t(std::min(cols, g.block_cols)));
  // Per block: pass 1 finds amax (NaN-propagating), pass 2 encodes x * inv_scale.
  for (int64_t gr = 0; gr < g.rows; ++gr) {
    const int64_t r0 = gr * g.block_rows, r1 = std::min(rows, r0 + g.block_rows);
    for (int64_t gc = 0; gc < g.cols; ++gc) {
      const int64_t c0 = gc * g.block_cols, n = std::min(cols, c0 + g.block_cols) - c0;
      uint32_t amax = 0;
      for (int64_t r = r0; r < r1; ++r) {
        load_span(src_type, src, r * cols + c0, n, span.data());
        for (int64_t i = 0; i < n; ++i) amax = amax_bits_accumulate(amax, span[size_t(i)]);
      }
      const BlockScale s = compute_block_scale(f32_from_bits(amax), spec.element, opt);
      grid_f32[size_t(gr * g.cols + gc)] = s.scale;
      grid_u8[size_t(gr * g.cols + gc)] = s.ue8m0;
      for (int64_t r = r0; r < r1; ++r) {
        load_span(src_type, src, r * cols + c0, n, span.data());
        encode(span.data(), n, s.inv_scale, spec.saturate, codes + size_t(r) * row_bytes, c0);
      }
    }
  }
  if (spec.storage == ScaleStorage::f32) {
    if (!grid_f32.empty()) std::memcpy(scales, grid_f32.data(), grid_f32.size() * 4);
  } else {
    pack_ue8m0_scales(grid_u8.data(), spec.storage, spec.blocking, rows, cols, scales);
  }
}

void scales_to_f32_grid(const uint8_t* scales, const QuantSpec& spec, int64_t rows, int64_t cols,
                        float* grid) {
  validate_spec(spec, rows, cols);
  convert_scales(scales, spec.storage, grid, ScaleStorage::f32, spec.blocking, rows, cols);
}

void dequantize_ref(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                    const QuantSpec& spec, float* dst) {
  validate_spec(spec, rows, cols);
  ScaleGrid g = scale_grid(spec.blocking, rows, cols);
  std::vector<float> grid(size_t(g.rows * g.cols));
  scales_to_f32_grid(scales, spec, rows, cols, grid.data());
  // A 256-entry decode table: decode_element is exact, so the table is too.
  float lut[256];
  for (int i = 0; i < 256; ++i) lut[i] = decode_element(spec.element, uint8_t(i));
  for (int64_t r = 0; r < rows; ++r) {
    const float* srow = grid.data() + (r / g.block_rows) * g.cols;
    for (int64_t c = 0; c < cols; ++c)
      dst[r * cols + c] = lut[load_code(codes, spec.element, cols, r, c)] * srow[c / g.block_cols];
  }
}

}  // namespace mx8::format
