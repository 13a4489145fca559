// The optimizer CUDA kernels against kernels/cpu over several steps, with and
// without a (device) gradient-clipping factor, and local SGD's outer step.
#include "kernels/cuda/Optimizers.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/FloatBits.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <cmath>

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

// The same bits, where a NaN counts as any NaN (the GPU's arithmetic
// gives its canonical NaN, the CPU's keeps the operand's payload).
void expectSameFloats(const std::vector<float> &got, const std::vector<float> &want,
                      const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int wrong = 0;
  for (size_t i = 0; i < got.size() && wrong < 10; ++i)
    if (std::isnan(got[i]) != std::isnan(want[i]) ||
        (!std::isnan(want[i]) && bitsOf(got[i]) != bitsOf(want[i]))) {
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << ", want " << want[i];
      ++wrong;
    }
}

// Local SGD's outer step as DiLoCo (Nesterov momentum), plain averaging (no
// buffer) and CO2 (a gap penalty, whose divisor 3 * 1.3 is inexact, and a
// clip that binds) configure it, each with and without keep_anchor, with a
// NaN in the pseudo-gradient: the CPU's bits, every operation rounded in
// f32 in the same order.
TEST(CudaOptimizers, OuterStep) {
  SBPFLOW_REQUIRE_GPU();
  struct Config {
    const char *name;
    float lr, momentum;
    bool nesterov, buffer;
    int replicas;
    float gapPenalty, clip;
  };
  const Config configs[] = {{"DiLoCo", 0.7f, 0.9f, true, true, 4, 1.f, 0.f},
                            {"plain", 1.f, 0.f, false, false, 3, 1.f, 0.f},
                            {"CO2", 0.7f, 0.5f, false, true, 3, 1.3f, 0.01f}};
  for (const Config &c : configs) {
    for (bool keepAnchor : {false, true}) {
      for (int64_t n : kSizes) {
        SCOPED_TRACE(std::string(c.name) + (keepAnchor ? ", keep_anchor" : "") +
                     ", n = " + std::to_string(n));
        auto anchor = randomVector(n, 141);
        std::vector<float> param(n, 0.f), m(n, 0.f);
        DeviceBuffer<float> dparam(param), danchor(anchor), dm(m), dsum(n);
        for (int round = 0; round < kSteps; ++round) {
          auto sum = randomVector(n, 142 + round, -0.2f, 0.2f);
          if (n > 1)
            sum[n / 2] = std::nanf("");
          cpu::outerStep(param.data(), anchor.data(), c.buffer ? m.data() : nullptr, sum.data(), n,
                         c.lr, c.momentum, c.nesterov, c.replicas, c.gapPenalty, c.clip,
                         keepAnchor);
          ASSERT_CUDA(
              cudaMemcpy(dsum.get(), sum.data(), n * sizeof(float), cudaMemcpyHostToDevice));
          ASSERT_OK(cuda::outerStep(dparam.get(), danchor.get(), c.buffer ? dm.get() : nullptr,
                                    dsum.get(), n, c.lr, c.momentum, c.nesterov, c.replicas,
                                    c.gapPenalty, c.clip, keepAnchor, nullptr));
        }
        expectSameFloats(danchor.download(), anchor, "anchor");
        expectSameFloats(dparam.download(), param, "param");
        expectSameFloats(dm.download(), m, "momentum");
      }
    }
  }
}

TEST(CudaOptimizers, EmptyParametersLaunchNothing) {
  SBPFLOW_REQUIRE_GPU();
  ASSERT_OK(cuda::sgdMomentum(nullptr, nullptr, nullptr, 0, 0.1f, 0.9f, 0.f, nullptr, nullptr));
  ASSERT_OK(cuda::adamw(nullptr, nullptr, nullptr, nullptr, 0, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.f, 1,
                        nullptr, nullptr));
  ASSERT_OK(cuda::outerStep(nullptr, nullptr, nullptr, nullptr, 0, 0.7f, 0.9f, true, 2, 1.f, 0.f,
                            false, nullptr));
}

} // namespace
} // namespace sbpflow::test
