// The CPU compression codecs against plain references on awkward sizes:
// exact top-k with error feedback (what is sent plus what is kept is the
// accumulated gradient, bit for bit) and the decoding scatter-add.
#include "kernels/cpu/Compression.h"
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

} // namespace
} // namespace sbpflow
