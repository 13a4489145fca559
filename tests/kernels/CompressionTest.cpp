// The CPU compression codecs against plain references on awkward sizes:
// exact top-k with error feedback (what is sent plus what is kept is the
// accumulated gradient, bit for bit), DGC's local step (momentum correction,
// sampled threshold, factor masking; without momentum correction, and the
// AdamW update it accumulates under AdamW) and warm-up, shared-seed
// random-k, the decoding scatter-add, and EDiT's anomaly detector and
// weights.
#include "kernels/cpu/Compression.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/RandomVector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <set>
#include <vector>

namespace sbpflow {
namespace {

using test::randomVector;

// Reference top-k: every index ranked by |acc| (NaN first), ties by index,
// by a full sort; the first k, in index order.
std::vector<int32_t> referenceTopk(const std::vector<float> &acc, int64_t k) {
  std::vector<int32_t> rank(acc.size());
  std::iota(rank.begin(), rank.end(), 0);
  auto key = [&](int32_t i) {
    return std::isnan(acc[i]) ? std::numeric_limits<double>::infinity()
                              : std::fabs(static_cast<double>(acc[i]));
  };
  std::stable_sort(rank.begin(), rank.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
  std::vector<int32_t> chosen(rank.begin(), rank.begin() + k);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

// Encodes `grad` onto `residual` and checks the pairs and the new residual
// against the reference, and that residual + decoded pairs = acc exactly.
void expectTopk(const std::vector<float> &grad, std::vector<float> residual, int64_t k) {
  const int64_t n = static_cast<int64_t>(grad.size());
  SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k));
  std::vector<float> acc(n);
  for (int64_t i = 0; i < n; ++i)
    acc[i] = grad[i] + residual[i];
  std::vector<int32_t> order(n), idx(k, -7);
  std::vector<float> val(k, -7.f);
  cpu::topkEncode(grad.data(), residual.data(), n, k, order.data(), idx.data(), val.data());

  const std::vector<int32_t> want = referenceTopk(acc, k);
  ASSERT_EQ(idx, want);
  std::set<int32_t> sent(want.begin(), want.end());
  std::vector<float> decoded(n, 0.f);
  ASSERT_EQ(cpu::scatterAddPairs(idx.data(), val.data(), k, 1.f, decoded.data(), n), -1);
  for (int64_t i = 0; i < n; ++i) {
    const float kept = sent.count(static_cast<int32_t>(i)) ? 0.f : acc[i];
    EXPECT_EQ(std::memcmp(&residual[i], &kept, sizeof(float)), 0) << "residual at " << i;
    const float whole = residual[i] + decoded[i];
    EXPECT_EQ(std::memcmp(&whole, &acc[i], sizeof(float)), 0) << "residual + decoded at " << i;
  }
}

TEST(TopkEncode, MatchesTheReferenceOnAwkwardSizes) {
  for (int64_t n : {1, 2, 7, 97, 1000, 4099}) {
    auto grad = randomVector(n, 301 + n);
    auto residual = randomVector(n, 401 + n, -0.5f, 0.5f);
    std::set<int64_t> ks = {0, 1, n / 3, n - 1, n};
    for (int64_t k : ks)
      expectTopk(grad, residual, k);
  }
}

// Large gradients with few pairs select over the keys at or above a sampled
// bound: the same pairs as the reference, with ties, and where the sample
// misses the tail (every stride-th element large, the rest not: fewer than
// k reach the bound, and the selection runs over all n).
TEST(TopkEncode, MatchesTheReferenceWhereASampleBoundsTheSelection) {
  for (int64_t n : {int64_t{16384}, int64_t{100003}}) {
    auto grad = randomVector(n, 311 + n);
    auto residual = randomVector(n, 411 + n, -0.5f, 0.5f);
    for (int64_t k : {int64_t{1}, int64_t{7}, int64_t{100}, n / 9, n / 8 + 1})
      expectTopk(grad, residual, k);
    auto coarse = grad;
    for (float &g : coarse)
      g = std::round(g * 4.f) / 4.f;
    for (int64_t k : {3, 1000})
      expectTopk(coarse, std::vector<float>(n, 0.f), k);
  }
  const int64_t n = 65536; // a sample of 4096: every 16th element
  std::vector<float> spiky(n);
  for (int64_t i = 0; i < n; ++i)
    spiky[i] = i % 16 == 0 ? 100.f + static_cast<float>(i) : 1e-3f * static_cast<float>(i % 7);
  for (int64_t k : {100, 5000})
    expectTopk(spiky, std::vector<float>(n, 0.f), k);
}

// Equal magnitudes (values on a coarse grid, both signs): the lower index
// wins, so every rank and every run selects the same elements.
TEST(TopkEncode, TiesGoToTheLowerIndex) {
  const int64_t n = 1003;
  auto grad = randomVector(n, 501);
  for (float &g : grad)
    g = std::round(g * 4.f) / 4.f;
  for (int64_t k : {1, 10, 250, 500})
    expectTopk(grad, std::vector<float>(n, 0.f), k);
}

// A NaN is sent (it counts as the largest), so the other ranks see it.
TEST(TopkEncode, ANanIsSent) {
  auto grad = randomVector(64, 601);
  grad[40] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> residual(64, 0.f);
  std::vector<int32_t> order(64), idx(1);
  std::vector<float> val(1);
  cpu::topkEncode(grad.data(), residual.data(), 64, 1, order.data(), idx.data(), val.data());
  EXPECT_EQ(idx[0], 40);
  EXPECT_TRUE(std::isnan(val[0]));
  EXPECT_EQ(residual[40], 0.f);
}

// Error feedback over steps: what one step does not send is added to the
// next step's gradient; after every step, sent + kept = every gradient so far.
TEST(TopkEncode, ErrorFeedbackKeepsWhatWasNotSent) {
  const int64_t n = 257, k = 13;
  std::vector<float> residual(n, 0.f), sentSum(n, 0.f);
  std::vector<double> gradSum(n, 0.0);
  std::vector<int32_t> order(n), idx(k);
  std::vector<float> val(k);
  for (int step = 0; step < 20; ++step) {
    auto grad = randomVector(n, 701 + step);
    for (int64_t i = 0; i < n; ++i)
      gradSum[i] += grad[i];
    cpu::topkEncode(grad.data(), residual.data(), n, k, order.data(), idx.data(), val.data());
    ASSERT_EQ(cpu::scatterAddPairs(idx.data(), val.data(), k, 1.f, sentSum.data(), n), -1);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(sentSum[i] + residual[i], gradSum[i], 1e-5) << "step " << step << " at " << i;
  }
}

// Pairs of three ranks with colliding indices, averaged (scale 1/3), against
// a double reference; an index outside the gradient is reported (the first)
// and skipped, the rest applied.
TEST(ScatterAddPairs, SumsEveryRanksPairsAndReportsABadIndex) {
  const int64_t n = 101, perRank = 17, ranks = 3;
  std::vector<int32_t> idx;
  std::vector<float> val = randomVector(perRank * ranks, 801);
  for (int64_t r = 0; r < ranks; ++r)
    for (int64_t j = 0; j < perRank; ++j)
      idx.push_back(static_cast<int32_t>((7 * j + 3 * r) % n));
  auto base = randomVector(n, 802);
  std::vector<double> want(base.begin(), base.end());
  for (size_t i = 0; i < idx.size(); ++i)
    want[idx[i]] += val[i] / 3.0;
  std::vector<float> out = base;
  ASSERT_EQ(cpu::scatterAddPairs(idx.data(), val.data(), perRank * ranks, 1.f / 3.f, out.data(), n),
            -1);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_NEAR(out[i], want[i], 1e-6) << i;

  idx[20] = static_cast<int32_t>(n);
  idx[30] = -1;
  out = base;
  EXPECT_EQ(cpu::scatterAddPairs(idx.data(), val.data(), perRank * ranks, 1.f, out.data(), n), 20);
  double skipped = 0;
  for (int64_t i = 0; i < n; ++i)
    skipped += out[i];
  double wantSum = std::accumulate(base.begin(), base.end(), 0.0);
  for (size_t i = 0; i < idx.size(); ++i)
    if (i != 20 && i != 30)
      wantSum += val[i];
  EXPECT_NEAR(skipped, wantSum, 1e-4);
}

// Reference DGC step, written from the description (sort-based selection):
// u = m u + g; v += u; threshold from every stride-th |v| (at least 1% of
// n); at most 10 adjustments into [0.8 k, 1.3 k], falling back to the
// threshold of the fewest passing >= k where they end below 0.8 k; the
// exact top k of what passes; pairs in index order padded with (0, 0); u, v
// zeroed where sent.
struct DgcReference {
  std::vector<float> u, v;
  std::vector<int32_t> idx;
  std::vector<float> val;
  int64_t chosen = 0;

