// Scale-grid shapes and the exact conversions between scale storages (layout.h).
#include "mx8/format/layout.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <vector>

#include "mx8/error.h"
#include "mx8/format/ue8m0.h"

namespace mx8::format {

namespace {

std::optional<int64_t> parse_positive(std::string_view s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v <= 0) return std::nullopt;
  return v;
}

}  // namespace

std::string blocking_name(const Blocking& b) {
  switch (b.kind) {
    case Granularity::per_tensor:
      return "tensor";
    case Granularity::per_row:
      return "row";
    case Granularity::tile:
      return "1x" + std::to_string(b.block_cols);
    case Granularity::block:
    default:
      return std::to_string(b.block_rows) + "x" + std::to_string(b.block_cols);
  }
}

std::optional<Blocking> parse_blocking(std::string_view s) {
  if (s == "tensor" || s == "per-tensor") return Blocking::per_tensor();
  if (s == "row" || s == "per-row") return Blocking::per_row();
  size_t x = s.find('x');
  if (x == std::string_view::npos) return std::nullopt;
  auto r = parse_positive(s.substr(0, x)), c = parse_positive(s.substr(x + 1));
  if (!r || !c) return std::nullopt;
  if (*r == 1) return Blocking::tile(*c);
  if (*r == *c) return Blocking::block(*r);
  return std::nullopt;
}

const char* scale_storage_name(ScaleStorage s) {
  switch (s) {
    case ScaleStorage::f32:
      return "f32";
    case ScaleStorage::ue8m0:
      return "ue8m0";
    case ScaleStorage::ue8m0_packed4:
      return "ue8m0-packed4";
    case ScaleStorage::ue8m0_blackwell:
    default:
      return "ue8m0-blackwell";
  }
}

std::optional<ScaleStorage> parse_scale_storage(std::string_view s) {
  for (ScaleStorage v :
       {ScaleStorage::f32, ScaleStorage::ue8m0, ScaleStorage::ue8m0_packed4, ScaleStorage::ue8m0_blackwell})
    if (s == scale_storage_name(v)) return v;
  return std::nullopt;
}

void validate_blocking(const Blocking& b) {
  switch (b.kind) {
    case Granularity::per_tensor:
    case Granularity::per_row:
      return;
    case Granularity::tile:
      if (b.block_rows != 1 || b.block_cols <= 0)
        throw Error("tile blocking must be 1xK with K > 0, got " + std::to_string(b.block_rows) + "x" +
                    std::to_string(b.block_cols));
      return;
    case Granularity::block:
      if (b.block_rows <= 0 || b.block_rows != b.block_cols)
        throw Error("block blocking must be BxB with B > 0, got " + std::to_string(b.block_rows) + "x" +
                    std::to_string(b.block_cols));
      return;
  }
  throw Error("unknown granularity " + std::to_string(int(b.kind)));
}

void validate_storage(ScaleStorage s, const Blocking& b, int64_t rows, int64_t cols) {
  validate_blocking(b);
  if (rows < 0 || cols < 0)
    throw Error("negative tensor shape [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
  if (s == ScaleStorage::ue8m0_blackwell) {
    ScaleGrid g = scale_grid(b, rows, cols);
    if (g.block_cols % 32 != 0 && g.block_cols < cols)
      throw Error("ue8m0-blackwell storage needs blocks of a multiple of 32 columns (or whole rows), got " +
                  blocking_name(b));
  }
}

size_t scale_storage_bytes(ScaleStorage s, const Blocking& b, int64_t rows, int64_t cols) {
  ScaleGrid g = scale_grid(b, rows, cols);
  switch (s) {
    case ScaleStorage::f32:
      return size_t(g.rows * g.cols) * 4;
    case ScaleStorage::ue8m0:
      return size_t(g.rows * g.cols);
    case ScaleStorage::ue8m0_packed4:
      return size_t(g.rows * ceil_div(g.cols, 4)) * 4;
    case ScaleStorage::ue8m0_blackwell:
    default:
      return rows == 0 || cols == 0 ? 0 : size_t(blackwell_bytes(rows, cols));
  }
}

void scales_f32_to_ue8m0(const float* src, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    float v = src[i];
    if (f32_is_nan(v)) {
      dst[i] = 0xFF;
    } else if (f32_is_ue8m0_value(v)) {
      dst[i] = ue8m0_from_f32(v, Ue8m0Round::down, false);
    } else {
      char buf[128];
      std::snprintf(buf, sizeof buf, "scale %zu is %.9g (0x%08X), not a power of two in [2^-127, 2^127]", i,
                    double(v), f32_bits(v));
      throw Error(std::string(buf) + ": it has no exact UE8M0 form");
    }
  }
}

