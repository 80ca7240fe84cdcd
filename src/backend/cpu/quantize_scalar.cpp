// Portable row-segment kernels of the quantizer: the reference's arithmetic with the element format
// and source type fixed at compile time (no per-element switch). They also finish the ragged tails
// of the SIMD kernels, so every path computes each element with the same expression.
#include "backend/cpu/quantize_kernels.h"
#include "mx8/format/scale_rule.h"

namespace mx8::cpu::detail {
namespace {

template <SourceType T>
inline float load(const void* row, int64_t c) {
  if constexpr (T == SourceType::f32)
    return static_cast<const float*>(row)[c];
  else if constexpr (T == SourceType::bf16)
    return format::bf16_to_f32(static_cast<const uint16_t*>(row)[c]);
  else
    return format::f16_to_f32(static_cast<const uint16_t*>(row)[c]);
}

template <SourceType T>
uint32_t amax_t(const void* row, int64_t c0, int64_t c1, uint32_t acc) {
  for (int64_t c = c0; c < c1; ++c) acc = format::amax_bits_accumulate(acc, load<T>(row, c));
  return acc;
}

uint32_t amax_scalar(SourceType t, const void* row, int64_t c0, int64_t c1, uint32_t acc) {
  switch (t) {
    case SourceType::f32:
      return amax_t<SourceType::f32>(row, c0, c1, acc);
    case SourceType::bf16:
      return amax_t<SourceType::bf16>(row, c0, c1, acc);
    case SourceType::f16:
    default:
      return amax_t<SourceType::f16>(row, c0, c1, acc);
  }
}

template <ElementFormat F, SourceType T>
void encode_t(const void* row, int64_t c0, int64_t c1, float inv_scale, bool saturate, uint8_t* codes) {
  for (int64_t c = c0; c < c1; ++c) {
    uint8_t code = format::encode_element(F, load<T>(row, c) * inv_scale, saturate);
    if constexpr (F == ElementFormat::e2m1) {
      uint8_t& byte = codes[c / 2];
      byte = (c & 1) ? uint8_t((byte & 0x0F) | (code << 4)) : uint8_t((byte & 0xF0) | code);
    } else {
      codes[c] = code;
    }
  }
}

template <ElementFormat F>
void encode_f(SourceType t, const void* row, int64_t c0, int64_t c1, float inv_scale, bool saturate,
              uint8_t* codes) {
  switch (t) {
    case SourceType::f32:
      return encode_t<F, SourceType::f32>(row, c0, c1, inv_scale, saturate, codes);
    case SourceType::bf16:
      return encode_t<F, SourceType::bf16>(row, c0, c1, inv_scale, saturate, codes);
    case SourceType::f16:
    default:
      return encode_t<F, SourceType::f16>(row, c0, c1, inv_scale, saturate, codes);
  }
}

bool encode_scalar(SourceType t, const void* row, int64_t c0, int64_t c1, float inv_scale, ElementFormat f,
                   bool saturate, uint8_t* codes) {
  switch (f) {
    case ElementFormat::e4m3:
      encode_f<ElementFormat::e4m3>(t, row, c0, c1, inv_scale, saturate, codes);
      break;
    case ElementFormat::e5m2:
      encode_f<ElementFormat::e5m2>(t, row, c0, c1, inv_scale, saturate, codes);
      break;
    case ElementFormat::e3m2:
      encode_f<ElementFormat::e3m2>(t, row, c0, c1, inv_scale, saturate, codes);
      break;
    case ElementFormat::e2m3:
      encode_f<ElementFormat::e2m3>(t, row, c0, c1, inv_scale, saturate, codes);
      break;
    case ElementFormat::e2m1:
      encode_f<ElementFormat::e2m1>(t, row, c0, c1, inv_scale, saturate, codes);
      break;
    case ElementFormat::int8:
      encode_f<ElementFormat::int8>(t, row, c0, c1, inv_scale, saturate, codes);
      break;
  }
  return true;
}

// One decode table per format, built once (decode_element is exact, so the tables are too).
struct DecodeTables {
  float t[format::kElementFormatCount][256];
  DecodeTables() {
    for (int f = 0; f < format::kElementFormatCount; ++f)
      for (int c = 0; c < 256; ++c) t[f][c] = format::decode_element(ElementFormat(f), uint8_t(c));
  }
};

bool decode_scalar(const uint8_t* codes, int64_t c0, int64_t c1, float scale, ElementFormat f, float* dst) {
  static const DecodeTables tables;
  const float* lut = tables.t[int(f)];
  if (f == ElementFormat::e2m1) {
    for (int64_t c = c0; c < c1; ++c) {
      uint8_t byte = codes[c / 2];
      dst[c] = lut[(c & 1) ? byte >> 4 : byte & 0xF] * scale;
    }
  } else {
    for (int64_t c = c0; c < c1; ++c) dst[c] = lut[codes[c]] * scale;
  }
  return true;
}

}  // namespace

const QuantKernels& quant_kernels_scalar() {
  static const QuantKernels k{amax_scalar, encode_scalar, decode_scalar, nullptr};
  return k;
}

}  // namespace mx8::cpu::detail
