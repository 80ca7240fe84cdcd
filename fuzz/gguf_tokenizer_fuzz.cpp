// libFuzzer target: the tokenizer a GGUF file carries (tokenizer.ggml.*: SentencePiece-style "llama"
// or byte-level "gpt2"). Whatever the metadata, loading ends in a tokenizer or an mx8::Error; a
// tokenizer that loads encodes and decodes a short text without crashing and gives only ids inside
// its vocabulary, which the model's embedding table is checked against.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "mx8/error.h"
#include "mx8/io/gguf.h"
#include "mx8/runtime/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto file = mx8::io::GgufFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf");
    auto tok = mx8::runtime::tokenizer_from_gguf(file);
    auto check = [&](mx8::runtime::TokenId id) {
      if (id != mx8::runtime::kNoToken && (id < 0 || static_cast<size_t>(id) >= tok->vocab_size()))
        std::abort();
    };
    check(tok->bos_id());
    check(tok->eos_id());
    for (auto id : tok->stop_ids()) check(id);
    auto ids = tok->encode("Hello, world! 123 \xc3\xbc\xe4\xb8\xad <s>\n\n  x");
    for (auto id : ids) check(id);
    tok->decode(ids);
  } catch (const mx8::Error&) {
  }
  return 0;
}
