// A JSON Schema compiled for constrained generation (OpenAI's response_format json_schema, Anthropic's
// output_config.format): a graph of nodes that JsonMatcher walks byte by byte.
//
// What a generated value may be is a subset of what the schema allows, chosen so that a byte-level
// matcher decides every byte without looking ahead:
//   - an object with `properties` holds only those (additionalProperties false or not: more keys
//     would be valid JSON Schema but never needed), each once, every `required` one before `}`; an
//     object without `properties` (json_object mode, {"type": "object"}) takes any keys, each value as
//     `additionalProperties` says (any JSON when absent or true);
//   - `enum` and `const` values are written as compact JSON (nlohmann's dump: no spaces);
//   - `anyOf` / `oneOf` / a list of types: the alternatives must start with different characters
//     (Optional[X] = anyOf [X, null] does; two objects do not), so the first byte chooses one.
//   - a number or integer with a range (minimum, maximum, exclusiveMinimum, exclusiveMaximum; the
//     draft-4 boolean exclusive forms too) is written without an exponent, an integer with at most 18
//     digits, a number with at most kRangeDecimals decimals (more where a bound has more, up to
//     kMaxRangeDecimals) and at most 18 digits in all; each digit is taken only where some value in the
//     range can still be reached, so a reply cannot paint itself into a corner.
// Supported keywords: type, properties, required, additionalProperties, items, minItems, maxItems,
// minLength, maxLength, pattern (json_pattern.h; not beside minLength or maxLength), format (date, time,
// date-time, uuid, ipv4, email, hostname: held as patterns; others read past), minimum, maximum,
// exclusiveMinimum, exclusiveMaximum, multipleOf (whole), enum, const, allOf of one schema, anyOf,
// oneOf, $ref (to "#", "#/$defs/..." or "#/definitions/..."), $defs, definitions; annotations (title,
// description, default, examples, $schema, $id, $comment, strict, nullable false, deprecated, readOnly,
// writeOnly) are read past. Any other keyword (uniqueItems, not, allOf of several, ...) constrains in a
// way the matcher would not honour: compile() throws mx8::Error naming it and where it is, so a request
// is refused rather than answered off-schema.
//
// A schema may also hold tool calls (with_calls): the object {"name": NAME, "arguments": ARGS} of one of
// the tools (or "parameters", as Llama 3 writes it), written in that order, ARGS a value of that tool's
// arguments schema (any object where it has none); or, where the syntax writes the name bare, NAME then
// a separator then ARGS (Mistral's NAME[ARGS]{...}, DeepSeek's NAME<｜tool▁sep｜>{...}). Then the
// reply's value may be free text instead (text()).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "mx8/runtime/json_pattern.h"

namespace mx8::runtime {

// A tool a reply may call: its name and, where its arguments are held to a schema (strict), that schema.
struct JsonTool {
  std::string name;
  std::optional<nlohmann::json> arguments;
};

class JsonSchema {
 public:
  enum class Kind : uint8_t { any, object, array, string, number, integer, literal, choice, call };
  struct Property {
    std::string key;  // as written in the output: a JSON string, quotes included ("\"name\"")
    int32_t node = 0;
  };
  struct Node {
    Kind kind = Kind::any;
    // object: properties sorted by key (at most 64), which must appear (bit i: properties[i]), and for an
    // object without properties, the node of every value.
    std::vector<Property> properties;
    uint64_t required = 0;
    int32_t values = 0;
    // array: the node of the items, how many.
    int32_t items = 0;
    // array items or string characters (code points): at least min, at most max (-1: no limit).
    int64_t min = 0, max = -1;
    // literal: the values (compact JSON), sorted; call: the tools' names (JSON strings), sorted, and
    // the node of each one's arguments.
    std::vector<std::string> literals;
    std::vector<int32_t> arguments;
    std::string arguments_key;  // call: the arguments' key as written, quotes included ("": bare names,
                                // each literal the name and its separator)
    // choice: for each first byte of a value, the alternative that starts with it (-1: none).
    std::vector<int32_t> by_first_byte;
    // number or integer with a range: values counted in units of 10^-scale (scale 0 for integers), from
    // low to high, both included (exclusive bounds already moved in), within +-kRangeUnits.
    // Values are multiples of `step` units where it is not 0 (multipleOf; low and high are multiples).
    bool ranged = false;
    uint8_t scale = 0;
    int64_t low = 0, high = 0, step = 0;
    // string: the pattern its value must match, or none.
    std::shared_ptr<const StringPattern> pattern;
  };
  static constexpr int kRangeDecimals = 6, kMaxRangeDecimals = 12;
  static constexpr int64_t kRangeUnits = 999'999'999'999'999'999;  // 18 digits

  // Throws mx8::Error naming what is not supported or malformed and its path ("#/properties/a").
  static JsonSchema compile(const nlohmann::json& schema);
  // Any JSON object (json_object mode).
  static JsonSchema any_object();
  // No value: the reply is free text (with tool calls, see with_calls).
  static JsonSchema text();
  // This schema, with calls of `tools` (names unique), the arguments under `arguments_key` (Llama 3
  // writes "parameters"). Throws mx8::Error naming the tool and where its arguments schema is not
  // supported, or where it allows a value that is not an object.
  JsonSchema with_calls(const std::vector<JsonTool>& tools,
                        const std::string& arguments_key = "arguments") const;
  // The same with bare names: each call is NAME, `separator`, then ARGS. The separator must not start
  // with a character a name may hold (letters, digits, '_', '-', '.'), so no name and separator is a
  // prefix of another.
  JsonSchema with_bare_calls(const std::vector<JsonTool>& tools, const std::string& separator) const;

  const Node& node(int32_t i) const { return nodes_[size_t(i)]; }
  int32_t root() const { return root_; }  // -1: free text
  int32_t call() const { return call_; }  // the node of a call object; -1: no tools
  // Fixed nodes every schema has: any JSON value, and its parts (true, false and null are kAnyLiteral).
  static constexpr int32_t kAny = 0, kAnyObject = 1, kAnyArray = 2, kAnyString = 3, kAnyNumber = 4,
                           kAnyLiteral = 5;

 private:
  JsonSchema calls_of(const std::vector<JsonTool>& tools, const std::string& arguments_key,
                      const std::string& separator) const;
  JsonSchema();
  std::vector<Node> nodes_;
  int32_t root_ = kAny;
  int32_t call_ = -1;
  friend class JsonSchemaCompiler;
};

// The least multiple of `step` (> 0) at or above `v`, and the greatest at or below it.
int64_t ceil_multiple(int64_t v, int64_t step);
int64_t floor_multiple(int64_t v, int64_t step);

// Whether `b` can be the first byte of a value of `n` (before any choice is resolved).
bool json_value_starts_with(const JsonSchema& s, int32_t node, uint8_t b);

}  // namespace mx8::runtime
