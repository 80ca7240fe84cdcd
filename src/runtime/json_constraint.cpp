// Structured output over a vocabulary: see json_constraint.h.
#include "mx8/runtime/json_constraint.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>

namespace mx8::runtime {
namespace {

// Whether `s` can sit inside a JSON string as it is: no quote, backslash or control character, and
// whole UTF-8 characters only (RFC 3629's ranges).
bool plain_text(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const uint8_t b = uint8_t(s[i]);
    if (b < 0x80) {
      if (b < 0x20 || b == '"' || b == '\\') return false;
      ++i;
      continue;
    }
    int more = 0;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      more = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      more = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      more = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + size_t(more) >= s.size()) return false;
    for (int k = 1; k <= more; ++k) {
      const uint8_t c = uint8_t(s[i + size_t(k)]);
      if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) return false;
    }
    i += size_t(more) + 1;
  }
  return true;
}

JsonVocabulary::Sorted sorted(const std::vector<std::string>& bytes, std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return bytes[size_t(a)] < bytes[size_t(b)]; });
  JsonVocabulary::Sorted s;
  s.shared.resize(ids.size());
  for (size_t i = 1; i < ids.size(); ++i) {
    const std::string &a = bytes[size_t(ids[i - 1])], &b = bytes[size_t(ids[i])];
    const auto [ea, eb] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    s.shared[i] = uint32_t(ea - a.begin());
  }
  s.ids = std::move(ids);
  return s;
}

}  // namespace

JsonVocabulary::JsonVocabulary(const Tokenizer& tok, const std::vector<int32_t>& text_tokens) {
  const size_t n = tok.vocab_size();
  bytes_.resize(n);
  special_.resize(n);
  plain_.resize(n);
  chars_.resize(n);
  std::vector<int32_t> all, not_plain;
  for (size_t id = 0; id < n; ++id) {
    special_[id] = tok.is_special(int32_t(id)) &&
                   std::find(text_tokens.begin(), text_tokens.end(), int32_t(id)) == text_tokens.end();
    if (special_[id]) continue;
    bytes_[id] = tok.token_bytes(int32_t(id), /*at_start=*/false);
    if (bytes_[id].empty()) continue;
    longest_ = std::max(longest_, bytes_[id].size());
    all.push_back(int32_t(id));
    plain_[id] = plain_text(bytes_[id]);
    for (char c : bytes_[id]) chars_[id] += (uint8_t(c) & 0xC0) != 0x80;  // lead bytes: one per character
    if (!plain_[id]) not_plain.push_back(int32_t(id));
  }
  with_bytes_.resize(n);
  for (int32_t id : all) with_bytes_[size_t(id)] = 1;
  all_ = sorted(bytes_, std::move(all));
  not_plain_ = sorted(bytes_, std::move(not_plain));
  stop_ids_ = tok.stop_ids();
}

const std::vector<int32_t>& JsonVocabulary::containing(uint8_t b) const {
  std::call_once(containing_once_[b], [&] {
    for (int32_t id : all_.ids)
      if (bytes_[size_t(id)].find(char(b)) != std::string::npos) containing_[b].push_back(id);
  });
  return containing_[b];
}

JsonConstraint::JsonConstraint(std::shared_ptr<const JsonVocabulary> vocab, JsonMatcher matcher)
    : vocab_(std::move(vocab)), matcher_(std::move(matcher)) {}

std::unique_ptr<TokenConstraint> JsonConstraint::clone() const {
  return std::make_unique<JsonConstraint>(vocab_, matcher_);
}

