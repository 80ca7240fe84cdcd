// Programmatic dependent launch (sm_90): a kernel launched with programmatic stream serialization
// may start while the kernel before it on the stream still runs. Without that launch attribute
// both instructions do nothing, so a kernel that uses them runs unchanged when launched plainly.
#pragma once

namespace mx8::cuda::ptx {

// Waits until the grids this one depends on have completed and their memory is visible.
__device__ __forceinline__ void griddep_wait() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}
// Lets the dependent grid launch (once every block of this grid has issued it or exited).
__device__ __forceinline__ void griddep_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

}  // namespace mx8::cuda::ptx
