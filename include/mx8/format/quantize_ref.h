// The scalar reference quantizer and dequantizer. Every backend (SIMD CPU, CUDA) is tested against
// these bit for bit, so they favour obviousness over speed (the format switch is still hoisted out of
// the element loop).
//
// Quantize, per block: amax = max |x| (NaN-propagating), scale from the rule (scale_rule.h), then
// code = encode_element(x * inv_scale, saturate) (numerics.md 9.4: multiplying by an exact power-of-two
// reciprocal gives the same bits as dividing). Dequantize: decode(code) * scale.
//
// Codes are row-major [rows, cols], one byte per element, except E2M1: two per byte, element 2i of a row
// in the low nibble and 2i+1 in the high nibble; each row starts on a byte (an odd last element leaves
// a zero high nibble). FP6 codes take one byte each (low 6 bits).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mx8/format/element.h"
#include "mx8/format/layout.h"
#include "mx8/format/scale_rule.h"

namespace mx8::format {

struct QuantSpec {
  ElementFormat element = ElementFormat::e4m3;
  ScaleRule rule = ScaleRule::ceil;
  Blocking blocking = Blocking::tile(128);
  ScaleStorage storage = ScaleStorage::ue8m0;
  bool saturate = true;
  float amax_floor = 0.f;  // DeepSeek: 1e-4
};

enum class SourceType : uint8_t { f32, bf16, f16 };

// Throws mx8::Error on a malformed spec: bad blocking, UE8M0 storage with the fp32 rule, a storage
// that cannot hold the grid, negative shape, amax_floor negative or not finite.
void validate_spec(const QuantSpec& spec, int64_t rows, int64_t cols);

// Bytes of one row of codes, and of the whole tensor.
size_t code_row_bytes(ElementFormat f, int64_t cols);
size_t code_bytes(const QuantSpec& spec, int64_t rows, int64_t cols);
size_t scale_bytes(const QuantSpec& spec, int64_t rows, int64_t cols);

// Reads one code of row-major codes (handles E2M1 nibble packing).
inline uint8_t load_code(const uint8_t* codes, ElementFormat f, int64_t cols, int64_t r, int64_t c) {
  if (f != ElementFormat::e2m1) return codes[r * cols + c];
  uint8_t byte = codes[r * ((cols + 1) / 2) + c / 2];
  return (c & 1) ? uint8_t(byte >> 4) : uint8_t(byte & 0xF);
}

void quantize_ref(SourceType src_type, const void* src, int64_t rows, int64_t cols, const QuantSpec& spec,
                  uint8_t* codes, uint8_t* scales);
void dequantize_ref(const uint8_t* codes, const uint8_t* scales, int64_t rows, int64_t cols,
                    const QuantSpec& spec, float* dst);

// The canonical f32 scale grid [grid rows, grid cols] of a quantized tensor, whatever its storage.
void scales_to_f32_grid(const uint8_t* scales, const QuantSpec& spec, int64_t rows, int64_t cols,
                        float* grid);

}  // namespace mx8::format
