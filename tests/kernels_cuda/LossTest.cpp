// The loss, metric and reduction CUDA kernels against kernels/cpu on random
// inputs of awkward sizes.
#include "kernels/cuda/Loss.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "kernels/cuda/Elementwise.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <utility>

namespace sbpflow::test {
namespace {

// rows x classes: a single element, warp-per-row widths (up to 512), the
// first block-per-row width, a 50k-class vocabulary, many narrow rows.
const std::pair<int64_t, int64_t> kShapes[] = {{1, 1},     {37, 10},  {19, 512}, {13, 513},
                                               {3, 50021}, {1000, 3}, {5, 1031}, {1, 4096 + 7}};

// Labels in [0, classes), about one in eight -1 (padding).
std::vector<int32_t> randomLabels(int64_t rows, int64_t classes, uint64_t seed) {
  auto pad = randomVector(rows, seed, 0.f, 1.f), pick = randomVector(rows, seed + 1, 0.f, 1.f);
  std::vector<int32_t> labels(rows);
  for (int64_t i = 0; i < rows; ++i)
    labels[i] = pad[i] < 0.125f ? -1
                                : static_cast<int32_t>(std::min<int64_t>(
                                      classes - 1, static_cast<int64_t>(pick[i] * classes)));
  return labels;
}

// Multiples of 2^-bits in [-1, 1]. Sums of up to 2^(24 - bits) of them are
// exact in fp32 (their squares in double) in any order, so a GPU sum must
// equal the CPU's bit for bit; bits <= 6 are also exact in bf16.
std::vector<float> dyadicVector(int64_t n, uint64_t seed, int bits) {
  auto v = randomVector(n, seed);
  const float scale = static_cast<float>(1 << bits);
  for (float &x : v)
    x = std::round(x * scale) / scale;
  return v;
}

// The loss (log-sum-exp minus a logit) and its gradient ((p - 1) dloss at the
// label) are differences of O(1) terms: float resolves them to about 1e-7
// absolute, whichever order the sums run in. The floor of the relative error
// is set to keep that resolution from reading as a relative error.
constexpr double kCancellationFloor = 0.1;

template <class T> void softmaxXentMatchesCpu(double gradTolerance) {
  for (auto [rows, classes] : kShapes) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(classes));
    const int64_t n = rows * classes;
    auto logits = representable<T>(randomVector(n, 41, -8.f, 8.f));
    auto labels = randomLabels(rows, classes, 42);
    auto dlossHost = randomVector(rows, 44);
    std::vector<float> wantLoss(rows), wantGrad(n);
    ASSERT_EQ(cpu::softmaxXent(logits.data(), labels.data(), wantLoss.data(), rows, classes), -1);
    cpu::softmaxXentGrad(logits.data(), labels.data(), dlossHost.data(), wantGrad.data(), rows,
                         classes);

    DeviceBuffer<T> dlogits(asStorage<T>(logits)), dgrad(n);
    DeviceBuffer<int32_t> dlabels(labels);
    DeviceBuffer<float> dloss(dlossHost), loss(rows), lse(rows), loss2(rows);
    DeviceBuffer<int64_t> bad(std::vector<int64_t>{42});
    ASSERT_OK(cuda::softmaxXent(dlogits.get(), dlabels.get(), loss.get(), lse.get(), bad.get(),
                                rows, classes, nullptr));
    EXPECT_EQ(bad.download()[0], -1);
    const std::vector<float> got = loss.download();
    EXPECT_LE(maxRelativeError(got, wantLoss, kCancellationFloor), kF32Tolerance);
    // Padding rows are exactly 0.
    for (int64_t i = 0; i < rows; ++i)
      if (labels[i] < 0) {
        EXPECT_EQ(got[i], 0.f) << "row " << i;
      }
    // Without the optional outputs: the same bits (and the same every run).
    ASSERT_OK(cuda::softmaxXent(dlogits.get(), dlabels.get(), loss2.get(), nullptr, nullptr, rows,
                                classes, nullptr));
    EXPECT_EQ(loss2.download(), got);

