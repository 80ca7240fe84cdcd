// Rows for testing Backend::argmax and Backend::top_k against the sampler's rules: random values, and
// the cases the rules decide: ties at the maximum, NaN anywhere, rows of NaN only, -inf, the maximum
// first or last, values on a coarse grid (ties everywhere, -0 beside +0), one column, a 128k vocabulary.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace mx8::test {

struct SelectionRows {
  int64_t cols = 0;
  std::vector<float> x;  // [rows][cols]
  int64_t rows() const { return int64_t(x.size()) / cols; }
};

inline std::vector<SelectionRows> selection_cases(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 4.0f);
  std::vector<SelectionRows> out;
  for (int64_t cols : {1, 7, 1000, 4099, 20001, 128256}) {
    SelectionRows c;
    c.cols = cols;
    const int rows = 10;
    c.x.resize(size_t(rows * cols));
    for (float& v : c.x) v = d(rng);
    auto row = [&](int r) { return c.x.data() + size_t(r) * size_t(cols); };
    std::uniform_int_distribution<int64_t> at(0, cols - 1);
    // Row 1: the maximum twice (or more), the lower index must win.
    {
      float* v = row(1);
      for (int i = 0; i < 3; ++i) v[at(rng)] = 100.0f;
    }
    // Row 2: NaN at random places, and at the front.
    {
      float* v = row(2);
      v[0] = NAN;
      for (int i = 0; i < 5; ++i) v[at(rng)] = NAN;
    }
    // Row 3: NaN only.
    for (int64_t i = 0; i < cols; ++i) row(3)[i] = NAN;
    // Row 4: -inf only (the first one wins), with a NaN first.
    for (int64_t i = 0; i < cols; ++i) row(4)[i] = -INFINITY;
    row(4)[0] = NAN;
    // Row 5: the maximum at the last column; row 6: at the first.
    row(5)[cols - 1] = 1e30f;
    row(6)[0] = 1e30f;
    // Row 7: all equal (every index ties).
    for (int64_t i = 0; i < cols; ++i) row(7)[i] = 0.5f;
    // Row 8: +inf beside NaN.
    row(8)[at(rng)] = INFINITY;
    row(8)[at(rng)] = NAN;
    // Row 9: multiples of 1/4 in [-2, 2] (so many equal values), zeros of both signs.
    for (int64_t i = 0; i < cols; ++i) row(9)[i] = float(int64_t(rng() % 17) - 8) / 4.0f;
    for (int i = 0; i < 3; ++i) row(9)[at(rng)] = -0.0f;
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace mx8::test