void scales_ue8m0_to_f32(const uint8_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) dst[i] = ue8m0_to_f32(src[i]);
}

void pack_ue8m0_scales(const uint8_t* grid, ScaleStorage to, const Blocking& b, int64_t rows, int64_t cols,
                       uint8_t* dst) {
  validate_storage(to, b, rows, cols);
  ScaleGrid g = scale_grid(b, rows, cols);
  switch (to) {
    case ScaleStorage::f32:
      throw Error("pack_ue8m0_scales: f32 is not a UE8M0 storage");
    case ScaleStorage::ue8m0:
      if (g.rows * g.cols != 0) std::memcpy(dst, grid, size_t(g.rows * g.cols));
      return;
    case ScaleStorage::ue8m0_packed4: {
      int64_t words = ceil_div(g.cols, 4);
      if (g.rows * words != 0) std::memset(dst, 0, size_t(g.rows * words * 4));
      // Byte i of word q is column 4q + i: in memory that is simply the row padded to a multiple of 4
      // (little-endian words), which is what makes the packing exact and trivially reversible.
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = 0; c < g.cols; ++c) dst[r * words * 4 + c] = grid[r * g.cols + c];
      return;
    }
    case ScaleStorage::ue8m0_blackwell: {
      int64_t ks = ceil_div(cols, 32);
      // An empty tensor has no scale bytes, and its caller may pass a null buffer.
      if (size_t n = scale_storage_bytes(to, b, rows, cols)) std::memset(dst, 0, n);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < ks; ++j)
          dst[blackwell_offset(r, j, ks)] = grid[(r / g.block_rows) * g.cols + (j * 32) / g.block_cols];
      return;
    }
  }
}

void unpack_ue8m0_scales(const uint8_t* src, ScaleStorage from, const Blocking& b, int64_t rows, int64_t cols,
                         uint8_t* grid) {
  validate_storage(from, b, rows, cols);
  ScaleGrid g = scale_grid(b, rows, cols);
  switch (from) {
    case ScaleStorage::f32:
      throw Error("unpack_ue8m0_scales: f32 is not a UE8M0 storage");
    case ScaleStorage::ue8m0:
      if (g.rows * g.cols != 0) std::memcpy(grid, src, size_t(g.rows * g.cols));
      return;
    case ScaleStorage::ue8m0_packed4: {
      int64_t words = ceil_div(g.cols, 4);
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = 0; c < g.cols; ++c) grid[r * g.cols + c] = src[r * words * 4 + c];
      return;
    }
    case ScaleStorage::ue8m0_blackwell: {
      // Each block's scale is read at its first row and first 32-column group; the expansion
      // replicated it everywhere else.
      int64_t ks = ceil_div(cols, 32);
      for (int64_t gr = 0; gr < g.rows; ++gr)
        for (int64_t gc = 0; gc < g.cols; ++gc)
          grid[gr * g.cols + gc] = src[blackwell_offset(gr * g.block_rows, gc * g.block_cols / 32, ks)];
      return;
    }
  }
}

void convert_scales(const void* src, ScaleStorage from, void* dst, ScaleStorage to, const Blocking& b,
                    int64_t rows, int64_t cols) {
  validate_storage(from, b, rows, cols);
  validate_storage(to, b, rows, cols);
  ScaleGrid g = scale_grid(b, rows, cols);
  size_t n = size_t(g.rows * g.cols);
  if (from == ScaleStorage::f32 && to == ScaleStorage::f32) {
    if (n) std::memcpy(dst, src, n * 4);
    return;
  }
  std::vector<uint8_t> grid(n);
  if (from == ScaleStorage::f32)
    scales_f32_to_ue8m0(static_cast<const float*>(src), n, grid.data());
  else
    unpack_ue8m0_scales(static_cast<const uint8_t*>(src), from, b, rows, cols, grid.data());
  if (to == ScaleStorage::f32)
    scales_ue8m0_to_f32(grid.data(), n, static_cast<float*>(dst));
  else
    pack_ue8m0_scales(grid.data(), to, b, rows, cols, static_cast<uint8_t*>(dst));
}

}  // namespace mx8::format
