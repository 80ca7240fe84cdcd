// libFuzzer target: a model's architecture settings, from a config.json (the first byte 0) or a GGUF
// file's metadata (otherwise), through the checks that mx8 run applies before it sizes anything. A
// config that passes must give RoPE frequencies and a context length without crashing, and sizes
// whose products (the tensors mx8 allocates) fit in 64 bits.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "model/model_source.h"
#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "mx8/io/hf_config.h"
#include "mx8/model/llama.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  try {
    mx8::model::LlamaConfig c;
    if (data[0] == 0) {
      auto j = nlohmann::json::parse(data + 1, data + size, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) return 0;
      c = mx8::model::config_from_hf(mx8::io::HfConfig::from_json(j, "fuzz"), "fuzz");
    } else {
      mx8::model::GgufModelFiles g;  // one file: a split model's other files are not in the input
      g.files.push_back(
          mx8::io::GgufFile::from_bytes(std::vector<uint8_t>(data + 1, data + size), "fuzz.gguf"));
      c = mx8::model::config_from_gguf(g);
    }
    __int128 biggest = __int128(c.vocab) * c.dim;
    biggest = std::max(biggest, __int128(c.ffn) * c.dim);
    biggest = std::max(biggest, __int128(c.n_heads) * c.head_dim * c.dim);
    if (biggest * c.n_layers > INT64_MAX) std::abort();
    auto freq = mx8::model::rope_inv_freq(c);
    if (freq.size() != size_t(c.head_dim / 2)) std::abort();
    mx8::model::supported_context(c);
  } catch (const mx8::Error&) {
  }
  return 0;
}
