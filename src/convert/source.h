// The converter's view of an input tensor, whatever file it came from: an HF name and shape, and a
// way to read any rows as f32 (dequantizing FP8/MX/GGUF blocks, undoing GGUF's Q/K layout).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mx8/format/quantize_ref.h"
#include "mx8/io/gguf.h"
#include "mx8/io/safetensors.h"

namespace mx8::convert {

struct Source {
  enum class Kind {
    raw,        // plain safetensors tensor (any dtype)
    quantized,  // safetensors codes + scales (DeepSeek block FP8, MXFP8, MXFP4)
    gguf,       // GGUF tensor (any type io/gguf.h decodes), maybe row-permuted
  };
  Kind kind = Kind::raw;
  std::string name;                  // HF name
  std::vector<int64_t> shape;        // HF shape (logical elements, not packed bytes)
  io::DType dtype = io::DType::F32;  // raw: storage dtype; quantized: the codes' dtype
  const uint8_t* data = nullptr;     // raw bytes, codes, or GGUF data
  uint64_t nbytes = 0;
  const io::MappedFile* mapping = nullptr;  // for releasing pages after use (may be null)

  // kind == quantized
  format::QuantSpec qspec;
  std::string scale_name;
  io::DType scale_dtype = io::DType::F32;
  const uint8_t* scales = nullptr;
  uint64_t scale_nbytes = 0;

  // kind == gguf
  const io::GgufTensor* gguf = nullptr;
  int64_t permute_heads = 0;  // > 0: rows are in Meta's interleaved order over this many heads

  int64_t rows() const;          // the 2-D view: product of all but the last dimension
  int64_t cols() const;          // the last dimension (1 for a scalar)
  bool is_float() const;         // holds real numbers (float dtypes, quantized codes, GGUF)
  std::string describe() const;  // "BF16", "F8_E4M3+F32 128x128", "GGUF Q8_0", ...
  // Rows a chunk must be a multiple of (the input scale block height), >= 1.
  int64_t row_alignment() const;
  // When the tensor can be copied as bytes (raw tensors; GGUF F32/F16/BF16), the dtype it has.
  bool copyable(io::DType* dtype) const;
  // Rows [r0, r1) as f32 into dst (row-major, cols() per row). r0 must be a multiple of row_alignment().
  void read_rows_f32(int64_t r0, int64_t r1, float* dst) const;
  // When rows [r0, r1) can be handed to the quantizer as they are (F32/BF16/F16 raw, aligned), the
  // pointer and type; else nullptr.
  const void* direct_rows(int64_t r0, format::SourceType* type) const;
  // Copies rows [r0, r1) of a copyable tensor as bytes (applying the GGUF permutation).
  void copy_rows(int64_t r0, int64_t r1, uint8_t* dst) const;
  uint64_t row_bytes() const;  // bytes per row of a copyable tensor
  // Counts input scales that are not powers of two (quantized inputs with f32 scales).
  int64_t count_nonpow2_scales(int64_t* total) const;
  void release() const;  // tells the OS the input pages may go
  // The same for rows [r0, r1) only (raw and quantized tensors), so that memory stays at a few
  // chunks even for a single tensor larger than RAM.
  void release_rows(int64_t r0, int64_t r1) const;
};

// An opened input: HF folder/file or GGUF, its tensors in file order, and config/extra files.
struct Input {
  std::string path;
  bool is_gguf = false;
  std::unique_ptr<io::SafetensorsModel> model;
  std::unique_ptr<io::GgufFile> gguf;
  std::vector<Source> tensors;
  std::string folder;                // HF: the folder whose side files are carried along
  std::string foreign_quant_method;  // config.json quant_method of a layout mx8 cannot read, if any
};

Input open_input(const std::string& path);

}  // namespace mx8::convert
