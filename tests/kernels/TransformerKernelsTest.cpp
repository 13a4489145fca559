// The transformer CPU kernels (Transformer.h) against plain double-precision
// references on awkward sizes, gradients also against central finite
// differences of the double forward, Philox against Random123's known answers.
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/RandomVector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace sbpflow::cpu {
namespace {

using Vec = std::vector<double>;

using sbpflow::test::randomVector;

Vec toDouble(const std::vector<float> &v) { return Vec(v.begin(), v.end()); }

// |got - want| <= atol + rtol |want|.
::testing::AssertionResult near(double want, double got, double atol, double rtol) {
  if (std::abs(want - got) <= atol + rtol * std::abs(want))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "want " << want << ", got " << got << " (diff " << std::abs(want - got) << ")";
}

void expectAllNear(const Vec &want, const std::vector<float> &got, double atol, double rtol,
                   const std::string &what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_TRUE(near(want[i], got[i], atol, rtol)) << what << " at " << i;
}

// d/dx_i of f at x by central differences, in double.
Vec finiteDiff(const std::function<double(const Vec &)> &f, Vec x, double h = 1e-4) {
  Vec grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double up = f(x);
    x[i] = x0 - h;
    const double down = f(x);
    x[i] = x0;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

double dotD(const Vec &a, const Vec &b) {
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

std::string sizes(std::initializer_list<int64_t> dims) {
  std::string s;
  for (int64_t d : dims)
    s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

// ---------------------------------------------------------------- embedding

TEST(EmbeddingTest, LooksUpWholeAndVocabularySplitTables) {
  const int64_t vocab = 29;
  for (int64_t dim : {1, 7, 33})
    for (int64_t n : {1, 13, 127})
      // (rowBegin, tableRows): the whole table, a middle slice, the last slice.
      for (auto [rowBegin, tableRows] : {std::pair<int64_t, int64_t>{0, vocab}, {11, 9}, {20, 9}}) {
        const std::string what = sizes({n, dim}) + " rows [" + std::to_string(rowBegin) + ", " +
                                 std::to_string(rowBegin + tableRows) + ")";
        auto table = randomVector(tableRows * dim, dim * 100 + n + rowBegin);
        std::vector<int32_t> ids(n);
        std::mt19937_64 rng(n + dim);
        for (auto &id : ids)
          id = static_cast<int32_t>(rng() % vocab);
        std::vector<float> out(n * dim, 99.f);
        EXPECT_EQ(
            embedding(table.data(), tableRows, rowBegin, vocab, ids.data(), n, dim, out.data()), -1)
            << what;
        for (int64_t r = 0; r < n; ++r) {
          const int64_t local = ids[r] - rowBegin;
          const bool mine = local >= 0 && local < tableRows;
          for (int64_t j = 0; j < dim; ++j)
            ASSERT_EQ(out[r * dim + j], mine ? table[local * dim + j] : 0.f)
                << what << " row " << r << " id " << ids[r];
        }
      }
}

TEST(EmbeddingTest, ReportsFirstIdOutsideTheVocabulary) {
  const int64_t vocab = 5, dim = 3;
  auto table = randomVector(vocab * dim, 1);
  // The slice [0, 3) of the table does not hold 3 or 4: those are valid ids
  // (another rank's rows), only -1 and 5 are errors.
  std::vector<int32_t> ids = {0, 4, 3, -1, 2, 5, 1};
  std::vector<float> out(ids.size() * dim, 7.f);
  EXPECT_EQ(embedding(table.data(), 3, 0, vocab, ids.data(), 7, dim, out.data()), 3);
  for (int64_t j = 0; j < dim; ++j) {
    EXPECT_EQ(out[3 * dim + j], 0.f);
    EXPECT_EQ(out[5 * dim + j], 0.f);
    EXPECT_EQ(out[6 * dim + j], table[1 * dim + j]);
  }
  ids = {1, 2, 5};
  EXPECT_EQ(embedding(table.data(), vocab, 0, vocab, ids.data(), 3, dim, out.data()), 2);
}

TEST(EmbeddingTest, GradAccumulatesRepeatedIds) {
  const int64_t vocab = 17;
  for (int64_t dim : {1, 7, 33})
    for (int64_t n : {1, 13, 131})
      for (auto [rowBegin, tableRows] : {std::pair<int64_t, int64_t>{0, vocab}, {5, 7}}) {
        const std::string what = sizes({n, dim}) + " rowBegin " + std::to_string(rowBegin);
        auto dy = randomVector(n * dim, n * 7 + dim);
        std::vector<int32_t> ids(n);
        std::mt19937_64 rng(3 * n + dim);
        // Few distinct ids, so most are repeated.
        for (auto &id : ids)
          id = static_cast<int32_t>(rng() % 9) * 2;
        Vec want(tableRows * dim, 0.0), scale(tableRows * dim, 0.0);
        for (int64_t r = 0; r < n; ++r) {
          const int64_t local = ids[r] - rowBegin;
          if (local < 0 || local >= tableRows)
            continue;
          for (int64_t j = 0; j < dim; ++j) {
            want[local * dim + j] += dy[r * dim + j];
            scale[local * dim + j] += std::abs(dy[r * dim + j]);
          }
        }
        std::vector<float> dtable(tableRows * dim, 1234.f); // overwritten, not accumulated
        embeddingGrad(dy.data(), ids.data(), n, dim, dtable.data(), tableRows, rowBegin);
        for (size_t i = 0; i < want.size(); ++i)
          EXPECT_TRUE(near(want[i], dtable[i], 1e-6 * scale[i], 0)) << what << " at " << i;
      }
}

// --------------------------------------------------------------- layer norm

// Mean and 1 / sqrt(variance + eps) of row i, in double.
std::pair<double, double> refRowStats(const Vec &x, int64_t i, int64_t cols, double eps) {
  double mean = 0, var = 0;
  for (int64_t j = 0; j < cols; ++j)
    mean += x[i * cols + j];
  mean /= cols;
  for (int64_t j = 0; j < cols; ++j)
    var += (x[i * cols + j] - mean) * (x[i * cols + j] - mean);
  var /= cols;
  return {mean, 1 / std::sqrt(var + eps)};
}

Vec refLayerNorm(const Vec &x, const Vec &gamma, const Vec &beta, int64_t rows, int64_t cols,
                 double eps) {
  Vec y(rows * cols);
  for (int64_t i = 0; i < rows; ++i) {
    const auto [mean, rstd] = refRowStats(x, i, cols, eps);
    for (int64_t j = 0; j < cols; ++j)
      y[i * cols + j] = (x[i * cols + j] - mean) * rstd * gamma[j] + beta[j];
  }
  return y;
}

// The analytic gradient in double: dx, dgamma, dbeta.
void refLayerNormGrad(const Vec &dy, const Vec &x, const Vec &gamma, int64_t rows, int64_t cols,
                      double eps, Vec &dx, Vec &dgamma, Vec &dbeta) {
  dx.assign(rows * cols, 0);
  dgamma.assign(cols, 0);
  dbeta.assign(cols, 0);
  for (int64_t i = 0; i < rows; ++i) {
    const auto [mean, rstd] = refRowStats(x, i, cols, eps);
    double sg = 0, sgx = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const double xhat = (x[i * cols + j] - mean) * rstd, g = dy[i * cols + j] * gamma[j];
      sg += g;
      sgx += g * xhat;
      dgamma[j] += dy[i * cols + j] * xhat;
      dbeta[j] += dy[i * cols + j];
    }
    for (int64_t j = 0; j < cols; ++j) {
      const double xhat = (x[i * cols + j] - mean) * rstd;
      dx[i * cols + j] = rstd * (dy[i * cols + j] * gamma[j] - sg / cols - xhat * sgx / cols);
    }
  }
}

// Float rounding of a row's values is about 1.2e-7 max|x|; normalising
// divides by the row's spread, so errors scale with the row's condition
// number max|x| * rstd (large when the values nearly agree).
struct RowCondition {
  double rstd, cond;
};

std::vector<RowCondition> rowConditions(const std::vector<float> &x, int64_t rows, int64_t cols,
                                        double eps) {
  std::vector<RowCondition> out;
  for (int64_t i = 0; i < rows; ++i) {
    double mean = 0, var = 0, maxAbs = 0;
    for (int64_t j = 0; j < cols; ++j) {
      mean += x[i * cols + j];
      maxAbs = std::max(maxAbs, std::abs(static_cast<double>(x[i * cols + j])));
    }
    mean /= cols;
    for (int64_t j = 0; j < cols; ++j)
      var += (x[i * cols + j] - mean) * (x[i * cols + j] - mean);
    const double rstd = 1 / std::sqrt(var / cols + eps);
    out.push_back({rstd, 1 + maxAbs * rstd});
  }
  return out;
}

TEST(LayerNormTest, MatchesReference) {
  const float eps = 1e-5f;
  for (int64_t rows : {1, 7, 13, 130})
    for (int64_t cols : {1, 2, 7, 13, 127, 130}) {
      const std::string what = sizes({rows, cols});
      // Rows far from zero: a one-pass variance would cancel.
      auto x = randomVector(rows * cols, rows * 1000 + cols, 2.f, 4.f);
      auto gamma = randomVector(cols, cols, 0.5f, 1.5f);
      auto beta = randomVector(cols, cols + 1);
      std::vector<float> y(rows * cols, 99.f);
      layerNorm(x.data(), gamma.data(), beta.data(), y.data(), rows, cols, eps);
      const Vec want = refLayerNorm(toDouble(x), toDouble(gamma), toDouble(beta), rows, cols, eps);
      const auto cond = rowConditions(x, rows, cols, eps);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          EXPECT_TRUE(near(want[i * cols + j], y[i * cols + j],
                           1e-6 + 1e-6 * cond[i].cond * std::abs(gamma[j]), 1e-5))
              << what << " at " << i << ", " << j << " (condition " << cond[i].cond << ")";
    }
}

TEST(LayerNormTest, GradMatchesReferenceAndFiniteDifferences) {
  const float eps = 1e-5f;
  for (int64_t rows : {1, 3, 7, 130})
    for (int64_t cols : {1, 2, 7, 13, 130}) {
      const std::string what = sizes({rows, cols});
      auto x = randomVector(rows * cols, rows * 31 + cols, -2.f, 2.f);
      auto gamma = randomVector(cols, cols + 5, 0.5f, 1.5f);
      auto beta = randomVector(cols, cols + 6);
      auto w = randomVector(rows * cols, rows + 77 * cols); // L = sum(w * y), so dy = w
      std::vector<float> dx(rows * cols, 5.f), dgamma(cols, 5.f), dbeta(cols, 5.f);
      layerNormGrad(w.data(), x.data(), gamma.data(), dx.data(), dgamma.data(), dbeta.data(), rows,
                    cols, eps);
      Vec rdx, rdgamma, rdbeta;
      refLayerNormGrad(toDouble(w), toDouble(x), toDouble(gamma), rows, cols, eps, rdx, rdgamma,
                       rdbeta);
      // |dy|, |gamma| <= 1.5: dx errors scale with rstd * cond, the summed
      // dgamma errors with the sum of the rows' cond.
      const auto cond = rowConditions(x, rows, cols, eps);
      double condSum = 0;
      for (const auto &c : cond)
        condSum += c.cond;
      std::vector<double> dxTol(rows * cols);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          dxTol[i * cols + j] = 2e-5 + 2e-6 * cond[i].cond * cond[i].rstd;
      const Vec xd = toDouble(x), gd = toDouble(gamma), bd = toDouble(beta), wd = toDouble(w);
      const bool small = rows * cols <= 200; // finite differences on the small cases only
      Vec fdx, fdg, fdb;
      if (small) {
        fdx = finiteDiff(
            [&](const Vec &xv) { return dotD(wd, refLayerNorm(xv, gd, bd, rows, cols, eps)); }, xd);
        fdg = finiteDiff(
            [&](const Vec &gv) { return dotD(wd, refLayerNorm(xd, gv, bd, rows, cols, eps)); }, gd);
        fdb = finiteDiff(
            [&](const Vec &bv) { return dotD(wd, refLayerNorm(xd, gd, bv, rows, cols, eps)); }, bd);
      }
      for (int64_t e = 0; e < rows * cols; ++e) {
        EXPECT_TRUE(near(rdx[e], dx[e], dxTol[e], 1e-5)) << what << " dx at " << e;
        if (small) {
          EXPECT_TRUE(near(fdx[e], dx[e], dxTol[e], 1e-4))
              << what << " dx vs finite differences at " << e;
        }
      }
      for (int64_t j = 0; j < cols; ++j) {
        const double tol = 2e-5 * rows + 2e-6 * condSum;
        EXPECT_TRUE(near(rdgamma[j], dgamma[j], tol, 1e-5)) << what << " dgamma at " << j;
        EXPECT_TRUE(near(rdbeta[j], dbeta[j], 2e-5 * rows, 1e-5)) << what << " dbeta at " << j;
        if (small) {
          EXPECT_TRUE(near(fdg[j], dgamma[j], tol, 1e-4))
              << what << " dgamma vs finite differences at " << j;
          EXPECT_TRUE(near(fdb[j], dbeta[j], 2e-5 * rows, 1e-4))
              << what << " dbeta vs finite differences at " << j;
        }
      }
    }
}

// --------------------------------------------------------------------- GELU

double refGelu(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double refGeluDeriv(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0)) +
         x * std::exp(-0.5 * x * x) * 0.3989422804014327; // 1 / sqrt(2 pi)
}

TEST(GeluTest, MatchesExactErfGelu) {
  for (int64_t n : {1, 7, 13, 127, 1031}) {
    auto x = randomVector(n, n, -9.f, 9.f);
    // Tails and the sign change.
    const float special[] = {0.f, -0.f, 1e-20f, -1e-20f, -5.5f, 5.5f, -30.f, 30.f, 100.f};
    for (size_t i = 0; i < std::size(special) && i < x.size(); ++i)
      x[i] = special[i];
    std::vector<float> y(n, 99.f);
    gelu(x.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i)
      // Relative accuracy also in the negative tail, where GELU is tiny, up
      // to the float rounding of the exponent -x^2 / 2 (1.2e-7 x^2 / 2).
      EXPECT_TRUE(near(refGelu(x[i]), y[i], 1e-30, 2e-6 + 6e-8 * x[i] * x[i])) << "x = " << x[i];
  }
  float big = std::numeric_limits<float>::infinity(), y;
  gelu(&big, &y, 1);
  EXPECT_EQ(y, big);
}

// Wherever a NaN falls (the vectorised body or the scalar tail), GELU
// returns it as it came, sign and payload.
TEST(GeluTest, NanPassesThroughAnywhere) {
  for (int64_t n : {1, 17, 40})
    for (uint32_t bits : {0x7fc00000u, 0xffc00001u, 0x7fd23456u}) {
      float nan;
      std::memcpy(&nan, &bits, sizeof nan);
      std::vector<float> x(n, nan), y(n);
      gelu(x.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        uint32_t got;
        std::memcpy(&got, &y[i], sizeof got);
        EXPECT_EQ(got, bits) << "n = " << n << " at " << i;
      }
    }
}

TEST(GeluTest, GradMatchesReferenceAndFiniteDifferences) {
  for (int64_t n : {1, 7, 13, 127, 1031}) {
    auto x = randomVector(n, 3 * n, -7.f, 7.f);
    x[0] = 0.f;
    auto dy = randomVector(n, 5 * n);
    std::vector<float> dx(n, 99.f);
    geluGrad(dy.data(), x.data(), dx.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double want = dy[i] * refGeluDeriv(x[i]);
      EXPECT_TRUE(near(want, dx[i], 1e-7, 1e-5)) << "x = " << x[i];
      const double h = 1e-4;
      const double fd = dy[i] * (refGelu(x[i] + h) - refGelu(x[i] - h)) / (2 * h);
      EXPECT_TRUE(near(fd, dx[i], 1e-6, 1e-5)) << "x = " << x[i] << " vs finite differences";
    }
  }
}

TEST(GeluTest, GradMayOverwriteItsInput) {
  auto x = randomVector(37, 1, -3.f, 3.f);
  auto dy = randomVector(37, 2);
  std::vector<float> want(37), inPlace = dy;
  geluGrad(dy.data(), x.data(), want.data(), 37);
  geluGrad(inPlace.data(), x.data(), inPlace.data(), 37);
  EXPECT_EQ(want, inPlace);
}

// Fused bias + GELU: the unfused pair's every bit (fused and unfused plans
// must train identically), the pre-activation in place too.

std::vector<uint32_t> bitsOf(const std::vector<float> &v) {
  std::vector<uint32_t> bits(v.size());
  std::memcpy(bits.data(), v.data(), v.size() * sizeof(float));
  return bits;
}

// x [rows, cols] with the tails, signed zeros, inf and NaN in its first row,
// and a bias.
std::pair<std::vector<float>, std::vector<float>> biasGeluInputs(int64_t rows, int64_t cols) {
  auto x = randomVector(rows * cols, 7 * rows + cols, -6.f, 6.f);
  auto bias = randomVector(cols, 11 * cols, -3.f, 3.f);
  const float special[] = {0.f,
                           -0.f,
                           -30.f,
                           30.f,
                           std::numeric_limits<float>::infinity(),
                           -5.5f,
                           100.f,
                           1e-20f,
                           std::numeric_limits<float>::quiet_NaN()};
  for (size_t i = 0; i < std::size(special) && i < x.size(); ++i)
    x[i] = special[i];
  if (cols > 2)
    bias[1] = 0.f; // -0 + 0
  return {x, bias};
}

TEST(BiasGeluTest, IsBiasAddThenGeluBitForBit) {
  for (int64_t rows : {1, 3, 13})
    for (int64_t cols : {1, 2, 7, 16, 17, 31, 33, 127, 1031}) {
      const std::string what = sizes({rows, cols});
      auto [x, bias] = biasGeluInputs(rows, cols);
      const int64_t n = rows * cols;
      std::vector<float> pre(n, 99.f), y(n, 99.f), wantPre(n), wantY(n);
      biasGelu(x.data(), bias.data(), pre.data(), y.data(), rows, cols);
      biasAdd(x.data(), bias.data(), wantPre.data(), rows, cols);
      gelu(wantPre.data(), wantY.data(), n);
      EXPECT_EQ(bitsOf(pre), bitsOf(wantPre)) << what;
      EXPECT_EQ(bitsOf(y), bitsOf(wantY)) << what;
      for (int64_t i = 0; i < n; ++i) {
        const double p = static_cast<double>(x[i]) + bias[i % cols];
        if (!std::isfinite(p))
          continue;
        // pre is x + bias rounded once; y the exact GELU of pre, as
        // GeluTest.MatchesExactErfGelu bounds it.
        EXPECT_TRUE(near(p, pre[i], 0, 0x1p-24)) << what << " pre at " << i;
        EXPECT_TRUE(near(refGelu(pre[i]), y[i], 1e-30, 2e-6 + 6e-8 * p * p))
            << what << " y at " << i << ", pre = " << pre[i];
      }
    }
}

// A BF16 plan stores pre as bf16 between biasAdd and gelu: the fused kernel
// then rounds pre before its GELU, as biasAdd, toBf16, fromBf16, gelu do.
TEST(BiasGeluTest, Bf16PreIsRoundedBeforeTheGelu) {
  for (int64_t rows : {1, 13})
    for (int64_t cols : {1, 7, 17, 33, 1031}) {
      const std::string what = sizes({rows, cols});
      auto [x, bias] = biasGeluInputs(rows, cols);
      const int64_t n = rows * cols;
      std::vector<float> pre(n, 99.f), y(n, 99.f), sum(n), wantPre(n), wantY(n);
      std::vector<uint16_t> stored(n);
      biasGelu(x.data(), bias.data(), pre.data(), y.data(), rows, cols, /*preBf16=*/true);
      biasAdd(x.data(), bias.data(), sum.data(), rows, cols);
      toBf16(sum.data(), stored.data(), n);
      fromBf16(stored.data(), wantPre.data(), n);
      gelu(wantPre.data(), wantY.data(), n);
      EXPECT_EQ(bitsOf(pre), bitsOf(wantPre)) << what;
      EXPECT_EQ(bitsOf(y), bitsOf(wantY)) << what;
      // The rounding did change pre (else this test would not tell).
      EXPECT_NE(bitsOf(pre), bitsOf(sum)) << what;
    }
}

TEST(BiasGeluTest, PreOrYMayOverwriteX) {
  const int64_t rows = 5, cols = 37;
  auto [x, bias] = biasGeluInputs(rows, cols);
  std::vector<float> pre(rows * cols), y(rows * cols);
  biasGelu(x.data(), bias.data(), pre.data(), y.data(), rows, cols);
  std::vector<float> preInX = x, yOther(rows * cols);
  biasGelu(preInX.data(), bias.data(), preInX.data(), yOther.data(), rows, cols);
  EXPECT_EQ(bitsOf(preInX), bitsOf(pre));
  EXPECT_EQ(bitsOf(yOther), bitsOf(y));
  std::vector<float> yInX = x, preOther(rows * cols);
  biasGelu(yInX.data(), bias.data(), preOther.data(), yInX.data(), rows, cols);
  EXPECT_EQ(bitsOf(preOther), bitsOf(pre));
  EXPECT_EQ(bitsOf(yInX), bitsOf(y));
}

// ------------------------------------------------------------------ softmax

Vec refSoftmax(const Vec &x, int64_t rows, int64_t cols) {
  Vec y(rows * cols);
  for (int64_t i = 0; i < rows; ++i) {
    double mx = -std::numeric_limits<double>::infinity(), s = 0;
    for (int64_t j = 0; j < cols; ++j)
      mx = std::max(mx, x[i * cols + j]);
    for (int64_t j = 0; j < cols; ++j)
      s += std::exp(x[i * cols + j] - mx);
    for (int64_t j = 0; j < cols; ++j)
      y[i * cols + j] = std::exp(x[i * cols + j] - mx) / s;
  }
  return y;
}

TEST(SoftmaxTest, MatchesReference) {
  for (int64_t rows : {1, 7, 13})
    for (int64_t cols : {1, 7, 13, 127, 130}) {
      auto x = randomVector(rows * cols, rows * 100 + cols, -10.f, 10.f);
      std::vector<float> y(rows * cols, 99.f);
      softmax(x.data(), y.data(), rows, cols);
      expectAllNear(refSoftmax(toDouble(x), rows, cols), y, 1e-9, 4e-6, sizes({rows, cols}));
    }
}

TEST(SoftmaxTest, HugeAndMaskedLogits) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {1000.f, 999.f, -1000.f, -inf, 3e4f, -inf, 3e4f - 2.f, 0.f};
  std::vector<float> y(8);
  softmax(x.data(), y.data(), 2, 4);
  Vec xd = toDouble(x);
  expectAllNear(refSoftmax(xd, 2, 4), y, 1e-9, 4e-6, "huge and -inf logits");
  EXPECT_EQ(y[3], 0.f);
  EXPECT_EQ(y[5], 0.f);
}

TEST(SoftmaxTest, GradMatchesReferenceAndFiniteDifferences) {
  for (int64_t rows : {1, 7, 13})
    for (int64_t cols : {1, 7, 13, 130}) {
      const std::string what = sizes({rows, cols});
      auto x = randomVector(rows * cols, rows * 7 + cols, -3.f, 3.f);
      auto w = randomVector(rows * cols, rows * 11 + cols);
      std::vector<float> y(rows * cols), dx(rows * cols, 99.f);
      softmax(x.data(), y.data(), rows, cols);
      softmaxGrad(w.data(), y.data(), dx.data(), rows, cols);
      Vec want(rows * cols);
      for (int64_t i = 0; i < rows; ++i) {
        double s = 0;
        for (int64_t j = 0; j < cols; ++j)
          s += static_cast<double>(w[i * cols + j]) * y[i * cols + j];
        for (int64_t j = 0; j < cols; ++j)
          want[i * cols + j] = y[i * cols + j] * (w[i * cols + j] - s);
      }
      expectAllNear(want, dx, 1e-6, 1e-5, what);
      if (rows * cols > 200)
        continue;
      const Vec wd = toDouble(w);
      auto fd = finiteDiff([&](const Vec &xv) { return dotD(wd, refSoftmax(xv, rows, cols)); },
                           toDouble(x));
      expectAllNear(fd, dx, 2e-6, 1e-4, what + " vs finite differences");
    }
}

// --------------------------------------------------------- causal attention

struct AttnShape {
  int64_t batch, T, heads, D;
  int64_t C() const { return heads * D; }
  int64_t n() const { return batch * T * heads * D; }
  std::string str() const {
    return "batch " + std::to_string(batch) + " T " + std::to_string(T) + " heads " +
           std::to_string(heads) + " headDim " + std::to_string(D);
  }
};

// Weights P[b, h] ([T, T], zero above the diagonal) in double.
std::vector<Vec> refAttentionWeights(const Vec &q, const Vec &k, const AttnShape &s) {
  std::vector<Vec> P;
  const double scale = 1 / std::sqrt(static_cast<double>(s.D));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      Vec p(s.T * s.T, 0.0);
      for (int64_t i = 0; i < s.T; ++i) {
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double dotqk = 0;
          for (int64_t d = 0; d < s.D; ++d)
            dotqk +=
                q[(b * s.T + i) * s.C() + h * s.D + d] * k[(b * s.T + j) * s.C() + h * s.D + d];
          p[i * s.T + j] = dotqk * scale;
          mx = std::max(mx, p[i * s.T + j]);
        }
        for (int64_t j = 0; j <= i; ++j)
          sum += (p[i * s.T + j] = std::exp(p[i * s.T + j] - mx));
        for (int64_t j = 0; j <= i; ++j)
          p[i * s.T + j] /= sum;
      }
      P.push_back(p);
    }
  return P;
}

