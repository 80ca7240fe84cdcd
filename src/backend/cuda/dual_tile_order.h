// The order in which the dual X / X^T quantizer (quantize_dual.cuh) visits its 128x128 tiles, as a
// plain function so that host tests can check it.
#pragma once

#include <cstdint>

#include "mx8/format/common.h"  // MX8_HD

namespace mx8::cuda::qdev {

// Tile (tm, tk) for the l-th block (or persistent step) of a tiles_m x tiles_k grid of tiles.
//  * group 0: tk fastest, a whole row of tiles after another (a 2-D grid's launch order);
//  * group G > 0: G rows of tiles at a time, tm fastest inside the group, so the blocks resident
//    together cover a G x (resident / G) patch and each row of X and of X^T receives neighbouring
//    128-byte pieces at about the same time (in group 0 they span the few rows of tiles that fit,
//    so a row of X^T gets only that few pieces per visit; docs/CUDA.md).
MX8_HD inline void dual_tile_of(int64_t l, int tiles_m, int tiles_k, int group, int& tm, int& tk) {
  if (group <= 0) {
    tm = static_cast<int>(l / tiles_k);
    tk = static_cast<int>(l % tiles_k);
    return;
  }
  const int64_t per_group = int64_t{group} * tiles_k;
  const int first_m = static_cast<int>(l / per_group) * group;
  const int rows = tiles_m - first_m < group ? tiles_m - first_m : group;  // the last group may be short
  const int64_t r = l % per_group;
  tm = first_m + static_cast<int>(r % rows);
  tk = static_cast<int>(r / rows);
}

}  // namespace mx8::cuda::qdev
