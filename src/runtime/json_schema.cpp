#include "mx8/runtime/json_schema.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "mx8/error.h"
#include "mx8/runtime/json_matcher.h"

namespace mx8::runtime {

namespace {

using json = nlohmann::json;

// Keywords that describe a value without constraining it: read past.
const std::set<std::string> kAnnotations = {"title",    "description", "default", "examples",   "$schema",
                                            "$id",      "$comment",    "format",  "strict",     "deprecated",
                                            "readOnly", "writeOnly",   "$defs",   "definitions"};
const std::set<std::string> kTypes = {"object", "array", "string", "number", "integer", "boolean", "null"};

const char* const kRangeKeys[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};

// A JSON number as its decimal digits and a power of ten: value = -+digits x 10^exp, digits without
// leading or trailing zeros ("0" for zero). Read from nlohmann's shortest text of it, so a bound of 0.1
// is the decimal its author wrote.
struct Decimal {
  bool negative = false;
  std::string digits;
  int exp = 0;
};

Decimal decimal_of(const json& v) {
  const std::string t = v.dump();  // "-12", "0.1", "1e-07", "1.5e+20"
  Decimal d;
  size_t i = 0;
  if (t[i] == '-') d.negative = true, ++i;
  int decimals = 0;
  bool dot = false;
  for (; i < t.size() && t[i] != 'e' && t[i] != 'E'; ++i) {
    if (t[i] == '.') {
      dot = true;
      continue;
    }
    d.digits += t[i];
    decimals += dot;
  }
  d.exp = (i < t.size() ? std::stoi(t.substr(i + 1)) : 0) - decimals;
  d.digits.erase(0, std::min(d.digits.find_first_not_of('0'), d.digits.size()));
  while (!d.digits.empty() && d.digits.back() == '0') d.digits.pop_back(), ++d.exp;
  if (d.digits.empty()) d = {false, "0", 0};
  return d;
}

// The bound `d` in units of 10^-scale, moved inward to the nearest unit (up for a lower bound, down for
// an upper one; one unit in where it is exact and exclusive). Past +-kRangeUnits: one unit past it.
int64_t bound_units(const Decimal& d, int scale, bool upper, bool exclusive) {
  const int shift = d.exp + scale;
  std::string whole = d.digits;
  bool exact = true;
  if (shift >= 0) {
    whole.append(size_t(shift), '0');
  } else {
    const size_t cut = size_t(-shift) >= whole.size() ? 0 : whole.size() - size_t(-shift);
    exact = cut == whole.size();
    whole.resize(cut);
  }
  whole.erase(0, std::min(whole.find_first_not_of('0'), whole.size()));
  constexpr int64_t past = JsonSchema::kRangeUnits + 1;
  int64_t v = whole.size() > 18 ? past : whole.empty() ? 0 : int64_t(std::stoull(whole));
  if (d.negative) v = -v;  // the bound times 10^scale, truncated toward zero
  if (!exact)
    v += upper ? (d.negative ? -1 : 0) : (d.negative ? 0 : 1);
  else if (exclusive)
    v += upper ? -1 : 1;
  return std::clamp(v, -past, past);
}

// String formats a value is held to (those of OpenAI's structured outputs that a pattern can say), each
// as a pattern admitting a subset of it: RFC 3339 dates with the days each month has (February to the
// 28th: an automaton keeps no calendar), times with seconds to 59 and up to six decimals (what Python's
// datetime takes), UUIDs, dotted IPv4, e-mail addresses of the common form, and host names. Compiled
// once. Other formats stay annotations, as JSON Schema makes them by default.
std::shared_ptr<const StringPattern> format_pattern(const std::string& format) {
  static const std::map<std::string, std::shared_ptr<const StringPattern>> formats = [] {
    const std::string date =
        "\\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\\d|30)|"
        "02-(?:0[1-9]|1\\d|2[0-8]))";
    const std::string time =
        "(?:[01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(?:\\.\\d{1,6})?(?:Z|[+-](?:[01]\\d|2[0-3]):[0-5]\\d)";
    const std::string byte = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
    const std::string label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    const std::pair<const char*, std::string> patterns[] = {
        {"date", "^" + date + "$"},
        {"time", "^" + time + "$"},
        {"date-time", "^" + date + "T" + time + "$"},
        {"uuid", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
        {"ipv4", "^(?:" + byte + "\\.){3}" + byte + "$"},
        {"email", "^[A-Za-z0-9._%+-]{1,64}@" + label + "(?:\\." + label + ")+$"},
        {"hostname", "^" + label + "(?:\\." + label + ")*$"}};
    std::map<std::string, std::shared_ptr<const StringPattern>> out;
    for (const auto& [name, pattern] : patterns) out[name] = std::make_shared<const StringPattern>(pattern);
    return out;
  }();
  const auto it = formats.find(format);
  return it == formats.end() ? nullptr : it->second;
}

constexpr int64_t kPow10[13] = {1,           10,           100,          1000,      10000,
                                100000,      1000000,      10000000,     100000000, 1000000000,
                                10000000000, 100000000000, 1000000000000};

std::string pointer_escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

}  // namespace

JsonSchema::JsonSchema() {
  nodes_.resize(6);
  nodes_[kAny].kind = Kind::any;
  nodes_[kAnyObject].kind = Kind::object;
  nodes_[kAnyObject].values = kAny;
  nodes_[kAnyArray].kind = Kind::array;
  nodes_[kAnyArray].items = kAny;
  nodes_[kAnyString].kind = Kind::string;
  nodes_[kAnyNumber].kind = Kind::number;
  nodes_[kAnyLiteral].kind = Kind::literal;
  nodes_[kAnyLiteral].literals = {"false", "null", "true"};
}

JsonSchema JsonSchema::any_object() {
  JsonSchema s;
  s.root_ = kAnyObject;
  return s;
}

JsonSchema JsonSchema::text() {
  JsonSchema s;
  s.root_ = -1;
  return s;
}

bool json_value_starts_with(const JsonSchema& s, int32_t node, uint8_t b) {
  const JsonSchema::Node& n = s.node(node);
  const bool number_start = b == '-' || (b >= '0' && b <= '9');
  switch (n.kind) {
    case JsonSchema::Kind::any:
      return b == '{' || b == '[' || b == '"' || b == 't' || b == 'f' || b == 'n' || number_start;
    case JsonSchema::Kind::object:
    case JsonSchema::Kind::call:
      return b == '{';
    case JsonSchema::Kind::array:
      return b == '[';
    case JsonSchema::Kind::string:
      return b == '"';
    case JsonSchema::Kind::number:
    case JsonSchema::Kind::integer:
      return number_start;
    case JsonSchema::Kind::literal:
      return std::any_of(n.literals.begin(), n.literals.end(),
                         [&](const std::string& l) { return uint8_t(l[0]) == b; });
    case JsonSchema::Kind::choice:
      return n.by_first_byte[b] >= 0;
  }
  return false;
}

int64_t floor_multiple(int64_t v, int64_t step) {
  const int64_t q = v / step;  // toward zero
  return (q - (v % step < 0 ? 1 : 0)) * step;
}

int64_t ceil_multiple(int64_t v, int64_t step) {
  return -floor_multiple(-v, step);
}

// Compiles one schema document into `out`'s nodes (a schema's own, or a tool's arguments).
class JsonSchemaCompiler {
 public:
  JsonSchemaCompiler(const json& root, JsonSchema out) : root_(root), out_(std::move(out)) {}

