// The CUDA compression codecs (kernels/cuda/Compression.h) against the CPU's
// (kernels/cpu/Compression.h, Quantize.h) on awkward sizes, ties, NaNs, zeros
// and DGC's flat tail: the same bits wherever the header promises them; where
// the GPU sums in double in another order than the CPU (QSGD's long buckets,
// sign's scale, the 2-bit tables, PowerSGD), within an ulp, and the codes the
// same wherever the scale is.
#include "kernels/cpu/Compression.h"
#include "kernels/cpu/Quantize.h"
#include "kernels/cuda/Compression.h"
#include "tests/kernels/FloatBits.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace sbpflow::test {
namespace {

const int64_t kSizes[] = {1, 7, 4097, (1 << 20) + 3};
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// k = 0, 1, n and the densities 0.001 and 0.01 (at least 1), and n / 3.
std::set<int64_t> ksFor(int64_t n) {
  return {0, 1, n, std::max<int64_t>(1, n / 1000), std::max<int64_t>(1, n / 100), n / 3};
}

// The same value: the same bits, or both NaN (a GPU's arithmetic returns its
// canonical NaN where x86 keeps the operand's payload and sign).
bool sameValue(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || bitsOf(a) == bitsOf(b);
}
bool sameValue(int32_t a, int32_t b) { return a == b; }
bool sameValue(uint8_t a, uint8_t b) { return a == b; }

// Empty when got and want hold the same values, else where they first differ
// (a readable failure on a million elements).
template <class T>
std::string firstDifference(const std::vector<T> &got, const std::vector<T> &want) {
  if (got.size() != want.size())
    return "size " + std::to_string(got.size()) + ", want " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (!sameValue(got[i], want[i])) {
      std::ostringstream s;
      s.precision(9);
      s << "at " << i << ": got " << +got[i] << ", want " << +want[i];
      return s.str();
    }
  return "";
}

// How many floats lie between a and b (0: the same bits; both finite, or equal).
int64_t ulpDistance(float a, float b) {
  if (sameValue(a, b))
    return 0;
  if (!std::isfinite(a) || !std::isfinite(b))
    return std::numeric_limits<int64_t>::max();
  auto ordered = [](float x) {
    const int64_t bits = static_cast<int32_t>(bitsOf(x));
    return bits < 0 ? std::numeric_limits<int32_t>::min() - bits : bits;
  };
  return std::llabs(ordered(a) - ordered(b));
}

// Scratch of `bytes` device bytes (at least one, so a pointer exists).
struct Scratch : DeviceBuffer<uint8_t> {
  explicit Scratch(size_t bytes) : DeviceBuffer<uint8_t>(std::max<size_t>(bytes, 1)) {}
};

// ---------------------------------------------------------------- top-k

void expectTopk(const std::vector<float> &grad, const std::vector<float> &residual0, int64_t k) {
  const int64_t n = static_cast<int64_t>(grad.size());
  SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k));
  std::vector<float> residual = residual0, val(k);
  std::vector<int32_t> order(n), idx(k);
  cpu::topkEncode(grad.data(), residual.data(), n, k, order.data(), idx.data(), val.data());

  DeviceBuffer<float> dGrad(grad), dResidual(residual0), dVal(k);
  DeviceBuffer<int32_t> dIdx(k);
  Scratch scratch(cuda::topkScratchBytes(n));
  ASSERT_OK(cuda::topkEncode(dGrad.get(), dResidual.get(), n, k, scratch.get(), dIdx.get(),
                             dVal.get(), nullptr));
  EXPECT_EQ(firstDifference(dIdx.download(), idx), "") << "idx";
  EXPECT_EQ(firstDifference(dVal.download(), val), "") << "val";
  EXPECT_EQ(firstDifference(dResidual.download(), residual), "") << "residual";
}

TEST(CudaTopkEncode, MatchesTheCpuOnAwkwardSizes) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    auto grad = randomVector(n, 3001 + n);
    auto residual = randomVector(n, 3101 + n, -0.5f, 0.5f);
    for (int64_t k : ksFor(n))
      expectTopk(grad, residual, k);
  }
}

// Magnitudes on a grid of five values (both signs): long runs of equal keys,
// where the lower index must win.
TEST(CudaTopkEncode, TiesGoToTheLowerIndex) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : {int64_t{4097}, int64_t{(1 << 20) + 3}}) {
    auto grad = randomVector(n, 3201 + n);
    for (float &g : grad)
      g = std::round(g * 4.f) / 4.f;
    for (int64_t k : ksFor(n))
      expectTopk(grad, std::vector<float>(n, 0.f), k);
  }
}

// NaNs (of either sign) and infinities have the same key (the CPU's
// magnitude() makes a NaN infinite): sent first, in index order.
TEST(CudaTopkEncode, NansAndInfinitiesAreSentFirst) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 4097;
  auto grad = randomVector(n, 3301);
  grad[5] = kNan;
  grad[100] = -kNan;
  grad[200] = kInf;
  grad[300] = -kInf;
  grad[4096] = kNan;
  for (int64_t k : {1, 3, 5, 6, 41, 4097})
    expectTopk(grad, randomVector(n, 3302, -0.5f, 0.5f), k);
}

