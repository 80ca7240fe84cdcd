// `mx8 convert`: a Hugging Face folder or a GGUF file in, a Hugging Face folder out.
//
// Schemes (docs/CONVERT.md has the exact layouts):
//   ds-fp8  DeepSeek-V3.1 layout: "X.weight" F8_E4M3 [out, in] + "X.weight_scale_inv" F32
//           [ceil(out/128), ceil(in/128)] (the dequantization multiplier per 128x128 block);
//           config.json gains quantization_config (quant_method fp8, fmt e4m3, scale_fmt ue8m0 unless
//           --scale-rule fp32, weight_block_size [128, 128], activation_scheme dynamic).
//   mxfp8   "X.weight" F8_E4M3 [out, in] + "X.weight_scale" F8_E8M0 [out, ceil(in/32)].
//   mxfp4   "X.weight" U8 [out, in/2] (E2M1 pairs, element 2i in the low nibble) + "X.weight_scale"
//           F8_E8M0 [out, ceil(in/32)].
//   bf16    every floating-point tensor to BF16, quantized inputs (any of the above, DeepSeek-V3
//           FP8 with float32 scales) dequantized first.
// Already-quantized inputs are dequantized exactly and requantized; with power-of-two input scales
// and the ceil rule that is lossless, with others (DeepSeek-V3's float32 scales, the V3.1 o_proj
// scales of DeepSeek-V3 issue 961) the error it introduces is measured and reported per tensor.
//
// Streaming: tensors are processed in row chunks straight from the memory-mapped input and written
// at their final offsets, so memory stays at a few chunks per thread whatever the model size. The
// output folder appears only when complete (io::StagedFolder); an error or Ctrl-C removes it.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mx8/format/scale_rule.h"

namespace mx8::convert {

enum class Scheme { ds_fp8, mxfp8, mxfp4, bf16 };

// The most worker threads convert and inspect accept: more than any machine's cores, and a bound
// that turns a typo (--threads 100000) into a clear error instead of a request for that many threads.
inline constexpr int kMaxThreads = 4096;
// Throws mx8::Error for a thread count above kMaxThreads (0 or less: all cores, as ThreadPool takes it).
void check_thread_count(int64_t threads);
std::optional<Scheme> parse_scheme(std::string_view s);
const char* scheme_name(Scheme s);

struct ConvertOptions {
  Scheme scheme = Scheme::ds_fp8;
  format::ScaleRule rule = format::ScaleRule::ceil;
  std::vector<std::string> keep;        // globs of tensors to keep in high precision
  std::vector<std::string> quantize;    // globs of tensors to quantize despite the defaults
  int threads = 0;                      // 0: all cores
  uint64_t shard_size = 5'000'000'000;  // bytes per output shard (transformers' default 5 GB)
  bool overwrite = false;               // replace an existing OUT
  bool progress = false;                // draw a progress bar on stderr
  bool stats = false;  // measure SQNR of every quantized tensor (always on for requantization)
};

struct TensorReport {
  std::string name;      // output name of the (main) tensor
  std::string action;    // "quantize", "requantize", "dequantize", "cast", "copy"
  std::string reason;    // why (rules.h)
  std::string in_dtype;  // e.g. "BF16", "F8_E4M3+F32 128x128", "GGUF Q8_0"
  std::string out_dtype;
  std::vector<int64_t> shape;
  uint64_t in_bytes = 0, out_bytes = 0;
  bool measured = false;  // sqnr/max error filled in
  // 10 log10(sum x^2 / sum (x - y)^2) against the input values over the elements where both are
  // finite; inf when those are all equal.
  double sqnr_db = 0;
  double max_abs_err = 0;
  int64_t nonfinite = 0;  // elements whose input or output value is NaN or infinite (measured only)
  // Every value came through unchanged: measured, no difference, and nothing non-finite.
  bool exact() const { return measured && nonfinite == 0 && sqnr_db == INFINITY; }
  int64_t nonpow2_scales = 0;  // input scales that are not powers of two (requantized inexactly)
  int64_t input_scales = 0;
};

struct ConvertReport {
  std::string input, output;
  std::vector<TensorReport> tensors;
  uint64_t in_bytes = 0, out_bytes = 0;
  int shards = 0;
  double seconds = 0;
  uint64_t peak_rss_bytes = 0;
  std::vector<std::string> copied_files;
  std::vector<std::string> warnings;  // things the user should know that did not stop the conversion
};

ConvertReport convert_checkpoint(const std::string& in, const std::string& out, const ConvertOptions& opt);

// Requests a clean stop of a running conversion (what SIGINT does): the next chunk boundary throws
// mx8::Error("interrupted"), and the partial output is removed.
void request_interrupt();

}  // namespace mx8::convert
