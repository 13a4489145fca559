// Softmax and the fused causal attention kernels against cpu::softmax /
// softmaxGrad / causalAttention / causalAttentionGrad on random inputs, in
// fp32 and bf16.
#include "kernels/cuda/Attention.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

namespace sbpflow::test {
namespace {

std::vector<float> nans(int64_t n) { return std::vector<float>(n, NAN); }

const std::pair<int64_t, int64_t> kSoftmaxShapes[] = {{1, 1}, {7, 129}, {333, 1031}, {3, 5000}};

template <class T> void softmaxMatchesCpu(double tolerance) {
  uint64_t seed = 1;
  for (auto [rows, cols] : kSoftmaxShapes) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    const int64_t n = rows * cols;
    auto x = representable<T>(randomVector(n, seed++, -4.f, 4.f));
    auto dy = representable<T>(randomVector(n, seed++));
    std::vector<float> want(n), wantDx(n);
    cpu::softmax(x.data(), want.data(), rows, cols);
    DeviceBuffer<T> dX(asStorage<T>(x)), dY(asStorage<T>(nans(n)));
    ASSERT_OK(cuda::softmax(dX.get(), dY.get(), rows, cols, nullptr));
    auto y = asFloat<T>(dY.download());
    // Positive weights, no cancellation: elementwise.
    EXPECT_LE(maxRelativeError(y, want), tolerance);
    // In place.
    ASSERT_OK(cuda::softmax(dX.get(), dX.get(), rows, cols, nullptr));
    EXPECT_EQ(asFloat<T>(dX.download()), y);

    // The backward of the weights T holds.
    cpu::softmaxGrad(dy.data(), y.data(), wantDx.data(), rows, cols);
    DeviceBuffer<T> dDy(asStorage<T>(dy)), dDx(asStorage<T>(nans(n)));
    ASSERT_OK(cuda::softmaxGrad(dDy.get(), dY.get(), dDx.get(), rows, cols, nullptr));
    // dy - sum(dy y) cancels near zero: fp32 relative to the largest
    // element; bf16 rounds each result once, elementwise.
    auto dx = asFloat<T>(dDx.download());
    if constexpr (std::is_same_v<T, bf16>)
      EXPECT_LE(maxRelativeError(dx, wantDx), tolerance);
    else
      EXPECT_LE(normRelativeError(dx, wantDx), tolerance);
  }
}

SBPFLOW_TEST_BOTH_PRECISIONS(CudaSoftmax, MatchesCpu, softmaxMatchesCpu)

struct AttnShape {
  int64_t batch, T, heads, D;
  int64_t n() const { return batch * T * heads * D; }
  std::string str() const {
    return "batch=" + std::to_string(batch) + " T=" + std::to_string(T) +
           " heads=" + std::to_string(heads) + " D=" + std::to_string(D);
  }
};
// The required shapes; then a head dimension that is not a multiple of 32,
// the largest one (128, tiles of 16 rows), and a long sequence (32 tiles).
const AttnShape kAttnShapes[] = {{1, 1, 1, 8},   {2, 7, 3, 16},    {2, 65, 4, 32},  {1, 257, 2, 64},
                                 {2, 19, 2, 40}, {1, 100, 3, 128}, {1, 1024, 2, 32}};

// log sum_{j <= i} exp(q_i . k_j / sqrt(D)) per (b, h, i), in double.
std::vector<float> referenceLse(const std::vector<float> &q, const std::vector<float> &k,
                                const AttnShape &s) {
  const int64_t C = s.heads * s.D;
  std::vector<float> lse(s.batch * s.heads * s.T);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.T; ++i) {
        std::vector<double> scores(i + 1);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < s.D; ++d)
            dot += static_cast<double>(q[b * s.T * C + i * C + h * s.D + d]) *
                   k[b * s.T * C + j * C + h * s.D + d];
          scores[j] = dot / std::sqrt(static_cast<double>(s.D));
          mx = std::max(mx, scores[j]);
        }
        double sum = 0;
        for (double x : scores)
          sum += std::exp(x - mx);
        lse[(b * s.heads + h) * s.T + i] = static_cast<float>(mx + std::log(sum));
      }
  return lse;
}

