// JSON from outside mx8 (request bodies, model and tokenizer files) parsed with a bound on nesting.
// nlohmann's parser is iterative, but copying, comparing or walking a value recurses once per level,
// and the parser itself copies: a key inserted after a value in an ordered object moves the value by
// copy. A 200 KB request body with a value nested 100000 deep before its last key overflowed the
// server's stack and took the process down. Real documents nest a few levels (a tool's JSON schema
// perhaps twenty).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "mx8/error.h"

namespace mx8 {

inline constexpr int kMaxJsonDepth = 256;

// Parses `text` as Json (nlohmann::json or ordered_json). Syntax errors throw nlohmann's
// parse_error as json::parse does; nesting past kMaxJsonDepth throws mx8::Error naming `what`.
template <class Json = nlohmann::json>
Json parse_json_bounded(std::string_view text, const std::string& what) {
  auto bound = [&what](int depth, typename Json::parse_event_t, Json&) {
    if (depth > kMaxJsonDepth)
      throw Error(what + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return true;
  };
  return Json::parse(text.begin(), text.end(), bound);
}

}  // namespace mx8