  // The document's node, and the schema holding it.
  std::pair<int32_t, JsonSchema> run() {
    const int32_t top = compile(root_, "#");
    // Choices last: their alternatives may be references compiled after them.
    for (auto& [node, alternatives] : choices_) {
      std::vector<int32_t> by(256, -1);
      for (const auto& [alt, where] : alternatives)
        for (int b = 0; b < 256; ++b) {
          if (!starts(alt, uint8_t(b), 0)) continue;
          if (by[size_t(b)] >= 0)
            throw Error("JSON schema: the alternatives at " + where + " can both start with '" +
                        std::string(1, char(b)) +
                        "': only alternatives that start differently are supported (say a type and null)");
          by[size_t(b)] = alt;
        }
      out_.nodes_[size_t(node)].by_first_byte = std::move(by);
    }
    return {top, std::move(out_)};
  }

 private:
  bool starts(int32_t node, uint8_t b, int depth) {
    if (depth > 32) throw Error("JSON schema: alternatives nested through references without end");
    const auto it = choices_.find(node);
    if (it == choices_.end()) return json_value_starts_with(out_, node, b);
    return std::any_of(it->second.begin(), it->second.end(),
                       [&](const auto& alt) { return starts(alt.first, b, depth + 1); });
  }

  int32_t add(JsonSchema::Node n) {
    out_.nodes_.push_back(std::move(n));
    return int32_t(out_.nodes_.size() - 1);
  }

