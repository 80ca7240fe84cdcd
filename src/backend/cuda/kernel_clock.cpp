#include "backend/cuda/kernel_clock.h"

#include <cuda_runtime_api.h>
#include <cupti_activity.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <string>
#include <type_traits>

#include "backend/cuda/cuda_check.h"

namespace mx8::cuda {
namespace {

// libcupti's entry points, resolved by dlsym: linking it would make every binary need it.
struct Cupti {
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
};

// The kernel time the completed buffers held since the last reset: CUPTI delivers them on its own
// thread.
struct Trace {
  std::mutex mu;
  uint64_t busy_ns = 0;
  int kernels = 0;
  bool keep_spans = false;
  std::vector<Span> spans;
  Cupti api;
};
Trace& trace() {
  static Trace s;
  return s;
}

constexpr size_t kBufferBytes = size_t{1} << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  // CUPTI requires 8-byte aligned buffers.
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = *buffer ? kBufferBytes : 0;
  *max_records = 0;  // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  Trace& s = trace();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    CUpti_Activity* record = nullptr;
    while (s.api.next_record(buffer, valid, &record) == CUPTI_SUCCESS) {
      if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && record->kind != CUPTI_ACTIVITY_KIND_KERNEL)
        continue;
      const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
      s.busy_ns += k->end - k->start;
      ++s.kernels;
      if (s.keep_spans)  // the launch shape first: one kernel serves projections of several shapes
        s.spans.push_back({std::to_string(k->gridX * k->gridY * k->gridZ) + "x" +
                               std::to_string(k->blockX * k->blockY * k->blockZ) + " " +
                               kernel_display_name(k->name),
                           k->start, k->end});
    }
  }
  std::free(buffer);
}

// Loads libcupti and registers the buffer callbacks; an empty string means it worked.
std::string load(Cupti& api) {
  void* lib = dlopen("libcupti.so.13", RTLD_NOW | RTLD_LOCAL);
  if (!lib) lib = dlopen("libcupti.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return std::string("libcupti could not be loaded (") + dlerror() + ")";
  auto sym = [lib](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
    return fn != nullptr;
  };
  if (!sym(api.register_callbacks, "cuptiActivityRegisterCallbacks") ||
      !sym(api.enable, "cuptiActivityEnable") || !sym(api.disable, "cuptiActivityDisable") ||
      !sym(api.flush_all, "cuptiActivityFlushAll") || !sym(api.next_record, "cuptiActivityGetNextRecord"))
    return "libcupti lacks the activity API";
  const CUptiResult r = api.register_callbacks(buffer_requested, buffer_completed);
  if (r != CUPTI_SUCCESS)
    return "cuptiActivityRegisterCallbacks failed (CUPTI error " + std::to_string(r) + ")";
  return {};
}

}  // namespace

KernelClock* KernelClock::get(std::string* why) {
  static std::string error = load(trace().api);
  static KernelClock clock;
  if (!error.empty()) {
    if (why) *why = error;
    return nullptr;
  }
  return &clock;
}

bool KernelClock::traced(const std::function<void()>& fn, bool keep_spans, std::string* why) {
  Trace& s = trace();
  MX8_CUDA_CHECK(cudaDeviceSynchronize());
  s.api.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);  // nothing traced before this call is counted
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.busy_ns = 0;
    s.kernels = 0;
    s.keep_spans = keep_spans;
    s.spans.clear();
  }
  const CUptiResult r = s.api.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  if (r != CUPTI_SUCCESS) {  // e.g. a profiler (ncu, compute-sanitizer) already holds CUPTI
    if (why) *why = "cuptiActivityEnable failed (CUPTI error " + std::to_string(r) + ")";
    return false;
  }
  fn();
  MX8_CUDA_CHECK(cudaDeviceSynchronize());
  s.api.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  s.api.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);  // delivers every record of fn's kernels
  return true;
}

double KernelClock::busy_us(const std::function<void()>& fn, std::string* why) {
  if (!traced(fn, false, why)) return std::nan("");
  Trace& s = trace();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.kernels ? double(s.busy_ns) * 1e-3 : std::nan("");
}

std::vector<Span> KernelClock::spans(const std::function<void()>& fn, std::string* why) {
  if (!traced(fn, true, why)) return {};
  Trace& s = trace();
  std::lock_guard<std::mutex> lock(s.mu);
  std::vector<Span> out = std::move(s.spans);
  s.spans.clear();
  s.keep_spans = false;
  std::sort(out.begin(), out.end(), [](const Span& a, const Span& b) { return a.start_ns < b.start_ns; });
  return out;
}

}  // namespace mx8::cuda
