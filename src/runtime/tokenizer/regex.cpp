// Backtracking matcher for the pre-tokenizer regex subset (see regex.h). Matching is
// continuation-passing: each node matches at a position and calls "the rest of the pattern" with
// every end position it can reach, in priority order; the first continuation that succeeds wins,
// which gives Perl/Oniguruma leftmost-first semantics. Repeats of a single-character item (all
// repeats in the tokenizer patterns) are matched iteratively, so long runs do not deepen the stack.
#include "runtime/tokenizer/regex.h"

#include <algorithm>

#include "mx8/error.h"
#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime {
namespace {

// A pattern as an error message quotes it: real ones are under 300 bytes, a hostile one need not be.
std::string shown_pattern(std::string_view p) {
  return p.size() <= 300 ? std::string(p) : std::string(p.substr(0, 300)) + "...";
}

// A predicate inside a character class or standing alone: \s, \d, \w, \p{..} and their negations.
struct Predicate {
  enum Kind : uint8_t { kSpace, kDigit, kWord, kMajor, kCategory } kind;
  bool negated = false;
  char major = 0;                // kMajor: 'L', 'N', ...
  unicode::Category category{};  // kCategory

  bool test(uint32_t cp) const {
    bool r = false;
    switch (kind) {
      case kSpace:
        r = unicode::is_white_space(cp);
        break;
      case kDigit:
        r = unicode::category(cp) == unicode::kNd;
        break;
      case kWord:
        r = unicode::in_major_class(cp, 'L') || unicode::in_major_class(cp, 'M') ||
            unicode::category(cp) == unicode::kNd || unicode::category(cp) == unicode::kPc;
        break;
      case kMajor:
        r = unicode::in_major_class(cp, major);
        break;
      case kCategory:
        r = unicode::category(cp) == category;
        break;
    }
    return r != negated;
  }
};

struct CharClass {
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  std::vector<Predicate> predicates;
  bool negated = false;
  bool icase = false;

  bool test_one(uint32_t cp) const {
    for (auto& [lo, hi] : ranges)
      if (cp >= lo && cp <= hi) return true;
    for (auto& p : predicates)
      if (p.test(cp)) return true;
    return false;
  }
  bool test(uint32_t cp) const {
    bool r = test_one(cp);
    if (!r && icase) {
      uint32_t f = unicode::simple_fold(cp);
      r = f != cp && test_one(f);
      // Upper-case members of ranges: compare folded range ends for ASCII letters.
      if (!r)
        for (auto& [lo, hi] : ranges)
          for (uint32_t c = lo; c <= hi && c < 0x80 && !r; ++c) r = unicode::simple_fold(c) == f;
    }
    return r != negated;
  }
};

}  // namespace

struct Regex::Node {
  enum Kind {
    kEmpty,
    kChar,
    kClass,
    kAny,
    kSeq,
    kAlt,
    kRepeat,
    kLook,
    kLineStart,
    kLineEnd,
    kTextStart,
    kTextEnd
  };
  Kind kind = kEmpty;
  uint32_t cp = 0;
  bool icase = false;
  CharClass cls;
  std::vector<std::unique_ptr<Node>> kids;
  int min = 0, max = -1;  // kRepeat; max -1 = unbounded
  bool greedy = true;
  bool negative = false;  // kLook

  bool single_char() const { return kind == kChar || kind == kClass || kind == kAny; }
  bool test(uint32_t c) const {
    switch (kind) {
      case kChar:
        return c == cp || (icase && unicode::simple_fold(c) == unicode::simple_fold(cp));
      case kClass:
        return cls.test(c);
      case kAny:
        return c != '\n';
      default:
        return false;
    }
  }
};

namespace {

using Node = Regex::Node;

class Parser {
 public:
  Parser(std::string_view pattern) : src_(pattern), p_(unicode::decode(pattern)) {}

  std::unique_ptr<Node> parse() {
    bool icase = false;
    auto n = parse_alt(icase);
    if (i_ != p_.size()) fail("unbalanced ')'");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("tokenizer regex: " + what + " at position " + std::to_string(i_) + " of pattern '" +
                shown_pattern(src_) + "'");
  }
  bool at_end() const { return i_ >= p_.size(); }
  uint32_t peek(size_t k = 0) const { return i_ + k < p_.size() ? p_[i_ + k] : 0; }
  uint32_t next() {
    if (at_end()) fail("unexpected end");
    return p_[i_++];
  }

