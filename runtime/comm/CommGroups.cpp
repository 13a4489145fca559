// Builds this rank's communicators for a plan: for each placement holding the
// rank and each hierarchy dimension of size > 1, the group of ranks that share
// every other coordinate, connected over a PrefixStore named after
// (placement, dim, group index) so that groups never see each other's keys.
#include "runtime/comm/CommGroups.h"

#include "runtime/comm/GlooCommunicator.h"
#include "runtime/plan/PlanTypes.h"

#include <gloo/rendezvous/prefix_store.h>

namespace sbpflow {

StatusOr<std::unique_ptr<CommGroups>> CommGroups::connect(const plan::Plan &plan, int globalRank,
                                                          gloo::rendezvous::Store &store,
                                                          std::chrono::milliseconds timeout,
                                                          const std::string &host) {
  return connect(
      plan, globalRank, store,
      [timeout, host](gloo::rendezvous::Store &groupStore, int rank, int size,
                      const std::string &name) -> StatusOr<std::unique_ptr<Communicator>> {
        auto comm = GlooCommunicator::connect(groupStore, rank, size, timeout, name, host);
        if (!comm)
          return comm.status();
        return std::unique_ptr<Communicator>(comm.take());
      });
}

StatusOr<std::unique_ptr<CommGroups>> CommGroups::connect(const plan::Plan &plan, int globalRank,
                                                          gloo::rendezvous::Store &store,
                                                          const Factory &factory) {
  auto groups = std::make_unique<CommGroups>();
  const auto *placements = plan.placements();
  for (int p = 0; placements && p < static_cast<int>(placements->size()); ++p) {
    const plan::Placement &pl = *placements->Get(p);
    int index = rankIndexIn(pl, globalRank);
    if (index < 0)
      continue;
    std::vector<int64_t> hierarchy = toHierarchy(pl);
    std::vector<int64_t> coord = hierarchyCoord(hierarchy, index);
    for (int d = 0; d < static_cast<int>(hierarchy.size()); ++d) {
      if (hierarchy[d] <= 1)
        continue;
      // The group index is this coordinate with dimension d removed, row-major.
      int64_t group = 0;
      for (int e = 0; e < static_cast<int>(hierarchy.size()); ++e)
        if (e != d)
          group = group * hierarchy[e] + coord[e];
      std::string name = "placement '" + pl.name()->str() + "' dim " + std::to_string(d) +
                         " group " + std::to_string(group);
      gloo::rendezvous::PrefixStore prefixed(
          "p" + std::to_string(p) + "/d" + std::to_string(d) + "/g" + std::to_string(group), store);
      auto comm =
          factory(prefixed, static_cast<int>(coord[d]), static_cast<int>(hierarchy[d]), name);
      if (!comm)
        return comm.status().withContext("rank " + std::to_string(globalRank));
      groups->groups_[{p, d}] = comm.take();
    }
  }
  return groups;
}

Communicator *CommGroups::get(int placement, int hierarchyDim) const {
  auto it = groups_.find({placement, hierarchyDim});
  return it == groups_.end() ? nullptr : it->second.get();
}

uint64_t CommGroups::sentBytes() const {
  uint64_t total = 0;
  for (const auto &[key, comm] : groups_)
    total += comm->sentBytes();
  return total;
}

} // namespace sbpflow
