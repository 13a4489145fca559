// Each CPU kernel against a plain double-precision loop on random inputs of
// awkward sizes (1, primes, sizes that are not multiples of the vector width).
#include "kernels/cpu/Kernels.h"
#include "tests/kernels/FloatBits.h"
#include "tests/kernels/RandomVector.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <type_traits>
#include <vector>

namespace sbpflow::cpu {
namespace {

const std::vector<int64_t> kSizes = {1, 7, 13, 127, 130};

using sbpflow::test::bitsOf;
using sbpflow::test::floatOf;
using sbpflow::test::randomVector;

// |got - want| <= 1e-5 * scale + 1e-5 * |want|, where `scale` is the size of
// the terms that were summed (cancellation makes a bare relative error
// meaningless for sums of mixed signs).
void expectClose(double want, float got, double scale, const std::string &what) {
  const double tol = 1e-5 * scale + 1e-5 * std::abs(want) + 1e-30;
  EXPECT_LE(std::abs(want - got), tol) << what << ": want " << want << ", got " << got;
}

class MatmulTest : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(MatmulTest, MatchesReferenceOnAwkwardSizes) {
  const auto [transA, transB] = GetParam();
  uint64_t seed = 1;
  for (int64_t m : {1, 7, 13, 130})
    for (int64_t n : {1, 13, 127})
      for (int64_t k : {1, 7, 127}) {
        auto a = randomVector(m * k, seed++);
        auto b = randomVector(k * n, seed++);
        std::vector<float> c(m * n, 1234.f); // must be overwritten, not accumulated
        matmul(a.data(), b.data(), c.data(), m, n, k, transA, transB);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double sum = 0, scale = 0;
            for (int64_t p = 0; p < k; ++p) {
              double av = transA ? a[p * m + i] : a[i * k + p];
              double bv = transB ? b[j * k + p] : b[p * n + j];
              sum += av * bv;
              scale += std::abs(av * bv);
            }
            expectClose(sum, c[i * n + j], scale,
                        "m=" + std::to_string(m) + " n=" + std::to_string(n) +
                            " k=" + std::to_string(k));
          }
      }
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, MatmulTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(MatmulTest, ZeroInnerDimensionGivesZeros) {
  std::vector<float> c(6, 5.f);
  matmul(nullptr, nullptr, c.data(), 2, 3, 0, false, false);
  for (float v : c)
    EXPECT_EQ(v, 0.f);
}

TEST(ElementwiseTest, BiasAddAddReluReluGrad) {
  for (int64_t rows : kSizes)
    for (int64_t cols : {1, 7, 13}) {
      const int64_t n = rows * cols;
      auto x = randomVector(n, 10 + n);
      auto bias = randomVector(cols, 20 + cols);
      auto b = randomVector(n, 30 + n);
      std::vector<float> y(n);
      biasAdd(x.data(), bias.data(), y.data(), rows, cols);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          EXPECT_FLOAT_EQ(y[i * cols + j], x[i * cols + j] + bias[j]);
      add(x.data(), b.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_FLOAT_EQ(y[i], x[i] + b[i]);
      relu(x.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(y[i], x[i] > 0 ? x[i] : 0.f);
      std::vector<float> dx(n);
      reluGrad(b.data(), y.data(), dx.data(), n);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(dx[i], x[i] > 0 ? b[i] : 0.f);
    }
}

TEST(ElementwiseTest, ReluPropagatesNaN) {
  float x = std::nanf(""), y = 0;
  relu(&x, &y, 1);
  EXPECT_TRUE(std::isnan(y));
}

// Reference loss and gradient for one row in double precision.
double refXent(const float *x, int64_t classes, int32_t label, std::vector<double> *grad,
               double dloss) {
  double mx = x[0];
  for (int64_t j = 1; j < classes; ++j)
    mx = std::max(mx, static_cast<double>(x[j]));
  double sum = 0;
  for (int64_t j = 0; j < classes; ++j)
    sum += std::exp(x[j] - mx);
  if (grad) {
    grad->assign(classes, 0.0);
    for (int64_t j = 0; j < classes; ++j)
      (*grad)[j] = std::exp(x[j] - mx) / sum * dloss;
    (*grad)[label] -= dloss;
  }
  return std::log(sum) + mx - x[label];
}

std::vector<int32_t> randomLabels(int64_t rows, int64_t classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> labels(rows);
  for (auto &l : labels)
    l = static_cast<int32_t>(rng() % classes);
  // Some padding rows.
  for (int64_t i = 3; i < rows; i += 5)
    labels[i] = -1;
  return labels;
}

TEST(SoftmaxXentTest, LossMatchesReferenceAndSkipsPadding) {
  for (int64_t rows : kSizes)
    for (int64_t classes : {1, 7, 10, 13, 127}) {
      auto logits = randomVector(rows * classes, rows * 1000 + classes, -8.f, 8.f);
      auto labels = randomLabels(rows, classes, rows + classes);
      std::vector<float> loss(rows, 99.f);
      EXPECT_EQ(softmaxXent(logits.data(), labels.data(), loss.data(), rows, classes), -1);
      for (int64_t i = 0; i < rows; ++i) {
        if (labels[i] < 0) {
          EXPECT_EQ(loss[i], 0.f) << "padding row " << i;
          continue;
        }
        double want = refXent(&logits[i * classes], classes, labels[i], nullptr, 0);
        expectClose(want, loss[i], 1.0, "row " + std::to_string(i));
      }
    }
}

TEST(SoftmaxXentTest, StableForHugeLogits) {
  // Naive exp() overflows at 89 in float; the max-subtracted form must not.
  std::vector<float> logits = {1000.f, 999.f, -1000.f, 3e4f, 3e4f - 2.f, 0.f};
  std::vector<int32_t> labels = {1, 0};
  std::vector<float> loss(2), grad(6);
  std::vector<float> dloss = {1.f, 1.f};
  ASSERT_EQ(softmaxXent(logits.data(), labels.data(), loss.data(), 2, 3), -1);
  for (int i = 0; i < 2; ++i) {
    double want = refXent(&logits[i * 3], 3, labels[i], nullptr, 0);
    EXPECT_TRUE(std::isfinite(loss[i]));
    expectClose(want, loss[i], 1.0, "row " + std::to_string(i));
  }
  softmaxXentGrad(logits.data(), labels.data(), dloss.data(), grad.data(), 2, 3);
  for (float g : grad)
    EXPECT_TRUE(std::isfinite(g));
}

TEST(SoftmaxXentTest, ReportsFirstOutOfRangeLabel) {
  std::vector<float> logits(4 * 3, 0.5f), loss(4);
  std::vector<int32_t> labels = {0, 2, 3, 7};
  EXPECT_EQ(softmaxXent(logits.data(), labels.data(), loss.data(), 4, 3), 2);
  std::vector<float> grad(12, 5.f), dloss(4, 1.f);
  softmaxXentGrad(logits.data(), labels.data(), dloss.data(), grad.data(), 4, 3);
  for (int j = 6; j < 12; ++j)
    EXPECT_EQ(grad[j], 0.f) << "bad-label rows must not be touched beyond zeroing";
}

TEST(SoftmaxXentTest, GradMatchesReferenceAndZeroesPadding) {
  for (int64_t rows : kSizes)
    for (int64_t classes : {1, 7, 10, 127}) {
      auto logits = randomVector(rows * classes, 7 * rows + classes, -5.f, 5.f);
      auto labels = randomLabels(rows, classes, 3 * rows + classes);
      auto dloss = randomVector(rows, rows, 0.1f, 2.f);
      std::vector<float> grad(rows * classes, 42.f);
      softmaxXentGrad(logits.data(), labels.data(), dloss.data(), grad.data(), rows, classes);
      std::vector<double> want;
      for (int64_t i = 0; i < rows; ++i) {
        if (labels[i] < 0) {
          for (int64_t j = 0; j < classes; ++j)
            EXPECT_EQ(grad[i * classes + j], 0.f) << "padding row " << i;
          continue;
        }
        refXent(&logits[i * classes], classes, labels[i], &want, dloss[i]);
        for (int64_t j = 0; j < classes; ++j)
          expectClose(want[j], grad[i * classes + j], std::abs(dloss[i]),
                      "row " + std::to_string(i) + " class " + std::to_string(j));
      }
    }
}

TEST(ReductionTest, MeanAndMeanGrad) {
  for (int64_t n : {1, 7, 13, 127, 1000003}) {
    auto x = randomVector(n, n);
    double sum = 0, scale = 0;
    for (float v : x) {
      sum += v;
      scale += std::abs(v);
    }
    const int64_t count = 3 * n; // a shard of a larger global tensor
    float out = 0;
    mean(x.data(), &out, n, count);
    expectClose(sum / count, out, 1e-2 * scale / count, "n=" + std::to_string(n));
    std::vector<float> y(n);
    const float dy = 0.75f;
    meanGrad(&dy, y.data(), n, count);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_FLOAT_EQ(y[i], static_cast<float>(0.75 / count));
  }
}

TEST(ReductionTest, ReduceRows) {
  for (int64_t rows : kSizes)
    for (int64_t cols : {1, 7, 13, 127}) {
      auto x = randomVector(rows * cols, rows + 17 * cols);
      std::vector<float> y(cols, 9.f);
      reduceRows(x.data(), y.data(), rows, cols);
      for (int64_t j = 0; j < cols; ++j) {
        double sum = 0, scale = 0;
        for (int64_t i = 0; i < rows; ++i) {
          sum += x[i * cols + j];
          scale += std::abs(x[i * cols + j]);
        }
        expectClose(sum, y[j], scale, "col " + std::to_string(j));
      }
    }
}

TEST(ReductionTest, CountCorrectSkipsPadding) {
  for (int64_t rows : kSizes)
    for (int64_t classes : {1, 7, 10}) {
      auto logits = randomVector(rows * classes, rows * 31 + classes);
      auto labels = randomLabels(rows, classes, rows * 5 + classes);
      int64_t want = 0;
      for (int64_t i = 0; i < rows; ++i) {
        if (labels[i] < 0)
          continue;
        int64_t best = 0;
        for (int64_t j = 1; j < classes; ++j)
          if (logits[i * classes + j] > logits[i * classes + best])
            best = j;
        want += best == labels[i];
      }
      float out = -1;
      countCorrect(logits.data(), labels.data(), &out, rows, classes);
      EXPECT_EQ(out, static_cast<float>(want));
    }
  // Hand-made case: ties go to the first maximum, padding never counts.
  std::vector<float> logits = {1, 3, 3, 5, 0, 0, 0, 0, 9};
  std::vector<int32_t> labels = {1, 0, -1};
  float out = 0;
  countCorrect(logits.data(), labels.data(), &out, 3, 3);
  EXPECT_EQ(out, 2.f);
}

TEST(FillTest, FillsEveryElement) {
  std::vector<float> y(127, 0.f);
  fill(y.data(), 2.5f, 127);
  for (float v : y)
    EXPECT_EQ(v, 2.5f);
}

TEST(SgdTest, MatchesPyTorchUpdateRule) {
  for (int64_t n : {1, 7, 127}) {
    for (float wd : {0.f, 1e-3f}) {
      auto w = randomVector(n, n + 1);
      auto v = randomVector(n, n + 2);
      auto g = randomVector(n, n + 3);
      std::vector<double> wRef(w.begin(), w.end()), vRef(v.begin(), v.end());
      const float lr = 0.05f, momentum = 0.9f;
      for (int step = 0; step < 3; ++step) {
        sgdMomentum(w.data(), v.data(), g.data(), n, lr, momentum, wd);
        for (int64_t i = 0; i < n; ++i) {
          double gi = g[i] + double(wd) * wRef[i];
          vRef[i] = double(momentum) * vRef[i] + gi;
          wRef[i] -= double(lr) * vRef[i];
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        expectClose(wRef[i], w[i], 1.0, "w[" + std::to_string(i) + "]");
        expectClose(vRef[i], v[i], 1.0, "v[" + std::to_string(i) + "]");
      }
      // Plain SGD: no velocity buffer.
      auto w2 = randomVector(n, n + 4);
      auto w2Before = w2;
      sgdMomentum(w2.data(), nullptr, g.data(), n, lr, 0.f, wd);
      for (int64_t i = 0; i < n; ++i)
        expectClose(w2Before[i] - double(lr) * (g[i] + double(wd) * w2Before[i]), w2[i], 1.0,
                    "plain w[" + std::to_string(i) + "]");
    }
  }
}

// Flat index of `coord` in a row-major `shape`.
int64_t flatIndex(const std::vector<int64_t> &shape, const std::vector<int64_t> &coord) {
  int64_t idx = 0;
  for (size_t a = 0; a < shape.size(); ++a)
    idx = idx * shape[a] + coord[a];
  return idx;
}

// T = float: the f32 copies; another T: the copies of elements of sizeof(T)
// bytes.
template <class T = float>
void checkRegionRoundTrip(const std::vector<int64_t> &shape, const std::vector<int64_t> &begin,
                          const std::vector<int64_t> &size) {
  auto copyOut = [&](const T *src, T *dst) {
    if constexpr (std::is_same_v<T, float>)
      copyRegion(src, shape.data(), begin.data(), size.data(), static_cast<int>(shape.size()), dst);
    else
      copyRegion(src, shape.data(), begin.data(), size.data(), static_cast<int>(shape.size()), dst,
                 sizeof(T));
  };
  auto copyIn = [&](const T *src, T *dst) {
    if constexpr (std::is_same_v<T, float>)
      copyIntoRegion(src, begin.data(), size.data(), dst, shape.data(),
                     static_cast<int>(shape.size()));
    else
      copyIntoRegion(src, begin.data(), size.data(), dst, shape.data(),
                     static_cast<int>(shape.size()), sizeof(T));
  };
  const int rank = static_cast<int>(shape.size());
  int64_t total = 1, regionTotal = 1;
  for (int a = 0; a < rank; ++a) {
    total *= shape[a];
    regionTotal *= size[a];
  }
  std::vector<T> src(total);
  for (int64_t i = 0; i < total; ++i)
    src[i] = static_cast<T>(i + 1);
  std::vector<T> region(regionTotal, T(0));
  copyOut(src.data(), region.data());

  // Every region element is the source element at begin + its coordinate.
  std::vector<int64_t> coord(rank, 0);
  for (int64_t r = 0; r < regionTotal; ++r) {
    int64_t rem = r;
    for (int a = rank - 1; a >= 0; --a) {
      coord[a] = rem % size[a];
      rem /= size[a];
    }
    std::vector<int64_t> full(rank);
    for (int a = 0; a < rank; ++a)
      full[a] = begin[a] + coord[a];
    ASSERT_EQ(region[r], src[flatIndex(shape, full)]) << "region element " << r;
  }

  // Scattering back into a zeroed tensor restores exactly the region.
  std::vector<T> back(total, T(0));
  copyIn(region.data(), back.data());
  for (int64_t i = 0; i < total; ++i) {
    int64_t rem = i;
    bool inside = true;
    for (int a = rank - 1; a >= 0; --a) {
      int64_t c = rem % shape[a];
      rem /= shape[a];
      inside = inside && c >= begin[a] && c < begin[a] + size[a];
    }
    ASSERT_EQ(back[i], inside ? src[i] : T(0)) << "element " << i;
  }
}

TEST(CopyRegionTest, RoundTripOneAxis) {
  checkRegionRoundTrip({13}, {0}, {13});
  checkRegionRoundTrip({13}, {5}, {7});
  checkRegionRoundTrip({1}, {0}, {1});
}

TEST(CopyRegionTest, RoundTripTwoAxes) {
  checkRegionRoundTrip({7, 13}, {3, 0}, {2, 13}); // S(0) shard
  checkRegionRoundTrip({7, 13}, {0, 9}, {7, 4});  // S(1) shard
  checkRegionRoundTrip({127, 1}, {42, 0}, {43, 1});
}

TEST(CopyRegionTest, RoundTripThreeAxes) {
  checkRegionRoundTrip({5, 7, 13}, {1, 2, 3}, {3, 4, 9});
  checkRegionRoundTrip({2, 3, 127}, {1, 0, 120}, {1, 3, 7});
}

// bf16 regions move as 2-byte elements (and the byte copies take any size).
TEST(CopyRegionTest, RoundTripTwoAndOneByteElements) {
  checkRegionRoundTrip<uint16_t>({13}, {5}, {7});
  checkRegionRoundTrip<uint16_t>({7, 13}, {0, 9}, {7, 4});
  checkRegionRoundTrip<uint16_t>({5, 7, 13}, {1, 2, 3}, {3, 4, 9});
  checkRegionRoundTrip<uint8_t>({2, 3, 40}, {1, 0, 33}, {1, 3, 7}); // 240 distinct values
  checkRegionRoundTrip<uint16_t>({}, {}, {});
}

TEST(CopyRegionTest, EmptyRegionWritesNothing) {
  std::vector<float> src(12, 1.f), dst(12, 0.f);
  int64_t shape[2] = {3, 4}, begin[2] = {1, 0}, size[2] = {0, 4};
  copyIntoRegion(src.data(), begin, size, dst.data(), shape, 2);
  for (float v : dst)
    EXPECT_EQ(v, 0.f);
}

// bf16 against values computed from the format's definition (sign, 8-bit
// exponent, 7-bit fraction) in double precision, not from f32 bit tricks.
double bf16Magnitude(uint32_t m) { // m: the 15 bits below the sign
  const int e = static_cast<int>(m >> 7);
  const double f = static_cast<double>(m & 0x7f);
  if (e == 0)
    return std::ldexp(f, -133); // denormal: f * 2^-126 / 128
  return std::ldexp(1.0 + f / 128.0, e - 127);
}

// The nearest bf16 to a finite or infinite, non-NaN x; ties to the even
// fraction; past the largest bf16 the next value up is 2^128 (inf), as IEEE
// rounding treats overflow.
uint16_t referenceBf16(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double mag = std::fabs(static_cast<double>(x));
  if (std::isinf(x))
    return sign | 0x7f80;
  // The largest bf16 magnitude at or below |x|, by search over the 0x7f80
  // finite magnitudes (they increase with their bit pattern).
  uint32_t lo = 0, hi = 0x7f7f;
  while (lo < hi) {
    const uint32_t mid = (lo + hi + 1) / 2;
    if (bf16Magnitude(mid) <= mag)
      lo = mid;
    else
      hi = mid - 1;
  }
  const double below = bf16Magnitude(lo);
  const double above = lo == 0x7f7f ? std::ldexp(1.0, 128) : bf16Magnitude(lo + 1);
  const double toBelow = mag - below, toAbove = above - mag;
  uint32_t m = lo;
  if (toAbove < toBelow || (toAbove == toBelow && (lo & 1)))
    m = lo + 1; // 0x7f80 when rounding past the largest: inf
  return static_cast<uint16_t>(sign | m);
}

bool isBf16Nan(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }

TEST(Bf16Test, FromBf16IsExactForEveryValue) {
  std::vector<uint16_t> all(1 << 16);
  for (uint32_t b = 0; b < all.size(); ++b)
    all[b] = static_cast<uint16_t>(b);
  std::vector<float> got(all.size());
  fromBf16(all.data(), got.data(), static_cast<int64_t>(all.size()));
  for (uint32_t b = 0; b < all.size(); ++b) {
    if (isBf16Nan(static_cast<uint16_t>(b))) {
      EXPECT_TRUE(std::isnan(got[b])) << std::hex << b;
      EXPECT_EQ(bitsOf(got[b]), b << 16) << std::hex << b; // payload kept
      continue;
    }
    const double mag = (b & 0x7fff) == 0x7f80 ? INFINITY : bf16Magnitude(b & 0x7fff);
    const double want = (b & 0x8000) ? -mag : mag;
    EXPECT_EQ(static_cast<double>(got[b]), want) << std::hex << b;
    EXPECT_EQ(std::signbit(got[b]), (b & 0x8000) != 0) << std::hex << b; // -0 too
  }
}

TEST(Bf16Test, RoundTripKeepsEveryValue) {
  std::vector<uint16_t> all(1 << 16), back(1 << 16);
  for (uint32_t b = 0; b < all.size(); ++b)
    all[b] = static_cast<uint16_t>(b);
  std::vector<float> wide(all.size());
  fromBf16(all.data(), wide.data(), static_cast<int64_t>(all.size()));
  toBf16(wide.data(), back.data(), static_cast<int64_t>(all.size()));
  for (uint32_t b = 0; b < all.size(); ++b) {
    // A signalling NaN comes back quiet, with its sign and payload.
    const uint16_t want = isBf16Nan(static_cast<uint16_t>(b)) ? (b | 0x0040) : b;
    EXPECT_EQ(back[b], want) << std::hex << b;
  }
}

// Every f32 near a tie or a bf16 value, for every finite bf16 of both signs
// (denormals, the overflow threshold, powers of two), and random patterns.
TEST(Bf16Test, RoundsToNearestEvenLikeTheReference) {
  std::vector<float> x;
  for (uint32_t m = 0; m < 0x7f80; ++m)
    for (uint32_t low : {0x0u, 0x1u, 0x3fffu, 0x7ffeu, 0x7fffu, 0x8000u, 0x8001u, 0xbfffu, 0xffffu})
      for (uint32_t sign : {0u, 0x80000000u})
        x.push_back(floatOf(sign | (m << 16) | low));
  std::mt19937 gen(11);
  for (int i = 0; i < 200000; ++i) {
    const float v = floatOf(static_cast<uint32_t>(gen()));
    if (!std::isnan(v))
      x.push_back(v);
  }
  x.push_back(INFINITY);
  x.push_back(-INFINITY);
  std::vector<uint16_t> got(x.size());
  toBf16(x.data(), got.data(), static_cast<int64_t>(x.size()));
  int failures = 0;
  for (size_t i = 0; i < x.size() && failures < 20; ++i) {
    const uint16_t want = referenceBf16(x[i]);
    if (got[i] != want)
      ++failures;
    EXPECT_EQ(got[i], want) << std::hex << "f32 bits 0x" << bitsOf(x[i]);
  }
}

TEST(Bf16Test, NamedCases) {
  const std::vector<std::pair<uint32_t, uint16_t>> cases = {
      {0x00000000, 0x0000}, // +0
      {0x80000000, 0x8000}, // -0
      {0x3f800000, 0x3f80}, // 1
      {0x3f808000, 0x3f80}, // 1 + 2^-8: a tie, to the even 1
      {0x3f818000, 0x3f82}, // a tie from an odd fraction: up
      {0x3f808001, 0x3f81}, // just above a tie
      {0xbf817fff, 0xbf81}, // just below a tie, negative
      {0x7f800000, 0x7f80}, // +inf
      {0xff800000, 0xff80}, // -inf
      {0x7f7f0000, 0x7f7f}, // the largest bf16
      {0x7f7f7fff, 0x7f7f}, // just below the overflow threshold
      {0x7f7f8000, 0x7f80}, // the threshold: a tie from an odd fraction, to inf
      {0x7f7fffff, 0x7f80}, // FLT_MAX
      {0xff7fffff, 0xff80}, // -FLT_MAX
      {0x7f7e8000, 0x7f7e}, // a tie below the largest, to even
      {0x00000001, 0x0000}, // the smallest denormal: to zero
      {0x80000001, 0x8000}, // ... keeping the sign
      {0x00008000, 0x0000}, // denormal tie, to even zero
      {0x00018000, 0x0002}, // denormal tie from odd: up
      {0x00010000, 0x0001}, // the smallest bf16 denormal
      {0x007fffff, 0x0080}, // the largest f32 denormal: up to the smallest normal
      {0x7fc00000, 0x7fc0}, // quiet NaN
      {0xffc00001, 0xffc0}, // negative quiet NaN, payload below: truncated
      {0x7f800001, 0x7fc0}, // NaN whose payload lies only in the dropped half
      {0x7fa00000, 0x7fe0}, // signalling NaN: quieted, payload kept
      {0x7fffffff, 0x7fff}, // a NaN rounding would carry into the sign
  };
  for (const auto &[in, want] : cases) {
    const float x = floatOf(in);
    uint16_t got = 0xdead;
    toBf16(&x, &got, 1);
    EXPECT_EQ(got, want) << std::hex << "f32 bits 0x" << in;
  }
}

// Vector bodies and scalar tails: every element is written, nothing past n.
TEST(Bf16Test, AwkwardSizesWriteExactlyN) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{13}, int64_t{127}, int64_t{130}}) {
    auto x = randomVector(n, 40 + n, -1000.f, 1000.f);
    std::vector<uint16_t> y(n + 1, 0xbeef);
    toBf16(x.data(), y.data(), n);
    EXPECT_EQ(y[n], 0xbeef) << n;
    std::vector<float> back(n + 1, 7.f);
    fromBf16(y.data(), back.data(), n);
    EXPECT_EQ(back[n], 7.f) << n;
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(y[i], referenceBf16(x[i])) << "n=" << n << " i=" << i;
      // Within half a bf16 ulp (2^-8 relative).
      EXPECT_LE(std::abs(back[i] - x[i]), std::ldexp(std::abs(x[i]), -8)) << i;
    }
  }
}

TEST(BlasThreadsTest, SettingThreadsKeepsResults) {
  setBlasThreads(2);
  auto a = randomVector(130 * 127, 1), b = randomVector(127 * 13, 2);
  std::vector<float> c2(130 * 13), c1(130 * 13);
  matmul(a.data(), b.data(), c2.data(), 130, 13, 127, false, false);
  setBlasThreads(1);
  matmul(a.data(), b.data(), c1.data(), 130, 13, 127, false, false);
  for (size_t i = 0; i < c1.size(); ++i)
    EXPECT_NEAR(c1[i], c2[i], 1e-4f);
}

} // namespace
} // namespace sbpflow::cpu

TEST(BlasCoreType, PrefersAvx512KernelsWhereOpenBlasChoseAvx2) {
  using sbpflow::cpu::preferredBlasCoreType;
  EXPECT_EQ(preferredBlasCoreType("Haswell", true, nullptr), "SkylakeX");
  EXPECT_EQ(preferredBlasCoreType("Zen", true, nullptr), "SkylakeX");
  // No AVX-512, a right choice already, or the user's own choice: keep it.
  EXPECT_EQ(preferredBlasCoreType("Haswell", false, nullptr), "");
  EXPECT_EQ(preferredBlasCoreType("SkylakeX", true, nullptr), "");
  EXPECT_EQ(preferredBlasCoreType("Cooperlake", true, nullptr), "");
  EXPECT_EQ(preferredBlasCoreType("Haswell", true, "Haswell"), "");
}