  // correct = false: no momentum correction (v += grad; u untouched).
  void step(const std::vector<float> &grad, int64_t k, float m, bool correct = true) {
    const int64_t n = static_cast<int64_t>(grad.size());
    for (int64_t i = 0; i < n; ++i) {
      if (correct)
        u[i] = m * u[i] + grad[i];
      v[i] += correct ? u[i] : grad[i];
    }
    auto mag = [&](int64_t i) {
      return std::isnan(v[i]) ? std::numeric_limits<float>::infinity() : std::fabs(v[i]);
    };
    auto ranked = [&](std::vector<int32_t> ids) {
      std::stable_sort(ids.begin(), ids.end(),
                       [&](int32_t a, int32_t b) { return mag(a) > mag(b); });
      return ids;
    };
    const int64_t samples = std::max<int64_t>(1, (n + 99) / 100);
    const int64_t stride = std::max<int64_t>(1, n / samples);
    std::vector<int32_t> sample;
    for (int64_t i = 0; i < n; i += stride)
      sample.push_back(static_cast<int32_t>(i));
    const int64_t ns = static_cast<int64_t>(sample.size());
    const int64_t sk = std::clamp<int64_t>((k * ns + n - 1) / n, 1, ns);
    float threshold = mag(ranked(sample)[sk - 1]);
    auto passing = [&] {
      std::vector<int32_t> ids;
      for (int64_t i = 0; i < n; ++i)
        if (mag(i) >= threshold)
          ids.push_back(static_cast<int32_t>(i));
      return ids;
    };
    std::vector<int32_t> pass = passing();
    std::vector<std::pair<float, int64_t>> tried = {{threshold, pass.size()}};
    for (int a = 0; a < 10; ++a) {
      const int64_t c = static_cast<int64_t>(pass.size());
      if (c > k + (3 * k) / 10)
        threshold *= 1.3f;
      else if (c < (8 * k) / 10 && threshold > 0.f)
        threshold *= 0.8f;
      else
        break;
      pass = passing();
      tried.push_back({threshold, pass.size()});
    }
    if (static_cast<int64_t>(pass.size()) < (8 * k) / 10) {
      // Fall back to the threshold of the fewest passing that are >= k.
      int64_t best = -1;
      for (auto [t, c] : tried)
        if (c >= k && (best < 0 || c < best)) {
          best = c;
          threshold = t;
        }
      if (best >= 0)
        pass = passing();
    }
    std::vector<int32_t> top = ranked(pass);
    chosen = std::min<int64_t>(k, static_cast<int64_t>(top.size()));
    top.resize(chosen);
    std::sort(top.begin(), top.end());
    idx.assign(k, 0);
    val.assign(k, 0.f);
    for (int64_t j = 0; j < chosen; ++j) {
      idx[j] = top[j];
      val[j] = v[top[j]];
      if (correct)
        u[top[j]] = 0.f;
      v[top[j]] = 0.f;
    }
  }
};

TEST(DgcEncode, MatchesTheReferenceOverSteps) {
  for (int64_t n : {1, 7, 97, 1000, 4099, 20011}) {
    for (int64_t k : {int64_t{1}, std::max<int64_t>(1, n / 100), std::max<int64_t>(1, n / 7)}) {
      SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k));
      DgcReference ref{std::vector<float>(n, 0.f), std::vector<float>(n, 0.f), {}, {}, 0};
      std::vector<float> u(n, 0.f), v(n, 0.f), val(k);
      std::vector<int32_t> order(n), idx(k);
      for (int step = 0; step < 3; ++step) {
        auto grad = randomVector(n, 901 + 10 * step + n);
        const std::vector<float> before = [&] {
          std::vector<float> acc(n);
          for (int64_t i = 0; i < n; ++i)
            acc[i] = v[i] + (0.9f * u[i] + grad[i]);
          return acc;
        }();
        const int64_t chosen = cpu::dgcEncode(grad.data(), u.data(), v.data(), n, k, 0.9f,
                                              order.data(), idx.data(), val.data());
        ref.step(grad, k, 0.9f);
        ASSERT_EQ(chosen, ref.chosen) << "step " << step;
        ASSERT_EQ(idx, ref.idx) << "step " << step;
        ASSERT_EQ(val, ref.val) << "step " << step;
        ASSERT_EQ(u, ref.u) << "step " << step;
        ASSERT_EQ(v, ref.v) << "step " << step;
        // Nothing is lost: what stays in v plus what was sent is v before.
        std::vector<float> decoded(n, 0.f);
        ASSERT_EQ(cpu::scatterAddPairs(idx.data(), val.data(), k, 1.f, decoded.data(), n), -1);
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(v[i] + decoded[i], before[i]) << "step " << step << " at " << i;
      }
    }
  }
}

