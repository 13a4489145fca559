// Local SGD's CPU kernels against double-precision loops: Scale and the
// pseudo-gradient exactly, the outer step (plan.fbs OuterAttrs) over several
// rounds as DiLoCo, plain averaging and CO2 configure it, and with
// keep_anchor against the step without it.
#include "kernels/cpu/Kernels.h"
#include "tests/kernels/RandomVector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace sbpflow::cpu {
namespace {

const std::vector<int64_t> kSizes = {1, 7, 13, 127, 130};

using sbpflow::test::randomVector;

// An f32 operation rounds its exact result once; the double result of a
// difference or a product of two floats rounds to the same float (53 >= 2 *
// 24 + 2 bits: double rounding is innocuous), so the kernels must match
// bit for bit.
TEST(LocalSgdTest, ScaleAndSubtractAreExact) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    auto a = randomVector(n, 200 + n), b = randomVector(n, 300 + n, -1e-3f, 1e-3f);
    std::vector<float> diff(n), scaled(n);
    subtract(a.data(), b.data(), diff.data(), n);
    const float factor = 0.37f;
    scale(a.data(), factor, scaled.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(diff[i], static_cast<float>(double(a[i]) - double(b[i]))) << "at " << i;
      EXPECT_EQ(scaled[i], static_cast<float>(double(a[i]) * double(factor))) << "at " << i;
    }
    // In place, as memory planning may alias the result with an operand.
    std::vector<float> inPlace = a;
    subtract(inPlace.data(), b.data(), inPlace.data(), n);
    EXPECT_EQ(inPlace, diff);
    inPlace = a;
    scale(inPlace.data(), factor, inPlace.data(), n);
    EXPECT_EQ(inPlace, scaled);
  }
}

// One configuration of the outer step.
struct Outer {
  float lr, momentum;
  bool nesterov, buffer;
  int replicas;
  float gapPenalty, clip;
};

// plan.fbs OuterAttrs in double: d = sum / (replicas * gap_penalty);
// m = momentum * m + d, clamped to [-clip, clip] when clip > 0; anchor -= lr
// * (nesterov ? d + momentum * m : m), or lr * d without a buffer. `scale`
// gathers the size of the terms each value sums, for the tolerance.
struct OuterReference {
  std::vector<double> anchor, m, anchorScale, mScale;
  int64_t clipped = 0, unclipped = 0;

  void step(const Outer &o, const std::vector<float> &sum) {
    for (size_t i = 0; i < anchor.size(); ++i) {
      const double d = sum[i] / (double(o.replicas) * o.gapPenalty);
      double update = d, updateScale = std::abs(d);
      if (o.buffer) {
        m[i] = double(o.momentum) * m[i] + d;
        mScale[i] = double(o.momentum) * mScale[i] + std::abs(d);
        if (o.clip > 0) {
          const double c = o.clip;
          if (m[i] < -c || m[i] > c)
            ++clipped;
          else
            ++unclipped;
          m[i] = std::clamp(m[i], -c, c);
          mScale[i] = std::min(mScale[i], c);
        }
        update = o.nesterov ? d + double(o.momentum) * m[i] : m[i];
        updateScale = o.nesterov ? std::abs(d) + double(o.momentum) * mScale[i] : mScale[i];
      }
      anchor[i] -= double(o.lr) * update;
      anchorScale[i] += double(o.lr) * updateScale;
    }
  }
};

// f32 against double, relative to the size of the terms summed: rounding
// errors of a few units in the last place per round.
void expectClose(double want, float got, double scale, const std::string &what) {
  const double tol = 1e-6 * (std::abs(want) + scale) + 1e-30;
  EXPECT_LE(std::abs(want - got), tol) << what << ": want " << want << ", got " << got;
}

// `rounds` outer steps of `o` from random anchors, each on a fresh sum of
// pseudo-gradients (drifts of up to `drift` per replica), against the
// reference; returns the reference for what a test asserts besides.
OuterReference runOuter(const Outer &o, int64_t n, int rounds, float drift) {
  auto anchor = randomVector(n, 400 + n);
  std::vector<float> param(n, 0.f), m(n, 0.f);
  OuterReference ref;
  ref.anchor.assign(anchor.begin(), anchor.end());
  ref.m.assign(n, 0.0);
  ref.mScale.assign(n, 0.0);
  for (float a : anchor)
    ref.anchorScale.push_back(std::abs(a));
  for (int round = 0; round < rounds; ++round) {
    const float bound = drift * static_cast<float>(o.replicas);
    auto sum = randomVector(n, 500 + 10 * n + round, -bound, bound);
    outerStep(param.data(), anchor.data(), o.buffer ? m.data() : nullptr, sum.data(), n, o.lr,
              o.momentum, o.nesterov, o.replicas, o.gapPenalty, o.clip, false);
    ref.step(o, sum);
    for (int64_t i = 0; i < n; ++i) {
      const std::string at = "round " + std::to_string(round) + " [" + std::to_string(i) + "]";
      expectClose(ref.anchor[i], anchor[i], ref.anchorScale[i], "anchor " + at);
      // The replicas start the next round from the new anchor.
      EXPECT_EQ(param[i], anchor[i]) << at;
      if (o.buffer)
        expectClose(ref.m[i], m[i], ref.mScale[i], "momentum " + at);
      else
        EXPECT_EQ(m[i], 0.f) << "a step without a buffer wrote the buffer, " << at;
    }
  }
  return ref;
}

