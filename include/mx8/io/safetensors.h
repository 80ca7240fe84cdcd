// Reading safetensors checkpoints: a memory-mapped, zero-copy reader that validates the whole
// header before handing out a single pointer, and a loader for Hugging Face model folders
// (one model.safetensors, or shards listed in model.safetensors.index.json).
//
// File layout (the reference is huggingface/safetensors): 8 bytes little-endian N, then N bytes of
// UTF-8 JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"k": "v"}}, padded with spaces, then the data section. Offsets are relative to
// the data section. Like the reference, the reader demands that the tensors tile the data section
// exactly: sorted by offset they start at 0, leave no gap, do not overlap, and end at the end of the
// file. A file that breaks any rule is rejected with an mx8::Error that names the file and the tensor.
//
// Data pointers point into the mapping: they stay valid as long as any copy of the SafetensorsFile
// (or the SafetensorsModel holding it) lives. They are only as aligned as the file makes them (the
// reference writer aligns every tensor to its element size; other writers need not), so read
// multi-byte elements with memcpy or check alignment first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mx8::io {

// The safetensors dtypes mx8 understands, declared in the reference library's order (which its
// writer sorts by, largest first), so the enum value is also the sort key.
enum class DType : uint8_t {
  BOOL,
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "F32", "F8_E4M3", ... as written in files
std::optional<DType> parse_dtype(std::string_view name);

// Read-only memory mapping of a whole file. An empty file maps to (nullptr, 0).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  // Hints that [offset, offset+size) will be read soon / not again (madvise); errors are ignored.
  void will_need(size_t offset, size_t size) const;
  void dont_need(size_t offset, size_t size) const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// One tensor's header entry.
struct TensorInfo {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;

  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;  // product of shape (1 for a scalar)
};

// A tensor in a mapped file: its header entry plus a pointer to its bytes.
struct Tensor {
  TensorInfo info;
  const uint8_t* data = nullptr;

  const std::string& name() const { return info.name; }
  DType dtype() const { return info.dtype; }
  const std::vector<int64_t>& shape() const { return info.shape; }
  int64_t numel() const { return info.numel(); }
  size_t nbytes() const { return static_cast<size_t>(info.nbytes()); }
  std::span<const uint8_t> bytes() const { return {data, nbytes()}; }
};

struct SafetensorsHeader {
  uint64_t header_len = 0;                      // N
  uint64_t data_start = 0;                      // 8 + N
  std::vector<TensorInfo> tensors;              // sorted by offset
  std::map<std::string, std::string> metadata;  // "__metadata__" (string values only)
};

// Validates the whole file image `file` (header and sizes; the tensor bytes themselves are not
// interpreted) and returns its header. `what` names the file in error messages. Never reads
// outside `file`; every size computation is overflow-checked. This is what the fuzzer drives.
SafetensorsHeader parse_safetensors(std::span<const uint8_t> file, const std::string& what);

// The largest header accepted, as in the reference library (100 MB).
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws mx8::Error on any problem.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const;
  const std::vector<Tensor>& tensors() const { return tensors_; }  // in file order
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const SafetensorsHeader& header() const { return header_; }
  const Tensor* find(std::string_view name) const;  // nullptr when absent
  const Tensor& get(std::string_view name) const;   // throws mx8::Error naming the file
  const MappedFile& mapping() const { return *file_; }
  uint64_t file_size() const { return file_->size(); }

 private:
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A Hugging Face checkpoint: a folder with model.safetensors, or with
// model.safetensors.index.json and the shards it names, or a single .safetensors file. All tensors
// appear in one map; the index must agree with the shards exactly (every listed tensor present in
// the shard it names, no tensor in two shards, shard names plain file names inside the folder).
class SafetensorsModel {
 public:
  static SafetensorsModel open(const std::string& path);
  // Move-only: tensors() points into shards(), which a copy would not share.
  SafetensorsModel() = default;
  SafetensorsModel(SafetensorsModel&&) = default;
  SafetensorsModel& operator=(SafetensorsModel&&) = default;
  SafetensorsModel(const SafetensorsModel&) = delete;
  SafetensorsModel& operator=(const SafetensorsModel&) = delete;

  const std::string& folder() const { return folder_; }  // the folder holding the files
  const std::vector<SafetensorsFile>& shards() const { return shards_; }
  // Sorted by name.
  const std::map<std::string, const Tensor*, std::less<>>& tensors() const { return tensors_; }
  const Tensor* find(std::string_view name) const;
  const Tensor& get(std::string_view name) const;
  // Which shard holds `name` (index into shards()).
  size_t shard_of(std::string_view name) const;
  // "__metadata__" of the index file (or of the single file), e.g. total_size.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t total_tensor_bytes() const;

 private:
  std::string folder_;
  std::vector<SafetensorsFile> shards_;
  std::map<std::string, const Tensor*, std::less<>> tensors_;
  std::map<std::string, size_t, std::less<>> shard_of_;
  std::map<std::string, std::string> metadata_;
};

// True when `path` looks like a safetensors checkpoint (a .safetensors file, or a folder with
// model.safetensors or model.safetensors.index.json).
bool is_safetensors_checkpoint(const std::string& path);

}  // namespace mx8::io
