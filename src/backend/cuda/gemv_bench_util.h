// L2 preparation for the GEMV benchmark (`mx8 bench gemv-cuda`).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace mx8::cuda {

// Reads `bytes` of `buf` (16-byte aligned, bytes % 16 == 0) on `s`. After an L2 flush that writes a
// large buffer, L2 is full of dirty lines; a product timed right then pays for writing them back
// (~L2 size, 50-60 MB, ~12 us on an H200) as its reads evict them. Reading a buffer larger than L2
// first leaves L2 cold and clean, as in a decode step, where L2 holds the previous layer's weights.
void l2_read_through(const void* buf, size_t bytes, cudaStream_t s);

}  // namespace mx8::cuda