Vec refAttention(const Vec &q, const Vec &k, const Vec &v, const AttnShape &s) {
  auto P = refAttentionWeights(q, k, s);
  Vec y(s.n(), 0.0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.T; ++i)
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t d = 0; d < s.D; ++d)
            y[(b * s.T + i) * s.C() + h * s.D + d] +=
                P[b * s.heads + h][i * s.T + j] * v[(b * s.T + j) * s.C() + h * s.D + d];
  return y;
}

void refAttentionGrad(const Vec &dy, const Vec &q, const Vec &k, const Vec &v, const AttnShape &s,
                      Vec &dq, Vec &dk, Vec &dv) {
  auto P = refAttentionWeights(q, k, s);
  const double scale = 1 / std::sqrt(static_cast<double>(s.D));
  dq.assign(s.n(), 0);
  dk.assign(s.n(), 0);
  dv.assign(s.n(), 0);
  auto at = [&](int64_t b, int64_t t, int64_t h, int64_t d) {
    return (b * s.T + t) * s.C() + h * s.D + d;
  };
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const Vec &p = P[b * s.heads + h];
      for (int64_t i = 0; i < s.T; ++i) {
        Vec dp(i + 1, 0.0);
        double delta = 0;
        for (int64_t j = 0; j <= i; ++j) {
          for (int64_t d = 0; d < s.D; ++d)
            dp[j] += dy[at(b, i, h, d)] * v[at(b, j, h, d)];
          delta += p[i * s.T + j] * dp[j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = p[i * s.T + j] * (dp[j] - delta);
          for (int64_t d = 0; d < s.D; ++d) {
            dv[at(b, j, h, d)] += p[i * s.T + j] * dy[at(b, i, h, d)];
            dq[at(b, i, h, d)] += scale * ds * k[at(b, j, h, d)];
            dk[at(b, j, h, d)] += scale * ds * q[at(b, i, h, d)];
          }
        }
      }
    }
}

