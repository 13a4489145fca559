// The optimizer CUDA kernels against kernels/cpu over several steps, with and
// without a (device) gradient-clipping factor.
#include "kernels/cuda/Optimizers.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

namespace sbpflow::test {
namespace {

const int64_t kSizes[] = {1, 31, 257, 1000003};
constexpr int kSteps = 3;

TEST(CudaOptimizers, SgdMomentum) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    for (float momentum : {0.9f, 0.f}) {
      for (bool clipped : {true, false}) {
        SCOPED_TRACE("n = " + std::to_string(n) + ", momentum " + std::to_string(momentum) +
                     (clipped ? ", clipped" : ""));
        auto w = randomVector(n, 111), v = randomVector(n, 112, -0.1f, 0.1f);
        const std::vector<float> v0 = v;
        DeviceBuffer<float> dw(w), dv(v), dg(n), scale(std::vector<float>{0.37f});
        for (int step = 0; step < kSteps; ++step) {
          auto g = randomVector(n, 113 + step);
          cpu::sgdMomentum(w.data(), v.data(), g.data(), n, 0.05f, momentum, 1e-2f,
                           clipped ? 0.37f : 1.f);
          ASSERT_CUDA(cudaMemcpy(dg.get(), g.data(), n * sizeof(float), cudaMemcpyHostToDevice));
          ASSERT_OK(cuda::sgdMomentum(dw.get(), dv.get(), dg.get(), n, 0.05f, momentum, 1e-2f,
                                      clipped ? scale.get() : nullptr, nullptr));
        }
        // Every operation rounded as on the CPU (Kernels.cpp is built for
        // baseline x86-64: no FMA to contract into): the same bits.
        EXPECT_EQ(dw.download(), w);
        EXPECT_EQ(dv.download(), v);
        if (momentum == 0.f) {
          EXPECT_EQ(v, v0); // untouched without momentum
        }
      }
    }
  }
}

TEST(CudaOptimizers, SgdWithoutMomentumBuffer) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 257;
  auto w = randomVector(n, 121), g = randomVector(n, 122);
  DeviceBuffer<float> dw(w), dg(g);
  cpu::sgdMomentum(w.data(), nullptr, g.data(), n, 0.1f, 0.9f, 0.f, 1.f);
  ASSERT_OK(cuda::sgdMomentum(dw.get(), nullptr, dg.get(), n, 0.1f, 0.9f, 0.f, nullptr, nullptr));
  EXPECT_EQ(dw.download(), w);
}

TEST(CudaOptimizers, AdamW) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    for (bool clipped : {true, false}) {
      SCOPED_TRACE("n = " + std::to_string(n) + (clipped ? ", clipped" : ""));
      auto w = randomVector(n, 131);
      std::vector<float> m(n, 0.f), v(n, 0.f);
      DeviceBuffer<float> dw(w), dm(m), dv(v), dg(n), scale(std::vector<float>{0.37f});
      for (int64_t step = 1; step <= kSteps; ++step) {
        auto g = randomVector(n, 132 + step);
        cpu::adamw(w.data(), m.data(), v.data(), g.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f,
                   step, clipped ? 0.37f : 1.f);
        ASSERT_CUDA(cudaMemcpy(dg.get(), g.data(), n * sizeof(float), cudaMemcpyHostToDevice));
        ASSERT_OK(cuda::adamw(dw.get(), dm.get(), dv.get(), dg.get(), n, 1e-3f, 0.9f, 0.999f, 1e-8f,
                              0.1f, step, clipped ? scale.get() : nullptr, nullptr));
      }
      EXPECT_LE(maxRelativeError(dw.download(), w), kF32Tolerance);
      // m is a running difference of terms up to 0.3: where they cancel, one
      // fused multiply-add more or less on either side (the CPU's AVX2 clone
      // fuses too, not necessarily the same ones) moves it by about 1e-8, so
      // the floor is 1e-2. v sums positive terms (no cancellation): a floor
      // far below its size.
      EXPECT_LE(maxRelativeError(dm.download(), m, 1e-2), kF32Tolerance);
      EXPECT_LE(maxRelativeError(dv.download(), v, 1e-12), kF32Tolerance);
    }
  }
}

TEST(CudaOptimizers, EmptyParametersLaunchNothing) {
  SBPFLOW_REQUIRE_GPU();
  ASSERT_OK(cuda::sgdMomentum(nullptr, nullptr, nullptr, 0, 0.1f, 0.9f, 0.f, nullptr, nullptr));
  ASSERT_OK(cuda::adamw(nullptr, nullptr, nullptr, nullptr, 0, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.f, 1,
                        nullptr, nullptr));
}

} // namespace
} // namespace sbpflow::test
