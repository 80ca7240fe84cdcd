#include "backend/cuda/device_info.h"

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_check.h"

namespace mx8::cuda {

int num_sms() {
  static int cached[16] = {};
  int dev = 0;
  MX8_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 16 && cached[dev] > 0) return cached[dev];
  int sms = 0;
  MX8_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (dev < 16) cached[dev] = sms;
  return sms;
}

bool device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return false;
  }
  return count > 0;
}

}  // namespace mx8::cuda
