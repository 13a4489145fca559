// The CPU quantising codecs against plain references on awkward sizes: QSGD
// (the header's draws exactly, unbiasedness and Lemma 3.1's variance bound
// measured over seeds), EF-SignSGD (residual and scale against the
// reference, error feedback over steps) and SparseLoCo's 2-bit values
// (CCLoco's bins, round-trip bounds, with top-k and error feedback).
#include "kernels/cpu/Quantize.h"
#include "kernels/Philox.h"
#include "kernels/cpu/Compression.h"
#include "tests/kernels/RandomVector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

namespace sbpflow {
namespace {

using test::randomVector;

bool sameBits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// ---------------------------------------------------------------- QSGD

// The header's draw for element i: a uniform in [0, 1) on a 2^-24 grid.
double qsgdUniform(int64_t i, uint64_t seed, uint64_t step) {
  const uint64_t c = static_cast<uint64_t>(i) >> 2;
  const PhiloxBlock r =
      philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32) | 0x40000000u,
                    static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return static_cast<double>(r.word[i & 3] >> 8) / 16777216.0;
}

float referenceNorm(const std::vector<float> &g, int64_t begin, int64_t end) {
  double squares = 0;
  for (int64_t i = begin; i < end; ++i)
    squares += static_cast<double>(g[i]) * g[i];
  return static_cast<float>(std::sqrt(squares));
}

struct QsgdPayload {
  std::vector<uint8_t> codes;
  std::vector<float> norms;
};

QsgdPayload encodeQsgd(const std::vector<float> &g, int s, int64_t bucket, uint64_t seed,
                       uint64_t step) {
  const int64_t n = static_cast<int64_t>(g.size());
  QsgdPayload p{std::vector<uint8_t>(n, 0xEE),
                std::vector<float>(cpu::bucketCount(n, bucket), -7.f)};
  cpu::qsgdEncode(g.data(), n, s, bucket, seed, step, p.codes.data(), p.norms.data());
  return p;
}

// The codes against the header's rule (r in f32 as specified, the draw of
// qsgdUniform), the level against r in double (within one of it, in [0, s]),
// the sign bit, and the norms against a double sum of squares.
void expectQsgd(const std::vector<float> &g, int s, int64_t bucket, uint64_t seed, uint64_t step) {
  const int64_t n = static_cast<int64_t>(g.size());
  SCOPED_TRACE("n " + std::to_string(n) + ", bucket " + std::to_string(bucket) + ", s " +
               std::to_string(s));
  const QsgdPayload p = encodeQsgd(g, s, bucket, seed, step);
  ASSERT_EQ(static_cast<int64_t>(p.norms.size()), (n + bucket - 1) / bucket);
  for (int64_t b = 0; b * bucket < n; ++b) {
    const int64_t begin = b * bucket, end = std::min(n, begin + bucket);
    const float norm = referenceNorm(g, begin, end);
    ASSERT_TRUE(sameBits(p.norms[b], norm)) << "norm of bucket " << b;
    for (int64_t i = begin; i < end; ++i) {
      const int level = p.codes[i] & 0x7f;
      const bool negative = p.codes[i] & 0x80;
      ASSERT_EQ(negative, g[i] < 0.f) << "sign at " << i;
      ASSERT_GE(level, 0);
      ASSERT_LE(level, s) << "level at " << i;
      const double rd = std::fabs(static_cast<double>(g[i])) * s / norm;
      ASSERT_LT(std::fabs(level - rd), 1.0 + 1e-5) << "level against r at " << i;
      const float r = std::fabs(g[i]) / norm * static_cast<float>(s);
      const float floor = std::floor(r);
      const int want =
          static_cast<int>(floor) + (qsgdUniform(i, seed, step) < double(r - floor) ? 1 : 0);
      ASSERT_EQ(level, std::min(want, s)) << "level at " << i;
    }
  }
}

TEST(QsgdEncode, MatchesTheReferenceOnAwkwardSizes) {
  for (int64_t n : {1, 7, 97, 1000, 4099}) {
    auto g = randomVector(n, 1101 + n);
    for (int64_t bucket : {int64_t{1}, int64_t{7}, int64_t{512}, n, n + 3})
      for (int s : {1, 4, 127})
        expectQsgd(g, s, bucket, 0x5eed0000u + n, 3);
  }
}

// Reproducible for one (seed, step); another seed or step draws otherwise.
TEST(QsgdEncode, DrawsAreKeyedBySeedAndStep) {
  auto g = randomVector(4099, 1201);
  const auto a = encodeQsgd(g, 4, 512, 11, 5);
  EXPECT_EQ(a.codes, encodeQsgd(g, 4, 512, 11, 5).codes);
  EXPECT_NE(a.codes, encodeQsgd(g, 4, 512, 12, 5).codes);
  EXPECT_NE(a.codes, encodeQsgd(g, 4, 512, 11, 6).codes);
  EXPECT_NE(a.codes, encodeQsgd(g, 4, 512, 11ull << 32, 5).codes);
  expectQsgd(g, 4, 512, 11ull << 32 | 7, 1ull << 33);
}

// Three ranks' payloads, averaged (weight 1/3) onto a gradient: bit for bit
// against the header's f32 formula in rank order, and near a double sum.
TEST(QsgdDecode, SumsEveryRanksPayload) {
  for (int64_t n : {1, 7, 97, 4099}) {
    const int64_t bucket = 512, ranks = 3, buckets = cpu::bucketCount(n, bucket);
    const int s = 8;
    std::vector<uint8_t> codes;
    std::vector<float> norms;
    for (int64_t r = 0; r < ranks; ++r) {
      const auto p = encodeQsgd(randomVector(n, 1301 + 10 * n + r), s, bucket, 100 + r, 9);
      codes.insert(codes.end(), p.codes.begin(), p.codes.end());
      norms.insert(norms.end(), p.norms.begin(), p.norms.end());
    }
    auto base = randomVector(n, 1399);
    std::vector<float> want = base;
    std::vector<double> wantDouble(base.begin(), base.end());
    for (int64_t r = 0; r < ranks; ++r)
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t c = codes[r * n + i];
        const float norm = norms[r * buckets + i / bucket];
        float q = norm / static_cast<float>(s) * static_cast<float>(c & 0x7f);
        want[i] += (1.f / 3.f) * ((c & 0x80) ? -q : q);
        wantDouble[i] += (c & 0x80 ? -1.0 : 1.0) * norm * (c & 0x7f) / s / 3.0;
      }
    std::vector<float> out = base;
    cpu::qsgdDecode(codes.data(), norms.data(), ranks, n, s, bucket, 1.f / 3.f, out.data());
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_TRUE(sameBits(out[i], want[i])) << "n " << n << " at " << i;
      EXPECT_NEAR(out[i], wantDouble[i], 1e-5) << "n " << n << " at " << i;
    }
  }
}

