// libFuzzer target: text through the structured-output matcher (runtime/json_matcher.h). The first byte
// picks one of the schemas below, or free text with strict calls of two tools (Hermes markers, none as
// Llama 3 writes them, or Mistral's [TOOL_CALLS]NAME[ARGS] with bare names); the rest is a reply, fed
// until a byte is refused. Checked:
//   - whatever the matcher calls complete parses as JSON (nlohmann) and is valid under the schema, by a
//     validator written here from the JSON Schema rules, apart from the matcher; with tools, every call
//     in the text is {"name", "arguments"} of a tool, its arguments valid under that tool's schema;
//   - a snapshot restores the state: after more bytes and a restore, the next byte is taken or refused as
//     before, and completeness is the same.
#include <cmath>
#include <cstdint>
#include <memory>
#include <regex>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "mx8/runtime/json_matcher.h"

namespace {

using json = nlohmann::json;
using mx8::runtime::JsonMatcher;
using mx8::runtime::JsonSchema;

const char* kSchemas[] = {
    R"({"type": "object"})",
    R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 3}, "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", 1, null, {"k": [true]}]}, "minItems": 1, "maxItems": 2}},
        "required": ["name"], "additionalProperties": false})",
    R"({"$defs": {"n": {"type": "object", "properties": {"v": {"type": ["number", "null"]},
        "next": {"anyOf": [{"$ref": "#/$defs/n"}, {"type": "boolean"}]}}, "required": ["v"]}}, "$ref": "#/$defs/n"})",
    R"({"type": "array", "items": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}})",
    R"({"type": "object", "properties": {"s": {"const": "x\u00e9\"y"}, "o": {"type": "object",
        "additionalProperties": false}}, "required": ["s", "o"]})",
    R"({"type": "array", "items": {"anyOf": [{"type": "integer", "minimum": -3, "exclusiveMaximum": 250, "multipleOf": 3},
        {"type": "object", "properties": {"p": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.125},
        "lat": {"type": ["number", "null"], "minimum": -90.5, "maximum": 90},
        "id": {"type": "string", "pattern": "^[A-Z]{2}(-\\d{1,3})+$"}, "w": {"pattern": "a[b-d]*\\s"}}}]}})",
};

// JSON Schema's integer is a number without a fractional part, of any size: nlohmann reads one past 64
// bits as a double (whole, at that size).
bool is_integer(const json& v) {
  return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
}