// Under AdamW the codec accumulates the update as it is: u null, v += grad,
// the same selection, and v + what was sent = v before, exactly.
TEST(DgcEncode, WithoutMomentumCorrectionAccumulatesTheInput) {
  for (int64_t n : {1, 97, 4099}) {
    for (int64_t k : {int64_t{1}, std::max<int64_t>(1, n / 7)}) {
      SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k));
      DgcReference ref{std::vector<float>(n, 0.f), std::vector<float>(n, 0.f), {}, {}, 0};
      std::vector<float> v(n, 0.f), val(k);
      std::vector<int32_t> order(n), idx(k);
      for (int step = 0; step < 3; ++step) {
        auto grad = randomVector(n, 1901 + 10 * step + n);
        std::vector<float> before(n);
        for (int64_t i = 0; i < n; ++i)
          before[i] = v[i] + grad[i];
        const int64_t chosen = cpu::dgcEncode(grad.data(), nullptr, v.data(), n, k, 0.9f,
                                              order.data(), idx.data(), val.data());
        ref.step(grad, k, 0.9f, /*correct=*/false);
        ASSERT_EQ(chosen, ref.chosen) << "step " << step;
        ASSERT_EQ(idx, ref.idx) << "step " << step;
        ASSERT_EQ(val, ref.val) << "step " << step;
        ASSERT_EQ(v, ref.v) << "step " << step;
        std::vector<float> decoded(n, 0.f);
        ASSERT_EQ(cpu::scatterAddPairs(idx.data(), val.data(), k, 1.f, decoded.data(), n), -1);
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(v[i] + decoded[i], before[i]) << "step " << step << " at " << i;
      }
    }
  }
}