  int32_t literal(std::vector<std::string> values) {
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    JsonSchema::Node n;
    n.kind = JsonSchema::Kind::literal;
    n.literals = std::move(values);
    return add(std::move(n));
  }

  int32_t choice(const std::vector<int32_t>& alternatives, const std::string& where) {
    JsonSchema::Node n;
    n.kind = JsonSchema::Kind::choice;
    const int32_t id = add(std::move(n));
    for (int32_t a : alternatives) choices_[id].push_back({a, where});
    return id;
  }

  const json& resolve(const std::string& ref, const std::string& where) {
    if (ref == "#") return root_;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p = prefix;
      if (ref.rfind(p, 0) != 0) continue;
      const std::string section = p.substr(2, p.size() - 3), name = ref.substr(p.size());
      if (root_.is_object() && root_.contains(section) && root_[section].is_object())
        for (const auto& [key, value] : root_[section].items())
          if (pointer_escape(key) == name) return value;
      break;
    }
    throw Error("JSON schema: $ref \"" + ref + "\" at " + where +
                " names no schema (supported: \"#\", \"#/$defs/NAME\", \"#/definitions/NAME\")");
  }

  static int64_t count(const json& s, const char* key, const std::string& where) {
    if (!s.contains(key)) return -1;
    const json& v = s[key];
    if (!v.is_number_integer() &&
        !(v.is_number_float() && v.get<double>() == double(int64_t(v.get<double>()))))
      throw Error("JSON schema: " + std::string(key) + " at " + where + " must be a whole number");
    const int64_t n = v.is_number_integer() ? v.get<int64_t>() : int64_t(v.get<double>());
    if (n < 0) throw Error("JSON schema: " + std::string(key) + " at " + where + " must not be negative");
    return n;
  }