std::vector<float> poisonedScratch(const AttnShape &s) {
  // NaN everywhere: the kernels must not read scratch they did not write.
  return std::vector<float>(causalAttentionScratch(s.T, s.D),
                            std::numeric_limits<float>::quiet_NaN());
}

TEST(CausalAttentionTest, MatchesReference) {
  uint64_t seed = 1;
  for (int64_t T : {1, 2, 13, 17, 67})
    for (int64_t heads : {1, 3})
      for (int64_t D : {1, 7, 16, 33, 70}) {
        const AttnShape s{3, T, heads, D};
        auto q = randomVector(s.n(), seed++, -2.f, 2.f);
        auto k = randomVector(s.n(), seed++, -2.f, 2.f);
        auto v = randomVector(s.n(), seed++);
        auto scratch = poisonedScratch(s);
        std::vector<float> y(s.n(), 99.f);
        causalAttention(q.data(), k.data(), v.data(), y.data(), s.batch, T, heads, D,
                        scratch.data());
        expectAllNear(refAttention(toDouble(q), toDouble(k), toDouble(v), s), y, 2e-6, 2e-5,
                      s.str());
      }
}

TEST(CausalAttentionTest, GradMatchesReference) {
  uint64_t seed = 100;
  for (int64_t T : {1, 2, 13, 67})
    for (int64_t heads : {1, 3})
      for (int64_t D : {1, 7, 33}) {
        const AttnShape s{3, T, heads, D};
        auto q = randomVector(s.n(), seed++, -2.f, 2.f);
        auto k = randomVector(s.n(), seed++, -2.f, 2.f);
        auto v = randomVector(s.n(), seed++);
        auto dy = randomVector(s.n(), seed++);
        auto scratch = poisonedScratch(s);
        std::vector<float> dq(s.n(), 99.f), dk(s.n(), 99.f), dv(s.n(), 99.f);
        causalAttentionGrad(dy.data(), q.data(), k.data(), v.data(), dq.data(), dk.data(),
                            dv.data(), s.batch, T, heads, D, scratch.data());
        Vec rdq, rdk, rdv;
        refAttentionGrad(toDouble(dy), toDouble(q), toDouble(k), toDouble(v), s, rdq, rdk, rdv);
        // dk and dv sum over up to T query rows.
        const double atol = 2e-6 * std::sqrt(static_cast<double>(T)) * 4;
        expectAllNear(rdq, dq, atol, 2e-5, s.str() + " dq");
        expectAllNear(rdk, dk, atol, 2e-5, s.str() + " dk");
        expectAllNear(rdv, dv, atol, 2e-5, s.str() + " dv");
      }
}