// DGC under AdamW: adamUpdate is the step of PyTorch's AdamW (cpu::adamw,
// from w = 0 at learning rate 1 and no decay, moves w by minus the update)
// without the learning rate, times outScale, on the scaled gradient; the
// moments follow AdamW's. cpu::adamw may contract a * b + c into an FMA, so
// the two agree to rounding.
TEST(AdamUpdate, IsAdamWsStepWithoutTheLearningRate) {
  const int64_t n = 1031;
  const float beta1 = 0.9f, beta2 = 0.99f, eps = 1e-8f, gradScale = 0.37f, outScale = 0.5f;
  std::vector<float> m(n, 0.f), s(n, 0.f), update(n);
  std::vector<float> am(n, 0.f), av(n, 0.f);
  for (int64_t t = 1; t <= 5; ++t) {
    SCOPED_TRACE("step " + std::to_string(t));
    auto grad = randomVector(n, 2901 + t);
    cpu::adamUpdate(grad.data(), gradScale, m.data(), s.data(), update.data(), n, beta1, beta2, eps,
                    t, outScale);
    std::vector<float> w(n, 0.f);
    cpu::adamw(w.data(), am.data(), av.data(), grad.data(), n, 1.0f, beta1, beta2, eps, 0.0f, t,
               gradScale);
    for (int64_t i = 0; i < n; ++i) {
      // A few ulps (m: of its terms near 0.04, where they cancel).
      ASSERT_NEAR(m[i], am[i], 1e-6f * std::fabs(am[i]) + 1e-8f) << "m at " << i;
      ASSERT_NEAR(s[i], av[i], 1e-6f * av[i] + 1e-12f) << "s at " << i;
      ASSERT_NEAR(update[i], -outScale * w[i], 1e-5f * (std::fabs(w[i]) + 1.f))
          << "update at " << i;
    }
  }
}