  // A number's or an integer's range, if it has one (see JsonSchema::Node).
  static void compile_range(const json& s, JsonSchema::Node& n, const std::string& where) {
    std::vector<std::pair<std::string, Decimal>> bounds;  // keyword, value
    bool exclusive_min = false, exclusive_max = false;    // draft 4: booleans beside minimum / maximum
    for (const char* key : kRangeKeys) {
      if (!s.contains(key)) continue;
      const json& v = s[key];
      const bool flag_form = std::string(key).rfind("exclusive", 0) == 0 && v.is_boolean();
      if (flag_form) {
        (std::string(key) == "exclusiveMinimum" ? exclusive_min : exclusive_max) = v.get<bool>();
        continue;
      }
      if (!v.is_number())
        throw Error("JSON schema: " + std::string(key) + " at " + where + " must be a number");
      bounds.push_back({key, decimal_of(v)});
    }
    // multipleOf: a whole number (a decimal fraction such as 0.1 has no exact double, and validators
    // that divide doubles disagree on which values are its multiples).
    int64_t step = 0;
    if (s.contains("multipleOf")) {
      const json& m = s["multipleOf"];
      const Decimal d = m.is_number() ? decimal_of(m) : Decimal{};
      if (!m.is_number() || d.negative || d.digits == "0" || d.exp < 0 ||
          d.digits.size() + size_t(d.exp) > 17)
        throw Error("JSON schema: multipleOf at " + where +
                    " must be a whole number from 1 to 10^17 (decimal fractions are not supported)");
      step = bound_units(d, 0, false, false);
    }
    if (bounds.empty() && step == 0) return;
    int scale = 0;
    if (n.kind == JsonSchema::Kind::number) {
      scale = JsonSchema::kRangeDecimals;
      for (const auto& [key, d] : bounds) {
        if (-d.exp > JsonSchema::kMaxRangeDecimals)
          throw Error("JSON schema: " + key + " at " + where + " has more than " +
                      std::to_string(JsonSchema::kMaxRangeDecimals) + " decimals, which mx8 does not write");
        scale = std::max(scale, -d.exp);
      }
    }
    n.ranged = true;
    n.scale = uint8_t(scale);
    n.low = -JsonSchema::kRangeUnits;
    n.high = JsonSchema::kRangeUnits;
    for (const auto& [key, d] : bounds) {
      const bool upper = key == "maximum" || key == "exclusiveMaximum";
      const bool exclusive = key.rfind("exclusive", 0) == 0 ||
                             (key == "minimum" ? exclusive_min : key == "maximum" && exclusive_max);
      const int64_t v = bound_units(d, scale, upper, exclusive);
      (upper ? n.high : n.low) = upper ? std::min(n.high, v) : std::max(n.low, v);
    }
    n.step = step * kPow10[n.scale];
    if (n.step > JsonSchema::kRangeUnits)
      throw Error("JSON schema: multipleOf at " + where + " is past the numbers mx8 writes (18 digits, " +
                  std::to_string(scale) + " decimals)");
    if (n.step > 0) {  // the bounds moved in to the nearest multiples
      n.low = ceil_multiple(n.low, n.step);
      n.high = floor_multiple(n.high, n.step);
    }
    if (n.low > n.high)
      throw Error(
          "JSON schema: no " + std::string(n.kind == JsonSchema::Kind::number ? "number" : "integer") +
          " mx8 can write lies in the range at " + where +
          (n.kind == JsonSchema::Kind::number ? " (18 digits, " + std::to_string(scale) + " decimals)" : ""));
  }

  int32_t compile(const json& s, const std::string& where) {
    if (s.is_boolean()) {
      if (s.get<bool>()) return JsonSchema::kAny;
      throw Error("JSON schema: the schema at " + where + " is false: no value can match it");
    }
    if (!s.is_object()) throw Error("JSON schema: the schema at " + where + " is not an object");
    // allOf of one schema, beside annotations only: that schema (what Pydantic writes to put a
    // description beside a $ref). Of more, the intersection would have to be computed: refused.
    if (s.contains("allOf")) {
      const json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1)
        throw Error("JSON schema: allOf at " + where + " is supported only with one schema in it");
      for (const auto& [key, value] : s.items())
        if (key != "allOf" && !kAnnotations.count(key))
          throw Error("JSON schema: \"" + key + "\" beside allOf at " + where + " is not supported");
      return compile(all[0], where + "/allOf/0");
    }
    if (s.contains("$ref")) {
      if (!s["$ref"].is_string()) throw Error("JSON schema: $ref at " + where + " is not a string");
      const std::string ref = s["$ref"].get<std::string>();
      for (const auto& [key, value] : s.items())
        if (key != "$ref" && !kAnnotations.count(key))
          throw Error("JSON schema: \"" + key + "\" beside $ref at " + where + " is not supported");
      if (const auto it = refs_.find(ref); it != refs_.end()) return it->second;
      // A placeholder the referenced schema's node replaces, so that recursion finds it.
      const int32_t id = add({});
      refs_[ref] = id;
      const int32_t body = compile(resolve(ref, where), ref);
      out_.nodes_[size_t(id)] = out_.nodes_[size_t(body)];
      if (const auto it = choices_.find(body); it != choices_.end()) choices_[id] = it->second;
      return id;
    }
    for (const auto& [key, value] : s.items()) {
      static const std::set<std::string> known = {"type",
                                                  "properties",
                                                  "required",
                                                  "additionalProperties",
                                                  "items",
                                                  "minItems",
                                                  "maxItems",
                                                  "minLength",
                                                  "maxLength",
                                                  "enum",
                                                  "const",
                                                  "anyOf",
                                                  "oneOf",
                                                  "nullable",
                                                  "minimum",
                                                  "maximum",
                                                  "exclusiveMinimum",
                                                  "exclusiveMaximum",
                                                  "multipleOf",
                                                  "pattern"};
      if (!known.count(key) && !kAnnotations.count(key))
        throw Error("JSON schema: \"" + key + "\" at " + where +
                    " is not supported (it would constrain values in a way generation does not follow)");
    }
    int32_t node = compile_value(s, where);
    if (s.contains("nullable") && s["nullable"] == true) node = choice({node, literal({"null"})}, where);
    return node;
  }

