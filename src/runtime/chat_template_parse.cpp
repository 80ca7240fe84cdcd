// Chat-template parser: splits the source into text and tags (applying whitespace control with
// Hugging Face's trim_blocks/lstrip_blocks settings), then parses tags into statements and
// expressions by Jinja2's grammar and precedence.
#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "mx8/error.h"
#include "runtime/chat_template_ast.h"

namespace mx8::runtime {
namespace {

using namespace jinja;

struct Segment {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string text;
  int line;
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

[[noreturn]] void syntax_error(int line, const std::string& what) {
  throw Error("chat template: syntax error on line " + std::to_string(line) + ": " + what);
}

// Index of the tag closer `close` at or after `pos`, skipping quoted strings and bracketed parts
// (so "{{ {'a': {}} }}" ends at the last "}}", as Jinja2's lexer balances brackets).
size_t find_closer(const std::string& s, size_t pos, const char* close, int line) {
  char quote = 0;
  int depth = 0;
  for (size_t i = pos; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == '\\')
        ++i;
      else if (c == quote)
        quote = 0;
      continue;
    }
    if (c == '\'' || c == '"') {
      quote = c;
      continue;
    }
    if (depth == 0 && s.compare(i, 2, close) == 0) return i;
    if (c == '(' || c == '[' || c == '{') ++depth;
    if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
  }
  syntax_error(line, std::string("unclosed tag (missing '") + close + "')");
}

std::vector<Segment> segment(std::string src) {
  // Jinja2 normalises newlines and (keep_trailing_newline=False) drops one final newline.
  std::string norm;
  norm.reserve(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (src[i] == '\r') {
      norm += '\n';
      if (i + 1 < src.size() && src[i + 1] == '\n') ++i;
    } else {
      norm += src[i];
    }
  }
  if (!norm.empty() && norm.back() == '\n') norm.pop_back();
  const std::string& s = norm;

  std::vector<Segment> out;
  size_t pos = 0;
  int line = 1;
  bool strip_next = false;    // a "-" closer: strip leading whitespace of the next text
  bool line_starting = true;  // the text starts at the beginning of a line
  auto count_lines = [&](size_t a, size_t b) {
    for (size_t k = a; k < b; ++k) line += s[k] == '\n';
  };
  while (pos <= s.size()) {
    size_t open = std::string::npos;
    for (size_t k = s.find('{', pos); k != std::string::npos; k = s.find('{', k + 1)) {
      if (k + 1 < s.size() && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')) {
        open = k;
        break;
      }
    }
    std::string text = s.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (strip_next) {
      size_t k = 0;
      while (k < text.size() && is_space(text[k])) ++k;
      text.erase(0, k);
    }
    int text_line = line;
    if (open == std::string::npos) {
      if (!text.empty()) out.push_back({Segment::kText, text, text_line});
      break;
    }
    char type = s[open + 1];
    size_t inner = open + 2;
    char marker = inner < s.size() ? s[inner] : 0;
    if (marker == '-') {
      while (!text.empty() && is_space(text.back())) text.pop_back();
      ++inner;
    } else if (marker == '+') {
      ++inner;
    } else if (type != '{') {
      // lstrip_blocks: spaces and tabs between the start of a line and a block/comment tag go.
      size_t l = text.rfind('\n');
      size_t lpos = l == std::string::npos ? 0 : l + 1;
      if (lpos > 0 || line_starting) {
        bool blank = true;
        for (size_t k = lpos; k < text.size(); ++k) blank &= text[k] == ' ' || text[k] == '\t';
        if (blank) text.erase(lpos);
      }
    }
    if (!text.empty()) out.push_back({Segment::kText, text, text_line});
    count_lines(pos, open);
    const char* close = type == '{' ? "}}" : type == '%' ? "%}" : "#}";
    size_t close_at = type == '#' ? s.find("#}", inner) : find_closer(s, inner, close, line);
    if (close_at == std::string::npos) syntax_error(line, "unclosed comment");
    size_t inner_end = close_at;
    strip_next = false;
    if (inner_end > inner && s[inner_end - 1] == '-') {
      strip_next = true;
      --inner_end;
    } else if (inner_end > inner && s[inner_end - 1] == '+') {
      --inner_end;
    }
    std::string body = s.substr(inner, inner_end - inner);
    int tag_line = line;
    count_lines(open, close_at + 2);
    pos = close_at + 2;
    line_starting = false;
    // trim_blocks: the first newline after a block or comment tag goes.
    if (type != '{' && !strip_next && !(close_at > inner && s[close_at - 1] == '+') && pos < s.size() &&
        s[pos] == '\n') {
      ++pos;
      ++line;
      line_starting = true;
    }
    if (type == '{') out.push_back({Segment::kExpr, body, tag_line});
    if (type == '%') {
      // {% raw %}...{% endraw %}: the text in between is literal.
      size_t b = body.find_first_not_of(" \t\n");
      if (b != std::string::npos && body.compare(b, 3, "raw") == 0 &&
          body.find_first_not_of(" \t\n", b + 3) == std::string::npos) {
        size_t end = s.find("{%", pos);
        while (end != std::string::npos) {
          size_t c = s.find("%}", end);
          if (c == std::string::npos) break;  // no tag closes here, so no endraw either
          std::string t = s.substr(end + 2, c - end - 2);
          size_t tb = t.find_first_not_of(" \t\n-");
          if (tb != std::string::npos && t.compare(tb, 6, "endraw") == 0) break;
          end = s.find("{%", end + 2);
        }
        if (end == std::string::npos || s.find("%}", end) == std::string::npos)
          syntax_error(tag_line, "missing endraw");
        out.push_back({Segment::kText, s.substr(pos, end - pos), tag_line});
        count_lines(pos, end);
        pos = s.find("%}", end) + 2;
        if (pos < s.size() && s[pos] == '\n') {  // trim_blocks after {% endraw %}
          ++pos;
          ++line;
          line_starting = true;
        }
        continue;
      }
      out.push_back({Segment::kStmt, body, tag_line});
    }
  }
  return out;
}

struct Token {
  enum Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string text;
  int64_t i = 0;
  double f = 0;
};

std::vector<Token> lex(const std::string& s, int line) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (is_space(c)) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Token::kName, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      bool is_float = false;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        is_float = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          is_float = true;
          j = k;
          while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
        }
      }
      std::string num;
      for (size_t k = i; k < j; ++k)
        if (s[k] != '_') num += s[k];
      Token t{is_float ? Token::kFloat : Token::kInt, num};
      if (is_float) {
        t.f = std::strtod(num.c_str(), nullptr);  // as Python: 1e999 is inf, 1e-999 is 0.0
      } else {
        auto [end, ec] = std::from_chars(num.data(), num.data() + num.size(), t.i);
        if (ec != std::errc() || end != num.data() + num.size())
          syntax_error(line, "integer " + num + " does not fit in 64 bits");
      }
      out.push_back(t);
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] != '\\' || j + 1 >= s.size()) {
          v += s[j];
          continue;
        }
        char e = s[++j];
        switch (e) {
          case 'n':
            v += '\n';
            break;
          case 't':
            v += '\t';
            break;
          case 'r':
            v += '\r';
            break;
          case '0':
            v += '\0';
            break;
          case '\\':
            v += '\\';
            break;
          case '\'':
            v += '\'';
            break;
          case '"':
            v += '"';
            break;
          case '\n':
            break;
          case 'u':
          case 'x': {
            size_t n = e == 'u' ? 4 : 2;
            uint32_t cp = 0;
            const char* first = s.data() + std::min(s.size(), j + 1);
            const char* last = s.data() + std::min(s.size(), j + 1 + n);
            auto [end, ec] = std::from_chars(first, last, cp, 16);
            if (ec != std::errc() || end != first + n)
              syntax_error(line, std::string("\\") + e + " needs " + std::to_string(n) + " hex digits");
            if (cp >= 0xD800 && cp <= 0xDFFF)
              syntax_error(line,
                           "\\u" + s.substr(j + 1, n) + " is a lone surrogate, which has no UTF-8 form");
            j += n;
            // UTF-8 encode.
            if (cp < 0x80) {
              v += static_cast<char>(cp);
            } else if (cp < 0x800) {
              v += static_cast<char>(0xC0 | (cp >> 6));
              v += static_cast<char>(0x80 | (cp & 0x3F));
            } else {
              v += static_cast<char>(0xE0 | (cp >> 12));
              v += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
              v += static_cast<char>(0x80 | (cp & 0x3F));
            }
            break;
          }
          default:
            v += '\\';
            v += e;  // Python keeps unknown escapes
        }
      }
      if (j >= s.size()) syntax_error(line, "unterminated string");
      out.push_back({Token::kString, v});
      i = j + 1;
      continue;
    }
    static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "(",
                                       ")",  "[",  "]",  "{",  "}",  ".",  ",", ":", "|", "=", "<", ">"};
    bool found = false;
    for (const char* op : kOps) {
      size_t n = std::strlen(op);
      if (s.compare(i, n, op) == 0) {
        out.push_back({Token::kOp, op});
        i += n;
        found = true;
        break;
      }
    }
    if (!found) syntax_error(line, std::string("unexpected character '") + c + "'");
  }
  out.push_back({Token::kEnd, ""});
  return out;
}

