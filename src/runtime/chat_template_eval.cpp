// Chat-template interpreter: evaluates the parsed Jinja subset with Jinja2's semantics (scoping,
// undefined values, Python operators), the filters and tests templates use, and the Python
// string/dict methods they call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <string_view>

#include "mx8/error.h"
#include "runtime/chat_template_ast.h"
#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime {
namespace {

using namespace jinja;

// Scopes open at once (the template's, loops', macro calls'): bounds macro recursion.
constexpr size_t kMaxFrames = 256;
// What one rendering may spend. A template is the model's code, run as found: these turn a loop or a
// recursion without end, or a value that grows without end, into an error instead of a process that
// hangs or runs out of memory. Real chat templates take thousands of steps and write kilobytes; a
// prompt of 131072 tokens is well under a megabyte of text.
// A step is one statement or expression (~0.1 us); a loop iteration, which builds its `loop` object,
// costs about 15 of them in time and is charged 16. 20 million steps are 1-3 s of work; a template
// over 1000 messages takes ~10^5.
constexpr uint64_t kMaxSteps = 20'000'000;
constexpr uint64_t kStepsPerIteration = 16;
constexpr size_t kMaxText = 16u << 20;  // bytes of one string, the output included
constexpr int64_t kMaxItems = 1 << 20;  // items of one list (a range, a string's characters)

// line 0: no line to name (the builtins are called without one).
[[noreturn]] void fail(int line, const std::string& what) {
  throw Error("chat template: " + (line > 0 ? "line " + std::to_string(line) + ": " : std::string()) + what);
}

void check_text_size(uint64_t bytes, int line) {
  if (bytes > kMaxText)
    fail(line,
         "a string of " + std::to_string(bytes) + " bytes is over the limit of " + std::to_string(kMaxText));
}

// Appends to a string that the template is building piece by piece, within kMaxText.
void append_bounded(std::string& out, std::string_view piece, int line) {
  check_text_size(uint64_t(out.size()) + piece.size(), line);
  out += piece;
}

void check_item_count(uint64_t items, int line) {
  if (items > uint64_t(kMaxItems))
    fail(line,
         "a list of " + std::to_string(items) + " items is over the limit of " + std::to_string(kMaxItems));
}

// Python's integers are unbounded; the interpreter's are 64-bit and say so instead of wrapping.
int64_t checked(char op, int64_t x, int64_t y, int line) {
  int64_t r = 0;
  bool overflowed = op == '+'   ? __builtin_add_overflow(x, y, &r)
                    : op == '-' ? __builtin_sub_overflow(x, y, &r)
                                : __builtin_mul_overflow(x, y, &r);
  if (overflowed) fail(line, "integer arithmetic overflows 64 bits");
  return r;
}

// The items start, start + step, ... before stop (Python's range and slice order), counted without
// overflow and at most kMaxItems of them.
std::vector<int64_t> progression(int64_t start, int64_t stop, int64_t step, int line) {
  const __int128 span = step > 0 ? __int128(stop) - start : __int128(start) - stop;
  const __int128 stride = step > 0 ? __int128(step) : -__int128(step);
  const __int128 n = span <= 0 ? 0 : (span - 1) / stride + 1;
  check_item_count(uint64_t(std::min<__int128>(n, kMaxItems + 1)), line);
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (size_t k = 0; k < out.size(); ++k) out[k] = static_cast<int64_t>(start + __int128(step) * __int128(k));
  return out;
}

bool py_space(uint32_t c) {
  return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || unicode::is_white_space(c);
}

std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> cps = unicode::decode(s);
  std::vector<uint32_t> set;
  bool ws = !chars.defined() || chars.is_none();
  if (!ws) set = unicode::decode(chars.s);
  auto strip_it = [&](uint32_t c) {
    return ws ? py_space(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t a = 0, b = cps.size();
  if (left)
    while (a < b && strip_it(cps[a])) ++a;
  if (right)
    while (b > a && strip_it(cps[b - 1])) --b;
  return unicode::encode(std::vector<uint32_t>(cps.begin() + a, cps.begin() + b));
}

std::vector<std::string> py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (!sep.defined() || sep.is_none()) {
    std::vector<uint32_t> cps = unicode::decode(s);
    size_t i = 0;
    while (true) {
      while (i < cps.size() && py_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = cps.size();
        while (e > i && py_space(cps[e - 1])) --e;
        out.push_back(unicode::encode(std::vector<uint32_t>(cps.begin() + i, cps.begin() + e)));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !py_space(cps[j])) ++j;
      out.push_back(unicode::encode(std::vector<uint32_t>(cps.begin() + i, cps.begin() + j)));
      i = j;
    }
    return out;
  }
  if (sep.s.empty()) throw Error("chat template: split() with an empty separator");
  size_t pos = 0;
  while (true) {
    size_t k = s.find(sep.s, pos);
    if (k == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit)) {
      out.push_back(s.substr(pos));
      return out;
    }
    out.push_back(s.substr(pos, k - pos));
    pos = k + sep.s.size();
  }
}

