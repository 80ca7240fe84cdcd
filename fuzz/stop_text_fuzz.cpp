// libFuzzer target: stop sequences over streamed text. The input is split into stop sequences and a
// text (at 0xff bytes: the first three pieces are stops, the rest is text), and the text is pushed in
// pieces whose lengths come from the input too. Checked against the same text pushed one byte at a
// time: the shown text and the matched stop are the same however the text is cut (tokens cut it
// anywhere), the shown text is a prefix of the text, it is followed there by the matched stop, and
// without a stop everything is shown.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "mx8/runtime/stop_text.h"

namespace {

struct Result {
  std::string shown, matched;
  bool stopped;
};

Result run(const std::vector<std::string>& stops, const std::string& text, const std::vector<size_t>& cuts) {
  mx8::runtime::StopText st(stops);
  Result r;
  size_t pos = 0;
  for (size_t k = 0; pos < text.size(); ++k) {
    const size_t len = cuts.empty() ? 1 : 1 + cuts[k % cuts.size()];
    r.shown += st.push(text.substr(pos, len));
    pos += len;
  }
  r.shown += st.flush();
  r.stopped = st.stopped();
  r.matched = st.matched();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0xff && parts.size() < 4)
      parts.emplace_back();
    else
      parts.back() += char(data[i]);
  }
  if (parts.size() < 4) return 0;
  const std::string text = parts[3];
  std::vector<std::string> stops(parts.begin(), parts.begin() + 3);
  std::vector<size_t> cuts;
  for (unsigned char c : parts[0]) cuts.push_back(c % 7);  // piece lengths 1..7 (the first stop's bytes)

  const Result bytewise = run(stops, text, {});
  const Result cut = run(stops, text, cuts);
  if (cut.shown != bytewise.shown || cut.stopped != bytewise.stopped || cut.matched != bytewise.matched)
    std::abort();
  if (text.compare(0, cut.shown.size(), cut.shown) != 0) std::abort();
  if (cut.stopped && text.compare(cut.shown.size(), cut.matched.size(), cut.matched) != 0) std::abort();
  if (!cut.stopped && cut.shown != text) std::abort();
  return 0;
}
