// SentencePiece-style tokenizer (see spm.h).
#include "runtime/tokenizer/spm.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "mx8/error.h"
#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime {
namespace {

const std::string kSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space

std::string escape_spaces(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (char c : s) {
    if (c == ' ')
      out += kSpace;
    else
      out += c;
  }
  return out;
}

// "<0x41>" -> 0x41, or -1.
int parse_byte_token(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  unsigned v = 0;
  if (std::sscanf(t.c_str() + 3, "%2X", &v) != 1) return -1;
  return static_cast<int>(v);
}

}  // namespace

SpmTokenizer::SpmTokenizer(SpmVocab vocab) : v_(std::move(vocab)) {
  size_t n = v_.tokens.size();
  if (n == 0) throw Error("tokenizer: empty SentencePiece vocabulary");
  if (v_.scores.empty()) v_.scores.assign(n, 0.0f);
  if (v_.scores.size() != n) throw Error("tokenizer: SentencePiece scores and tokens differ in length");
  if (v_.types.empty()) {
    v_.types.assign(n, SpmVocab::kNormal);
    for (size_t i = 0; i < n; ++i) {
      if (parse_byte_token(v_.tokens[i]) >= 0) v_.types[i] = SpmVocab::kByte;
      if (static_cast<TokenId>(i) == v_.unk) v_.types[i] = SpmVocab::kUnknown;
      if (static_cast<TokenId>(i) == v_.bos || static_cast<TokenId>(i) == v_.eos)
        v_.types[i] = SpmVocab::kControl;
    }
  }
  if (v_.types.size() != n) throw Error("tokenizer: SentencePiece token types and tokens differ in length");
  token_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) token_to_id_.emplace(v_.tokens[i], static_cast<TokenId>(i));
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto it = token_to_id_.find(name);
    byte_ids_[b] = it != token_to_id_.end() ? it->second : v_.unk;
  }
  for (size_t i = 0; i < n; ++i)
    if ((v_.types[i] == SpmVocab::kControl || v_.types[i] == SpmVocab::kUserDefined) && !v_.tokens[i].empty())
      matchable_.push_back(static_cast<TokenId>(i));
  std::stable_sort(matchable_.begin(), matchable_.end(),
                   [&](TokenId a, TokenId b) { return v_.tokens[a].size() > v_.tokens[b].size(); });
  split_at_newlines_ = true;
  for (const std::string& t : v_.tokens)
    if (t.size() > 1 && t.find('\n') != std::string::npos) split_at_newlines_ = false;
  auto valid = [&](TokenId id) { return id >= 0 && static_cast<size_t>(id) < n ? id : kNoToken; };
  bos_ = valid(v_.bos);
  eos_ = valid(v_.eos);
  add_bos_ = v_.add_bos && bos_ != kNoToken;
  add_eos_ = v_.add_eos && eos_ != kNoToken;
  finish_special_ids();
}

void SpmTokenizer::encode_text(std::string_view raw, bool prefix_space, std::vector<TokenId>& out) const {
  std::string text = escape_spaces(prefix_space ? " " + std::string(raw) : std::string(raw));
  if (!split_at_newlines_) return merge_symbols(text, out);
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
    merge_symbols(text.substr(start, nl - start), out);
    merge_symbols("\n", out);
  }
  merge_symbols(text.substr(start), out);
}

