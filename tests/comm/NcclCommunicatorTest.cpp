// NcclCommunicator: every collective (even and uneven counts) against a
// sequential reference, in f32 and then in every element type (F32, BF16,
// I32, U8) with exact references, and send/recv; ranks as threads of one
// process, one GPU each (NCCL forbids two ranks of a communicator on one
// GPU). Skips, saying why, with no GPU; the multi-rank cases need two GPUs or
// more.
#include "runtime/comm/NcclCommunicator.h"
#include "runtime/Shape.h"
#include "tests/comm/CommReference.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <gloo/rendezvous/hash_store.h>
#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <thread>

namespace sbpflow::test {
namespace {

int gpuCount() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

// Input of rank r: element i is r * 1000 + i (exact in fp32 for these sizes).
std::vector<float> input(int r, int64_t n) {
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(r * 1000 + i);
  return x;
}

// Runs body(rank, comm, stream) on `ranks` threads, rank r on GPU r.
void onRanks(int ranks, const std::function<void(int, NcclCommunicator &)> &body) {
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      ASSERT_CUDA(cudaSetDevice(r));
      cudaStream_t stream;
      ASSERT_CUDA(cudaStreamCreate(&stream));
      auto comm = NcclCommunicator::connect(store, "nccl-id", r, ranks, r, stream,
                                            std::chrono::seconds(60), "test group");
      ASSERT_TRUE(comm.isOk()) << comm.status().message();
      body(r, **comm);
      ASSERT_CUDA(cudaStreamSynchronize(stream));
      comm->reset();
      cudaStreamDestroy(stream);
    });
  for (auto &t : threads)
    t.join();
}

void collectives(int ranks, const std::vector<int64_t> &counts) {
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  onRanks(ranks, [&](int r, NcclCommunicator &comm) {
    // all-reduce (sum): element i is sum_q (q * 1000 + i).
    DeviceBuffer<float> buf(input(r, total));
    ASSERT_OK(comm.allReduce(buf.get(), total, plan::DType::F32, ReduceOp::Sum));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    std::vector<float> want(total);
    for (int64_t i = 0; i < total; ++i)
      for (int q = 0; q < ranks; ++q)
        want[i] += static_cast<float>(q * 1000 + i);
    EXPECT_EQ(buf.download(), want);

    // all-gather: rank q contributes counts[q] elements of its input.
    DeviceBuffer<float> mine(input(r, counts[r])), gathered(total);
    ASSERT_OK(comm.allGather(mine.get(), gathered.get(), counts.data(), plan::DType::F32));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    std::vector<float> all;
    for (int q = 0; q < ranks; ++q) {
      auto part = input(q, counts[q]);
      all.insert(all.end(), part.begin(), part.end());
    }
    EXPECT_EQ(gathered.download(), all);

    // reduce-scatter (max): chunk r of the elementwise max, i.e. the last rank's.
    DeviceBuffer<float> full(input(r, total)), chunk(counts[r]);
    ASSERT_OK(comm.reduceScatter(full.get(), chunk.get(), counts.data(), plan::DType::F32,
                                 ReduceOp::Max));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    int64_t begin = std::accumulate(counts.begin(), counts.begin() + r, int64_t{0});
    auto last = input(ranks - 1, total);
    EXPECT_EQ(chunk.download(),
              std::vector<float>(last.begin() + begin, last.begin() + begin + counts[r]));

    // all-to-all: rank r sends counts[q] elements to q, receives counts[r] from each.
    std::vector<int64_t> recvCounts(ranks, counts[r]);
    DeviceBuffer<float> send(input(r, total)), recv(counts[r] * ranks);
    ASSERT_OK(
        comm.allToAll(send.get(), counts.data(), recv.get(), recvCounts.data(), plan::DType::F32));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    std::vector<float> fromEach;
    for (int q = 0; q < ranks; ++q) {
      auto x = input(q, total);
      fromEach.insert(fromEach.end(), x.begin() + begin, x.begin() + begin + counts[r]);
    }
    EXPECT_EQ(recv.download(), fromEach);
  });
}

TEST(NcclCommunicator, OneRank) {
  SBPFLOW_REQUIRE_GPU();
  collectives(1, {1001});
}

TEST(NcclCommunicator, EvenAndUnevenCounts) {
  SBPFLOW_REQUIRE_GPU();
  int ranks = std::min(gpuCount(), 4);
  if (ranks < 2)
    GTEST_SKIP() << "needs 2 GPUs or more (NCCL forbids two ranks of a group on one GPU); found "
                 << ranks;
  collectives(ranks, std::vector<int64_t>(ranks, 4096));
  std::vector<int64_t> uneven(ranks);
  for (int r = 0; r < ranks; ++r)
    uneven[r] = 1000 + r; // balanced chunks of a length the ranks do not divide
  collectives(ranks, uneven);
}

// --- Every element type: the values and references of CommReference.h.

