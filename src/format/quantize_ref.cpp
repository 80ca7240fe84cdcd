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

float load_source(SourceType t, const void* src, int64_t i) {
  switch (t) {
    case SourceType::f32:
      return static_cast<const float*>(src)[i];
    case SourceType::bf16:
      return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case SourceType::f16:
    default:
      return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
  }
}

void store_code(uint8_t* codes, ElementFormat f, int64_t cols, int64_t r, int64_t c, uint8_t code) {
  if (f != ElementFormat::e2m1) {
    codes[r * cols + c] = code;
    return;
  }
  uint8_t& byte = codes[r * ((cols + 1) / 2) + c / 2];
  byte = (c & 1) ? uint8_t((byte & 0x0F) | (code << 4)) : uint8_t((byte & 0xF0) | code);
}

// Encodes one block with the element format fixed at compile time (no per-element dispatch).
template <ElementFormat F>
void encode_block(SourceType t, const void* src, int64_t cols, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                  float inv_scale, bool saturate, uint8_t* codes) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      float x = load_source(t, src, r * cols + c) * inv_scale;
      store_code(codes, F, cols, r, c, encode_element(F, x, saturate));
    }
}

using EncodeBlockFn = void (*)(SourceType, const void*, int64_t, int64_t, int64_t, int64_t, int64_t, float,
                               bool, uint8_t*);

EncodeBlockFn encoder_for(ElementFormat f) {
  switch (f) {
    case ElementFormat::e4m3:
      return encode_block<ElementFormat::e4m3>;
    case ElementFormat::e5m2:
      return encode_block<ElementFormat::e5m2>;
    case ElementFormat::e3m2:
      return encode_block<ElementFormat::e3m2>;
    case ElementFormat::e2m3:
      return encode_block<ElementFormat::e2m3>;
    case ElementFormat::e2m1:
      return encode_block<ElementFormat::e2m1>;
    case ElementFormat::int8:
      return encode_block<ElementFormat::int8>;
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
  if (spec.element == ElementFormat::e2m1) std::memset(codes, 0, code_bytes(spec, rows, cols));
  ScaleGrid g = scale_grid(spec.blocking, rows, cols);
  const ScaleOptions opt{spec.rule, spec.amax_floor};
  const EncodeBlockFn encode = encoder_for(spec.element);
  std::vector<float> grid_f32(size_t(g.rows * g.cols));
  std::vector<uint8_t> grid_u8(size_t(g.rows * g.cols));
  for (int64_t gr = 0; gr < g.rows; ++gr) {
    int64_t r0 = gr * g.block_rows, r1 = std::min(rows, r0 + g.block_rows);
    for (int64_t gc = 0; gc < g.cols; ++gc) {
      int64_t c0 = gc * g.block_cols, c1 = std::min(cols, c0 + g.block_cols);
      uint32_t amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c)
          amax = amax_bits_accumulate(amax, load_source(src_type, src, r * cols + c));
      BlockScale s = compute_block_scale(f32_from_bits(amax), spec.element, opt);
      grid_f32[gr * g.cols + gc] = s.scale;
      grid_u8[gr * g.cols + gc] = s.ue8m0;
      encode(src_type, src, cols, r0, r1, c0, c1, s.inv_scale, spec.saturate, codes);
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