std::string py_replace(const std::string& s, const std::string& a, const std::string& b, int64_t count,
                       int line) {
  if (a.empty()) return s;  // Python inserts between characters; no template relies on it
  std::string out;
  size_t pos = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    size_t k = s.find(a, pos);
    if (k == std::string::npos) break;
    append_bounded(out, std::string_view(s).substr(pos, k - pos), line);
    append_bounded(out, b, line);
    pos = k + a.size();
  }
  return out + s.substr(pos);
}

std::string ascii_map(std::string s, int (*f)(int)) {
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(f(c));
  return s;
}

std::string py_title(const std::string& s) {
  std::string out = s;
  bool prev_alpha = false;
  for (char& c : out) {
    bool alpha = std::isalpha(static_cast<unsigned char>(c));
    if (alpha) c = static_cast<char>(prev_alpha ? std::tolower(c) : std::toupper(c));
    prev_alpha = alpha;
  }
  return out;
}

int64_t length_of(const Value& v, int line) {
  switch (v.type) {
    case Value::kString:
      return static_cast<int64_t>(unicode::decode(v.s).size());
    case Value::kList:
      return static_cast<int64_t>(v.list->size());
    case Value::kDict:
      return static_cast<int64_t>(v.dict->size());
    case Value::kUndefined:
      return 0;
    default:
      fail(line, "object of type " + type_name(v) + " has no length");
  }
}

// Items a for loop or a filter iterates over.
List iterate(const Value& v, int line) {
  switch (v.type) {
    case Value::kList:
      return *v.list;
    case Value::kDict: {
      List keys;
      for (auto& [k, x] : *v.dict) keys.push_back(Value::string(k));
      return keys;
    }
    case Value::kString: {
      check_item_count(v.s.size(), line);  // at least as many bytes as characters
      List chars;
      for (uint32_t c : unicode::decode(v.s)) chars.push_back(Value::string(unicode::encode({c})));
      return chars;
    }
    case Value::kUndefined:
      return {};
    default:
      fail(line, "'" + type_name(v) + "' object is not iterable");
  }
}

int64_t to_int(const Value& v, int line) {
  if (v.type == Value::kInt) return v.i;
  if (v.type == Value::kBool) return v.b;
  fail(line, "expected an integer, got " + type_name(v));
}

