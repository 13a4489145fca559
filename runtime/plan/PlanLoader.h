// Loading a plan file: the flatbuffers verifier first (offsets in an
// unverified buffer are attacker-controlled), then a semantic check that
// reports the first problem naming the program, task or tensor.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"
#include "runtime/plan/PlanTypes.h"
#include "runtime/plan/plan_generated.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sbpflow {

constexpr uint32_t kPlanVersion = 6;

// A verified plan and the bytes it lives in (the plan points into them).
class LoadedPlan {
public:
  LoadedPlan() = default;
  explicit LoadedPlan(std::vector<uint8_t> bytes)
      : bytes_(std::make_shared<std::vector<uint8_t>>(std::move(bytes))) {}
  const plan::Plan *plan() const { return plan::GetPlan(bytes_->data()); }
  const plan::Plan *operator->() const { return plan(); }
  const std::vector<uint8_t> &bytes() const { return *bytes_; }

private:
  // Shared so that a LoadedPlan can be copied cheaply; the bytes never move.
  std::shared_ptr<const std::vector<uint8_t>> bytes_;
};

StatusOr<LoadedPlan> loadPlanFile(const std::string &path);
StatusOr<LoadedPlan> loadPlanBuffer(std::vector<uint8_t> bytes);
inline StatusOr<LoadedPlan> loadPlanBuffer(const uint8_t *data, size_t size) {
  return loadPlanBuffer(std::vector<uint8_t>(data, data + size));
}

// The semantic checks alone, on a buffer that already passed the verifier.
Status checkPlan(const plan::Plan &plan);

// What global rank `globalRank` allocates for `plan`: every program's arena
// and its shards of the variables, in bytes.
struct RankMemory {
  int64_t arenas = 0, variables = 0;
  int64_t total() const { return arenas + variables; }
};
RankMemory rankMemory(const plan::Plan &plan, int globalRank);

// Whether global rank `globalRank` can run `plan` on a `device` with
// `availableBytes` of memory: every placement holding the rank is on that
// kind of device (a CPU plan is not run on a GPU, nor the reverse), and what
// the rank allocates fits. The error says which placement, or how many bytes
// the rank needs and has (the caller names the rank). `availableBytes` < 0
// skips the memory check.
Status checkRankFits(const plan::Plan &plan, int globalRank, plan::DeviceKind device,
                     int64_t availableBytes);

// Human-readable dump for `sbpflow inspect`.
std::string describePlan(const plan::Plan &plan);

// Local SGD: the plan's first per-replica variable (replica_dim >= 0), whose
// placement and replica dimension the replicas' groups are; null without one.
const plan::Variable *firstReplicated(const plan::Plan &plan);

} // namespace sbpflow
