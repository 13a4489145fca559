// The cuBLASLt matmul against cpu::matmul: every transpose combination, on
// shapes that do not divide a tile, in fp32 and bf16, and bf16 operands into
// an fp32 result against a double reference.
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

// One product to check: its shape, transpositions and random operands.
struct GemmCase {
  Shape s;
  bool transA, transB;
  std::vector<float> a, b;
};

// Every shape of kShapes in every transposition, with random operands a
// [m*k] and b [k*n], each `offset` elements longer, drawn from seeds
// firstSeed, firstSeed + 1, ... in turn.
std::vector<GemmCase> everyCase(uint64_t firstSeed, int64_t offset) {
  std::vector<GemmCase> cases;
  uint64_t seed = firstSeed;
  for (const Shape &s : kShapes)
    for (bool transA : {false, true})
      for (bool transB : {false, true}) {
        std::vector<float> a = randomVector(s.m * s.k + offset, seed++);
        cases.push_back({s, transA, transB, a, randomVector(s.k * s.n + offset, seed++)});
      }
  return cases;
}

// `offset` elements into each buffer: pointers less aligned than the 256
// bytes cuBLASLt assumes by default.
template <class T> void compareWithCpu(double tolerance, int64_t offset) {
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  for (const auto &[s, transA, transB, randomA, randomB] : everyCase(1, offset)) {
    SCOPED_TRACE(describe(s, transA, transB));
    // The reference sees the values T holds.
    auto a = representable<T>(randomA), b = representable<T>(randomB);
    std::vector<float> want(s.m * s.n);
    cpu::matmul(a.data() + offset, b.data() + offset, want.data(), s.m, s.n, s.k, transA, transB);
    DeviceBuffer<T> da(asStorage<T>(a)), db(asStorage<T>(b));
    // NaN everywhere, so an element the kernel does not write fails.
    DeviceBuffer<T> dc(asStorage<T>(std::vector<float>(s.m * s.n + offset, NAN)));
    ASSERT_OK(cuda::matmul(*blas, da.get() + offset, db.get() + offset, dc.get() + offset, s.m, s.n,
                           s.k, transA, transB, nullptr));
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

// c = op(a) op(b) in double, on the values the operands hold.
std::vector<double> referenceMatmul(const std::vector<float> &a, const std::vector<float> &b,
                                    const Shape &s, bool transA, bool transB) {
  std::vector<double> c(s.m * s.n, 0.0);
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      double sum = 0;
      for (int64_t p = 0; p < s.k; ++p)
        sum += static_cast<double>(transA ? a[p * s.m + i] : a[i * s.k + p]) *
               static_cast<double>(transB ? b[j * s.k + p] : b[p * s.n + j]);
      c[i * s.n + j] = sum;
    }
  return c;
}

// bf16 operands into an fp32 result (mixed precision's weight gradients) and
// into a bf16 one, against a double reference on the bf16 operands: fp32
// accumulation leaves the fp32 result within 1e-5 of the norm; the bf16
// result adds one rounding of each element.
void compareMixedWithDouble(int64_t offset) {
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  for (const auto &[s, transA, transB, randomA, randomB] : everyCase(41, offset)) {
    SCOPED_TRACE(describe(s, transA, transB) + " offset " + std::to_string(offset));
    auto a = roundedToBf16(randomA), b = roundedToBf16(randomB);
    const std::vector<double> exact =
        referenceMatmul(std::vector<float>(a.begin() + offset, a.end()),
                        std::vector<float>(b.begin() + offset, b.end()), s, transA, transB);
    const std::vector<float> want(exact.begin(), exact.end());
    DeviceBuffer<bf16> da(toBf16(a)), db(toBf16(b));
    // NaN everywhere, so an element the kernel does not write fails.
    DeviceBuffer<float> dc(std::vector<float>(s.m * s.n + offset, NAN));
    ASSERT_OK(cuda::matmul(*blas, da.get() + offset, db.get() + offset, dc.get() + offset, s.m, s.n,
                           s.k, transA, transB, nullptr));
    std::vector<float> got = dc.download();
    got.erase(got.begin(), got.begin() + offset);
    EXPECT_LE(normRelativeError(got, want), kF32Tolerance);
    // The same product stored in bf16.
    DeviceBuffer<bf16> dh(toBf16(std::vector<float>(s.m * s.n + offset, NAN)));
    ASSERT_OK(cuda::matmul(*blas, da.get() + offset, db.get() + offset, dh.get() + offset, s.m, s.n,
                           s.k, transA, transB, nullptr));
    std::vector<float> rounded = toFloat(dh.download());
    rounded.erase(rounded.begin(), rounded.begin() + offset);
    EXPECT_LE(normRelativeError(rounded, want), kBf16Tolerance);
  }
}

TEST(CudaGemm, Bf16IntoF32MatchesDouble) {
  SBPFLOW_REQUIRE_GPU();
  compareMixedWithDouble(0);
}

TEST(CudaGemm, Bf16IntoF32MisalignedPointers) {
  SBPFLOW_REQUIRE_GPU();
  compareMixedWithDouble(1);
}

TEST(CudaGemm, Bf16IntoF32KeepsWhatBf16WouldRound) {
  SBPFLOW_REQUIRE_GPU();
  // 1 x 1 + 2^-8 x 1 = 1 + 2^-8: exact in fp32, halfway between two bf16
  // values. The fp32 result must hold it, not a bf16 rounding of it.
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  const float tiny = std::ldexp(1.f, -8);
  DeviceBuffer<bf16> da(toBf16({1.f, tiny})), db(toBf16({1.f, 1.f}));
  DeviceBuffer<float> dc(std::vector<float>{NAN});
  ASSERT_OK(cuda::matmul(*blas, da.get(), db.get(), dc.get(), 1, 1, 2, false, false, nullptr));
  EXPECT_EQ(dc.download()[0], 1.f + tiny);
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
  // bf16 operands, an fp32 result: zeroed as fp32 (4 bytes an element).
  DeviceBuffer<float> dw(std::vector<float>(12, 5.f));
  ASSERT_OK(cuda::matmul(*blas, static_cast<const bf16 *>(nullptr), nullptr, dw.get(), 2, 6, 0,
                         false, false, nullptr));
  EXPECT_EQ(dw.download(), std::vector<float>(12, 0.f));
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

TEST(CudaGemm, Fp32OperandsIntoBf16IsAnError) {
  SBPFLOW_REQUIRE_GPU();
  // Only bf16 operands may have a result of another type.
  auto blas = cuda::Blas::create();
  ASSERT_TRUE(blas.isOk()) << blas.status().message();
  DeviceBuffer<float> da(std::vector<float>(4, 1.f)), db(std::vector<float>(4, 1.f));
  DeviceBuffer<bf16> dc(4);
  Status s = blas->run(cuda::GemmType::F32, cuda::GemmType::Bf16, da.get(), db.get(), dc.get(), 2,
                       2, 2, false, false, nullptr);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("fp32 result"), std::string::npos) << s.message();
}

} // namespace
} // namespace sbpflow::test
