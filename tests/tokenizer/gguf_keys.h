// GGUF files built in memory for the tokenizer and chat-template tests: metadata only, key by key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mx8/io/gguf.h"

namespace mx8::runtime {

struct GgufKeys {
  std::vector<uint8_t> body;
  uint64_t count = 0;
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
  std::vector<uint8_t> bytes() const {
    GgufKeys head;
    head.u32(0x46554747u);  // "GGUF"
    head.u32(3);            // version
    head.u64(0);            // tensors
    head.u64(count);
    head.put(body.data(), body.size());
    return head.body;
  }
  io::GgufFile file() const { return io::GgufFile::from_bytes(bytes()); }
};

}  // namespace mx8::runtime
