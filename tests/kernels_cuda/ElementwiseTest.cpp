// The elementwise CUDA kernels against kernels/cpu on random inputs.
#include "kernels/cuda/Elementwise.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/FloatBits.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ios>

namespace sbpflow::test {
namespace {

// Sizes that do not fill a block, a warp, or the grid-stride grid.
const int64_t kSizes[] = {1, 31, 257, 1000003};

// Runs `gpu` on device copies of x (and dy) in T and compares with `cpu` on
// the values T holds.
template <class T, class Gpu, class Cpu>
void unary(Gpu gpu, Cpu cpu, double tolerance, bool withGrad, double floor = 1e-3) {
  // The reference sees the values T holds; bf16 then differs only by the
  // rounding of the result (and fp32 arithmetic on both sides).
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    auto x = representable<T>(randomVector(n, 11, -4.f, 4.f));
    auto dy = representable<T>(randomVector(n, 12));
    std::vector<float> want(n);
    cpu(withGrad ? dy.data() : nullptr, x.data(), want.data(), n);
    DeviceBuffer<T> dx(asStorage<T>(x)), ddy(asStorage<T>(dy)), dout(n);
    ASSERT_OK(gpu(ddy.get(), dx.get(), dout.get(), n));
    std::vector<float> got = asFloat<T>(dout.download());
    EXPECT_LE(maxRelativeError(got, want, floor), tolerance);
  }
}

// unary on a forward kernel y = f(x), whose reference reads no dy.
template <class T>
void forward(Status (*gpu)(const T *, T *, int64_t, cudaStream_t),
             void (*cpu)(const float *, float *, int64_t), double tolerance) {
  unary<T>([gpu](const T *, const T *x, T *y, int64_t n) { return gpu(x, y, n, nullptr); },
           [cpu](const float *, const float *x, float *y, int64_t n) { cpu(x, y, n); }, tolerance,
           false);
}

// unary on a backward kernel dx = f(dy, x).
template <class T>
void backward(Status (*gpu)(const T *, const T *, T *, int64_t, cudaStream_t),
              void (*cpu)(const float *, const float *, float *, int64_t), double tolerance,
              double floor = 1e-3) {
  unary<T>([gpu](const T *dy, const T *x, T *dx, int64_t n) { return gpu(dy, x, dx, n, nullptr); },
           cpu, tolerance, true, floor);
}

template <class T> void allUnary(double tolerance) {
  forward<T>(cuda::relu<T>, cpu::relu, tolerance);
  // reluGrad reads the forward's output; relu of x is x where it is positive.
  backward<T>(cuda::reluGrad<T>, cpu::reluGrad, tolerance);
  forward<T>(cuda::gelu<T>, cpu::gelu, tolerance);
  // Phi(x) + x phi(x) cancels near x = -0.75 (terms of about 0.23, each
  // good to ~3e-8 on either side): with the default floor the n = 1e6 case
  // reads 4e-5 (measured on the CPU with glibc's erfcf / expf standing in).
  backward<T>(cuda::geluGrad<T>, cpu::geluGrad, tolerance, 0.1);
}

SBPFLOW_TEST_BOTH_PRECISIONS(CudaElementwise, Unary, allUnary)

TEST(CudaElementwise, BiasAddAndFusedBiasGelu) {
  SBPFLOW_REQUIRE_GPU();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 129}, {333, 1031}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    auto x = randomVector(rows * cols, 21, -3.f, 3.f), bias = randomVector(cols, 22);
    std::vector<float> pre(rows * cols), want(rows * cols);
    cpu::biasAdd(x.data(), bias.data(), pre.data(), rows, cols);
    cpu::gelu(pre.data(), want.data(), rows * cols);
    DeviceBuffer<float> dx(x), db(bias), dpre(rows * cols), dy(rows * cols), dsum(rows * cols);
    ASSERT_OK(cuda::biasAdd(dx.get(), db.get(), dsum.get(), rows, cols, nullptr));
    EXPECT_LE(maxRelativeError(dsum.download(), pre), kF32Tolerance);
    ASSERT_OK(cuda::biasGelu(dx.get(), db.get(), dpre.get(), dy.get(), rows, cols, nullptr));
    EXPECT_LE(maxRelativeError(dpre.download(), pre), kF32Tolerance);
    EXPECT_LE(maxRelativeError(dy.download(), want), kF32Tolerance);
  }
}