  std::unique_ptr<Node> parse_alt(bool icase) {
    // Each group level is a level of recursion here, in the matcher and in the tree's destructor;
    // 100000 nested groups overflowed the stack. Real patterns nest three deep.
    constexpr int kMaxGroupDepth = 64;
    if (++depth_ > kMaxGroupDepth + 1)  // + 1: the pattern's top level is a call too
      fail("groups nested more than " + std::to_string(kMaxGroupDepth) + " deep");
    auto alt = std::make_unique<Node>();
    alt->kind = Node::kAlt;
    alt->kids.push_back(parse_seq(icase));
    while (!at_end() && peek() == '|') {
      ++i_;
      alt->kids.push_back(parse_seq(icase));
    }
    --depth_;
    if (alt->kids.size() == 1) return std::move(alt->kids[0]);
    return alt;
  }

  std::unique_ptr<Node> parse_seq(bool icase) {
    auto seq = std::make_unique<Node>();
    seq->kind = Node::kSeq;
    while (!at_end() && peek() != '|' && peek() != ')') {
      // (?i) switches case folding on for the rest of the enclosing group.
      if (peek() == '(' && peek(1) == '?' && peek(2) == 'i' && peek(3) == ')') {
        i_ += 4;
        icase = true;
        continue;
      }
      auto atom = parse_atom(icase);
      seq->kids.push_back(parse_quantifier(std::move(atom)));
    }
    if (seq->kids.size() == 1) return std::move(seq->kids[0]);
    return seq;
  }

  std::unique_ptr<Node> parse_quantifier(std::unique_ptr<Node> atom) {
    if (at_end()) return atom;
    int mn = -2, mx = -1;
    uint32_t c = peek();
    if (c == '*') {
      mn = 0, mx = -1, ++i_;
    } else if (c == '+') {
      mn = 1, mx = -1, ++i_;
    } else if (c == '?') {
      mn = 0, mx = 1, ++i_;
    } else if (c == '{') {
      // {n}, {n,}, {n,m}; anything else is a literal '{' (as in Oniguruma).
      size_t j = i_ + 1;
      auto number = [&](int& out) {
        size_t s = j;
        long v = 0;
        while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9' && v < 100000) v = v * 10 + (p_[j++] - '0');
        out = static_cast<int>(v);
        return j > s;
      };
      int a = 0, b = -1;
      if (number(a)) {
        if (j < p_.size() && p_[j] == '}') {
          b = a;
        } else if (j < p_.size() && p_[j] == ',') {
          ++j;
          if (!number(b)) b = -1;
        } else {
          return atom;
        }
        if (j < p_.size() && p_[j] == '}') {
          i_ = j + 1;
          mn = a, mx = b;
          if (mx >= 0 && mx < mn) fail("bad repeat range");
        }
      }
      if (mn == -2) return atom;
    } else {
      return atom;
    }
    if (atom->kind == Node::kLook || atom->kind == Node::kLineStart || atom->kind == Node::kLineEnd)
      fail("quantifier after an assertion");
    auto rep = std::make_unique<Node>();
    rep->kind = Node::kRepeat;
    rep->min = mn;
    rep->max = mx;
    if (!at_end() && peek() == '?') {
      rep->greedy = false;
      ++i_;
    } else if (!at_end() && peek() == '+') {
      fail("possessive quantifiers are not supported");
    }
    rep->kids.push_back(std::move(atom));
    return rep;
  }

