// Values of the chat-template (Jinja subset) interpreter: Python-like dynamic values with Python's
// truthiness, equality, str() and repr(), so that rendered text matches Jinja2's.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace mx8::runtime::jinja {

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion order, as Python dicts
struct CallArgs;
using Function = std::function<Value(CallArgs&)>;

struct Value {
  enum Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };
  Type type = kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Function> fn;
  bool is_tuple = false;      // a list written (a, b): repr uses parentheses
  bool is_namespace = false;  // namespace(...): attributes may be assigned

  Value() = default;
  Value(const Value&) = default;
  Value(Value&&) = default;
  Value& operator=(const Value&) = default;
  Value& operator=(Value&&) = default;
  // Frees nested lists and dicts level by level, not by recursion (a template can nest them without end).
  ~Value();

  static Value none() { return make(kNone); }
  static Value boolean(bool v) {
    Value x = make(kBool);
    x.b = v;
    return x;
  }
  static Value integer(int64_t v) {
    Value x = make(kInt);
    x.i = v;
    return x;
  }
  static Value number(double v) {
    Value x = make(kFloat);
    x.f = v;
    return x;
  }
  static Value string(std::string v) {
    Value x = make(kString);
    x.s = std::move(v);
    return x;
  }
  static Value new_list(List v = {}) {
    Value x = make(kList);
    x.list = std::make_shared<List>(std::move(v));
    return x;
  }
  static Value new_dict(Dict v = {}) {
    Value x = make(kDict);
    x.dict = std::make_shared<Dict>(std::move(v));
    return x;
  }
  static Value function(Function f) {
    Value x = make(kFunction);
    x.fn = std::make_shared<Function>(std::move(f));
    return x;
  }
  static Value from_json(const nlohmann::ordered_json& j);

  bool defined() const { return type != kUndefined; }
  bool is_none() const { return type == kNone; }
  bool is_number() const { return type == kInt || type == kFloat || type == kBool; }
  double as_double() const { return type == kFloat ? f : type == kBool ? b : static_cast<double>(i); }
  bool truthy() const;
  // Dict lookup: nullptr when absent.
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value v);

 private:
  static Value make(Type t) {
    Value x;
    x.type = t;
    return x;
  }
};

bool equals(const Value& a, const Value& b);
// Python str(): strings as they are, everything else as repr().
std::string to_str(const Value& v);
std::string repr(const Value& v);
std::string type_name(const Value& v);
// Python's json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: none), as Hugging Face's
// tojson filter.
std::string to_json(const Value& v, int indent, bool sort_keys = false);
// Python float repr (shortest round-trip digits).
std::string float_repr(double d);

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The i-th positional argument or the keyword `name`, or `fallback`.
  Value get(size_t i, const std::string& name, Value fallback = Value()) const {
    for (auto& [k, v] : keyword)
      if (k == name) return v;
    return i < positional.size() ? positional[i] : fallback;
  }
};

}  // namespace mx8::runtime::jinja