// All zero (signed zeros among them): every key ties, the first k are sent.
TEST(CudaTopkEncode, AllZero) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : {int64_t{7}, int64_t{4097}}) {
    std::vector<float> grad(n, 0.f), residual(n, 0.f);
    for (int64_t i = 0; i < n; i += 3)
      grad[i] = -0.f;
    for (int64_t i = 0; i < n; i += 2)
      residual[i] = -0.f;
    for (int64_t k : ksFor(n))
      expectTopk(grad, residual, k);
  }
}

// ---------------------------------------------------------------- scatter-add

// out = base, then both scatter-adds of the same payloads: the same bits and
// the same first bad index.
void expectScatterAdd(const std::vector<int32_t> &idx, const std::vector<float> &val, int64_t ranks,
                      int64_t perRank, float scale, const std::vector<float> &base) {
  const int64_t n = static_cast<int64_t>(base.size());
  std::vector<float> out = base;
  const int64_t bad =
      cpu::scatterAddPairs(idx.data(), val.data(), ranks * perRank, scale, out.data(), n);

  DeviceBuffer<int32_t> dIdx(idx);
  DeviceBuffer<float> dVal(val), dOut(base);
  DeviceBuffer<int64_t> dBad(std::vector<int64_t>{1234});
  Scratch scratch(cuda::scatterAddPairsScratchBytes(ranks));
  ASSERT_OK(cuda::scatterAddPairs(dIdx.get(), dVal.get(), ranks, perRank, scale, dOut.get(), n,
                                  scratch.get(), dBad.get(), nullptr));
  EXPECT_EQ(firstDifference(dOut.download(), out), "");
  EXPECT_EQ(dBad.download()[0], bad);
}

// Payloads of top-k (increasing indices, colliding across ranks).
TEST(CudaScatterAddPairs, SumsTopkPayloadsInRankOrder) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : {int64_t{7}, int64_t{4097}, int64_t{(1 << 20) + 3}}) {
    for (int64_t k : {int64_t{1}, std::max<int64_t>(1, n / 100), n}) {
      SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k));
      const int64_t ranks = 4;
      std::vector<int32_t> idx, order(n), rankIdx(k);
      std::vector<float> val, rankVal(k);
      for (int64_t r = 0; r < ranks; ++r) {
        auto grad = randomVector(n, 3401 + r);
        std::vector<float> residual(n, 0.f);
        cpu::topkEncode(grad.data(), residual.data(), n, k, order.data(), rankIdx.data(),
                        rankVal.data());
        idx.insert(idx.end(), rankIdx.begin(), rankIdx.end());
        val.insert(val.end(), rankVal.begin(), rankVal.end());
      }
      expectScatterAdd(idx, val, ranks, k, 0.25f, randomVector(n, 3402));
    }
  }
}

// DGC's padding repeats (0, 0.0f), after a real index 0 in one payload; out[0]
// starts as -0 (adding +0 makes it +0, as on the CPU).
TEST(CudaScatterAddPairs, DgcPaddingRepeatsIndexZero) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 4097, perRank = 50, ranks = 3;
  std::vector<int32_t> idx;
  std::vector<float> val = randomVector(ranks * perRank, 3501);
  const int64_t real[] = {37, 0, 50};
  for (int64_t r = 0; r < ranks; ++r)
    for (int64_t j = 0; j < perRank; ++j) {
      if (j < real[r]) {
        idx.push_back(static_cast<int32_t>(r == 0 ? 3 * j : 80 * j + r));
      } else {
        idx.push_back(0);
        val[r * perRank + j] = 0.f;
      }
    }
  auto base = randomVector(n, 3502);
  base[0] = -0.f;
  expectScatterAdd(idx, val, ranks, perRank, 1.f / 3.f, base);
  expectScatterAdd(idx, val, ranks, perRank, -2.f, base);
}

// Indices in any order (repeats, runs, descents): the payload's tail is
// added by one thread in pair order; bad indices are skipped and the first
// reported.
TEST(CudaScatterAddPairs, AnyOrderAndBadIndices) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 101, perRank = 257, ranks = 3;
  std::vector<int32_t> idx;
  for (int64_t r = 0; r < ranks; ++r)
    for (int64_t j = 0; j < perRank; ++j)
      idx.push_back(static_cast<int32_t>(j < 20 ? 5 * j : (7 * j + 3 * r) % n));
  const std::vector<float> val = randomVector(ranks * perRank, 3601);
  const auto base = randomVector(n, 3602);
  expectScatterAdd(idx, val, ranks, perRank, 1.f / 3.f, base);

  idx[perRank + 2] = -3;            // in rank 1's increasing prefix
  idx[2 * perRank + 100] = 1 << 20; // in rank 2's tail
  idx[2 * perRank + 5] = static_cast<int32_t>(n);
  expectScatterAdd(idx, val, ranks, perRank, 1.f, base);
}

