#pragma once
// Test inputs and comparisons of float vectors that several test files share.

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace mx8::test {

// n values of N(0, scale^2), the same for the same seed.
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Equal bit for bit (so NaNs with the same payload are equal, and +0 differs from -0).
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace mx8::test
