// Communicator over NCCL: the GPU data plane. Buffers are device pointers;
// every collective is enqueued on the communicator's stream (the rank's
// communication stream) and returns once enqueued, so it overlaps compute on
// other streams; record an event on stream() to learn when it finished. The
// unique id travels through the same rendezvous store as Gloo's keys (in a
// cluster, the driver's CAF store).
#pragma once

#include "runtime/comm/Communicator.h"

#include <cuda_runtime_api.h>

#include <chrono>
#include <memory>
#include <string>

namespace gloo::rendezvous {
class Store;
}
struct ncclComm;

namespace sbpflow {

class NcclCommunicator : public Communicator {
public:
  // Rank `rank` of `size` on CUDA device `device`: rank 0 creates the unique
  // id and publishes it under `key` in `store` (wrap the store in a
  // PrefixStore to separate groups); the others wait for it. `timeout`
  // bounds the id's wait and NCCL's initialisation (a communicator that does
  // not come up is aborted, not waited for). `name` prefixes error messages.
  static StatusOr<std::unique_ptr<NcclCommunicator>>
  connect(gloo::rendezvous::Store &store, const std::string &key, int rank, int size, int device,
          cudaStream_t stream, std::chrono::milliseconds timeout, std::string name);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  cudaStream_t stream() const { return stream_; }
  void *deviceStream() const override { return stream_; }

  // sentBytes() counts a call once it is enqueued, by the volumes of NCCL's
  // ring algorithms (the ring's count, taking the ring in rank order; NCCL
  // may pick a tree or another ring order, and moves the same bytes in
  // total but not always per rank), per call on B bytes (n ranks, rank r):
  // allReduce 2(n-1)B/n; allGather every block but rank r+1's;
  // reduceScatter every block but rank r's; allToAll every chunk but its
  // own; broadcast B, except on rank root-1 (the ring's last), which sends
  // nothing; send B; recv nothing.
  // BF16 reduces natively (ncclBfloat16), I32 and U8 as ncclInt32 and
  // ncclUint8.
  Status allReduce(void *buf, int64_t count, plan::DType type, ReduceOp op) override;
  // Uneven counts: one broadcast per rank in a group (NCCL's allgather needs
  // equal counts); even counts use ncclAllGather.
  Status allGather(const void *send, void *recv, const int64_t *recvCounts,
                   plan::DType type) override;
  // Uneven counts: one reduce per rank in a group; even: ncclReduceScatter.
  Status reduceScatter(const void *send, void *recv, const int64_t *recvCounts, plan::DType type,
                       ReduceOp op) override;
  Status allToAll(const void *send, const int64_t *sendCounts, void *recv,
                  const int64_t *recvCounts, plan::DType type) override;
  Status broadcast(void *buf, int64_t count, plan::DType type, int root) override;
  // ncclSend / ncclRecv, enqueued on stream(). NCCL checks neither count nor
  // type against the peer's: both ranks must agree.
  Status send(const void *buf, int64_t count, plan::DType type, int peer) override;
  Status recv(void *buf, int64_t count, plan::DType type, int peer) override;

  // NCCL reports a failed peer or network asynchronously, while its kernels
  // may wait forever: the executor's watchdog polls this and, on an error or
  // a collective that outlives its timeout, calls abort(), which makes the
  // stream's pending NCCL kernels return.
  Status asyncError();
  void abort();

private:
  NcclCommunicator(ncclComm *comm, int rank, int size, cudaStream_t stream, std::string name);
  Status check(const char *op, int result);
  // `s`, having counted `bytes` as sent where it is ok.
  Status counted(uint64_t bytes, Status s) {
    if (s)
      countSent(bytes);
    return s;
  }
  // Non-blocking communicators may return ncclInProgress from a call: wait
  // until the call is enqueued (or failed).
  Status settle(const char *op, int result);
  // An error naming `op` once abort() has run (comm_ is null then); with a
  // type, also for one the communicators do not carry.
  Status usable(const char *op) const;
  Status usable(const char *op, plan::DType type) const;
  // An error unless `peer` is another rank of the group.
  Status checkPeer(const char *op, int peer) const;
  // send/recv: the checks of `type` and `peer`, then `call()` settled
  // (`toPeer` names the direction in errors).
  template <class Call>
  Status withPeer(const char *op, const char *toPeer, int peer, plan::DType type, Call &&call);

  ncclComm *comm_; // null once aborted
  int rank_, size_;
  cudaStream_t stream_;
  std::string name_;
};

} // namespace sbpflow