TEST(CausalAttentionTest, GradMatchesFiniteDifferences) {
  uint64_t seed = 500;
  for (int64_t T : {5, 7})
    for (int64_t D : {1, 7}) {
      const AttnShape s{3, T, 2, D};
      auto q = randomVector(s.n(), seed++, -2.f, 2.f);
      auto k = randomVector(s.n(), seed++, -2.f, 2.f);
      auto v = randomVector(s.n(), seed++);
      auto w = randomVector(s.n(), seed++);
      auto scratch = poisonedScratch(s);
      std::vector<float> dq(s.n()), dk(s.n()), dv(s.n());
      causalAttentionGrad(w.data(), q.data(), k.data(), v.data(), dq.data(), dk.data(), dv.data(),
                          s.batch, T, s.heads, D, scratch.data());
      const Vec qd = toDouble(q), kd = toDouble(k), vd = toDouble(v), wd = toDouble(w);
      auto fdq = finiteDiff([&](const Vec &x) { return dotD(wd, refAttention(x, kd, vd, s)); }, qd);
      auto fdk = finiteDiff([&](const Vec &x) { return dotD(wd, refAttention(qd, x, vd, s)); }, kd);
      auto fdv = finiteDiff([&](const Vec &x) { return dotD(wd, refAttention(qd, kd, x, s)); }, vd);
      expectAllNear(fdq, dq, 1e-5, 1e-4, s.str() + " dq vs finite differences");
      expectAllNear(fdk, dk, 1e-5, 1e-4, s.str() + " dk vs finite differences");
      expectAllNear(fdv, dv, 1e-5, 1e-4, s.str() + " dv vs finite differences");
    }
}

