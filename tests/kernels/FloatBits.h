// A float's bits and the float of given bits, for the kernel tests that walk
// bit patterns (bf16 rounding, NaN payloads) on the CPU and on the GPU.
#pragma once

#include <cstdint>
#include <cstring>

namespace sbpflow::test {

inline uint32_t bitsOf(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

inline float floatOf(uint32_t b) {
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

} // namespace sbpflow::test
