// Byte-level BPE (see bpe.h).
#include "runtime/tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "mx8/error.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/unicode.h"

namespace mx8::runtime {

const char* const kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

namespace {

uint64_t pair_key(TokenId a, TokenId b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Cuts `piece` with `re` into its matches and the text between them, then applies the behaviour.
void split_piece(const std::string& piece, const Regex& re, const BpeSpec::PreStep& step,
                 std::vector<std::string>& out) {
  std::vector<uint32_t> cps;
  std::vector<size_t> offset;  // byte offset of each code point, plus the end
  cps.reserve(piece.size());
  offset.reserve(piece.size() + 1);
  for (size_t i = 0; i < piece.size();) {
    offset.push_back(i);
    cps.push_back(unicode::decode_one(piece, i));
  }
  offset.push_back(piece.size());
  // (text, is_delimiter) in order.
  std::vector<std::pair<std::string, bool>> parts;
  size_t last = 0;
  for (auto [b, e] : re.find_all(cps)) {
    if (b > last) parts.emplace_back(piece.substr(offset[last], offset[b] - offset[last]), step.invert);
    parts.emplace_back(piece.substr(offset[b], offset[e] - offset[b]), !step.invert);
    last = e;
  }
  if (last < cps.size()) parts.emplace_back(piece.substr(offset[last]), step.invert);

  using B = BpeSpec::PreStep;
  switch (step.behavior) {
    case B::kIsolated:
      for (auto& [t, d] : parts) out.push_back(std::move(t));
      break;
    case B::kRemoved:
      for (auto& [t, d] : parts)
        if (!d) out.push_back(std::move(t));
      break;
    case B::kMergedWithPrevious: {
      size_t start = out.size();
      for (auto& [t, d] : parts) {
        if (d && out.size() > start)
          out.back() += t;
        else
          out.push_back(std::move(t));
      }
      break;
    }
    case B::kMergedWithNext: {
      std::string carry;
      for (auto& [t, d] : parts) {
        if (d) {
          carry += t;
        } else {
          out.push_back(carry + t);
          carry.clear();
        }
      }
      if (!carry.empty()) out.push_back(std::move(carry));
      break;
    }
  }
}

}  // namespace

BpeTokenizer::BpeTokenizer(BpeSpec spec) : spec_(std::move(spec)) {
  // The id table covers the model vocabulary and the added tokens.
  size_t n = spec_.vocab.size();
  for (auto& a : spec_.added) {
    if (a.id < 0 || static_cast<size_t>(a.id) >= BpeSpec::kMaxVocabSize)
      throw Error("tokenizer: added token '" + a.content + "' has id " + std::to_string(a.id) +
                  ", outside [0, " + std::to_string(BpeSpec::kMaxVocabSize) + ")");
    n = std::max(n, static_cast<size_t>(a.id) + 1);
  }
  // Every id the tokenizer can emit by itself must exist: a BOS past the table would be an
  // embedding row past the model's.
  auto check_id = [n](TokenId id, const char* what) {
    if (id != kNoToken && (id < 0 || static_cast<size_t>(id) >= n))
      throw Error(std::string("tokenizer: the ") + what + " token id " + std::to_string(id) +
                  " is outside the vocabulary of " + std::to_string(n));
  };
  for (TokenId id : spec_.prefix) check_id(id, "post-processor's leading");
  for (TokenId id : spec_.suffix) check_id(id, "post-processor's trailing");
  check_id(spec_.bos, "BOS");
  check_id(spec_.eos, "EOS");
  check_id(spec_.unk, "unknown-token");
  pieces_.assign(n, std::string());
  special_.assign(n, 0);
  added_.assign(n, 0);
  token_to_id_.reserve(spec_.vocab.size());
  for (size_t id = 0; id < spec_.vocab.size(); ++id) {
    if (!spec_.vocab[id].empty()) token_to_id_.emplace(spec_.vocab[id], static_cast<TokenId>(id));
    pieces_[id] = std::move(spec_.vocab[id]);
  }
  added_by_first_byte_.assign(256, {});
  for (size_t k = 0; k < spec_.added.size(); ++k) {
    auto& a = spec_.added[k];
    if (a.content.empty()) continue;
    pieces_[a.id] = a.content;
    special_[a.id] = a.special;
    added_[a.id] = 1;
    added_to_id_[a.content] = a.id;
    added_by_first_byte_[static_cast<uint8_t>(a.content[0])].push_back(k);
  }
  for (auto& list : added_by_first_byte_)
    std::stable_sort(list.begin(), list.end(), [&](size_t x, size_t y) {
      return spec_.added[x].content.size() > spec_.added[y].content.size();
    });

  merges_.reserve(spec_.merges.size());
  std::string joined;
  for (size_t r = 0; r < spec_.merges.size(); ++r) {
    auto& [a, b] = spec_.merges[r];
    joined.assign(a).append(b);
    auto ia = token_to_id_.find(a), ib = token_to_id_.find(b), im = token_to_id_.find(joined);
    if (ia == token_to_id_.end() || ib == token_to_id_.end() || im == token_to_id_.end())
      throw Error("tokenizer: merge '" + a + " " + b + "' (rank " + std::to_string(r) +
                  ") uses a token missing from the vocabulary");
    merges_.try_emplace(pair_key(ia->second, ib->second), static_cast<uint32_t>(r), im->second);
  }
  // The strings now live in pieces_ and the maps; drop the spec's copies.
  std::vector<std::pair<std::string, std::string>>().swap(spec_.merges);
  std::vector<std::string>().swap(spec_.vocab);
  byte_of_token_.assign(pieces_.size(), -1);
  for (int b = 0; b < 256; ++b) {
    std::string name;
    if (spec_.byte_level) {
      name = byte_level::byte_to_string(static_cast<uint8_t>(b));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      name = buf;
    }
    auto it = token_to_id_.find(name);
    byte_ids_[b] = it == token_to_id_.end() ? kNoToken : it->second;
    if (!spec_.byte_level && it != token_to_id_.end()) byte_of_token_[it->second] = static_cast<int16_t>(b);
  }
  if (!spec_.byte_level) {
    split_at_newlines_ = true;
    for (const std::string& t : pieces_)
      if (t.size() > 1 && t.find('\n') != std::string::npos) split_at_newlines_ = false;
  }
  for (auto& s : spec_.pre) {
    Step step{s, nullptr};
    if (s.kind == BpeSpec::PreStep::kSplit) step.regex = std::make_unique<Regex>(s.pattern);
    if (s.kind == BpeSpec::PreStep::kByteLevel && s.use_regex)
      step.regex = std::make_unique<Regex>(kGpt2Pattern);
    if (s.kind == BpeSpec::PreStep::kDigits)
      step.regex = std::make_unique<Regex>(s.individual_digits ? "\\p{N}" : "\\p{N}+");
    steps_.push_back(std::move(step));
  }
  bos_ = spec_.bos;
  eos_ = spec_.eos;
  add_bos_ = !spec_.prefix.empty() && spec_.prefix.front() == bos_ && bos_ != kNoToken;
  add_eos_ = !spec_.suffix.empty() && spec_.suffix.back() == eos_ && eos_ != kNoToken;
  finish_special_ids();
}

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  for (size_t k; (k = s.find(from, pos)) != std::string::npos; pos = k + from.size())
    out += s.substr(pos, k - pos) + to;
  return out + s.substr(pos);
}

}  // namespace

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view segment, bool first_segment) const {
  std::string text = spec_.nfc ? unicode::nfc(segment) : std::string(segment);
  if (!spec_.prepend.empty() && !text.empty()) text = spec_.prepend + text;
  for (auto& [from, to] : spec_.replace) text = replace_all(std::move(text), from, to);
  std::vector<std::string> pieces{std::move(text)};
  for (auto& step : steps_) {
    std::vector<std::string> next;
    next.reserve(pieces.size());
    for (auto& p : pieces) {
      if (step.spec.kind == BpeSpec::PreStep::kByteLevel) {
        std::string q = (step.spec.add_prefix_space && (p.empty() || p[0] != ' ')) ? " " + p : p;
        if (step.regex)
          split_piece(q, *step.regex, BpeSpec::PreStep{}, next);  // default: Isolated
        else
          next.push_back(std::move(q));
      } else if (step.spec.kind == BpeSpec::PreStep::kMetaspace) {
        const std::string& r = step.spec.replacement;
        std::string q = replace_all(p, " ", r);
        bool prepend = step.spec.prepend_always || (step.spec.prepend_first && first_segment);
        if (prepend && q.compare(0, r.size(), r) != 0) q = r + q;
        if (!step.spec.split) {
          next.push_back(std::move(q));
          continue;
        }
        size_t start = 0;
        for (size_t k = q.find(r, 1); k != std::string::npos; k = q.find(r, k + r.size())) {
          next.push_back(q.substr(start, k - start));
          start = k;
        }
        next.push_back(q.substr(start));
      } else {
        split_piece(p, *step.regex, step.spec, next);
      }
    }
    pieces = std::move(next);
  }
  std::erase_if(pieces, [](const std::string& p) { return p.empty(); });
  return pieces;
}

