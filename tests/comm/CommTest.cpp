// Gloo collectives with uneven counts, N ranks as threads of one process over
// a HashStore, checked against a sequential reference: f32 as before, then
// every element type (F32, BF16, I32, U8) through every collective on 1, 2
// and 3 ranks, bf16 rounding, send/recv (both directions, messages in a row,
// mismatches, a dead or silent peer); and the groups that CommGroups builds
// for a 2x2 hierarchy.
#include "runtime/Shape.h"
#include "runtime/comm/CommGroups.h"
#include "runtime/comm/GlooCommunicator.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/comm/CommReference.h"
#include "tests/plan/TestPlans.h"

#include <gloo/rendezvous/hash_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <future>
#include <mutex>
#include <numeric>
#include <thread>

using namespace sbpflow;
using namespace sbpflow::commtest;

namespace {

constexpr std::chrono::milliseconds kTimeout{20000};

// Runs body(rank, comm) on n threads; failures are collected per rank. No
// rank starts before every rank has connected, nor closes its communicator
// before every rank is done: a body that ends at once (an argument error)
// must not close connections a slower rank's rendezvous still needs.
void onRanks(int n, const std::function<void(int, Communicator &)> &body) {
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(n);
  Barrier connected(n), done(n);
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      auto comm = GlooCommunicator::connect(store, r, n, kTimeout, "test");
      connected.arriveAndWait();
      if (comm)
        body(r, **comm);
      else
        errors[r] = comm.status().message();
      done.arriveAndWait();
    });
  for (auto &t : threads)
    t.join();
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;
}

float value(int rank, int64_t i) { return static_cast<float>((rank + 1) * 100 + i % 37) * 0.5f; }

// Rank `rank`'s values 0 to count - 1.
std::vector<float> values(int rank, int64_t count) {
  std::vector<float> x(count);
  for (int64_t i = 0; i < count; ++i)
    x[i] = value(rank, i);
  return x;
}

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
    ASSERT_TRUE(comm.allReduce(buf.data(), count, plan::DType::F32, ReduceOp::Sum));
    ASSERT_TRUE(comm.allReduce(mx.data(), count, plan::DType::F32, ReduceOp::Max));
    ASSERT_TRUE(comm.allReduce(mn.data(), count, plan::DType::F32, ReduceOp::Min));
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
  const std::vector<int64_t> counts = balancedCounts(total, n);
  onRanks(n, [&](int r, Communicator &comm) {
    std::vector<float> mine = values(r, counts[r]), all(total, -1);
    ASSERT_TRUE(comm.allGather(mine.data(), all.data(), counts.data(), plan::DType::F32));
    int64_t at = 0;
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < counts[q]; ++i)
        ASSERT_EQ(all[at++], value(q, i));
  });
}

TEST(GlooCommunicator, ReduceScatterUneven) {
  const int n = 3;
  const int64_t total = 7; // chunks 3, 2, 2
  const std::vector<int64_t> counts = balancedCounts(total, n);
  onRanks(n, [&](int r, Communicator &comm) {
    std::vector<float> full = values(r, total), out(counts[r], -1);
    ASSERT_TRUE(comm.reduceScatter(full.data(), out.data(), counts.data(), plan::DType::F32,
                                   ReduceOp::Sum));
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
    ASSERT_TRUE(comm.allToAll(in.data(), send.data(), out.data(), recv.data(), plan::DType::F32));
    size_t at = 0;
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < recv[q]; ++i)
        ASSERT_EQ(out[at++], value(q, r * 10 + i)) << "from " << q;
  });
}

// --- Every element type through every collective.

