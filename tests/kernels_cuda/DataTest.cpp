// The data-movement CUDA kernels against kernels/cpu: copies must agree bit
// for bit, and so must the dropout mask, element for element, on a split
// region.
#include "kernels/cuda/Data.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "tests/kernels/RandomVector.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <utility>

namespace sbpflow::test {
namespace {

using Dims = std::vector<int64_t>;

int64_t product(const Dims &d) {
  int64_t p = 1;
  for (int64_t v : d)
    p *= v;
  return p;
}

// Ids uniform in [lo, hi).
std::vector<int32_t> randomIds(int64_t n, uint64_t seed, int64_t lo, int64_t hi) {
  auto u = randomVector(n, seed, 0.f, 1.f);
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i)
    ids[i] = static_cast<int32_t>(
        std::min<int64_t>(hi - 1, lo + static_cast<int64_t>(u[i] * (hi - lo))));
  return ids;
}

template <class T> void embeddingMatchesCpu() {
  const int64_t vocab = 97;
  // The whole table, and the middle rank's rows of a vocabulary split in three.
  for (auto [rowBegin, tableRows] : {std::pair<int64_t, int64_t>{0, 97}, {33, 32}}) {
    for (int64_t dim : {1, 33, 256}) {
      for (int64_t n : {1, 1000}) {
        SCOPED_TRACE("rows [" + std::to_string(rowBegin) + ", " +
                     std::to_string(rowBegin + tableRows) + "), dim " + std::to_string(dim) +
                     ", n " + std::to_string(n));
        auto table = representable<T>(randomVector(tableRows * dim, 201));
        auto ids = randomIds(n, 202, 0, vocab);
        std::vector<float> want(n * dim);
        ASSERT_EQ(cpu::embedding(table.data(), tableRows, rowBegin, vocab, ids.data(), n, dim,
                                 want.data()),
                  -1);
        DeviceBuffer<T> dtable(asStorage<T>(table)),
            out(asStorage<T>(std::vector<float>(n * dim, 5.f)));
        DeviceBuffer<int32_t> dids(ids);
        DeviceBuffer<int64_t> bad(std::vector<int64_t>{42});
        ASSERT_OK(cuda::embedding(dtable.get(), tableRows, rowBegin, vocab, dids.get(), n, dim,
                                  out.get(), bad.get(), nullptr));
        EXPECT_EQ(bad.download()[0], -1);
        EXPECT_EQ(asFloat<T>(out.download()), want);
      }
    }
  }
}

TEST(CudaData, EmbeddingF32) {
  SBPFLOW_REQUIRE_GPU();
  embeddingMatchesCpu<float>();
}

TEST(CudaData, EmbeddingBf16) {
  SBPFLOW_REQUIRE_GPU();
  embeddingMatchesCpu<bf16>();
}

TEST(CudaData, EmbeddingReportsTheFirstBadId) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t vocab = 97, n = 300;
  for (int64_t dim : {0, 1, 33}) {
    SCOPED_TRACE("dim " + std::to_string(dim));
    auto table = randomVector(vocab * dim, 211);
    auto ids = randomIds(n, 212, 0, vocab);
    ids[9] = static_cast<int32_t>(vocab);
    ids[5] = -3;
    ids[200] = 1 << 30;
    std::vector<float> want(n * dim);
    const int64_t wantBad =
        cpu::embedding(table.data(), vocab, 0, vocab, ids.data(), n, dim, want.data());
    ASSERT_EQ(wantBad, 5);
    DeviceBuffer<float> dtable(table), out(n * dim);
    DeviceBuffer<int32_t> dids(ids);
    DeviceBuffer<int64_t> bad(std::vector<int64_t>{42});
    ASSERT_OK(cuda::embedding(dtable.get(), vocab, 0, vocab, dids.get(), n, dim, out.get(),
                              bad.get(), nullptr));
    EXPECT_EQ(bad.download()[0], wantBad);
    EXPECT_EQ(out.download(), want); // bad rows are 0
  }
}

