// GGUF reader. Layout (all little-endian):
//   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x { string key | u32 type | value }          string = u64 length + bytes (no NUL)
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//   padding to general.alignment | tensor data (each tensor at data_start + offset)
// Version 1 used 32-bit counts and is not supported (it predates every model people still use).
#include "mx8/io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "mx8/error.h"

namespace mx8::io {

namespace {

// Sanity limits: far above anything real, low enough that a hostile count cannot make us allocate
// or loop for long before the bounds checks on the actual bytes reject it.
constexpr uint64_t kMaxDims = 4;  // GGML_MAX_DIMS
constexpr uint64_t kMaxStringLength = uint64_t(1) << 30;
constexpr int kMaxArrayNesting = 8;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_add_overflow(a, b, out);
}

// A read-only cursor that checks every read against the end of the buffer.
class Cursor {
 public:
  Cursor(const uint8_t* base, uint64_t size, const std::string& path)
      : base_(base), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const {
    throw Error("GGUF file " + path_ + ": " + what + " (at byte " + std::to_string(pos_) + ")");
  }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail(std::string("truncated while reading ") + what + ": need " + std::to_string(n) + " bytes, " +
           std::to_string(remaining()) + " left");
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const char* what) {
    uint64_t len = read<uint64_t>(what);
    if (len > kMaxStringLength) fail(std::string(what) + " has absurd length " + std::to_string(len));
    need(len, what);
    std::string s(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

// The smallest number of bytes one element of `t` occupies in the file (used to reject array
// counts that cannot possibly fit before reserving memory for them).
uint64_t min_encoded_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString:  // u64 length
      return 8;
    case GgufValueType::kArray:  // u32 type + u64 count
      return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t t) {
  return t <= uint32_t(GgufValueType::kFloat64);
}

// Reads one scalar of type t into v's scalar fields.
void read_scalar(Cursor& c, GgufValueType t, GgufValue& v) {
  v.type = t;
  switch (t) {
    case GgufValueType::kUint8:
      v.i = c.read<uint8_t>("uint8 value");
      break;
    case GgufValueType::kInt8:
      v.i = c.read<int8_t>("int8 value");
      break;
    case GgufValueType::kUint16:
      v.i = c.read<uint16_t>("uint16 value");
      break;
    case GgufValueType::kInt16:
      v.i = c.read<int16_t>("int16 value");
      break;
    case GgufValueType::kUint32:
      v.i = c.read<uint32_t>("uint32 value");
      break;
    case GgufValueType::kInt32:
      v.i = c.read<int32_t>("int32 value");
      break;
    case GgufValueType::kInt64:
      v.i = c.read<int64_t>("int64 value");
      break;
    case GgufValueType::kUint64:
      v.u = c.read<uint64_t>("uint64 value");
      v.i = v.u > uint64_t(std::numeric_limits<int64_t>::max()) ? 0 : int64_t(v.u);
      break;
    case GgufValueType::kFloat32:
      v.f = c.read<float>("float32 value");
      break;
    case GgufValueType::kFloat64:
      v.f = c.read<double>("float64 value");
      break;
    case GgufValueType::kBool: {
      uint8_t b = c.read<uint8_t>("bool value");
      if (b > 1) c.fail("bool value is " + std::to_string(b) + ", not 0 or 1");
      v.i = b;
      break;
    }
    case GgufValueType::kString:
      v.s = c.read_string("string value");
      break;
    case GgufValueType::kArray:
      c.fail("internal: read_scalar on an array");
  }
  if (t != GgufValueType::kUint64 && v.i >= 0) v.u = uint64_t(v.i);
}

void read_value(Cursor& c, GgufValueType t, GgufValue& v, int depth);

void read_array(Cursor& c, GgufValue& v, int depth) {
  if (depth > kMaxArrayNesting) c.fail("arrays nested deeper than " + std::to_string(kMaxArrayNesting));
  uint32_t et = c.read<uint32_t>("array element type");
  if (!valid_value_type(et)) c.fail("array element type " + std::to_string(et) + " is not a GGUF type");
  uint64_t n = c.read<uint64_t>("array length");
  uint64_t min_bytes;
  if (mul_overflows(n, min_encoded_size(GgufValueType(et)), &min_bytes) || min_bytes > c.remaining())
    c.fail("array of " + std::to_string(n) + " " + gguf_value_type_name(GgufValueType(et)) +
           " elements does not fit in the file");
  v.type = GgufValueType::kArray;
  v.array_type = GgufValueType(et);
  v.array_size = n;
  GgufValue tmp;
  switch (v.array_type) {
    case GgufValueType::kString:
      v.array_strings.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.array_strings.push_back(c.read_string("array string"));
      break;
    case GgufValueType::kArray:
      v.array_arrays.resize(n);
      for (uint64_t k = 0; k < n; ++k) read_array(c, v.array_arrays[k], depth + 1);
      break;
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      v.array_floats.reserve(n);
      for (uint64_t k = 0; k < n; ++k) {
        read_scalar(c, v.array_type, tmp);
        v.array_floats.push_back(tmp.f);
      }
      break;
    case GgufValueType::kUint64:
      v.array_u64s.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.array_u64s.push_back(c.read<uint64_t>("uint64 array element"));
      break;
    default:
      v.array_ints.reserve(n);
      for (uint64_t k = 0; k < n; ++k) {
        read_scalar(c, v.array_type, tmp);
        v.array_ints.push_back(tmp.i);
      }
      break;
  }
}

void read_value(Cursor& c, GgufValueType t, GgufValue& v, int depth) {
  if (t == GgufValueType::kArray)
    read_array(c, v, depth);
  else
    read_scalar(c, t, v);
}

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
      return "uint8";
    case GgufValueType::kInt8:
      return "int8";
    case GgufValueType::kUint16:
      return "uint16";
    case GgufValueType::kInt16:
      return "int16";
    case GgufValueType::kUint32:
      return "uint32";
    case GgufValueType::kInt32:
      return "int32";
    case GgufValueType::kFloat32:
      return "float32";
    case GgufValueType::kBool:
      return "bool";
    case GgufValueType::kString:
      return "string";
    case GgufValueType::kArray:
      return "array";
    case GgufValueType::kUint64:
      return "uint64";
    case GgufValueType::kInt64:
      return "int64";
    case GgufValueType::kFloat64:
      return "float64";
  }
  return "unknown";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
      return true;
    default:
      return false;
  }
}

