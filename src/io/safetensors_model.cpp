// Hugging Face checkpoint folders: one model.safetensors, or shards named by
// model.safetensors.index.json, merged into one tensor map.
#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "mx8/error.h"
#include "mx8/io/hf_config.h"
#include "mx8/io/safetensors.h"

namespace mx8::io {

namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

// A shard name from an index must be a plain file name in the same folder: a hostile index must
// not make us open ../../etc/passwd or an absolute path.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos && name.find('\0') == std::string::npos;
}

// The series a shard name belongs to: "model-00002-of-00005.safetensors" -> "model-*-of-00005"
// (transformers' naming, which mx8 convert writes too); empty for names of another form.
std::string shard_series(const std::string& name) {
  static const std::regex shard(R"((.+)-[0-9]+-of-([0-9]+)\.safetensors)");
  std::smatch m;
  return std::regex_match(name, m, shard) ? m[1].str() + "-*-of-" + m[2].str() : std::string();
}

// An index that leaves out every tensor of one shard would make that shard's tensors vanish without
// a word (a missing lm_head, say). The index is all that names the shards, so the folder is the
// only witness: a file of the same "-NNNNN-of-MMMMM" series as a listed shard must be listed too.
// Other .safetensors files are left alone (Mistral's repositories ship consolidated.safetensors, in
// another naming, beside the shards).
void check_no_unlisted_shard(const std::string& folder,
                             const std::map<std::string, std::vector<std::string>>& listed,
                             const std::string& index_path) {
  std::set<std::string> series;
  for (const auto& [file, names] : listed)
    if (auto s = shard_series(file); !s.empty()) series.insert(s);
  if (series.empty()) return;
  std::error_code ec;
  std::vector<std::string> unlisted;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    const std::string name = e.path().filename().string();
    if (!listed.count(name) && series.count(shard_series(name))) unlisted.push_back(name);
  }
  if (unlisted.empty()) return;
  std::sort(unlisted.begin(), unlisted.end());
  throw Error(index_path + " lists no tensor in " + (fs::path(folder) / unlisted.front()).string() +
              (unlisted.size() > 1 ? " (and " + std::to_string(unlisted.size() - 1) + " more)" : "") +
              ", a shard of the same series as the listed ones: every tensor of every shard must be "
              "listed, or the shard's tensors would be silently left out");
}

}  // namespace

bool is_safetensors_checkpoint(const std::string& path) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return fs::path(path).extension() == ".safetensors";
  if (!fs::is_directory(path, ec)) return false;
  return fs::exists(fs::path(path) / kIndexName, ec) || fs::exists(fs::path(path) / kSingleName, ec);
}

SafetensorsModel SafetensorsModel::open(const std::string& path) {
  SafetensorsModel m;
  std::error_code ec;
  auto add_shard = [&](SafetensorsFile file) {
    const size_t shard = m.shards_.size();
    m.shards_.push_back(std::move(file));
    return shard;
  };
  auto index_single = [&]() {
    for (const auto& t : m.shards_[0].tensors()) {
      m.tensors_[t.name()] = &t;
      m.shard_of_[t.name()] = 0;
    }
    m.metadata_ = m.shards_[0].metadata();
  };

  if (fs::is_regular_file(path, ec)) {
    m.folder_ = fs::path(path).parent_path().string();
    if (m.folder_.empty()) m.folder_ = ".";
    add_shard(SafetensorsFile::open(path));
    index_single();
    return m;
  }
  if (!fs::is_directory(path, ec)) throw Error(path + ": no such file or folder");
  m.folder_ = path;
  const fs::path index_path = fs::path(path) / kIndexName;
  if (!fs::exists(index_path, ec)) {
    const fs::path single = fs::path(path) / kSingleName;
    if (!fs::exists(single, ec))
      throw Error(path + ": neither " + kSingleName + " nor " + kIndexName + " is in this folder");
    add_shard(SafetensorsFile::open(single.string()));
    index_single();
    return m;
  }

  const std::string what = index_path.string();
  const nlohmann::json index = read_json_file(what);  // strict: no NUL byte, no trailing junk
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw Error(what + ": no \"weight_map\" object");
  if (index.contains("metadata") && index["metadata"].is_object())
    for (const auto& [k, v] : index["metadata"].items())
      m.metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();

  // Open each shard once, in name order, so shard indices are deterministic.
  std::map<std::string, std::vector<std::string>> listed;  // shard file -> tensor names
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string()) throw Error(what + ": weight_map entry for \"" + name + "\" is not a file name");
    const auto& shard_name = file.get_ref<const std::string&>();
    if (!plain_file_name(shard_name))
      throw Error(what + ": shard name \"" + shard_name + "\" is not a plain file name in the folder");
    listed[shard_name].push_back(name);
  }
  if (listed.empty()) throw Error(what + ": weight_map is empty");
  check_no_unlisted_shard(path, listed, what);
  for (const auto& [shard_name, names] : listed) {
    const size_t shard = add_shard(SafetensorsFile::open((fs::path(path) / shard_name).string()));
    const SafetensorsFile& f = m.shards_[shard];
    std::set<std::string_view> expected(names.begin(), names.end());
    for (const auto& name : names)
      if (!f.find(name))
        throw Error(what + " lists tensor \"" + name + "\" in " + shard_name + ", which lacks it");
    for (const auto& t : f.tensors())
      if (!expected.count(t.name()))
        throw Error(f.path() + ": tensor \"" + t.name() + "\" is not listed in " + kIndexName);
  }
  // Pointers into shards_ are stable only once shards_ stops growing.
  for (size_t s = 0; s < m.shards_.size(); ++s) {
    for (const auto& t : m.shards_[s].tensors()) {
      // JSON object keys are unique, so a tensor is listed in one shard only; a second shard holding
      // it too was caught above as unlisted.
      m.tensors_[t.name()] = &t;
      m.shard_of_[t.name()] = s;
    }
  }
  return m;
}

const Tensor* SafetensorsModel::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

const Tensor& SafetensorsModel::get(std::string_view name) const {
  if (auto* t = find(name)) return *t;
  throw Error(folder_ + ": checkpoint has no tensor named \"" + std::string(name) + "\"");
}

size_t SafetensorsModel::shard_of(std::string_view name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end())
    throw Error(folder_ + ": checkpoint has no tensor named \"" + std::string(name) + "\"");
  return it->second;
}

uint64_t SafetensorsModel::total_tensor_bytes() const {
  uint64_t total = 0;
  for (const auto& [name, t] : tensors_) total += t->nbytes();
  return total;
}

}  // namespace mx8::io
