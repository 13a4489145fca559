// Loading a plan file: the flatbuffers verifier first (offsets in an
// unverified buffer are attacker-controlled), then a semantic check that
// reports the first problem naming the program, task or tensor.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"
#include "runtime/plan/plan_generated.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sbpflow {

constexpr uint32_t kPlanVersion = 3;

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

// Human-readable dump for `sbpflow inspect`.
std::string describePlan(const plan::Plan &plan);

// Conversions from the schema to runtime/Shape.h types.
Shape toShape(const flatbuffers::Vector<int64_t> *shape);
NdSbp toNdSbp(const flatbuffers::Vector<const plan::SbpDim *> *sbp);
std::vector<int64_t> toHierarchy(const plan::Placement &placement);
// Position of `globalRank` in the placement's rank list, or -1.
int rankIndexIn(const plan::Placement &placement, int globalRank);
const char *opName(plan::OpKind op);
bool isCollective(plan::OpKind op);
size_t dtypeSize(plan::DType dtype);

} // namespace sbpflow
