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
  // "GGUF", version 3, the tensor and key-value counts.
  void header(uint64_t n_tensors, uint64_t n_kv) {
    put<uint32_t>(0x46554747u);
    put<uint32_t>(3);
    put<uint64_t>(n_tensors);
    put<uint64_t>(n_kv);
  }
  // One tensor info: name, dims (fastest-first), ggml type, offset in the data section.
  void tensor_info(const std::string& name, const std::vector<uint64_t>& ne, uint32_t type, uint64_t offset) {
    str(name);
    put<uint32_t>(uint32_t(ne.size()));
    for (uint64_t d : ne) put<uint64_t>(d);
    put<uint32_t>(type);
    put<uint64_t>(offset);
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
