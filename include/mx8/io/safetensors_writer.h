// Writing safetensors checkpoints, byte for byte as the reference library (huggingface/safetensors)
// writes them: 8-byte little-endian header length; compact JSON with "__metadata__" first, then the
// tensors sorted by dtype from the largest to the smallest (the reference's Dtype order, so every
// tensor is aligned to its element size) and then by name; the header padded with spaces to a
// multiple of 8 bytes; then the data in header order.
//
// The writer streams: the header is fixed from the tensor specs up front, then each tensor's bytes
// are appended in layout order (in as many pieces as the caller likes), so a converter holds one
// tensor in memory at a time. Files go through mx8::AtomicFile; whole checkpoint folders go through
// StagedFolder, which builds the folder under a temporary name and renames it into place, so an
// error or Ctrl-C never leaves a half-written checkpoint.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mx8/io/safetensors.h"
#include "mx8/util/atomic_file.h"

namespace mx8::io {

struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;

  uint64_t nbytes() const;  // throws mx8::Error on overflow or negative dims
};

// The reference order: dtype descending (in DType's declared order), then name ascending.
void sort_reference_order(std::vector<TensorSpec>& specs);

// The header bytes (JSON plus padding, without the 8-byte length) for tensors already in file order.
std::string safetensors_header(const std::vector<TensorSpec>& ordered,
                               const std::map<std::string, std::string>& metadata);

class SafetensorsWriter {
 public:
  // Sorts `tensors` into the reference order and writes the header to a temporary file beside `path`.
  SafetensorsWriter(std::string path, std::vector<TensorSpec> tensors,
                    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

  // The tensors in the order their bytes must be appended.
  const std::vector<TensorSpec>& layout() const { return layout_; }
  // Name of the tensor whose bytes come next (empty when all are written).
  const std::string& next_tensor() const;
  // Appends bytes of the current tensor; a tensor may be written in several pieces. Throws if the
  // bytes run past the current tensor's size (a caller bug; the file is then abandoned).
  void append(std::span<const uint8_t> bytes);
  // Convenience: the whole of tensor `name`, which must be next in layout order.
  void write_tensor(const std::string& name, std::span<const uint8_t> bytes);
  // Checks every tensor was written in full, then fsyncs and renames into place.
  void commit();
  uint64_t file_size() const { return file_size_; }

 private:
  AtomicFile file_;
  std::vector<TensorSpec> layout_;
  size_t current_ = 0;
  uint64_t written_in_current_ = 0;
  uint64_t file_size_ = 0;
};

// Whole-file convenience for small files and tests.
struct TensorData {
  TensorSpec spec;
  std::span<const uint8_t> bytes;
};
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Splitting a checkpoint into shards the way transformers' save_pretrained does: greedy in the
// order given, a new shard when the next tensor would push the current one past `max_shard_bytes`
// (a single larger tensor gets a shard of its own). A "X.weight" and its "X.weight_scale_inv" /
// "X.weight_scale" stay together so a shard never separates a weight from its scales.
std::vector<std::vector<TensorSpec>> plan_shards(const std::vector<TensorSpec>& tensors,
                                                 uint64_t max_shard_bytes);
// "model.safetensors" for one shard, else "model-00001-of-00003.safetensors".
std::string shard_file_name(size_t shard, size_t count);
// model.safetensors.index.json as transformers writes it (indent 2, keys sorted, total_size).
std::string safetensors_index_json(const std::vector<std::vector<TensorSpec>>& shards);

// A folder that appears complete or not at all. Files are created in "<final>.partial-<pid>" beside
// the final path; commit() renames it to the final path. If the object dies uncommitted (error,
// Ctrl-C turned into an exception), the partial folder is removed. An existing final path is an
// error unless `overwrite`, in which case it is replaced only at commit.
class StagedFolder {
 public:
  StagedFolder(std::string final_path, bool overwrite);
  ~StagedFolder();
  StagedFolder(const StagedFolder&) = delete;
  StagedFolder& operator=(const StagedFolder&) = delete;

  const std::string& path() const { return staging_; }  // where to write now
  std::string file(const std::string& name) const;      // path() + "/" + name
  const std::string& final_path() const { return final_; }
  void commit();
  // After a commit that replaced a folder: the replaced folder when it could not be removed, with
  // the reason ("OUT.old-<pid> (Permission denied)"); else empty.
  const std::string& leftover() const { return leftover_; }

 private:
  std::string final_;
  std::string staging_;
  bool overwrite_;
  bool committed_ = false;
  std::string leftover_;
};

}  // namespace mx8::io
