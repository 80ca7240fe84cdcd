// Python-compatible behaviour of the template interpreter's values (see chat_template_value.h).
#include "runtime/chat_template_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "mx8/error.h"
#include "mx8/util/json_string.h"

namespace mx8::runtime::jinja {
namespace {

// Comparing and printing recurse once per level of nesting; a template can nest values without end (a
// list wrapped in a list in a loop, a namespace that holds itself), so they stop at this depth with an
// error instead of overflowing the stack. Data that templates render is a few levels deep.
constexpr int kMaxDepth = 512;

void check_depth(int depth) {
  if (depth > kMaxDepth)
    throw Error("chat template: a value nested more than " + std::to_string(kMaxDepth) +
                " deep (or holding itself)");
}

// Moves the children of the containers that `v` alone holds into `out`, so that they are freed by the
// caller's loop and not by the container's destructor, one stack frame per level.
void take_children(Value& v, std::vector<Value>& out) {
  if (v.list && v.list.use_count() == 1)
    for (Value& c : *v.list)
      if (c.list || c.dict) out.push_back(std::move(c));
  if (v.dict && v.dict.use_count() == 1)
    for (auto& kv : *v.dict)
      if (kv.second.list || kv.second.dict) out.push_back(std::move(kv.second));
}

}  // namespace

Value::~Value() {
  if (!list && !dict) return;
  std::vector<Value> pending;
  take_children(*this, pending);
  while (!pending.empty()) {
    Value v = std::move(pending.back());
    pending.pop_back();
    take_children(v, pending);
  }  // each v is freed here with its containers emptied of nested values
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return none();
    case nlohmann::json::value_t::boolean:
      return boolean(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return integer(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned:
      return integer(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::json::value_t::number_float:
      return number(j.get<double>());
    case nlohmann::json::value_t::string:
      return string(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      for (auto& e : j) l.push_back(from_json(e));
      return new_list(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (auto& [k, v] : j.items()) d.emplace_back(k, from_json(v));
      return new_dict(std::move(d));
    }
    default:
      return Value();
  }
}

bool Value::truthy() const {
  switch (type) {
    case kUndefined:
    case kNone:
      return false;
    case kBool:
      return b;
    case kInt:
      return i != 0;
    case kFloat:
      return f != 0;
    case kString:
      return !s.empty();
    case kList:
      return !list->empty();
    case kDict:
      return !dict->empty();
    case kFunction:
      return true;
  }
  return false;
}

const Value* Value::find(const std::string& key) const {
  if (type != kDict) return nullptr;
  for (auto& [k, v] : *dict)
    if (k == key) return &v;
  return nullptr;
}

void Value::set(const std::string& key, Value v) {
  for (auto& [k, old] : *dict)
    if (k == key) {
      old = std::move(v);
      return;
    }
  dict->emplace_back(key, std::move(v));
}

namespace {

bool equals_at(const Value& a, const Value& b, int depth) {
  check_depth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.type != Value::kFloat && b.type != Value::kFloat)
      return (a.type == Value::kBool ? a.b : a.i) == (b.type == Value::kBool ? b.b : b.i);
    return a.as_double() == b.as_double();
  }
  if (a.type != b.type) return false;
  switch (a.type) {
    case Value::kUndefined:
    case Value::kNone:
      return true;
    case Value::kString:
      return a.s == b.s;
    case Value::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals_at((*a.list)[k], (*b.list)[k], depth + 1)) return false;
      return true;
    case Value::kDict:
      if (a.dict->size() != b.dict->size()) return false;
      for (auto& [k, v] : *a.dict) {
        const Value* o = b.find(k);
        if (!o || !equals_at(v, *o, depth + 1)) return false;
      }
      return true;
    case Value::kFunction:
      return a.fn == b.fn;
    default:
      return false;
  }
}

}  // namespace

bool equals(const Value& a, const Value& b) {
  return equals_at(a, b, 0);
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // "-1.2345e+02"
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t e = sci.find('e');
  int exp = std::stoi(sci.substr(e + 1));
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out;
  if (exp >= -4 && exp < 16) {  // Python's repr uses positional notation for 1e-4 <= |d| < 1e16
    if (exp >= 0) {
      if (digits.size() <= static_cast<size_t>(exp) + 1) {
        out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
      }
    } else {
      out = "0." + std::string(-exp - 1, '0') + digits;
    }
    return neg ? "-" + out : out;
  }
  out = digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char eb[16];
  std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  out += eb;
  return neg ? "-" + out : out;
}

namespace {

std::string string_repr(const std::string& s) {
  char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, q);
  for (char c : s) {
    uint8_t u = static_cast<uint8_t>(c);
    if (c == q || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", u);
      out += b;
    } else {
      out += c;
    }
  }
  out += q;
  return out;
}

std::string json_string(const std::string& s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

void json_into(const Value& v, int indent, bool sort_keys, int level, std::string& out) {
  check_depth(level);
  auto newline = [&](int lvl) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent) * lvl, ' ');
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  switch (v.type) {
    case Value::kNone:
      out += "null";
      return;
    case Value::kBool:
      out += v.b ? "true" : "false";
      return;
    case Value::kInt:
      out += std::to_string(v.i);
      return;
    case Value::kFloat:
      if (std::isnan(v.f))
        out += "NaN";
      else if (std::isinf(v.f))
        out += v.f < 0 ? "-Infinity" : "Infinity";
      else
        out += float_repr(v.f);
      return;
    case Value::kString:
      out += json_string(v.s);
      return;
    case Value::kList:
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += item_sep;
        newline(level + 1);
        json_into((*v.list)[k], indent, sort_keys, level + 1, out);
      }
      newline(level);
      out += "]";
      return;
    case Value::kDict: {
      if (v.dict->empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (auto& kv : *v.dict) items.push_back(&kv);
      if (sort_keys)
        std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += "{";
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += item_sep;
        newline(level + 1);
        out += json_string(items[k]->first) + ": ";
        json_into(items[k]->second, indent, sort_keys, level + 1, out);
      }
      newline(level);
      out += "}";
      return;
    }
    default:
      throw Error("chat template: tojson cannot serialise a value of type " + type_name(v));
  }
}

}  // namespace

namespace {

std::string repr_at(const Value& v, int depth) {
  check_depth(depth);
  switch (v.type) {
    case Value::kUndefined:
      return "";
    case Value::kNone:
      return "None";
    case Value::kBool:
      return v.b ? "True" : "False";
    case Value::kInt:
      return std::to_string(v.i);
    case Value::kFloat:
      return float_repr(v.f);
    case Value::kString:
      return string_repr(v.s);
    case Value::kList: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) out += (k ? ", " : "") + repr_at((*v.list)[k], depth + 1);
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Value::kDict: {
      if (v.is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (auto& [k, x] : *v.dict) {
        out += (first ? "" : ", ") + string_repr(k) + ": " + repr_at(x, depth + 1);
        first = false;
      }
      return out + "}";
    }
    case Value::kFunction:
      return "<function>";
  }
  return "";
}

}  // namespace

std::string repr(const Value& v) {
  return repr_at(v, 0);
}

std::string to_str(const Value& v) {
  return v.type == Value::kString ? v.s : repr(v);
}

std::string type_name(const Value& v) {
  static const char* const kNames[] = {"undefined", "none", "bool", "int",     "float",
                                       "string",    "list", "dict", "function"};
  return kNames[v.type];
}

std::string to_json(const Value& v, int indent, bool sort_keys) {
  std::string out;
  json_into(v, indent, sort_keys, 0, out);
  return out;
}

}  // namespace mx8::runtime::jinja
