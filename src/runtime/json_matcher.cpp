// The JSON matcher: see json_matcher.h.
#include "mx8/runtime/json_matcher.h"

#include <algorithm>
#include <cstdint>

#include "mx8/error.h"

namespace mx8::runtime {
namespace {

using Kind = JsonSchema::Kind;

// Frame kinds, and the states of each.
enum : uint8_t { kDocument, kObject, kArray, kString, kNumber, kLiteral, kCall };
// document: kText is free text that watches for a call's opening marker; a call is kCallGap (the
// marker written), kInCall (its object), kCallEnd (its closing marker), then kText again or, where a
// value was the alternative, kCallsDone (another call, or the end).
enum : uint8_t {
  kStart,
  kPrelude,
  kThink,
  kValue,
  kFree,
  kDone,
  kText,
  kCallGap,
  kInCall,
  kCallEnd,
  kCallsDone
};
enum : uint8_t { kOpen, kFirst, kKey, kKeyString, kColon, kMember, kAfter, kNext, kItem };  // object, array
enum : uint8_t { kBody = 1, kEscape, kHex, kLowBackslash, kLowU };                          // string
enum : uint8_t { kMinus = 1, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpDigits };        // number
enum : uint8_t {
  kNameKey = 1,
  kNameColon,
  kName,
  kComma,
  kArgumentsKey,
  kArgumentsColon,
  kArguments,
  kCallClose
};  // call

constexpr std::string_view kThinkOpen = "<think>", kThinkClose = "</think>";
constexpr std::string_view kNameKeyText = "\"name\"";

bool is_space(uint8_t b) {
  return b == ' ' || b == '\n' || b == '\r' || b == '\t';
}
bool is_digit(uint8_t b) {
  return b >= '0' && b <= '9';
}
bool is_hex(uint8_t b) {
  return is_digit(b) || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
}

// Narrows the sorted candidates [lo, hi), which share their first `pos` bytes, to those whose next byte is
// `b` (contiguous, as they are sorted); false when none is. `skip` rules candidates out.
template <class Skip>
bool narrow(const std::vector<std::string>& c, uint32_t& lo, uint32_t& hi, uint32_t pos, uint8_t b,
            Skip skip) {
  uint32_t first = hi, last = hi;
  for (uint32_t i = lo; i < hi; ++i) {
    const bool match = c[i].size() > pos && uint8_t(c[i][pos]) == b;
    if (match && first == hi) first = i;
    if (!match && first != hi) {
      last = i;
      break;
    }
  }
  bool any = false;
  for (uint32_t i = first; i < last && !any; ++i) any = !skip(i);
  if (!any) return false;
  lo = first;
  hi = last;
  return true;
}

// How much of `marker` the text ends with, after text that ended with its first `pos` bytes and then `b`
// (the longest prefix of the marker that is a suffix of marker[0, pos) + b).
uint32_t marker_progress(std::string_view marker, uint32_t pos, uint8_t b) {
  // The last k bytes of marker[0, pos) + b are marker[pos - k + 1, pos) and b.
  for (size_t k = std::min<size_t>(pos + 1, marker.size()); k > 0; --k)
    if (uint8_t(marker[k - 1]) == b && marker.substr(pos + 1 - k, k - 1) == marker.substr(0, k - 1))
      return uint32_t(k);
  return 0;
}

}  // namespace

JsonMatcher::JsonMatcher(std::shared_ptr<const JsonSchema> schema, Prelude prelude)
    : schema_(std::move(schema)), prelude_(std::move(prelude)) {
  if (prelude_.may_think) openers_.emplace_back(kThinkOpen);
  if (schema_->root() < 0 && schema_->call() < 0)
    throw Error("JSON output: a schema with neither a value nor tool calls holds nothing");
  std::vector<std::string> markers = prelude_.free_after;
  if (schema_->call() >= 0) {
    // Calls with bare names may run to the next call or the end (Mistral's); an object needs both.
    const bool bare_names = schema_->node(schema_->call()).arguments_key.empty();
    if (prelude_.call_open.empty() ? !prelude_.call_close.empty()
                                   : prelude_.call_close.empty() && !bare_names)
      throw Error("JSON output: tool calls with a marker on one side only");
    if (prelude_.call_open.empty() && schema_->root() >= 0 &&
        json_value_starts_with(*schema_, schema_->root(), '{'))
      throw Error("JSON output: calls without markers and a value that may be an object start alike");
    if (!prelude_.call_open.empty()) markers.push_back(prelude_.call_open);
  }
  for (const std::string& m : markers) {
    if (m.empty()) throw Error("JSON output: an empty tool-call marker");
    if (is_space(uint8_t(m[0])) ||
        (schema_->root() >= 0 && json_value_starts_with(*schema_, schema_->root(), uint8_t(m[0]))))
      throw Error("JSON output: the tool-call marker \"" + m + "\" starts like the JSON value itself");
    openers_.push_back(m);
  }
  std::sort(openers_.begin(), openers_.end());
  openers_.erase(std::unique(openers_.begin(), openers_.end()), openers_.end());
  stack_[0] = Frame{};
  stack_[0].kind = kDocument;
  stack_[0].state = prelude_.inside_thinking ? kThink : kStart;
  stack_[0].used = prelude_.inside_thinking;  // bit 0: a <think> block was opened (no second one)
  depth_ = 1;
}

void JsonMatcher::save(Snapshot& s) const {
  s.depth = depth_;
  std::copy(stack_.begin(), stack_.begin() + depth_, s.frames.begin());
}

void JsonMatcher::restore(const Snapshot& s) {
  depth_ = s.depth;
  std::copy(s.frames.begin(), s.frames.begin() + depth_, stack_.begin());
}

bool JsonMatcher::feed(uint8_t b) {
  for (;;) {
    const Step s = step(stack_[size_t(depth_ - 1)], b);
    if (s != Step::ended) return s == Step::taken;
    // The top frame (a number or literal) ended before `b`: close it and give `b` to its parent.
    --depth_;
    value_done(stack_[size_t(depth_ - 1)]);
  }
}

bool JsonMatcher::complete() const {
  const Frame& top = stack_[size_t(depth_ - 1)];
  if (depth_ == 1)
    return top.state == kDone || top.state == kFree || top.state == kText ||
           (top.state == kCallsDone && top.pos == 0) || (top.state == kStart && schema_->root() < 0);
  return depth_ == 2 && ends_here(top) && top.kind != kCall;
}

bool JsonMatcher::free() const {
  return depth_ == 1 && (stack_[0].state == kThink || stack_[0].state == kFree);
}

int JsonMatcher::text_watch() const {
  const Frame& top = stack_[0];
  return depth_ == 1 && top.state == kText ? uint8_t(prelude_.call_open.back()) : -1;
}

int64_t JsonMatcher::plain_string_room() const {
  const Frame& top = stack_[size_t(depth_ - 1)];
  if (top.kind != kString || top.state != kBody || top.utf8 != 0 || schema_->node(top.node).pattern)
    return -1;
  const int64_t max = schema_->node(top.node).max;
  return max < 0 ? INT64_MAX : max - top.count;
}

bool JsonMatcher::ends_here(const Frame& f) const {
  if (f.kind == kNumber) {
    if (f.state != kZero && f.state != kInt && f.state != kFrac && f.state != kExpDigits) return false;
    const JsonSchema::Node& n = schema_->node(f.node);
    const int64_t v = f.space ? -int64_t(f.used) : int64_t(f.used);
    return !n.ranged || (v >= n.low && v <= n.high && (n.step == 0 || v % n.step == 0));
  }
  if (f.kind == kLiteral) return schema_->node(f.node).literals[f.lo].size() == f.pos;
  return false;
}

JsonMatcher::Step JsonMatcher::step(Frame& f, uint8_t b) {
  switch (f.kind) {
    case kDocument:
      return document(f, b);
    case kObject:
      return object(f, b);
    case kArray:
      return array(f, b);
    case kString:
      return string(f, b);
    case kNumber:
      return number(f, b);
    case kCall:
      return call(f, b);
    default:
      return literal(f, b);
  }
}

JsonMatcher::Step JsonMatcher::blank(Frame& f, uint8_t b) const {
  // Counted per gap: line breaks in `utf8` (a string's field, free in other frames), blanks in `space`.
  // Inside the value a gap is nothing, one blank, or a line break and up to kIndent blanks per level;
  // before the value or a call two line breaks (after a </think>) and one blank; after it one line break.
  if (b == '\r') return Step::rejected;
  const bool line = b == '\n';
  if (f.kind == kDocument) {
    const bool before = f.state == kStart || f.state == kCallGap;  // before a value or a call
    if (line) return ++f.utf8 <= (before ? 2 : 1) ? Step::taken : Step::rejected;
    return before && ++f.space <= 1 ? Step::taken : Step::rejected;
  }
  if (f.utf8 == 0) {  // no line break yet: one blank, or a line break with none before it
    if (f.space > 0) return Step::rejected;
    (line ? f.utf8 : f.space) = 1;
    return Step::taken;
  }
  return !line && ++f.space <= kIndent * (depth_ - 1) ? Step::taken : Step::rejected;
}

// Whitespace where JSON allows it (bounded by blank()); any other byte ends the gap.
#define MX8_SPACE(f, b)                \
  if (is_space(b)) return blank(f, b); \
  (f).space = (f).utf8 = 0

JsonMatcher::Step JsonMatcher::open_value(int32_t node, uint8_t b) {
  while (schema_->node(node).kind == Kind::choice) {
    node = schema_->node(node).by_first_byte[b];
    if (node < 0) return Step::rejected;
  }
  if (schema_->node(node).kind == Kind::any) {
    node = b == '{'                           ? JsonSchema::kAnyObject
           : b == '['                         ? JsonSchema::kAnyArray
           : b == '"'                         ? JsonSchema::kAnyString
           : b == 't' || b == 'f' || b == 'n' ? JsonSchema::kAnyLiteral
           : b == '-' || is_digit(b)          ? JsonSchema::kAnyNumber
                                              : -1;
    if (node < 0) return Step::rejected;
  }
  if (depth_ >= kMaxDepth) return Step::rejected;
  const JsonSchema::Node& n = schema_->node(node);
  Frame& f = stack_[size_t(depth_++)];
  f = Frame{};
  f.node = node;
  switch (n.kind) {
    case Kind::object:
      f.kind = kObject;
      break;
    case Kind::array:
      f.kind = kArray;
      break;
    case Kind::string:
      f.kind = kString;
      break;
    case Kind::literal:
      f.kind = kLiteral;
      f.hi = uint32_t(n.literals.size());
      break;
    case Kind::call:
      f.kind = kCall;
      if (n.arguments_key.empty()) {  // bare names: the call starts with one
        f.state = kName;
        f.hi = uint32_t(n.literals.size());
      }
      break;
    default:
      f.kind = kNumber;
      break;
  }
  return step(f, b);
}

void JsonMatcher::value_done(Frame& parent) {
  parent.space = parent.utf8 = 0;
  switch (parent.kind) {
    case kDocument:
      // A call ends with its closing marker, or (Llama 3: none) is done.
      parent.state = parent.state != kInCall ? kDone : prelude_.call_close.empty() ? kCallsDone : kCallEnd;
      parent.pos = 0;
      break;
    case kCall:
      if (schema_->node(parent.node).arguments_key.empty()) {  // a bare-name call ends with its arguments
        --depth_;
        value_done(stack_[size_t(depth_ - 1)]);
        return;
      }
      parent.state = kCallClose;
      break;
    case kObject:
      parent.state = parent.state == kKeyString ? kColon : kAfter;
      break;
    default:  // an array
      parent.count++;
      parent.state = kAfter;
      break;
  }
}

JsonMatcher::Step JsonMatcher::document(Frame& f, uint8_t b) {
  const auto thought = [&](uint32_t i) { return (f.used & 1) && openers_[i] == kThinkOpen; };
  const bool text = schema_->root() < 0;  // no value: the reply is free text, with calls in it
  // Text that ends with the first `pos` bytes of the call marker, then `b`.
  const auto in_text = [&](uint32_t pos) {
    f.pos = marker_progress(prelude_.call_open, pos, b);
    f.state = kText;
    if (f.pos == prelude_.call_open.size()) {
      f.state = kCallGap;
      f.pos = f.space = f.utf8 = 0;
    }
    return Step::taken;
  };
  // Calls without markers (Llama 3: the reply's first character opens them).
  const bool bare = schema_->call() >= 0 && prelude_.call_open.empty();
  switch (f.state) {
    case kStart:
      if (!text || bare) MX8_SPACE(f, b);
      f.lo = 0;
      f.hi = uint32_t(openers_.size());
      if (narrow(openers_, f.lo, f.hi, 0, b, thought)) {
        f.state = kPrelude;
        f.pos = 1;
        return Step::taken;
      }
      if (bare && b == '{') {
        f.state = kInCall;
        return open_value(schema_->call(), b);
      }
      if (bare && text) {
        f.state = kFree;
        return Step::taken;
      }
      if (text) return in_text(0);
      f.state = kValue;
      return open_value(schema_->root(), b);
    case kPrelude:
      if (!narrow(openers_, f.lo, f.hi, f.pos, b, thought)) {
        if (!text) return Step::rejected;
        if (bare) {
          f.state = kFree;
          return Step::taken;
        }
        // Free text that began like a marker and is not one: how much of the call marker it ends with.
        uint32_t pos = 0;
        for (uint32_t i = 0; i < f.pos; ++i)
          pos = marker_progress(prelude_.call_open, pos, uint8_t(openers_[f.lo][i]));
        return in_text(pos);
      }
      if (openers_[f.lo].size() == ++f.pos) {  // a marker is written (markers are not each other's prefixes)
        const bool think = openers_[f.lo] == kThinkOpen;
        const bool call = !think && openers_[f.lo] == prelude_.call_open;
        f.state = think ? kThink : call ? kCallGap : kFree;
        f.used |= think;
        f.pos = f.space = f.utf8 = 0;
      }
      return Step::taken;
    case kText:
      return in_text(f.pos);
    case kCallGap:
      MX8_SPACE(f, b);
      f.state = kInCall;
      return open_value(schema_->call(), b);
    case kCallEnd:
      if (f.pos == 0 && !is_space(uint8_t(prelude_.call_close[0]))) {  // (DeepSeek-V3's starts with "\n```")
        MX8_SPACE(f, b);
      }
      if (b != uint8_t(prelude_.call_close[f.pos])) return Step::rejected;
      if (++f.pos == prelude_.call_close.size()) {
        f.state = text && !prelude_.calls_only && !prelude_.one_call ? kText : kCallsDone;
        f.pos = f.space = f.utf8 = 0;
      }
      return Step::taken;
    case kCallsDone:  // another call, or (whitespace aside) the end
      if (f.pos == 0) {
        MX8_SPACE(f, b);
      }
      if (prelude_.one_call) return Step::rejected;
      if (bare) {  // the next call after a ';' (and a gap), or right after the gap
        f.state = kCallGap;
        return b == ';' ? Step::taken : document(f, b);
      }
      if (b != uint8_t(prelude_.call_open[f.pos])) return Step::rejected;
      if (++f.pos == prelude_.call_open.size()) {
        f.state = kCallGap;
        f.pos = f.space = f.utf8 = 0;
      }
      return Step::taken;
    case kThink:
      f.pos = b == uint8_t(kThinkClose[f.pos]) ? f.pos + 1 : b == '<' ? 1 : 0;
      if (f.pos == kThinkClose.size()) {
        f.state = kStart;
        f.space = f.utf8 = 0;
      }
      return Step::taken;
    case kFree:
      return Step::taken;
    default:  // kDone
      MX8_SPACE(f, b);
      return Step::rejected;
  }
}

JsonMatcher::Step JsonMatcher::object(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = schema_->node(f.node);
  const bool listed = !n.properties.empty();
  const uint64_t all = n.properties.size() == 64 ? ~uint64_t(0) : (uint64_t(1) << n.properties.size()) - 1;
  const auto start_key = [&]() {
    if (listed) {
      f.state = kKey;
      f.lo = 0;
      f.hi = uint32_t(n.properties.size());
      f.pos = 1;  // every key starts with its quote
      return Step::taken;
    }
    if (n.values < 0) return Step::rejected;  // additionalProperties false: only {}
    f.state = kKeyString;
    return open_value(JsonSchema::kAnyString, b);
  };
  switch (f.state) {
    case kOpen:
      if (b != '{') return Step::rejected;
      f.state = kFirst;
      return Step::taken;
    case kFirst:
      MX8_SPACE(f, b);
      if (b == '}' && n.required == 0) break;
      return b == '"' ? start_key() : Step::rejected;
    case kNext:
      MX8_SPACE(f, b);
      return b == '"' ? start_key() : Step::rejected;
    case kKey: {
      const auto& props = n.properties;
      uint32_t first = f.hi, last = f.hi;
      for (uint32_t i = f.lo; i < f.hi; ++i) {
        const bool match = props[i].key.size() > f.pos && uint8_t(props[i].key[f.pos]) == b;
        if (match && first == f.hi) first = i;
        if (!match && first != f.hi) {
          last = i;
          break;
        }
      }
      bool unused = false;
      for (uint32_t i = first; i < last && !unused; ++i) unused = !(f.used >> i & 1);
      if (!unused) return Step::rejected;
      f.lo = first;
      f.hi = last;
      if (props[f.lo].key.size() == ++f.pos) {  // the closing quote: keys are not each other's prefixes
        f.used |= uint64_t(1) << f.lo;
        f.count = f.lo;
        f.state = kColon;
      }
      return Step::taken;
    }
    case kColon:
      MX8_SPACE(f, b);
      if (b != ':') return Step::rejected;
      f.state = kMember;
      return Step::taken;
    case kMember:
      MX8_SPACE(f, b);
      return open_value(listed ? n.properties[size_t(f.count)].node : n.values, b);
    case kAfter:
      MX8_SPACE(f, b);
      if (b == ',' && (!listed || f.used != all)) {
        f.state = kNext;
        return Step::taken;
      }
      if (b == '}' && (f.used & n.required) == n.required) break;
      return Step::rejected;
    default:
      return Step::rejected;
  }
  --depth_;  // '}'
  value_done(stack_[size_t(depth_ - 1)]);
  return Step::taken;
}

JsonMatcher::Step JsonMatcher::call(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = schema_->node(f.node);
  switch (f.state) {
    case kOpen:
      if (b != '{') return Step::rejected;
      f.state = kNameKey;
      return Step::taken;
    case kNameKey:
    case kArgumentsKey: {
      const std::string_view key = f.state == kNameKey ? std::string_view(kNameKeyText) : n.arguments_key;
      if (f.pos == 0) {
        MX8_SPACE(f, b);
      }
      if (b != uint8_t(key[f.pos])) return Step::rejected;
      if (++f.pos == key.size()) {
        f.state++;  // its colon
        f.pos = 0;
      }
      return Step::taken;
    }
    case kNameColon:
    case kArgumentsColon:
      MX8_SPACE(f, b);
      if (b != ':') return Step::rejected;
      f.state++;  // its value
      f.lo = 0;
      f.hi = uint32_t(n.literals.size());
      return Step::taken;
    case kName:  // one of the names, as JSON strings or bare with their separator (none is another's prefix)
      if (f.pos == 0 && !n.arguments_key.empty()) {
        MX8_SPACE(f, b);
      }
      if (!narrow(n.literals, f.lo, f.hi, f.pos, b, [](uint32_t) { return false; })) return Step::rejected;
      if (n.literals[f.lo].size() == ++f.pos) {
        f.count = f.lo;
        f.state = n.arguments_key.empty() ? kArguments : kComma;
        f.pos = 0;
      }
      return Step::taken;
    case kComma:
      MX8_SPACE(f, b);
      if (b != ',') return Step::rejected;
      f.state = kArgumentsKey;
      return Step::taken;
    case kArguments:
      MX8_SPACE(f, b);
      return open_value(n.arguments[size_t(f.count)], b);
    case kCallClose:
      MX8_SPACE(f, b);
      if (b != '}') return Step::rejected;
      --depth_;
      value_done(stack_[size_t(depth_ - 1)]);
      return Step::taken;
    default:
      return Step::rejected;
  }
}

JsonMatcher::Step JsonMatcher::array(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = schema_->node(f.node);
  switch (f.state) {
    case kOpen:
      if (b != '[') return Step::rejected;
      f.state = kFirst;
      return Step::taken;
    case kFirst:
      MX8_SPACE(f, b);
      if (b == ']' && n.min == 0) break;
      if (n.max == 0) return Step::rejected;
      f.state = kItem;
      return open_value(n.items, b);
    case kNext:
      MX8_SPACE(f, b);
      f.state = kItem;
      return open_value(n.items, b);
    case kAfter:
      MX8_SPACE(f, b);
      if (b == ',' && (n.max < 0 || f.count < n.max)) {
        f.state = kNext;
        return Step::taken;
      }
      if (b == ']' && f.count >= n.min) break;
      return Step::rejected;
    default:
      return Step::rejected;
  }
  --depth_;  // ']'
  value_done(stack_[size_t(depth_ - 1)]);
  return Step::taken;
}

namespace {

// A patterned string's automaton (its state in f.used) moved past byte `c` of the value (escapes
// decoded); false where no match can follow. Strings without a pattern take every byte.
bool pattern_takes(JsonMatcher::Frame& f, const JsonSchema::Node& n, uint8_t c) {
  if (!n.pattern) return true;
  const int32_t next = n.pattern->next(int32_t(f.used), c);
  if (next < 0) return false;
  f.used = uint64_t(next);
  return true;
}

// The same for a character written as a \u escape: its UTF-8 bytes, as the pattern reads the value.
bool pattern_takes_utf8(JsonMatcher::Frame& f, const JsonSchema::Node& n, uint32_t c) {
  uint8_t bytes[4];
  int count = 0;
  if (c < 0x80) {
    bytes[count++] = uint8_t(c);
  } else if (c < 0x800) {
    bytes[count++] = uint8_t(0xC0 | c >> 6);
    bytes[count++] = uint8_t(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    bytes[count++] = uint8_t(0xE0 | c >> 12);
    bytes[count++] = uint8_t(0x80 | (c >> 6 & 0x3F));
    bytes[count++] = uint8_t(0x80 | (c & 0x3F));
  } else {
    bytes[count++] = uint8_t(0xF0 | c >> 18);
    bytes[count++] = uint8_t(0x80 | (c >> 12 & 0x3F));
    bytes[count++] = uint8_t(0x80 | (c >> 6 & 0x3F));
    bytes[count++] = uint8_t(0x80 | (c & 0x3F));
  }
  for (int i = 0; i < count; ++i)
    if (!pattern_takes(f, n, bytes[i])) return false;
  return true;
}

}  // namespace

JsonMatcher::Step JsonMatcher::string(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = schema_->node(f.node);
  const bool room = n.max < 0 || f.count < n.max;
  switch (f.state) {
    case kOpen:
      if (b != '"') return Step::rejected;
      f.state = kBody;
      return Step::taken;
    case kEscape:
      if (b == 'u') {
        f.state = kHex;
        f.pos = 4;
        f.lo = f.hi = 0;
      } else if (b == '"' || b == '\\' || b == '/' || b == 'b' || b == 'f' || b == 'n' || b == 'r' ||
                 b == 't') {
        const uint8_t c = b == 'b'   ? 0x08
                          : b == 'f' ? 0x0C
                          : b == 'n' ? 0x0A
                          : b == 'r' ? 0x0D
                          : b == 't' ? 0x09
                                     : b;
        if (!pattern_takes(f, n, c)) return Step::rejected;
        f.state = kBody;
      } else {
        return Step::rejected;
      }
      f.count++;
      return Step::taken;
    case kHex: {  // lo: the value so far; hi: the high surrogate where this must be a low one (else 0)
      if (!is_hex(b)) return Step::rejected;
      f.lo = f.lo * 16 + uint32_t(b <= '9' ? b - '0' : (b | 0x20) - 'a' + 10);
      const bool low = f.lo >= 0xDC && f.lo <= 0xDF;  // after two digits: a low surrogate's first byte
      --f.pos;
      if ((f.pos == 3 && f.hi != 0 && f.lo != 0xD) || (f.pos == 2 && low != (f.hi != 0)))
        return Step::rejected;
      if (f.pos > 0) return Step::taken;
      if (f.hi == 0 && f.lo >= 0xD800 && f.lo <= 0xDBFF) {  // the pattern sees the pair's character whole
        f.hi = f.lo;
        f.state = kLowBackslash;
        return Step::taken;
      }
      const uint32_t c = f.hi == 0 ? f.lo : 0x10000 + ((f.hi - 0xD800) << 10) + (f.lo - 0xDC00);
      if (n.pattern && !pattern_takes_utf8(f, n, c)) return Step::rejected;
      f.state = kBody;
      f.lo = f.hi = 0;
      return Step::taken;
    }
    case kLowBackslash:  // a high surrogate's escape is followed by a low one's
      if (b != '\\') return Step::rejected;
      f.state = kLowU;
      return Step::taken;
    case kLowU:
      if (b != 'u') return Step::rejected;
      f.state = kHex;
      f.pos = 4;
      f.lo = 0;
      return Step::taken;
    default:
      break;  // kBody
  }
  if (f.utf8 > 0) {  // a continuation byte, within the range the character's lead byte allows
    if (b < f.lo || b > f.hi || !pattern_takes(f, n, b)) return Step::rejected;
    f.utf8--;
    f.lo = 0x80;
    f.hi = 0xBF;
    return Step::taken;
  }
  if (b == '"') {
    if (f.count < n.min || (n.pattern && !n.pattern->accepts(int32_t(f.used)))) return Step::rejected;
    --depth_;
    value_done(stack_[size_t(depth_ - 1)]);
    return Step::taken;
  }
  if (b < 0x20 || !room) return Step::rejected;
  if (b == '\\') {
    f.state = kEscape;
    return Step::taken;
  }
  // UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past U+10FFFF.
  f.lo = 0x80;
  f.hi = 0xBF;
  if (b < 0x80) {
    f.utf8 = 0;
  } else if (b >= 0xC2 && b <= 0xDF) {
    f.utf8 = 1;
  } else if (b >= 0xE0 && b <= 0xEF) {
    f.utf8 = 2;
    if (b == 0xE0) f.lo = 0xA0;
    if (b == 0xED) f.hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    f.utf8 = 3;
    if (b == 0xF0) f.lo = 0x90;
    if (b == 0xF4) f.hi = 0x8F;
  } else {
    return Step::rejected;
  }
  if (!pattern_takes(f, n, b)) return Step::rejected;
  f.count++;
  return Step::taken;
}

namespace {

constexpr int64_t kPow10[19] = {1,
                                10,
                                100,
                                1000,
                                10000,
                                100000,
                                1000000,
                                10000000,
                                100000000,
                                1000000000,
                                10000000000,
                                100000000000,
                                1000000000000,
                                10000000000000,
                                100000000000000,
                                1000000000000000,
                                10000000000000000,
                                100000000000000000,
                                1000000000000000000};

// Whether a number of ranged node `n`, written up to state `f` (see Frame), can still end in its range:
// some value it may become (more digits, a fraction) lies from n.low to n.high.
bool range_reachable(const JsonSchema::Node& n, const JsonMatcher::Frame& f, uint8_t state) {
  const int64_t unit = kPow10[n.scale], s = int64_t(f.used);
  auto meets = [&](int64_t a, int64_t b) {  // magnitudes [a, b], signed by f.space: a value in range?
    const int64_t lo = std::max(f.space ? -b : a, n.low), hi = std::min(f.space ? -a : b, n.high);
    return lo <= hi && (n.step == 0 || floor_multiple(hi, n.step) >= lo);
  };
  switch (state) {
    case kMinus:
      return meets(0, JsonSchema::kRangeUnits);
    case kZero:
    case kDot:
      return meets(s, s + unit - 1);  // this whole part and any fraction
    case kFrac:
      return meets(s, s + kPow10[n.scale - f.hi] - 1);
    case kInt:  // this whole part and any fraction, or k more whole digits (and any fraction)
      for (int k = 0; int(f.lo) + k + n.scale <= 18; ++k)
        if (meets(s * kPow10[k], (s + unit) * kPow10[k] - 1)) return true;
      return false;
  }
  return false;
}

}  // namespace

// A number of a ranged node (JsonSchema::Node::ranged) keeps its value as it is written, in the node's
// units: f.used its magnitude, f.lo its whole digits, f.hi its decimals, f.space 1 when negative. It has
// no exponent, and a digit goes only where the range can still be reached.
JsonMatcher::Step JsonMatcher::ranged_number(Frame& f, uint8_t b) {
  const JsonSchema::Node& n = schema_->node(f.node);
  const int d = b - '0';
  uint8_t next = 0;
  switch (f.state) {
    case kStart:
    case kMinus:
      if (b == '-' && f.state == kStart) {
        f.space = 1;
        next = kMinus;
      } else if (is_digit(b)) {
        f.used = uint64_t(d * kPow10[n.scale]);
        f.lo = 1;
        next = d == 0 ? kZero : kInt;
      }
      break;
    case kInt:
      if (is_digit(b) && int(f.lo) + 1 + n.scale <= 18) {
        f.used = f.used * 10 + uint64_t(d * kPow10[n.scale]);
        f.lo++;
        next = kInt;
        break;
      }
      [[fallthrough]];
    case kZero:
      next = b == '.' && n.scale > 0 ? kDot : 0;
      break;
    case kDot:
    case kFrac:
      if (is_digit(b) && f.hi < n.scale) {
        f.hi++;
        f.used += uint64_t(d * kPow10[n.scale - f.hi]);
        next = kFrac;
      }
      break;
  }
  if (next == 0) return ends_here(f) ? Step::ended : Step::rejected;
  if (!range_reachable(n, f, next)) return Step::rejected;
  f.state = next;
  f.pos++;
  return Step::taken;
}

JsonMatcher::Step JsonMatcher::number(Frame& f, uint8_t b) {
  if (schema_->node(f.node).ranged) return ranged_number(f, b);
  const bool integer = schema_->node(f.node).kind == Kind::integer;
  const bool room = f.pos < uint32_t(kMaxNumber);
  const bool digit = is_digit(b) && room;
  uint8_t next = 0;  // the state `b` leads to (0: none)
  switch (f.state) {
    case kStart:
      next = b == '-' ? kMinus : b == '0' ? kZero : is_digit(b) ? kInt : 0;
      break;
    case kMinus:
      next = !room ? 0 : b == '0' ? kZero : is_digit(b) ? kInt : 0;
      break;
    case kInt:
      if (digit) {
        next = kInt;
        break;
      }
      [[fallthrough]];
    case kZero:
      next = integer || !room ? 0 : b == '.' ? kDot : b == 'e' || b == 'E' ? kExp : 0;
      break;
    case kDot:
      next = digit ? kFrac : 0;
      break;
    case kFrac:
      next = digit ? kFrac : room && (b == 'e' || b == 'E') ? kExp : 0;
      break;
    case kExp:
      next = !room ? 0 : b == '+' || b == '-' ? kExpSign : is_digit(b) ? kExpDigits : 0;
      break;
    case kExpSign:
      next = digit ? kExpDigits : 0;
      break;
    case kExpDigits:
      next = digit && f.count < kMaxExponent ? kExpDigits : 0;
      break;
  }
  if (next == 0) return ends_here(f) ? Step::ended : Step::rejected;
  f.count = next == kExpDigits ? f.count + 1 : 0;
  f.state = next;
  f.pos++;
  return Step::taken;
}

JsonMatcher::Step JsonMatcher::literal(Frame& f, uint8_t b) {
  const std::vector<std::string>& lits = schema_->node(f.node).literals;
  if (!narrow(lits, f.lo, f.hi, f.pos, b, [](uint32_t) { return false; }))
    return ends_here(f) ? Step::ended : Step::rejected;
  if (++f.pos == lits[f.lo].size() && f.hi == f.lo + 1) {  // one value left, and it is whole: done
    --depth_;
    value_done(stack_[size_t(depth_ - 1)]);
  }
  return Step::taken;
}

}  // namespace mx8::runtime