void JsonConstraint::walk(const JsonVocabulary::Sorted& tokens) {
  if (snapshots_.size() < vocab_->longest() + 1) snapshots_.resize(vocab_->longest() + 1);
  matcher_.save(snapshots_[0]);
  size_t agree = 0;        // leading bytes the token shares with the last one fed
  size_t valid = 0;        // snapshots_[0..valid] hold the states after that token's first bytes
  size_t dead = SIZE_MAX;  // that token's first `dead` bytes cannot come
  for (size_t i = 0; i < tokens.ids.size(); ++i) {
    const int32_t id = tokens.ids[i];
    const std::string& t = vocab_->bytes(id);
    agree = std::min<size_t>(agree, tokens.shared[i]);
    if (agree >= dead) continue;
    size_t k = std::min(agree, valid);
    matcher_.restore(snapshots_[k]);
    dead = SIZE_MAX;
    for (; k < t.size(); ++k) {
      if (!matcher_.feed(uint8_t(t[k]))) {
        dead = k + 1;
        break;
      }
      matcher_.save(snapshots_[k + 1]);
    }
    valid = k;
    agree = t.size();
    if (dead == SIZE_MAX) allowed_[size_t(id)] = 1;
  }
  matcher_.restore(snapshots_[0]);
}

const std::vector<uint8_t>& JsonConstraint::allowed() {
  const size_t n = vocab_->size();
  if (broken_ || matcher_.free()) {
    allowed_.assign(n, 1);
    return allowed_;
  }
  if (const int watch = matcher_.text_watch(); watch >= 0) {
    // Free text: a token without the call marker's last byte cannot finish one, and stays text.
    allowed_ = vocab_->with_bytes();
    JsonMatcher::Snapshot start;
    matcher_.save(start);
    for (int32_t id : vocab_->containing(uint8_t(watch))) {
      bool fits = true;
      for (char c : vocab_->bytes(id)) fits = fits && matcher_.feed(uint8_t(c));
      allowed_[size_t(id)] = fits;
      matcher_.restore(start);
    }
  } else if (const int64_t room = matcher_.plain_string_room(); room == INT64_MAX) {
    allowed_ = vocab_->plain();
    walk(vocab_->not_plain());
  } else if (room >= 0) {
    allowed_.assign(n, 0);
    for (size_t i = 0; i < n; ++i) allowed_[i] = vocab_->plain()[i] && vocab_->characters(int32_t(i)) <= room;
    walk(vocab_->not_plain());
  } else {
    allowed_.assign(n, 0);
    walk(vocab_->all());
  }
  const bool complete = matcher_.complete();
  bool any = false;
  for (size_t i = 0; i < n && !any; ++i) any = allowed_[i];
  for (int32_t id : vocab_->stop_ids())
    if (size_t(id) < n && (complete || !any)) allowed_[size_t(id)] = 1;
  return allowed_;
}

std::vector<uint8_t> json_allowed_one_by_one(const Tokenizer& tok, const JsonMatcher& m) {
  std::vector<uint8_t> ok(tok.vocab_size());
  bool any = false;
  for (size_t id = 0; id < ok.size(); ++id) {
    if (m.free()) {
      ok[id] = 1;
    } else if (!tok.is_special(int32_t(id))) {
      const std::string bytes = tok.token_bytes(int32_t(id), false);
      JsonMatcher copy = m;
      bool taken = !bytes.empty();
      for (char c : bytes) taken = taken && copy.feed(uint8_t(c));
      ok[id] = taken;
    }
    any = any || ok[id];
  }
  for (int32_t id : tok.stop_ids())
    if (size_t(id) < ok.size() && (m.complete() || !any)) ok[size_t(id)] = 1;
  return ok;
}

void JsonConstraint::mask(std::span<float> logits) {
  const std::vector<uint8_t>& ok = allowed();
  const size_t n = std::min(ok.size(), logits.size());
  for (size_t i = 0; i < n; ++i)
    if (!ok[i]) logits[i] = -INFINITY;
  // Rows wider than the vocabulary (padded embeddings) have no text: never drawn.
  for (size_t i = n; i < logits.size(); ++i) logits[i] = -INFINITY;
}

void JsonConstraint::accept(int32_t token) {
  if (broken_ || token < 0 || size_t(token) >= vocab_->size() || vocab_->is_special(token)) return;
  // Only a token that mask() ruled out is refused (a caller that drew without it): from there on, free.
  for (char c : vocab_->bytes(token))
    if (!matcher_.feed(uint8_t(c))) {
      broken_ = true;
      return;
    }
}

}  // namespace mx8::runtime
