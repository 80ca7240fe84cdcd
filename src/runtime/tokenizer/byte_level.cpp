// GPT-2's byte <-> character mapping (see byte_level.h).
#include "runtime/tokenizer/byte_level.h"

#include <array>

#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime::byte_level {
namespace {

struct Tables {
  std::array<std::string, 256> to_string;
  std::array<uint32_t, 256> to_cp;
  std::array<int16_t, 512> from_cp;  // code point (< 0x200) -> byte, -1 if not in the alphabet

  Tables() {
    from_cp.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? b : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
      unicode::append_utf8(to_string[b], to_cp[b]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::string& byte_to_string(uint8_t b) {
  return tables().to_string[b];
}

std::string encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.to_string[static_cast<uint8_t>(c)];
  return out;
}

bool decode(std::string_view text, std::string& out) {
  const Tables& t = tables();
  std::string bytes;
  bytes.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp = unicode::decode_one(text, i);
    if (cp >= 512 || t.from_cp[cp] < 0) return false;
    bytes += static_cast<char>(t.from_cp[cp]);
  }
  out += bytes;
  return true;
}

}  // namespace mx8::runtime::byte_level
