// Fuzzes StringPattern (the structured-output pattern compiler) and holds it to std::regex, an engine
// nobody here wrote. Input: a pattern, a NUL byte, then a string. Every pattern must compile or be
// refused with mx8::Error (no crash, no hang: the automaton is bounded). Where both engines take an
// ASCII pattern (no named group: std::regex has none), the automaton must match the ASCII string
// exactly when std::regex_search (ECMAScript, the grammar JSON Schema names) finds the pattern in it
// (so every prefix of a matching string stayed alive). Strings hold only characters a JSON string can
// write without \u escapes (the automaton leaves the others out by design).
#include <cstdint>
#include <regex>
#include <string>
#include <string_view>

#include "mx8/error.h"
#include "mx8/runtime/json_pattern.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t cut = in.find('\0');
  if (cut == std::string_view::npos || cut > 48 || size - cut - 1 > 24) return 0;
  const std::string pattern(in.substr(0, cut)), text(in.substr(cut + 1));
  std::unique_ptr<mx8::runtime::StringPattern> p;
  try {
    p = std::make_unique<mx8::runtime::StringPattern>(pattern);
  } catch (const mx8::Error&) {
    return 0;
  }
  for (unsigned char c : pattern + text)
    if (c >= 0x80) return 0;
  for (unsigned char c : text)
    if (c < 0x20 && c != '\b' && c != '\t' && c != '\n' && c != '\f' && c != '\r') return 0;
  if (pattern.find("(?<") != std::string::npos) return 0;
  std::regex re;
  try {
    re = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error&) {
    return 0;
  }
  bool want = false;
  try {
    want = std::regex_search(text, re);
  } catch (const std::regex_error&) {  // libstdc++'s own limits (complexity, stack)
    return 0;
  }
  int32_t state = mx8::runtime::StringPattern::kStart;
  for (char c : text) {
    state = p->next(state, uint8_t(c));
    if (state < 0) break;
  }
  const bool got = state >= 0 && p->accepts(state);
  if (got != want) __builtin_trap();
  return 0;
}
