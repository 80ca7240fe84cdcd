// Where the time of overlapping spans goes, e.g. a decode step's kernels, which overlap where one is
// launched as a programmatic dependent of the one before. Taken in order of start, each span is
// credited with the part of the timeline it adds past the latest end before it (its exposed time),
// and the idle time between that end and its start (its gap). A run's exposed times and gaps add up
// to its first start to its last end, so the exposed column says what each span costs the run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mx8 {

struct Span {
  std::string name;
  uint64_t start_ns = 0, end_ns = 0;
};

// A kernel's symbol as a row name: "void ns::kernel<args>(params)" -> "kernel<args>" (demangled, without
// the return type, the namespaces and the parameter list; the symbol itself where it does not demangle).
std::string kernel_display_name(const char* mangled);

// One row per name, over runs that repeat the same sequence (one per decode step): means per run.
struct SpanSummary {
  std::string name;
  size_t first_index = 0;  // where the name first appears in a run: rows come in this order
  double count = 0;        // spans of this name per run
  double busy_us = 0;      // their durations, summed
  double exposed_us = 0;
  double gap_us = 0;
};

// `runs`: each a list of spans ordered by start. Rows in order of first appearance in any run.
std::vector<SpanSummary> summarize_spans(const std::vector<std::vector<Span>>& runs);

}  // namespace mx8