TEST(CausalAttentionTest, LaterRowsDoNotChangeEarlierOutputs) {
  // Causality: y and dq of row i depend on rows j <= i only.
  const AttnShape s{2, 11, 2, 5};
  auto q = randomVector(s.n(), 1), k = randomVector(s.n(), 2), v = randomVector(s.n(), 3);
  auto scratch = poisonedScratch(s);
  std::vector<float> y1(s.n()), y2(s.n());
  causalAttention(q.data(), k.data(), v.data(), y1.data(), s.batch, s.T, s.heads, s.D,
                  scratch.data());
  const int64_t cut = 6;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = cut; t < s.T; ++t)
      for (int64_t c = 0; c < s.C(); ++c) {
        k[(b * s.T + t) * s.C() + c] += 1.f;
        v[(b * s.T + t) * s.C() + c] -= 1.f;
      }
  causalAttention(q.data(), k.data(), v.data(), y2.data(), s.batch, s.T, s.heads, s.D,
                  scratch.data());
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = 0; t < s.T; ++t)
      for (int64_t c = 0; c < s.C(); ++c) {
        const int64_t i = (b * s.T + t) * s.C() + c;
        if (t < cut)
          EXPECT_EQ(y1[i], y2[i]) << "row " << t;
        else
          EXPECT_NE(y1[i], y2[i]) << "row " << t;
      }
}

