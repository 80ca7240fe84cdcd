// StopText: see stop_text.h.
#include "mx8/runtime/stop_text.h"

#include <algorithm>

namespace mx8::runtime {

StopText::StopText(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
}

std::string StopText::push(const std::string& piece) {
  if (stopped_) return "";
  const size_t before = held_.size();
  held_ += piece;
  // The first stop sequence to complete, found by scanning the new bytes one by one, so that where the
  // text was cut into pieces (tokens) cannot change the result; of those completing at the same byte,
  // the longest. No stop sequence ends inside the held text: it would have been found when it arrived.
  for (size_t end = before + 1; end <= held_.size(); ++end) {
    const std::string* hit = nullptr;
    for (const std::string& s : stops_)
      if (s.size() <= end && (!hit || s.size() > hit->size()) &&
          held_.compare(end - s.size(), s.size(), s) == 0)
        hit = &s;
    if (hit) {
      stopped_ = true;
      matched_ = *hit;
      std::string out = held_.substr(0, end - hit->size());
      held_.clear();
      return out;
    }
  }
  // Hold back the longest suffix of held_ that is a proper prefix of some stop sequence.
  size_t keep = 0;
  for (const std::string& s : stops_)
    for (size_t len = std::min(s.size() - 1, held_.size()); len > keep; --len)
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopText::flush() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

}  // namespace mx8::runtime
