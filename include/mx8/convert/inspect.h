// `mx8 inspect PATH [--compare ORIGINAL]`: what a checkpoint holds and what quantizing it cost.
// Per tensor: dtype (with scale layout for quantized weights), shape, bytes; totals against the same
// model stored in BF16 and in FP32 (the "up to 75% less memory" claim, measured for this model);
// for quantized tensors the histogram of scale exponents and the fraction of codes at the
// element's largest magnitude (saturated); with --compare, per-tensor SQNR and relative error of
// the (dequantized) tensor against the same-named tensor of ORIGINAL.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mx8::convert {

struct InspectTensor {
  std::string name, dtype;  // dtype as Source::describe() gives it
  std::vector<int64_t> shape;
  uint64_t bytes = 0;  // including scales
  int64_t numel = 0;
  bool is_float = false, quantized = false;
  // Quantized tensors only.
  std::map<int, int64_t> scale_exponents;  // log2 of each scale (floor for non-powers of two)
  int64_t scales = 0, nonpow2_scales = 0;
  int64_t codes = 0, saturated = 0;  // codes at +-max of the element format
  // With --compare.
  bool compared = false;
  std::string compare_note;  // why not compared, when not
  // Over the elements where both tensors are finite; sqnr_db is inf when those are all equal.
  double sqnr_db = 0, rel_err = 0, max_abs_err = 0;
  int64_t nonfinite = 0;  // elements that are NaN or infinite in either tensor (never counted as exact)
};

struct InspectReport {
  std::string path, format;  // "safetensors" or "gguf"
  std::vector<InspectTensor> tensors;
  uint64_t bytes = 0, bf16_bytes = 0, f32_bytes = 0;
};

InspectReport inspect_checkpoint(const std::string& path, const std::optional<std::string>& compare,
                                 int threads);

}  // namespace mx8::convert