std::vector<TokenId> BpeTokenizer::bpe_piece(std::string_view piece) const {
  std::vector<TokenId> out;
  if (spec_.ignore_merges) {
    auto it = token_to_id_.find(spec_.byte_level ? byte_level::encode(piece) : std::string(piece));
    if (it != token_to_id_.end()) return {it->second};
  }
  // Symbols start as single bytes (each byte's printable character is a vocabulary entry).
  struct Sym {
    TokenId id;
    int prev, next;
  };
  std::vector<Sym> syms;
  syms.reserve(piece.size());
  auto add_symbol = [&](TokenId id) {
    if (id == kNoToken) {
      if (spec_.unk == kNoToken) return;  // as Hugging Face: a symbol outside the vocabulary is dropped
      id = spec_.unk;
    }
    int k = static_cast<int>(syms.size());
    syms.push_back({id, k - 1, k + 1});
  };
  if (spec_.byte_level) {
    for (char c : piece) add_symbol(byte_ids_[static_cast<uint8_t>(c)]);
  } else {
    // One symbol per character; a character outside the vocabulary becomes its bytes' <0xNN>
    // tokens (byte_fallback) or <unk>.
    for (size_t i = 0; i < piece.size();) {
      size_t n = std::min(unicode::sequence_length(static_cast<uint8_t>(piece[i])), piece.size() - i);
      auto it = token_to_id_.find(piece.substr(i, n));
      if (it != token_to_id_.end()) {
        add_symbol(it->second);
      } else if (spec_.byte_fallback) {
        for (size_t k = 0; k < n; ++k) add_symbol(byte_ids_[static_cast<uint8_t>(piece[i + k])]);
      } else {
        add_symbol(kNoToken);
      }
      i += n;
    }
  }
  if (syms.empty()) return out;
  syms.back().next = -1;

  // Candidate merges, lowest rank first, then leftmost. An entry is stale when either side has
  // changed since it was pushed; the stored ids detect that.
  struct Cand {
    uint32_t rank;
    int left;
    TokenId a, b, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](int left) {
    if (left < 0) return;
    int right = syms[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(syms[left].id, syms[right].id));
    if (it != merges_.end())
      heap.push({it->second.first, left, syms[left].id, syms[right].id, it->second.second});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) consider(i);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Sym& l = syms[c.left];
    if (l.id != c.a || l.next < 0 || syms[l.next].id != c.b) continue;
    int r = l.next;
    l.id = c.merged;
    l.next = syms[r].next;
    if (l.next >= 0) syms[l.next].prev = c.left;
    syms[r].id = kNoToken;  // dead
    consider(l.prev);
    consider(c.left);
  }
  for (int i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
  return out;
}

