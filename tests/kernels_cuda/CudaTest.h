// What the CUDA kernel tests share: skip (with the reason) where no GPU is
// present, device buffers, and comparison against the CPU kernels.
#pragma once

#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace sbpflow::test {

// Empty when a CUDA device is usable, else why not.
inline std::string noGpuReason() {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    return std::string("no usable CUDA device: ") + cudaGetErrorName(e) + " (" +
           cudaGetErrorString(e) + ")";
  if (count == 0)
    return "no CUDA device";
  return "";
}

// First statement of every GPU test.
#define SBPFLOW_REQUIRE_GPU()                                                                      \
  do {                                                                                             \
    if (std::string why = ::sbpflow::test::noGpuReason(); !why.empty())                            \
      GTEST_SKIP() << why;                                                                         \
  } while (0)

#define ASSERT_CUDA(expr)                                                                          \
  do {                                                                                             \
    cudaError_t e_ = (expr);                                                                       \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_);                         \
  } while (0)

#define ASSERT_OK(expr)                                                                            \
  do {                                                                                             \
    ::sbpflow::Status s_ = (expr);                                                                 \
    ASSERT_TRUE(s_.isOk()) << #expr << ": " << s_.message();                                       \
  } while (0)

// A device array of T; copies to and from host vectors (synchronous).
template <class T> class DeviceBuffer {
public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (cudaMalloc(reinterpret_cast<void **>(&ptr_), std::max<size_t>(n, 1) * sizeof(T)) !=
        cudaSuccess)
      ptr_ = nullptr;
  }
  explicit DeviceBuffer(const std::vector<T> &host) : DeviceBuffer(host.size()) {
    if (ptr_ && !host.empty())
      cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;

  T *get() const { return ptr_; }
  size_t size() const { return n_; }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    // A fault inside a kernel surfaces here (launches are asynchronous): name
    // it, rather than let it read as a wrong result.
    if (cudaError_t e = cudaDeviceSynchronize(); e != cudaSuccess)
      ADD_FAILURE() << "a kernel before this download failed: " << cudaGetErrorName(e) << " ("
                    << cudaGetErrorString(e) << ")";
    if (!ptr_)
      ADD_FAILURE() << "download of a buffer whose cudaMalloc failed";
    else if (n_)
      if (cudaError_t e = cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
          e != cudaSuccess)
        ADD_FAILURE() << "download: " << cudaGetErrorName(e);
    return host;
  }

private:
  T *ptr_ = nullptr;
  size_t n_;
};

inline std::vector<__nv_bfloat16> toBf16(const std::vector<float> &x) {
  std::vector<__nv_bfloat16> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = __float2bfloat16_rn(x[i]);
  return y;
}
inline std::vector<float> toFloat(const std::vector<__nv_bfloat16> &x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    y[i] = __bfloat162float(x[i]);
  return y;
}
// The values a bf16 tensor holds: what the CPU reference should see.
inline std::vector<float> roundedToBf16(const std::vector<float> &x) { return toFloat(toBf16(x)); }

using bf16 = __nv_bfloat16;

// Host data in a kernel's storage type T (float or bf16), and back.
template <class T> std::vector<T> asStorage(const std::vector<float> &x) {
  if constexpr (std::is_same_v<T, bf16>)
    return toBf16(x);
  else
    return x;
}
template <class T> std::vector<float> asFloat(const std::vector<T> &x) {
  if constexpr (std::is_same_v<T, bf16>)
    return toFloat(x);
  else
    return x;
}
// The values T can hold nearest to x (bf16 rounds; float keeps x).
template <class T> std::vector<float> representable(const std::vector<float> &x) {
  return asFloat<T>(asStorage<T>(x));
}

// Largest |got - want| / (|want| + floor) over the elements: the issue's
// bound is 1e-5 for fp32, 1e-2 for bf16. `floor` keeps elements near zero
// (where relative error means nothing) from dominating.
inline double maxRelativeError(const std::vector<float> &got, const std::vector<float> &want,
                               double floor = 1e-3) {
  double worst = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    double d = std::fabs(static_cast<double>(got[i]) - want[i]) / (std::fabs(want[i]) + floor);
    if (!(d <= worst)) // NaN counts as worst
      worst = std::isnan(d) ? INFINITY : d;
  }
  return got.size() == want.size() ? worst : INFINITY;
}

// max |got - want| / max |want|: for outputs that are sums of terms of both
// signs (matrix products, attention, column sums), which cancel to near zero
// in places, where an elementwise relative error measures only the rounding
// of the terms; relative to the largest entry it measures the kernel.
inline double normRelativeError(const std::vector<float> &got, const std::vector<float> &want) {
  if (got.size() != want.size())
    return INFINITY;
  double err = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (std::isnan(d))
      return INFINITY;
    err = std::max(err, d);
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  return scale > 0 ? err / scale : err;
}

constexpr double kF32Tolerance = 1e-5;
constexpr double kBf16Tolerance = 1e-2;

// Suite.NameF32 and Suite.NameBf16: `check<T>(tolerance)` in each precision,
// at that precision's bound.
#define SBPFLOW_TEST_BOTH_PRECISIONS(Suite, Name, check)                                           \
  TEST(Suite, Name##F32) {                                                                         \
    SBPFLOW_REQUIRE_GPU();                                                                         \
    check<float>(::sbpflow::test::kF32Tolerance);                                                  \
  }                                                                                                \
  TEST(Suite, Name##Bf16) {                                                                        \
    SBPFLOW_REQUIRE_GPU();                                                                         \
    check<::sbpflow::test::bf16>(::sbpflow::test::kBf16Tolerance);                                 \
  }

} // namespace sbpflow::test
