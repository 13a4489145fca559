// Collectives and point-to-point transfers over one group of ranks (one
// dimension of a placement hierarchy). Tensors move through Gloo (CPU) or
// NCCL (GPU), never through CAF. Every rank of a group calls the same
// collectives in the same order.
#pragma once

#include "runtime/Status.h"
#include "runtime/plan/plan_generated.h"

#include <atomic>
#include <cstdint>

namespace sbpflow {

enum class ReduceOp { Sum, Max, Min };

// Whether the communicators carry `type`: every DType of the plan schema.
inline bool isCommType(plan::DType type) {
  return type >= plan::DType::MIN && type <= plan::DType::MAX;
}

// Every call names the element type of its buffers: F32, BF16 (bfloat16 in
// uint16 storage), I32 or U8; counts are in elements, never bytes. A
// reduction reduces in that type:
// - I32 and U8 as integers, wrapping on overflow (two's complement for I32,
//   mod 256 for U8, as NCCL's ncclInt32 / ncclUint8 do); Max and Min exact;
// - BF16: an addition widens its operands to f32 and rounds the sum to bf16
//   (nearest even), so a sum over n ranks may round at every hop, not once
//   (Gloo's all-reduce and NCCL's reductions do; Gloo's reduce-scatter sums
//   in f32 and rounds once). The executors therefore reduce bf16 tensors on
//   f32 copies: one rounding, after the collective. Max and Min pick one of
//   the operands, exact.
// Data movement (gather, all-to-all, broadcast, send/recv) copies the bytes
// of any type as they are: BF16 moves 2 bytes an element.
// Ranks must agree on counts and type; a group of one copies (send/recv and
// a peer outside the group are errors). Errors name the group, the op and
// the rank; a communicator that failed (a dead peer, a timeout) refuses
// every later call.
class Communicator {
public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0; // within the group
  virtual int size() const = 0;
  // The device stream its calls are enqueued on (runtime/device/Device.h's
  // Stream: an NCCL communicator's cudaStream_t); null where calls complete
  // before they return (Gloo).
  virtual void *deviceStream() const { return nullptr; }
  // In place: buf holds count elements on every rank.
  virtual Status allReduce(void *buf, int64_t count, plan::DType type, ReduceOp op) = 0;
  // Rank r contributes recvCounts[r] elements; recv is the concatenation in
  // rank order (uneven counts allowed: balanced chunks).
  virtual Status allGather(const void *send, void *recv, const int64_t *recvCounts,
                           plan::DType type) = 0;
  // send holds the full buffer; rank r receives the reduced chunk r of
  // recvCounts[r] elements (chunks are consecutive in rank order).
  virtual Status reduceScatter(const void *send, void *recv, const int64_t *recvCounts,
                               plan::DType type, ReduceOp op) = 0;
  // send is split into chunks of sendCounts[r] elements going to rank r; recv
  // is the concatenation of what each rank sent here (recvCounts[r] from r).
  virtual Status allToAll(const void *send, const int64_t *sendCounts, void *recv,
                          const int64_t *recvCounts, plan::DType type) = 0;
  // In place: root's count elements of buf replace every other rank's.
  virtual Status broadcast(void *buf, int64_t count, plan::DType type, int root) = 0;
  // One message from this rank to `peer` (a rank of the group, not this
  // one), received by that peer's recv of the same count and type. Messages
  // between two ranks arrive in the order they were sent, in each direction
  // independently. A send completes only with the peer's recv, so no cycle
  // of ranks may all send first. Gloo: both block until done. NCCL: both are
  // enqueued on the communicator's stream.
  virtual Status send(const void *buf, int64_t count, plan::DType type, int peer) = 0;
  virtual Status recv(void *buf, int64_t count, plan::DType type, int peer) = 0;

  // The payload bytes this rank has put on the wire since it connected,
  // over every call that succeeded: what the algorithm each implementation
  // runs sends from this rank, not the size of the result. Each
  // implementation states its rule per operation; a group of one sends
  // nothing. Not counted: transport framing (Gloo's 48-byte preambles and
  // ready notices, TCP/IP headers), GlooCommunicator's 16-byte send/recv
  // headers, NCCL's protocol flags. Safe to read from another thread.
  uint64_t sentBytes() const { return sentBytes_.load(std::memory_order_relaxed); }

protected:
  void countSent(uint64_t bytes) { sentBytes_.fetch_add(bytes, std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> sentBytes_{0};
};

} // namespace sbpflow