// Lemma 3.1 (i), E[Q(v)] = v, measured: M encodings of one v under seeds
// 0..M-1. Each Q(v_i) takes two values (norm/s) l0 and (norm/s) (l0 + 1) with
// probability p_i of the upper, so its variance is (norm/s)^2 p_i (1 - p_i) <=
// (norm/s)^2 / 4, and the mean of M draws has standard deviation sigma_i =
// (norm/s) sqrt(p_i (1 - p_i) / M). Asserted: every |mean_i - v_i| <= 6 sigma_i
// plus the f32 rounding of the decode (8 ulp of the norm), and the sum over
// all n elements of sign(v_i) bias_i (a shrinkage toward 0 adds up there),
// with standard deviation sqrt(sum sigma_i^2), within 4 of those. Lemma 3.1 (ii), measured: the
// mean over seeds of
// ||Q(v) - v||^2 per bucket <= min(d / s^2, sqrt(d) / s) ||v||^2.
TEST(QsgdEncode, IsUnbiasedAndWithinTheVarianceBound) {
  const int64_t n = 1000, bucket = 97, M = 2000;
  const int64_t buckets = cpu::bucketCount(n, bucket);
  auto g = randomVector(n, 1401);
  g[5] = 0.f;
  for (int s : {1, 8}) {
    std::vector<double> mean(n, 0.0), squaredError(buckets, 0.0);
    std::vector<float> decoded(n);
    for (int64_t seed = 0; seed < M; ++seed) {
      const auto p = encodeQsgd(g, s, bucket, static_cast<uint64_t>(seed), 1);
      std::fill(decoded.begin(), decoded.end(), 0.f);
      cpu::qsgdDecode(p.codes.data(), p.norms.data(), 1, n, s, bucket, 1.f, decoded.data());
      for (int64_t i = 0; i < n; ++i) {
        mean[i] += decoded[i];
        const double e = static_cast<double>(decoded[i]) - g[i];
        squaredError[i / bucket] += e * e;
      }
    }
    double biasSum = 0, varianceSum = 0, worstZ = 0, worstBias = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t b = i / bucket;
      const double norm = referenceNorm(g, b * bucket, std::min(n, b * bucket + bucket));
      const double r = std::fabs(static_cast<double>(g[i])) * s / norm;
      const double pUp = r - std::floor(r);
      const double sigma = norm / s * std::sqrt(pUp * (1 - pUp) / M);
      const double bias = mean[i] / M - g[i];
      EXPECT_LE(std::fabs(bias), 6 * sigma + 8 * norm * 0x1p-24) << "s " << s << " at " << i;
      biasSum += g[i] < 0.f ? -bias : bias;
      varianceSum += sigma * sigma;
      worstBias = std::max(worstBias, std::fabs(bias));
      if (sigma > 0)
        worstZ = std::max(worstZ, std::fabs(bias) / sigma);
    }
    const double z = biasSum / std::sqrt(varianceSum);
    EXPECT_LT(std::fabs(z), 4.0) << "s " << s;
    double worstRatio = 0;
    for (int64_t b = 0; b < buckets; ++b) {
      const int64_t begin = b * bucket, end = std::min(n, begin + bucket);
      const double d = static_cast<double>(end - begin);
      const double norm = referenceNorm(g, begin, end);
      const double bound = std::min(d / (s * s), std::sqrt(d) / s) * norm * norm;
      EXPECT_LE(squaredError[b] / M, bound) << "s " << s << ", bucket " << b;
      worstRatio = std::max(worstRatio, squaredError[b] / M / bound);
    }
    std::printf(
        "QSGD s=%d, %lld seeds, n=%lld, bucket %lld: max |bias| %.3g (max %.2f sigma), "
        "sign-weighted summed-bias z %.2f, E||Q(v)-v||^2 at most %.3f of Lemma 3.1's bound\n",
        s, static_cast<long long>(M), static_cast<long long>(n), static_cast<long long>(bucket),
        worstBias, worstZ, z, worstRatio);
  }
}