TEST(CudaScatterAddPairs, NoPairsLeaveOutAndReportNone) {
  SBPFLOW_REQUIRE_GPU();
  const auto base = randomVector(7, 3701);
  expectScatterAdd({}, {}, 0, 5, 1.f, base);
  expectScatterAdd({}, {}, 3, 0, 1.f, base);
}

// ---------------------------------------------------------------- DGC

// `steps` DGC steps on both sides from u = v = 0, compared after each
// (correct = false: no momentum correction, u null on both sides).
void expectDgc(const std::vector<std::vector<float>> &grads, int64_t k, float momentum,
               bool correct = true) {
  const int64_t n = static_cast<int64_t>(grads[0].size());
  std::vector<float> u(n, 0.f), v(n, 0.f), val(k);
  std::vector<int32_t> order(n), idx(k);
  DeviceBuffer<float> dU(u), dV(v), dVal(k), dGrad(n);
  DeviceBuffer<int32_t> dIdx(k);
  DeviceBuffer<int64_t> dChosen(1);
  Scratch scratch(cuda::dgcScratchBytes(n));
  for (size_t step = 0; step < grads.size(); ++step) {
    SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k) + ", step " +
                 std::to_string(step));
    const auto &grad = grads[step];
    const int64_t chosen = cpu::dgcEncode(grad.data(), correct ? u.data() : nullptr, v.data(), n, k,
                                          momentum, order.data(), idx.data(), val.data());
    ASSERT_CUDA(cudaMemcpy(dGrad.get(), grad.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    ASSERT_OK(cuda::dgcEncode(dGrad.get(), correct ? dU.get() : nullptr, dV.get(), n, k, momentum,
                              scratch.get(), dIdx.get(), dVal.get(), dChosen.get(), nullptr));
    ASSERT_EQ(dChosen.download()[0], chosen);
    ASSERT_EQ(firstDifference(dIdx.download(), idx), "") << "idx";
    ASSERT_EQ(firstDifference(dVal.download(), val), "") << "val";
    ASSERT_EQ(firstDifference(dU.download(), u), "") << "u";
    ASSERT_EQ(firstDifference(dV.download(), v), "") << "v";
  }
}

TEST(CudaDgcEncode, MatchesTheCpuOverSteps) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    std::vector<std::vector<float>> grads;
    for (int step = 0; step < 3; ++step)
      grads.push_back(randomVector(n, 3801 + 10 * step + n));
    for (int64_t k : ksFor(n))
      expectDgc(grads, k, 0.9f);
  }
}

TEST(CudaDgcEncode, WithoutMomentumCorrectionMatchesTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    std::vector<std::vector<float>> grads;
    for (int step = 0; step < 3; ++step)
      grads.push_back(randomVector(n, 5801 + 10 * step + n));
    for (int64_t k : ksFor(n))
      expectDgc(grads, k, 0.9f, /*correct=*/false);
  }
}

// A flat tail of |v| (every element but 30 at magnitude 1, the sample
// sees only those): x1.3 and x0.8 step over the band to the end, and the
// fall-back threshold (all pass) decides; the top k are the 30 and the
// first 70 of the tail.
TEST(CudaDgcEncode, FlatTailFallsBack) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 4097, k = 100;
  std::vector<float> grad(n);
  for (int64_t i = 0; i < n; ++i)
    grad[i] = i % 2 ? -1.f : 1.f;
  for (int j = 0; j < 30; ++j)
    grad[(j * 137 + 11) % n] = 5.f + 0.03f * j;
  std::vector<float> u(n, 0.f), v(n, 0.f), val(k);
  std::vector<int32_t> order(n), idx(k);
  ASSERT_EQ(cpu::dgcEncode(grad.data(), u.data(), v.data(), n, k, 0.9f, order.data(), idx.data(),
                           val.data()),
            k); // the case this test is for: without the fall-back, 30
  expectDgc({grad, grad}, k, 0.9f);
}

// All zero: every threshold passes everything; the first k are chosen.
// NaNs: they count as infinite, are sent, and masking clears them.
TEST(CudaDgcEncode, ZerosAndNans) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 4097;
  expectDgc({std::vector<float>(n, 0.f), std::vector<float>(n, 0.f)}, 41, 0.9f);
  auto grad = randomVector(n, 3901);
  grad[3] = kNan;
  grad[2000] = -kNan;
  grad[4000] = kInf;
  expectDgc({grad, randomVector(n, 3902)}, 41, 0.9f);
  expectDgc({grad}, 2, 0.9f);
}

// ---------------------------------------------------------------- random-k

