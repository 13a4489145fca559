// The alpha-beta cost model the compiler uses to choose among SBP signatures
// and boxing orders (an op's own cost, its flops, is SbpOpInterface's).
#pragma once

#include "ir/SbpDialect.h"

namespace mlir {
namespace sbp {

// Cost model (seconds). Link class parameters of DESIGN.md's alpha-beta model;
// one class is enough while a placement lives on one node.
struct CostModel {
  double alpha = 5e-6;          // per collective launch
  double bytesPerSecond = 5e9;  // link bandwidth
  double flopsPerSecond = 5e10; // device compute
  // A gradient codec's own work (encode, and decode of two ranks'
  // payloads), seconds per gradient element (PowerSGD's per element and
  // rank), as bench/CodecCosts.cpp measures it (`build/bin/codec_costs`,
  // this 2-core machine, 2026-12-07); sbp-compress-gradients' codec-costs
  // option reads that program's JSON in their place.
  double topk2bitSecondsPerElement = 2.3e-9;
  double powersgdSecondsPerElementRank = 1.5e-9;
};

// Time to move a tensor of `bytes` (the size held per group of `groupSize`
// ranks before the change) from `from` to `to` on one hierarchy dimension;
// infinity where no boxing exists (e.g. P(sum) -> P(max)).
double boxingCost(const CostModel &model, SbpDim from, SbpDim to, double bytes, int64_t groupSize);

// Bytes of one element of a tensor type (f32, i32: 4; bf16: 2).
int64_t elementBytes(Type elementType);

// Bytes of `type` that one group of hierarchy dimension `dim` moves under the
// nd-SBP `sbp`: the global size divided by every other dimension that splits
// it (a partial or broadcast dimension does not shrink the data). bf16 counts
// 4 bytes an element: the executors run collectives on f32 copies.
double groupBytes(RankedTensorType type, llvm::ArrayRef<SbpDim> sbp,
                  llvm::ArrayRef<int64_t> hierarchy, unsigned dim);

// Whether changing `sbp[d]` to `to` is a step no collective over dim d can
// do: it splits or unsplits an axis that a later (inner) dimension of `sbp`
// also splits. Splits of one axis nest in hierarchy order, so the inner
// dimension's chunks would move between its groups. (Changing an inner dim
// under an outer split of the same axis is fine.)
bool nestedSplitStep(llvm::ArrayRef<SbpDim> sbp, unsigned d, SbpDim to);

// One step of an nd boxing: hierarchy dimension `dim` changes to `to`.
struct NdBoxingStep {
  unsigned dim = 0;
  SbpDim to;
};

struct NdBoxingPlan {
  double cost = 0.0;
  llvm::SmallVector<NdBoxingStep, 4> steps;
  // Whether some step is an all-reduce (P -> B).
  bool allReduces = false;
};
// The cheapest way to box `type` from nd-SBP `from` to `to` one hierarchy
// dimension at a time: `steps` run in order and `cost` is the sum of the
// steps' boxingCost, each step moving the bytes its group holds given the
// SBPs the other dimensions have at that point. Every order of the changed
// dimensions (each changing once, straight to `to`) is tried; ties keep
// shrinking steps (to a split) first. Where no such order exists (an axis
// split on two dimensions would have to change on the outer one) and
// `detours` is set, the plan gathers the inner splits first, changes the
// outer dimensions and splits again (the only way; it moves more bytes).
// `cost` is infinity where no plan exists; 0 when nothing changes. With
// `bucketedAllReduce` the all-reduce steps pay no launch (alpha): they are
// gradients that sbp-bucket-gradients fuses with others.
NdBoxingPlan planNdBoxing(const CostModel &model, RankedTensorType type,
                          llvm::ArrayRef<SbpDim> from, llvm::ArrayRef<SbpDim> to,
                          llvm::ArrayRef<int64_t> hierarchy, bool bucketedAllReduce = false,
                          bool detours = true);

} // namespace sbp
} // namespace mlir
