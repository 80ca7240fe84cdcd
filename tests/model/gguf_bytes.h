#pragma once
// GGUF bytes written field by field (version 3: header, key-values, tensor infos, data), for model
// tests that need a file no tool here makes (YaRN metadata, every block type in one model).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "mx8/io/gguf.h"

namespace mx8::test {

struct GgufBytes {
  std::vector<uint8_t> b;
  template <typename T>
  void put(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.insert(b.end(), tmp, tmp + sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void key(const std::string& k, io::GgufValueType t) {
    str(k);
    put<uint32_t>(uint32_t(t));
  }
  void u32(const std::string& k, uint32_t v) { key(k, io::GgufValueType::kUint32), put(v); }
  void f32(const std::string& k, float v) { key(k, io::GgufValueType::kFloat32), put(v); }
  void text(const std::string& k, const std::string& v) { key(k, io::GgufValueType::kString), str(v); }
  void strings(const std::string& k, const std::vector<std::string>& v) {
    key(k, io::GgufValueType::kArray);
    put<uint32_t>(uint32_t(io::GgufValueType::kString));
    put<uint64_t>(v.size());
    for (const std::string& e : v) str(e);
  }
};

}  // namespace mx8::test