TEST(CudaRandomk, SameIndicesAndValuesAsTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    std::set<int64_t> ks = ksFor(n);
    if (n <= 4097)
      ks.insert(n - 1); // the one-thread shuffle: n - 1 swaps
    const auto grad = randomVector(n, 4001 + n);
    for (int64_t k : ks) {
      for (uint64_t step : {uint64_t{0}, uint64_t{7} << 32 | 3}) {
        SCOPED_TRACE("n " + std::to_string(n) + ", k " + std::to_string(k) + ", step " +
                     std::to_string(step));
        const uint64_t seed = 0x123456789abcdefull;
        std::vector<int32_t> order(n), idx(k);
        std::vector<float> val(k);
        cpu::randomkIndices(n, k, seed, step, order.data(), idx.data());
        cpu::randomkEncode(grad.data(), n, k, idx.data(), val.data());

        DeviceBuffer<int32_t> dIdx(k);
        DeviceBuffer<float> dGrad(grad), dVal(k);
        Scratch scratch(cuda::randomkScratchBytes(n, k));
        ASSERT_OK(cuda::randomkIndices(n, k, seed, step, scratch.get(), dIdx.get(), nullptr));
        ASSERT_OK(cuda::randomkEncode(dGrad.get(), n, k, dIdx.get(), dVal.get(), nullptr));
        EXPECT_EQ(firstDifference(dIdx.download(), idx), "") << "idx";
        EXPECT_EQ(firstDifference(dVal.download(), val), "") << "val";
      }
    }
  }
}

// ---------------------------------------------------------------- PowerSGD

// The same Gram-Schmidt as the CPU, its double sums in another order: within
// 1e-6 of the largest entry (one float rounding, rarely a second, carried to
// the later columns), orthonormal, and a zero column exactly zero on both.
TEST(CudaOrthogonalizeColumns, MatchesTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  const std::pair<int64_t, int64_t> shapes[] = {
      {1, 1}, {1, 3}, {7, 3}, {97, 8}, {4097, 1}, {4097, 4}, {(1 << 20) + 3, 2}};
  for (auto [rows, cols] : shapes) {
    for (bool zeroColumn : {false, true}) {
      if (zeroColumn && cols < 2)
        continue;
      SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols) +
                   (zeroColumn ? ", column 1 zero" : ""));
      auto p = randomVector(rows * cols, 4101 + rows * cols);
      if (zeroColumn)
        for (int64_t r = 0; r < rows; ++r)
          p[r * cols + 1] = 0.f;
      DeviceBuffer<float> dP(p);
      cpu::orthogonalizeColumns(p.data(), rows, cols);
      ASSERT_OK(cuda::orthogonalizeColumns(dP.get(), rows, cols, nullptr));
      const auto got = dP.download();
      EXPECT_LE(normRelativeError(got, p), 1e-6);
      for (int64_t r = 0; r < rows && zeroColumn; ++r)
        ASSERT_EQ(bitsOf(got[r * cols + 1]), 0u) << "row " << r;
      for (int64_t a = 0; a < cols; ++a)
        for (int64_t b = a; b < cols; ++b) {
          double dot = 0;
          for (int64_t r = 0; r < rows; ++r)
            dot += static_cast<double>(got[r * cols + a]) * got[r * cols + b];
          const bool zero = zeroColumn && (a == 1 || b == 1);
          // Rank 1 rows: column 0 spans everything, the rest become zero.
          const bool spanned = rows == 1 && b > 0;
          const double want = a == b && !zero && !spanned ? 1.0 : 0.0;
          EXPECT_NEAR(dot, want, 1e-5) << "columns " << a << ", " << b;
        }
    }
  }
}

// ---------------------------------------------------------------- QSGD

struct QsgdPayload {
  std::vector<uint8_t> codes;
  std::vector<float> norms;
};

QsgdPayload cpuQsgd(const std::vector<float> &g, int levels, int64_t bucket, uint64_t seed,
                    uint64_t step) {
  const int64_t n = static_cast<int64_t>(g.size());
  QsgdPayload p{std::vector<uint8_t>(n), std::vector<float>(cpu::bucketCount(n, bucket))};
  cpu::qsgdEncode(g.data(), n, levels, bucket, seed, step, p.codes.data(), p.norms.data());
  return p;
}

void expectQsgd(const std::vector<float> &g, int levels, int64_t bucket) {
  const int64_t n = static_cast<int64_t>(g.size());
  SCOPED_TRACE("n " + std::to_string(n) + ", levels " + std::to_string(levels) + ", bucket " +
               std::to_string(bucket));
  const uint64_t seed = 99, step = (uint64_t{1} << 33) + 3;
  const QsgdPayload want = cpuQsgd(g, levels, bucket, seed, step);
  DeviceBuffer<float> dG(g), dNorms(want.norms.size());
  DeviceBuffer<uint8_t> dCodes(n);
  Scratch scratch(cuda::qsgdEncodeScratchBytes(n, bucket));
  ASSERT_OK(cuda::qsgdEncode(dG.get(), n, levels, bucket, seed, step, scratch.get(), dCodes.get(),
                             dNorms.get(), nullptr));
  const auto codes = dCodes.download();
  const auto norms = dNorms.download();
  if (bucket <= cuda::kQsgdSequentialBucket) {
    // Summed in index order, as on the CPU: the same payload.
    EXPECT_EQ(firstDifference(norms, want.norms), "") << "norms";
    EXPECT_EQ(firstDifference(codes, want.codes), "") << "codes";
    return;
  }
  int64_t differentNorms = 0;
  for (size_t b = 0; b < norms.size(); ++b) {
    const int64_t begin = static_cast<int64_t>(b) * bucket, end = std::min(n, begin + bucket);
    ASSERT_LE(ulpDistance(norms[b], want.norms[b]), 1) << "norm of bucket " << b;
    if (sameValue(norms[b], want.norms[b])) {
      for (int64_t i = begin; i < end; ++i)
        ASSERT_EQ(codes[i], want.codes[i]) << "code " << i;
      continue;
    }
    // Another norm: the same signs, levels at most one apart.
    ++differentNorms;
    for (int64_t i = begin; i < end; ++i) {
      ASSERT_EQ(codes[i] & 0x80, want.codes[i] & 0x80) << "sign " << i;
      ASSERT_LE(std::abs((codes[i] & 0x7f) - (want.codes[i] & 0x7f)), 1) << "level " << i;
    }
  }
  if (differentNorms > 0)
    std::printf("note: %lld of %zu bucket norms one ulp from the CPU's\n",
                static_cast<long long>(differentNorms), norms.size());
}

