// A string-keyed hash map that can be searched with a std::string_view, so tokenizer hot loops
// look up substrings without allocating a std::string for each probe.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace mx8::runtime {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

}  // namespace mx8::runtime