GgufFile GgufFile::open(const std::string& path) {
  GgufFile g;
  g.path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open GGUF file " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error("cannot stat GGUF file " + path + ": " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("GGUF path " + path + " is not a regular file");
  }
  g.size_ = uint64_t(st.st_size);
  if (g.size_ > 0) {
    void* m = ::mmap(nullptr, g.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    ::close(fd);
    if (m == MAP_FAILED) throw Error("cannot map GGUF file " + path + ": " + std::strerror(e));
    g.map_ = m;
    g.base_ = static_cast<const uint8_t*>(m);
  } else {
    ::close(fd);
  }
  g.parse();
  return g;
}

GgufFile GgufFile::from_bytes(std::vector<uint8_t> bytes, const std::string& name) {
  GgufFile g;
  g.path_ = name;
  g.owned_ = std::move(bytes);
  g.base_ = g.owned_.data();
  g.size_ = g.owned_.size();
  g.parse();
  return g;
}

GgufFile::GgufFile(GgufFile&& o) noexcept {
  *this = std::move(o);
}

GgufFile& GgufFile::operator=(GgufFile&& o) noexcept {
  if (this == &o) return *this;
  if (map_) ::munmap(map_, size_);
  path_ = std::move(o.path_);
  base_ = o.base_;
  size_ = o.size_;
  map_ = o.map_;
  // Moving a vector keeps its buffer, so tensor data pointers into owned_ stay valid.
  owned_ = std::move(o.owned_);
  version_ = o.version_;
  alignment_ = o.alignment_;
  data_offset_ = o.data_offset_;
  metadata_ = std::move(o.metadata_);
  metadata_index_ = std::move(o.metadata_index_);
  tensors_ = std::move(o.tensors_);
  tensor_index_ = std::move(o.tensor_index_);
  o.map_ = nullptr;
  o.base_ = nullptr;
  o.size_ = 0;
  return *this;
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(map_, size_);
}