TEST(CudaQsgdEncode, MatchesTheCpuOnAwkwardSizes) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    const auto g = randomVector(n, 4201 + n);
    for (int64_t bucket : {int64_t{1}, int64_t{7}, int64_t{512}, int64_t{513}, int64_t{4096}, n})
      for (int levels : {1, 15, 127})
        expectQsgd(g, levels, bucket);
  }
}

// A bucket of zeros (norm 0, level 0), a NaN and an infinity in others
// (their norms as they are, level 0), on both paths of the norm.
TEST(CudaQsgdEncode, ZeroAndNonFiniteBuckets) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t bucket : {int64_t{64}, int64_t{1024}}) {
    const int64_t n = 8 * bucket + 5;
    auto g = randomVector(n, 4301);
    std::fill(g.begin(), g.begin() + bucket, 0.f);
    g[bucket + 3] = kNan;
    g[2 * bucket + 7] = -kInf;
    g[n - 1] = kNan;
    expectQsgd(g, 4, bucket);
  }
}

// Payloads of three ranks (the CPU's) decode to the same bits.
TEST(CudaQsgdDecode, SumsEveryRanksPayloadAsTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : {int64_t{7}, int64_t{4097}}) {
    for (int64_t bucket : {int64_t{1}, int64_t{100}, n}) {
      SCOPED_TRACE("n " + std::to_string(n) + ", bucket " + std::to_string(bucket));
      const int levels = 15, ranks = 3;
      std::vector<uint8_t> codes;
      std::vector<float> norms;
      for (int r = 0; r < ranks; ++r) {
        auto g = randomVector(n, 4401 + r);
        if (r == 1)
          g[n / 2] = kInf; // a diverged rank: its bucket decodes to NaN
        const QsgdPayload p = cpuQsgd(g, levels, bucket, 10 + r, 1);
        codes.insert(codes.end(), p.codes.begin(), p.codes.end());
        norms.insert(norms.end(), p.norms.begin(), p.norms.end());
      }
      const auto base = randomVector(n, 4402);
      std::vector<float> out = base;
      cpu::qsgdDecode(codes.data(), norms.data(), ranks, n, levels, bucket, 1.f / 3.f, out.data());
      DeviceBuffer<uint8_t> dCodes(codes);
      DeviceBuffer<float> dNorms(norms), dOut(base);
      ASSERT_OK(cuda::qsgdDecode(dCodes.get(), dNorms.get(), ranks, n, levels, bucket, 1.f / 3.f,
                                 dOut.get(), nullptr));
      EXPECT_EQ(firstDifference(dOut.download(), out), "");
    }
  }
}

// ---------------------------------------------------------------- EF-SignSGD

// The codes are the CPU's; the scales within an ulp (equal for buckets of
// at most kQsgdSequentialBucket, summed in the CPU's order); the residual the
// CPU's where the scales are, else within an ulp of the scale.
void expectSign(const std::vector<float> &g, const std::vector<float> &e, int64_t bucket) {
  const int64_t n = static_cast<int64_t>(g.size()), buckets = cpu::bucketCount(n, bucket);
  SCOPED_TRACE("n " + std::to_string(n) + " bucket " + std::to_string(bucket));
  std::vector<float> residual = e, scales(buckets);
  std::vector<uint8_t> codes(cpu::signCodeBytes(n));
  cpu::signEncode(g.data(), residual.data(), n, bucket, codes.data(), scales.data());

  DeviceBuffer<float> dG(g), dResidual(e), dScales(buckets);
  DeviceBuffer<uint8_t> dCodes(codes.size());
  Scratch scratch(cuda::signEncodeScratchBytes(n, bucket));
  ASSERT_OK(cuda::signEncode(dG.get(), dResidual.get(), n, bucket, scratch.get(), dCodes.get(),
                             dScales.get(), nullptr));
  EXPECT_EQ(firstDifference(dCodes.download(), codes), "") << "codes";
  const auto gotScales = dScales.download();
  bool same = true;
  for (int64_t b = 0; b < buckets; ++b) {
    ASSERT_LE(ulpDistance(gotScales[b], scales[b]), 1) << "scale of bucket " << b;
    same = same && sameValue(gotScales[b], scales[b]);
  }
  if (bucket <= cuda::kQsgdSequentialBucket) {
    ASSERT_TRUE(same) << "a short bucket's scale differs from the CPU's";
  }
  const auto got = dResidual.download();
  if (same) {
    EXPECT_EQ(firstDifference(got, residual), "") << "residual";
    return;
  }
  std::printf("note: a scale is one ulp from the CPU's\n");
  for (int64_t i = 0; i < n; ++i) {
    const float scale = std::fabs(scales[i / bucket]);
    const float ulp = std::nextafter(scale, kInf) - scale;
    ASSERT_LE(std::fabs(got[i] - residual[i]), 2 * ulp) << "residual at " << i;
  }
}

