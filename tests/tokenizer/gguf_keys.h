// GGUF files built in memory for the tokenizer, chat-template and conversion tests: metadata key by
// key, and F32 tensors of zeros where a reader looks only at names and shapes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "mx8/io/gguf.h"

namespace mx8::runtime {

struct GgufKeys {
  std::vector<uint8_t> body;
  uint64_t count = 0;
  std::vector<std::pair<std::string, std::vector<uint64_t>>> tensors;
  static constexpr uint32_t kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7, kString = 8, kArray = 9;
  void put(const void* p, size_t n) { body.insert(body.end(), (const uint8_t*)p, (const uint8_t*)p + n); }
  void u32(uint32_t v) { put(&v, 4); }
  void u64(uint64_t v) { put(&v, 8); }
  void str(const std::string& v) {
    u64(v.size());
    put(v.data(), v.size());
  }
  // Each key: its name, its value type, its value.
  GgufKeys& key(const std::string& name, uint32_t type) {
    ++count;
    str(name);
    u32(type);
    return *this;
  }
  GgufKeys& string(const std::string& name, const std::string& v) {
    key(name, kString).str(v);
    return *this;
  }
  GgufKeys& uint(const std::string& name, uint32_t v) {
    key(name, kUint32).u32(v);
    return *this;
  }
  GgufKeys& real(const std::string& name, float v) {
    key(name, kFloat32).put(&v, 4);
    return *this;
  }
  GgufKeys& boolean(const std::string& name, bool v) {
    key(name, kBool).body.push_back(v);
    return *this;
  }
  GgufKeys& strings(const std::string& name, const std::vector<std::string>& v) {
    key(name, kArray).u32(kString);
    u64(v.size());
    for (const auto& x : v) str(x);
    return *this;
  }
  template <class T>
  GgufKeys& numbers(const std::string& name, uint32_t type, const std::vector<T>& v) {
    key(name, kArray).u32(type);
    u64(v.size());
    for (T x : v) put(&x, sizeof x);
    return *this;
  }
  // A tensor by its shape as PyTorch writes it (rows first); GGUF stores the dimensions reversed.
  GgufKeys& tensor(const std::string& name, const std::vector<uint64_t>& shape) {
    tensors.emplace_back(name, shape);
    return *this;
  }
  std::vector<uint8_t> bytes() const {
    GgufKeys out;
    out.u32(0x46554747u);  // "GGUF"
    out.u32(3);            // version
    out.u64(tensors.size());
    out.u64(count);
    out.put(body.data(), body.size());
    uint64_t offset = 0;
    for (const auto& [name, shape] : tensors) {
      out.str(name);
      out.u32(uint32_t(shape.size()));
      uint64_t elements = 1;
      for (auto d = shape.rbegin(); d != shape.rend(); ++d) {
        out.u64(*d);
        elements *= *d;
      }
      out.u32(0);  // F32
      out.u64(offset);
      offset += (elements * 4 + 31) / 32 * 32;  // the default alignment, 32
    }
    if (!tensors.empty()) out.body.resize((out.body.size() + 31) / 32 * 32 + offset);
    return out.body;
  }
  io::GgufFile file() const { return io::GgufFile::from_bytes(bytes()); }
};

}  // namespace mx8::runtime