// ---------------------------------------------------------------- transpose

void checkTranspose(const std::vector<int64_t> &shape, const std::vector<int> &perm) {
  const int rank = static_cast<int>(shape.size());
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  std::vector<float> x(n);
  std::iota(x.begin(), x.end(), 0.f); // every value names its source index
  std::vector<float> y(n, -1.f);
  transpose(x.data(), y.data(), shape.data(), perm.data(), rank);
  std::vector<int64_t> outShape(rank), inStride(rank, 1), idx(rank, 0);
  for (int a = rank - 2; a >= 0; --a)
    inStride[a] = inStride[a + 1] * shape[a + 1];
  for (int i = 0; i < rank; ++i)
    outShape[i] = shape[perm[i]];
  std::string what = "shape";
  for (int64_t d : shape)
    what += " " + std::to_string(d);
  what += ", perm";
  for (int p : perm)
    what += " " + std::to_string(p);
  for (int64_t o = 0; o < n; ++o) {
    int64_t src = 0;
    for (int i = 0; i < rank; ++i)
      src += idx[i] * inStride[perm[i]];
    ASSERT_EQ(y[o], static_cast<float>(src)) << what << " at output " << o;
    for (int i = rank - 1; i >= 0; --i) {
      if (++idx[i] < outShape[i])
        break;
      idx[i] = 0;
    }
  }
}

TEST(TransposeTest, Rank2) {
  for (auto shape : std::vector<std::vector<int64_t>>{{1, 13}, {13, 1}, {37, 41}, {64, 96}})
    checkTranspose(shape, {1, 0});
  checkTranspose({37, 41}, {0, 1});
}

TEST(TransposeTest, EveryPermutationOfRank3) {
  std::vector<int> perm = {0, 1, 2};
  int count = 0;
  do {
    checkTranspose({5, 7, 3}, perm);
    checkTranspose({1, 37, 2}, perm);
    checkTranspose({3, 1, 67}, perm);
    ++count;
  } while (std::next_permutation(perm.begin(), perm.end()));
  EXPECT_EQ(count, 6);
}

TEST(TransposeTest, Rank4) {
  for (auto perm : std::vector<std::vector<int>>{
           {0, 2, 1, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}, {0, 1, 3, 2}, {2, 0, 3, 1}})
    checkTranspose({2, 5, 3, 7}, perm);
  checkTranspose({3, 64, 4, 33}, {0, 2, 1, 3}); // [B, T, heads, D] -> [B, heads, T, D]
}

// ------------------------------------------------ square sum and clip scale

TEST(SquareSumTest, MatchesDoubleSum) {
  for (int64_t n : {1, 7, 13, 127, 130, 1 << 20}) {
    auto x = randomVector(n, n, -3.f, 3.f);
    double want = 0;
    for (float v : x)
      want += static_cast<double>(v) * v;
    // Accumulated in double: only the final rounding to float remains.
    EXPECT_TRUE(near(want, squareSum(x.data(), n), 0, 1e-7)) << "n = " << n;
  }
  EXPECT_EQ(squareSum(nullptr, 0), 0.f);
}