// A bucket of zeros sends norm 0 and decodes to 0; a bucket holding a NaN or
// an infinity decodes to NaN (every element), the others are untouched.
TEST(QsgdEncode, ZeroAndNonFiniteBuckets) {
  const int64_t n = 40, bucket = 10;
  auto g = randomVector(n, 1501);
  std::fill(g.begin(), g.begin() + 10, 0.f);
  g[13] = std::numeric_limits<float>::quiet_NaN();
  g[27] = -std::numeric_limits<float>::infinity();
  const auto p = encodeQsgd(g, 4, bucket, 1, 1);
  EXPECT_EQ(p.norms[0], 0.f);
  EXPECT_TRUE(std::isnan(p.norms[1]));
  EXPECT_TRUE(std::isinf(p.norms[2]));
  std::vector<float> out(n, 0.f);
  cpu::qsgdDecode(p.codes.data(), p.norms.data(), 1, n, 4, bucket, 1.f, out.data());
  for (int64_t i = 0; i < n; ++i) {
    if (i < 10)
      EXPECT_EQ(out[i], 0.f) << i;
    else if (i < 30)
      EXPECT_TRUE(std::isnan(out[i])) << i;
    else
      EXPECT_TRUE(std::isfinite(out[i])) << i;
  }
}

// Packed codes: a plain bit-by-bit reference (element i's field at bits
// [i * bits, (i + 1) * bits) of the little-endian bit string), and the round trip.
TEST(QsgdPackCodes, MatchesABitByBitReferenceAndRoundTrips) {
  for (int bits = 2; bits <= 8; ++bits)
    for (int64_t n : {1, 3, 7, 8, 9, 1001}) {
      const int maxLevel = (1 << (bits - 1)) - 1;
      std::vector<uint8_t> codes(n);
      for (int64_t i = 0; i < n; ++i)
        codes[i] =
            static_cast<uint8_t>(((i * 37 + bits) % 2 ? 0x80 : 0) | ((i * 11) % (maxLevel + 1)));
      std::vector<uint8_t> packed(cpu::qsgdPackedBytes(n, bits), 0xff), want(packed.size(), 0);
      for (int64_t i = 0; i < n; ++i) {
        const unsigned field = (codes[i] & 0x80 ? 1u << (bits - 1) : 0u) | (codes[i] & 0x7f);
        for (int b = 0; b < bits; ++b)
          if (field >> b & 1u)
            want[(i * bits + b) / 8] |= static_cast<uint8_t>(1u << ((i * bits + b) % 8));
      }
      cpu::qsgdPackCodes(codes.data(), n, bits, packed.data());
      EXPECT_EQ(packed, want) << "bits " << bits << " n " << n;
      std::vector<uint8_t> back(n, 0x55);
      cpu::qsgdUnpackCodes(packed.data(), n, bits, back.data());
      EXPECT_EQ(back, codes) << "bits " << bits << " n " << n;
    }
}

