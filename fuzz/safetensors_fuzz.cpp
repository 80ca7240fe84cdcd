// libFuzzer target: the safetensors header parser must accept or reject any byte string with an
// mx8::Error, never crash, hang, read out of bounds or overflow (ASan and UBSan watch). When it
// accepts, the tensors it reports must lie inside the input.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "mx8/error.h"
#include "mx8/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto h = mx8::io::parse_safetensors(std::span<const uint8_t>(data, size), "fuzz");
    for (const auto& t : h.tensors)
      if (t.end > size - h.data_start || t.begin > t.end) std::abort();  // a tensor outside the file
  } catch (const mx8::Error&) {
  }
  return 0;
}
