// This rank's communicators for a plan: one per (placement, hierarchy
// dimension) whose group has more than one rank, built over a Gloo
// rendezvous store (in a cluster, the driver's CAF store).
#pragma once

#include "runtime/Status.h"
#include "runtime/comm/Communicator.h"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <utility>

namespace gloo::rendezvous {
class Store;
}

namespace sbpflow {
namespace plan {
struct Plan;
}

class CommGroups {
public:
  // Connects one group: this rank is `rank` of `size`; `store` is already
  // private to the group; `name` prefixes errors.
  using Factory = std::function<StatusOr<std::unique_ptr<Communicator>>(
      gloo::rendezvous::Store &store, int rank, int size, const std::string &name)>;

  // Connects every group this rank belongs to, each through `factory`
  // (Gloo on CPUs, NCCL on GPUs).
  static StatusOr<std::unique_ptr<CommGroups>> connect(const plan::Plan &plan, int globalRank,
                                                       gloo::rendezvous::Store &store,
                                                       const Factory &factory);
  // Gloo groups. `timeout` bounds both the rendezvous and every collective (a
  // dead peer becomes an error, not a hang). `host`: the address this rank's
  // Gloo devices listen on (empty: the address of the machine's host name).
  static StatusOr<std::unique_ptr<CommGroups>> connect(const plan::Plan &plan, int globalRank,
                                                       gloo::rendezvous::Store &store,
                                                       std::chrono::milliseconds timeout,
                                                       const std::string &host = "");
  // Null when this rank is not in the placement or the group has one rank.
  Communicator *get(int placement, int hierarchyDim) const;
  // The payload bytes this rank has sent over all its groups
  // (Communicator::sentBytes).
  uint64_t sentBytes() const;

private:
  std::map<std::pair<int, int>, std::unique_ptr<Communicator>> groups_;
};

} // namespace sbpflow
