// libFuzzer target: tokenizer.json text (a model folder's, as downloaded) must load into a tokenizer
// or be refused with an mx8::Error; a tokenizer that loads must then encode and decode a short text
// without crashing, and give only ids inside its vocabulary.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "mx8/error.h"
#include "mx8/runtime/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto tok = mx8::runtime::tokenizer_from_hf_json(
        std::string_view(reinterpret_cast<const char*>(data), size), "", "fuzz tokenizer.json");
    for (auto id : tok->encode("Hello, world! 123 \xc3\xbc\xe4\xb8\xad <s>\n\n  x")) {
      if (id < 0 || static_cast<size_t>(id) >= tok->vocab_size()) std::abort();
      tok->token_bytes(id, false);
    }
  } catch (const mx8::Error&) {
  }
  return 0;
}