// ---------------------------------------------------------------- EF-SignSGD

float ulpOf(float x) {
  const float a = std::fabs(x);
  return std::nextafter(a, std::numeric_limits<float>::infinity()) - a;
}

// Algorithm 1 of Karimireddy et al. 2019 against the kernel: p = g + e in f32,
// each bucket's scale = ||p_b||_1 / |b| (double, rounded once), bits = p < 0,
// e' = p - delta in f32 bit for bit; and e' + delta = p, exactly where
// Sterbenz makes the subtraction exact, else within half an ulp of e'.
void expectSign(const std::vector<float> &g, const std::vector<float> &e, int64_t bucket) {
  const int64_t n = static_cast<int64_t>(g.size()), buckets = cpu::bucketCount(n, bucket);
  SCOPED_TRACE("n " + std::to_string(n) + " bucket " + std::to_string(bucket));
  std::vector<float> p(n), scales(buckets);
  for (int64_t i = 0; i < n; ++i)
    p[i] = g[i] + e[i];
  for (int64_t b = 0; b < buckets; ++b) {
    double l1 = 0;
    const int64_t end = std::min(n, (b + 1) * bucket);
    for (int64_t i = b * bucket; i < end; ++i)
      l1 += std::fabs(static_cast<double>(p[i]));
    scales[b] = static_cast<float>(l1 / static_cast<double>(end - b * bucket));
  }

  std::vector<float> residual = e, gotScales(buckets, -7.f);
  std::vector<uint8_t> codes(cpu::signCodeBytes(n), 0xEE);
  cpu::signEncode(g.data(), residual.data(), n, bucket, codes.data(), gotScales.data());
  for (int64_t b = 0; b < buckets; ++b)
    ASSERT_TRUE(sameBits(gotScales[b], scales[b])) << "scale of bucket " << b;
  for (int64_t i = 0; i < n; ++i) {
    const bool negative = (codes[i / 8] >> (i % 8)) & 1;
    ASSERT_EQ(negative, p[i] < 0.f) << "bit " << i;
    const float scale = scales[i / bucket], delta = negative ? -scale : scale;
    ASSERT_TRUE(sameBits(residual[i], p[i] - delta)) << "residual at " << i;
    const double whole = static_cast<double>(residual[i]) + delta;
    if (std::fabs(p[i]) >= scale / 2 && std::fabs(p[i]) <= 2 * scale)
      EXPECT_EQ(whole, p[i]) << "residual + decoded at " << i;
    else
      EXPECT_LE(std::fabs(whole - p[i]), ulpOf(residual[i]) / 2) << "residual + decoded at " << i;
  }
  for (int64_t i = n; i < 8 * cpu::signCodeBytes(n); ++i)
    EXPECT_EQ((codes[i / 8] >> (i % 8)) & 1, 0) << "padding bit " << i;
}

TEST(SignEncode, MatchesTheReferenceOnAwkwardSizes) {
  for (int64_t n : {1, 7, 8, 9, 97, 1000, 4099})
    for (int64_t bucket : {int64_t{1}, int64_t{7}, int64_t{64}, n, n + 5}) {
      expectSign(randomVector(n, 1601 + n), randomVector(n, 1701 + n, -0.3f, 0.3f), bucket);
      expectSign(randomVector(n, 1801 + n), std::vector<float>(n, 0.f), bucket);
    }
}

