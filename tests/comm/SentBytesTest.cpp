// GlooCommunicator::sentBytes against the bytes the process's TCP sockets
// carried: 2 and 3 ranks as threads over one HashStore, so the sum of the
// ranks' counters is checked against the sum of tcpi_bytes_acked over every
// socket of the process, before and after one operation. Gloo's TCP
// transport frames each message with three 48-byte preambles (the sender's
// send-ready notice and data preamble, the receiver's recv-ready notice;
// gloo/transport/tcp/pair.cc), which the counters leave out: the test
// allows exactly 144 bytes per message, with the messages each operation's
// algorithm sends, plus the 16-byte headers each end of a send/recv sends.
// Each case also checks every rank's count against the value Communicator.h's
// rules give, worked out by hand in the comments.
#include "runtime/comm/GlooCommunicator.h"
#include "tests/comm/CommReference.h"

#include <gloo/rendezvous/hash_store.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>

using namespace sbpflow;
using sbpflow::commtest::Barrier;

namespace {

constexpr std::chrono::milliseconds kTimeout{20000};
constexpr uint64_t kPreambleBytes = 48; // gloo::transport::tcp::Op::preamble: 6 size_t
constexpr uint64_t kFramingPerMessage = 3 * kPreambleBytes;

// The bytes the peers of every TCP socket of this process have acknowledged.
uint64_t tcpBytesAcked() {
  uint64_t total = 0;
  DIR *dir = opendir("/proc/self/fd");
  if (!dir)
    return 0;
  while (dirent *e = readdir(dir)) {
    char *end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0')
      continue;
    tcp_info info{};
    socklen_t len = sizeof info;
    // Not a TCP socket (a file, a pipe, an epoll fd, this directory): an error.
    if (getsockopt(static_cast<int>(fd), IPPROTO_TCP, TCP_INFO, &info, &len) == 0 &&
        len >= offsetof(tcp_info, tcpi_bytes_acked) + sizeof info.tcpi_bytes_acked)
      total += info.tcpi_bytes_acked;
  }
  closedir(dir);
  return total;
}

// tcpBytesAcked once it has stopped moving (the last ACKs may be delayed).
uint64_t settledBytesAcked() {
  uint64_t last = tcpBytesAcked();
  int stable = 0;
  for (int i = 0; i < 200 && stable < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const uint64_t now = tcpBytesAcked();
    stable = now == last ? stable + 1 : 0;
    last = now;
  }
  return last;
}

struct Measured {
  std::vector<uint64_t> counted; // each rank's sentBytes() during `body`
  uint64_t onWire = 0;           // TCP bytes acknowledged during `body`
};

// Connects n ranks, then runs body(rank, comm) on each while the main thread
// reads the sockets' counters before and after.
Measured measure(int n, const std::function<void(int, Communicator &)> &body) {
  gloo::rendezvous::HashStore store;
  Measured m;
  m.counted.assign(n, 0);
  std::vector<std::string> errors(n);
  Barrier connected(n + 1), start(n + 1), finished(n + 1), release(n + 1);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      auto comm = GlooCommunicator::connect(store, r, n, kTimeout, "test", "127.0.0.1");
      connected.arriveAndWait();
      start.arriveAndWait();
      if (comm) {
        const uint64_t before = (*comm)->sentBytes();
        body(r, **comm);
        m.counted[r] = (*comm)->sentBytes() - before;
      } else {
        errors[r] = comm.status().message();
      }
      finished.arriveAndWait();
      release.arriveAndWait(); // every socket stays open until read
    });
  connected.arriveAndWait();
  const uint64_t before = settledBytesAcked();
  start.arriveAndWait();
  finished.arriveAndWait();
  m.onWire = settledBytesAcked() - before;
  release.arriveAndWait();
  for (auto &t : threads)
    t.join();
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;
  return m;
}

// Each rank's count is `perRank`; their sum plus the framing of `messages`
// Gloo messages and `headerBytes` of send/recv headers is what TCP carried.
void expectCounts(const Measured &m, const std::vector<uint64_t> &perRank, uint64_t messages,
                  uint64_t headerBytes = 0) {
  EXPECT_EQ(m.counted, perRank);
  uint64_t sum = 0;
  for (uint64_t c : m.counted)
    sum += c;
  EXPECT_EQ(m.onWire, sum + messages * kFramingPerMessage + headerBytes)
      << "counted " << sum << " payload bytes in " << messages << " messages";
}

std::vector<float> floats(int64_t n, int rank) {
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(rank * 1000 + i % 101);
  return x;
}

// Ring all-reduce, 10 f32 (40 bytes) on 3 ranks: 6 segments of 8 bytes
// (the last empty), 2 per chunk: chunks of 16, 16 and 8 bytes. Rank r sends
// (40 - chunk r) + (40 - chunk r-1): 24 + 32, 24 + 24, 32 + 24; 5 non-empty
// segments, each sent by 2 ranks in each phase: 20 messages.
TEST(GlooSentBytes, AllReduceThreeRanks) {
  Measured m = measure(3, [](int r, Communicator &comm) {
    auto x = floats(10, r);
    ASSERT_TRUE(comm.allReduce(x.data(), 10, plan::DType::F32, ReduceOp::Sum));
  });
  expectCounts(m, {56, 48, 56}, 20);
}

// 300000 f32 (1.2 MB) on 2 ranks: more than one 1 MiB segment, so 4
// segments of 300000 bytes; each rank sends the other's chunk in the
// reduce-scatter and its own in the all-gather: 1.2 MB, 4 messages.
TEST(GlooSentBytes, AllReduceTwoRanksSeveralSegments) {
  Measured m = measure(2, [](int r, Communicator &comm) {
    auto x = floats(300000, r);
    ASSERT_TRUE(comm.allReduce(x.data(), 300000, plan::DType::F32, ReduceOp::Sum));
  });
  expectCounts(m, {1200000, 1200000}, 8);
}