  std::unique_ptr<Node> parse_atom(bool icase) {
    uint32_t c = next();
    auto node = std::make_unique<Node>();
    switch (c) {
      case '(': {
        bool inner_icase = icase;
        if (peek() == '?') {
          ++i_;
          uint32_t k = next();
          if (k == ':') {
          } else if (k == '=' || k == '!') {
            node->kind = Node::kLook;
            node->negative = k == '!';
            node->kids.push_back(parse_alt(icase));
            if (next() != ')') fail("missing ')'");
            return node;
          } else if (k == 'i' && peek() == ':') {
            ++i_;
            inner_icase = true;
          } else if (k == '-' && peek() == 'i' && peek(1) == ':') {
            i_ += 2;
            inner_icase = false;
          } else {
            fail("unsupported group '(?" + std::string(1, static_cast<char>(k)) + "'");
          }
        }
        auto inner = parse_alt(inner_icase);
        if (at_end() || next() != ')') fail("missing ')'");
        return inner;
      }
      case '[':
        node->kind = Node::kClass;
        node->cls = parse_class(icase);
        return node;
      case '.':
        node->kind = Node::kAny;
        return node;
      case '^':
        node->kind = Node::kLineStart;
        return node;
      case '$':
        node->kind = Node::kLineEnd;
        return node;
      case ')':
        fail("unbalanced ')'");
      case '*':
      case '+':
      case '?':
        fail("quantifier without an operand");
      case '\\': {
        uint32_t e = peek();
        if (e == 'A') {
          ++i_;
          node->kind = Node::kTextStart;
          return node;
        }
        if (e == 'z') {
          ++i_;
          node->kind = Node::kTextEnd;
          return node;
        }
        Predicate pred{};
        uint32_t lit = 0;
        if (parse_escape(pred, lit)) {
          node->kind = Node::kClass;
          node->cls.predicates.push_back(pred);
        } else {
          node->kind = Node::kChar;
          node->cp = lit;
          node->icase = icase;
        }
        return node;
      }
      default:
        node->kind = Node::kChar;
        node->cp = c;
        node->icase = icase;
        return node;
    }
  }

  uint32_t parse_hex(size_t max_digits, bool braced) {
    uint32_t v = 0;
    size_t n = 0;
    while (!at_end() && n < max_digits) {
      uint32_t h = peek();
      int d = (h >= '0' && h <= '9')   ? h - '0'
              : (h >= 'a' && h <= 'f') ? h - 'a' + 10
              : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                       : -1;
      if (d < 0) break;
      v = v * 16 + d;
      ++i_, ++n;
    }
    if (n == 0 || (!braced && n != max_digits)) fail("bad hex escape");
    if (v > 0x10FFFF) fail("code point out of range");
    return v;
  }