// Every collective on `n` ranks over element type D, with `total` elements
// split in balanced (uneven) chunks where a collective takes chunks.
template <plan::DType D> void typedCollectives(int n, int64_t total) {
  using E = Elem<D>;
  using T = typename E::T;
  const std::string what = caseName<D>(n, total);
  const std::vector<int64_t> counts = balancedCounts(total, n);
  onRanks(n, [&](int r, Communicator &comm) {
    const Chunk mine = balancedChunk(total, n, r);
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
      std::vector<T> buf(total);
      for (int64_t i = 0; i < total; ++i)
        buf[i] = E::value(r, i);
      ASSERT_TRUE(comm.allReduce(buf.data(), total, D, op)) << what;
      for (int64_t i = 0; i < total; ++i)
        ASSERT_EQ(buf[i], reduceRef<D>(n, i, op))
            << what << "allReduce " << opName(op) << " at " << i;

      std::vector<T> full(total), chunk(mine.size + 1, T{});
      for (int64_t i = 0; i < total; ++i)
        full[i] = E::value(r, i);
      ASSERT_TRUE(comm.reduceScatter(full.data(), chunk.data(), counts.data(), D, op)) << what;
      for (int64_t i = 0; i < mine.size; ++i)
        ASSERT_EQ(chunk[i], reduceRef<D>(n, mine.begin + i, op))
            << what << "reduceScatter " << opName(op) << " at " << mine.begin + i;
    }

    // allGather: rank q contributes elements [begin_q, begin_q + count_q) of its values.
    std::vector<T> part(mine.size + 1), gathered(total + 1);
    for (int64_t i = 0; i < mine.size; ++i)
      part[i] = E::value(r, mine.begin + i);
    ASSERT_TRUE(comm.allGather(part.data(), gathered.data(), counts.data(), D)) << what;
    for (int q = 0; q < n; ++q) {
      const Chunk c = balancedChunk(total, n, q);
      for (int64_t i = 0; i < c.size; ++i)
        ASSERT_EQ(gathered[c.begin + i], E::value(q, c.begin + i))
            << what << "allGather from " << q;
    }

    // allToAll: rank r sends chunk q of its values to q (uneven: counts[q]),
    // and receives chunk r of every rank's.
    std::vector<T> send(total + 1), recv(mine.size * n + 1);
    for (int64_t i = 0; i < total; ++i)
      send[i] = E::value(r, i);
    std::vector<int64_t> recvCounts(n, mine.size);
    ASSERT_TRUE(comm.allToAll(send.data(), counts.data(), recv.data(), recvCounts.data(), D))
        << what;
    for (int q = 0; q < n; ++q)
      for (int64_t i = 0; i < mine.size; ++i)
        ASSERT_EQ(recv[q * mine.size + i], E::value(q, mine.begin + i))
            << what << "allToAll from " << q;

    // broadcast from the last rank.
    std::vector<T> bc(total);
    for (int64_t i = 0; i < total; ++i)
      bc[i] = E::value(r, i);
    ASSERT_TRUE(comm.broadcast(bc.data(), total, D, n - 1)) << what;
    for (int64_t i = 0; i < total; ++i)
      ASSERT_EQ(bc[i], E::value(n - 1, i)) << what << "broadcast at " << i;
  });
}

template <plan::DType D> void typedCollectivesAllSizes() {
  for (int n : {1, 2, 3})
    for (int64_t total : {int64_t{1}, int64_t{11}, int64_t{300007}})
      typedCollectives<D>(n, total);
}

TEST(GlooCommunicatorTyped, F32Collectives) { typedCollectivesAllSizes<plan::DType::F32>(); }
TEST(GlooCommunicatorTyped, Bf16Collectives) { typedCollectivesAllSizes<plan::DType::BF16>(); }
TEST(GlooCommunicatorTyped, I32Collectives) { typedCollectivesAllSizes<plan::DType::I32>(); }
TEST(GlooCommunicatorTyped, U8Collectives) { typedCollectivesAllSizes<plan::DType::U8>(); }