void BpeTokenizer::encode_segment(std::string_view segment, bool first_segment,
                                  std::vector<TokenId>& out) const {
  for (auto& piece : pre_tokenize(segment, first_segment)) {
    if (piece.size() > 256) {  // long pieces (whole segments without a pre-tokenizer) are not cached
      size_t start = 0;
      if (split_at_newlines_) {
        for (size_t nl; (nl = piece.find('\n', start)) != std::string::npos; start = nl + 1) {
          for (std::string_view part :
               {std::string_view(piece).substr(start, nl - start), std::string_view("\n")}) {
            std::vector<TokenId> ids = bpe_piece(part);
            out.insert(out.end(), ids.begin(), ids.end());
          }
        }
      }
      std::vector<TokenId> ids = bpe_piece(std::string_view(piece).substr(start));
      out.insert(out.end(), ids.begin(), ids.end());
      continue;
    }
    {
      std::lock_guard lock(cache_mutex_);
      if (auto it = cache_.find(piece); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    std::vector<TokenId> ids = bpe_piece(piece);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= 200000) cache_.clear();  // bounded; a plain reset is enough
    cache_.emplace(piece, std::move(ids));
  }
}

std::vector<TokenId> BpeTokenizer::encode(std::string_view text, const EncodeOptions& opts) const {
  std::vector<TokenId> out;
  if (opts.add_special) out.insert(out.end(), spec_.prefix.begin(), spec_.prefix.end());
  // Cut added tokens out of the raw text: at each position the longest added token that starts
  // there wins (leftmost-longest).
  size_t seg_start = 0, i = 0;
  while (i < text.size()) {
    const BpeSpec::AddedToken* hit = nullptr;
    for (size_t k : added_by_first_byte_[static_cast<uint8_t>(text[i])]) {
      const auto& a = spec_.added[k];
      if (a.special && !opts.parse_special) continue;
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t seg_end = i;
    if (hit->lstrip)
      while (seg_end > seg_start && unicode::is_white_space(static_cast<uint8_t>(text[seg_end - 1])))
        --seg_end;
    if (seg_end > seg_start) encode_segment(text.substr(seg_start, seg_end - seg_start), seg_start == 0, out);
    out.push_back(hit->id);
    i += hit->content.size();
    if (hit->rstrip)
      while (i < text.size() && unicode::is_white_space(static_cast<uint8_t>(text[i]))) ++i;
    seg_start = i;
  }
  if (seg_start < text.size()) encode_segment(text.substr(seg_start), seg_start == 0, out);
  if (opts.add_special) out.insert(out.end(), spec_.suffix.begin(), spec_.suffix.end());
  return out;
}

std::string BpeTokenizer::token_bytes(TokenId id, bool at_start, const DecodeOptions& opts) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size())
    throw Error("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary (size " +
                std::to_string(pieces_.size()) + ")");
  if (special_[id] && opts.drops(id)) return {};
  if (added_[id]) return pieces_[id];
  if (!spec_.byte_level) {
    if (byte_of_token_[id] >= 0) return std::string(1, static_cast<char>(byte_of_token_[id]));
    std::string s = replace_all(pieces_[id], "\xE2\x96\x81", " ");
    if (at_start && spec_.strip_leading_space && !s.empty() && s[0] == ' ') s.erase(0, 1);
    return s;
  }
  // A model token whose characters are all in the byte alphabet decodes to those bytes; any
  // other token (outside the alphabet) is its own UTF-8 text, as Hugging Face's ByteLevel decoder.
  std::string bytes;
  if (byte_level::decode(pieces_[id], bytes)) return bytes;
  return pieces_[id];
}

const std::string& BpeTokenizer::token_text(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces_.size())
    throw Error("tokenizer: token id " + std::to_string(id) + " is outside the vocabulary");
  return pieces_[id];
}

std::optional<TokenId> BpeTokenizer::find_token(std::string_view text) const {
  if (auto it = added_to_id_.find(text); it != added_to_id_.end()) return it->second;
  if (auto it = token_to_id_.find(text); it != token_to_id_.end()) return it->second;
  return std::nullopt;
}

bool BpeTokenizer::is_special(TokenId id) const {
  return id >= 0 && static_cast<size_t>(id) < special_.size() && special_[id];
}

}  // namespace mx8::runtime
