// Kernel durations from CUPTI's activity trace: the time from the first kernel's start to the last
// kernel's end on the GPU, without the launch latency and event overhead that CUDA-event timing
// includes (a one-element kernel timed by events reads ~4 us on an H200). That is how the peer's
// "kernel time" figures were measured (DeepGEMM's bench_kineto, ../shared/research/deepgemm-h200.md),
// so the benchmarks report both. libcupti is loaded at run time: binaries start where it is absent.
#pragma once

#include <functional>
#include <string>

namespace mx8::cuda {

class KernelClock {
 public:
  // The process's clock (CUPTI's activity callbacks are process-wide), or nullptr with `why` set
  // when libcupti cannot be loaded or refuses kernel tracing.
  static KernelClock* get(std::string* why);

  // Runs `fn` (its launches on any stream) with kernel tracing on, waits for the device, and returns
  // the microseconds from the first traced kernel's start to the last one's end; NaN when `fn`
  // launched no kernel. Kernels queued before the call are waited for first and not counted.
  double span_us(const std::function<void()>& fn);

 private:
  KernelClock() = default;
};

}  // namespace mx8::cuda