TEST(CudaSignEncode, MatchesTheCpuOnAwkwardSizes) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes)
    for (int64_t bucket : {int64_t{64}, int64_t{512}, n})
      expectSign(randomVector(n, 4501 + n), randomVector(n, 4601 + n, -0.1f, 0.1f), bucket);
  // Zeros (sent as positive) and a NaN (its bucket's scale NaN).
  expectSign(std::vector<float>(4097, 0.f), std::vector<float>(4097, 0.f), 64);
  auto g = randomVector(4097, 4701);
  g[77] = kNan;
  expectSign(g, std::vector<float>(4097, 0.f), 64);
  expectSign(g, std::vector<float>(4097, 0.f), 4097);
}

TEST(CudaSignDecode, SumsEveryRanksPayloadAsTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{4097}}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const int ranks = 3;
    const int64_t bucket = 64, buckets = cpu::bucketCount(n, bucket);
    std::vector<uint8_t> codes;
    std::vector<float> scales;
    for (int r = 0; r < ranks; ++r) {
      auto g = randomVector(n, 4801 + r);
      std::vector<float> residual(n, 0.f), sc(buckets);
      std::vector<uint8_t> c(cpu::signCodeBytes(n));
      cpu::signEncode(g.data(), residual.data(), n, bucket, c.data(), sc.data());
      codes.insert(codes.end(), c.begin(), c.end());
      scales.insert(scales.end(), sc.begin(), sc.end());
    }
    const auto base = randomVector(n, 4802);
    std::vector<float> out = base;
    cpu::signDecode(codes.data(), scales.data(), ranks, n, bucket, 0.37f, out.data());
    DeviceBuffer<uint8_t> dCodes(codes);
    DeviceBuffer<float> dScales(scales), dOut(base);
    ASSERT_OK(cuda::signDecode(dCodes.get(), dScales.get(), ranks, n, bucket, 0.37f, dOut.get(),
                               nullptr));
    EXPECT_EQ(firstDifference(dOut.download(), out), "");
  }
}

TEST(CudaMomentum, AccumulatesAsTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 4097;
  const auto g = randomVector(n, 4901);
  auto u = randomVector(n, 4902);
  DeviceBuffer<float> dG(g), dU(u);
  ASSERT_OK(cuda::accumulateMomentum(dG.get(), dU.get(), n, 0.9f, nullptr));
  cpu::accumulateMomentum(g.data(), u.data(), n, 0.9f);
  EXPECT_EQ(firstDifference(dU.download(), u), "");
}

// DGC under AdamW: the moments and the update bit for bit over steps, with a
// device scale (DGC's clipping factor) and without.
TEST(CudaAdamUpdate, MatchesTheCpuOverSteps) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t n : kSizes) {
    SCOPED_TRACE("n " + std::to_string(n));
    std::vector<float> m(n, 0.f), s(n, 0.f), update(n);
    DeviceBuffer<float> dM(m), dS(s), dUpdate(n), dGrad(n), dScale(std::vector<float>{0.37f});
    for (int64_t t = 1; t <= 3; ++t) {
      const auto grad = randomVector(n, 6801 + t + n);
      const bool scaled = t % 2 == 1;
      cpu::adamUpdate(grad.data(), scaled ? 0.37f : 1.0f, m.data(), s.data(), update.data(), n,
                      0.9f, 0.99f, 1e-8f, t, 0.5f);
      ASSERT_CUDA(cudaMemcpy(dGrad.get(), grad.data(), n * sizeof(float), cudaMemcpyHostToDevice));
      ASSERT_OK(cuda::adamUpdate(dGrad.get(), scaled ? dScale.get() : nullptr, dM.get(), dS.get(),
                                 dUpdate.get(), n, 0.9f, 0.99f, 1e-8f, t, 0.5f, nullptr));
      ASSERT_EQ(firstDifference(dM.download(), m), "") << "m, step " << t;
      ASSERT_EQ(firstDifference(dS.download(), s), "") << "s, step " << t;
      ASSERT_EQ(firstDifference(dUpdate.download(), update), "") << "update, step " << t;
    }
  }
  EXPECT_FALSE(cuda::adamUpdate(nullptr, nullptr, nullptr, nullptr, nullptr, 4, 0.9f, 0.99f, 1e-8f,
                                0, 1.0f, nullptr))
      << "step 0";
}