// The JSON Schema rules for the keywords above.
bool valid(const json& v, const json& s, const json& root) {
  if (s.contains("$ref")) {
    const std::string ref = s["$ref"];
    return valid(v, ref == "#" ? root : root["$defs"][ref.substr(8)], root);
  }
  if (s.contains("const") && v != s["const"]) return false;
  if (s.contains("enum")) {
    bool any = false;
    for (const json& e : s["enum"]) any = any || e == v;
    if (!any) return false;
  }
  if (s.contains("anyOf")) {
    bool any = false;
    for (const json& a : s["anyOf"]) any = any || valid(v, a, root);
    if (!any) return false;
  }
  if (s.contains("type")) {
    const json types = s["type"].is_array() ? s["type"] : json::array({s["type"]});
    bool any = false;
    for (const json& t : types)
      any = any || (t == "object" && v.is_object()) || (t == "array" && v.is_array()) ||
            (t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
            (t == "integer" && is_integer(v)) || (t == "boolean" && v.is_boolean()) ||
            (t == "null" && v.is_null());
    if (!any) return false;
  }
  if (v.is_object()) {
    for (const json& r : s.value("required", json::array()))
      if (!v.contains(r.get<std::string>())) return false;
    for (const auto& [key, value] : v.items()) {
      if (s.contains("properties") && s["properties"].contains(key)) {
        if (!valid(value, s["properties"][key], root)) return false;
      } else if (s.contains("additionalProperties")) {
        const json& a = s["additionalProperties"];
        if (a == false || (a.is_object() && !valid(value, a, root))) return false;
      }
    }
  }
  if (v.is_array()) {
    if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return false;
    if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return false;
    if (s.contains("items"))
      for (const json& e : v)
        if (!valid(e, s["items"], root)) return false;
  }
  if (v.is_number()) {  // as a validator reads it: a double against the bounds, parsed as doubles
    const double x = v.get<double>();
    if (s.contains("minimum") && x < s["minimum"].get<double>()) return false;
    if (s.contains("maximum") && x > s["maximum"].get<double>()) return false;
    if (s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>()) return false;
    if (s.contains("exclusiveMaximum") && x >= s["exclusiveMaximum"].get<double>()) return false;
    if (s.contains("multipleOf") && std::fmod(x, s["multipleOf"].get<double>()) != 0) return false;
  }
  // The patterns above are ASCII: std::regex (ECMAScript, searching as JSON Schema does) reads them as
  // the schema means them.
  if (v.is_string() && s.contains("pattern") &&
      !std::regex_search(v.get<std::string>(), std::regex(s["pattern"].get<std::string>())))
    return false;
  if (v.is_string()) {
    size_t chars = 0;
    for (char c : v.get<std::string>()) chars += (uint8_t(c) & 0xC0) != 0x80;
    if (s.contains("minLength") && chars < s["minLength"].get<size_t>()) return false;
    if (s.contains("maxLength") && chars > s["maxLength"].get<size_t>()) return false;
  }
  return true;
}

// The tools of the free-text case: "w" strict (the second schema above), "n" any object.
const char* kToolOpen = "<tool_call>";
const char* kToolClose = "</tool_call>";

// Every call in a complete free-text reply: from each opening marker, the shortest text before a
// closing marker that parses is the call (a marker inside a string leaves an unclosed string before it).
bool call_valid(const json& call, const char* key, const json& strict) {
  if (!call.is_object() || call.size() != 2 || !call.contains(key) || !call[key].is_object()) return false;
  if (call["name"] == "w") return valid(call[key], strict, strict);
  return call["name"] == "n";
}

bool calls_valid(const std::string& text, const json& strict) {
  const std::string open = kToolOpen, close = kToolClose;
  for (size_t at = text.find(open); at != std::string::npos; at = text.find(open, at)) {
    const size_t body = at + open.size();
    json call;
    size_t end = text.find(close, body);
    for (; end != std::string::npos; end = text.find(close, end + 1)) {
      call = json::parse(text.substr(body, end - body), nullptr, false);
      if (!call.is_discarded()) break;
    }
    if (end == std::string::npos || !call_valid(call, "arguments", strict)) return false;
    at = end + close.size();
  }
  return true;
}

// Llama 3: a reply whose first character is '{' is calls, one after another, ';' or whitespace between.
bool bare_calls_valid(const std::string& text, const json& strict) {
  const size_t first = text.find_first_not_of(" \n\t");
  if (first == std::string::npos || text[first] != '{') return true;  // free text
  std::istringstream in(text.substr(first));
  for (;;) {
    json call;
    in >> call;  // one value, the rest left in the stream; throws (a crash) where it is not JSON
    if (!call_valid(call, "parameters", strict)) return false;
    in >> std::ws;
    if (in.peek() == ';') in.get();
    in >> std::ws;
    if (in.peek() == std::char_traits<char>::eof()) return true;
  }
}

// Mistral: after the first [TOOL_CALLS], calls only: NAME (blanks before it, as the reader trims them)
// [ARGS] one JSON value, then [TOOL_CALLS] again or the end.
bool mistral_calls_valid(std::string text, const json& strict) {
  const std::string open = "[TOOL_CALLS]", sep = "[ARGS]";
  const size_t first = text.find(open);
  if (first == std::string::npos) return true;  // free text
  text.erase(0, first);
  while (text.rfind(open, 0) == 0) {
    const size_t sep_at = text.find(sep);
    if (sep_at == std::string::npos) return false;
    std::string name = text.substr(open.size(), sep_at - open.size());
    name.erase(0, name.find_first_not_of(" \n\t"));
    std::istringstream in(text.substr(sep_at + sep.size()));
    json arguments;
    in >> arguments;  // one value, the rest left in the stream; throws (a crash) where it is not JSON
    if (!call_valid({{"name", name}, {"arguments", arguments}}, "arguments", strict)) return false;
    in >> std::ws;
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return text.empty();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  constexpr size_t kValues = sizeof(kSchemas) / sizeof(kSchemas[0]), kCount = kValues + 3;
  static const std::vector<std::pair<json, std::shared_ptr<const JsonSchema>>> schemas = [] {
    std::vector<std::pair<json, std::shared_ptr<const JsonSchema>>> out;
    for (const char* s : kSchemas)
      out.emplace_back(json::parse(s),
                       std::make_shared<const JsonSchema>(JsonSchema::compile(json::parse(s))));
    const json strict = json::parse(kSchemas[1]);
    out.emplace_back(strict, std::make_shared<const JsonSchema>(
                                 JsonSchema::text().with_calls({{"w", strict}, {"n", std::nullopt}})));
    out.emplace_back(strict, std::make_shared<const JsonSchema>(JsonSchema::text().with_calls(
                                 {{"w", strict}, {"n", std::nullopt}}, "parameters")));
    out.emplace_back(strict, std::make_shared<const JsonSchema>(JsonSchema::text().with_bare_calls(
                                 {{"w", strict}, {"n", std::nullopt}}, "[ARGS]")));
    return out;
  }();
  const size_t which = data[0] % kCount;
  const bool tools = which == kValues, bare = which == kValues + 1, mistral = which == kValues + 2;
  const auto& [schema_json, schema] = schemas[which];
  JsonMatcher m(schema, {false,
                         false,
                         {},
                         tools     ? kToolOpen
                         : mistral ? "[TOOL_CALLS]"
                                   : "",
                         tools ? kToolClose : ""});
  std::string text;
  size_t i = 1;
  for (; i < size && m.feed(data[i]); ++i) text += char(data[i]);
  if (i == size && m.complete() && (tools || bare || mistral)) {
    if (!(tools     ? calls_valid(text, schema_json)
          : mistral ? mistral_calls_valid(text, schema_json)
                    : bare_calls_valid(text, schema_json)))
      __builtin_trap();
  } else if (i == size && m.complete()) {
    const json v = json::parse(text);  // throws (a crash) if the matcher let through what is not JSON
    if (!valid(v, schema_json, schema_json)) __builtin_trap();
  }
  if (i < size) return 0;  // refused: the state is unspecified
  // Snapshot and restore around more bytes (the input again, from its start): the restored state takes
  // and refuses what a copy made before them does.
  const JsonMatcher before = m;
  JsonMatcher::Snapshot snap;
  m.save(snap);
  for (size_t k = 1; k < size && m.feed(data[k]); ++k) {
  }
  m.restore(snap);
  if (m.complete() != before.complete()) __builtin_trap();
  for (int b = 0; b < 256; ++b) {
    JsonMatcher a = before;
    m.restore(snap);
    if (a.feed(uint8_t(b)) != m.feed(uint8_t(b))) __builtin_trap();
  }
  return 0;
}