int gpuRanks() { return std::min(gpuCount(), 3); }

template <plan::DType D> std::vector<typename commtest::Elem<D>::T> values(int r, int64_t n) {
  std::vector<typename commtest::Elem<D>::T> x(n);
  for (int64_t i = 0; i < n; ++i)
    x[i] = commtest::Elem<D>::value(r, i);
  return x;
}

// Every collective over type D on `ranks` ranks, `total` elements in
// balanced (uneven where the ranks do not divide it) chunks.
template <plan::DType D> void typedCollectives(int ranks, int64_t total) {
  using T = typename commtest::Elem<D>::T;
  const std::string what = commtest::caseName<D>(ranks, total);
  const std::vector<int64_t> counts = commtest::balancedCounts(total, ranks);
  onRanks(ranks, [&](int r, NcclCommunicator &comm) {
    const Chunk mine = balancedChunk(total, ranks, r);
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
      DeviceBuffer<T> buf(values<D>(r, total)), chunk(mine.size);
      ASSERT_OK(comm.allReduce(buf.get(), total, D, op));
      DeviceBuffer<T> full(values<D>(r, total));
      ASSERT_OK(comm.reduceScatter(full.get(), chunk.get(), counts.data(), D, op));
      ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
      std::vector<T> reduced = buf.download(), part = chunk.download();
      for (int64_t i = 0; i < total; ++i)
        ASSERT_EQ(reduced[i], commtest::reduceRef<D>(ranks, i, op))
            << what << "allReduce " << commtest::opName(op) << " at " << i;
      for (int64_t i = 0; i < mine.size; ++i)
        ASSERT_EQ(part[i], commtest::reduceRef<D>(ranks, mine.begin + i, op))
            << what << "reduceScatter " << commtest::opName(op) << " at " << mine.begin + i;
    }
    std::vector<T> own = values<D>(r, total);
    DeviceBuffer<T> piece(
        std::vector<T>(own.begin() + mine.begin, own.begin() + mine.begin + mine.size)),
        gathered(total);
    ASSERT_OK(comm.allGather(piece.get(), gathered.get(), counts.data(), D));
    std::vector<int64_t> recvCounts(ranks, mine.size);
    DeviceBuffer<T> send(own), recv(mine.size * ranks);
    ASSERT_OK(comm.allToAll(send.get(), counts.data(), recv.get(), recvCounts.data(), D));
    DeviceBuffer<T> bc(own);
    ASSERT_OK(comm.broadcast(bc.get(), total, D, ranks - 1));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    std::vector<T> all = gathered.download(), exchanged = recv.download();
    for (int q = 0; q < ranks; ++q) {
      const Chunk c = balancedChunk(total, ranks, q);
      for (int64_t i = 0; i < c.size; ++i) {
        ASSERT_EQ(all[c.begin + i], commtest::Elem<D>::value(q, c.begin + i))
            << what << "allGather from " << q;
      }
      for (int64_t i = 0; i < mine.size; ++i)
        ASSERT_EQ(exchanged[q * mine.size + i], commtest::Elem<D>::value(q, mine.begin + i))
            << what << "allToAll from " << q;
    }
    EXPECT_EQ(bc.download(), values<D>(ranks - 1, total)) << what << "broadcast";
    // The ring's counts (NcclCommunicator.h), B = total bytes, n ranks: three
    // all-reduces of 2(n-1)B/n; three reduce-scatters, the all-to-all and the
    // all-gather send all but one block; the broadcast from rank n-1 is
    // forwarded by every rank but n-2. A group of one sends nothing.
    const uint64_t n = static_cast<uint64_t>(ranks), es = sizeof(T);
    const uint64_t bytes = static_cast<uint64_t>(total) * es;
    const uint64_t ownBytes = static_cast<uint64_t>(counts[r]) * es;
    const uint64_t next = static_cast<uint64_t>(counts[(r + 1) % ranks]) * es;
    const uint64_t expected = ranks == 1 ? 0
                                         : 3 * (2 * (n - 1) * bytes / n) + 4 * (bytes - ownBytes) +
                                               (bytes - next) + (r == ranks - 2 ? 0 : bytes);
    EXPECT_EQ(comm.sentBytes(), expected) << what << "sentBytes";
  });
}

template <plan::DType D> void typedCollectivesOn(int ranks) {
  for (int64_t total : {int64_t{1}, int64_t{11}, int64_t{300007}})
    typedCollectives<D>(ranks, total);
}

TEST(NcclCommunicator, EveryTypeOneRank) {
  SBPFLOW_REQUIRE_GPU();
  typedCollectivesOn<plan::DType::F32>(1);
  typedCollectivesOn<plan::DType::BF16>(1);
  typedCollectivesOn<plan::DType::I32>(1);
  typedCollectivesOn<plan::DType::U8>(1);
}

