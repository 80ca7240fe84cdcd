// libFuzzer target: config.json parsing must turn any JSON (or non-JSON) into a config or an
// mx8::Error, never crash or throw anything else.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "mx8/error.h"
#include "mx8/io/hf_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    mx8::io::HfConfig::from_json(j, "fuzz");
  } catch (const mx8::Error&) {
  }
  return 0;
}
