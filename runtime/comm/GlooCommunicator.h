// Communicator over one Gloo context (TCP): the CPU data plane. Gloo errors
// (a dead peer, a timeout) come back as Status errors naming the operation
// and, for send/recv, the peer.
#pragma once

#include "runtime/comm/Communicator.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace gloo {
class Context;
namespace rendezvous {
class Store;
}
} // namespace gloo

namespace sbpflow {

class GlooCommunicator : public Communicator {
public:
  // Connects rank `rank` of `size` over `store` (keys are used as given: wrap
  // the store in a PrefixStore to separate groups). `timeout` bounds the
  // rendezvous and every operation. `name` prefixes error messages. `host`:
  // the address the TCP device listens on (empty: the host name's address).
  static StatusOr<std::unique_ptr<GlooCommunicator>>
  connect(gloo::rendezvous::Store &store, int rank, int size, std::chrono::milliseconds timeout,
          std::string name, const std::string &host = "");
  ~GlooCommunicator() override;

  int rank() const override;
  int size() const override;
  // sentBytes(), per call on B bytes (n ranks, this is rank r), the rules of
  // the Debian Gloo's algorithms (gloo/*.cc at 5b14351):
  // - allReduce: gloo::allreduce's ring. With n = 2 each rank sends B;
  //   generally (B - chunk r) + (B - chunk r-1), chunks of whole segments
  //   (at most 1 MiB, at least 2 per rank), so the ranks together send
  //   2(n-1)B.
  // - allGather: gloo::allgatherv's ring: every rank's block but rank
  //   r+1's (total - block r+1).
  // - allToAll: gloo::alltoallv, direct: every chunk but its own.
  // - reduceScatter: that all-to-all of chunks: total - chunk r.
  // - broadcast: gloo::broadcast's binomial tree: B per child, the root
  //   having ceil(log2 n) children at most; n-1 sends in all.
  // - send: B (the 16-byte header not counted); recv: nothing.
  // BF16 sums: Gloo has no bf16 type; its ring adds pairs in f32 and rounds
  // at every hop. reduceScatter adds the chunks it received in f32 and
  // rounds once.
  Status allReduce(void *buf, int64_t count, plan::DType type, ReduceOp op) override;
  Status allGather(const void *send, void *recv, const int64_t *recvCounts,
                   plan::DType type) override;
  Status reduceScatter(const void *send, void *recv, const int64_t *recvCounts, plan::DType type,
                       ReduceOp op) override;
  Status allToAll(const void *send, const int64_t *sendCounts, void *recv,
                  const int64_t *recvCounts, plan::DType type) override;
  Status broadcast(void *buf, int64_t count, plan::DType type, int root) override;
  // A message is a 16-byte header each way (count and type: a mismatched
  // pair is an error on both ranks, not a write past a buffer), then the
  // payload.
  Status send(const void *buf, int64_t count, plan::DType type, int peer) override;
  Status recv(void *buf, int64_t count, plan::DType type, int peer) override;

private:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, std::string name);
  Status failed(const std::string &op, const std::exception &e);
  // Runs one Gloo collective, `call(tag)` with the next tag: an exception (a
  // dead peer, a timeout) breaks the communicator and is an error naming op.
  template <class Call> Status collective(const char *op, Call &&call);
  // An error when the communicator is broken or `type` is not one it carries.
  Status usable(const char *op, plan::DType type) const;
  // The checks of send/recv's peer.
  Status checkPeer(const char *op, int peer) const;
  // One send (outgoing) or recv: header exchange, then the payload.
  Status transfer(bool outgoing, void *buf, int64_t count, plan::DType type, int peer);

  std::shared_ptr<gloo::Context> context_;
  std::string name_;
  uint32_t tag_ = 0;
  // Per peer: the number of the next message to it / from it (send/recv's
  // Gloo slots), so that successive messages never match each other.
  std::vector<uint32_t> sent_, received_;
  // Reduce-scatter receives every peer's chunk here before reducing (and
  // sums bf16 in f32 in scratchF32_); both only grow, so steady-state steps
  // do not allocate.
  std::vector<uint8_t> scratch_;
  std::vector<float> scratchF32_;
  bool broken_ = false; // Gloo contexts are unusable after an IoException
};

} // namespace sbpflow