    for (bool withLse : {true, false}) {
      SCOPED_TRACE(withLse ? "grad from the forward's log-sum-exp" : "grad recomputed");
      ASSERT_OK(cuda::fill<T>(dgrad.get(), 123.f, n, nullptr));
      ASSERT_OK(cuda::softmaxXentGrad(dlogits.get(), dlabels.get(), dloss.get(),
                                      withLse ? lse.get() : nullptr, dgrad.get(), rows, classes,
                                      nullptr));
      EXPECT_LE(maxRelativeError(asFloat<T>(dgrad.download()), wantGrad, kCancellationFloor),
                gradTolerance);
    }
  }
}

SBPFLOW_TEST_BOTH_PRECISIONS(CudaLoss, SoftmaxXent, softmaxXentMatchesCpu)

TEST(CudaLoss, SoftmaxXentGradInPlace) {
  SBPFLOW_REQUIRE_GPU();
  for (auto [rows, classes] : {std::pair<int64_t, int64_t>{37, 10}, {5, 1031}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(classes));
    auto logits = randomVector(rows * classes, 45, -4.f, 4.f);
    auto labels = randomLabels(rows, classes, 46);
    auto dlossHost = randomVector(rows, 47);
    std::vector<float> want(rows * classes);
    cpu::softmaxXentGrad(logits.data(), labels.data(), dlossHost.data(), want.data(), rows,
                         classes);
    DeviceBuffer<float> x(logits), dloss(dlossHost);
    DeviceBuffer<int32_t> dlabels(labels);
    ASSERT_OK(cuda::softmaxXentGrad(x.get(), dlabels.get(), dloss.get(), nullptr, x.get(), rows,
                                    classes, nullptr));
    EXPECT_LE(maxRelativeError(x.download(), want, kCancellationFloor), kF32Tolerance);
  }
}

TEST(CudaLoss, SoftmaxXentReportsTheFirstBadLabel) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t classes : {10, 513}) {
    SCOPED_TRACE(std::to_string(classes) + " classes");
    const int64_t rows = 9;
    auto logits = randomVector(rows * classes, 51);
    auto labels = randomLabels(rows, classes, 52);
    labels[3] = static_cast<int32_t>(classes);
    labels[5] = -1;
    labels[7] = static_cast<int32_t>(classes + 5);
    std::vector<float> wantLoss(rows), wantGrad(rows * classes);
    const int64_t wantBad =
        cpu::softmaxXent(logits.data(), labels.data(), wantLoss.data(), rows, classes);
    ASSERT_EQ(wantBad, 3);
    auto dlossHost = randomVector(rows, 53);
    cpu::softmaxXentGrad(logits.data(), labels.data(), dlossHost.data(), wantGrad.data(), rows,
                         classes);

    DeviceBuffer<float> x(logits), loss(rows), lse(rows), dloss(dlossHost), grad(rows * classes);
    DeviceBuffer<int32_t> dlabels(labels);
    DeviceBuffer<int64_t> bad(std::vector<int64_t>{42});
    ASSERT_OK(cuda::softmaxXent(x.get(), dlabels.get(), loss.get(), lse.get(), bad.get(), rows,
                                classes, nullptr));
    EXPECT_EQ(bad.download()[0], wantBad);
    const std::vector<float> got = loss.download();
    EXPECT_EQ(got[3], 0.f);
    EXPECT_EQ(got[7], 0.f);
    EXPECT_LE(maxRelativeError(got, wantLoss, kCancellationFloor), kF32Tolerance);
    // The gradient treats bad rows as padding (zero rows), as the CPU.
    ASSERT_OK(cuda::fill<float>(grad.get(), 123.f, rows * classes, nullptr));
    ASSERT_OK(cuda::softmaxXentGrad(x.get(), dlabels.get(), dloss.get(), lse.get(), grad.get(),
                                    rows, classes, nullptr));
    EXPECT_LE(maxRelativeError(grad.download(), wantGrad, kCancellationFloor), kF32Tolerance);
  }
  // No rows: the flag still says "none".
  DeviceBuffer<int64_t> bad(std::vector<int64_t>{42});
  ASSERT_OK(
      cuda::softmaxXent<float>(nullptr, nullptr, nullptr, nullptr, bad.get(), 0, 10, nullptr));
  EXPECT_EQ(bad.download()[0], -1);
}