  // After a backslash. Returns true and fills `pred` for a class escape, else fills `lit`.
  bool parse_escape(Predicate& pred, uint32_t& lit) {
    uint32_t e = next();
    switch (e) {
      case 's':
      case 'S':
        pred.kind = Predicate::kSpace;
        pred.negated = e == 'S';
        return true;
      case 'd':
      case 'D':
        pred.kind = Predicate::kDigit;
        pred.negated = e == 'D';
        return true;
      case 'w':
      case 'W':
        pred.kind = Predicate::kWord;
        pred.negated = e == 'W';
        return true;
      case 'p':
      case 'P': {
        pred.negated = e == 'P';
        std::string name;
        if (peek() == '{') {
          ++i_;
          if (peek() == '^') ++i_, pred.negated = !pred.negated;
          while (!at_end() && peek() != '}') name += static_cast<char>(next());
          if (at_end()) fail("unterminated \\p{");
          ++i_;
        } else {
          name += static_cast<char>(next());
        }
        set_property(pred, name);
        return true;
      }
      case 'r':
        lit = '\r';
        return false;
      case 'n':
        lit = '\n';
        return false;
      case 't':
        lit = '\t';
        return false;
      case 'f':
        lit = '\f';
        return false;
      case 'v':
        lit = '\v';
        return false;
      case 'a':
        lit = 0x07;
        return false;
      case 'e':
        lit = 0x1B;
        return false;
      case '0':
        lit = 0;
        return false;
      case 'x':
        if (peek() == '{') {
          ++i_;
          lit = parse_hex(8, true);
          if (next() != '}') fail("missing '}' in \\x{");
        } else {
          lit = parse_hex(2, false);
        }
        return false;
      case 'u':
        lit = parse_hex(4, false);
        return false;
      default:
        if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '1' && e <= '9'))
          fail("unsupported escape '\\" + std::string(1, static_cast<char>(e)) + "'");
        lit = e;  // escaped punctuation stands for itself
        return false;
    }
  }

  void set_property(Predicate& pred, const std::string& name) {
    static const char* const kNames[] = {"Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd",
                                         "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm",
                                         "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};
    if (name.size() == 1 && std::string_view("LMNPSZC").find(name[0]) != std::string_view::npos) {
      pred.kind = Predicate::kMajor;
      pred.major = name[0];
      return;
    }
    static const std::pair<const char*, char> kLong[] = {
        {"Letter", 'L'}, {"Mark", 'M'},      {"Number", 'N'}, {"Punctuation", 'P'},
        {"Symbol", 'S'}, {"Separator", 'Z'}, {"Other", 'C'}};
    for (auto& [n, m] : kLong)
      if (name == n) {
        pred.kind = Predicate::kMajor;
        pred.major = m;
        return;
      }
    for (int k = 0; k < 30; ++k)
      if (name == kNames[k]) {
        pred.kind = Predicate::kCategory;
        pred.category = static_cast<unicode::Category>(k);
        return;
      }
    fail("unsupported property \\p{" + name + "}");
  }

  CharClass parse_class(bool icase) {
    CharClass cls;
    cls.icase = icase;
    if (peek() == '^') ++i_, cls.negated = true;
    bool first = true;
    while (true) {
      if (at_end()) fail("unterminated character class");
      uint32_t c = next();
      if (c == ']' && !first) break;
      first = false;
      uint32_t lo;
      if (c == '\\') {
        Predicate pred{};
        if (parse_escape(pred, lo)) {
          cls.predicates.push_back(pred);
          continue;
        }
      } else if (c == '[') {
        fail("nested or POSIX character classes are not supported");
      } else {
        lo = c;
      }
      uint32_t hi = lo;
      if (peek() == '-' && peek(1) != ']' && i_ + 1 < p_.size()) {
        ++i_;
        uint32_t h = next();
        if (h == '\\') {
          Predicate pred{};
          if (parse_escape(pred, hi)) fail("class escape as a range end");
        } else {
          hi = h;
        }
        if (hi < lo) fail("reversed range in character class");
      }
      cls.ranges.emplace_back(lo, hi);
    }
    return cls;
  }

  std::string_view src_;
  std::vector<uint32_t> p_;
  size_t i_ = 0;
  int depth_ = 0;  // parse_alt calls open: the pattern's top level and its groups
};

// A borrowed "rest of the pattern" callable: no allocation per step.
struct Cont {
  bool (*fn)(const void*, size_t);
  const void* obj;
  bool operator()(size_t i) const { return fn(obj, i); }
};
template <class F>
Cont cont(const F& f) {
  return {[](const void* o, size_t i) { return (*static_cast<const F*>(o))(i); }, &f};
}

// A pattern comes with the model (tokenizer.json) and the text with the user, so matching is bounded
// in both ways a backtracking matcher can run away: time (nested quantifiers such as (a*)*b take
// exponential time on a run of a's) and stack (a repeated group, (?:ab)+, nests one call per
// repetition, and 100000 of them overflowed the stack). The real pre-tokenizer patterns take a few
// steps per character and nest no deeper than the pattern.
constexpr uint64_t kMaxStepsPerChar = 1000;
constexpr uint64_t kMinSteps = 10'000'000;  // ~0.1 s
constexpr int kMaxDepth = 10'000;           // nested match calls; ~30000 fit in an 8 MiB stack

class Matcher {
 public:
  Matcher(const std::vector<uint32_t>& t, const std::string& pattern)
      : t_(t), pattern_(pattern), budget_(kMinSteps + kMaxStepsPerChar * t.size()) {}

  bool match(const Node* n, size_t i, Cont k) const {
    if (++steps_ > budget_)
      throw Error("tokenizer regex '" + shown_pattern(pattern_) + "': more than " + std::to_string(budget_) +
                  " steps on a text of " + std::to_string(t_.size()) +
                  " characters (backtracking without end)");
    if (depth_ >= kMaxDepth)
      throw Error("tokenizer regex '" + shown_pattern(pattern_) + "': more than " +
                  std::to_string(kMaxDepth) + " nested steps at character " + std::to_string(i) +
                  " (a group repeated over a long run)");
    ++depth_;
    const bool matched = match_node(n, i, k);
    --depth_;
    return matched;
  }