void GgufFile::parse() {
  Cursor c(base_, size_, path_);
  uint32_t magic = c.read<uint32_t>("magic");
  if (magic != 0x46554747u) c.fail("not a GGUF file (magic is not \"GGUF\")");
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3)
    c.fail("unsupported GGUF version " + std::to_string(version_) + " (mx8 reads versions 2 and 3)");
  uint64_t n_tensors = c.read<uint64_t>("tensor count");
  uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Each kv needs at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least 8+4+4+8.
  if (n_kv > c.remaining() / 13) c.fail("metadata count " + std::to_string(n_kv) + " cannot fit in the file");
  if (n_tensors > c.remaining() / 24)
    c.fail("tensor count " + std::to_string(n_tensors) + " cannot fit in the file");

  metadata_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.read_string("metadata key");
    if (key.empty()) c.fail("metadata key " + std::to_string(k) + " is empty");
    uint32_t t = c.read<uint32_t>("metadata value type");
    if (!valid_value_type(t))
      c.fail("metadata key '" + key + "' has unknown value type " + std::to_string(t));
    GgufValue v;
    read_value(c, GgufValueType(t), v, 0);
    if (metadata_index_.count(key)) c.fail("duplicate metadata key '" + key + "'");
    metadata_index_[key] = metadata_.size();
    metadata_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_integer() || a->u == 0 || (a->u & (a->u - 1)) != 0 || a->u > (uint64_t(1) << 30))
      c.fail("general.alignment must be a power-of-two integer, got " +
             (a->is_integer() ? std::to_string(a->u) : std::string(gguf_value_type_name(a->type))));
    alignment_ = a->u;
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    t.name = c.read_string("tensor name");
    if (t.name.empty()) c.fail("tensor " + std::to_string(k) + " has an empty name");
    uint32_t n_dims = c.read<uint32_t>("tensor dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      c.fail("tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    t.n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = c.read<uint64_t>("tensor dimension");
      if (ne > uint64_t(std::numeric_limits<int64_t>::max()) ||
          mul_overflows(t.n_elements, ne, &t.n_elements))
        c.fail("tensor '" + t.name + "' has an element count that overflows");
      t.ne.push_back(ne);
    }
    uint32_t type = c.read<uint32_t>("tensor type");
    if (!ggml_type_supported(type))
      c.fail("tensor '" + t.name + "' has ggml type " + ggml_type_label(type) +
             ", which mx8 does not read (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, "
             "Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4)");
    t.type = GgmlType(type);
    t.offset = c.read<uint64_t>("tensor offset");
    uint64_t be = ggml_block_elems(t.type);
    if (t.ne[0] % be != 0)
      c.fail("tensor '" + t.name + "' (" + ggml_type_name(t.type) + ") has row length " +
             std::to_string(t.ne[0]) + ", not a multiple of the block size " + std::to_string(be));
    if (mul_overflows(t.n_elements / be, ggml_block_bytes(t.type), &t.n_bytes))
      c.fail("tensor '" + t.name + "' has a byte size that overflows");
    if (t.offset % alignment_ != 0)
      c.fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) +
             " is not a multiple of the alignment " + std::to_string(alignment_));
    if (tensor_index_.count(t.name)) c.fail("duplicate tensor name '" + t.name + "'");
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  // Data starts at the next multiple of the alignment after the tensor infos.
  uint64_t end_of_infos = c.pos();
  uint64_t padded;
  if (add_overflows(end_of_infos, alignment_ - 1, &padded)) c.fail("data offset overflows");
  data_offset_ = padded / alignment_ * alignment_;
  if (data_offset_ > size_ && !tensors_.empty())
    c.fail("file ends before the tensor data section (data would start at " + std::to_string(data_offset_) +
           ")");
  uint64_t data_size = size_ >= data_offset_ ? size_ - data_offset_ : 0;

  // Bounds and overlap checks on tensor data.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (GgufTensor& t : tensors_) {
    uint64_t end;
    if (add_overflows(t.offset, t.n_bytes, &end) || end > data_size)
      throw Error("GGUF file " + path_ + ": tensor '" + t.name + "' data [" + std::to_string(t.offset) +
                  ", +" + std::to_string(t.n_bytes) + ") runs past the end of the file (data section is " +
                  std::to_string(data_size) + " bytes)");
    t.data = base_ + data_offset_ + t.offset;
    if (t.n_bytes) ranges.emplace_back(t.offset, end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t k = 1; k < ranges.size(); ++k)
    if (ranges[k].first < ranges[k - 1].second)
      throw Error("GGUF file " + path_ + ": tensor data ranges overlap at data offset " +
                  std::to_string(ranges[k].first));
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                             const char* want) {
  throw Error("GGUF file " + path + ": metadata key '" + key + "' is " + gguf_value_type_name(v.type) +
              ", expected " + want);
}
}  // namespace

int64_t GgufFile::require_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error("GGUF file " + path_ + ": missing metadata key '" + key + "'");
  if (!v->is_integer()) wrong_type(path_, key, *v, "an integer");
  if (v->type == GgufValueType::kUint64 && v->u > uint64_t(std::numeric_limits<int64_t>::max()))
    throw Error("GGUF file " + path_ + ": metadata key '" + key + "' value is out of range");
  return v->i;
}

int64_t GgufFile::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? require_int(key) : fallback;
}

double GgufFile::require_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error("GGUF file " + path_ + ": missing metadata key '" + key + "'");
  if (v->is_float()) return v->f;
  if (v->is_integer()) return v->type == GgufValueType::kUint64 ? double(v->u) : double(v->i);
  wrong_type(path_, key, *v, "a number");
}

double GgufFile::get_float(const std::string& key, double fallback) const {
  return has(key) ? require_float(key) : fallback;
}

const std::string& GgufFile::require_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) throw Error("GGUF file " + path_ + ": missing metadata key '" + key + "'");
  if (v->type != GgufValueType::kString) wrong_type(path_, key, *v, "a string");
  return v->s;
}

std::string GgufFile::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? require_string(key) : fallback;
}

bool GgufFile::get_bool(const std::string& key, bool fallback) const {
  const GgufValue* v = find(key);
  if (!v) return fallback;
  if (v->type != GgufValueType::kBool) wrong_type(path_, key, *v, "a bool");
  return v->i != 0;
}

const GgufValue& GgufFile::require_array(const std::string& key, GgufValueType element_type) const {
  const GgufValue* v = find(key);
  if (!v) throw Error("GGUF file " + path_ + ": missing metadata key '" + key + "'");
  if (v->type != GgufValueType::kArray) wrong_type(path_, key, *v, "an array");
  if (v->array_type != element_type)
    throw Error("GGUF file " + path_ + ": metadata key '" + key + "' is an array of " +
                gguf_value_type_name(v->array_type) + ", expected " + gguf_value_type_name(element_type));
  return *v;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::require_tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) throw Error("GGUF file " + path_ + ": missing tensor '" + name + "'");
  return *t;
}

}  // namespace mx8::io