// ---------------------------------------------------------------- 2-bit values

// Where the GPU's table is the CPU's (the usual case), the same codes and
// unsent; else the table within an ulp and codes differing only on a bin
// boundary (a handful).
void expectTwoBit(const std::vector<float> &val) {
  const int64_t k = static_cast<int64_t>(val.size());
  SCOPED_TRACE("k " + std::to_string(k));
  std::vector<uint8_t> codes(cpu::twoBitCodeBytes(k));
  std::vector<float> table(cpu::kTwoBitTableFloats), unsent(k);
  cpu::twoBitEncode(val.data(), k, codes.data(), table.data(), unsent.data());

  DeviceBuffer<float> dVal(val), dTable(table.size()), dUnsent(k);
  DeviceBuffer<uint8_t> dCodes(codes.size());
  Scratch scratch(cuda::twoBitEncodeScratchBytes(k));
  ASSERT_OK(cuda::twoBitEncode(dVal.get(), k, cpu::kTwoBitRangeInSigmas, scratch.get(),
                               dCodes.get(), dTable.get(), dUnsent.get(), nullptr));
  const auto gotTable = dTable.download();
  const auto gotCodes = dCodes.download();
  if (firstDifference(gotTable, table).empty()) {
    EXPECT_EQ(firstDifference(gotCodes, codes), "") << "codes";
    EXPECT_EQ(firstDifference(dUnsent.download(), unsent), "") << "unsent";
    return;
  }
  std::printf("note: the 2-bit table differs from the CPU's in the last bits\n");
  EXPECT_LE(ulpDistance(gotTable[0], table[0]), 1) << "shift";
  int64_t differentCodes = 0;
  for (int64_t j = 0; j < k; ++j)
    differentCodes += ((gotCodes[j / 4] ^ codes[j / 4]) >> (2 * (j % 4)) & 3) != 0;
  EXPECT_LE(differentCodes, 2 + k / 10000);
  for (int b = 1; b < cpu::kTwoBitTableFloats; ++b)
    EXPECT_NEAR(gotTable[b], table[b], 1e-5 * (std::fabs(table[b]) + 1e-3)) << "bin " << b - 1;
}

TEST(CudaTwoBitEncode, MatchesTheCpuOnAwkwardSizes) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t k : {int64_t{1}, int64_t{2}, int64_t{7}, int64_t{4097}, int64_t{(1 << 20) + 3}}) {
    // Top-k values: heavy tails of both signs, shifted off zero.
    auto val = randomVector(k, 4901 + k);
    for (float &x : val)
      x = 0.01f + x * x * x;
    expectTwoBit(val);
  }
  expectTwoBit(std::vector<float>(4097, 0.25f)); // sigma 0: step 1
  auto val = randomVector(4097, 4902);
  val[9] = kNan;
  expectTwoBit(val); // shift NaN, every code 0
}

TEST(CudaTwoBitDecode, DecodesEveryRanksPayloadAsTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  for (int64_t k : {int64_t{1}, int64_t{7}, int64_t{4097}}) {
    SCOPED_TRACE("k " + std::to_string(k));
    const int ranks = 3;
    std::vector<uint8_t> codes;
    std::vector<float> tables;
    for (int r = 0; r < ranks; ++r) {
      const auto val = randomVector(k, 5001 + r);
      std::vector<uint8_t> c(cpu::twoBitCodeBytes(k));
      std::vector<float> t(cpu::kTwoBitTableFloats);
      cpu::twoBitEncode(val.data(), k, c.data(), t.data(), nullptr);
      codes.insert(codes.end(), c.begin(), c.end());
      tables.insert(tables.end(), t.begin(), t.end());
    }
    std::vector<float> out(ranks * k);
    cpu::twoBitDecode(codes.data(), tables.data(), ranks, k, out.data());
    DeviceBuffer<uint8_t> dCodes(codes);
    DeviceBuffer<float> dTables(tables), dOut(ranks * k);
    ASSERT_OK(cuda::twoBitDecode(dCodes.get(), dTables.get(), ranks, k, dOut.get(), nullptr));
    EXPECT_EQ(firstDifference(dOut.download(), out), "");
  }
}

// ---------------------------------------------------------------- arguments