// The fused kernel is biasAdd then gelu bit for bit in T (a bf16 pre is
// rounded before its GELU, as the unfused gelu reads it), with or without pre
// kept: fused and unfused plans train identically.
template <class T> void fusedBiasGeluIsBiasAddThenGelu(double) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 129}, {333, 1031}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    const int64_t n = rows * cols;
    DeviceBuffer<T> dx(asStorage<T>(randomVector(n, 23, -5.f, 5.f))),
        db(asStorage<T>(randomVector(cols, 24, -2.f, 2.f))), sum(n), want(n), pre(n), y(n),
        yAlone(n);
    ASSERT_OK(cuda::biasAdd<T>(dx.get(), db.get(), sum.get(), rows, cols, nullptr));
    ASSERT_OK(cuda::gelu<T>(sum.get(), want.get(), n, nullptr));
    ASSERT_OK(cuda::biasGelu<T>(dx.get(), db.get(), pre.get(), y.get(), rows, cols, nullptr));
    ASSERT_OK(cuda::biasGelu<T>(dx.get(), db.get(), nullptr, yAlone.get(), rows, cols, nullptr));
    auto bytes = [](const std::vector<T> &v) {
      std::vector<uint8_t> b(v.size() * sizeof(T));
      std::memcpy(b.data(), v.data(), b.size());
      return b;
    };
    EXPECT_EQ(bytes(pre.download()), bytes(sum.download()));
    EXPECT_EQ(bytes(y.download()), bytes(want.download()));
    EXPECT_EQ(bytes(yAlone.download()), bytes(want.download()));
  }
}

SBPFLOW_TEST_BOTH_PRECISIONS(CudaElementwise, FusedBiasGeluIsBiasAddThenGelu,
                             fusedBiasGeluIsBiasAddThenGelu)

TEST(CudaElementwise, AddFillAndCasts) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 100003;
  auto a = randomVector(n, 31), b = randomVector(n, 32);
  std::vector<float> want(n);
  cpu::add(a.data(), b.data(), want.data(), n);
  DeviceBuffer<float> da(a), db(b), dy(n);
  ASSERT_OK(cuda::add(da.get(), db.get(), dy.get(), n, nullptr));
  EXPECT_LE(maxRelativeError(dy.download(), want), kF32Tolerance);

  ASSERT_OK(cuda::fill(dy.get(), 0.25f, n, nullptr));
  EXPECT_EQ(dy.download(), std::vector<float>(n, 0.25f));

  // fp32 -> bf16 rounds to nearest even, as the host conversion; back is exact.
  DeviceBuffer<bf16> half(n);
  ASSERT_OK(cuda::castToBf16(da.get(), half.get(), n, nullptr));
  ASSERT_OK(cuda::castToFloat(half.get(), dy.get(), n, nullptr));
  EXPECT_EQ(dy.download(), roundedToBf16(a));
}

// bitsOf(float) from FloatBits.h, overloaded here for bf16.
using sbpflow::test::bitsOf;
uint16_t bitsOf(bf16 x) { return static_cast<__nv_bfloat16_raw>(x).x; }
bf16 bf16Of(uint16_t b) {
  __nv_bfloat16_raw raw;
  raw.x = b;
  return bf16(raw);
}
bool isBf16NaN(uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0; }