// Python slicing of n items by start/stop/step (each possibly none).
std::vector<size_t> slice_indices(int64_t n, const Value& a, const Value& b, const Value& c, int line) {
  int64_t step = (c.defined() && !c.is_none()) ? to_int(c, line) : 1;
  if (step == 0) fail(line, "slice step cannot be zero");
  auto norm = [&](const Value& v, int64_t dflt) {
    if (!v.defined() || v.is_none()) return dflt;
    int64_t x = to_int(v, line);
    if (x < 0) x += n;
    if (step > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  int64_t start = norm(a, step > 0 ? 0 : n - 1), stop = norm(b, step > 0 ? n : -1);
  std::vector<size_t> idx;
  for (int64_t k : progression(start, stop, step, line)) idx.push_back(static_cast<size_t>(k));
  return idx;
}

struct LoopControl {
  enum Kind { kNone, kBreak, kContinue } kind = kNone;
};

class Interpreter {
 public:
  explicit Interpreter(const Dict& vars) {
    frames_.emplace_back();
    for (auto& [k, v] : vars) frames_.back()[k] = v;
  }

  void exec(const Body& body, std::string& out, LoopControl& lc) {
    for (auto& s : body) {
      spend(1, s->line);
      exec_stmt(*s, out, lc);
      check_text_size(out.size(), s->line);
      if (lc.kind != LoopControl::kNone) return;
    }
  }

  // Every expression, statement and byte of string made is paid for from one budget.
  void spend(uint64_t units, int line) {
    steps_ += units;
    if (steps_ > kMaxSteps)
      fail(line, "the template ran more than " + std::to_string(kMaxSteps) + " steps (a loop without end?)");
  }

  Value eval(const Expr& e) {
    spend(1, e.line);
    Value v = eval_node(e);
    if (v.type == Value::kString) {
      check_text_size(v.s.size(), e.line);
      spend(v.s.size() / 64, e.line);
    } else if (v.type == Value::kList) {
      check_item_count(v.list->size(), e.line);
      spend(v.list->size() / 64, e.line);
    }
    return v;
  }

 private:
  using Frame = std::unordered_map<std::string, Value>;

  const Value* lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it)
      if (auto f = it->find(name); f != it->end()) return &f->second;
    return nullptr;
  }

  void assign(const Stmt& s, Value v) {
    if (!s.target_attr.empty()) {
      const Value* ns = lookup(s.targets[0]);
      if (!ns || ns->type != Value::kDict || !ns->is_namespace)
        fail(s.line,
             "cannot assign attribute '" + s.target_attr + "' of '" + s.targets[0] + "' (not a namespace)");
      const_cast<Value*>(ns)->set(s.target_attr, std::move(v));
      return;
    }
    if (s.targets.size() == 1) {
      frames_.back()[s.targets[0]] = std::move(v);
      return;
    }
    List items = iterate(v, s.line);
    if (items.size() != s.targets.size()) fail(s.line, "wrong number of values to unpack");
    for (size_t k = 0; k < items.size(); ++k) frames_.back()[s.targets[k]] = items[k];
  }

  void exec_stmt(const Stmt& s, std::string& out, LoopControl& lc) {
    switch (s.kind) {
      case Stmt::kText:
        out += s.text;
        return;
      case Stmt::kOutput: {
        Value v = eval(*s.expr);
        if (v.defined()) out += to_str(v);
        return;
      }
      case Stmt::kIf:
        for (auto& [cond, body] : s.branches)
          if (eval(*cond).truthy()) {
            exec(body, out, lc);
            return;
          }
        exec(s.else_body, out, lc);
        return;
      case Stmt::kFor:
        exec_for(s, out);
        return;
      case Stmt::kSet:
        assign(s, eval(*s.expr));
        return;
      case Stmt::kSetBlock: {
        std::string captured;
        LoopControl inner;
        exec(s.body, captured, inner);
        assign(s, Value::string(captured));
        return;
      }
      case Stmt::kBreak:
        lc.kind = LoopControl::kBreak;
        return;
      case Stmt::kContinue:
        lc.kind = LoopControl::kContinue;
        return;
      case Stmt::kMacro: {
        const Stmt* m = &s;
        frames_.back()[s.name] = Value::function([this, m](CallArgs& a) {
          // Each call recurses through the interpreter: a macro that calls itself without end would
          // overflow the stack, where Jinja2 raises RecursionError.
          if (frames_.size() > kMaxFrames)
            fail(m->line, "macro '" + m->name + "' nested more than " + std::to_string(kMaxFrames) +
                              " scopes deep (unbounded recursion?)");
          frames_.emplace_back();
          for (size_t k = 0; k < m->params.size(); ++k) {
            Value v = a.get(k, m->params[k].first);
            if (!v.defined() && m->params[k].second) v = eval(*m->params[k].second);
            frames_.back()[m->params[k].first] = v;
          }
          std::string text;
          LoopControl inner;
          exec(m->body, text, inner);
          frames_.pop_back();
          return Value::string(text);
        });
        return;
      }
      default:
        fail(s.line, "unsupported statement");
    }
  }

  void exec_for(const Stmt& s, std::string& out) {
    List all = iterate(eval(*s.expr), s.line);
    auto bind = [&](const Value& item) {
      if (s.targets.size() == 1) {
        frames_.back()[s.targets[0]] = item;
        return;
      }
      List parts = iterate(item, s.line);
      if (parts.size() != s.targets.size()) fail(s.line, "wrong number of values to unpack in for loop");
      for (size_t k = 0; k < parts.size(); ++k) frames_.back()[s.targets[k]] = parts[k];
    };
    List items;
    if (s.filter) {
      for (auto& item : all) {
        frames_.emplace_back();
        bind(item);
        bool keep = eval(*s.filter).truthy();
        frames_.pop_back();
        if (keep) items.push_back(item);
      }
    } else {
      items = std::move(all);
    }
    if (items.empty()) {
      LoopControl lc;
      exec(s.else_body, out, lc);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      spend(kStepsPerIteration, s.line);  // an iteration costs its loop variable even with an empty body
      frames_.emplace_back();             // each iteration has its own scope, as in Jinja2
      Value loop = Value::new_dict({{"index", Value::integer(k + 1)},
                                    {"index0", Value::integer(k)},
                                    {"revindex", Value::integer(n - k)},
                                    {"revindex0", Value::integer(n - k - 1)},
                                    {"first", Value::boolean(k == 0)},
                                    {"last", Value::boolean(k == n - 1)},
                                    {"length", Value::integer(n)},
                                    {"depth", Value::integer(1)},
                                    {"depth0", Value::integer(0)}});
      loop.set("previtem", k > 0 ? items[k - 1] : Value());
      loop.set("nextitem", k + 1 < n ? items[k + 1] : Value());
      loop.set("cycle", Value::function([k](CallArgs& a) {
                 if (a.positional.empty()) throw Error("chat template: loop.cycle() needs arguments");
                 return a.positional[k % a.positional.size()];
               }));
      frames_.back()["loop"] = loop;
      bind(items[k]);
      LoopControl lc;
      exec(s.body, out, lc);
      frames_.pop_back();
      if (lc.kind == LoopControl::kBreak) break;
    }
  }

  Value eval_node(const Expr& e) {
    switch (e.kind) {
      case Expr::kLiteral:
        return e.value;
      case Expr::kName: {
        const Value* v = lookup(e.name);
        return v ? *v : Value();
      }
      case Expr::kList: {
        List l;
        for (auto& a : e.args) l.push_back(eval(*a));
        Value v = Value::new_list(std::move(l));
        v.is_tuple = e.is_tuple;
        return v;
      }
      case Expr::kDict: {
        Value d = Value::new_dict();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2)
          d.set(to_str(eval(*e.args[k])), eval(*e.args[k + 1]));
        return d;
      }
      case Expr::kAttr:
        return attribute(eval(*e.args[0]), e.name, e.line, /*item_first=*/false);
      case Expr::kIndex: {
        Value obj = eval(*e.args[0]);
        Value key = eval(*e.args[1]);
        return index(obj, key, e.line);
      }
      case Expr::kSlice: {
        Value obj = eval(*e.args[0]);
        Value parts[3];
        for (int k = 0; k < 3; ++k)
          if (e.args[k + 1]) parts[k] = eval(*e.args[k + 1]);
        if (obj.type == Value::kString) {
          std::vector<uint32_t> cps = unicode::decode(obj.s), r;
          for (size_t k :
               slice_indices(static_cast<int64_t>(cps.size()), parts[0], parts[1], parts[2], e.line))
            r.push_back(cps[k]);
          return Value::string(unicode::encode(r));
        }
        if (obj.type == Value::kList) {
          List r;
          for (size_t k :
               slice_indices(static_cast<int64_t>(obj.list->size()), parts[0], parts[1], parts[2], e.line))
            r.push_back((*obj.list)[k]);
          return Value::new_list(std::move(r));
        }
        fail(e.line, "cannot slice a value of type " + type_name(obj));
      }
      case Expr::kCall: {
        Value fn = eval(*e.args[0]);
        CallArgs a = args_of(e, 1);
        if (fn.type != Value::kFunction) {
          std::string what = e.args[0]->kind == Expr::kName ? "'" + e.args[0]->name + "'" : "value";
          fail(e.line, what + " is not callable (" + type_name(fn) + ")");
        }
        return (*fn.fn)(a);
      }
      case Expr::kFilter: {
        Value v = eval(*e.args[0]);
        CallArgs a = args_of(e, 1);
        return filter(e.name, v, a, e.line);
      }
      case Expr::kTest: {
        // "x is defined" must not fail on an undefined attribute chain's last step.
        Value v = eval(*e.args[0]);
        CallArgs a = args_of(e, 1);
        bool r = test(e.name, v, a, e.line);
        return Value::boolean(r != e.negated);
      }
      case Expr::kUnary: {
        Value v = eval(*e.args[0]);
        if (e.name == "not") return Value::boolean(!v.truthy());
        if (v.type == Value::kInt || v.type == Value::kBool) {
          int64_t x = v.type == Value::kBool ? v.b : v.i;
          return Value::integer(e.name == "-" ? checked('-', 0, x, e.line) : x);
        }
        if (v.type == Value::kFloat) return Value::number(e.name == "-" ? -v.f : v.f);
        fail(e.line, "bad operand type for unary " + e.name + ": " + type_name(v));
      }
      case Expr::kBinary:
        return binary(e);
      case Expr::kCond: {
        if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value();
      }
    }
    return Value();
  }

  CallArgs args_of(const Expr& e, size_t from) {
    CallArgs a;
    for (size_t k = from; k < e.args.size(); ++k) a.positional.push_back(eval(*e.args[k]));
    for (auto& [k, x] : e.kwargs) a.keyword.emplace_back(k, eval(*x));
    return a;
  }

  Value index(const Value& obj, const Value& key, int line) {
    if (obj.type == Value::kDict) {
      if (key.type == Value::kString) {
        if (const Value* v = obj.find(key.s)) return *v;
        return attribute(obj, key.s, line, /*item_first=*/true);
      }
      return Value();
    }
    if (obj.type == Value::kList || obj.type == Value::kString) {
      if (key.type == Value::kString) return attribute(obj, key.s, line, true);
      int64_t k = to_int(key, line);
      if (obj.type == Value::kList) {
        int64_t n = static_cast<int64_t>(obj.list->size());
        if (k < 0) k += n;
        return (k >= 0 && k < n) ? (*obj.list)[k] : Value();
      }
      std::vector<uint32_t> cps = unicode::decode(obj.s);
      int64_t n = static_cast<int64_t>(cps.size());
      if (k < 0) k += n;
      return (k >= 0 && k < n) ? Value::string(unicode::encode({cps[k]})) : Value();
    }
    if (obj.type == Value::kUndefined) fail(line, "cannot index an undefined value");
    return Value();
  }

  Value attribute(const Value& obj, const std::string& name, int line, bool item_first) {
    switch (obj.type) {
      case Value::kDict:
        if (obj.is_namespace || item_first) {
          if (const Value* v = obj.find(name)) return *v;
          return Value();
        }
        if (name == "items" || name == "keys" || name == "values" || name == "get")
          return dict_method(obj, name);
        if (const Value* v = obj.find(name)) return *v;
        return Value();
      case Value::kString:
        return string_method(obj, name, line);
      case Value::kUndefined:
        fail(line, "'" + name + "' of an undefined value");
      default:
        return Value();
    }
  }

  Value dict_method(const Value& obj, const std::string& name) {
    return Value::function([obj, name](CallArgs& a) {
      if (name == "get") {
        const Value* v = obj.find(to_str(a.get(0, "key")));
        return v ? *v : a.get(1, "default", Value::none());
      }
      List out;
      for (auto& [k, v] : *obj.dict) {
        if (name == "keys")
          out.push_back(Value::string(k));
        else if (name == "values")
          out.push_back(v);
        else {
          Value pair = Value::new_list({Value::string(k), v});
          pair.is_tuple = true;
          out.push_back(pair);
        }
      }
      return Value::new_list(std::move(out));
    });
  }

  Value string_method(const Value& obj, const std::string& name, int line) {
    const std::string s = obj.s;
    auto method = [&](auto f) { return Value::function(f); };
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool l = name != "rstrip", r = name != "lstrip";
      return method([s, l, r](CallArgs& a) { return Value::string(py_strip(s, a.get(0, "chars"), l, r)); });
    }
    if (name == "startswith" || name == "endswith") {
      bool starts = name == "startswith";
      return method([s, starts](CallArgs& a) {
        Value p = a.get(0, "prefix");
        List options = p.type == Value::kList ? *p.list : List{p};
        for (auto& o : options) {
          const std::string& x = o.s;
          bool hit = starts ? s.compare(0, x.size(), x) == 0
                            : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
          if (hit) return Value::boolean(true);
        }
        return Value::boolean(false);
      });
    }
    if (name == "split") {
      return method([s](CallArgs& a) {
        Value mx = a.get(1, "maxsplit", Value::integer(-1));
        List out;
        for (auto& part : py_split(s, a.get(0, "sep"), mx.i)) out.push_back(Value::string(part));
        return Value::new_list(std::move(out));
      });
    }
    if (name == "upper") return method([s](CallArgs&) { return Value::string(ascii_map(s, ::toupper)); });
    if (name == "lower") return method([s](CallArgs&) { return Value::string(ascii_map(s, ::tolower)); });
    if (name == "title") return method([s](CallArgs&) { return Value::string(py_title(s)); });
    if (name == "capitalize")
      return method([s](CallArgs&) {
        std::string r = ascii_map(s, ::tolower);
        if (!r.empty()) r[0] = static_cast<char>(std::toupper(r[0]));
        return Value::string(r);
      });
    if (name == "replace")
      return method([s, line](CallArgs& a) {
        return Value::string(py_replace(s, a.get(0, "old").s, a.get(1, "new").s,
                                        a.get(2, "count", Value::integer(-1)).i, line));
      });
    if (name == "find" || name == "count")
      return method([s, name](CallArgs& a) {
        std::string sub = a.get(0, "sub").s;
        if (name == "find") {
          size_t k = s.find(sub);
          return Value::integer(
              k == std::string::npos ? -1 : static_cast<int64_t>(unicode::decode(s.substr(0, k)).size()));
        }
        int64_t n = 0;
        for (size_t k = s.find(sub); k != std::string::npos && !sub.empty(); k = s.find(sub, k + sub.size()))
          ++n;
        return Value::integer(n);
      });
    if (name == "join")
      return method([s, line](CallArgs& a) {
        std::string out;
        List items = iterate(a.get(0, "iterable"), line);
        for (size_t k = 0; k < items.size(); ++k) {
          if (k) append_bounded(out, s, line);
          append_bounded(out, to_str(items[k]), line);
        }
        return Value::string(out);
      });
    if (name == "isdigit" || name == "isalpha" || name == "isspace")
      return method([s, name](CallArgs&) {
        if (s.empty()) return Value::boolean(false);
        for (uint32_t c : unicode::decode(s)) {
          bool ok = name == "isdigit"   ? unicode::category(c) == unicode::kNd
                    : name == "isalpha" ? unicode::in_major_class(c, 'L')
                                        : py_space(c);
          if (!ok) return Value::boolean(false);
        }
        return Value::boolean(true);
      });
    return Value();
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? a : eval(*e.args[1]);
    }
    Value a = eval(*e.args[0]), b = eval(*e.args[1]);
    if (op == "~") return Value::string((a.defined() ? to_str(a) : "") + (b.defined() ? to_str(b) : ""));
    if (op == "==") return Value::boolean(equals(a, b));
    if (op == "!=") return Value::boolean(!equals(a, b));
    if (op == "in" || op == "not in") {
      bool r = false;
      if (b.type == Value::kString) {
        if (a.type != Value::kString) fail(e.line, "'in <string>' requires a string on the left");
        r = b.s.find(a.s) != std::string::npos;
      } else if (b.type == Value::kList) {
        for (auto& x : *b.list) r = r || equals(a, x);
      } else if (b.type == Value::kDict) {
        r = a.type == Value::kString && b.find(a.s) != nullptr;
      } else if (b.type != Value::kUndefined) {
        fail(e.line, "argument of type " + type_name(b) + " is not iterable");
      }
      return Value::boolean(op == "in" ? r : !r);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c;
      if (a.is_number() && b.is_number())
        c = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double() ? 1 : 0;
      else if (a.type == Value::kString && b.type == Value::kString)
        c = a.s.compare(b.s);
      else
        fail(e.line, "cannot compare " + type_name(a) + " and " + type_name(b));
      bool r = op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0;
      return Value::boolean(r);
    }
    if (op == "+") {
      if (a.type == Value::kString && b.type == Value::kString) return Value::string(a.s + b.s);
      if (a.type == Value::kList && b.type == Value::kList) {
        check_item_count(a.list->size() + b.list->size(), e.line);
        List l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::new_list(std::move(l));
      }
    }
    if (op == "*") {
      const Value* str = a.type == Value::kString ? &a : b.type == Value::kString ? &b : nullptr;
      const Value* n = str == &a ? &b : &a;
      if (str && (n->type == Value::kInt || n->type == Value::kBool)) {
        const int64_t times = std::max<int64_t>(0, n->type == Value::kBool ? n->b : n->i);
        check_text_size(std::min<uint64_t>(times, kMaxText + 1) * str->s.size(), e.line);
        std::string r;
        for (int64_t k = 0; k < times && !str->s.empty(); ++k) r += str->s;
        return Value::string(r);
      }
    }
    if (op == "%" && a.type == Value::kString) return Value::string(percent_format(a.s, b, e.line));
    if (!a.is_number() || !b.is_number())
      fail(e.line, "unsupported operand types for " + op + ": " + type_name(a) + " and " + type_name(b));
    bool ints = a.type != Value::kFloat && b.type != Value::kFloat;
    int64_t x = a.type == Value::kBool ? a.b : a.i, y = b.type == Value::kBool ? b.b : b.i;
    double fx = a.as_double(), fy = b.as_double();
    if (op == "+") return ints ? Value::integer(checked('+', x, y, e.line)) : Value::number(fx + fy);
    if (op == "-") return ints ? Value::integer(checked('-', x, y, e.line)) : Value::number(fx - fy);
    if (op == "*") return ints ? Value::integer(checked('*', x, y, e.line)) : Value::number(fx * fy);
    if (op == "/") {
      if (fy == 0) fail(e.line, "division by zero");
      return Value::number(fx / fy);
    }
    if (op == "//" || op == "%") {
      if (fy == 0) fail(e.line, "division by zero");
      if (ints) {
        // x / -1 is the one quotient that can overflow (C++ leaves INT64_MIN / -1 undefined).
        if (y == -1) return Value::integer(op == "//" ? checked('-', 0, x, e.line) : 0);
        int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;  // Python floors
        return Value::integer(op == "//" ? q : r);
      }
      double q = std::floor(fx / fy);
      return Value::number(op == "//" ? q : fx - q * fy);
    }
    if (op == "**") {
      if (ints && y >= 0) {  // by squaring: y may be huge where x is 0, 1 or -1
        int64_t result = 1, base = x;
        for (int64_t rest = y; rest > 0; rest >>= 1) {
          if (rest & 1) result = checked('*', result, base, e.line);
          // A square that overflows is always multiplied in later, so the result would overflow too.
          if (rest > 1) base = checked('*', base, base, e.line);
        }
        return Value::integer(result);
      }
      return Value::number(std::pow(fx, fy));
    }
    fail(e.line, "unknown operator " + op);
  }

  std::string percent_format(const std::string& fmt, const Value& args, int line) {
    List items = args.type == Value::kList && args.is_tuple ? *args.list : List{args};
    std::string out;
    size_t next = 0;
    for (size_t k = 0; k < fmt.size(); ++k) {
      if (fmt[k] != '%' || k + 1 >= fmt.size()) {
        out += fmt[k];
        continue;
      }
      char c = fmt[++k];
      if (c == '%') {
        out += '%';
        continue;
      }
      if (next >= items.size()) fail(line, "not enough arguments for format string");
      const Value& v = items[next++];
      if (c == 's')
        out += to_str(v);
      else if (c == 'd' || c == 'i')
        out += std::to_string(v.type == Value::kFloat ? static_cast<int64_t>(v.f) : to_int(v, line));
      else if (c == 'r')
        out += repr(v);
      else
        fail(line, std::string("unsupported format %") + c);
    }
    return out;
  }

  bool test(const std::string& name, const Value& v, CallArgs& a, int line) {
    if (name == "defined") return v.defined();
    if (name == "undefined") return !v.defined();
    if (name == "none") return v.is_none();
    if (name == "string") return v.type == Value::kString;
    if (name == "number") return v.type == Value::kInt || v.type == Value::kFloat;
    if (name == "integer") return v.type == Value::kInt;
    if (name == "float") return v.type == Value::kFloat;
    if (name == "boolean") return v.type == Value::kBool;
    if (name == "true") return v.type == Value::kBool && v.b;
    if (name == "false") return v.type == Value::kBool && !v.b;
    if (name == "mapping") return v.type == Value::kDict;
    if (name == "sequence")
      return v.type == Value::kList || v.type == Value::kString || v.type == Value::kDict;
    if (name == "iterable")
      return v.type == Value::kList || v.type == Value::kString || v.type == Value::kDict;
    if (name == "callable") return v.type == Value::kFunction;
    if (name == "odd" || name == "even") return (to_int(v, line) % 2 != 0) == (name == "odd");
    if (name == "divisibleby") return to_int(v, line) % to_int(a.get(0, "num"), line) == 0;
    if (name == "eq" || name == "equalto" || name == "sameas") return equals(v, a.get(0, "other"));
    if (name == "ne") return !equals(v, a.get(0, "other"));
    if (name == "lower") return v.type == Value::kString && ascii_map(v.s, ::tolower) == v.s;
    if (name == "upper") return v.type == Value::kString && ascii_map(v.s, ::toupper) == v.s;
    if (name == "in") {
      Value seq = a.get(0, "seq");
      if (seq.type == Value::kString) return v.type == Value::kString && seq.s.find(v.s) != std::string::npos;
      for (auto& x : iterate(seq, line))
        if (equals(v, x)) return true;
      return false;
    }
    fail(line, "unsupported test '" + name + "'");
  }

  Value filter(const std::string& name, const Value& v, CallArgs& a, int line) {
    if (name == "trim") return Value::string(py_strip(to_str(v), a.get(0, "chars"), true, true));
    if (name == "tojson") {
      Value indent = a.get(0, "indent");
      return Value::string(to_json(v, indent.type == Value::kInt ? static_cast<int>(indent.i) : -1,
                                   a.get(3, "sort_keys", Value::boolean(false)).truthy()));
    }
    if (name == "length" || name == "count") return Value::integer(length_of(v, line));
    if (name == "string") return Value::string(v.defined() ? to_str(v) : "");
    if (name == "safe" || (name == "list" && v.type == Value::kList)) return v;
    if (name == "list") return Value::new_list(iterate(v, line));
    if (name == "lower") return Value::string(ascii_map(to_str(v), ::tolower));
    if (name == "upper") return Value::string(ascii_map(to_str(v), ::toupper));
    if (name == "title") return Value::string(py_title(to_str(v)));
    if (name == "capitalize") {
      std::string r = ascii_map(to_str(v), ::tolower);
      if (!r.empty()) r[0] = static_cast<char>(std::toupper(r[0]));
      return Value::string(r);
    }
    if (name == "default" || name == "d") {
      bool boolean = a.get(1, "boolean", Value::boolean(false)).truthy();
      if (!v.defined() || (boolean && !v.truthy())) return a.get(0, "default_value", Value::string(""));
      return v;
    }
    if (name == "first" || name == "last") {
      List items = iterate(v, line);
      if (items.empty()) return Value();
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      Value attr = a.get(1, "attribute");
      std::string sep = a.get(0, "d", Value::string("")).s, out;
      List items = iterate(v, line);
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) append_bounded(out, sep, line);
        append_bounded(out, to_str(attr.defined() ? index(items[k], attr, line) : items[k]), line);
      }
      return Value::string(out);
    }
    if (name == "reverse") {
      if (v.type == Value::kString) {
        std::vector<uint32_t> cps = unicode::decode(v.s);
        std::reverse(cps.begin(), cps.end());
        return Value::string(unicode::encode(cps));
      }
      List items = iterate(v, line);
      std::reverse(items.begin(), items.end());
      return Value::new_list(std::move(items));
    }
    if (name == "replace")
      return Value::string(py_replace(to_str(v), to_str(a.get(0, "old")), to_str(a.get(1, "new")),
                                      a.get(2, "count", Value::integer(-1)).i, line));
    if (name == "items") {
      if (v.type != Value::kDict) fail(line, "items filter needs a mapping");
      CallArgs none;
      return (*dict_method(v, "items").fn)(none);
    }
    if (name == "int") {
      if (v.type == Value::kInt) return v;
      if (v.type == Value::kBool) return Value::integer(v.b);
      if (v.type == Value::kFloat) {
        // Python truncates toward zero and refuses inf and nan; past 2^63 it would need a big integer.
        if (!(std::fabs(v.f) < 9223372036854775808.0))
          fail(line, "int() of " + to_str(v) + " does not fit in 64 bits");
        return Value::integer(static_cast<int64_t>(v.f));
      }
      if (v.type == Value::kString) {
        try {
          size_t used = 0;
          int64_t r = std::stoll(v.s, &used);
          if (used == v.s.size()) return Value::integer(r);
        } catch (...) {
        }
      }
      return a.get(0, "default", Value::integer(0));
    }
    if (name == "float") {
      if (v.is_number()) return Value::number(v.as_double());
      if (v.type == Value::kString) {
        try {
          return Value::number(std::stod(v.s));
        } catch (...) {
        }
      }
      return a.get(0, "default", Value::number(0));
    }
    if (name == "abs") {
      if (v.type == Value::kFloat) return Value::number(std::fabs(v.f));
      return Value::integer(std::llabs(to_int(v, line)));
    }
    if (name == "map" || name == "selectattr" || name == "rejectattr" || name == "select" ||
        name == "reject") {
      List out;
      for (auto& item : iterate(v, line)) {
        if (name == "map") {
          Value attr = a.get(99, "attribute");
          if (attr.defined()) {
            Value x = index(item, attr, line);
            out.push_back(x.defined() ? x : a.get(99, "default"));
          } else {
            CallArgs rest;
            rest.positional.assign(a.positional.begin() + std::min<size_t>(1, a.positional.size()),
                                   a.positional.end());
            out.push_back(filter(to_str(a.get(0, "filter")), item, rest, line));
          }
          continue;
        }
        bool by_attr = name == "selectattr" || name == "rejectattr";
        size_t first = by_attr ? 1 : 0;
        Value subject = by_attr ? index(item, a.get(0, "attribute"), line) : item;
        bool keep;
        if (a.positional.size() > first) {
          CallArgs targs;
          targs.positional.assign(a.positional.begin() + first + 1, a.positional.end());
          keep = test(to_str(a.positional[first]), subject, targs, line);
        } else {
          keep = subject.truthy();
        }
        if (keep == (name == "selectattr" || name == "select")) out.push_back(item);
      }
      return Value::new_list(std::move(out));
    }
    if (name == "escape" || name == "e") {
      std::string out;
      for (char c : to_str(v)) {
        switch (c) {
          case '&':
            out += "&amp;";
            break;
          case '<':
            out += "&lt;";
            break;
          case '>':
            out += "&gt;";
            break;
          case '"':
            out += "&#34;";
            break;
          case '\'':
            out += "&#39;";
            break;
          default:
            out += c;
        }
      }
      return Value::string(out);
    }
    if (name == "indent") {
      int64_t width = std::max<int64_t>(0, a.get(0, "width", Value::integer(4)).i);  // Python: ' ' * -1 == ''
      check_text_size(width, line);
      bool first = a.get(1, "first", Value::boolean(false)).truthy();
      bool blank = a.get(2, "blank", Value::boolean(false)).truthy();
      std::string pad(static_cast<size_t>(width), ' '), s = to_str(v), out;
      std::vector<std::string> lines;
      size_t pos = 0;
      for (size_t k; (k = s.find('\n', pos)) != std::string::npos; pos = k + 1)
        lines.push_back(s.substr(pos, k - pos));
      lines.push_back(s.substr(pos));
      for (size_t k = 0; k < lines.size(); ++k) {
        if (k) out += "\n";
        bool indent_it = (k > 0 || first) && (blank || !lines[k].empty());
        if (indent_it) append_bounded(out, pad, line);
        append_bounded(out, lines[k], line);
      }
      return Value::string(out);
    }
    fail(line, "unsupported filter '" + name + "'");
  }

  std::vector<Frame> frames_;
  uint64_t steps_ = 0;  // spent from kMaxSteps
};