  // `const` or `enum`: the values listed, written compactly. Keywords beside them (a type, a range, a
  // pattern) still constrain: the values they rule out are left out, by a matcher of the schema
  // without the list, so only valid values are written.
  int32_t listed_values(const json& s, const std::string& where) {
    const char* key = s.contains("const") ? "const" : "enum";
    if (!s.contains("const") && (!s["enum"].is_array() || s["enum"].empty()))
      throw Error("JSON schema: enum at " + where + " must be a non-empty array");
    const json listed = s.contains("const") ? json::array({s["const"]}) : s["enum"];
    json rest = json::object();
    for (const auto& [k, v] : s.items())
      if (k != "const" && k != "enum" && k != "nullable" && (!kAnnotations.count(k) || k == "format"))
        rest[k] = v;
    std::vector<std::string> values;
    std::optional<JsonMatcher> check;
    if (!rest.empty()) {
      try {
        check.emplace(std::make_shared<const JsonSchema>(JsonSchema::compile(rest)));
      } catch (const Error& e) {
        throw Error("JSON schema: beside " + std::string(key) + " at " + where + ": " +
                    std::string(e.what()).substr(std::string_view("JSON schema: ").size()));
      }
    }
    for (const json& v : listed) {
      std::string text = v.dump();
      if (check) {
        JsonMatcher m = *check;
        if (!std::all_of(text.begin(), text.end(), [&](char c) { return m.feed(uint8_t(c)); }) ||
            !m.complete())
          continue;
      }
      values.push_back(std::move(text));
    }
    if (values.empty())
      throw Error("JSON schema: no value of " + std::string(key) + " at " + where +
                  " is allowed by the keywords beside it (" + rest.dump() + ")");
    return literal(std::move(values));
  }

