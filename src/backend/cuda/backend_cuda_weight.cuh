// Device-side element access to a weight in any WeightFormat, the scalar path shared by the
// embedding lookup and the tiled GEMM. Decoding uses the format layer's host+device codecs, so a
// decoded element equals the CPU backend's (lut[code] * block scale) bit for bit.
#pragma once

#include <cstdint>

#include "mx8/backend/backend.h"
#include "mx8/format/common.h"
#include "mx8/format/element.h"
#include "mx8/format/ue8m0.h"

namespace mx8::backend::cuda_impl {

// The scale of element (row, col) of a block-scaled weight.
__device__ __forceinline__ float weight_scale_at(const WeightView& w, int64_t row, int64_t col) {
  if (w.format == WeightFormat::mxfp8) {
    const int64_t nb = (w.k + 31) / 32;
    return format::ue8m0_to_f32(static_cast<const uint8_t*>(w.scales)[row * nb + col / 32]);
  }
  const int64_t nb = (w.k + 127) / 128;
  const int64_t idx = (row / 128) * nb + col / 128;
  if (w.scale_type == ScaleType::f32) return static_cast<const float*>(w.scales)[idx];
  return format::ue8m0_to_f32(static_cast<const uint8_t*>(w.scales)[idx]);
}

// Element (row, col) as f32.
__device__ __forceinline__ float weight_at(const WeightView& w, int64_t row, int64_t col) {
  const int64_t i = row * w.k + col;
  switch (w.format) {
    case WeightFormat::f32:
      return static_cast<const float*>(w.data)[i];
    case WeightFormat::bf16:
      return format::bf16_to_f32(static_cast<const uint16_t*>(w.data)[i]);
    default:
      return format::e4m3_to_f32(static_cast<const uint8_t*>(w.data)[i]) * weight_scale_at(w, row, col);
  }
}

}  // namespace mx8::backend::cuda_impl