// sign(0) = +1: a zero is sent as +scale; each bucket has its own scale.
TEST(SignEncode, ZeroIsSentAsPositive) {
  std::vector<float> g = {0.f, -2.f, 0.f, 4.f, 1.f}, residual(5, 0.f), scales(3);
  uint8_t code = 0xff;
  cpu::signEncode(g.data(), residual.data(), 5, 2, &code, scales.data());
  EXPECT_EQ(scales, (std::vector<float>{1.f, 2.f, 1.f}));
  EXPECT_EQ(code, 0b00010);
  EXPECT_EQ(residual, (std::vector<float>{-1.f, -1.f, -2.f, 2.f, 0.f}));
}

TEST(SignEncode, ANanMakesItsBucketDecodeToNan) {
  auto g = randomVector(19, 1901);
  g[11] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> residual(19, 0.f), out(19, 0.f), scales(cpu::bucketCount(19, 8));
  std::vector<uint8_t> codes(cpu::signCodeBytes(19));
  cpu::signEncode(g.data(), residual.data(), 19, 8, codes.data(), scales.data());
  EXPECT_FALSE(std::isnan(scales[0]));
  EXPECT_TRUE(std::isnan(scales[1]));
  cpu::signDecode(codes.data(), scales.data(), 1, 19, 8, 1.f, out.data());
  for (int64_t i = 0; i < 19; ++i)
    EXPECT_EQ(std::isnan(out[i]), i >= 8 && i < 16) << "at " << i;
}

// Three ranks, weight 1/3: bit for bit against the f32 loop in rank order.
TEST(SignDecode, SumsEveryRanksPayload) {
  for (int64_t n : {1, 7, 97, 4099})
    for (int64_t bucket : {int64_t{5}, int64_t{64}, n}) {
      const int64_t ranks = 3, bytes = cpu::signCodeBytes(n), buckets = cpu::bucketCount(n, bucket);
      std::vector<uint8_t> codes(ranks * bytes);
      std::vector<float> scales(ranks * buckets);
      for (int64_t r = 0; r < ranks; ++r) {
        std::vector<float> residual(n, 0.f);
        auto g = randomVector(n, 2001 + 10 * n + r);
        cpu::signEncode(g.data(), residual.data(), n, bucket, codes.data() + r * bytes,
                        scales.data() + r * buckets);
      }
      auto base = randomVector(n, 2099);
      std::vector<float> want = base, out = base;
      for (int64_t r = 0; r < ranks; ++r)
        for (int64_t i = 0; i < n; ++i) {
          const float sc = scales[r * buckets + i / bucket];
          want[i] += (1.f / 3.f) * (((codes[r * bytes + i / 8] >> (i % 8)) & 1) ? -sc : sc);
        }
      cpu::signDecode(codes.data(), scales.data(), ranks, n, bucket, 1.f / 3.f, out.data());
      for (int64_t i = 0; i < n; ++i)
        EXPECT_TRUE(sameBits(out[i], want[i])) << "n " << n << " bucket " << bucket << " at " << i;
    }
}

// Error feedback over steps: after every step, what was sent plus what is
// kept is every gradient so far (up to the f32 roundings of the steps).
TEST(SignEncode, ErrorFeedbackKeepsWhatWasNotSent) {
  const int64_t n = 257, bucket = 64;
  std::vector<float> residual(n, 0.f), sentSum(n, 0.f), scales(cpu::bucketCount(n, bucket));
  std::vector<double> gradSum(n, 0.0);
  std::vector<uint8_t> codes(cpu::signCodeBytes(n));
  for (int step = 0; step < 20; ++step) {
    auto g = randomVector(n, 2101 + step);
    for (int64_t i = 0; i < n; ++i)
      gradSum[i] += g[i];
    cpu::signEncode(g.data(), residual.data(), n, bucket, codes.data(), scales.data());
    cpu::signDecode(codes.data(), scales.data(), 1, n, bucket, 1.f, sentSum.data());
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(sentSum[i] + residual[i], gradSum[i], 1e-5) << "step " << step << " at " << i;
  }
}

// ---------------------------------------------------------------- 2-bit values

struct TwoBitPayload {
  std::vector<uint8_t> codes;
  std::vector<float> table;
  std::vector<float> unsent;
};

TwoBitPayload encodeTwoBit(const std::vector<float> &v) {
  const int64_t k = static_cast<int64_t>(v.size());
  TwoBitPayload p{std::vector<uint8_t>(cpu::twoBitCodeBytes(k), 0xEE),
                  std::vector<float>(cpu::kTwoBitTableFloats, -7.f), std::vector<float>(k, -7.f)};
  cpu::twoBitEncode(v.data(), k, p.codes.data(), p.table.data(), p.unsent.data());
  return p;
}

