// The fused layer norm kernels against cpu::layerNorm / cpu::layerNormGrad on
// random inputs, in fp32 and bf16 (gamma, beta and their gradients fp32).
#include "kernels/cuda/Normalization.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <cmath>
#include <string>
#include <vector>

namespace sbpflow::test {
namespace {

// 1 x 1 (zero variance), a row narrower than a warp, rows that are not a
// multiple of a warp, a block's rows or a chunk of the column sums, and
// enough rows for many chunks.
const std::pair<int64_t, int64_t> kShapes[] = {{1, 1}, {3, 17}, {7, 129}, {333, 1031}, {2049, 33}};
constexpr float kEps = 1e-5f;

std::vector<float> nans(int64_t n) { return std::vector<float>(n, NAN); }

// The comparison of y and dx: fp32 holds the row statistics' rounding
// (elements near zero after the centring: norm-relative); bf16 rounds each
// result once (elementwise).
template <class T> double compare(const std::vector<float> &got, const std::vector<float> &want) {
  if constexpr (std::is_same_v<T, bf16>)
    return maxRelativeError(got, want);
  else
    return normRelativeError(got, want);
}

template <class T> void forward(double tolerance) {
  uint64_t seed = 1;
  for (auto [rows, cols] : kShapes) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    // An offset from 0, so the centring matters.
    auto x = representable<T>(randomVector(rows * cols, seed++, -1.f, 3.f));
    auto gamma = randomVector(cols, seed++, 0.5f, 1.5f), beta = randomVector(cols, seed++);
    std::vector<float> want(rows * cols);
    cpu::layerNorm(x.data(), gamma.data(), beta.data(), want.data(), rows, cols, kEps);
    DeviceBuffer<T> dx(asStorage<T>(x)), dy(asStorage<T>(nans(rows * cols)));
    DeviceBuffer<float> dg(gamma), db(beta);
    ASSERT_OK(cuda::layerNorm(dx.get(), dg.get(), db.get(), dy.get(), rows, cols, kEps, nullptr));
    EXPECT_LE(compare<T>(asFloat<T>(dy.download()), want), tolerance);
    // In place.
    ASSERT_OK(cuda::layerNorm(dx.get(), dg.get(), db.get(), dx.get(), rows, cols, kEps, nullptr));
    EXPECT_LE(compare<T>(asFloat<T>(dx.download()), want), tolerance);
  }
}

SBPFLOW_TEST_BOTH_PRECISIONS(CudaLayerNorm, Forward, forward)

template <class T> void backward(double tolerance) {
  uint64_t seed = 100;
  for (auto [rows, cols] : kShapes) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    auto x = representable<T>(randomVector(rows * cols, seed++, -1.f, 3.f));
    auto dy = representable<T>(randomVector(rows * cols, seed++));
    auto gamma = randomVector(cols, seed++, 0.5f, 1.5f);
    std::vector<float> wantDx(rows * cols), wantDg(cols), wantDb(cols);
    cpu::layerNormGrad(dy.data(), x.data(), gamma.data(), wantDx.data(), wantDg.data(),
                       wantDb.data(), rows, cols, kEps);
    DeviceBuffer<T> dX(asStorage<T>(x)), dDy(asStorage<T>(dy));
    DeviceBuffer<T> dDx(asStorage<T>(nans(rows * cols)));
    DeviceBuffer<float> dGamma(gamma), dDg(nans(cols)), dDb(nans(cols));
    // NaN scratch: a read of anything not written first shows.
    DeviceBuffer<float> scratch(nans(cuda::layerNormGradScratch(rows, cols)));
    ASSERT_OK(cuda::layerNormGrad(dDy.get(), dX.get(), dGamma.get(), dDx.get(), dDg.get(),
                                  dDb.get(), rows, cols, kEps, scratch.get(), nullptr));
    EXPECT_LE(compare<T>(asFloat<T>(dDx.download()), wantDx), tolerance);
    // dgamma and dbeta are fp32 sums of the same fp32 products on both
    // sides, in every precision: only the order of the sums differs.
    auto dg = dDg.download(), db = dDb.download();
    EXPECT_LE(normRelativeError(dg, wantDg), kF32Tolerance);
    EXPECT_LE(normRelativeError(db, wantDb), kF32Tolerance);
    // Deterministic: the same bits again.
    ASSERT_OK(cuda::layerNormGrad(dDy.get(), dX.get(), dGamma.get(), dDx.get(), dDg.get(),
                                  dDb.get(), rows, cols, kEps, scratch.get(), nullptr));
    EXPECT_EQ(dDg.download(), dg);
    EXPECT_EQ(dDb.download(), db);
  }
}

SBPFLOW_TEST_BOTH_PRECISIONS(CudaLayerNorm, Backward, backward)

TEST(CudaLayerNorm, NoRowsZeroesTheParameterGradients) {
  SBPFLOW_REQUIRE_GPU();
  // A rank holding no rows still overwrites dgamma and dbeta, as the CPU does.
  DeviceBuffer<float> dDg(nans(5)), dDb(nans(5));
  EXPECT_EQ(cuda::layerNormGradScratch(0, 5), 0);
  ASSERT_OK(cuda::layerNormGrad<float>(nullptr, nullptr, nullptr, nullptr, dDg.get(), dDb.get(), 0,
                                       5, kEps, nullptr, nullptr));
  EXPECT_EQ(dDg.download(), std::vector<float>(5, 0.f));
  EXPECT_EQ(dDb.download(), std::vector<float>(5, 0.f));
  ASSERT_OK(cuda::layerNorm<float>(nullptr, nullptr, nullptr, nullptr, 0, 5, kEps, nullptr));
}

} // namespace
} // namespace sbpflow::test
