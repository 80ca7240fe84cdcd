// libFuzzer target: any bytes through the committed real tokenizers (Llama-3 and DeepSeek-V3 byte-level
// BPE, Qwen3 with its NFC normalizer, Llama-2 SentencePiece). The first byte picks the tokenizer and the
// options, the rest is the text. Checked: encoding never fails or crashes, every id is inside the
// vocabulary, decoding and stream decoding agree, and where no normalizer or prefix space changes the
// text (the byte-level vocabularies without special-token parsing) valid UTF-8 comes back byte for byte.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "mx8/runtime/tokenizer.h"
#include "tokenizer/tokenizer_test_data.h"

namespace {

using mx8::runtime::Tokenizer;

struct Loaded {
  std::unique_ptr<Tokenizer> tok;
  bool text_round_trips;  // decode(encode(text)) == text for valid UTF-8 without special parsing
};

std::vector<Loaded>& tokenizers() {
  static std::vector<Loaded> all = [] {
    std::vector<Loaded> v;
    for (const char* name : {"llama3", "deepseek_v3", "qwen3"}) {
      auto dir = mx8::test::hf_tokenizer_folder(name);
      if (dir.empty()) std::abort();  // the committed data is part of the checkout
      v.push_back({mx8::runtime::load_tokenizer(dir), std::string(name) == "llama3"});
    }
    v.push_back(
        {mx8::runtime::load_tokenizer(mx8::test::vocab_case_dir() / "ggml-vocab-llama-spm.gguf"), false});
    return v;
  }();
  return all;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d >> 6) != 2) return false;
      cp = cp << 6 | (d & 0x3f);
    }
    const uint32_t min_for_length[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_length[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  auto& all = tokenizers();
  const Loaded& loaded = all[data[0] % all.size()];
  const Tokenizer& tok = *loaded.tok;
  const bool add_special = data[0] & 8, parse_special = data[0] & 16;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  auto ids = tok.encode(text, {.add_special = add_special, .parse_special = parse_special});
  for (auto id : ids)
    if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) std::abort();
  std::string decoded = tok.decode(ids);
  mx8::runtime::StreamDecoder stream(tok);
  std::string streamed;
  for (auto id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  if (streamed != decoded) std::abort();
  if (loaded.text_round_trips && !add_special && !parse_special && valid_utf8(text) && decoded != text)
    std::abort();
  return 0;
}