Value builtin(const std::string& name) {
  if (name == "raise_exception")
    return Value::function([](CallArgs& a) -> Value {
      throw Error("chat template raised an exception: " + to_str(a.get(0, "message")));
    });
  if (name == "range")
    return Value::function([](CallArgs& a) {
      int64_t start = 0, stop, step = 1;
      if (a.positional.size() == 1) {
        stop = a.positional[0].i;
      } else if (a.positional.size() >= 2) {
        start = a.positional[0].i, stop = a.positional[1].i;
        if (a.positional.size() >= 3) step = a.positional[2].i;
      } else {
        throw Error("chat template: range() needs arguments");
      }
      if (step == 0) throw Error("chat template: range() step cannot be zero");
      List out;
      for (int64_t k : progression(start, stop, step, /*line=*/0)) out.push_back(Value::integer(k));
      return Value::new_list(std::move(out));
    });
  if (name == "strftime_now")
    return Value::function([](CallArgs& a) {
      std::time_t t = std::time(nullptr);
      std::tm tm{};
      localtime_r(&t, &tm);
      char buf[256];
      size_t n = std::strftime(buf, sizeof buf, to_str(a.get(0, "format")).c_str(), &tm);
      return Value::string(std::string(buf, n));
    });
  if (name == "dict")
    return Value::function([](CallArgs& a) {
      Value d = Value::new_dict();
      for (auto& [k, v] : a.keyword) d.set(k, v);
      return d;
    });
  return Value();
}

}  // namespace

std::string run_chat_template(const ChatTemplate::Program& program, const Dict& variables) {
  // A namespace is the one value a template can change after making it, so the one way to build a
  // cycle ({% set ns.me = ns %}) that reference counting never frees. Every namespace made here is
  // emptied when the render ends, however it ends; nothing outlives a render but its text.
  struct Namespaces {
    std::vector<std::shared_ptr<Dict>> made;
    ~Namespaces() {
      for (auto& d : made) Dict().swap(*d);
    }
  } namespaces;
  Dict vars;
  vars.emplace_back("namespace", Value::function([&namespaces](CallArgs& a) {
                      Value ns = Value::new_dict();
                      ns.is_namespace = true;
                      for (auto& [k, v] : a.keyword) ns.set(k, v);
                      namespaces.made.push_back(ns.dict);
                      return ns;
                    }));
  for (const char* b : {"raise_exception", "range", "strftime_now", "dict"}) vars.emplace_back(b, builtin(b));
  for (auto& kv : variables) vars.push_back(kv);
  Interpreter in(vars);
  std::string out;
  LoopControl lc;
  in.exec(program.body, out, lc);
  return out;
}

}  // namespace mx8::runtime