  int32_t compile_value(const json& s, const std::string& where) {
    if (s.contains("const") || s.contains("enum")) return listed_values(s, where);
    for (const char* key : {"anyOf", "oneOf"})
      if (s.contains(key)) {
        const json& alts = s[key];
        if (!alts.is_array() || alts.empty())
          throw Error("JSON schema: " + std::string(key) + " at " + where + " must be a non-empty array");
        std::vector<int32_t> nodes;
        for (size_t i = 0; i < alts.size(); ++i)
          nodes.push_back(compile(alts[i], where + "/" + key + "/" + std::to_string(i)));
        if (s.contains("type") || s.contains("properties") || s.contains("items"))
          throw Error("JSON schema: " + std::string(key) + " beside type, properties or items at " + where +
                      " is not supported (put them in each alternative)");
        return nodes.size() == 1 ? nodes[0] : choice(nodes, where + "/" + key);
      }
    std::vector<std::string> types;
    if (s.contains("type")) {
      const json& t = s["type"];
      if (t.is_string()) {
        types.push_back(t.get<std::string>());
      } else if (t.is_array() && !t.empty()) {
        for (const json& e : t) {
          if (!e.is_string()) throw Error("JSON schema: type at " + where + " lists a non-string");
          types.push_back(e.get<std::string>());
        }
      } else {
        throw Error("JSON schema: type at " + where + " must be a string or a non-empty array of them");
      }
      for (const std::string& t1 : types)
        if (!kTypes.count(t1)) throw Error("JSON schema: unknown type \"" + t1 + "\" at " + where);
    } else if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required")) {
      types.push_back("object");
    } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
      types.push_back("array");
    } else if (s.contains("minLength") || s.contains("maxLength") || s.contains("pattern")) {
      types.push_back("string");
    } else if (s.contains("multipleOf") || std::any_of(std::begin(kRangeKeys), std::end(kRangeKeys),
                                                       [&](const char* k) { return s.contains(k); })) {
      types.push_back("number");
    } else {
      return JsonSchema::kAny;
    }
    std::vector<int32_t> nodes;
    for (const std::string& t : types) nodes.push_back(compile_type(s, t, where));
    return nodes.size() == 1 ? nodes[0] : choice(nodes, where + "/type");
  }

  int32_t compile_type(const json& s, const std::string& type, const std::string& where) {
    JsonSchema::Node n;
    if (type == "boolean") return literal({"false", "true"});
    if (type == "null") return literal({"null"});
    if (type == "number" || type == "integer") {
      n.kind = type == "number" ? JsonSchema::Kind::number : JsonSchema::Kind::integer;
      compile_range(s, n, where);
      return add(std::move(n));
    }
    if (type == "string") {
      n.kind = JsonSchema::Kind::string;
      n.min = std::max<int64_t>(0, count(s, "minLength", where));
      n.max = count(s, "maxLength", where);
      if (n.max >= 0 && n.max < n.min) throw Error("JSON schema: maxLength is below minLength at " + where);
      if (s.contains("pattern")) {
        if (!s["pattern"].is_string()) throw Error("JSON schema: pattern at " + where + " must be a string");
        if (s.contains("minLength") || s.contains("maxLength"))
          throw Error("JSON schema: pattern beside minLength or maxLength at " + where +
                      " is not supported (put the length in the pattern: {n,m})");
        try {
          n.pattern = std::make_shared<const StringPattern>(s["pattern"].get<std::string>());
        } catch (const Error& e) {
          throw Error(std::string(e.what()) + " (at " + where + ")");
        }
      } else if (s.contains("format") && s["format"].is_string() && n.min == 0 && n.max < 0) {
        n.pattern = format_pattern(s["format"].get<std::string>());
      }
      return add(std::move(n));
    }
    if (type == "array") {
      n.kind = JsonSchema::Kind::array;
      n.min = std::max<int64_t>(0, count(s, "minItems", where));
      n.max = count(s, "maxItems", where);
      if (n.max >= 0 && n.max < n.min) throw Error("JSON schema: maxItems is below minItems at " + where);
      const int32_t id = add(std::move(n));
      const int32_t items = s.contains("items") ? compile(s["items"], where + "/items") : JsonSchema::kAny;
      out_.nodes_[size_t(id)].items = items;
      return id;
    }
    // object
    n.kind = JsonSchema::Kind::object;
    const int32_t id = add(std::move(n));
    std::vector<JsonSchema::Property> props;
    std::map<std::string, size_t> names;  // property name -> index in props, before sorting
    if (s.contains("properties")) {
      if (!s["properties"].is_object())
        throw Error("JSON schema: properties at " + where + " must be an object");
      for (const auto& [name, sub] : s["properties"].items()) {
        names[name] = props.size();
        props.push_back({json(name).dump(), compile(sub, where + "/properties/" + pointer_escape(name))});
      }
      if (props.size() > 64)
        throw Error("JSON schema: the object at " + where + " has " + std::to_string(props.size()) +
                    " properties; at most 64 are supported");
    }
    std::vector<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) throw Error("JSON schema: required at " + where + " must be an array");
      for (const json& r : s["required"]) {
        if (!r.is_string() || !names.count(r.get<std::string>()))
          throw Error("JSON schema: required at " + where + " names " + r.dump() +
                      ", which is not one of its properties");
        required.push_back(r.get<std::string>());
      }
    }
    int32_t values = JsonSchema::kAny;
    if (s.contains("additionalProperties")) {
      const json& a = s["additionalProperties"];
      if (props.empty()) {
        if (a == false)
          values = -1;  // only {}
        else
          values = compile(a, where + "/additionalProperties");
      } else if (!a.is_boolean()) {
        compile(a, where + "/additionalProperties");  // checked, not used: listed properties only
      }
    }
    // Sorted by key, as JsonMatcher narrows candidates by prefix over a sorted list.
    std::vector<size_t> order(props.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return props[a].key < props[b].key; });
    JsonSchema::Node& obj = out_.nodes_[size_t(id)];
    for (size_t i = 0; i < order.size(); ++i) {
      obj.properties.push_back(props[order[i]]);
      for (const std::string& r : required)
        if (names[r] == order[i]) obj.required |= uint64_t(1) << i;
    }
    obj.values = values;
    return id;
  }

  const json& root_;
  JsonSchema out_;
  std::map<std::string, int32_t> refs_;
  std::map<int32_t, std::vector<std::pair<int32_t, std::string>>> choices_;
};