// Bounds on what one tag may hold. The parser and the interpreter recurse once per nesting level
// (and the interpreter once per operator of a chain such as a ~ b ~ c), so without them a hostile or
// broken template - from a model file or `--template` - overflows the stack instead of failing. Real
// chat templates stay far below: their longest tags are tens of tokens, nested a few levels.
constexpr size_t kMaxTagTokens = 1000;
constexpr int kMaxNesting = 64;  // brackets, unary operators and block statements

class ExprParser {
 public:
  ExprParser(std::vector<Token> toks, int line) : t_(std::move(toks)), line_(line) {
    if (t_.size() > kMaxTagTokens)
      syntax_error(line_, "a tag of more than " + std::to_string(kMaxTagTokens) + " tokens");
  }

  const Token& peek(size_t k = 0) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool at_end() const { return peek().kind == Token::kEnd; }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).kind == Token::kOp && peek(k).text == op; }
  bool is_name(const char* n, size_t k = 0) const {
    return peek(k).kind == Token::kName && peek(k).text == n;
  }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++p_;
    return true;
  }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    ++p_;
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) fail(std::string("expected '") + op + "'");
  }
  std::string expect_name() {
    if (peek().kind != Token::kName) fail("expected a name");
    return t_[p_++].text;
  }
  void expect_end() {
    if (!at_end()) fail("unexpected '" + peek().text + "'");
  }
  [[noreturn]] void fail(const std::string& what) const {
    syntax_error(line_, what + (at_end() ? " at end of tag" : " near '" + peek().text + "'"));
  }

  ExprP make(Expr::Kind k) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line_;
    return e;
  }
  ExprP binary(const std::string& op, ExprP a, ExprP b) {
    auto e = make(Expr::kBinary);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  // A comma-separated tuple without parentheses ("a, b") or a single expression.
  ExprP parse_tuple(bool with_cond = true) {
    ExprP first = with_cond ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto t = make(Expr::kList);
    t->is_tuple = true;
    t->args.push_back(std::move(first));
    while (accept_op(",")) {
      if (at_end() || is_op(")") || is_op("]") || is_op("}")) break;
      t->args.push_back(with_cond ? parse_expression() : parse_or());
    }
    return t;
  }

  // One level of nesting for as long as it lives: brackets and unary operators recurse through it.
  class Nested {
   public:
    explicit Nested(ExprParser& p) : p_(p) {
      if (++p_.nesting_ > kMaxNesting)
        p_.fail("expressions nested more than " + std::to_string(kMaxNesting) + " deep");
    }
    ~Nested() { --p_.nesting_; }
    Nested(const Nested&) = delete;
    Nested& operator=(const Nested&) = delete;

   private:
    ExprParser& p_;
  };

  ExprP parse_expression() {
    Nested level(*this);
    ExprP e = parse_or();
    while (is_name("if")) {
      ++p_;
      auto c = make(Expr::kCond);
      c->args.push_back(std::move(e));
      c->args.push_back(parse_or());
      c->args.push_back(accept_name("else") ? parse_expression() : nullptr);
      e = std::move(c);
    }
    return e;
  }
  ExprP parse_or() {
    ExprP e = parse_and();
    while (accept_name("or")) e = binary("or", std::move(e), parse_and());
    return e;
  }
  ExprP parse_and() {
    ExprP e = parse_not();
    while (accept_name("and")) e = binary("and", std::move(e), parse_not());
    return e;
  }
  ExprP parse_not() {
    if (accept_name("not")) {
      Nested level(*this);
      auto e = make(Expr::kUnary);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprP parse_compare() {
    ExprP e = parse_math1();
    while (true) {
      std::string op;
      if (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">=")) {
        op = t_[p_++].text;
      } else if (is_name("in")) {
        ++p_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        p_ += 2;
        op = "not in";
      } else {
        return e;
      }
      e = binary(op, std::move(e), parse_math1());
    }
  }
  ExprP parse_math1() {
    ExprP e = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = t_[p_++].text;
      e = binary(op, std::move(e), parse_concat());
    }
    return e;
  }
  ExprP parse_concat() {
    ExprP e = parse_math2();
    while (accept_op("~")) e = binary("~", std::move(e), parse_math2());
    return e;
  }
  ExprP parse_math2() {
    ExprP e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = t_[p_++].text;
      e = binary(op, std::move(e), parse_pow());
    }
    return e;
  }
  ExprP parse_pow() {
    ExprP e = parse_unary(true);
    while (accept_op("**")) e = binary("**", std::move(e), parse_unary(true));
    return e;
  }
  ExprP parse_unary(bool with_filter) {
    ExprP e;
    if (is_op("-") || is_op("+")) {
      Nested level(*this);
      e = make(Expr::kUnary);
      e->name = t_[p_++].text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filters(std::move(e));
    return e;
  }

  ExprP parse_primary() {
    const Token& t = peek();
    if (t.kind == Token::kName) {
      ++p_;
      auto e = make(Expr::kLiteral);
      if (t.text == "true" || t.text == "True")
        e->value = Value::boolean(true);
      else if (t.text == "false" || t.text == "False")
        e->value = Value::boolean(false);
      else if (t.text == "none" || t.text == "None")
        e->value = Value::none();
      else {
        e->kind = Expr::kName;
        e->name = t.text;
      }
      return e;
    }
    if (t.kind == Token::kString) {
      std::string v;
      while (peek().kind == Token::kString) v += t_[p_++].text;  // adjacent literals concatenate
      auto e = make(Expr::kLiteral);
      e->value = Value::string(v);
      return e;
    }
    if (t.kind == Token::kInt || t.kind == Token::kFloat) {
      ++p_;
      auto e = make(Expr::kLiteral);
      e->value = t.kind == Token::kInt ? Value::integer(t.i) : Value::number(t.f);
      return e;
    }
    if (accept_op("(")) {
      if (accept_op(")")) {
        auto e = make(Expr::kList);
        e->is_tuple = true;
        return e;
      }
      ExprP e = parse_tuple();
      expect_op(")");
      return e;
    }
    if (accept_op("[")) {
      auto e = make(Expr::kList);
      while (!is_op("]")) {
        e->args.push_back(parse_expression());
        if (!accept_op(",")) break;
      }
      expect_op("]");
      return e;
    }
    if (accept_op("{")) {
      auto e = make(Expr::kDict);
      while (!is_op("}")) {
        e->args.push_back(parse_expression());
        expect_op(":");
        e->args.push_back(parse_expression());
        if (!accept_op(",")) break;
      }
      expect_op("}");
      return e;
    }
    fail("expected an expression");
  }

  void parse_call_args(Expr& call) {
    // After "(": positional and keyword arguments up to ")".
    while (!is_op(")")) {
      if (peek().kind == Token::kName && is_op("=", 1)) {
        std::string k = t_[p_].text;
        p_ += 2;
        call.kwargs.emplace_back(k, parse_expression());
      } else {
        call.args.push_back(parse_expression());
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
  }

  ExprP parse_postfix(ExprP e) {
    while (true) {
      if (accept_op(".")) {
        auto a = make(Expr::kAttr);
        if (peek().kind == Token::kInt) {
          a->kind = Expr::kIndex;
          a->args.push_back(std::move(e));
          auto idx = make(Expr::kLiteral);
          idx->value = Value::integer(t_[p_++].i);
          a->args.push_back(std::move(idx));
        } else {
          a->name = expect_name();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (accept_op("[")) {
        ExprP parts[3];
        int colons = 0;
        for (;;) {
          if (is_op(":")) {
            ++p_;
            if (++colons > 2) fail("bad slice");
            continue;
          }
          if (is_op("]")) break;
          parts[colons] = parse_expression();
          if (!is_op(":") && !is_op("]")) fail("expected ']'");
        }
        expect_op("]");
        if (colons == 0) {
          if (!parts[0]) fail("empty subscript");
          auto ix = make(Expr::kIndex);
          ix->args.push_back(std::move(e));
          ix->args.push_back(std::move(parts[0]));
          e = std::move(ix);
        } else {
          auto sl = make(Expr::kSlice);
          sl->args.push_back(std::move(e));
          for (auto& p : parts) sl->args.push_back(std::move(p));
          e = std::move(sl);
        }
      } else if (accept_op("(")) {
        auto c = make(Expr::kCall);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprP parse_filters(ExprP e) {
    while (true) {
      if (accept_op("|")) {
        auto f = make(Expr::kFilter);
        f->name = expect_name();
        while (accept_op(".")) f->name += "." + expect_name();
        f->args.push_back(std::move(e));
        if (accept_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (is_name("is")) {
        ++p_;
        auto t = make(Expr::kTest);
        t->negated = accept_name("not");
        t->name = expect_name();
        t->args.push_back(std::move(e));
        if (accept_op("(")) {
          parse_call_args(*t);
        } else if ((peek().kind == Token::kName || peek().kind == Token::kString ||
                    peek().kind == Token::kInt || peek().kind == Token::kFloat || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if")) {
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (accept_op("(")) {
        auto c = make(Expr::kCall);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  size_t p_ = 0;

 private:
  std::vector<Token> t_;
  int line_;
  int nesting_ = 0;
};

class StmtParser {
 public:
  explicit StmtParser(std::vector<Segment> segs) : segs_(std::move(segs)) {}

  Body parse_all() {
    std::string end;
    Body b = parse_body({}, end, nullptr);
    return b;
  }

 private:
  static std::string keyword(const std::string& body) {
    size_t a = body.find_first_not_of(" \t\n");
    if (a == std::string::npos) return "";
    size_t b = a;
    while (b < body.size() && (std::isalnum(static_cast<unsigned char>(body[b])) || body[b] == '_')) ++b;
    return body.substr(a, b - a);
  }

  // Parses statements until one of `ends` (a keyword tag); returns it in `end` and the parser of
  // that tag (positioned after the keyword) in `end_parser`.
  Body parse_body(const std::vector<std::string>& ends, std::string& end,
                  std::unique_ptr<ExprParser>* end_parser) {
    Body body;
    while (i_ < segs_.size()) {
      const Segment& seg = segs_[i_++];
      if (seg.kind == Segment::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::kText;
        s->text = seg.text;
        s->line = seg.line;
        body.push_back(std::move(s));
        continue;
      }
      if (seg.kind == Segment::kExpr) {
        ExprParser p(lex(seg.text, seg.line), seg.line);
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::kOutput;
        s->line = seg.line;
        s->expr = p.parse_tuple();
        p.expect_end();
        body.push_back(std::move(s));
        continue;
      }
      auto p = std::make_unique<ExprParser>(lex(seg.text, seg.line), seg.line);
      std::string kw = p->expect_name();
      for (auto& e : ends)
        if (kw == e) {
          end = kw;
          if (end_parser) *end_parser = std::move(p);
          return body;
        }
      body.push_back(parse_statement(kw, *p, seg.line));
    }
    if (!ends.empty())
      syntax_error(segs_.empty() ? 0 : segs_.back().line, "missing {% " + ends.back() + " %}");
    return body;
  }

  std::unique_ptr<Stmt> parse_statement(const std::string& kw, ExprParser& p, int line) {
    if (blocks_ >= kMaxNesting)
      syntax_error(line, "blocks nested more than " + std::to_string(kMaxNesting) + " deep");
    ++blocks_;
    std::unique_ptr<Stmt> s = parse_block(kw, p, line);
    --blocks_;
    return s;
  }

  std::unique_ptr<Stmt> parse_block(const std::string& kw, ExprParser& p, int line) {
    auto s = std::make_unique<Stmt>();
    s->line = line;
    std::string end;
    std::unique_ptr<ExprParser> endp;
    if (kw == "if") {
      s->kind = Stmt::kIf;
      ExprP cond = p.parse_tuple();
      p.expect_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"}, end, &endp);
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "elif") {
          cond = endp->parse_tuple();
          endp->expect_end();
          continue;
        }
        endp->expect_end();
        if (end == "else") {
          s->else_body = parse_body({"endif"}, end, &endp);
          endp->expect_end();
        }
        break;
      }
      return s;
    }
    if (kw == "for") {
      s->kind = Stmt::kFor;
      bool paren = p.accept_op("(");
      s->targets.push_back(p.expect_name());
      while (p.accept_op(",")) s->targets.push_back(p.expect_name());
      if (paren) p.expect_op(")");
      if (!p.accept_name("in")) p.fail("expected 'in'");
      s->expr = p.parse_tuple(/*with_cond=*/false);
      if (p.accept_name("if")) s->filter = p.parse_expression();
      if (p.accept_name("recursive")) p.fail("recursive loops are not supported");
      p.expect_end();
      s->body = parse_body({"else", "endfor"}, end, &endp);
      endp->expect_end();
      if (end == "else") {
        s->else_body = parse_body({"endfor"}, end, &endp);
        endp->expect_end();
      }
      return s;
    }
    if (kw == "set") {
      std::string name = p.expect_name();
      if (p.accept_op(".")) s->target_attr = p.expect_name();
      s->targets.push_back(name);
      while (p.accept_op(",")) s->targets.push_back(p.expect_name());
      if (p.accept_op("=")) {
        s->kind = Stmt::kSet;
        s->expr = p.parse_tuple();
        p.expect_end();
        return s;
      }
      s->kind = Stmt::kSetBlock;
      p.expect_end();
      s->body = parse_body({"endset"}, end, &endp);
      endp->expect_end();
      return s;
    }
    if (kw == "break" || kw == "continue") {
      p.expect_end();
      s->kind = kw == "break" ? Stmt::kBreak : Stmt::kContinue;
      return s;
    }
    if (kw == "macro") {
      s->kind = Stmt::kMacro;
      s->name = p.expect_name();
      p.expect_op("(");
      while (!p.is_op(")")) {
        std::string param = p.expect_name();
        ExprP def = p.accept_op("=") ? p.parse_expression() : nullptr;
        s->params.emplace_back(param, std::move(def));
        if (!p.accept_op(",")) break;
      }
      p.expect_op(")");
      p.expect_end();
      s->body = parse_body({"endmacro"}, end, &endp);
      endp->expect_end();
      return s;
    }
    if (kw == "generation") {
      // transformers' {% generation %} marks assistant text for masks; it renders its body.
      p.expect_end();
      s->kind = Stmt::kIf;
      auto yes = std::make_unique<Expr>();
      yes->value = Value::boolean(true);
      s->branches.emplace_back(std::move(yes), parse_body({"endgeneration"}, end, &endp));
      return s;
    }
    syntax_error(line, "unsupported tag '" + kw + "'");
  }

  std::vector<Segment> segs_;
  size_t i_ = 0;
  int blocks_ = 0;  // block statements open around the one being parsed
};

}  // namespace

std::shared_ptr<const ChatTemplate::Program> parse_chat_template(const std::string& source) {
  auto prog = std::make_shared<ChatTemplate::Program>();
  prog->body = StmtParser(segment(source)).parse_all();
  return prog;
}

}  // namespace mx8::runtime
