// Where a model's tensors come from (a GGUF file or a Hugging Face folder), under one naming scheme:
// GGUF's ("token_embd.weight", "blk.3.attn_q.weight", ...). Host-side, read-only, zero-copy views.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mx8/io/gguf.h"
#include "mx8/io/hf_config.h"
#include "mx8/model/llama.h"

namespace mx8::model {

struct SourceTensor {
  // ggml_blocks: any block-quantized GGUF type (Q8_0, the K-quants, MXFP4, ...), named by ggml_type.
  enum class Type { f32, f16, bf16, ggml_blocks, e4m3 };
  std::string name;  // as stored in the file (for errors)
  Type type = Type::f32;
  io::GgmlType ggml_type = io::GgmlType::kF32;  // ggml_blocks only
  std::vector<int64_t> shape;                   // row-major: [n, k] for matrices, [n] for vectors
  const uint8_t* data = nullptr;
  // e4m3 weights: their scale grid [ceil(n/bn)][ceil(k/bk)], f32 (DeepSeek weight_scale_inv) or
  // UE8M0 bytes (mxfp8 from mx8 convert).
  const uint8_t* scales = nullptr;
  bool scales_ue8m0 = false;
  int64_t scale_block_rows = 128, scale_block_cols = 128;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class ModelSource {
 public:
  virtual ~ModelSource() = default;
  virtual const LlamaConfig& config() const = 0;
  // The tensor of canonical (GGUF) name `name`, or nullptr.
  virtual const SourceTensor* find(const std::string& name) const = 0;
  virtual std::string describe() const = 0;
  // Per-pair RoPE frequency divisors stored in the file (GGUF rope_freqs.weight), or empty.
  virtual std::vector<float> rope_freq_divisors() const { return {}; }

  const SourceTensor& require(const std::string& name) const;
};

std::unique_ptr<ModelSource> open_model_source(const std::string& path);

// A GGUF model: one file, or every file of a split one (llama.cpp's gguf-split writes
// NAME-00001-of-00003.gguf and its siblings: the metadata in the first, the tensors spread over all). Opened
// from the first file.
struct GgufModelFiles {
  std::vector<io::GgufFile> files;
  static GgufModelFiles open(const std::string& path);
  const io::GgufFile& meta() const { return files.front(); }
  const io::GgufTensor* find_tensor(const std::string& name) const;
};

LlamaConfig config_from_gguf(const GgufModelFiles& g);
LlamaConfig config_from_hf(const io::HfConfig& h, const std::string& path);

// The tensor as f32 (dequantizing any source type), in row-major order.
std::vector<float> source_to_f32(const SourceTensor& t);
// Rows [r0, r1) of a matrix (a vector is one row) as f32 into `out`, which holds (r1 - r0) rows.
void source_rows_to_f32(const SourceTensor& t, int64_t r0, int64_t r1, float* out);
int64_t source_row_length(const SourceTensor& t);

}  // namespace mx8::model