template <class T> void embeddingGradMatchesCpu() {
  const int64_t rowBegin = 33, tableRows = 32;
  for (int64_t dim : {1, 33, 256}) {
    for (int64_t n : {1, 1000}) {
      SCOPED_TRACE("dim " + std::to_string(dim) + ", n " + std::to_string(n));
      // Multiples of 1/64 in [-1, 1] (exact in bf16): sums of up to 1000 are
      // exact in fp32, so the atomics' order does not show. Ids crowd a few
      // rows (many collisions), some outside this rank's rows.
      auto dy = randomVector(n * dim, 221);
      for (float &v : dy)
        v = std::round(v * 64.f) / 64.f;
      auto ids = randomIds(n, 222, rowBegin - 4, rowBegin + 12);
      std::vector<float> want(tableRows * dim);
      cpu::embeddingGrad(dy.data(), ids.data(), n, dim, want.data(), tableRows, rowBegin);
      DeviceBuffer<T> ddy(asStorage<T>(dy));
      DeviceBuffer<int32_t> dids(ids);
      DeviceBuffer<float> dtable(std::vector<float>(tableRows * dim, 5.f));
      ASSERT_OK(cuda::embeddingGrad(ddy.get(), dids.get(), n, dim, dtable.get(), tableRows,
                                    rowBegin, nullptr));
      EXPECT_EQ(dtable.download(), want);
    }
  }
}

TEST(CudaData, EmbeddingGradF32) {
  SBPFLOW_REQUIRE_GPU();
  embeddingGradMatchesCpu<float>();
}

TEST(CudaData, EmbeddingGradBf16) {
  SBPFLOW_REQUIRE_GPU();
  embeddingGradMatchesCpu<bf16>();
}

struct DropoutCase {
  Dims global, begin, size;
};

template <class T> void dropoutMatchesCpu() {
  const DropoutCase cases[] = {
      // One rank's block of a [6, 7, 129] tensor split on axes 0 and 2.
      {{6, 7, 129}, {2, 0, 40}, {3, 7, 50}},
      // The whole tensor.
      {{6, 7, 129}, {0, 0, 0}, {6, 7, 129}},
      // Global indices past 2^32 (the counter's second word).
      {{70000, 70000}, {69999, 69000}, {1, 1000}},
      {{1000003}, {17}, {999983}},
      // A scalar.
      {{}, {}, {}},
  };
  const uint64_t seed = 0x0123456789abcdefull;
  for (const DropoutCase &c : cases) {
    const int rank = static_cast<int>(c.global.size());
    const int64_t n = product(c.size);
    for (float p : {0.1f, 0.5f, 0.9f, 0.f}) {
      SCOPED_TRACE("rank " + std::to_string(rank) + ", n " + std::to_string(n) + ", p " +
                   std::to_string(p));
      // No zeros in x: y is 0 exactly where the mask drops.
      auto x = representable<T>(randomVector(n, 231, 0.5f, 1.5f));
      std::vector<float> want(n);
      cpu::dropout(x.data(), want.data(), c.global.data(), c.begin.data(), c.size.data(), rank, p,
                   seed, 7, 3);
      DeviceBuffer<T> dx(asStorage<T>(x)), dy(n);
      ASSERT_OK(cuda::dropout(dx.get(), dy.get(), c.global.data(), c.begin.data(), c.size.data(),
                              rank, p, seed, 7, 3, nullptr));
      const std::vector<float> got = asFloat<T>(dy.download());
      // One fp32 multiply on both sides, then T's rounding: the same bits.
      EXPECT_EQ(got, representable<T>(want));
      int64_t dropped = 0;
      for (int64_t i = 0; i < n; ++i)
        dropped += got[i] == 0.f;
      if (p == 0.f) {
        EXPECT_EQ(dropped, 0);
      } else if (n >= 1000) { // the mask is not trivial
        EXPECT_TRUE(dropped > 0 && dropped < n) << dropped << " of " << n << " dropped";
      }
      // In place: the same result.
      ASSERT_OK(cuda::dropout(dx.get(), dx.get(), c.global.data(), c.begin.data(), c.size.data(),
                              rank, p, seed, 7, 3, nullptr));
      EXPECT_EQ(asFloat<T>(dx.download()), got);
    }
  }
}

