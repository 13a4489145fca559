// The elementwise CUDA kernels against kernels/cpu on random inputs.
#include "kernels/cuda/Elementwise.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

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

template <class T> void allUnary(double tolerance) {
  unary<T>([](const T *, const T *x, T *y, int64_t n) { return cuda::relu(x, y, n, nullptr); },
           [](const float *, const float *x, float *y, int64_t n) { cpu::relu(x, y, n); },
           tolerance, false);
  // reluGrad reads the forward's output; relu of x is x where it is positive.
  unary<T>(
      [](const T *dy, const T *x, T *dx, int64_t n) {
        return cuda::reluGrad(dy, x, dx, n, nullptr);
      },
      [](const float *dy, const float *x, float *dx, int64_t n) { cpu::reluGrad(dy, x, dx, n); },
      tolerance, true);
  unary<T>([](const T *, const T *x, T *y, int64_t n) { return cuda::gelu(x, y, n, nullptr); },
           [](const float *, const float *x, float *y, int64_t n) { cpu::gelu(x, y, n); },
           tolerance, false);
  unary<T>(
      [](const T *dy, const T *x, T *dx, int64_t n) {
        return cuda::geluGrad(dy, x, dx, n, nullptr);
      },
      [](const float *dy, const float *x, float *dx, int64_t n) { cpu::geluGrad(dy, x, dx, n); },
      // Phi(x) + x phi(x) cancels near x = -0.75 (terms of about 0.23, each
      // good to ~3e-8 on either side): with the default floor the n = 1e6 case
      // reads 4e-5 (measured on the CPU with glibc's erfcf / expf standing in).
      tolerance, true, 0.1);
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

TEST(CudaElementwise, EmptyTensorsLaunchNothing) {
  SBPFLOW_REQUIRE_GPU();
  ASSERT_OK(cuda::relu<float>(nullptr, nullptr, 0, nullptr));
  ASSERT_OK(cuda::biasAdd<float>(nullptr, nullptr, nullptr, 0, 5, nullptr));
}

} // namespace
} // namespace sbpflow::test
