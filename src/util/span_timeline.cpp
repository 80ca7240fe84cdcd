#include "mx8/util/span_timeline.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <map>

namespace mx8 {

std::string kernel_display_name(const char* mangled) {
  if (!mangled) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : mangled;
  std::free(d);
  if (s.rfind("void ", 0) == 0) s.erase(0, 5);
  if (!s.empty() && s.back() == ')') {  // cut at the '(' that opens the parameter list
    int depth = 0;
    for (size_t i = s.size(); i-- > 0;) {
      depth += s[i] == ')' ? 1 : s[i] == '(' ? -1 : 0;
      if (depth == 0) {
        s.resize(i);
        break;
      }
    }
  }
  const size_t scope = s.rfind("::", s.find('<'));  // namespaces off: the kernel's own name is enough
  if (scope != std::string::npos) s.erase(0, scope + 2);
  return s;
}

std::vector<SpanSummary> summarize_spans(const std::vector<std::vector<Span>>& runs) {
  std::vector<SpanSummary> rows;
  std::map<std::string, size_t> row_of;
  for (const std::vector<Span>& run : runs) {
    uint64_t latest_end = run.empty() ? 0 : run.front().start_ns;
    for (size_t i = 0; i < run.size(); ++i) {
      const Span& s = run[i];
      auto [it, added] = row_of.try_emplace(s.name, rows.size());
      if (added) rows.push_back({s.name, i});
      SpanSummary& r = rows[it->second];
      r.first_index = std::min(r.first_index, i);
      r.count += 1;
      r.busy_us += double(s.end_ns - s.start_ns) * 1e-3;
      if (s.start_ns > latest_end) r.gap_us += double(s.start_ns - latest_end) * 1e-3;
      if (s.end_ns > latest_end) {
        r.exposed_us += double(s.end_ns - std::max(s.start_ns, latest_end)) * 1e-3;
        latest_end = s.end_ns;
      }
    }
  }
  const double n = runs.empty() ? 1.0 : double(runs.size());
  for (SpanSummary& r : rows) {
    r.count /= n;
    r.busy_us /= n;
    r.exposed_us /= n;
    r.gap_us /= n;
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const SpanSummary& a, const SpanSummary& b) { return a.first_index < b.first_index; });
  return rows;
}

}  // namespace mx8
