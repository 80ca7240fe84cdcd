// libFuzzer target: the GGUF reader (metadata, tensor infos, alignment) must accept or reject any
// byte string with an mx8::Error, never crash, and report only tensors that lie inside the input,
// whose blocks then decode (src/io/ggml_blocks.cpp) without reading past them.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mx8/error.h"
#include "mx8/io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = mx8::io::GgufFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz");
    for (const auto& t : f.tensors()) {
      const uint64_t data_bytes = f.file_size() - f.data_offset();
      if (f.data_offset() > f.file_size() || t.offset > data_bytes || t.n_bytes > data_bytes - t.offset)
        std::abort();
      // Every block decoder on whatever bytes the tensor holds (bounded: the reader only promises that
      // they lie inside the input, and a 1-element-per-byte type can claim a large count of them).
      if (t.n_elements <= (uint64_t(1) << 20)) mx8::io::gguf_tensor_to_f32(t);
    }
  } catch (const mx8::Error&) {
  }
  return 0;
}
