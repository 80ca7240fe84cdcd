// safetensors reader: mapping, header validation, and the single-file view.
#include "mx8/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "mx8/error.h"

namespace mx8::io {

namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1},       {DType::U8, "U8", 1},           {DType::I8, "I8", 1},
    {DType::F8_E5M2, "F8_E5M2", 1}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E8M0, "F8_E8M0", 1},
    {DType::I16, "I16", 2},         {DType::U16, "U16", 2},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},       {DType::I32, "I32", 4},         {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},         {DType::F64, "F64", 8},         {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
};

const DTypeEntry& entry(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e;
  throw Error("unknown dtype value " + std::to_string(static_cast<int>(dtype)));
}

std::string errno_text() {
  return std::strerror(errno);
}

// JSON values that are non-negative integers (nlohmann stores small positive literals as unsigned,
// but accept a non-negative signed one too). Floats like 2.0 are rejected, as the reference does.
std::optional<uint64_t> as_u64(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

// Parses the header JSON, rejecting duplicate keys (nlohmann would silently keep the last one,
// which would let two readers disagree on a file) and nesting deeper than the format needs
// (top object > tensor object > shape array), which also bounds the work a hostile header causes.
nlohmann::json parse_header_json(std::string_view text, const std::string& what) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (depth > 3) throw Error(what + ": safetensors header nests deeper than the format allows");
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end && !keys.empty()) keys.pop_back();
    if (event == E::key && !keys.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(key).second)
        throw Error(what + ": safetensors header has the key \"" + key + "\" twice");
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true);
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": safetensors header is not valid JSON: " + e.what());
  }
}

TensorInfo parse_tensor_entry(const std::string& name, const nlohmann::json& v, const std::string& what) {
  const std::string where = what + ": tensor \"" + name + "\"";
  if (!v.is_object()) throw Error(where + ": header entry is not an object");
  TensorInfo t;
  t.name = name;
  bool seen_dtype = false, seen_shape = false, seen_offsets = false;
  for (const auto& [key, value] : v.items()) {
    if (key == "dtype") {
      if (!value.is_string()) throw Error(where + ": dtype is not a string");
      auto d = parse_dtype(value.get_ref<const std::string&>());
      if (!d) throw Error(where + ": unsupported dtype \"" + value.get<std::string>() + "\"");
      t.dtype = *d;
      seen_dtype = true;
    } else if (key == "shape") {
      if (!value.is_array()) throw Error(where + ": shape is not an array");
      for (const auto& dim : value) {
        auto n = as_u64(dim);
        if (!n || *n > static_cast<uint64_t>(INT64_MAX))
          throw Error(where + ": shape entry " + dim.dump() + " is not a non-negative integer");
        t.shape.push_back(static_cast<int64_t>(*n));
      }
      seen_shape = true;
    } else if (key == "data_offsets") {
      if (!value.is_array() || value.size() != 2) throw Error(where + ": data_offsets is not [begin, end]");
      auto b = as_u64(value[0]), e = as_u64(value[1]);
      if (!b || !e) throw Error(where + ": data_offsets are not non-negative integers");
      if (*b > *e)
        throw Error(where + ": data_offsets begin " + std::to_string(*b) + " > end " + std::to_string(*e));
      t.begin = *b;
      t.end = *e;
      seen_offsets = true;
    } else {
      throw Error(where + ": unexpected key \"" + key + "\" in header entry");
    }
  }
  if (!seen_dtype || !seen_shape || !seen_offsets)
    throw Error(where + ": header entry lacks " +
                std::string(!seen_dtype   ? "dtype"
                            : !seen_shape ? "shape"
                                          : "data_offsets"));
  // Overflow-safe element count and byte size; they must equal the span the offsets give.
  uint64_t bytes = dtype_size(t.dtype);
  for (int64_t dim : t.shape)
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes))
      throw Error(where + ": shape overflows 64 bits");
  if (bytes != t.end - t.begin)
    throw Error(where + ": " + std::string(dtype_name(t.dtype)) + " shape needs " + std::to_string(bytes) +
                " bytes but data_offsets give " + std::to_string(t.end - t.begin));
  return t;
}

}  // namespace

