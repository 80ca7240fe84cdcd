// Error handling for CUDA runtime calls: every call is checked and a failure becomes mx8::Error
// naming the call, the file:line and the CUDA error string.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "mx8/error.h"

namespace mx8::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  throw mx8::Error(std::string("CUDA error in ") + what + " at " + file + ":" + std::to_string(line) + ": " +
                   cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

}  // namespace mx8::cuda

#define MX8_CUDA_CHECK(call)                                                                   \
  do {                                                                                         \
    cudaError_t mx8_err_ = (call);                                                             \
    if (mx8_err_ != cudaSuccess) ::mx8::cuda::throw_cuda(mx8_err_, #call, __FILE__, __LINE__); \
  } while (0)
