// libFuzzer target: a chat template is a model's own Jinja source, which mx8 runs as the model folder
// gives it. Whatever the source, parsing and rendering a short conversation must end with text or an
// mx8::Error: never a crash, a hang or memory without bound.
#include <cstdint>
#include <string>

#include "mx8/error.h"
#include "mx8/runtime/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    mx8::runtime::ChatTemplate tmpl(std::string(reinterpret_cast<const char*>(data), size), "<s>", "</s>");
    tmpl.apply({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "2+2?"}}, true);
  } catch (const mx8::Error&) {
  }
  return 0;
}