// DiLoCo (Douillard et al. 2023, Algorithm 1): the outer optimiser is
// Nesterov momentum on the averaged pseudo-gradient, outer lr 0.7,
// momentum 0.9.
TEST(LocalSgdTest, OuterStepDiLoCoNesterov) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    runOuter({0.7f, 0.9f, true, true, 4, 1.f, 0.f}, n, 6, 0.05f);
  }
}

// Momentum without Nesterov's look-ahead: the update is m itself.
TEST(LocalSgdTest, OuterStepHeavyBall) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    runOuter({0.7f, 0.9f, false, true, 3, 1.f, 0.f}, n, 6, 0.05f);
  }
}

// Plain local SGD (model averaging at lr 1): no momentum buffer; the new
// anchor is the replicas' mean, anchor - mean(anchor - param_r).
TEST(LocalSgdTest, OuterStepPlainAveraging) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    runOuter({1.f, 0.f, false, false, 5, 1.f, 0.f}, n, 4, 0.05f);
  }
}

// CO2 (Sun et al., ICLR 2024): the pseudo-gradient is divided by the
// staleness gap penalty as well, and the outer momentum is clipped to
// [-clip, clip] elementwise, as the paper says (its reference code's
// clipping clips nothing). The drifts are large enough that the clip binds
// on some elements and not on others.
TEST(LocalSgdTest, OuterStepCo2ClipsTheMomentum) {
  int64_t clipped = 0, unclipped = 0;
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n = " + std::to_string(n));
    OuterReference ref = runOuter({0.7f, 0.5f, false, true, 4, 2.f, 0.01f}, n, 6, 0.05f);
    clipped += ref.clipped;
    unclipped += ref.unclipped;
  }
  EXPECT_GT(clipped, 0) << "the clip never changed the momentum: the test checks nothing of it";
  EXPECT_GT(unclipped, 0) << "the clip bound every element";
}

// A NaN in the pseudo-gradient reaches the anchor: the clip does not turn
// it into +-clip.
TEST(LocalSgdTest, OuterStepPropagatesNaN) {
  std::vector<float> param(3, 0.f), anchor = {1.f, 2.f, 3.f}, m(3, 0.f);
  const std::vector<float> sum = {0.5f, std::nanf(""), -0.5f};
  outerStep(param.data(), anchor.data(), m.data(), sum.data(), 3, 0.7f, 0.5f, false, 2, 2.f, 0.01f,
            false);
  EXPECT_TRUE(std::isnan(m[1]));
  EXPECT_TRUE(std::isnan(anchor[1]));
  EXPECT_TRUE(std::isnan(param[1]));
  // The others, clipped: 0.5 / 4 > 0.01.
  EXPECT_EQ(m[0], 0.01f);
  EXPECT_EQ(m[2], -0.01f);
  EXPECT_EQ(anchor[0], 1.f - 0.7f * 0.01f);
  EXPECT_EQ(anchor[2], 3.f - 0.7f * -0.01f);
}

// CO2's exchange (keep_anchor) runs while the next round still reads the
// anchor: the parameters get the anchor the step without keep_anchor would
// have left, the anchor stays, and the momentum buffer moves as it would.
// Both steps start every round from the same anchor; the buffers run on.
TEST(LocalSgdTest, OuterStepKeepAnchorLeavesTheAnchor) {
  const Outer configs[] = {{0.7f, 0.9f, true, true, 4, 1.f, 0.f},
                           {0.7f, 0.5f, false, true, 4, 2.f, 0.01f},
                           {1.f, 0.f, false, false, 3, 1.f, 0.f}};
  for (const Outer &o : configs) {
    for (int64_t n : kSizes) {
      SCOPED_TRACE("n = " + std::to_string(n) + ", momentum " + std::to_string(o.momentum));
      const auto anchor = randomVector(n, 600 + n);
      // The step without keep_anchor: other*.
      std::vector<float> kept = anchor, param(n, 0.f), m(n, 0.f), otherAnchor(n), otherParam(n),
                         otherM(n, 0.f);
      for (int round = 0; round < 3; ++round) {
        const float bound = 0.05f * static_cast<float>(o.replicas);
        const auto sum = randomVector(n, 700 + 10 * n + round, -bound, bound);
        otherAnchor = anchor;
        outerStep(otherParam.data(), otherAnchor.data(), o.buffer ? otherM.data() : nullptr,
                  sum.data(), n, o.lr, o.momentum, o.nesterov, o.replicas, o.gapPenalty, o.clip,
                  false);
        outerStep(param.data(), kept.data(), o.buffer ? m.data() : nullptr, sum.data(), n, o.lr,
                  o.momentum, o.nesterov, o.replicas, o.gapPenalty, o.clip, true);
        EXPECT_EQ(param, otherAnchor) << "round " << round;
        EXPECT_EQ(kept, anchor) << "round " << round;
        EXPECT_EQ(m, otherM) << "round " << round;
        EXPECT_NE(param, anchor) << "round " << round << ": the step moved nothing";
      }
    }
  }
}

// The divisor is replicas * gapPenalty (products exact in f32 here).
TEST(LocalSgdTest, OuterDivisorRoundsOnce) {
  EXPECT_EQ(outerDivisor(4, 1.f), 4.f);
  EXPECT_EQ(outerDivisor(3, 1.5f), 4.5f);
}

} // namespace
} // namespace sbpflow::cpu