// Integer sums are integer sums: beyond 2^24 (where f32 rounds) and past
// the type's range (where they wrap, as NCCL's do).
TEST(GlooCommunicatorTyped, IntegerSumsAreExactAndWrap) {
  onRanks(2, [&](int r, Communicator &comm) {
    std::vector<int32_t> i32 = {(1 << 24) + 1, -((1 << 24) + 3), INT32_MAX, INT32_MIN};
    std::vector<uint8_t> u8 = {200, 3, 255, 128};
    if (r == 1) {
      i32 = {2, (1 << 30) + 7, 1, -1};
      u8 = {100, 4, 1, 128};
    }
    ASSERT_TRUE(comm.allReduce(i32.data(), 4, plan::DType::I32, ReduceOp::Sum));
    ASSERT_TRUE(comm.allReduce(u8.data(), 4, plan::DType::U8, ReduceOp::Sum));
    EXPECT_EQ(i32, (std::vector<int32_t>{(1 << 24) + 3, (1 << 30) - (1 << 24) + 4, INT32_MIN,
                                         INT32_MAX}));
    EXPECT_EQ(u8, (std::vector<uint8_t>{44, 7, 0, 0}));
  });
}

// Gloo's all-reduce rounds each bf16 sum to nearest even (on two ranks: one
// addition per element); reduce-scatter adds in f32 and rounds once.
TEST(GlooCommunicatorTyped, Bf16SumsRoundToNearestEven) {
  const float ulp1 = std::ldexp(1.0f, -7); // bf16's spacing at 1
  onRanks(2, [&](int r, Communicator &comm) {
    // Pairs (rank 0, rank 1): a tie rounding down to even, a tie rounding up
    // to even, above a tie, and two sums that need rounding.
    const std::vector<float> a = {1.0f, 1.0f + ulp1, 1.0f, 3.140625f, -2.71875f};
    const std::vector<float> b = {ulp1 / 2, ulp1 / 2, ulp1 * 0.75f, 0.0078125f * 3, 100.5f};
    std::vector<uint16_t> buf;
    for (float v : r == 0 ? a : b)
      buf.push_back(toBf16Exact(v));
    ASSERT_TRUE(comm.allReduce(buf.data(), 5, plan::DType::BF16, ReduceOp::Sum));
    EXPECT_EQ(bf16Value(buf[0]), 1.0f);
    EXPECT_EQ(bf16Value(buf[1]), 1.0f + 2 * ulp1);
    EXPECT_EQ(bf16Value(buf[2]), 1.0f + ulp1);
    for (int i = 0; i < 5; ++i)
      EXPECT_EQ(buf[i], roundToBf16(a[i] + b[i])) << i;
  });
  // Three ranks adding 1 + ulp/2 + ulp/2: rounding each addition could give
  // 1 (1 + ulp/2 is a tie that rounds to 1); rounding once gives 1 + ulp.
  onRanks(3, [&](int r, Communicator &comm) {
    const int64_t counts[3] = {1, 1, 1};
    std::vector<uint16_t> full(3, toBf16Exact(r == 0 ? 1.0f : ulp1 / 2));
    uint16_t out = 0;
    ASSERT_TRUE(comm.reduceScatter(full.data(), &out, counts, plan::DType::BF16, ReduceOp::Sum));
    EXPECT_EQ(bf16Value(out), 1.0f + ulp1);
  });
}

TEST(GlooCommunicatorTyped, UnknownTypeIsAnError) {
  onRanks(1, [&](int, Communicator &comm) {
    float x = 0;
    Status s = comm.allReduce(&x, 1, static_cast<plan::DType>(9), ReduceOp::Sum);
    ASSERT_FALSE(s);
    EXPECT_NE(s.message().find("test: allReduce of unknown element type 9"), std::string::npos)
        << s.message();
  });
}

// --- send / recv.

// Message k from `from` to `to`: k + 1 elements of type D (0 for k == 3).
template <plan::DType D> std::vector<typename Elem<D>::T> message(int from, int to, int k) {
  std::vector<typename Elem<D>::T> m(k == 3 ? 0 : 97 * k + 1);
  for (size_t i = 0; i < m.size(); ++i)
    m[i] = Elem<D>::value(from * 10 + to, static_cast<int64_t>(i) + 1000 * k);
  return m;
}

