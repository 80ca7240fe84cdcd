// One place that turns a launch's shape into cudaLaunchKernelEx's configuration: dynamic shared
// memory, thread block clusters along x and programmatic dependent launch (PDL). Every kernel launch
// that needs one of them goes through here, so the attributes are written once; callers check the
// returned error in their own style (the backend names the op, the GEMM library the call site).
#pragma once

#include <cuda_runtime.h>

namespace mx8::cuda {

// The cluster-dimension attribute for clusters of `x` blocks along x.
inline cudaLaunchAttribute cluster_dim_x(unsigned x) {
  cudaLaunchAttribute a{};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = x;
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  return a;
}

// A launch configuration: clusters of `cluster_x` blocks along x where cluster_x > 1, and the PDL
// attribute where `pdl` (the kernel may start while the one before it on the stream drains; it must
// call griddepcontrol.wait before reading that kernel's output). `attrs` must outlive the launch.
inline cudaLaunchConfig_t launch_config(dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                                        unsigned cluster_x, bool pdl, cudaLaunchAttribute (&attrs)[2]) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  unsigned n = 0;
  if (cluster_x > 1) attrs[n++] = cluster_dim_x(cluster_x);
  if (pdl) {
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cfg.attrs = attrs;
  cfg.numAttrs = n;
  return cfg;
}

// Launches `kernel` with launch_config's configuration; the arguments are converted to the kernel's
// parameter types first.
template <typename... KArgs, typename... Args>
cudaError_t launch_ex(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                      unsigned cluster_x, bool pdl, Args... args) {
  cudaLaunchAttribute attrs[2];
  const cudaLaunchConfig_t cfg = launch_config(grid, block, smem, s, cluster_x, pdl, attrs);
  return cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}

}  // namespace mx8::cuda