TEST(NcclCommunicator, EveryTypeSeveralRanks) {
  SBPFLOW_REQUIRE_GPU();
  const int ranks = gpuRanks();
  if (ranks < 2)
    GTEST_SKIP() << "needs 2 GPUs or more (NCCL forbids two ranks of a group on one GPU); found "
                 << ranks;
  typedCollectivesOn<plan::DType::F32>(ranks);
  typedCollectivesOn<plan::DType::BF16>(ranks);
  typedCollectivesOn<plan::DType::I32>(ranks);
  typedCollectivesOn<plan::DType::U8>(ranks);
}

// Two ranks: bf16 sums round to nearest even (one addition per element).
TEST(NcclCommunicator, Bf16SumRoundsToNearestEven) {
  SBPFLOW_REQUIRE_GPU();
  if (gpuCount() < 2)
    GTEST_SKIP() << "needs 2 GPUs (NCCL forbids two ranks of a group on one GPU); found "
                 << gpuCount();
  const float ulp1 = std::ldexp(1.0f, -7);
  const std::vector<float> a = {1.0f, 1.0f + ulp1, 3.140625f, -2.71875f};
  const std::vector<float> b = {ulp1 / 2, ulp1 / 2, 0.0078125f * 3, 100.5f};
  onRanks(2, [&](int r, NcclCommunicator &comm) {
    std::vector<uint16_t> x;
    for (float v : r == 0 ? a : b)
      x.push_back(commtest::toBf16Exact(v));
    DeviceBuffer<uint16_t> buf(x);
    ASSERT_OK(comm.allReduce(buf.get(), 4, plan::DType::BF16, ReduceOp::Sum));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    std::vector<uint16_t> got = buf.download();
    for (int i = 0; i < 4; ++i)
      EXPECT_EQ(got[i], commtest::roundToBf16(a[i] + b[i])) << i;
  });
}

// Messages 0..5 of every type from rank 0 to rank 1, then back, on the
// communicator's stream.
TEST(NcclCommunicator, SendRecvBothDirections) {
  SBPFLOW_REQUIRE_GPU();
  if (gpuCount() < 2)
    GTEST_SKIP() << "needs 2 GPUs (NCCL forbids two ranks of a group on one GPU); found "
                 << gpuCount();
  onRanks(2, [&](int r, NcclCommunicator &comm) {
    auto run = [&](auto elem, plan::DType type) {
      using T = decltype(elem);
      for (int from : {0, 1})
        for (int k = 0; k < 6; ++k) {
          std::vector<T> want(97 * k + 1);
          for (size_t i = 0; i < want.size(); ++i)
            want[i] = static_cast<T>(commtest::mix(from * 10 + k, static_cast<int64_t>(i)));
          if (r == from) {
            DeviceBuffer<T> out(want);
            ASSERT_OK(comm.send(out.get(), static_cast<int64_t>(want.size()), type, 1 - r));
            ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
          } else {
            DeviceBuffer<T> in(want.size());
            ASSERT_OK(comm.recv(in.get(), static_cast<int64_t>(want.size()), type, from));
            ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
            ASSERT_EQ(in.download(), want) << plan::EnumNameDType(type) << " message " << k;
          }
        }
    };
    run(float{}, plan::DType::F32);
    run(uint16_t{}, plan::DType::BF16);
    run(int32_t{}, plan::DType::I32);
    run(uint8_t{}, plan::DType::U8);
  });
}

TEST(NcclCommunicator, SendPeerMustBeAnotherRank) {
  SBPFLOW_REQUIRE_GPU();
  onRanks(1, [&](int, NcclCommunicator &comm) {
    DeviceBuffer<float> x(1);
    Status s = comm.send(x.get(), 1, plan::DType::F32, 0);
    ASSERT_FALSE(s.isOk());
    EXPECT_NE(s.message().find("test group: NCCL send to peer 0 on group rank 0: the peer must "
                               "be another rank of the group of 1"),
              std::string::npos)
        << s.message();
    s = comm.allReduce(x.get(), 1, static_cast<plan::DType>(9), ReduceOp::Sum);
    EXPECT_NE(s.message().find("NCCL all-reduce of unknown element type 9"), std::string::npos)
        << s.message();
  });
}

TEST(NcclCommunicator, MissingPeerTimesOut) {
  SBPFLOW_REQUIRE_GPU();
  // Rank 1 of 2 never arrives: rank 0 must give up within the timeout.
  gloo::rendezvous::HashStore store;
  auto comm = NcclCommunicator::connect(store, "nccl-id", 0, 2, 0, nullptr,
                                        std::chrono::milliseconds(2000), "lonely group");
  ASSERT_FALSE(comm.isOk());
  EXPECT_NE(comm.status().message().find("lonely group: NCCL set-up of rank 0 of 2 failed"),
            std::string::npos)
      << comm.status().message();
}

} // namespace
} // namespace sbpflow::test