// Sends messages 0..5 of D (one of them empty) from `from` to `to`.
template <plan::DType D> void sendAll(Communicator &comm, int to) {
  for (int k = 0; k < 6; ++k) {
    auto m = message<D>(comm.rank(), to, k);
    ASSERT_TRUE(comm.send(m.data(), static_cast<int64_t>(m.size()), D, to)) << "message " << k;
  }
}
template <plan::DType D> void recvAll(Communicator &comm, int from) {
  for (int k = 0; k < 6; ++k) {
    auto want = message<D>(from, comm.rank(), k);
    std::vector<typename Elem<D>::T> got(want.size() + 1);
    ASSERT_TRUE(comm.recv(got.data(), static_cast<int64_t>(want.size()), D, from))
        << "message " << k;
    got.pop_back();
    ASSERT_EQ(got, want) << plan::EnumNameDType(D) << " message " << k << " from " << from;
  }
}

template <plan::DType D> void sendRecvBothWays() {
  onRanks(2, [&](int r, Communicator &comm) {
    // 0 -> 1, then 1 -> 0.
    if (r == 0) {
      sendAll<D>(comm, 1);
      recvAll<D>(comm, 1);
    } else {
      recvAll<D>(comm, 0);
      sendAll<D>(comm, 0);
    }
  });
}

TEST(GlooCommunicatorSendRecv, BothDirectionsSeveralMessages) {
  sendRecvBothWays<plan::DType::F32>();
  sendRecvBothWays<plan::DType::BF16>();
  sendRecvBothWays<plan::DType::I32>();
  sendRecvBothWays<plan::DType::U8>();
}

// Three ranks, a chain 0 -> 1 -> 2 -> 0 (send is synchronous: a cycle of
// sends would wait for each other), interleaved with collectives on the same
// communicator.
TEST(GlooCommunicatorSendRecv, ChainOfThreeBesideCollectives) {
  onRanks(3, [&](int r, Communicator &comm) {
    const int next = (r + 1) % 3, prev = (r + 2) % 3;
    for (int round = 0; round < 3; ++round) {
      if (r == 0) {
        sendAll<plan::DType::I32>(comm, next);
        recvAll<plan::DType::I32>(comm, prev);
      } else {
        recvAll<plan::DType::I32>(comm, prev);
        sendAll<plan::DType::I32>(comm, next);
      }
      int32_t x = r + 1;
      ASSERT_TRUE(comm.allReduce(&x, 1, plan::DType::I32, ReduceOp::Sum));
      EXPECT_EQ(x, 6);
    }
  });
}

TEST(GlooCommunicatorSendRecv, MismatchIsAnErrorOnBothRanks) {
  onRanks(2, [&](int r, Communicator &comm) {
    std::vector<float> buf(8, 1.0f);
    // Rank 0 sends 8 f32 elements where rank 1 expects 4 i32: each names the other's.
    Status s = r == 0 ? comm.send(buf.data(), 8, plan::DType::F32, 1)
                      : comm.recv(buf.data(), 4, plan::DType::I32, 0);
    ASSERT_FALSE(s);
    const std::string want = r == 0 ? "test: send to peer 1 on group rank 0: the peer expects 4 "
                                      "elements of I32, this rank sends 8 of F32"
                                    : "test: recv from peer 0 on group rank 1: the peer sends 8 "
                                      "elements of F32, this rank expects 4 of I32";
    EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
    if (r == 1) {
      EXPECT_EQ(buf, std::vector<float>(8, 1.0f)); // nothing was written
    }
    // The communicator still works: the next message matches.
    int32_t x = 41 + r;
    ASSERT_TRUE(r == 0 ? comm.send(&x, 1, plan::DType::I32, 1)
                       : comm.recv(&x, 1, plan::DType::I32, 0));
    EXPECT_EQ(x, 41);
  });
}