// 1000003 f32 (4000012 bytes) on 3 ranks: 6 segments of 666672 bytes, chunks
// of 1333344, 1333344 and 1333324 bytes: 2666668 + 2666688,
// 2666668 + 2666668, 2666688 + 2666668; 6 segments x 2 ranks x 2 phases.
TEST(GlooSentBytes, AllReduceThreeRanksLarge) {
  Measured m = measure(3, [](int r, Communicator &comm) {
    auto x = floats(1000003, r);
    ASSERT_TRUE(comm.allReduce(x.data(), 1000003, plan::DType::F32, ReduceOp::Sum));
  });
  expectCounts(m, {5333356, 5333336, 5333356}, 24);
}

// All-gather of blocks of 4, 4 and 3 f32 (44 bytes): the ring forwards every
// block but the next rank's: 44 - 16, 44 - 12, 44 - 16; 3 x 2 messages.
TEST(GlooSentBytes, AllGatherUneven) {
  const std::vector<int64_t> counts{4, 4, 3};
  Measured m = measure(3, [&](int r, Communicator &comm) {
    auto mine = floats(counts[r], r);
    std::vector<float> all(11);
    ASSERT_TRUE(comm.allGather(mine.data(), all.data(), counts.data(), plan::DType::F32));
  });
  expectCounts(m, {28, 32, 28}, 6);
}

// Reduce-scatter of 7 f32 into chunks of 3, 2, 2: every chunk but its own:
// 28 - 12, 28 - 8, 28 - 8; an all-to-all, 3 x 2 messages.
TEST(GlooSentBytes, ReduceScatterUneven) {
  const std::vector<int64_t> counts{3, 2, 2};
  Measured m = measure(3, [&](int r, Communicator &comm) {
    auto full = floats(7, r);
    std::vector<float> out(counts[r]);
    ASSERT_TRUE(comm.reduceScatter(full.data(), out.data(), counts.data(), plan::DType::F32,
                                   ReduceOp::Sum));
  });
  expectCounts(m, {16, 20, 20}, 6);
}

// All-to-all of u8, rank r sending (r + q + 1) % 3 bytes to q: rank 0 sends
// 2 + 0 to ranks 1 and 2, rank 1 2 + 1, rank 2 0 + 1; 6 messages, the empty
// ones included.
TEST(GlooSentBytes, AllToAllUneven) {
  Measured m = measure(3, [](int r, Communicator &comm) {
    std::vector<int64_t> send(3), recv(3);
    for (int q = 0; q < 3; ++q)
      send[q] = recv[q] = (r + q + 1) % 3;
    std::vector<uint8_t> in(3, static_cast<uint8_t>(r)), out(3);
    ASSERT_TRUE(comm.allToAll(in.data(), send.data(), out.data(), recv.data(), plan::DType::U8));
  });
  expectCounts(m, {2, 3, 1}, 6);
}

// Broadcast of 5 i32 (20 bytes) from root 1 of 3: the binomial tree's root
// (virtual rank 0) sends to virtual ranks 1 and 2 (ranks 2 and 0), which
// send nothing; 2 messages.
TEST(GlooSentBytes, BroadcastBinomialTree) {
  Measured m = measure(3, [](int r, Communicator &comm) {
    std::vector<int32_t> x(5, r);
    ASSERT_TRUE(comm.broadcast(x.data(), 5, plan::DType::I32, 1));
  });
  expectCounts(m, {0, 40, 0}, 2);
}

// Rank 0 sends 7 bf16 (14 bytes) to rank 1, then rank 1 sends 3 i32 (12
// bytes) to rank 0; each message is a header each way (16 bytes, not
// counted) and the payload: 3 Gloo messages per send.
TEST(GlooSentBytes, SendRecv) {
  Measured m = measure(2, [](int r, Communicator &comm) {
    std::vector<uint16_t> h(7, 1);
    std::vector<int32_t> i(3, 2);
    if (r == 0) {
      ASSERT_TRUE(comm.send(h.data(), 7, plan::DType::BF16, 1));
      ASSERT_TRUE(comm.recv(i.data(), 3, plan::DType::I32, 1));
    } else {
      ASSERT_TRUE(comm.recv(h.data(), 7, plan::DType::BF16, 0));
      ASSERT_TRUE(comm.send(i.data(), 3, plan::DType::I32, 0));
    }
  });
  expectCounts(m, {14, 12}, 6, 2 * 2 * 16);
}

// A group of one sends nothing (and has no sockets).
TEST(GlooSentBytes, GroupOfOneSendsNothing) {
  Measured m = measure(1, [](int, Communicator &comm) {
    auto x = floats(1000, 0);
    std::vector<float> y(1000);
    const int64_t count = 1000;
    ASSERT_TRUE(comm.allReduce(x.data(), count, plan::DType::F32, ReduceOp::Sum));
    ASSERT_TRUE(comm.allGather(x.data(), y.data(), &count, plan::DType::F32));
    ASSERT_TRUE(comm.reduceScatter(x.data(), y.data(), &count, plan::DType::F32, ReduceOp::Sum));
    ASSERT_TRUE(comm.allToAll(x.data(), &count, y.data(), &count, plan::DType::F32));
    ASSERT_TRUE(comm.broadcast(x.data(), count, plan::DType::F32, 0));
  });
  expectCounts(m, {0}, 0);
}

} // namespace