size_t dtype_size(DType dtype) {
  return entry(dtype).size;
}
std::string_view dtype_name(DType dtype) {
  return entry(dtype).name;
}
std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& e : kDTypes)
    if (e.name == name) return e.dtype;
  return std::nullopt;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated against the byte size, so it cannot overflow
  return n;
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string msg = errno_text();
    ::close(fd);
    throw Error("cannot stat " + path + ": " + msg);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + " is not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      std::string msg = errno_text();
      ::close(fd);
      throw Error("cannot map " + path + ": " + msg);
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {
// madvise needs page-aligned starts; round the range outwards to whole pages.
void advise(const uint8_t* base, size_t total, size_t offset, size_t size, int advice) {
  if (!base || offset >= total) return;
  size = std::min(size, total - offset);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  size_t start = offset / page * page;
  ::madvise(const_cast<uint8_t*>(base) + start, size + (offset - start), advice);
}
}  // namespace

void MappedFile::will_need(size_t offset, size_t size) const {
  advise(data_, size_, offset, size, MADV_WILLNEED);
}
void MappedFile::dont_need(size_t offset, size_t size) const {
  advise(data_, size_, offset, size, MADV_DONTNEED);
}

SafetensorsHeader parse_safetensors(std::span<const uint8_t> file, const std::string& what) {
  if (file.size() < 8)
    throw Error(what + ": not a safetensors file (" + std::to_string(file.size()) +
                " bytes, fewer than the 8-byte header length)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file[i];
  if (n > kMaxSafetensorsHeader)
    throw Error(what + ": safetensors header length " + std::to_string(n) +
                " exceeds the 100 MB limit (corrupt or not a safetensors file)");
  if (n > file.size() - 8)
    throw Error(what + ": truncated: header length " + std::to_string(n) + " but only " +
                std::to_string(file.size() - 8) + " bytes follow");
  if (n == 0 || file[8] != '{') throw Error(what + ": safetensors header does not start with '{'");

  SafetensorsHeader h;
  h.header_len = n;
  h.data_start = 8 + n;
  std::string_view text(reinterpret_cast<const char*>(file.data() + 8), n);
  // nlohmann's lexer takes a NUL byte for the end of input, so "{}\0garbage" would pass; the
  // reference rejects it, and so do we (a NUL is never valid in JSON text).
  if (text.find('\0') != std::string_view::npos)
    throw Error(what + ": safetensors header is not valid JSON: it contains a NUL byte");
  nlohmann::json j = parse_header_json(text, what);
  if (!j.is_object()) throw Error(what + ": safetensors header is not a JSON object");

  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) throw Error(what + ": __metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) throw Error(what + ": __metadata__ value of \"" + mk + "\" is not a string");
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.tensors.push_back(parse_tensor_entry(key, value, what));
  }

  // The tensors must tile the data section exactly: sorted by offset, each starts where the
  // previous ended, the first at 0 and the last at the end of the file.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const auto& t : h.tensors) {
    if (t.begin < cursor)
      throw Error(what + ": tensor \"" + t.name + "\" overlaps the previous tensor (offset " +
                  std::to_string(t.begin) + " < " + std::to_string(cursor) + ")");
    if (t.begin > cursor)
      throw Error(what + ": gap in the data section before tensor \"" + t.name + "\" (offset " +
                  std::to_string(t.begin) + ", expected " + std::to_string(cursor) + ")");
    cursor = t.end;
  }
  const uint64_t data_size = file.size() - h.data_start;
  if (cursor > data_size)
    throw Error(what + ": truncated: tensors need " + std::to_string(cursor) +
                " data bytes but the file has " + std::to_string(data_size));
  if (cursor < data_size)
    throw Error(what + ": " + std::to_string(data_size - cursor) +
                " bytes after the last tensor (the data section must end with it)");
  return h;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.file_ = std::make_shared<MappedFile>(path);
  f.header_ = parse_safetensors(f.file_->bytes(), path);
  f.tensors_.reserve(f.header_.tensors.size());
  for (const auto& info : f.header_.tensors) {
    f.index_[info.name] = f.tensors_.size();
    f.tensors_.push_back(Tensor{info, f.file_->data() + f.header_.data_start + info.begin});
  }
  return f;
}

const std::string& SafetensorsFile::path() const {
  return file_->path();
}

const Tensor* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const Tensor& SafetensorsFile::get(std::string_view name) const {
  if (auto* t = find(name)) return *t;
  throw Error(path() + ": no tensor named \"" + std::string(name) + "\"");
}

}  // namespace mx8::io
