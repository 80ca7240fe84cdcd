// Host-side creation of TMA tensor maps. cuTensorMapEncodeTiled is a driver API function; it is
// looked up at run time through the runtime (cudaGetDriverEntryPointByVersion) so that nothing
// links libcuda.so.1: the CUDA test and CLI binaries must start on machines without a driver
// (CI), where they skip.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace mx8::cuda {

// A 2D row-major tensor [rows][cols] of `elem_bytes`-byte elements (1: uint8, 4: float32), row
// stride `ld` elements; box [box_rows][box_cols]. swizzle128: the 128-byte swizzle wgmma reads.
CUtensorMap make_tensor_map_2d(const void* base, int elem_bytes, uint64_t rows, uint64_t cols, uint64_t ld,
                               uint32_t box_rows, uint32_t box_cols, bool swizzle128);

}  // namespace mx8::cuda