TEST(ClipScaleTest, TorchClipGradNormFactor) {
  EXPECT_FLOAT_EQ(clipScale(16.f, 1.f), static_cast<float>(1.0 / (4.0 + 1e-6)));
  EXPECT_FLOAT_EQ(clipScale(2.f, 0.5f), static_cast<float>(0.5 / (std::sqrt(2.0) + 1e-6)));
  EXPECT_EQ(clipScale(0.25f, 1.f), 1.f);
  EXPECT_EQ(clipScale(0.f, 1.f), 1.f);
  EXPECT_TRUE(std::isnan(clipScale(std::nanf(""), 1.f)));
}

// -------------------------------------------------------------------- AdamW

TEST(AdamWTest, SeveralStepsMatchTheFormulaInDouble) {
  struct Config {
    float lr, beta1, beta2, eps, weightDecay, gradScale;
  };
  for (const Config &c : {Config{1e-3f, 0.9f, 0.999f, 1e-8f, 0.f, 1.f},
                          Config{6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.37f},
                          Config{0.05f, 0.8f, 0.9f, 1e-3f, 0.5f, 2.5f}})
    for (int64_t n : {1, 7, 13, 130}) {
      auto w = randomVector(n, n + 1);
      std::vector<float> m(n, 0.f), v(n, 0.f);
      Vec wd = toDouble(w), md(n, 0.0), vd(n, 0.0);
      for (int64_t step = 1; step <= 6; ++step) {
        auto g = randomVector(n, 100 * n + step, -2.f, 2.f);
        if (step == 1)
          g[0] = 0.f; // m = v = 0 for this element: the update is weight decay only
        adamw(w.data(), m.data(), v.data(), g.data(), n, c.lr, c.beta1, c.beta2, c.eps,
              c.weightDecay, step, c.gradScale);
        const double b1 = c.beta1, b2 = c.beta2, lr = c.lr;
        for (int64_t i = 0; i < n; ++i) {
          const double gi = static_cast<double>(g[i]) * c.gradScale;
          wd[i] -= lr * c.weightDecay * wd[i];
          md[i] = b1 * md[i] + (1 - b1) * gi;
          vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
          wd[i] -= lr / (1 - std::pow(b1, step)) * md[i] /
                   (std::sqrt(vd[i]) / std::sqrt(1 - std::pow(b2, step)) + c.eps);
        }
        const std::string what = "n " + std::to_string(n) + " lr " + std::to_string(c.lr) +
                                 " step " + std::to_string(step);
        expectAllNear(md, m, 1e-7, 1e-5, what + " m");
        expectAllNear(vd, v, 1e-9, 1e-5, what + " v");
        // Each step moves w by about lr; float keeps 1e-7 of |w| per step.
        expectAllNear(wd, w, 1e-5 * c.lr * step, 1e-6 * step, what + " w");
      }
    }
}

// ---------------------------------------------------------- Philox, dropout