int codeAt(const std::vector<uint8_t> &codes, int64_t j) {
  return (codes[j / 4] >> (2 * (j % 4))) & 3;
}

// CCLoco's TopKCompressor._quantize with 4 bins and range 6 sigma, written
// out (statistics in double), against the kernel's codes and table bit for
// bit; then the round trip's bounds: each value decodes to its bin's mean,
// so within the range of its bin's members, within one step in the interior
// bins; the decoded values keep the sum; and the squared error is at most
// the values' spread about their mean (bin means minimise it per bin).
void expectTwoBit(const std::vector<float> &v) {
  const int64_t k = static_cast<int64_t>(v.size());
  SCOPED_TRACE("k " + std::to_string(k));
  double sum = 0;
  for (float x : v)
    sum += x;
  const float shift = static_cast<float>(sum / k);
  double squares = 0;
  for (float x : v)
    squares += static_cast<double>(x - shift) * (x - shift);
  const double sigma = k > 1 ? std::sqrt(squares / (k - 1)) : 0.0;
  float step = static_cast<float>(6.0 * sigma / 4);
  if (step == 0.f)
    step = 1.f;
  std::vector<int> code(k);
  double binSum[4] = {}, binCount[4] = {}, binMin[4], binMax[4];
  std::fill(binMin, binMin + 4, std::numeric_limits<double>::infinity());
  std::fill(binMax, binMax + 4, -std::numeric_limits<double>::infinity());
  for (int64_t j = 0; j < k; ++j) {
    const float c = v[j] - shift;
    code[j] = static_cast<int>(std::clamp(std::nearbyint(c / step + 2.f), 0.f, 3.f));
    binSum[code[j]] += c;
    binCount[code[j]] += 1;
    binMin[code[j]] = std::min<double>(binMin[code[j]], v[j]);
    binMax[code[j]] = std::max<double>(binMax[code[j]], v[j]);
  }

  const TwoBitPayload p = encodeTwoBit(v);
  ASSERT_TRUE(sameBits(p.table[0], shift));
  for (int b = 0; b < 4; ++b) {
    const float want = binCount[b] > 0 ? static_cast<float>(binSum[b] / binCount[b]) : 0.f;
    ASSERT_TRUE(sameBits(p.table[1 + b], want)) << "bin " << b;
  }
  for (int64_t j = 0; j < k; ++j)
    ASSERT_EQ(codeAt(p.codes, j), code[j]) << "code " << j;
  for (int64_t j = k; j < 4 * cpu::twoBitCodeBytes(k); ++j)
    EXPECT_EQ(codeAt(p.codes, j), 0) << "padding " << j;

  std::vector<float> decoded(k, -7.f);
  cpu::twoBitDecode(p.codes.data(), p.table.data(), 1, k, decoded.data());
  double decodedSum = 0, squaredError = 0, scaleOfValues = 0;
  for (int64_t j = 0; j < k; ++j) {
    const int b = code[j];
    ASSERT_TRUE(sameBits(decoded[j], p.table[1 + b] + shift)) << j;
    ASSERT_TRUE(sameBits(p.unsent[j], v[j] - decoded[j])) << "unsent " << j;
    const double slack = 4 * ulpOf(std::max(std::fabs(shift), std::fabs(decoded[j])));
    EXPECT_GE(decoded[j], binMin[b] - slack) << j;
    EXPECT_LE(decoded[j], binMax[b] + slack) << j;
    if (b == 1 || b == 2) {
      EXPECT_LE(std::fabs(decoded[j] - v[j]), step + slack) << j;
    }
    decodedSum += decoded[j];
    squaredError += (static_cast<double>(decoded[j]) - v[j]) * (decoded[j] - v[j]);
    scaleOfValues = std::max(scaleOfValues, std::fabs(static_cast<double>(v[j])));
  }
  EXPECT_NEAR(decodedSum, sum, 1e-6 * k * scaleOfValues);
  EXPECT_LE(squaredError, squares * (1 + 1e-5) + 1e-30);
}