// On a large random gradient the sampled threshold lands within DGC's band:
// between 0.8 k and k pairs are real (the rest is padding).
TEST(DgcEncode, SampledThresholdChoosesAboutK) {
  const int64_t n = 100003, k = 100; // 0.1% density
  auto grad = randomVector(n, 1001);
  std::vector<float> u(n, 0.f), v(n, 0.f), val(k);
  std::vector<int32_t> order(n), idx(k);
  const int64_t chosen = cpu::dgcEncode(grad.data(), u.data(), v.data(), n, k, 0.9f, order.data(),
                                        idx.data(), val.data());
  EXPECT_GE(chosen, (8 * k) / 10);
  EXPECT_LE(chosen, k);
  for (int64_t j = chosen; j < k; ++j)
    EXPECT_TRUE(idx[j] == 0 && val[j] == 0.f) << "padding at " << j;
}

TEST(DgcWarmup, FollowsThePapersSchedule) {
  EXPECT_EQ(cpu::dgcWarmupDensity(0, 0.001), 0.25);
  EXPECT_EQ(cpu::dgcWarmupDensity(1, 0.001), 0.0625);
  EXPECT_EQ(cpu::dgcWarmupDensity(2, 0.001), 0.015625);
  EXPECT_EQ(cpu::dgcWarmupDensity(3, 0.001), 0.004);
  EXPECT_EQ(cpu::dgcWarmupDensity(4, 0.001), 0.001);
  EXPECT_EQ(cpu::dgcWarmupDensity(40, 0.001), 0.001);
  EXPECT_EQ(cpu::dgcWarmupDensity(2, 0.05), 0.05); // never sparser than asked
}

// Shared-seed random-k: the same indices on every rank for a step, others
// the next step, distinct and in range; each index drawn about k/n of the
// steps; and the decoded mean over steps approaches the gradient (unbiased).
TEST(RandomK, SharedIndicesAndUnbiasedValues) {
  const int64_t n = 97, k = 10, steps = 20000;
  std::vector<int32_t> order(n), a(k), b(k);
  cpu::randomkIndices(n, k, 7, 3, order.data(), a.data());
  cpu::randomkIndices(n, k, 7, 3, order.data(), b.data());
  EXPECT_EQ(a, b);
  cpu::randomkIndices(n, k, 7, 4, order.data(), b.data());
  EXPECT_NE(a, b);
  auto grad = randomVector(n, 1101);
  std::vector<double> mean(n, 0.0);
  std::vector<int64_t> hits(n, 0);
  std::vector<float> val(k);
  for (int64_t step = 0; step < steps; ++step) {
    cpu::randomkIndices(n, k, 7, step, order.data(), a.data());
    ASSERT_TRUE(std::is_sorted(a.begin(), a.end()));
    ASSERT_EQ(std::adjacent_find(a.begin(), a.end()), a.end()) << "repeated index";
    ASSERT_GE(a.front(), 0);
    ASSERT_LT(a.back(), n);
    cpu::randomkEncode(grad.data(), n, k, a.data(), val.data());
    for (int64_t j = 0; j < k; ++j) {
      mean[a[j]] += val[j] / static_cast<double>(steps);
      ++hits[a[j]];
    }
  }
  // Each index is drawn with probability p = k / n: hits ~ Binomial(steps,
  // p), sd = sqrt(steps p (1 - p)) ~ 41; the decoded mean's sd per element
  // is |g| sqrt((1 - p) / (p steps)) <= 0.021 for |g| <= 1. Five sd each.
  const double p = static_cast<double>(k) / n;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(hits[i], steps * p, 5 * std::sqrt(steps * p * (1 - p))) << i;
    EXPECT_NEAR(mean[i], grad[i], 5 * 0.021) << i;
  }
}

