// Reading the plan schema: its shapes and SBPs as runtime/Shape.h types,
// placements' ranks, and what Ops.def says of an op kind.
#include "runtime/plan/PlanTypes.h"

namespace sbpflow {
namespace {
template <typename T> size_t len(const flatbuffers::Vector<T> *v) { return v ? v->size() : 0; }
} // namespace

Shape toShape(const flatbuffers::Vector<int64_t> *shape) {
  Shape s;
  for (size_t i = 0; i < len(shape); ++i)
    s.push_back(shape->Get(i));
  return s;
}

NdSbp toNdSbp(const flatbuffers::Vector<const plan::SbpDim *> *sbp) {
  NdSbp out;
  for (size_t i = 0; i < len(sbp); ++i) {
    SbpDim d;
    d.kind = static_cast<SbpKind>(static_cast<int8_t>(sbp->Get(i)->kind()));
    d.axis = sbp->Get(i)->axis();
    out.push_back(d);
  }
  return out;
}

bool holdsVariableShards(const plan::Variable &v, const NdSbp &sbp) {
  NdSbp own = toNdSbp(v.sbp());
  const int d = v.replica_dim();
  if (d >= 0 && static_cast<size_t>(d) < own.size() && sbp.size() == own.size() &&
      sbp[d].kind == SbpKind::PartialSum)
    own[d] = sbp[d];
  return own == sbp;
}

std::vector<int64_t> toHierarchy(const plan::Placement &placement) {
  std::vector<int64_t> h;
  for (size_t i = 0; i < len(placement.hierarchy()); ++i)
    h.push_back(placement.hierarchy()->Get(i));
  return h;
}

int rankIndexIn(const plan::Placement &placement, int globalRank) {
  for (size_t i = 0; i < len(placement.ranks()); ++i)
    if (placement.ranks()->Get(i) == globalRank)
      return static_cast<int>(i);
  return -1;
}

const char *opName(plan::OpKind op) {
  const OpInfo *info = opInfo(op);
  return info ? info->name : "";
}

bool isCollective(plan::OpKind op) {
  const OpInfo *info = opInfo(op);
  return info && info->category == OpCategory::Collective;
}

size_t dtypeSize(plan::DType dtype) {
  return dtype == plan::DType::BF16 ? 2 : dtype == plan::DType::U8 ? 1 : 4;
}

} // namespace sbpflow
