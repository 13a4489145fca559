// The cuBLASLt matmul against cpu::matmul: every transpose combination, on
// shapes that do not divide a tile, in fp32 and bf16.
#include "kernels/cuda/Gemm.h"
#include "kernels/cpu/Kernels.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <cmath>
#include <string>
#include <vector>

namespace sbpflow::test {
namespace {

struct Shape {
  int64_t m, n, k;
};
const Shape kShapes[] = {{1, 1, 1}, {7, 13, 5}, {129, 257, 65}, {512, 384, 1031}};

std::string describe(const Shape &s, bool transA, bool transB) {
  return "m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) +
         (transA ? " transA" : "") + (transB ? " transB" : "");
}

// `offset` elements into each buffer: pointers less aligned than the 256
// bytes cuBLASLt assumes by default.
template <class T> void compareWithCpu(double tolerance, int64_t offset) {
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  uint64_t seed = 1;
  for (const Shape &s : kShapes)
    for (bool transA : {false, true})
      for (bool transB : {false, true}) {
        SCOPED_TRACE(describe(s, transA, transB));
        // The reference sees the values T holds.
        auto a = representable<T>(randomVector(s.m * s.k + offset, seed++));
        auto b = representable<T>(randomVector(s.k * s.n + offset, seed++));
        std::vector<float> want(s.m * s.n);
        cpu::matmul(a.data() + offset, b.data() + offset, want.data(), s.m, s.n, s.k, transA,
                    transB);
        DeviceBuffer<T> da(asStorage<T>(a)), db(asStorage<T>(b));
        // NaN everywhere, so an element the kernel does not write fails.
        DeviceBuffer<T> dc(asStorage<T>(std::vector<float>(s.m * s.n + offset, NAN)));
        ASSERT_OK(cuda::matmul(*blas, da.get() + offset, db.get() + offset, dc.get() + offset, s.m,
                               s.n, s.k, transA, transB, nullptr));
        std::vector<float> got = asFloat<T>(dc.download());
        got.erase(got.begin(), got.begin() + offset);
        EXPECT_LE(normRelativeError(got, want), tolerance);
      }
}

TEST(CudaGemm, MatchesCpuF32) {
  SBPFLOW_REQUIRE_GPU();
  compareWithCpu<float>(kF32Tolerance, 0);
}

TEST(CudaGemm, MatchesCpuBf16) {
  SBPFLOW_REQUIRE_GPU();
  compareWithCpu<bf16>(kBf16Tolerance, 0);
}

TEST(CudaGemm, MisalignedPointers) {
  SBPFLOW_REQUIRE_GPU();
  compareWithCpu<float>(kF32Tolerance, 1);
  compareWithCpu<bf16>(kBf16Tolerance, 1);
}

TEST(CudaGemm, RepeatedShapeReusesItsPlan) {
  SBPFLOW_REQUIRE_GPU();
  // The second call of a shape runs the cached plan; its result must agree
  // with the first, bit for bit, and with different data still be right.
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  const int64_t m = 33, n = 17, k = 40;
  for (uint64_t seed : {7u, 8u}) {
    auto a = randomVector(m * k, seed), b = randomVector(k * n, seed + 100);
    std::vector<float> want(m * n);
    cpu::matmul(a.data(), b.data(), want.data(), m, n, k, false, true);
    DeviceBuffer<float> da(a), db(b), dc(m * n);
    ASSERT_OK(cuda::matmul(*blas, da.get(), db.get(), dc.get(), m, n, k, false, true, nullptr));
    auto first = dc.download();
    ASSERT_OK(cuda::matmul(*blas, da.get(), db.get(), dc.get(), m, n, k, false, true, nullptr));
    EXPECT_EQ(dc.download(), first);
    EXPECT_LE(normRelativeError(first, want), kF32Tolerance);
  }
}

TEST(CudaGemm, EmptySumIsZero) {
  SBPFLOW_REQUIRE_GPU();
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  DeviceBuffer<float> dc(std::vector<float>(12, 5.f));
  ASSERT_OK(cuda::matmul<float>(*blas, nullptr, nullptr, dc.get(), 3, 4, 0, false, false, nullptr));
  EXPECT_EQ(dc.download(), std::vector<float>(12, 0.f));
  DeviceBuffer<bf16> dh(toBf16(std::vector<float>(12, 5.f)));
  ASSERT_OK(cuda::matmul<bf16>(*blas, nullptr, nullptr, dh.get(), 4, 3, 0, true, true, nullptr));
  EXPECT_EQ(toFloat(dh.download()), std::vector<float>(12, 0.f));
  // Nothing to compute, nothing touched.
  ASSERT_OK(cuda::matmul<float>(*blas, nullptr, nullptr, nullptr, 0, 4, 5, false, false, nullptr));
}

TEST(CudaGemm, NegativeSizeIsAnError) {
  SBPFLOW_REQUIRE_GPU();
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  EXPECT_FALSE(
      cuda::matmul<float>(*blas, nullptr, nullptr, nullptr, -1, 4, 5, false, false, nullptr)
          .isOk());
}

} // namespace
} // namespace sbpflow::test
