// A kernel for tests of programmatic dependent launch: it lets its dependents launch at once, then
// writes its outputs late, so a dependent that reads them before griddepcontrol.wait sees old bytes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

namespace mx8::cuda::test {

struct LateCopy {
  void* dst;
  const void* src;
  size_t bytes;  // a multiple of 16, both pointers 16-byte aligned
};

// One block on `s`: griddepcontrol.launch_dependents, `delay_us` microseconds of waiting, then the
// copies (at most 4).
void launch_late_copies(const std::vector<LateCopy>& copies, int delay_us, cudaStream_t s);

}  // namespace mx8::cuda::test