template <class T> void countCorrectMatchesCpu() {
  for (auto [rows, classes] : kShapes) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(classes));
    // Logits in steps of 0.5 over [-2, 2]: many ties, which the first
    // maximum must win.
    auto logits = randomVector(rows * classes, 61, -2.f, 2.f);
    for (float &v : logits)
      v = std::round(v * 2.f) / 2.f;
    auto labels = randomLabels(rows, classes, 62);
    // Every other row labelled with its first argmax, so the count is not 0;
    // every fourth with its last argmax, which counts only without a tie.
    for (int64_t i = 0; i < rows; ++i) {
      if (labels[i] < 0 || i % 2)
        continue;
      const float *x = logits.data() + i * classes;
      int64_t firstMax = 0, lastMax = 0;
      for (int64_t j = 1; j < classes; ++j) {
        if (x[j] > x[firstMax])
          firstMax = j;
        if (x[j] >= x[lastMax])
          lastMax = j;
      }
      labels[i] = static_cast<int32_t>(i % 4 ? firstMax : lastMax);
    }
    float want = -1;
    cpu::countCorrect(logits.data(), labels.data(), &want, rows, classes);
    DeviceBuffer<T> x(asStorage<T>(logits));
    DeviceBuffer<int32_t> dlabels(labels);
    DeviceBuffer<float> out(std::vector<float>{-7.f});
    ASSERT_OK(cuda::countCorrect(x.get(), dlabels.get(), out.get(), rows, classes, nullptr));
    EXPECT_EQ(out.download()[0], want);
    if (rows >= 37) {
      EXPECT_GT(want, 0.f);
    }
  }
}

TEST(CudaLoss, CountCorrectF32) {
  SBPFLOW_REQUIRE_GPU();
  countCorrectMatchesCpu<float>();
}

TEST(CudaLoss, CountCorrectBf16) {
  SBPFLOW_REQUIRE_GPU();
  countCorrectMatchesCpu<bf16>();
}

TEST(CudaLoss, MeanAndMeanGrad) {
  SBPFLOW_REQUIRE_GPU();
  DeviceBuffer<double> partials(cuda::kReducePartials);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{257}, int64_t{1000003}}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    for (int64_t count : {n, 3 * n + 1, int64_t{0}}) {
      SCOPED_TRACE("count = " + std::to_string(count));
      // Dyadic values: both sums are exact in double, so the means agree
      // bit for bit; random values within the fp32 tolerance.
      for (bool dyadic : {true, false}) {
        auto x = dyadic ? dyadicVector(n, 71, 10) : randomVector(n, 72);
        float want = -1;
        cpu::mean(x.data(), &want, n, count);
        DeviceBuffer<float> dx(x), out(std::vector<float>{-7.f});
        ASSERT_OK(cuda::mean(dx.get(), out.get(), n, count, partials.get(), nullptr));
        const float got = out.download()[0];
        if (dyadic)
          EXPECT_EQ(got, want);
        else
          EXPECT_LE(maxRelativeError({got}, {want}, 1e-12), kF32Tolerance);
      }
    }
    const float dy = 0.75f;
    for (int64_t count : {int64_t{3}, int64_t{1000003}, int64_t{0}}) {
      std::vector<float> want(n);
      cpu::meanGrad(&dy, want.data(), n, count);
      DeviceBuffer<float> ddy(std::vector<float>{dy}), y(n);
      ASSERT_OK(cuda::meanGrad(ddy.get(), y.get(), n, count, nullptr));
      EXPECT_EQ(y.download(), want);
    }
  }
}

