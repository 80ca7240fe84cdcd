// GGUF (version 2 and 3) reader: memory-mapped, zero-copy, validated.
//
// A GGUF file is: a header (magic "GGUF", version, tensor count, metadata count), the metadata
// key/value pairs, the tensor infos (name, dims fastest-first, ggml type, offset), padding up to
// `general.alignment` (default 32), then the tensor data. Every read goes through a bounds-checked
// cursor and every size is computed with overflow checks, so a bad, truncated or hostile file
// gets an mx8::Error naming the file and the problem, never a crash or a huge allocation.
//
// Dimensions: GGUF stores them fastest-first, ne[0] is the row length (the number of contiguous
// elements). GgufTensor::ne keeps that order; GgufTensor::shape() gives the row-major order that
// safetensors and PyTorch use ([out, in] for a linear weight).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mx8::io {

// Metadata value types, numbered as in the GGUF specification.
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// Tensor element types, numbered as ggml numbers them. Only those mx8 decodes are listed; a file with
// any other type (the codebook types IQ1_S..IQ3_S, the ternary TQ1_0/TQ2_0, ...) is rejected with an
// error that names the type and the tensor. src/io/ggml_blocks.cpp has each block's layout.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,     // 32 values: f16 d, 16 bytes of nibbles; d * (q - 8)
  kQ4_1 = 3,     // 32 values: f16 d, f16 m, 16 bytes of nibbles; d * q + m
  kQ5_0 = 6,     // 32 values: f16 d, 32 high bits, 16 bytes of nibbles; d * (q - 16)
  kQ5_1 = 7,     // 32 values: f16 d, f16 m, 32 high bits, 16 bytes of nibbles; d * q + m
  kQ8_0 = 8,     // 32 values: f16 d, 32 x int8; d * q
  kQ2_K = 10,    // 256 values: 16 sub-blocks of 16 with 4-bit scales and mins, 2-bit q, f16 d and dmin
  kQ3_K = 11,    // 256 values: 16 sub-blocks of 16 with 6-bit scales, 3-bit q (2 low + 1 high), f16 d
  kQ4_K = 12,    // 256 values: 8 sub-blocks of 32 with 6-bit scales and mins, 4-bit q, f16 d and dmin
  kQ5_K = 13,    // 256 values: as Q4_K with a fifth bit per value
  kQ6_K = 14,    // 256 values: 16 sub-blocks of 16 with int8 scales, 6-bit q (4 low + 2 high), f16 d
  kIQ4_NL = 20,  // 32 values: f16 d, 16 bytes of nibbles indexing a fixed non-uniform 16-value table
  kIQ4_XS = 23,  // 256 values: 8 sub-blocks of 32 with 6-bit scales, IQ4_NL's table, f16 d
  kBF16 = 30,
  kMXFP4 = 39,  // 32 values: UE8M0 scale byte e, then 16 bytes of E2M1 pairs
};
const char* ggml_type_name(GgmlType t);
// Whether mx8 decodes the ggml type numbered `t`, and a name for any number (for errors: "Q4_K",
// "IQ2_XXS (16)", or just "99" for a number ggml does not define).
bool ggml_type_supported(uint32_t t);
std::string ggml_type_label(uint32_t t);
// Elements per block and bytes per block (1 and sizeof(element) for the plain types).
size_t ggml_block_elems(GgmlType t);
size_t ggml_block_bytes(GgmlType t);

// One metadata value. Scalars are held widened (integers as int64/uint64, floats as double), with
// the original type kept in `type`. Arrays of scalars are held as flat typed vectors; nested arrays
// as a vector of GgufValue.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  // Scalar payloads (which one is valid depends on `type`).
  int64_t i = 0;   // every integer type except uint64, and bool (0/1)
  uint64_t u = 0;  // uint64 (and, for convenience, every non-negative integer)
  double f = 0;    // float32, float64
  std::string s;   // string

  // Array payload (type == kArray).
  GgufValueType array_type = GgufValueType::kUint8;
  uint64_t array_size = 0;
  std::vector<int64_t> array_ints;         // integer and bool elements except uint64
  std::vector<uint64_t> array_u64s;        // uint64 elements
  std::vector<double> array_floats;        // float32 / float64 elements
  std::vector<std::string> array_strings;  // string elements
  std::vector<GgufValue> array_arrays;     // nested arrays

  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::kFloat32 || type == GgufValueType::kFloat64; }
};

struct GgufTensor {
  std::string name;
  std::vector<uint64_t> ne;  // dims, fastest-first: ne[0] is the row length
  GgmlType type = GgmlType::kF32;
  uint64_t offset = 0;  // relative to the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapping; valid while the GgufFile lives

  // Row-major shape (slowest-first), e.g. [out, in] for a linear weight.
  std::vector<uint64_t> shape() const { return {ne.rbegin(), ne.rend()}; }
  uint64_t row_length() const { return ne.empty() ? 1 : ne[0]; }
  uint64_t n_rows() const { return row_length() == 0 ? 0 : n_elements / row_length(); }
};

class GgufFile {
 public:
  // Maps and parses `path`. Throws mx8::Error on any problem.
  static GgufFile open(const std::string& path);
  // Parses a copy of `bytes` (tests, and files already in memory). `name` is used in errors.
  static GgufFile from_bytes(std::vector<uint8_t> bytes, const std::string& name = "<memory>");

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute file offset of tensor data
  uint64_t file_size() const { return size_; }

  // Metadata in file order, and lookup by key.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters. The `require_*` forms throw an Error naming the key and file when the key is
  // missing or has an incompatible type; the `get_*` forms return `fallback` when missing (and
  // still throw on a wrong type, which signals a broken file rather than an optional key).
  // Integer getters accept any integer type whose value fits.
  int64_t require_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double require_float(const std::string& key) const;  // accepts float or integer values
  double get_float(const std::string& key, double fallback) const;
  const std::string& require_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  const GgufValue& require_array(const std::string& key, GgufValueType element_type) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;
  const GgufTensor& require_tensor(const std::string& name) const;

 private:
  GgufFile() = default;
  void parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  void* map_ = nullptr;         // mmap'd region (when opened from a file)
  std::vector<uint8_t> owned_;  // bytes (when parsed from memory)
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::map<std::string, size_t> metadata_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Dequantizes `n` consecutive elements of type `t` starting at `src` (which must start on a block
// boundary; `n` must be a multiple of the block size) into f32: bit for bit the values ggml's own
// decoders give (tests/io/gguf_ggml_reference_test.cpp holds them to ggml's library).
void ggml_dequantize(GgmlType t, const uint8_t* src, float* dst, uint64_t n);
// The whole tensor as f32, in storage order (fastest-first, i.e. row-major of shape()).
std::vector<float> gguf_tensor_to_f32(const GgufTensor& t);

}  // namespace mx8::io
