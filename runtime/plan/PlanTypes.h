// Reading the plan schema (runtime/plan/plan.fbs): conversions to
// runtime/Shape.h types and what Ops.def says of an op kind. No checks: the
// plan loader (PlanLoader.h) verifies a plan before anything reads it.
#pragma once

#include "runtime/Shape.h"
#include "runtime/plan/OpInfo.h"
#include "runtime/plan/plan_generated.h"

#include <cstdint>
#include <vector>

namespace sbpflow {

// Conversions from the schema to runtime/Shape.h types.
Shape toShape(const flatbuffers::Vector<int64_t> *shape);
NdSbp toNdSbp(const flatbuffers::Vector<const plan::SbpDim *> *sbp);
std::vector<int64_t> toHierarchy(const plan::Placement &placement);
// Position of `globalRank` in the placement's rank list, or -1.
int rankIndexIn(const plan::Placement &placement, int globalRank);
// Whether a tensor laid out as `sbp` holds each rank's shard of variable `v`:
// v's own nd-SBP, or, for a per-replica variable (local SGD), partial on its
// replica dimension (the replicas' values are the terms of a sum).
bool holdsVariableShards(const plan::Variable &v, const NdSbp &sbp);
const char *opName(plan::OpKind op);
bool isCollective(plan::OpKind op);
size_t dtypeSize(plan::DType dtype);

} // namespace sbpflow
