// Gloo collectives with uneven counts, N ranks as threads of one process over
// a HashStore, checked against a sequential reference; and the groups that
// CommGroups builds for a 2x2 hierarchy.
#include "runtime/Shape.h"
#include "runtime/comm/CommGroups.h"
#include "runtime/comm/GlooCommunicator.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/plan/TestPlans.h"

#include <gloo/rendezvous/hash_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gtest/gtest.h>

#include <functional>
#include <thread>

using namespace sbpflow;

namespace {

constexpr std::chrono::milliseconds kTimeout{20000};

// Runs body(rank, comm) on n threads; failures are collected per rank.
void onRanks(int n, const std::function<void(int, Communicator &)> &body) {
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(n);
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      auto comm = GlooCommunicator::connect(store, r, n, kTimeout, "test");
      if (!comm) {
        errors[r] = comm.status().message();
        return;
      }
      body(r, **comm);
    });
  for (auto &t : threads)
    t.join();
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;
}

float value(int rank, int64_t i) { return static_cast<float>((rank + 1) * 100 + i % 37) * 0.5f; }

TEST(GlooCommunicator, AllReduceSumMaxMin) {
  const int n = 3;
  const int64_t count = 1001;
  onRanks(n, [&](int r, Communicator &comm) {
    EXPECT_EQ(comm.rank(), r);
    EXPECT_EQ(comm.size(), n);
    std::vector<float> buf(count);
    for (int64_t i = 0; i < count; ++i)
      buf[i] = value(r, i) * (i % 2 ? 1 : -1);
    std::vector<float> mx = buf, mn = buf;
    ASSERT_TRUE(comm.allReduce(buf.data(), count, ReduceOp::Sum));
    ASSERT_TRUE(comm.allReduce(mx.data(), count, ReduceOp::Max));
    ASSERT_TRUE(comm.allReduce(mn.data(), count, ReduceOp::Min));
    for (int64_t i = 0; i < count; ++i) {
      float s = 0, hi = -1e30f, lo = 1e30f;
      for (int q = 0; q < n; ++q) {
        float v = value(q, i) * (i % 2 ? 1 : -1);
        s += v;
        hi = std::max(hi, v);
        lo = std::min(lo, v);
      }
      ASSERT_FLOAT_EQ(buf[i], s) << i;
      ASSERT_EQ(mx[i], hi) << i;
      ASSERT_EQ(mn[i], lo) << i;
    }
  });
}

TEST(GlooCommunicator, AllGatherUneven) {
  const int n = 3;
  const int64_t total = 11; // chunks 4, 4, 3
  onRanks(n, [&](int r, Communicator &comm) {
    std::vector<int64_t> counts(n);
    for (int q = 0; q < n; ++q)
      counts[q] = balancedChunk(total, n, q).size;
    std::vector<float> mine(counts[r]);
    for (int64_t i = 0; i < counts[r]; ++i)
      mine[i] = value(r, i);
    std::vector<float> all(total, -1);
    ASSERT_TRUE(comm.allGather(mine.data(), all.data(), counts.data()));
    int64_t at = 0;
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < counts[q]; ++i)
        ASSERT_EQ(all[at++], value(q, i));
  });
}

TEST(GlooCommunicator, ReduceScatterUneven) {
  const int n = 3;
  const int64_t total = 7; // chunks 3, 2, 2
  onRanks(n, [&](int r, Communicator &comm) {
    std::vector<int64_t> counts(n);
    for (int q = 0; q < n; ++q)
      counts[q] = balancedChunk(total, n, q).size;
    std::vector<float> full(total);
    for (int64_t i = 0; i < total; ++i)
      full[i] = value(r, i);
    std::vector<float> out(counts[r], -1);
    ASSERT_TRUE(comm.reduceScatter(full.data(), out.data(), counts.data(), ReduceOp::Sum));
    Chunk c = balancedChunk(total, n, r);
    for (int64_t i = 0; i < c.size; ++i) {
      float s = 0;
      for (int q = 0; q < n; ++q)
        s += value(q, c.begin + i);
      ASSERT_FLOAT_EQ(out[i], s);
    }
  });
}

TEST(GlooCommunicator, AllToAllUneven) {
  const int n = 3;
  // Rank r sends (r + q + 1) % 3 elements to q; one of them is empty.
  onRanks(n, [&](int r, Communicator &comm) {
    std::vector<int64_t> send(n), recv(n);
    for (int q = 0; q < n; ++q) {
      send[q] = (r + q + 1) % 3;
      recv[q] = (q + r + 1) % 3;
    }
    std::vector<float> in, out(recv[0] + recv[1] + recv[2], -1);
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < send[q]; ++i)
        in.push_back(value(r, q * 10 + i));
    ASSERT_TRUE(comm.allToAll(in.data(), send.data(), out.data(), recv.data()));
    size_t at = 0;
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < recv[q]; ++i)
        ASSERT_EQ(out[at++], value(q, r * 10 + i)) << "from " << q;
  });
}

TEST(GlooCommunicator, RendezvousTimeoutIsAnError) {
  gloo::rendezvous::HashStore store;
  // Rank 1 never shows up: connect must fail, not hang.
  auto comm = GlooCommunicator::connect(store, 0, 2, std::chrono::milliseconds(300), "lonely");
  ASSERT_FALSE(comm);
  EXPECT_NE(comm.status().message().find("lonely: gloo rendezvous of rank 0 of 2 failed"),
            std::string::npos)
      << comm.status().message();
}

TEST(CommGroups, TwoByTwoHierarchy) {
  using namespace sbpflow::testplan;
  PlanSpec spec;
  spec.placements = {{"grid", {0, 1, 2, 3}, {2, 2}}, {"solo", {3}, {1}}};
  ProgramSpec prog;
  spec.programs.push_back(prog);
  finalize(spec);
  std::vector<uint8_t> bytes = build(spec);
  auto loaded = loadPlanBuffer(bytes);
  ASSERT_TRUE(loaded) << loaded.status().message();
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(4);
  std::vector<float> dim0(4), dim1(4);
  std::vector<int> rank0(4), rank1(4);
  for (int g = 0; g < 4; ++g)
    threads.emplace_back([&, g] {
      auto groups = CommGroups::connect(*loaded->plan(), g, store, kTimeout);
      if (!groups) {
        errors[g] = groups.status().message();
        return;
      }
      Communicator *c0 = (*groups)->get(0, 0), *c1 = (*groups)->get(0, 1);
      if (!c0 || !c1 || (*groups)->get(1, 0)) {
        errors[g] = "wrong set of groups";
        return;
      }
      rank0[g] = c0->rank();
      rank1[g] = c1->rank();
      float v0 = static_cast<float>(g), v1 = static_cast<float>(g);
      if (!c0->allReduce(&v0, 1, ReduceOp::Sum) || !c1->allReduce(&v1, 1, ReduceOp::Sum))
        errors[g] = "allReduce failed";
      dim0[g] = v0;
      dim1[g] = v1;
    });
  for (auto &t : threads)
    t.join();
  for (int g = 0; g < 4; ++g)
    ASSERT_EQ(errors[g], "") << "rank " << g;
  // Coordinates: 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1). Dim 0 groups share the
  // column: {0,2}, {1,3}; dim 1 groups share the row: {0,1}, {2,3}.
  EXPECT_EQ(dim0, (std::vector<float>{2, 4, 2, 4}));
  EXPECT_EQ(dim1, (std::vector<float>{1, 1, 5, 5}));
  EXPECT_EQ(rank0, (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(rank1, (std::vector<int>{0, 1, 0, 1}));
}

} // namespace