// Modified Gram-Schmidt checked by what it must give, in double: orthonormal
// columns spanning the same space (each original column equals its
// projection on them); a zero column kept zero.
TEST(OrthogonalizeColumns, OrthonormalColumnsOfTheSameSpan) {
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 3}, {97, 4}, {1000, 8}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    auto p = randomVector(rows * cols, 1201 + rows);
    const std::vector<float> before = p;
    cpu::orthogonalizeColumns(p.data(), rows, cols);
    for (int64_t a = 0; a < cols; ++a)
      for (int64_t b = 0; b < cols; ++b) {
        double dot = 0;
        for (int64_t r = 0; r < rows; ++r)
          dot += static_cast<double>(p[r * cols + a]) * p[r * cols + b];
        EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-5) << a << "," << b;
      }
    // Same span: each original column is its projection on the new ones.
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = 0; r < rows; ++r) {
        double proj = 0;
        for (int64_t d = 0; d < cols; ++d) {
          double dot = 0;
          for (int64_t q = 0; q < rows; ++q)
            dot += static_cast<double>(p[q * cols + d]) * before[q * cols + c];
          proj += dot * p[r * cols + d];
        }
        EXPECT_NEAR(proj, before[r * cols + c], 1e-4) << r << "," << c;
      }
  }
  std::vector<float> zero = {1, 0, 2, 0, 3, 0}; // 3 x 2, second column zero
  cpu::orthogonalizeColumns(zero.data(), 3, 2);
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(zero[r * 2 + 1], 0.f);
}

// One PowerSGD step on one rank (the all-reduces are identities): a matrix
// of rank <= r comes back exactly (up to rounding), and error feedback keeps
// the rest for a matrix of higher rank: decoded + error = M.
TEST(PowerSgd, OneRankStepRecoversALowRankMatrix) {
  const int64_t n = 37, m = 29, r = 3;
  // M = A B^T with A [n, r], B [m, r].
  auto a = randomVector(n * r, 1301), b = randomVector(m * r, 1302);
  std::vector<float> mat(n * m), q = randomVector(m * r, 1303), p(n * r), decoded(n * m);
  cpu::matmul(a.data(), b.data(), mat.data(), n, m, r, false, true);
  auto step = [&](const std::vector<float> &x) {
    cpu::matmul(x.data(), q.data(), p.data(), n, r, m, false, false); // P = M Q
    cpu::orthogonalizeColumns(p.data(), n, r);
    cpu::matmul(x.data(), p.data(), q.data(), m, r, n, true, false);       // Q = M^T P
    cpu::matmul(p.data(), q.data(), decoded.data(), n, m, r, false, true); // P Q^T
  };
  step(mat);
  for (int64_t i = 0; i < n * m; ++i)
    EXPECT_NEAR(decoded[i], mat[i], 1e-4 * std::max(1.f, std::fabs(mat[i]))) << i;

  auto full = randomVector(n * m, 1304);
  step(full);
  std::vector<float> error(n * m);
  for (int64_t i = 0; i < n * m; ++i)
    error[i] = full[i] - decoded[i];
  double errNorm = 0, fullNorm = 0;
  for (int64_t i = 0; i < n * m; ++i) {
    EXPECT_NEAR(decoded[i] + error[i], full[i], 1e-6) << i;
    errNorm += static_cast<double>(error[i]) * error[i];
    fullNorm += static_cast<double>(full[i]) * full[i];
  }
  // A rank-3 approximation of a random 37 x 29 matrix keeps some of it, not
  // all: the error is smaller than M and not zero.
  EXPECT_LT(errNorm, fullNorm);
  EXPECT_GT(errNorm, 0.1 * fullNorm);
}

} // namespace
} // namespace sbpflow

// ---------------------------------------------------------------- L-GreCo