TEST(GlooCommunicatorSendRecv, PeerMustBeAnotherRank) {
  onRanks(2, [&](int r, Communicator &comm) {
    float x = 0;
    for (int peer : {r, -1, 2}) {
      Status s = peer % 2 ? comm.send(&x, 1, plan::DType::F32, peer)
                          : comm.recv(&x, 1, plan::DType::F32, peer);
      ASSERT_FALSE(s) << peer;
      EXPECT_NE(s.message().find("peer " + std::to_string(peer) + " on group rank " +
                                 std::to_string(r) +
                                 ": the peer must be another rank of the "
                                 "group of 2"),
                std::string::npos)
          << s.message();
    }
  });
}

// Rank 1 connects, then its communicator is destroyed (its sockets close, as
// a dead process's do); rank 0's send or recv to it must fail promptly,
// naming the peer, and the communicator refuses what follows.
void deadPeer(bool sending) {
  gloo::rendezvous::HashStore store;
  std::promise<void> peerGone, connected;
  std::string error;
  std::chrono::steady_clock::duration took{};
  std::thread peer([&] {
    auto comm = GlooCommunicator::connect(store, 1, 2, std::chrono::milliseconds(5000), "test");
    if (!comm)
      error = comm.status().message();
    // Dies once rank 0 has connected too (dying during rank 0's handshake
    // fails its connect instead, which is not what this test is about).
    connected.get_future().wait();
    if (comm)
      comm->reset();
    peerGone.set_value();
  });
  auto comm = GlooCommunicator::connect(store, 0, 2, std::chrono::milliseconds(5000), "test");
  connected.set_value();
  peerGone.get_future().wait();
  peer.join();
  ASSERT_EQ(error, "");
  ASSERT_TRUE(comm) << comm.status().message();
  std::vector<float> buf(1000, 2.0f);
  const auto start = std::chrono::steady_clock::now();
  Status s = sending ? (*comm)->send(buf.data(), 1000, plan::DType::F32, 1)
                     : (*comm)->recv(buf.data(), 1000, plan::DType::F32, 1);
  took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(s);
  const std::string want = std::string("test: gloo ") + (sending ? "send to" : "recv from") +
                           " peer 1 failed on group rank 0";
  EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
  EXPECT_LT(took, std::chrono::milliseconds(4000)) << "not noticed before the timeout";
  Status after = (*comm)->allReduce(buf.data(), 1, plan::DType::F32, ReduceOp::Sum);
  EXPECT_NE(after.message().find("broken by an earlier error"), std::string::npos)
      << after.message();
}

TEST(GlooCommunicatorSendRecv, DeadPeerIsAnErrorNamingIt) {
  deadPeer(true);
  deadPeer(false);
}

// A peer that lives but never answers: an error after the timeout, not a hang.
TEST(GlooCommunicatorSendRecv, SilentPeerTimesOut) {
  for (bool sending : {true, false}) {
    std::promise<void> done;
    std::shared_future<void> finished = done.get_future().share();
    gloo::rendezvous::HashStore store;
    std::string status;
    std::thread silent([&] {
      auto comm = GlooCommunicator::connect(store, 1, 2, std::chrono::milliseconds(1000), "test");
      finished.wait(); // keeps its communicator alive, calls nothing
    });
    {
      auto comm = GlooCommunicator::connect(store, 0, 2, std::chrono::milliseconds(1000), "test");
      if (comm) {
        float x = 1;
        Status s = sending ? (*comm)->send(&x, 1, plan::DType::F32, 1)
                           : (*comm)->recv(&x, 1, plan::DType::F32, 1);
        status = s ? "ok" : s.message();
      } else {
        status = comm.status().message();
      }
      done.set_value();
    }
    silent.join();
    const std::string want = std::string("test: gloo ") + (sending ? "send to" : "recv from") +
                             " peer 1 failed on group rank 0";
    EXPECT_NE(status.find(want), std::string::npos) << status;
    EXPECT_NE(status.find("Timed out"), std::string::npos) << status;
  }
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
      if (!c0->allReduce(&v0, 1, plan::DType::F32, ReduceOp::Sum) ||
          !c1->allReduce(&v1, 1, plan::DType::F32, ReduceOp::Sum))
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
