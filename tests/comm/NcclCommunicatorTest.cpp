// NcclCommunicator: every collective (even and uneven counts) against a
// sequential reference, ranks as threads of one process, one GPU each (NCCL
// forbids two ranks of a communicator on one GPU). Skips, saying why, with
// no GPU; the multi-rank cases need two GPUs or more.
#include "runtime/comm/NcclCommunicator.h"
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
    ASSERT_OK(comm.allReduce(buf.get(), total, ReduceOp::Sum));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    std::vector<float> want(total);
    for (int64_t i = 0; i < total; ++i)
      for (int q = 0; q < ranks; ++q)
        want[i] += static_cast<float>(q * 1000 + i);
    EXPECT_EQ(buf.download(), want);

    // all-gather: rank q contributes counts[q] elements of its input.
    DeviceBuffer<float> mine(input(r, counts[r])), gathered(total);
    ASSERT_OK(comm.allGather(mine.get(), gathered.get(), counts.data()));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    std::vector<float> all;
    for (int q = 0; q < ranks; ++q) {
      auto part = input(q, counts[q]);
      all.insert(all.end(), part.begin(), part.end());
    }
    EXPECT_EQ(gathered.download(), all);

    // reduce-scatter (max): chunk r of the elementwise max, i.e. the last rank's.
    DeviceBuffer<float> full(input(r, total)), chunk(counts[r]);
    ASSERT_OK(comm.reduceScatter(full.get(), chunk.get(), counts.data(), ReduceOp::Max));
    ASSERT_CUDA(cudaStreamSynchronize(comm.stream()));
    int64_t begin = std::accumulate(counts.begin(), counts.begin() + r, int64_t{0});
    auto last = input(ranks - 1, total);
    EXPECT_EQ(chunk.download(),
              std::vector<float>(last.begin() + begin, last.begin() + begin + counts[r]));

    // all-to-all: rank r sends counts[q] elements to q, receives counts[r] from each.
    std::vector<int64_t> recvCounts(ranks, counts[r]);
    DeviceBuffer<float> send(input(r, total)), recv(counts[r] * ranks);
    ASSERT_OK(comm.allToAll(send.get(), counts.data(), recv.get(), recvCounts.data()));
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