TEST(CudaData, DropoutMaskIsTheCpusF32) {
  SBPFLOW_REQUIRE_GPU();
  dropoutMatchesCpu<float>();
}

TEST(CudaData, DropoutMaskIsTheCpusBf16) {
  SBPFLOW_REQUIRE_GPU();
  dropoutMatchesCpu<bf16>();
}

TEST(CudaData, DropoutMaskDoesNotDependOnTheSplit) {
  SBPFLOW_REQUIRE_GPU();
  // The whole tensor's result, narrowed to a block, is the block's result.
  const Dims global = {6, 7, 129}, whole = {0, 0, 0}, begin = {2, 3, 40}, size = {3, 4, 50};
  const int64_t n = product(global), m = product(size);
  auto x = randomVector(n, 241, 0.5f, 1.5f);
  DeviceBuffer<float> dx(x), dy(n), block(m), narrowed(m), blockY(m);
  ASSERT_OK(cuda::dropout(dx.get(), dy.get(), global.data(), whole.data(), global.data(), 3, 0.3f,
                          99, 1, 2, nullptr));
  ASSERT_OK(cuda::copyRegion(dy.get(), global.data(), begin.data(), size.data(), 3, narrowed.get(),
                             nullptr));
  ASSERT_OK(cuda::copyRegion(dx.get(), global.data(), begin.data(), size.data(), 3, block.get(),
                             nullptr));
  ASSERT_OK(cuda::dropout(block.get(), blockY.get(), global.data(), begin.data(), size.data(), 3,
                          0.3f, 99, 1, 2, nullptr));
  EXPECT_EQ(blockY.download(), narrowed.download());
  // Another batch draws another mask.
  ASSERT_OK(cuda::dropout(block.get(), blockY.get(), global.data(), begin.data(), size.data(), 3,
                          0.3f, 99, 2, 2, nullptr));
  EXPECT_NE(blockY.download(), narrowed.download());
}

struct RegionCase {
  Dims shape, begin, size;
};

const RegionCase kRegions[] = {
    {{5, 1, 7, 33}, {1, 0, 2, 3}, {3, 1, 4, 29}},
    {{100}, {37}, {50}},
    {{1000003}, {0}, {1000003}},
    {{2, 1, 3, 1, 2, 1, 2, 3}, {1, 0, 1, 0, 0, 0, 1, 1}, {1, 1, 2, 1, 2, 1, 1, 2}},
    {{4, 300, 17}, {0, 299, 16}, {4, 1, 1}},
    {{}, {}, {}},
};

template <class T> void regionCopiesMatchCpu() {
  for (const RegionCase &c : kRegions) {
    const int rank = static_cast<int>(c.shape.size());
    const int64_t full = product(c.shape), part = product(c.size);
    SCOPED_TRACE("rank " + std::to_string(rank) + ", " + std::to_string(part) + " of " +
                 std::to_string(full));
    auto src = representable<T>(randomVector(full, 251));
    std::vector<float> want(part);
    cpu::copyRegion(src.data(), c.shape.data(), c.begin.data(), c.size.data(), rank, want.data());
    DeviceBuffer<T> dsrc(asStorage<T>(src)), dst(part);
    ASSERT_OK(cuda::copyRegion(dsrc.get(), c.shape.data(), c.begin.data(), c.size.data(), rank,
                               dst.get(), nullptr));
    EXPECT_EQ(asFloat<T>(dst.download()), want);

    // Back into a tensor that keeps its other elements.
    auto block = representable<T>(randomVector(part, 252));
    auto into = representable<T>(randomVector(full, 253));
    DeviceBuffer<T> dblock(asStorage<T>(block)), dinto(asStorage<T>(into));
    cpu::copyIntoRegion(block.data(), c.begin.data(), c.size.data(), into.data(), c.shape.data(),
                        rank);
    ASSERT_OK(cuda::copyIntoRegion(dblock.get(), c.begin.data(), c.size.data(), dinto.get(),
                                   c.shape.data(), rank, nullptr));
    EXPECT_EQ(asFloat<T>(dinto.download()), into);
  }
}

