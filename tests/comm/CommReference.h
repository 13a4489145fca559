// What the communicator tests of both backends share: per element type
// (F32, BF16, I32, U8) its storage, the values rank r contributes, and the
// reference arithmetic their results are checked against, exactly.
#pragma once

#include "runtime/Shape.h"
#include "runtime/comm/Communicator.h"
#include "tests/kernels/FloatBits.h"

#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace sbpflow::commtest {

// Waits until `n` threads have arrived.
class Barrier {
public:
  explicit Barrier(int n) : left_(n) {}
  void arriveAndWait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (--left_ == 0)
      done_.notify_all();
    done_.wait(lock, [this] { return left_ == 0; });
  }

private:
  std::mutex mutex_;
  std::condition_variable done_;
  int left_;
};

// Storage, test values and reference arithmetic of one element type. The
// values make every f32 and bf16 partial sum exact, so the reference does not
// depend on the order in which a ring adds; I32 and U8 sums wrap (the values
// are large enough that they do).
template <plan::DType D> struct Elem;
template <> struct Elem<plan::DType::F32> {
  using T = float;
  static T value(int r, int64_t i) {
    return static_cast<float>((r * 37 + i * 11) % 201 - 100) * 0.25f;
  }
  static T add(T a, T b) { return a + b; }
  static bool less(T a, T b) { return a < b; }
};
// bf16 bits, its f32 value and a reference rounding (nearest, ties to even)
// written independently of the communicator's.
inline float bf16Value(uint16_t bits) { return test::floatOf(static_cast<uint32_t>(bits) << 16); }
inline uint16_t roundToBf16(float x) {
  const uint32_t w = test::bitsOf(x);
  const uint16_t down = static_cast<uint16_t>(w >> 16), up = static_cast<uint16_t>(down + 1);
  const double dDown = std::abs(double(x) - bf16Value(down)),
               dUp = std::abs(double(x) - bf16Value(up));
  if (dDown != dUp)
    return dDown < dUp ? down : up;
  return (down & 1) ? up : down;
}
inline uint16_t toBf16Exact(float x) {
  const uint16_t b = roundToBf16(x);
  EXPECT_EQ(bf16Value(b), x) << "test value not exact in bf16";
  return b;
}
template <> struct Elem<plan::DType::BF16> {
  using T = uint16_t;
  // Integers in [-40, 40]: sums over three ranks stay exact in bf16.
  static T value(int r, int64_t i) {
    return toBf16Exact(static_cast<float>((r * 7 + i * 3) % 81 - 40));
  }
  static T add(T a, T b) { return roundToBf16(bf16Value(a) + bf16Value(b)); }
  static bool less(T a, T b) { return bf16Value(a) < bf16Value(b); }
};
inline uint32_t mix(int r, int64_t i) {
  uint64_t x = static_cast<uint64_t>(r) * 0x9E3779B97F4A7C15ull +
               static_cast<uint64_t>(i) * 0xBF58476D1CE4E5B9ull + 1;
  x ^= x >> 31;
  x *= 0x94D049BB133111EBull;
  return static_cast<uint32_t>(x >> 29);
}
template <> struct Elem<plan::DType::I32> {
  using T = int32_t;
  static T value(int r, int64_t i) { return static_cast<int32_t>(mix(r, i)); }
  static T add(T a, T b) {
    return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
  }
  static bool less(T a, T b) { return a < b; }
};
template <> struct Elem<plan::DType::U8> {
  using T = uint8_t;
  static T value(int r, int64_t i) { return static_cast<uint8_t>(mix(r, i)); }
  static T add(T a, T b) { return static_cast<uint8_t>(a + b); }
  static bool less(T a, T b) { return a < b; }
};

template <plan::DType D> typename Elem<D>::T reduceRef(int n, int64_t i, ReduceOp op) {
  using E = Elem<D>;
  typename E::T acc = E::value(0, i);
  for (int q = 1; q < n; ++q) {
    const typename E::T v = E::value(q, i);
    if (op == ReduceOp::Sum)
      acc = E::add(acc, v);
    else if (op == ReduceOp::Max ? E::less(acc, v) : E::less(v, acc))
      acc = v;
  }
  return acc;
}

inline const char *opName(ReduceOp op) {
  return op == ReduceOp::Sum ? "sum" : op == ReduceOp::Max ? "max" : "min";
}

// The counts of `total` elements in balanced chunks over `ranks` ranks: what
// a collective that takes chunks is given.
inline std::vector<int64_t> balancedCounts(int64_t total, int ranks) {
  std::vector<int64_t> counts(ranks);
  for (int q = 0; q < ranks; ++q)
    counts[q] = balancedChunk(total, ranks, q).size;
  return counts;
}

// How a failure of the typed case (type D, `ranks` ranks, `total` elements)
// begins its message.
template <plan::DType D> std::string caseName(int ranks, int64_t total) {
  return std::string(plan::EnumNameDType(D)) + " on " + std::to_string(ranks) + " ranks, " +
         std::to_string(total) + " elements: ";
}

} // namespace sbpflow::commtest
