// Kernel durations from CUPTI's activity trace: the time the GPU spent running a call's kernels,
// without the launch latency and event overhead that CUDA-event timing includes (a one-element kernel
// timed by events reads ~4 us on an H200). That is how the peer's "kernel time" figures were measured
// (DeepGEMM's bench_kineto, ../shared/research/deepgemm-h200.md), so the benchmarks report both.
// Durations are summed, not spanned: tracing slows the host's launches, so a call of several kernels
// (cuBLASLt runs more than one for some shapes) would otherwise count the host's gaps between them (on
// the H200, 64 x 2112 x 7168 read 75 us first kernel start to last kernel end, 17.5 us by events).
// libcupti is loaded at run time: binaries start where it is absent.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "mx8/util/span_timeline.h"

namespace mx8::cuda {

class KernelClock {
 public:
  // The process's clock (CUPTI's activity callbacks are process-wide), or nullptr with `why` set
  // when libcupti cannot be loaded or refuses kernel tracing.
  static KernelClock* get(std::string* why);

  // Runs `fn` with kernel tracing on, waits for the device, and returns the sum of the durations
  // (start to end on the GPU) of the kernels it launched, in microseconds; NaN when it launched none,
  // or (`why` set, fn not run) when CUPTI refuses tracing, as it does while a profiler holds it.
  // Kernels queued before the call are waited for first and not counted. Kernels that run at the
  // same time on different streams are each counted whole.
  double busy_us(const std::function<void()>& fn, std::string* why = nullptr);

  // The same trace kept whole: every kernel `fn` launched ("<blocks>x<threads> <kernel name>", start
  // and end on the GPU's clock), ordered by start; empty (`why` set, fn not run) when CUPTI refuses
  // tracing.
  std::vector<Span> spans(const std::function<void()>& fn, std::string* why = nullptr);

 private:
  KernelClock() = default;
  // Runs fn traced; false (why set, fn not run) when tracing cannot be enabled.
  bool traced(const std::function<void()>& fn, bool keep_spans, std::string* why);
};

}  // namespace mx8::cuda