TEST(CudaData, RegionCopiesF32) {
  SBPFLOW_REQUIRE_GPU();
  regionCopiesMatchCpu<float>();
}

TEST(CudaData, RegionCopiesBf16) {
  SBPFLOW_REQUIRE_GPU();
  regionCopiesMatchCpu<bf16>();
}

struct TransposeCase {
  Dims shape;
  std::vector<int> perm;
};

template <class T> void transposeMatchesCpu() {
  const TransposeCase cases[] = {
      {{37, 129}, {1, 0}},           // tiled, partial tiles
      {{4, 33, 65}, {0, 2, 1}},      // tiled, batched
      {{3, 2100001}, {1, 0}},        // tiled, one row of tiles
      {{2097153, 2}, {1, 0}},        // too many row tiles for the grid: generic
      {{3, 5, 7, 11}, {2, 0, 3, 1}}, // generic
      {{2, 3, 1, 2, 3, 2, 1, 2}, {7, 6, 5, 4, 3, 2, 1, 0}}, // rank 8
      {{8, 5, 3}, {1, 0, 2}},                               // last axis kept (heads <-> time)
      {{1000003}, {0}},                                     // identity: a copy
      {{5, 6}, {0, 1}},
  };
  for (const TransposeCase &c : cases) {
    const int rank = static_cast<int>(c.shape.size());
    const int64_t n = product(c.shape);
    SCOPED_TRACE("rank " + std::to_string(rank) + ", " + std::to_string(n) + " elements");
    auto x = representable<T>(randomVector(n, 261));
    std::vector<float> want(n);
    cpu::transpose(x.data(), want.data(), c.shape.data(), c.perm.data(), rank);
    DeviceBuffer<T> dx(asStorage<T>(x)), dy(n);
    ASSERT_OK(cuda::transpose(dx.get(), dy.get(), c.shape.data(), c.perm.data(), rank, nullptr));
    EXPECT_EQ(asFloat<T>(dy.download()), want);
  }
}

TEST(CudaData, TransposeF32) {
  SBPFLOW_REQUIRE_GPU();
  transposeMatchesCpu<float>();
}

TEST(CudaData, TransposeBf16) {
  SBPFLOW_REQUIRE_GPU();
  transposeMatchesCpu<bf16>();
}

TEST(CudaData, BadArgumentsAreErrors) {
  SBPFLOW_REQUIRE_GPU();
  const Dims shape = {2, 3}, nine(9, 1), zeros(9, 0);
  const std::vector<int> repeated = {0, 0};
  EXPECT_FALSE(
      cuda::transpose<float>(nullptr, nullptr, shape.data(), repeated.data(), 2, nullptr).isOk());
  const std::vector<int> nineAxes = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_FALSE(
      cuda::transpose<float>(nullptr, nullptr, nine.data(), nineAxes.data(), 9, nullptr).isOk());
  EXPECT_FALSE(
      cuda::copyRegion<float>(nullptr, nine.data(), zeros.data(), nine.data(), 9, nullptr, nullptr)
          .isOk());
  EXPECT_FALSE(cuda::dropout<float>(nullptr, nullptr, nine.data(), zeros.data(), nine.data(), 9,
                                    0.5f, 1, 0, 0, nullptr)
                   .isOk());
  // Empty regions launch nothing.
  const Dims empty = {2, 0};
  ASSERT_OK(cuda::copyRegion<float>(nullptr, shape.data(), zeros.data(), empty.data(), 2, nullptr,
                                    nullptr));
  ASSERT_OK(cuda::embeddingGrad<float>(nullptr, nullptr, 0, 4, nullptr, 0, 0, nullptr));
}

} // namespace
} // namespace sbpflow::test
