// Table lookups and NFC for the tokenizers (see unicode.h).
#include "runtime/tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace mx8::runtime::unicode {
namespace {

struct CategoryRange {
  uint32_t start;
  uint8_t cat;
};
struct CombiningRange {
  uint32_t start;
  uint8_t ccc;
};
struct Decomposition {
  uint32_t cp, first, second;  // second == 0: a singleton decomposition
};
struct Composition {
  uint32_t first, second, composite;
};
struct CaseFold {
  uint32_t cp, folded;
};

#include "runtime/tokenizer/unicode_tables.inc"

template <class Range>
auto range_value(const Range* begin, const Range* end, uint32_t cp) {
  // The last range whose start <= cp; the tables start at code point 0.
  auto it = std::upper_bound(begin, end, cp, [](uint32_t c, const Range& r) { return c < r.start; });
  return (it - 1);
}

// Hangul syllables compose and decompose algorithmically (Unicode 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint8_t ccc(uint32_t cp) {
  if (cp < 0x300) return 0;
  return range_value(std::begin(kCombiningRanges), std::end(kCombiningRanges), cp)->ccc;
}

void decompose_into(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    auto it = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                               [](const Decomposition& d, uint32_t c) { return d.cp < c; });
    if (it != std::end(kDecompositions) && it->cp == cp) {
      decompose_into(it->first, out);
      if (it->second) decompose_into(it->second, out);
      return;
    }
  }
  out.push_back(cp);
}

// 0 when the pair has no primary composite.
uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  auto it = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::pair{a, b},
                             [](const Composition& c, std::pair<uint32_t, uint32_t> k) {
                               return std::pair{c.first, c.second} < k;
                             });
  if (it != std::end(kCompositions) && it->first == a && it->second == b) return it->composite;
  return 0;
}

}  // namespace

Category category(uint32_t cp) {
  if (cp >= 0x110000) return kCn;
  return static_cast<Category>(range_value(std::begin(kCategoryRanges), std::end(kCategoryRanges), cp)->cat);
}

bool in_major_class(uint32_t cp, char major) {
  Category c = category(cp);
  switch (major) {
    case 'L':
      return c >= kLu && c <= kLo;
    case 'M':
      return c >= kMn && c <= kMe;
    case 'N':
      return c >= kNd && c <= kNo;
    case 'P':
      return c >= kPc && c <= kPo;
    case 'S':
      return c >= kSm && c <= kSo;
    case 'Z':
      return c >= kZs && c <= kZp;
    case 'C':
      return c == kCn || c >= kCc;
    default:
      return false;
  }
}

bool is_white_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

uint32_t simple_fold(uint32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  auto it = std::lower_bound(std::begin(kCaseFolds), std::end(kCaseFolds), cp,
                             [](const CaseFold& f, uint32_t c) { return f.cp < c; });
  return (it != std::end(kCaseFolds) && it->cp == cp) ? it->folded : cp;
}

size_t sequence_length(uint8_t b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

uint32_t decode_one(std::string_view s, size_t& i) {
  uint8_t b = static_cast<uint8_t>(s[i]);
  size_t n = sequence_length(b);
  if (n == 1) {
    ++i;
    return b < 0x80 ? b : 0xFFFD;
  }
  if (i + n > s.size()) {
    ++i;
    return 0xFFFD;
  }
  uint32_t cp = b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    uint8_t c = static_cast<uint8_t>(s[i + k]);
    if ((c & 0xC0) != 0x80) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid.
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return 0xFFFD;
  }
  i += n;
  return cp;
}

std::vector<uint32_t> decode(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) out.push_back(decode_one(s, i));
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string encode(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) append_utf8(out, cp);
  return out;
}

std::string nfc(std::string_view s) {
  // Fast path: text below U+0300 is already in NFC (nothing there decomposes into, or composes
  // with, anything else below U+0300 except via combining marks, which start at U+0300).
  bool simple = true;
  for (char c : s) {
    if (static_cast<uint8_t>(c) >= 0xCC) {  // lead bytes of U+0300 and above
      simple = false;
      break;
    }
  }
  if (simple) return std::string(s);

  std::vector<uint32_t> d;
  d.reserve(s.size());
  for (size_t i = 0; i < s.size();) decompose_into(decode_one(s, i), d);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < d.size();) {
    if (ccc(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && ccc(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](uint32_t a, uint32_t b) { return ccc(a) < ccc(b); });
    i = j;
  }
  // Canonical composition (Unicode 3.11, D117): each character composes with the last starter
  // unless a character in between has a combining class >= its own (it is "blocked").
  std::vector<uint32_t> out;
  out.reserve(d.size());
  size_t starter = SIZE_MAX;
  int last_ccc = -1;
  for (uint32_t cp : d) {
    int c = ccc(cp);
    if (starter != SIZE_MAX) {
      bool blocked = !out.empty() && out.size() - 1 != starter && (last_ccc == 0 || last_ccc >= c);
      if (!blocked) {
        if (uint32_t comp = compose_pair(out[starter], cp)) {
          out[starter] = comp;
          continue;
        }
      }
    }
    if (c == 0) {
      starter = out.size();
      last_ccc = -1;
    } else {
      last_ccc = c;
    }
    out.push_back(cp);
  }
  return encode(out);
}

}  // namespace mx8::runtime::unicode
