// A source tensor converted into a matmul weight format (f32, bf16, fp8 with 128x128 scale blocks,
// mxfp8 with 1x32 tiles) at load, straight into the memory that will hold it.
#pragma once

#include <cstdint>

#include "model/model_source.h"
#include "mx8/backend/backend.h"
#include "mx8/format/common.h"

namespace mx8::model {

// Writes `t` (an [n, k] matrix) as `format` into `data` (backend::weight_data_bytes) and, for the FP8
// formats, `scales` (backend::weight_scale_bytes; UE8M0 bytes, or float32 under the fp32 rule, fp8
// only). Bit for bit the result of quantizing source_to_f32(t) whole (format::quantize_ref), but
// done 128 rows at a time on all hardware threads, so that no f32 copy of the tensor is made: a
// Q8_0 file loaded as fp8 otherwise spends most of its load zeroing, faulting in and freeing a
// 4-byte-per-weight buffer.
void convert_weight(const SourceTensor& t, int64_t n, int64_t k, backend::WeightFormat format,
                    format::ScaleRule rule, void* data, void* scales);

}  // namespace mx8::model