TEST(PhiloxTest, Random123KnownAnswers) {
  // Random123's kat_vectors, "philox4x32 10" lines: counter, key, expected.
  using C = std::array<uint32_t, 4>;
  using K = std::array<uint32_t, 2>;
  EXPECT_EQ(philox4x32_10(C{0, 0, 0, 0}, K{0, 0}),
            (C{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(
      philox4x32_10(C{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, K{0xffffffff, 0xffffffff}),
      (C{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(
      philox4x32_10(C{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, K{0xa4093822, 0x299f31d0}),
      (C{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

// The header's rule, element by element.
bool keeps(uint64_t g, float p, uint64_t seed, uint32_t batch, uint32_t epoch) {
  const auto r =
      philox4x32_10({static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), batch, epoch},
                    {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
  return static_cast<double>(r[0]) >= static_cast<double>(p) * 4294967296.0;
}

std::vector<float> dropoutWhole(const std::vector<float> &x, const std::vector<int64_t> &shape,
                                float p, uint64_t seed, uint32_t batch, uint32_t epoch) {
  std::vector<int64_t> begin(shape.size(), 0);
  std::vector<float> y(x.size(), 99.f);
  dropout(x.data(), y.data(), shape.data(), begin.data(), shape.data(),
          static_cast<int>(shape.size()), p, seed, batch, epoch);
  return y;
}

TEST(DropoutTest, KeepsAboutOneMinusPAndScalesKeptValues) {
  const int64_t rows = 1024, cols = 1031;
  auto x = randomVector(rows * cols, 9, 0.5f, 1.5f); // never 0: a dropped value reads 0
  for (float p : {0.1f, 0.5f, 0.9f}) {
    const uint64_t seed = 0x123456789abcdefULL;
    auto y = dropoutWhole(x, {rows, cols}, p, seed, 3, 1);
    int64_t kept = 0;
    for (int64_t i = 0; i < rows * cols; ++i) {
      const bool keep = keeps(i, p, seed, 3, 1);
      kept += keep;
      if (keep)
        ASSERT_TRUE(near(x[i] / (1.0 - p), y[i], 0, 2e-7)) << "p " << p << " at " << i;
      else
        ASSERT_EQ(y[i], 0.f) << "p " << p << " at " << i;
    }
    const double n = static_cast<double>(rows * cols);
    const double sigma = std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(kept / n, 1 - p, 5 * sigma) << "p " << p;
  }
  // p = 0 keeps everything unchanged.
  EXPECT_EQ(dropoutWhole(x, {rows, cols}, 0.f, 1, 0, 0), x);
}

TEST(DropoutTest, GlobalIndicesBeyond32Bits) {
  // The high word of the index is part of the counter: the block at element
  // 2^32 + k must not repeat the mask of element k.
  const std::vector<int64_t> shape = {int64_t{1} << 22, 1031};
  const std::vector<int64_t> size = {2, 1031};
  auto x = randomVector(2 * 1031, 4, 0.5f, 1.5f);
  const float p = 0.5f;
  for (int64_t row : {int64_t{0}, (int64_t{1} << 22) - 2, int64_t{4165787}}) {
    const std::vector<int64_t> begin = {row, 0};
    std::vector<float> y(x.size());
    dropout(x.data(), y.data(), shape.data(), begin.data(), size.data(), 2, p, 77, 1, 2);
    for (int64_t i = 0; i < 2 * 1031; ++i)
      ASSERT_EQ(y[i] != 0.f, keeps(row * 1031 + i, p, 77, 1, 2)) << "row " << row << " + " << i;
  }
}

// Balanced chunks of `size` over `parts` (the first size % parts get one more).
std::vector<std::pair<int64_t, int64_t>> chunks(int64_t size, int64_t parts) {
  std::vector<std::pair<int64_t, int64_t>> out;
  int64_t begin = 0;
  for (int64_t i = 0; i < parts; ++i) {
    const int64_t len = size / parts + (i < size % parts ? 1 : 0);
    out.push_back({begin, len});
    begin += len;
  }
  return out;
}

// Applies dropout block by block (a grid of balanced chunks, `parts[a]` on
// axis a) and assembles the result in the global layout.
std::vector<float> dropoutInBlocks(const std::vector<float> &x, const std::vector<int64_t> &shape,
                                   const std::vector<int64_t> &parts, float p, uint64_t seed,
                                   uint32_t batch, uint32_t epoch) {
  const int rank = static_cast<int>(shape.size());
  std::vector<std::vector<std::pair<int64_t, int64_t>>> axisChunks;
  for (int a = 0; a < rank; ++a)
    axisChunks.push_back(chunks(shape[a], parts[a]));
  std::vector<int64_t> stride(rank, 1);
  for (int a = rank - 2; a >= 0; --a)
    stride[a] = stride[a + 1] * shape[a + 1];
  std::vector<float> y(x.size(), 99.f);
  std::vector<int64_t> which(rank, 0);
  while (true) {
    std::vector<int64_t> begin(rank), size(rank);
    int64_t n = 1;
    for (int a = 0; a < rank; ++a) {
      begin[a] = axisChunks[a][which[a]].first;
      size[a] = axisChunks[a][which[a]].second;
      n *= size[a];
    }
    // Gather the block densely, run the kernel on it, scatter the result.
    std::vector<int64_t> globalIndex;
    std::vector<int64_t> idx(rank, 0);
    for (int64_t e = 0; e < n; ++e) {
      int64_t g = 0;
      for (int a = 0; a < rank; ++a)
        g += (begin[a] + idx[a]) * stride[a];
      globalIndex.push_back(g);
      for (int a = rank - 1; a >= 0; --a) {
        if (++idx[a] < size[a])
          break;
        idx[a] = 0;
      }
    }
    std::vector<float> xb(n), yb(n);
    for (int64_t e = 0; e < n; ++e)
      xb[e] = x[globalIndex[e]];
    dropout(xb.data(), yb.data(), shape.data(), begin.data(), size.data(), rank, p, seed, batch,
            epoch);
    for (int64_t e = 0; e < n; ++e)
      y[globalIndex[e]] = yb[e];
    int a = rank - 1;
    for (; a >= 0; --a) {
      if (++which[a] < parts[a])
        break;
      which[a] = 0;
    }
    if (a < 0)
      break;
  }
  return y;
}

TEST(DropoutTest, MaskDoesNotDependOnTheSplit) {
  const float p = 0.3f;
  const uint64_t seed = 0xfeedbeef12345ULL;
  {
    const std::vector<int64_t> shape = {37, 53};
    auto x = randomVector(37 * 53, 5, 0.5f, 1.5f);
    auto whole = dropoutWhole(x, shape, p, seed, 4, 2);
    for (auto parts : std::vector<std::vector<int64_t>>{{3, 1}, {1, 4}, {2, 2}, {37, 1}, {5, 53}})
      EXPECT_EQ(dropoutInBlocks(x, shape, parts, p, seed, 4, 2), whole)
          << "split " << parts[0] << "x" << parts[1];
  }
  {
    const std::vector<int64_t> shape = {3, 13, 11};
    auto x = randomVector(3 * 13 * 11, 6, 0.5f, 1.5f);
    auto whole = dropoutWhole(x, shape, p, seed, 0, 0);
    for (auto parts : std::vector<std::vector<int64_t>>{{2, 1, 1}, {1, 4, 1}, {1, 1, 3}, {2, 3, 2}})
      EXPECT_EQ(dropoutInBlocks(x, shape, parts, p, seed, 0, 0), whole)
          << "split " << parts[0] << "x" << parts[1] << "x" << parts[2];
  }
  // A scalar is the element with index 0.
  float x = 2.f, y = 99.f;
  dropout(&x, &y, nullptr, nullptr, nullptr, 0, p, seed, 1, 1);
  EXPECT_EQ(y, keeps(0, p, seed, 1, 1) ? 2.f / (1.f - p) : 0.f);
}

TEST(DropoutTest, BatchEpochAndSeedChangeTheMask) {
  const float p = 0.5f;
  const std::vector<int64_t> shape = {64, 128};
  std::vector<float> x(64 * 128, 1.f);
  auto base = dropoutWhole(x, shape, p, 42, 7, 3);
  for (auto [seed, batch, epoch] : {std::tuple<uint64_t, uint32_t, uint32_t>{43, 7, 3},
                                    {42, 8, 3},
                                    {42, 7, 4},
                                    {42 + (uint64_t{1} << 32), 7, 3}}) {
    auto other = dropoutWhole(x, shape, p, seed, batch, epoch);
    int64_t differ = 0;
    for (size_t i = 0; i < x.size(); ++i)
      differ += (base[i] == 0.f) != (other[i] == 0.f);
    // Independent masks differ on 2 p (1 - p) = 1/2 of the elements.
    EXPECT_NEAR(static_cast<double>(differ) / x.size(), 0.5, 0.05)
        << "seed " << seed << " batch " << batch << " epoch " << epoch;
  }
}

TEST(DropoutTest, GradientIsTheSameMask) {
  const std::vector<int64_t> shape = {13, 29};
  auto x = randomVector(13 * 29, 1, 0.5f, 1.5f);
  auto dy = randomVector(13 * 29, 2, 0.5f, 1.5f);
  auto y = dropoutWhole(x, shape, 0.25f, 9, 1, 0);
  auto dx = dropoutWhole(dy, shape, 0.25f, 9, 1, 0);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(y[i] == 0.f, dx[i] == 0.f) << i;
}

} // namespace
} // namespace sbpflow::cpu
