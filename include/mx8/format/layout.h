// Block granularities and scale storages. A tensor is a row-major [rows, cols] matrix whose last
// dimension (cols) is the reduction dimension K of the GEMM that consumes it. Its scales form a
// row-major grid [grid_rows, grid_cols] = [ceil(rows / block_rows), ceil(cols / block_cols)]; ragged
// edges are partial blocks. The grid is stored in one of four ways:
//
//   f32              one float32 per block (DeepSeek checkpoints' weight_scale_inv; any rule)
//   ue8m0            one UE8M0 byte per block, row-major grid (pow2 rules only)
//   ue8m0_packed4    4 UE8M0 per int32 along K: row r holds ceil(grid_cols / 4) little-endian words,
//                    byte i of word q = scale column 4q + i, zero-padded (DeepGEMM's packing; DeepGEMM
//                    also wants the words MN-major and TMA-aligned, a stride choice left to the caller)
//   ue8m0_blackwell  the 128x4 tiled layout of tcgen05 block-scaled MMA (cuBLASLt VEC32_UE8M0): the grid
//                    is first expanded to one scale per row and per 32 columns (j = k / 32), then byte
//                    (r, j) goes to blackwell_offset(r, j, ceil(cols / 32)); rows padded to 128 and
//                    scale columns to 4, padding bytes 0. Needs every 32-column group inside one block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mx8/format/common.h"

namespace mx8::format {

enum class Granularity : uint8_t { per_tensor, per_row, tile, block };

struct Blocking {
  Granularity kind = Granularity::tile;
  int64_t block_rows = 1;    // tile: 1; block: B; per_row: 1; per_tensor: ignored (whole tensor)
  int64_t block_cols = 128;  // tile: K; block: B; per_row / per_tensor: ignored (whole row)

  static constexpr Blocking per_tensor() { return {Granularity::per_tensor, 0, 0}; }
  static constexpr Blocking per_row() { return {Granularity::per_row, 1, 0}; }
  static constexpr Blocking tile(int64_t k) { return {Granularity::tile, 1, k}; }    // 1 x K along cols
  static constexpr Blocking block(int64_t b) { return {Granularity::block, b, b}; }  // B x B
};

// Names used by the CLI and docs: "tensor", "row", "1x128", "1x32", "128x128", "32x32" (any positive
// K and B parse; 128 and 32 are the ones consumers use).
std::string blocking_name(const Blocking& b);
std::optional<Blocking> parse_blocking(std::string_view s);

enum class ScaleStorage : uint8_t { f32, ue8m0, ue8m0_packed4, ue8m0_blackwell };
const char* scale_storage_name(ScaleStorage s);
std::optional<ScaleStorage> parse_scale_storage(std::string_view s);

struct ScaleGrid {
  int64_t rows = 0;        // grid rows
  int64_t cols = 0;        // grid columns (blocks along K)
  int64_t block_rows = 1;  // effective block extent for this tensor (per_tensor -> rows, cols)
  int64_t block_cols = 1;
};

MX8_HD constexpr int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The effective block shape and grid of `blocking` on a [rows, cols] tensor. Whole-tensor and
// whole-row extents become the tensor's own (at least 1, so that an empty tensor has an empty grid).
MX8_HD constexpr ScaleGrid scale_grid(const Blocking& b, int64_t rows, int64_t cols) {
  int64_t br = b.kind == Granularity::per_tensor ? (rows > 0 ? rows : 1) : b.block_rows;
  int64_t bc = (b.kind == Granularity::per_tensor || b.kind == Granularity::per_row) ? (cols > 0 ? cols : 1)
                                                                                     : b.block_cols;
  return {ceil_div(rows, br), ceil_div(cols, bc), br, bc};
}

// Blackwell 128x4 tile offset of scale (r, j) (row r, 32-column group j) for a matrix whose rows have
// ks = ceil(cols / 32) scale columns (numerics.md section 7; nvmath's examples: (5,2) -> 82, (5,5) -> 593
// with ks = 8).
MX8_HD constexpr int64_t blackwell_offset(int64_t r, int64_t j, int64_t ks) {
  int64_t kt = ceil_div(ks, 4);
  return ((r / 128) * kt + (j / 4)) * 512 + (r % 32) * 16 + ((r / 32) % 4) * 4 + (j % 4);
}
MX8_HD constexpr int64_t blackwell_bytes(int64_t rows, int64_t cols) {
  return ceil_div(rows, 128) * 128 * ceil_div(ceil_div(cols, 32), 4) * 4;
}

// Bytes of a scale grid in a storage, for a [rows, cols] tensor.
size_t scale_storage_bytes(ScaleStorage s, const Blocking& b, int64_t rows, int64_t cols);

// Throws mx8::Error when `b` is malformed (non-positive extents, tile rows != 1, block not square) or
// when `s` cannot hold its grid (Blackwell needs each 32-column group inside one block).
void validate_blocking(const Blocking& b);
void validate_storage(ScaleStorage s, const Blocking& b, int64_t rows, int64_t cols);

// Conversions between storages. The canonical forms are a row-major grid of UE8M0 bytes and a row-major
// grid of f32 values. f32 -> UE8M0 needs every value to be a power of two in [2^-127, 2^127] or NaN;
// anything else throws mx8::Error naming the first bad index and value.
void scales_f32_to_ue8m0(const float* src, size_t n, uint8_t* dst);
void scales_ue8m0_to_f32(const uint8_t* src, size_t n, float* dst);

// Row-major UE8M0 grid <-> a packed storage (ue8m0_packed4 or ue8m0_blackwell; ue8m0 is a copy).
void pack_ue8m0_scales(const uint8_t* grid, ScaleStorage to, const Blocking& b, int64_t rows, int64_t cols,
                       uint8_t* dst);
void unpack_ue8m0_scales(const uint8_t* src, ScaleStorage from, const Blocking& b, int64_t rows, int64_t cols,
                         uint8_t* grid);

// Any storage -> any storage (through the canonical grids). Throws where exactness is impossible
// (f32 values that are not powers of two into a UE8M0 storage).
void convert_scales(const void* src, ScaleStorage from, void* dst, ScaleStorage to, const Blocking& b,
                    int64_t rows, int64_t cols);

}  // namespace mx8::format
