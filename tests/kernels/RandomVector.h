// Seeded uniform test inputs for the kernel tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace sbpflow::test {

// `n` floats uniform in [lo, hi), the same for the same seed.
inline std::vector<float> randomVector(int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto &x : v)
    x = dist(rng);
  return v;
}

} // namespace sbpflow::test
