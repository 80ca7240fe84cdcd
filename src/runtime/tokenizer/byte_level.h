// GPT-2's byte-level alphabet: every byte maps to one printable character (printable Latin-1
// bytes to themselves, the other 68 to U+0100 onwards in byte order), so BPE can work on text
// that has no spaces or control characters and still represent any byte string.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mx8::runtime::byte_level {

// The UTF-8 text of the character that stands for byte b.
const std::string& byte_to_string(uint8_t b);
// The mapped form of a byte string.
std::string encode(std::string_view bytes);
// Maps mapped text back to bytes, appending to `out`; false (out unchanged) if some character is
// not in the alphabet.
bool decode(std::string_view text, std::string& out);

}  // namespace mx8::runtime::byte_level
