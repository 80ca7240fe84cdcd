// safetensors writer (reference byte layout), shard planning, index file, staged output folders.
#include "mx8/io/safetensors_writer.h"

#include "mx8/util/json_string.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "mx8/error.h"

namespace mx8::io {

namespace fs = std::filesystem;

uint64_t TensorSpec::nbytes() const {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0) throw Error("tensor \"" + name + "\" has a negative dimension");
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      throw Error("tensor \"" + name + "\" is too large (size overflows 64 bits)");
  }
  return n;
}

void sort_reference_order(std::vector<TensorSpec>& specs) {
  std::stable_sort(specs.begin(), specs.end(), [](const TensorSpec& a, const TensorSpec& b) {
    if (a.dtype != b.dtype) return a.dtype > b.dtype;
    return a.name < b.name;  // byte-wise, as Rust's String ordering
  });
}

std::string safetensors_header(const std::vector<TensorSpec>& ordered,
                               const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (!first) h += ',';
      first = false;
      mx8::append_json_string(h, k);
      h += ':';
      mx8::append_json_string(h, v);
    }
    h += '}';
    first = false;
  }
  uint64_t offset = 0;
  for (const auto& t : ordered) {
    if (t.name == "__metadata__") throw Error("a tensor may not be named __metadata__");
    if (!first) h += ',';
    first = false;
    mx8::append_json_string(h, t.name);
    h += ":{\"dtype\":\"";
    h += dtype_name(t.dtype);
    h += "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) {
      if (i) h += ',';
      h += std::to_string(t.shape[i]);
    }
    const uint64_t n = t.nbytes();
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + n) + "]}";
    offset += n;
  }
  h += '}';
  h.append((8 - h.size() % 8) % 8, ' ');
  return h;
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<TensorSpec> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : file_(std::move(path)), layout_(std::move(tensors)) {
  sort_reference_order(layout_);
  {
    // Names must be unique (layout_ is sorted by dtype first, so check a name-sorted copy).
    std::vector<std::string> names;
    for (const auto& t : layout_) names.push_back(t.name);
    std::sort(names.begin(), names.end());
    auto dup = std::adjacent_find(names.begin(), names.end());
    if (dup != names.end()) throw Error(file_.path() + ": tensor \"" + *dup + "\" given twice");
  }
  const std::string header = safetensors_header(layout_, metadata);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  file_.write(len, 8);
  file_.write(header);
  file_size_ = 8 + header.size();
  for (const auto& t : layout_) file_size_ += t.nbytes();
  // Skip zero-size tensors at the front so next_tensor() names one that needs bytes.
  while (current_ < layout_.size() && layout_[current_].nbytes() == 0) ++current_;
}

const std::string& SafetensorsWriter::next_tensor() const {
  static const std::string none;
  return current_ < layout_.size() ? layout_[current_].name : none;
}

void SafetensorsWriter::append(std::span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    if (current_ >= layout_.size())
      throw Error(file_.path() + ": more tensor bytes written than the header declares");
    const uint64_t need = layout_[current_].nbytes() - written_in_current_;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(need, bytes.size()));
    file_.write(bytes.data(), take);
    written_in_current_ += take;
    bytes = bytes.subspan(take);
    if (written_in_current_ == layout_[current_].nbytes()) {
      ++current_;
      written_in_current_ = 0;
      while (current_ < layout_.size() && layout_[current_].nbytes() == 0) ++current_;
    }
  }
}

void SafetensorsWriter::write_tensor(const std::string& name, std::span<const uint8_t> bytes) {
  // A zero-size tensor has no bytes and needs no call; accept one anyway.
  if (bytes.empty()) return;
  if (written_in_current_ != 0 || next_tensor() != name)
    throw Error(file_.path() + ": tensor \"" + name + "\" written out of order (expected \"" + next_tensor() +
                "\")");
  if (bytes.size() != layout_[current_].nbytes())
    throw Error(file_.path() + ": tensor \"" + name + "\" has " + std::to_string(bytes.size()) +
                " bytes, header says " + std::to_string(layout_[current_].nbytes()));
  append(bytes);
}

void SafetensorsWriter::commit() {
  if (current_ < layout_.size())
    throw Error(file_.path() + ": tensor \"" + layout_[current_].name + "\" was not written in full");
  file_.commit();
}

void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorSpec> specs;
  std::map<std::string, std::span<const uint8_t>> bytes;
  for (const auto& t : tensors) {
    specs.push_back(t.spec);
    bytes[t.spec.name] = t.bytes;
  }
  SafetensorsWriter w(path, specs, metadata);
  for (const auto& spec : w.layout()) {
    auto b = bytes[spec.name];
    if (b.size() != spec.nbytes())
      throw Error(path + ": tensor \"" + spec.name + "\" has " + std::to_string(b.size()) +
                  " bytes, shape says " + std::to_string(spec.nbytes()));
    w.append(b);
  }
  w.commit();
}