 private:
  bool match_node(const Node* n, size_t i, Cont k) const {
    switch (n->kind) {
      case Node::kEmpty:
        return k(i);
      case Node::kChar:
      case Node::kClass:
      case Node::kAny:
        return i < t_.size() && n->test(t_[i]) && k(i + 1);
      case Node::kSeq:
        return seq(n, 0, i, k);
      case Node::kAlt:
        for (auto& kid : n->kids)
          if (match(kid.get(), i, k)) return true;
        return false;
      case Node::kRepeat:
        if (n->kids[0]->single_char()) return repeat_single(n, i, k);
        return repeat(n, 0, i, k);
      case Node::kLook: {
        auto accept = [](size_t) { return true; };
        bool found = match(n->kids[0].get(), i, cont(accept));
        return found != n->negative && k(i);
      }
      case Node::kLineStart:
        return (i == 0 || t_[i - 1] == '\n') && k(i);
      case Node::kLineEnd:
        return (i == t_.size() || t_[i] == '\n') && k(i);
      case Node::kTextStart:
        return i == 0 && k(i);
      case Node::kTextEnd:
        return i == t_.size() && k(i);
    }
    return false;
  }

  bool seq(const Node* n, size_t idx, size_t i, Cont k) const {
    if (idx == n->kids.size()) return k(i);
    auto rest = [&](size_t j) { return seq(n, idx + 1, j, k); };
    return match(n->kids[idx].get(), i, cont(rest));
  }

  bool repeat_single(const Node* n, size_t i, Cont k) const {
    const Node* kid = n->kids[0].get();
    size_t limit = n->max < 0 ? t_.size() - i : std::min<size_t>(n->max, t_.size() - i);
    size_t mn = n->min;
    if (n->greedy) {
      size_t c = 0;
      while (c < limit && kid->test(t_[i + c])) ++c;
      for (size_t m = c + 1; m-- > mn;)
        if (k(i + m)) return true;
      return false;
    }
    for (size_t m = 0; m <= limit; ++m) {
      if (m >= mn && k(i + m)) return true;
      if (m == limit || !kid->test(t_[i + m])) return false;
    }
    return false;
  }

  bool repeat(const Node* n, int count, size_t i, Cont k) const {
    bool can_more = n->max < 0 || count < n->max;
    auto more = [&](size_t j) {
      if (j == i && count >= n->min) return false;  // an empty iteration makes no progress
      return repeat(n, count + 1, j, k);
    };
    if (n->greedy) {
      if (can_more && match(n->kids[0].get(), i, cont(more))) return true;
      return count >= n->min && k(i);
    }
    if (count >= n->min && k(i)) return true;
    return can_more && match(n->kids[0].get(), i, cont(more));
  }

  const std::vector<uint32_t>& t_;
  const std::string& pattern_;
  const uint64_t budget_;
  mutable uint64_t steps_ = 0;
  mutable int depth_ = 0;
};

}  // namespace

Regex::Regex(std::string_view pattern) : pattern_(pattern), root_(Parser(pattern).parse()) {}
Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::vector<std::pair<size_t, size_t>> Regex::find_all(const std::vector<uint32_t>& text) const {
  std::vector<std::pair<size_t, size_t>> out;
  Matcher m(text, pattern_);
  size_t end = 0;
  auto record = [&](size_t j) {
    end = j;
    return true;
  };
  for (size_t start = 0; start < text.size();) {
    if (m.match(root_.get(), start, cont(record)) && end > start) {
      out.emplace_back(start, end);
      start = end;
    } else {
      ++start;
    }
  }
  return out;
}

bool Regex::full_match(const std::vector<uint32_t>& text) const {
  Matcher m(text, pattern_);
  auto at_end = [&](size_t j) { return j == text.size(); };
  return m.match(root_.get(), 0, cont(at_end));
}

}  // namespace mx8::runtime