template <class T> void attentionMatchesCpu(double tolerance) {
  uint64_t seed = 1000;
  for (const AttnShape &s : kAttnShapes) {
    SCOPED_TRACE(s.str());
    const int64_t n = s.n();
    auto q = representable<T>(randomVector(n, seed++, -2.f, 2.f));
    auto k = representable<T>(randomVector(n, seed++, -2.f, 2.f));
    auto v = representable<T>(randomVector(n, seed++));
    auto dy = representable<T>(randomVector(n, seed++));
    std::vector<float> scratch(cpu::causalAttentionScratch(s.T, s.D));
    std::vector<float> want(n), wantDq(n), wantDk(n), wantDv(n);
    cpu::causalAttention(q.data(), k.data(), v.data(), want.data(), s.batch, s.T, s.heads, s.D,
                         scratch.data());
    cpu::causalAttentionGrad(dy.data(), q.data(), k.data(), v.data(), wantDq.data(), wantDk.data(),
                             wantDv.data(), s.batch, s.T, s.heads, s.D, scratch.data());

    DeviceBuffer<T> dQ(asStorage<T>(q)), dK(asStorage<T>(k)), dV(asStorage<T>(v));
    DeviceBuffer<T> dDy(asStorage<T>(dy)), dY(asStorage<T>(nans(n)));
    const int64_t lseSize = cuda::causalAttentionLseSize(s.batch, s.T, s.heads);
    ASSERT_EQ(lseSize, s.batch * s.heads * s.T);
    DeviceBuffer<float> lse(nans(lseSize));
    ASSERT_OK(cuda::causalAttention(dQ.get(), dK.get(), dV.get(), dY.get(), lse.get(), s.batch, s.T,
                                    s.heads, s.D, nullptr));
    EXPECT_LE(normRelativeError(asFloat<T>(dY.download()), want), tolerance) << "y";
    // lse is fp32 from the values T holds: fp32 accuracy in every precision.
    EXPECT_LE(normRelativeError(lse.download(), referenceLse(q, k, s)), kF32Tolerance) << "lse";

    // The backward reads the forward's y and lse, as in training.
    DeviceBuffer<T> dDq(asStorage<T>(nans(n))), dDk(asStorage<T>(nans(n))),
        dDv(asStorage<T>(nans(n)));
    ASSERT_OK(cuda::causalAttentionGrad(dDy.get(), dQ.get(), dK.get(), dV.get(), dY.get(),
                                        lse.get(), dDq.get(), dDk.get(), dDv.get(), s.batch, s.T,
                                        s.heads, s.D, nullptr));
    auto dq = asFloat<T>(dDq.download()), dk = asFloat<T>(dDk.download()),
         dv = asFloat<T>(dDv.download());
    EXPECT_LE(normRelativeError(dq, wantDq), tolerance) << "dq";
    EXPECT_LE(normRelativeError(dk, wantDk), tolerance) << "dk";
    EXPECT_LE(normRelativeError(dv, wantDv), tolerance) << "dv";
    // Deterministic: the same bits again.
    ASSERT_OK(cuda::causalAttentionGrad(dDy.get(), dQ.get(), dK.get(), dV.get(), dY.get(),
                                        lse.get(), dDq.get(), dDk.get(), dDv.get(), s.batch, s.T,
                                        s.heads, s.D, nullptr));
    EXPECT_EQ(asFloat<T>(dDq.download()), dq);
    EXPECT_EQ(asFloat<T>(dDk.download()), dk);
    EXPECT_EQ(asFloat<T>(dDv.download()), dv);
  }
}

SBPFLOW_TEST_BOTH_PRECISIONS(CudaAttention, MatchesCpu, attentionMatchesCpu)

TEST(CudaAttention, LaterRowsDoNotChangeEarlierOutputs) {
  SBPFLOW_REQUIRE_GPU();
  // Causality inside a tile and across tiles: y of rows before `cut` is the
  // same bits whatever q, k, v hold from `cut` on.
  const AttnShape s{2, 45, 2, 32};
  const int64_t n = s.n(), C = s.heads * s.D, cut = 37;
  auto q = randomVector(n, 1), k = randomVector(n, 2), v = randomVector(n, 3);
  DeviceBuffer<float> dQ(q), dK(k), dV(v), dY(n), lse(cuda::causalAttentionLseSize(2, 45, 2));
  ASSERT_OK(cuda::causalAttention(dQ.get(), dK.get(), dV.get(), dY.get(), lse.get(), s.batch, s.T,
                                  s.heads, s.D, nullptr));
  auto y1 = dY.download();
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t i = b * s.T * C + cut * C; i < (b + 1) * s.T * C; ++i)
      q[i] = k[i] = v[i] = 1e3f;
  DeviceBuffer<float> dQ2(q), dK2(k), dV2(v);
  // No lse this time: inference needs none.
  ASSERT_OK(cuda::causalAttention(dQ2.get(), dK2.get(), dV2.get(), dY.get(), nullptr, s.batch, s.T,
                                  s.heads, s.D, nullptr));
  auto y2 = dY.download();
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t i = b * s.T * C; i < b * s.T * C + cut * C; ++i)
      ASSERT_EQ(y1[i], y2[i]) << "element " << i;
}

TEST(CudaAttention, RejectsTooLargeHeadDim) {
  SBPFLOW_REQUIRE_GPU();
  Status s = cuda::causalAttention<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 4, 1,
                                          cuda::kMaxAttentionHeadDim + 1, nullptr);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("headDim"), std::string::npos) << s.message();
  // Empty: nothing launched, nothing wrong.
  ASSERT_OK(cuda::causalAttention<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, 0, 1, 32,
                                         nullptr));
  ASSERT_OK(cuda::causalAttentionGrad<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                             nullptr, nullptr, nullptr, 0, 4, 1, 32, nullptr));
}

} // namespace
} // namespace sbpflow::test