TEST(TwoBitEncode, MatchesCclocosQuantiserOnAwkwardSizes) {
  for (int64_t k : {1, 2, 7, 97, 1000, 4099}) {
    expectTwoBit(randomVector(k, 2201 + k));
    // Top-k values: two clusters far from 0.
    auto v = randomVector(k, 2301 + k, 0.5f, 1.f);
    for (int64_t j = 0; j < k; j += 3)
      v[j] = -v[j];
    expectTwoBit(v);
  }
  expectTwoBit(std::vector<float>(13, 0.25f)); // sigma 0: step 1, all in bin 2
}

// One value decodes to itself (shift = v, bin 2 holds 0).
TEST(TwoBitEncode, OneValueDecodesExactly) {
  for (float x : {0.f, -3.5f, 1e-30f, 7e20f}) {
    const auto p = encodeTwoBit({x});
    float decoded = -7.f;
    cpu::twoBitDecode(p.codes.data(), p.table.data(), 1, 1, &decoded);
    EXPECT_EQ(decoded, x);
    EXPECT_EQ(p.unsent[0], 0.f);
  }
}

TEST(TwoBitEncode, ANanMakesEveryDecodedValueNan) {
  auto v = randomVector(11, 2401);
  v[4] = std::numeric_limits<float>::quiet_NaN();
  const auto p = encodeTwoBit(v);
  std::vector<float> decoded(11);
  cpu::twoBitDecode(p.codes.data(), p.table.data(), 1, 11, decoded.data());
  for (float x : decoded)
    EXPECT_TRUE(std::isnan(x));
}

// SparseLoCo's exchange on three ranks: top-k of grad + residual, values to
// 2 bits, what the 2 bits lost back into the residual; gathered payloads
// decoded and scatter-added (mean, weight 1/3). Per rank, residual + decoded
// = accumulated gradient (to the f32 rounding of v - decoded); the sum
// against a double reference of the decoded pairs.
TEST(TwoBitDecode, TopkWithTwoBitValuesAndErrorFeedback) {
  const int64_t n = 4099, k = 97, ranks = 3;
  const int64_t bytes = cpu::twoBitCodeBytes(k);
  std::vector<int32_t> order(n), idx(ranks * k);
  std::vector<float> val(k), unsent(k), decoded(ranks * k);
  std::vector<uint8_t> codes(ranks * bytes);
  std::vector<float> tables(ranks * cpu::kTwoBitTableFloats);
  for (int64_t r = 0; r < ranks; ++r) {
    auto g = randomVector(n, 2501 + r);
    auto residual = randomVector(n, 2601 + r, -0.2f, 0.2f);
    std::vector<float> acc(n);
    for (int64_t i = 0; i < n; ++i)
      acc[i] = g[i] + residual[i];
    int32_t *rankIdx = idx.data() + r * k;
    cpu::topkEncode(g.data(), residual.data(), n, k, order.data(), rankIdx, val.data());
    cpu::twoBitEncode(val.data(), k, codes.data() + r * bytes,
                      tables.data() + r * cpu::kTwoBitTableFloats, unsent.data());
    ASSERT_EQ(cpu::scatterAddPairs(rankIdx, unsent.data(), k, 1.f, residual.data(), n), -1);
    std::vector<float> mine(n, 0.f), mineDecoded(k);
    cpu::twoBitDecode(codes.data() + r * bytes, tables.data() + r * cpu::kTwoBitTableFloats, 1, k,
                      mineDecoded.data());
    ASSERT_EQ(cpu::scatterAddPairs(rankIdx, mineDecoded.data(), k, 1.f, mine.data(), n), -1);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(residual[i] + mine[i], acc[i], ulpOf(acc[i])) << "rank " << r << " at " << i;
  }
  cpu::twoBitDecode(codes.data(), tables.data(), ranks, k, decoded.data());
  std::vector<double> want(n, 0.0);
  for (int64_t r = 0; r < ranks; ++r)
    for (int64_t j = 0; j < k; ++j) {
      const float *table = tables.data() + r * cpu::kTwoBitTableFloats;
      const float d = table[1 + codeAt(codes, r * 4 * bytes + j)] + table[0];
      ASSERT_TRUE(sameBits(decoded[r * k + j], d)) << "rank " << r << ", value " << j;
      want[idx[r * k + j]] += d / 3.0;
    }
  std::vector<float> out(n, 0.f);
  ASSERT_EQ(cpu::scatterAddPairs(idx.data(), decoded.data(), ranks * k, 1.f / 3.f, out.data(), n),
            -1);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_NEAR(out[i], want[i], 1e-6) << i;
}

} // namespace
} // namespace sbpflow
