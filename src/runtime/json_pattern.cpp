// A JSON Schema pattern as a byte automaton: see json_pattern.h. The pattern is parsed into a tree of
// code-point sets, sequences, alternatives and repeats; the tree becomes an automaton with empty moves
// over bytes (each set written as the UTF-8 byte ranges of its code points), and that one a
// deterministic automaton by the subset construction. States from which no match can be reached are
// cut off, so next() says -1 as soon as a byte rules every match out.
#include "mx8/runtime/json_pattern.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <map>
#include <tuple>

#include "mx8/error.h"

namespace mx8::runtime {
namespace {

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;  // code points, sorted, disjoint
constexpr uint32_t kMaxCode = 0x10FFFF;

Ranges normalized(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& [lo, hi] : r)
    if (!out.empty() && lo <= out.back().second + 1)
      out.back().second = std::max(out.back().second, hi);
    else
      out.push_back({lo, hi});
  return out;
}

Ranges complement(const Ranges& r) {
  Ranges out;
  uint32_t next = 0;
  for (const auto& [lo, hi] : r) {
    if (lo > next) out.push_back({next, lo - 1});
    next = hi + 1;
  }
  if (next <= kMaxCode) out.push_back({next, kMaxCode});
  return out;
}

Ranges intersect(const Ranges& a, const Ranges& b) {
  Ranges out;
  for (const auto& [alo, ahi] : a)
    for (const auto& [blo, bhi] : b)
      if (std::max(alo, blo) <= std::min(ahi, bhi)) out.push_back({std::max(alo, blo), std::min(ahi, bhi)});
  return normalized(out);
}

const Ranges kDigits = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
// ECMA-262's WhiteSpace and LineTerminator.
const Ranges kSpace = {{0x09, 0x0D},     {0x20, 0x20},     {0xA0, 0xA0},     {0x1680, 0x1680},
                       {0x2000, 0x200A}, {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F},
                       {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
const Ranges kLineEnds = {{0x0A, 0x0A}, {0x0D, 0x0D}, {0x2028, 0x2029}};
// What a JSON string can hold with the escapes the matcher takes: no surrogate, no control character
// but \b \t \n \f \r.
const Ranges kWritable = {{0x08, 0x0A}, {0x0C, 0x0D}, {0x20, 0xD7FF}, {0xE000, kMaxCode}};

struct Re {
  enum class Kind { set, sequence, alternatives, repeat } kind = Kind::sequence;
  Ranges set;
  std::vector<Re> parts;  // sequence, alternatives; repeat: the one repeated
  int min = 0, max = -1;  // repeat (-1: no limit)
};

class Parser {
 public:
  // `p` is the pattern's body (its anchors taken off); errors name `source`, all of it.
  Parser(std::string_view p, std::string_view source) : p_(p), source_(source) {}

  Re parse() {
    Re r = alternatives();
    if (more()) fail("an unmatched )");
    return r;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("JSON schema: pattern \"" + std::string(source_) + "\": " + what);
  }

 private:
  bool more() const { return i_ < p_.size(); }
  bool at(char c) const { return more() && p_[i_] == c; }

  // The code point of the UTF-8 character at i_ (past it).
  uint32_t code_point() {
    const uint8_t b = uint8_t(p_[i_++]);
    const int extra = b < 0x80 ? 0 : b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : 1;
    uint32_t c = extra == 0 ? b : b & (0x3F >> extra);
    for (int k = 0; k < extra && more(); ++k) c = (c << 6) | (uint8_t(p_[i_++]) & 0x3F);
    return c;
  }

  Re alternatives() {
    Re r{Re::Kind::alternatives, {}, {sequence()}};
    while (at('|')) {
      ++i_;
      r.parts.push_back(sequence());
    }
    return r.parts.size() == 1 ? std::move(r.parts[0]) : r;
  }

  Re sequence() {
    Re r;
    while (more() && !at('|') && !at(')')) r.parts.push_back(quantified());
    return r;
  }

  // {n}, {n,} or {n,m} at i_ (past it), or false with i_ where it was (a '{' that is a character).
  bool braces(int& min, int& max) {
    size_t j = i_ + 1;
    auto number = [&](int& v) {
      const size_t start = j;
      v = 0;
      while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') v = std::min(v * 10 + (p_[j++] - '0'), 100000);
      return j > start;
    };
    if (!number(min)) return false;
    max = min;
    if (j < p_.size() && p_[j] == ',') {
      ++j;
      if (!number(max)) max = -1;
    }
    if (j >= p_.size() || p_[j] != '}') return false;
    i_ = j + 1;
    return true;
  }

  bool quantifier(int& min, int& max) {
    if (!more()) return false;
    const char c = p_[i_];
    if (c == '*' || c == '+' || c == '?') {
      ++i_;
      min = c == '+';
      max = c == '?' ? 1 : -1;
      return true;
    }
    return c == '{' && braces(min, max);
  }

  Re quantified() {
    Re atom = this->atom();
    int min = 0, max = 0;
    if (!quantifier(min, max)) return atom;
    if (at('?')) ++i_;  // lazy: the same strings
    if (max >= 0 && max < min) fail("{n,m} with m below n");
    if (min > 1000 || max > 1000) fail("a repeat count above 1000 is not supported");
    int a = 0, b = 0;
    if (quantifier(a, b)) fail("a quantifier after a quantifier");
    return Re{Re::Kind::repeat, {}, {std::move(atom)}, min, max};
  }

  Re atom() {
    const char c = p_[i_];
    if (c == '(') {
      ++i_;
      if (at('?')) {
        if (p_.substr(i_, 2) == "?:") {
          i_ += 2;
        } else if (p_.substr(i_, 2) == "?<" && i_ + 2 < p_.size() && p_[i_ + 2] != '=' && p_[i_ + 2] != '!') {
          const size_t close = p_.find('>', i_);
          if (close == std::string_view::npos) fail("an unclosed group name");
          i_ = close + 1;
        } else {
          fail("lookaround ((?=, (?!, (?<=, (?<!) is not supported");
        }
      }
      Re r = alternatives();
      if (!at(')')) fail("an unclosed (");
      ++i_;
      return r;
    }
    if (c == '[') return set(char_class());
    if (c == '.') {
      ++i_;
      return set(complement(kLineEnds));
    }
    if (c == '\\') {
      ++i_;
      return set(escape(false));
    }
    if (c == '^' || c == '$')
      fail("^ or $ inside the pattern is not supported (^ at its start and $ at its end are)");
    if (c == '*' || c == '+' || c == '?') fail("a quantifier with nothing before it");
    int min = 0, max = 0;
    if (c == '{' && braces(min, max)) fail("a quantifier with nothing before it");
    const uint32_t cp = code_point();
    return set({{cp, cp}});
  }

  static Re set(Ranges r) { return Re{Re::Kind::set, std::move(r), {}}; }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int k = 0; k < digits; ++k) {
      if (!more() || !isxdigit(uint8_t(p_[i_]))) fail("a \\x or \\u escape without its hex digits");
      const char h = p_[i_++];
      v = v * 16 + uint32_t(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
    }
    return v;
  }

  Ranges escape(bool in_class) {
    if (!more()) fail("a \\ at the end");
    const char c = p_[i_++];
    auto one = [](uint32_t cp) { return Ranges{{cp, cp}}; };
    switch (c) {
      case 'd':
        return kDigits;
      case 'D':
        return complement(kDigits);
      case 'w':
        return kWord;
      case 'W':
        return complement(kWord);
      case 's':
        return kSpace;
      case 'S':
        return complement(kSpace);
      case 't':
        return one(0x09);
      case 'n':
        return one(0x0A);
      case 'v':
        return one(0x0B);
      case 'f':
        return one(0x0C);
      case 'r':
        return one(0x0D);
      case '0':
        if (more() && p_[i_] >= '0' && p_[i_] <= '9') fail("an octal escape is not supported");
        return one(0);
      case 'x':
        return one(hex(2));
      case 'u':
        if (at('{')) fail("\\u{...} is not supported");
        return one(hex(4));
      case 'b':
        if (in_class) return one(0x08);
        fail("\\b (a word boundary) is not supported");
      case 'B':
        fail("\\B (a word boundary) is not supported");
      case 'p':
      case 'P':
        fail("\\p{...} (a Unicode property) is not supported");
      default:
        break;
    }
    if ((c >= '1' && c <= '9')) fail("a backreference is not supported");
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      fail(std::string("the escape \\") + c + " is not supported");
    --i_;
    const uint32_t cp = code_point();  // punctuation or any other character: itself
    return one(cp);
  }

  Ranges char_class() {
    ++i_;  // [
    const bool negated = at('^');
    if (negated) ++i_;
    Ranges r;
    for (;;) {
      if (!more()) fail("an unclosed [");
      if (at(']')) {
        ++i_;
        break;
      }
      const Ranges a = class_atom();
      if (at('-') && i_ + 1 < p_.size() && p_[i_ + 1] != ']' && single(a)) {
        ++i_;
        const Ranges b = class_atom();
        if (!single(b)) fail("a range in a class that ends at a class escape is not supported");
        if (b[0].first < a[0].first) fail("a range in a class out of order");
        r.push_back({a[0].first, b[0].first});
      } else {
        r.insert(r.end(), a.begin(), a.end());
      }
    }
    r = normalized(r);
    return negated ? complement(r) : r;
  }

  Ranges class_atom() {
    if (at('\\')) {
      ++i_;
      return escape(true);
    }
    const uint32_t cp = code_point();
    return {{cp, cp}};
  }
  static bool single(const Ranges& r) { return r.size() == 1 && r[0].first == r[0].second; }

  std::string_view p_, source_;
  size_t i_ = 0;
};

// The UTF-8 forms of the code points lo..hi, all of `n` bytes: byte ranges, one per position, such
// that every combination is one of them.
void utf8_ranges(uint32_t lo, uint32_t hi, int n,
                 std::vector<std::vector<std::pair<uint8_t, uint8_t>>>& out) {
  for (int i = 1; i < n; ++i) {
    const uint32_t m = (1u << (6 * i)) - 1;  // the bits of the last i bytes
    if ((lo & ~m) == (hi & ~m)) continue;
    if ((lo & m) != 0) {
      utf8_ranges(lo, lo | m, n, out);
      utf8_ranges((lo | m) + 1, hi, n, out);
      return;
    }
    if ((hi & m) != m) {
      utf8_ranges(lo, (hi & ~m) - 1, n, out);
      utf8_ranges(hi & ~m, hi, n, out);
      return;
    }
  }
  auto encode = [n](uint32_t c) {
    std::array<uint8_t, 4> b{};
    if (n == 1) {
      b[0] = uint8_t(c);
    } else {
      for (int k = n - 1; k > 0; --k, c >>= 6) b[size_t(k)] = uint8_t(0x80 | (c & 0x3F));
      b[0] = uint8_t((0xF00u >> n) | c);  // the lead byte: n ones, a zero, then c's top bits
    }
    return b;
  };
  const auto a = encode(lo), z = encode(hi);
  std::vector<std::pair<uint8_t, uint8_t>> seq;
  for (int k = 0; k < n; ++k) seq.push_back({a[size_t(k)], z[size_t(k)]});
  out.push_back(std::move(seq));
}

class Nfa {
 public:
  struct State {
    std::vector<int32_t> empty;                                // moves on no byte
    std::vector<std::tuple<uint8_t, uint8_t, int32_t>> bytes;  // lo, hi, to
  };
  explicit Nfa(const Parser& p) : parser_(p) {}
  std::vector<State> s;

  int32_t add() {
    if (s.size() >= StringPattern::kMaxNfaStates)
      parser_.fail("more than " + std::to_string(StringPattern::kMaxNfaStates) + " automaton states");
    s.emplace_back();
    return int32_t(s.size() - 1);
  }

  // Adds moves for `r` from state `from`; returns the state they end in.
  int32_t build(const Re& r, int32_t from) {
    switch (r.kind) {
      case Re::Kind::set: {
        const int32_t end = add();
        for (const auto& [lo, hi] : intersect(r.set, kWritable)) {
          static constexpr uint32_t kLast[] = {0x7F, 0x7FF, 0xFFFF, kMaxCode};
          uint32_t first = 0;
          for (int n = 1; n <= 4; first = kLast[n - 1] + 1, ++n) {
            const uint32_t a = std::max(lo, first), z = std::min(hi, kLast[n - 1]);
            if (a > z) continue;
            std::vector<std::vector<std::pair<uint8_t, uint8_t>>> seqs;
            utf8_ranges(a, z, n, seqs);
            for (const auto& seq : seqs) {
              int32_t at = from;
              for (size_t k = 0; k < seq.size(); ++k) {
                const int32_t to = k + 1 == seq.size() ? end : add();
                s[size_t(at)].bytes.push_back({seq[k].first, seq[k].second, to});
                at = to;
              }
            }
          }
        }
        return end;
      }
      case Re::Kind::sequence:
        for (const Re& p : r.parts) from = build(p, from);
        return from;
      case Re::Kind::alternatives: {
        const int32_t end = add();
        for (const Re& p : r.parts) s[size_t(build(p, from))].empty.push_back(end);
        return end;
      }
      case Re::Kind::repeat: {
        int32_t at = from;
        for (int k = 0; k < r.min; ++k) at = build(r.parts[0], at);
        if (r.max < 0) {  // a loop through a state of its own
          const int32_t loop = add();
          s[size_t(at)].empty.push_back(loop);
          s[size_t(build(r.parts[0], loop))].empty.push_back(loop);
          return loop;
        }
        const int32_t end = add();
        s[size_t(at)].empty.push_back(end);
        for (int k = r.min; k < r.max; ++k) {
          at = build(r.parts[0], at);
          s[size_t(at)].empty.push_back(end);
        }
        return end;
      }
    }
    return from;
  }

  // `set` and every state it reaches by empty moves, sorted.
  std::vector<int32_t> closure(std::vector<int32_t> set) const {
    std::vector<uint8_t> seen(s.size());
    for (int32_t q : set) seen[size_t(q)] = 1;
    for (size_t k = 0; k < set.size(); ++k)
      for (int32_t t : s[size_t(set[k])].empty)
        if (!seen[size_t(t)]) seen[size_t(t)] = 1, set.push_back(t);
    std::sort(set.begin(), set.end());
    return set;
  }

 private:
  const Parser& parser_;
};

}  // namespace

StringPattern::StringPattern(std::string_view pattern) : source_(pattern) {
  // Anchors: ^ first and $ last (not escaped) pin the match to the ends; without, it floats.
  std::string_view body = pattern;
  const bool from_start = !body.empty() && body.front() == '^';
  if (from_start) body.remove_prefix(1);
  size_t backslashes = 0;
  while (body.size() > 1 + backslashes && body[body.size() - 2 - backslashes] == '\\') ++backslashes;
  const bool to_end = !body.empty() && body.back() == '$' && backslashes % 2 == 0;
  if (to_end) body.remove_suffix(1);
  Parser parser(body, pattern);
  const Re re = parser.parse();
  if ((from_start || to_end) && re.kind == Re::Kind::alternatives)
    parser.fail("^ or $ beside a | outside a group is not supported");

  Nfa nfa(parser);
  const int32_t start = nfa.add();
  int32_t at = start;
  const Re anything{Re::Kind::repeat, {}, {Re{Re::Kind::set, {{0, kMaxCode}}, {}}}, 0, -1};
  if (!from_start) at = nfa.build(anything, at);
  at = nfa.build(re, at);
  if (!to_end) at = nfa.build(anything, at);
  const int32_t accept = at;

  // Subset construction: each state a sorted set of the automaton's states.
  std::map<std::vector<int32_t>, int32_t> ids;
  std::vector<std::vector<int32_t>> sets = {nfa.closure({start})};
  ids[sets[0]] = 0;
  for (size_t d = 0; d < sets.size(); ++d) {
    // Bytes where the moves out of this set start or stop: between two of them, the same targets.
    std::vector<int> cuts = {0, 256};
    for (int32_t q : sets[d])
      for (const auto& [lo, hi, to] : nfa.s[size_t(q)].bytes) cuts.insert(cuts.end(), {int(lo), int(hi) + 1});
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    table_.resize((d + 1) * 256, -1);
    for (size_t c = 0; c + 1 < cuts.size(); ++c) {
      std::vector<int32_t> targets;
      for (int32_t q : sets[d])
        for (const auto& [lo, hi, to] : nfa.s[size_t(q)].bytes)
          if (lo <= cuts[c] && cuts[c] <= hi) targets.push_back(to);
      if (targets.empty()) continue;
      targets = nfa.closure(std::move(targets));
      auto [it, added] = ids.emplace(targets, int32_t(sets.size()));
      if (added) {
        if (sets.size() >= kMaxStates)
          parser.fail("more than " + std::to_string(kMaxStates) + " automaton states after determinizing");
        sets.push_back(std::move(targets));
      }
      std::fill(table_.begin() + ptrdiff_t(d * 256 + size_t(cuts[c])),
                table_.begin() + ptrdiff_t(d * 256 + size_t(cuts[c + 1])), it->second);
    }
  }
  table_.resize(sets.size() * 256, -1);
  accepting_.resize(sets.size());
  for (size_t d = 0; d < sets.size(); ++d)
    accepting_[d] = std::binary_search(sets[d].begin(), sets[d].end(), accept);

  // Cut off the states from which no match can be reached.
  std::vector<std::vector<int32_t>> into(sets.size());
  for (size_t d = 0; d < sets.size(); ++d)
    for (int b = 0; b < 256; ++b)
      if (const int32_t t = table_[d * 256 + size_t(b)]; t >= 0) into[size_t(t)].push_back(int32_t(d));
  std::vector<uint8_t> live(accepting_);
  std::vector<int32_t> work;
  for (size_t d = 0; d < sets.size(); ++d)
    if (live[d]) work.push_back(int32_t(d));
  while (!work.empty()) {
    const int32_t t = work.back();
    work.pop_back();
    for (int32_t d : into[size_t(t)])
      if (!live[size_t(d)]) live[size_t(d)] = 1, work.push_back(d);
  }
  if (!live[kStart])
    throw Error("JSON schema: pattern \"" + source_ + "\" matches no string JSON can hold here");
  for (int32_t& t : table_)
    if (t >= 0 && !live[size_t(t)]) t = -1;
}

}  // namespace mx8::runtime