JsonSchema JsonSchema::compile(const nlohmann::json& schema) {
  auto [root, out] = JsonSchemaCompiler(schema, JsonSchema()).run();
  out.root_ = root;
  return std::move(out);
}

JsonSchema JsonSchema::with_calls(const std::vector<JsonTool>& tools,
                                  const std::string& arguments_key) const {
  return calls_of(tools, nlohmann::json(arguments_key).dump(), "");
}

JsonSchema JsonSchema::with_bare_calls(const std::vector<JsonTool>& tools,
                                       const std::string& separator) const {
  const auto name_char = [](char c) { return std::isalnum(uint8_t(c)) || c == '_' || c == '-' || c == '.'; };
  if (separator.empty() || name_char(separator[0]))
    throw Error("tools: the separator after a bare name must not start like a name: \"" + separator + "\"");
  return calls_of(tools, "", separator);
}

JsonSchema JsonSchema::calls_of(const std::vector<JsonTool>& tools, const std::string& arguments_key,
                                const std::string& separator) const {
  JsonSchema out = *this;
  std::vector<std::pair<std::string, int32_t>> named;  // a name as JSON, its arguments' node
  for (const JsonTool& tool : tools) {
    int32_t arguments = kAnyObject;
    if (tool.arguments) {
      try {
        std::tie(arguments, out) = JsonSchemaCompiler(*tool.arguments, std::move(out)).run();
      } catch (const Error& e) {
        throw Error("tool \"" + tool.name + "\": " + e.what());
      }
      if (arguments == kAny) arguments = kAnyObject;  // {}: arguments are an object, whatever it holds
      for (int b = 0; b < 256; ++b)
        if (b != '{' && json_value_starts_with(out, arguments, uint8_t(b)))
          throw Error("tool \"" + tool.name +
                      "\": JSON schema: its arguments may be a value other than an object");
    }
    named.emplace_back(separator.empty() ? nlohmann::json(tool.name).dump() : tool.name + separator,
                       arguments);
  }
  std::sort(named.begin(), named.end());
  Node call;
  call.kind = Kind::call;
  call.arguments_key = arguments_key;
  for (const auto& [name, arguments] : named) {
    if (!call.literals.empty() && call.literals.back() == name)
      throw Error("tools: " + name + " is named twice");
    call.literals.push_back(name);
    call.arguments.push_back(arguments);
  }
  if (call.literals.empty()) throw Error("tools: none to call");
  out.nodes_.push_back(std::move(call));
  out.call_ = int32_t(out.nodes_.size() - 1);
  return out;
}

}  // namespace mx8::runtime