TEST(CudaCompression, EmptyInputs) {
  SBPFLOW_REQUIRE_GPU();
  ASSERT_OK(cuda::topkEncode(nullptr, nullptr, 0, 0, nullptr, nullptr, nullptr, nullptr));
  ASSERT_OK(cuda::dgcEncode(nullptr, nullptr, nullptr, 0, 0, 0.9f, nullptr, nullptr, nullptr,
                            nullptr, nullptr));
  ASSERT_OK(cuda::randomkIndices(0, 0, 1, 1, nullptr, nullptr, nullptr));
  ASSERT_OK(cuda::randomkEncode(nullptr, 5, 0, nullptr, nullptr, nullptr));
  ASSERT_OK(cuda::orthogonalizeColumns(nullptr, 0, 3, nullptr));
  ASSERT_OK(cuda::qsgdEncode(nullptr, 0, 4, 16, 1, 1, nullptr, nullptr, nullptr, nullptr));
  ASSERT_OK(cuda::qsgdDecode(nullptr, nullptr, 0, 9, 4, 16, 1.f, nullptr, nullptr));
  ASSERT_OK(cuda::signDecode(nullptr, nullptr, 0, 9, 64, 1.f, nullptr, nullptr));
  ASSERT_OK(cuda::accumulateMomentum(nullptr, nullptr, 0, 0.9f, nullptr));
  ASSERT_OK(cuda::twoBitDecode(nullptr, nullptr, 3, 0, nullptr, nullptr));
  // k = 0 still accumulates (top-k) and applies momentum (DGC).
  const std::vector<float> grad = {1.f, -2.f, 3.f};
  DeviceBuffer<float> dGrad(grad), dResidual(std::vector<float>{0.5f, 0.5f, 0.5f}),
      dU(std::vector<float>(3, 1.f)), dV(std::vector<float>(3, 0.f));
  DeviceBuffer<int64_t> dChosen(std::vector<int64_t>{-5});
  ASSERT_OK(
      cuda::topkEncode(dGrad.get(), dResidual.get(), 3, 0, nullptr, nullptr, nullptr, nullptr));
  ASSERT_OK(cuda::dgcEncode(dGrad.get(), dU.get(), dV.get(), 3, 0, 0.5f, nullptr, nullptr, nullptr,
                            dChosen.get(), nullptr));
  EXPECT_EQ(dResidual.download(), (std::vector<float>{1.5f, -1.5f, 3.5f}));
  EXPECT_EQ(dU.download(), (std::vector<float>{1.5f, -1.5f, 3.5f}));
  EXPECT_EQ(dV.download(), (std::vector<float>{1.5f, -1.5f, 3.5f}));
  EXPECT_EQ(dChosen.download()[0], 0);
}

// Bad arguments are refused before anything is launched (no device needed).
TEST(CudaCompression, BadArgumentsAreErrors) {
  EXPECT_FALSE(cuda::topkEncode(nullptr, nullptr, 5, 6, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::topkEncode(nullptr, nullptr, 5, -1, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(
      cuda::topkEncode(nullptr, nullptr, int64_t{1} << 31, 1, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::dgcEncode(nullptr, nullptr, nullptr, 5, 6, 0.9f, nullptr, nullptr, nullptr,
                               nullptr, nullptr));
  EXPECT_FALSE(cuda::randomkIndices(5, 6, 1, 1, nullptr, nullptr, nullptr));
  EXPECT_FALSE(
      cuda::scatterAddPairs(nullptr, nullptr, -1, 3, 1.f, nullptr, 5, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::qsgdEncode(nullptr, 9, 0, 16, 1, 1, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::qsgdEncode(nullptr, 9, 128, 16, 1, 1, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::qsgdEncode(nullptr, 9, 4, 0, 1, 1, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::signEncode(nullptr, nullptr, 0, 64, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::signEncode(nullptr, nullptr, 9, 0, nullptr, nullptr, nullptr, nullptr));
  EXPECT_FALSE(cuda::signDecode(nullptr, nullptr, 1, 9, 0, 1.f, nullptr, nullptr));
  EXPECT_FALSE(cuda::twoBitEncode(nullptr, 0, 6.f, nullptr, nullptr, nullptr, nullptr, nullptr));
  const Status s = cuda::topkEncode(nullptr, nullptr, 5, 6, nullptr, nullptr, nullptr, nullptr);
  EXPECT_NE(s.message().find("topkEncode"), std::string::npos) << s.message();
}

// The scratch sizes are host arithmetic: they grow with n and cover the
// tiles of the compaction.
TEST(CudaCompression, ScratchSizes) {
  EXPECT_GT(cuda::topkScratchBytes(1), 0u);
  EXPECT_GT(cuda::topkScratchBytes((1 << 20) + 3), cuda::topkScratchBytes(4097));
  EXPECT_GE(cuda::topkScratchBytes((1 << 20) + 3), 2 * sizeof(uint32_t) * ((1 << 20) / 2048));
  EXPECT_GT(cuda::dgcScratchBytes(4097), cuda::topkScratchBytes(4097));
  EXPECT_GE(cuda::randomkScratchBytes(4097, 41), 4097 * sizeof(int32_t) + 41 * sizeof(int32_t));
  EXPECT_EQ(cuda::scatterAddPairsScratchBytes(3), 3 * sizeof(int64_t));
  EXPECT_EQ(cuda::qsgdEncodeScratchBytes(4097, 512), 0u);
  EXPECT_GT(cuda::qsgdEncodeScratchBytes(4097, 513), 0u);
  EXPECT_EQ(cuda::signEncodeScratchBytes(4097, 512), 0u);
  EXPECT_GT(cuda::signEncodeScratchBytes(4097, 4097), 0u);
  EXPECT_GT(cuda::twoBitEncodeScratchBytes(7), 0u);
}

} // namespace
} // namespace sbpflow::test
