// A string as a JSON string literal, escaped the way serde_json and Python's json.dumps(...,
// ensure_ascii=False) write it: '"' and '\\' escaped, the short forms for \b \f \n \r \t, other
// control characters as \u00xx (lower-case hex), everything else raw UTF-8. The safetensors header
// writer and the chat templates' tojson both need exactly this.
#pragma once

#include <string>

namespace mx8 {

void append_json_string(std::string& out, const std::string& s);

}  // namespace mx8
