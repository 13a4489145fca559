// Communicator over one Gloo context (TCP): the CPU data plane. Gloo errors
// (a dead peer, a timeout) come back as Status errors naming the collective.
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
  // rendezvous and every collective. `name` prefixes error messages. `host`:
  // the address the TCP device listens on (empty: the host name's address).
  static StatusOr<std::unique_ptr<GlooCommunicator>>
  connect(gloo::rendezvous::Store &store, int rank, int size, std::chrono::milliseconds timeout,
          std::string name, const std::string &host = "");
  ~GlooCommunicator() override;

  int rank() const override;
  int size() const override;
  Status allReduce(float *buf, int64_t count, ReduceOp op) override;
  Status allGather(const float *send, float *recv, const int64_t *recvCounts) override;
  Status reduceScatter(const float *send, float *recv, const int64_t *recvCounts,
                       ReduceOp op) override;
  Status allToAll(const float *send, const int64_t *sendCounts, float *recv,
                  const int64_t *recvCounts) override;

private:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, std::string name);
  Status failed(const char *op, const std::exception &e);

  std::shared_ptr<gloo::Context> context_;
  std::string name_;
  uint32_t tag_ = 0;
  // Reduce-scatter receives every peer's chunk here before reducing; it only
  // grows, so steady-state steps do not allocate.
  std::vector<float> scratch_;
  bool broken_ = false; // Gloo contexts are unusable after an IoException
};

} // namespace sbpflow