// cuda::reduceRows of T inputs into a Y result against cpu::reduceRows,
// bit for bit, on the sums rounded to Y (a float sum is kept as it is):
// dyadic values (drawn from `seed`) exact in T whose sums are exact in fp32
// in any order. Every column of the result starts at -7, so one the kernel
// does not write fails.
template <class T, class Y> void reduceRowsMatchesCpu(uint64_t seed) {
  for (auto [rows, cols] :
       {std::pair<int64_t, int64_t>{1, 1}, {333, 1031}, {4099, 7}, {17, 32}, {0, 5}, {70001, 3}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    auto x = dyadicVector(rows * cols, seed, 6);
    std::vector<float> exact(cols);
    cpu::reduceRows(x.data(), exact.data(), rows, cols);
    DeviceBuffer<T> dx(asStorage<T>(x));
    DeviceBuffer<Y> y(asStorage<Y>(std::vector<float>(cols, -7.f)));
    ASSERT_OK(cuda::reduceRows(dx.get(), y.get(), rows, cols, nullptr));
    EXPECT_EQ(asFloat<Y>(y.download()), representable<Y>(exact));
  }
}

TEST(CudaLoss, ReduceRowsF32) {
  SBPFLOW_REQUIRE_GPU();
  reduceRowsMatchesCpu<float, float>(81);
}

TEST(CudaLoss, ReduceRowsBf16) {
  SBPFLOW_REQUIRE_GPU();
  reduceRowsMatchesCpu<bf16, float>(81);
}

// A bf16 sum (T = Y = bf16) is accumulated in fp32 and rounded once: with
// dyadic inputs the fp32 sum is exact, so the result is that sum rounded to
// bf16, bit for bit; rounding the running sum would drift from it (rows of
// 1 + 2^-6 go past 256, where bf16's spacing is 2).
TEST(CudaLoss, ReduceRowsIntoBf16RoundsOnce) {
  SBPFLOW_REQUIRE_GPU();
  reduceRowsMatchesCpu<bf16, bf16>(83);
  const int64_t rows = 1000;
  const float one = 1.f + std::ldexp(1.f, -6);
  DeviceBuffer<bf16> dx(toBf16(std::vector<float>(rows, one)));
  DeviceBuffer<bf16> y(1);
  ASSERT_OK(cuda::reduceRows(dx.get(), y.get(), rows, 1, nullptr));
  EXPECT_EQ(toFloat(y.download())[0], roundedToBf16({rows * one})[0]);
}

// Random bf16 inputs against a double reference, into fp32 and into bf16.
TEST(CudaLoss, ReduceRowsOfBf16MatchesDouble) {
  SBPFLOW_REQUIRE_GPU();
  for (auto [rows, cols] :
       {std::pair<int64_t, int64_t>{1, 1}, {333, 1031}, {4099, 7}, {70001, 3}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    auto x = roundedToBf16(randomVector(rows * cols, 85, -1.f, 1.f));
    std::vector<double> sum(cols, 0.0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        sum[j] += x[i * cols + j];
    const std::vector<float> want(sum.begin(), sum.end());
    DeviceBuffer<bf16> dx(toBf16(x));
    DeviceBuffer<float> y32(std::vector<float>(cols, NAN));
    ASSERT_OK(cuda::reduceRows(dx.get(), y32.get(), rows, cols, nullptr));
    EXPECT_LE(normRelativeError(y32.download(), want), kF32Tolerance);
    DeviceBuffer<bf16> y16(toBf16(std::vector<float>(cols, NAN)));
    ASSERT_OK(cuda::reduceRows(dx.get(), y16.get(), rows, cols, nullptr));
    EXPECT_LE(normRelativeError(toFloat(y16.download()), want), kBf16Tolerance);
  }
}

TEST(CudaLoss, SquareSumIsTheCpusAndDeterministic) {
  SBPFLOW_REQUIRE_GPU();
  DeviceBuffer<double> partials(cuda::kReducePartials);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{255}, int64_t{262145}, int64_t{1000003}}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    for (bool dyadic : {true, false}) {
      auto x = dyadic ? dyadicVector(n, 91, 10) : randomVector(n, 92, -3.f, 3.f);
      const float want = cpu::squareSum(x.data(), n);
      DeviceBuffer<float> dx(x), out(std::vector<float>{-7.f, -7.f});
      ASSERT_OK(cuda::squareSum(dx.get(), n, out.get(), partials.get(), nullptr));
      ASSERT_OK(cuda::squareSum(dx.get(), n, out.get() + 1, partials.get(), nullptr));
      const std::vector<float> got = out.download();
      EXPECT_EQ(got[0], got[1]); // the same bits every run
      if (dyadic)
        EXPECT_EQ(got[0], want);
      else
        EXPECT_LE(maxRelativeError({got[0]}, {want}, 1e-12), kF32Tolerance);
    }
  }
}

TEST(CudaLoss, ClipScaleIsTheCpus) {
  SBPFLOW_REQUIRE_GPU();
  // The total of several sums in index order, then the CPU's formula: IEEE
  // sqrt and division on both sides, so the same bits.
  const std::vector<std::vector<float>> cases = {
      {0.f}, {0.25f}, {1e-14f}, {3.f, 5.5f, 1e3f}, {1e8f}, {2.f, 0.f, 7.f, 1e-3f, 0.5f}};
  for (float maxNorm : {1.f, 0.5f, 100.f}) {
    for (const auto &squares : cases) {
      float total = squares[0];
      for (size_t k = 1; k < squares.size(); ++k)
        total += squares[k];
      const float want = cpu::clipScale(total, maxNorm);
      DeviceBuffer<float> dsq(squares), scale(std::vector<float>{-7.f});
      ASSERT_OK(cuda::clipScale(dsq.get(), static_cast<int>(squares.size()), maxNorm, scale.get(),
                                nullptr));
      EXPECT_EQ(scale.download()[0], want) << "total " << total << ", max norm " << maxNorm;
    }
  }
  // A NaN norm propagates.
  DeviceBuffer<float> nan(std::vector<float>{1.f, NAN}), scale(1);
  ASSERT_OK(cuda::clipScale(nan.get(), 2, 1.f, scale.get(), nullptr));
  EXPECT_TRUE(std::isnan(scale.download()[0]));
  EXPECT_FALSE(cuda::clipScale(nan.get(), 0, 1.f, scale.get(), nullptr).isOk());
}

TEST(CudaLoss, ClippingTwoGradientsOnTheDevice) {
  SBPFLOW_REQUIRE_GPU();
  // The executor's chain: square_sum per gradient, add, clip_scale, all on
  // the device; dyadic gradients make each sum exact, so bits agree.
  auto g1 = dyadicVector(1000003, 101, 10), g2 = dyadicVector(17, 102, 10);
  const float want =
      cpu::clipScale(cpu::squareSum(g1.data(), 1000003) + cpu::squareSum(g2.data(), 17), 1.f);
  ASSERT_LT(want, 1.f); // the test clips
  DeviceBuffer<float> d1(g1), d2(g2), squares(2), scale(1);
  DeviceBuffer<double> partials(cuda::kReducePartials);
  ASSERT_OK(cuda::squareSum(d1.get(), 1000003, squares.get(), partials.get(), nullptr));
  ASSERT_OK(cuda::squareSum(d2.get(), 17, squares.get() + 1, partials.get(), nullptr));
  ASSERT_OK(cuda::clipScale(squares.get(), 2, 1.f, scale.get(), nullptr));
  EXPECT_EQ(scale.download()[0], want);
}

TEST(CudaLoss, EmptyInputs) {
  SBPFLOW_REQUIRE_GPU();
  ASSERT_OK(
      cuda::softmaxXentGrad<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 10, nullptr));
  ASSERT_OK((cuda::reduceRows<float, float>(nullptr, nullptr, 5, 0, nullptr)));
  ASSERT_OK((cuda::reduceRows<bf16, bf16>(nullptr, nullptr, 5, 0, nullptr)));
  ASSERT_OK(cuda::meanGrad(nullptr, nullptr, 0, 3, nullptr));
  // Zero classes: every loss is 0 and no label is bad, as on the CPU.
  std::vector<int32_t> labels = {0, 3, -1};
  std::vector<float> want(3, -1.f);
  ASSERT_EQ(cpu::softmaxXent(nullptr, labels.data(), want.data(), 3, 0), -1);
  DeviceBuffer<int32_t> dlabels(labels);
  DeviceBuffer<float> loss(std::vector<float>(3, -7.f));
  DeviceBuffer<int64_t> bad(1);
  ASSERT_OK(cuda::softmaxXent<float>(nullptr, dlabels.get(), loss.get(), nullptr, bad.get(), 3, 0,
                                     nullptr));
  EXPECT_EQ(loss.download(), want);
  EXPECT_EQ(bad.download()[0], -1);
}

} // namespace
} // namespace sbpflow::test