void SpmTokenizer::merge_symbols(const std::string& text, std::vector<TokenId>& out) const {
  if (text.empty()) return;
  // Symbols: one per UTF-8 character, in a doubly linked list.
  struct Sym {
    size_t start, len;
    int prev, next;
  };
  std::vector<Sym> syms;
  for (size_t i = 0; i < text.size();) {
    size_t len = std::min(unicode::sequence_length(static_cast<uint8_t>(text[i])), text.size() - i);
    int k = static_cast<int>(syms.size());
    syms.push_back({i, len, k - 1, k + 1});
    i += len;
  }
  syms.back().next = -1;

  struct Bigram {
    float score;
    int left, right;
    size_t len;  // merged length in bytes, to detect stale entries
    bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
  };
  std::priority_queue<Bigram> heap;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    size_t len = syms[left].len + syms[right].len;
    auto it = token_to_id_.find(std::string_view(text).substr(syms[left].start, len));
    if (it == token_to_id_.end()) return;
    heap.push({v_.scores[it->second], left, right, len});
  };
  for (int i = 1; i < static_cast<int>(syms.size()); ++i) try_add(i - 1, i);
  while (!heap.empty()) {
    Bigram b = heap.top();
    heap.pop();
    Sym& l = syms[b.left];
    Sym& r = syms[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;  // stale
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  for (int i = 0; i >= 0; i = syms[i].next) {
    auto it = token_to_id_.find(std::string_view(text).substr(syms[i].start, syms[i].len));
    if (it != token_to_id_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (size_t k = 0; k < syms[i].len; ++k) {
      TokenId id = byte_ids_[static_cast<uint8_t>(text[syms[i].start + k])];
      if (id != kNoToken) out.push_back(id);
    }
  }
}

std::vector<TokenId> SpmTokenizer::encode(std::string_view text, const EncodeOptions& opts) const {
  std::vector<TokenId> out;
  if (opts.add_special && add_bos_) out.push_back(bos_);
  // Control tokens (when parsing special) and user-defined tokens written in the text are cut out
  // first. As llama.cpp does, the space prefix goes before the first text fragment and before any
  // fragment that follows a special token.
  bool prev_special = true;
  size_t seg = 0, i = 0;
  auto flush_text = [&](size_t end) {
    if (end > seg) {
      encode_text(text.substr(seg, end - seg), v_.add_space_prefix && prev_special, out);
      prev_special = false;
    }
  };
  while (i < text.size()) {
    TokenId hit = kNoToken;
    for (TokenId id : matchable_) {
      if (v_.types[id] == SpmVocab::kControl && !opts.parse_special) continue;
      const std::string& t = v_.tokens[id];
      if (text.compare(i, t.size(), t) == 0) {
        hit = id;
        break;
      }
    }
    if (hit == kNoToken) {
      ++i;
      continue;
    }
    flush_text(i);
    out.push_back(hit);
    prev_special = true;
    i += v_.tokens[hit].size();
    seg = i;
  }
  flush_text(text.size());
  if (opts.add_special && add_eos_) out.push_back(eos_);
  return out;
}

std::string SpmTokenizer::token_bytes(TokenId id, bool at_start, const DecodeOptions& opts) const {
  if (id < 0 || static_cast<size_t>(id) >= v_.tokens.size())
    throw Error("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary (size " +
                std::to_string(v_.tokens.size()) + ")");
  const std::string& t = v_.tokens[id];
  switch (v_.types[id]) {
    case SpmVocab::kByte: {
      int b = parse_byte_token(t);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : std::string();
    }
    case SpmVocab::kControl:
    case SpmVocab::kUnknown:
    case SpmVocab::kUnused:
      return opts.drops(id) ? std::string() : t;
    case SpmVocab::kUserDefined:
      return t;
    default: {
      std::string s;
      s.reserve(t.size());
      for (size_t i = 0; i < t.size(); ++i) {
        if (t.compare(i, 3, kSpace) == 0) {
          s += ' ';
          i += 2;
        } else {
          s += t[i];
        }
      }
      // The space prefix added by encode is not part of the text.
      if (at_start && v_.add_space_prefix && !s.empty() && s[0] == ' ') s.erase(0, 1);
      return s;
    }
  }
}

const std::string& SpmTokenizer::token_text(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= v_.tokens.size())
    throw Error("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary");
  return v_.tokens[id];
}

std::optional<TokenId> SpmTokenizer::find_token(std::string_view text) const {
  auto it = token_to_id_.find(text);
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

bool SpmTokenizer::is_special(TokenId id) const {
  return id >= 0 && static_cast<size_t>(id) < v_.types.size() &&
         (v_.types[id] == SpmVocab::kControl || v_.types[id] == SpmVocab::kUnknown);
}

std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmVocab vocab) {
  return std::make_unique<SpmTokenizer>(std::move(vocab));
}

}  // namespace mx8::runtime
