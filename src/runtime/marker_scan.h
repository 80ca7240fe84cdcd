// Scanning generated text for markers that arrive a piece at a time (runtime/tool_calls.h,
// runtime/reasoning.h): what may still become a marker is held back, whitespace around one dropped.
#pragma once

#include <algorithm>
#include <string_view>

namespace mx8::runtime {

inline bool is_space(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

// The length of the longest suffix of `text` that is a proper prefix of `marker`.
inline size_t partial_marker(std::string_view text, std::string_view marker) {
  for (size_t k = std::min(text.size(), marker.size() - 1); k > 0; --k)
    if (text.substr(text.size() - k) == marker.substr(0, k)) return k;
  return 0;
}

// Where the text before `end` ends once the whitespace and a possible start of `marker` at its end
// are held back.
inline size_t safe_end(std::string_view text, std::string_view marker) {
  size_t cut = text.size() - partial_marker(text, marker);
  while (cut > 0 && is_space(text[cut - 1])) --cut;
  return cut;
}

}  // namespace mx8::runtime
