// Collectives over one group of ranks (one dimension of a placement
// hierarchy). Tensors move through Gloo (CPU) or NCCL (GPU), never through
// CAF. Every rank of a group calls the same collectives in the same order.
#pragma once

#include "runtime/Status.h"

#include <cstdint>

namespace sbpflow {

enum class ReduceOp { Sum, Max, Min };

class Communicator {
public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0; // within the group
  virtual int size() const = 0;
  // In place: buf holds count elements on every rank.
  virtual Status allReduce(float *buf, int64_t count, ReduceOp op) = 0;
  // Rank r contributes sendCounts[r] elements; recv is the concatenation in
  // rank order (uneven counts allowed: balanced chunks).
  virtual Status allGather(const float *send, float *recv, const int64_t *recvCounts) = 0;
  // send holds the full buffer; rank r receives the reduced chunk r of
  // recvCounts[r] elements (chunks are consecutive in rank order).
  virtual Status reduceScatter(const float *send, float *recv, const int64_t *recvCounts,
                               ReduceOp op) = 0;
  // send is split into chunks of sendCounts[r] elements going to rank r; recv
  // is the concatenation of what each rank sent here (recvCounts[r] from r).
  virtual Status allToAll(const float *send, const int64_t *sendCounts, float *recv,
                          const int64_t *recvCounts) = 0;
};

} // namespace sbpflow