// The Cast op's kernels, bit for bit: fp32 -> bf16 rounds to nearest, ties
// to even, overflows to inf and keeps NaN a NaN (a signalling NaN whose
// payload sits in the dropped bits must not become inf); bf16 -> fp32 is
// exact for every one of the 65536 patterns.
TEST(CudaElementwise, CastsRoundToNearestEvenAndKeepNaN) {
  SBPFLOW_REQUIRE_GPU();
  struct Case {
    uint32_t in;
    uint16_t want;
  };
  const std::vector<Case> cases = {
      {0x3f800000u, 0x3f80u}, // 1
      {0x3f808000u, 0x3f80u}, // 1 + 2^-8: a tie, to the even 1
      {0x3f818000u, 0x3f82u}, // 1 + 3 * 2^-8: a tie, to the even 1 + 2^-6
      {0x3f808001u, 0x3f81u}, // just above the tie: up
      {0x3f807fffu, 0x3f80u}, // just below it: down
      {0xbf808000u, 0xbf80u}, // -(1 + 2^-8): a tie, to -1
      {0x80000000u, 0x8000u}, // -0 keeps its sign
      {0x00000001u, 0x0000u}, // the smallest fp32 subnormal: to 0
      {0x00008000u, 0x0000u}, // a subnormal tie, to the even 0
      {0x00018000u, 0x0002u}, // a subnormal tie, to the even 2
      {0x7f7f7fffu, 0x7f7fu}, // below the tie above bf16's largest: its largest
      {0x7f7fffffu, 0x7f80u}, // fp32's largest: overflows to inf
      {0x7f800000u, 0x7f80u}, // inf
      {0xff800000u, 0xff80u}, // -inf
  };
  const std::vector<uint32_t> nans = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu,
                                      0xff800001u};
  std::vector<float> x;
  for (const Case &c : cases)
    x.push_back(floatOf(c.in));
  for (uint32_t n : nans)
    x.push_back(floatOf(n));
  const int64_t n = static_cast<int64_t>(x.size());
  DeviceBuffer<float> dx(x);
  DeviceBuffer<bf16> dy(n);
  ASSERT_OK(cuda::castToBf16(dx.get(), dy.get(), n, nullptr));
  const std::vector<bf16> got = dy.download();
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(bitsOf(got[i]), cases[i].want) << std::hex << "fp32 0x" << cases[i].in;
  for (size_t i = 0; i < nans.size(); ++i)
    EXPECT_TRUE(isBf16NaN(bitsOf(got[cases.size() + i])))
        << std::hex << "fp32 0x" << nans[i] << " became bf16 0x" << bitsOf(got[cases.size() + i]);

  // Every bf16 pattern widens to the fp32 with the same top 16 bits (NaNs:
  // some NaN), and a non-NaN one rounds back to itself.
  std::vector<bf16> all(65536);
  for (uint32_t b = 0; b < 65536; ++b)
    all[b] = bf16Of(static_cast<uint16_t>(b));
  DeviceBuffer<bf16> dall(all), back(all.size());
  DeviceBuffer<float> wide(all.size());
  ASSERT_OK(cuda::castToFloat(dall.get(), wide.get(), 65536, nullptr));
  ASSERT_OK(cuda::castToBf16(wide.get(), back.get(), 65536, nullptr));
  const std::vector<float> widened = wide.download();
  const std::vector<bf16> rounded = back.download();
  int wrong = 0;
  for (uint32_t b = 0; b < 65536 && wrong < 10; ++b) {
    const uint16_t h = static_cast<uint16_t>(b);
    if (isBf16NaN(h)) {
      if (!std::isnan(widened[b]) || !isBf16NaN(bitsOf(rounded[b]))) {
        ADD_FAILURE() << std::hex << "bf16 NaN 0x" << b << " did not stay a NaN";
        ++wrong;
      }
      continue;
    }
    if (bitsOf(widened[b]) != (b << 16) || bitsOf(rounded[b]) != h) {
      ADD_FAILURE() << std::hex << "bf16 0x" << b << " widened to 0x" << bitsOf(widened[b])
                    << ", back to 0x" << bitsOf(rounded[b]);
      ++wrong;
    }
  }
}

// Local SGD's pseudo-gradient and Scale round once each: the CPU's bits,
// subnormal results included (neither side flushes them).
TEST(CudaElementwise, SubtractAndScaleMatchTheCpuBitForBit) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    auto a = randomVector(n, 31), b = randomVector(n, 32, -1e-3f, 1e-3f);
    const float special[] = {1e-38f, -3e-39f, -0.f, 3.4e38f};
    for (int64_t i = 0; i < n && i < 4; ++i)
      a[i] = special[i];
    const float factor = 0.37f;
    std::vector<float> diff(n), scaled(n);
    cpu::subtract(a.data(), b.data(), diff.data(), n);
    cpu::scale(a.data(), factor, scaled.data(), n);
    DeviceBuffer<float> da(a), db(b), ddiff(n), dscaled(n);
    ASSERT_OK(cuda::subtract(da.get(), db.get(), ddiff.get(), n, nullptr));
    ASSERT_OK(cuda::scale(da.get(), factor, dscaled.get(), n, nullptr));
    EXPECT_EQ(ddiff.download(), diff);
    EXPECT_EQ(dscaled.download(), scaled);
  }
}

TEST(CudaElementwise, EmptyTensorsLaunchNothing) {
  SBPFLOW_REQUIRE_GPU();
  ASSERT_OK(cuda::relu<float>(nullptr, nullptr, 0, nullptr));
  ASSERT_OK(cuda::biasAdd<float>(nullptr, nullptr, nullptr, 0, 5, nullptr));
  ASSERT_OK(cuda::castToBf16(nullptr, nullptr, 0, nullptr));
  ASSERT_OK(cuda::castToFloat(nullptr, nullptr, 0, nullptr));
  ASSERT_OK(cuda::subtract(nullptr, nullptr, nullptr, 0, nullptr));
  ASSERT_OK(cuda::scale(nullptr, 1.f, nullptr, 0, nullptr));
}

} // namespace
} // namespace sbpflow::test