namespace sbpflow {
namespace {

// Every assignment of `layers` layers to C candidates, scored as the header
// says: the fewest bytes whose floored error units fit the budget.
double bruteForceBytes(const std::vector<float> &table, int layers, int C, int defaultIndex) {
  double budget = 0;
  for (int l = 0; l < layers; ++l)
    budget += table[l * 2 * C + defaultIndex];
  double best = std::numeric_limits<double>::infinity();
  std::vector<int> pick(layers, 0);
  while (true) {
    double units = 0, bytes = 0;
    for (int l = 0; l < layers; ++l) {
      units += std::floor(double(table[l * 2 * C + pick[l]]) / budget * cpu::kLgrecoUnits);
      bytes += table[l * 2 * C + C + pick[l]];
    }
    if (units <= cpu::kLgrecoUnits)
      best = std::min(best, bytes);
    int l = 0;
    while (l < layers && ++pick[l] == C)
      pick[l++] = 0;
    if (l == layers)
      return best;
  }
}

TEST(LgrecoChoose, FindsTheFewestBytesWithinTheBudget) {
  std::vector<double> dp(2 * (cpu::kLgrecoUnits + 1));
  for (int layers : {1, 2, 3, 4})
    for (int C : {1, 3, 5})
      for (uint64_t seed = 1; seed <= 20; ++seed) {
        // Errors fall and bytes rise with the candidate, as ranks or densities do.
        std::vector<float> table(static_cast<size_t>(layers) * 2 * C);
        std::vector<float> r = test::randomVector(table.size(), seed, 0.0f, 1.0f);
        for (int l = 0; l < layers; ++l) {
          float error = 1.0f + 9.0f * r[l * 2 * C], bytes = 100.0f * (1 + l);
          for (int j = 0; j < C; ++j) {
            table[l * 2 * C + j] = error;
            table[l * 2 * C + C + j] = bytes;
            error *= 0.2f + 0.7f * r[l * 2 * C + j];
            bytes *= 1.5f + r[l * 2 * C + C + j];
          }
        }
        const int def = C / 2;
        std::vector<int32_t> choice(layers, def);
        std::vector<int8_t> picks(static_cast<size_t>(layers) * (cpu::kLgrecoUnits + 1));
        ASSERT_TRUE(cpu::lgrecoChoose(table.data(), layers, C, def, choice.data(), dp.data(),
                                      picks.data()));
        double units = 0, bytes = 0, budget = 0;
        for (int l = 0; l < layers; ++l)
          budget += table[l * 2 * C + def];
        for (int l = 0; l < layers; ++l) {
          ASSERT_GE(choice[l], 0);
          ASSERT_LT(choice[l], C);
          units += std::floor(double(table[l * 2 * C + choice[l]]) / budget * cpu::kLgrecoUnits);
          bytes += table[l * 2 * C + C + choice[l]];
        }
        EXPECT_LE(units, cpu::kLgrecoUnits) << layers << " layers, " << C << " candidates";
        EXPECT_DOUBLE_EQ(bytes, bruteForceBytes(table, layers, C, def))
            << layers << " layers, " << C << " candidates, seed " << seed;
      }
}

// A layer whose error falls steeply with a dearer candidate takes it, so that
// a layer whose payload is large can drop to its cheapest candidate within
// the same summed error: the assignment moves off the uniform default.
TEST(LgrecoChoose, TradesErrorBetweenLayers) {
  // Per layer, candidates {small, default, large}: errors, then bytes.
  const std::vector<float> table = {1.5f, 1.0f, 0.001f, 10,  20,  40,   // small payloads
                                    1.9f, 1.0f, 0.5f,   100, 200, 400}; // large payloads
  std::vector<int32_t> choice = {1, 1};
  std::vector<double> dp(2 * (cpu::kLgrecoUnits + 1));
  std::vector<int8_t> picks(2 * (cpu::kLgrecoUnits + 1));
  ASSERT_TRUE(cpu::lgrecoChoose(table.data(), 2, 3, 1, choice.data(), dp.data(), picks.data()));
  // Uniform: 220 B at error 2.0 (the budget). {large, small}: 140 B at
  // 1.901. Every cheaper assignment exceeds the budget.
  EXPECT_EQ(choice, (std::vector<int32_t>{2, 0}));
}

TEST(LgrecoChoose, AZeroOrNonFiniteBudgetKeepsTheChoice) {
  std::vector<float> table = {0, 0, 1, 2, 0, 0, 1, 2};
  std::vector<int32_t> choice = {1, 0};
  std::vector<double> dp(2 * (cpu::kLgrecoUnits + 1));
  std::vector<int8_t> picks(2 * (cpu::kLgrecoUnits + 1));
  EXPECT_FALSE(cpu::lgrecoChoose(table.data(), 2, 2, 0, choice.data(), dp.data(), picks.data()));
  table[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(cpu::lgrecoChoose(table.data(), 2, 2, 0, choice.data(), dp.data(), picks.data()));
  EXPECT_EQ(choice, (std::vector<int32_t>{1, 0}));
}

// EDiT's detector written out in double, as the reference code's
// OnlineDynamicEWMA (alpha 0.02, warm-up 120, threshold 3): the decision on
// the EWMA before the norm, z = 0 while fewer than 120 norms were seen; then
// every norm updates mean and M2 from 0 and its z against them joins the
// window.
struct ReferenceDetector {
  int count = 0;
  double mean = 0, m2 = 0;
  std::vector<double> zs;
  double z(double norm) const {
    const double sd = count >= 2 ? std::sqrt(m2) : 0.0;
    return sd == 0 || count < 120 ? 0.0 : (norm - mean) / sd;
  }
  bool see(double norm) {
    bool anomalous = false;
    if (count >= 120) {
      std::vector<double> last(zs.end() - std::min<size_t>(zs.size(), 120), zs.end());
      double m = 0, ss = 0;
      for (double v : last)
        m += v / static_cast<double>(last.size());
      for (double v : last)
        ss += (v - m) * (v - m);
      const double sd = last.size() > 1 ? std::sqrt(ss / static_cast<double>(last.size() - 1)) : 0;
      anomalous = z(norm) > 3 * std::max(1.0, sd);
    }
    ++count;
    const double delta = norm - mean;
    mean += 0.02 * delta;
    m2 = 0.98 * (m2 + 0.02 * delta * (norm - mean));
    zs.push_back(z(norm));
    return anomalous;
  }
};

TEST(EditAnomalous, FlagsOnlyAnOutlierAfterTheWarmUpAsTheReference) {
  std::vector<float> state(cpu::kEditStateFloats, 0.0f);
  ReferenceDetector ref;
  int flagged = 0;
  for (int i = 0; i < 400; ++i) {
    // Norms about 1 with noise; a spike at 60 (inside the warm-up) and at 300.
    double norm = 1.0 + 0.05 * std::sin(0.7 * i) + 0.02 * std::cos(2.3 * i);
    if (i == 60 || i == 300)
      norm = 5.0;
    const bool want = ref.see(norm);
    EXPECT_EQ(cpu::editAnomalous(state.data(), norm), want) << "norm " << i;
    flagged += want;
    if (i == 60) {
      EXPECT_FALSE(want) << "the warm-up flags nothing";
    }
    if (i == 300) {
      EXPECT_TRUE(want) << "the spike after the warm-up";
    }
  }
  EXPECT_EQ(flagged, 1);
  EXPECT_NEAR(state[1], ref.mean, 1e-5);
  EXPECT_NEAR(state[2], ref.m2, 1e-6);
  EXPECT_EQ(state[0], 400.0f);
}

TEST(EditWeights, SoftmaxOfMinusTheNormsOrEqual) {
  const std::vector<float> norms = {0.5f, 1.0f, 2.0f, 1e6f};
  std::vector<float> w(4);
  cpu::editWeights(norms.data(), 4, 0.5f, w.data());
  double total = 0;
  for (float n : norms)
    total += std::exp(-n / 0.5);
  for (int r = 0; r < 4; ++r)
    EXPECT_NEAR(w[r], std::exp(-norms[r] / 0.5) / total, 1e-7) << r;
  EXPECT_EQ(w[3], 0.0f) << "an anomalous rank's penalised norm weighs nothing";
  cpu::editWeights(norms.data(), 4, 0.0f, w.data());
  EXPECT_EQ(w, (std::vector<float>{0.25f, 0.25f, 0.25f, 0.25f}));
}

// A-EDiT: half of each weight from the norms, half from the replica's share
// of the steps (a replica twice as fast weighs more; the weights still sum
// to one).
TEST(EditStepWeights, BlendsTheNormWeightsWithEachReplicasShareOfTheSteps) {
  const std::vector<float> steps = {30.0f, 15.0f, 15.0f, 0.0f};
  std::vector<float> w = {0.25f, 0.25f, 0.25f, 0.25f};
  cpu::editStepWeights(steps.data(), 4, 0.5f, w.data());
  EXPECT_EQ(w, (std::vector<float>{0.375f, 0.25f, 0.25f, 0.125f}));
  std::vector<float> same = {0.1f, 0.2f, 0.3f, 0.4f};
  cpu::editStepWeights(steps.data(), 4, 1.0f, same.data());
  EXPECT_EQ(same, (std::vector<float>{0.5f, 0.25f, 0.25f, 0.0f})) << "ratio 1: the steps alone";
  const std::vector<float> none(4, 0.0f);
  std::vector<float> kept = {0.1f, 0.2f, 0.3f, 0.4f};
  cpu::editStepWeights(none.data(), 4, 0.5f, kept.data());
  EXPECT_FLOAT_EQ(kept[3], 0.325f) << "no steps: equal shares of them";
}

} // namespace
} // namespace sbpflow