namespace {
// "a.weight_scale_inv" -> "a.weight"; other names unchanged. Groups a weight with its scales.
std::string group_key(const std::string& name) {
  for (const char* suffix : {"_scale_inv", "_scale"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0)
      return name.substr(0, name.size() - s.size());
  }
  return name;
}
}  // namespace

std::vector<std::vector<TensorSpec>> plan_shards(const std::vector<TensorSpec>& tensors,
                                                 uint64_t max_shard_bytes) {
  // Consecutive tensors with the same group key form one unit.
  std::vector<std::vector<TensorSpec>> units;
  std::map<std::string, size_t> unit_of;
  for (const auto& t : tensors) {
    auto key = group_key(t.name);
    auto it = unit_of.find(key);
    if (it == unit_of.end()) {
      unit_of[key] = units.size();
      units.push_back({t});
    } else {
      units[it->second].push_back(t);
    }
  }
  std::vector<std::vector<TensorSpec>> shards;
  uint64_t in_shard = 0;
  for (auto& unit : units) {
    uint64_t bytes = 0;
    for (const auto& t : unit) bytes += t.nbytes();
    if (shards.empty() || (in_shard > 0 && max_shard_bytes > 0 && in_shard + bytes > max_shard_bytes)) {
      shards.emplace_back();
      in_shard = 0;
    }
    for (auto& t : unit) shards.back().push_back(std::move(t));
    in_shard += bytes;
  }
  if (shards.empty()) shards.emplace_back();
  return shards;
}

std::string shard_file_name(size_t shard, size_t count) {
  if (count <= 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", shard + 1, count);
  return buf;
}

std::string safetensors_index_json(const std::vector<std::vector<TensorSpec>>& shards) {
  nlohmann::ordered_json j;
  uint64_t total = 0;
  std::map<std::string, std::string> weight_map;  // sorted, as transformers' sort_keys
  for (size_t s = 0; s < shards.size(); ++s)
    for (const auto& t : shards[s]) {
      total += t.nbytes();
      weight_map[t.name] = shard_file_name(s, shards.size());
    }
  j["metadata"]["total_size"] = total;
  j["weight_map"] = nlohmann::ordered_json::object();
  for (const auto& [name, file] : weight_map) j["weight_map"][name] = file;
  return j.dump(2) + "\n";
}

StagedFolder::StagedFolder(std::string final_path, bool overwrite)
    : final_(std::move(final_path)), overwrite_(overwrite) {
  while (final_.size() > 1 && final_.back() == '/') final_.pop_back();
  std::error_code ec;
  if (fs::exists(final_, ec) && !overwrite_)
    throw Error(final_ + " already exists (choose another output path, or --force to replace it)");
  if (fs::exists(final_, ec) && !fs::is_directory(final_, ec))
    throw Error(final_ + " exists and is not a folder; not replacing it");
  staging_ = final_ + ".partial-" + std::to_string(::getpid());
  fs::remove_all(staging_, ec);  // a stale one from an earlier run with the same pid
  if (!fs::create_directories(staging_, ec) || ec)
    throw Error("cannot create " + staging_ + ": " + (ec ? ec.message() : "it already exists"));
}

StagedFolder::~StagedFolder() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
}

std::string StagedFolder::file(const std::string& name) const {
  return (fs::path(staging_) / name).string();
}

void StagedFolder::commit() {
  if (committed_) throw Error("commit of " + final_ + " twice");
  std::error_code ec;
  // Flush the folder's entries before it becomes visible.
  if (int fd = ::open(staging_.c_str(), O_RDONLY | O_DIRECTORY); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  std::string old;
  if (fs::exists(final_, ec)) {
    old = final_ + ".old-" + std::to_string(::getpid());
    fs::rename(final_, old, ec);
    if (ec) throw Error("cannot move the existing " + final_ + " aside: " + ec.message());
  }
  fs::rename(staging_, final_, ec);
  if (ec) {
    std::error_code ec2;
    if (!old.empty()) fs::rename(old, final_, ec2);  // put the previous one back
    throw Error("cannot rename " + staging_ + " to " + final_ + ": " + ec.message());
  }
  committed_ = true;
  // The new folder is in place; a replaced one that cannot be deleted stays, and the caller is told
  // where (it may be large, and its name says nothing to whoever finds it later).
  if (!old.empty()) {
    fs::remove_all(old, ec);
    if (ec) leftover_ = old + " (" + ec.message() + ")";
  }
  auto parent = fs::path(final_).parent_path();
  if (int fd = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace mx8::io
