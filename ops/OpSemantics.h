// Per-op semantics of the sbp dialect (shapes, SBP signatures, gradient rules,
// flops) attached to the ops as external models of SbpOpInterface, and the
// alpha-beta cost model the compiler uses to choose among signatures.
#pragma once

#include "ir/SbpDialect.h"

namespace mlir {
class DialectRegistry;
namespace sbp {

// Adds the SbpOpInterface models to `registry` (applied when the sbp dialect
// loads).
void registerSbpOpSemantics(DialectRegistry &registry);
// Loads the sbp dialect into `ctx` and makes sure its ops carry the models;
// for contexts created elsewhere (e.g. by the frontend).
void ensureSbpOpSemantics(MLIRContext *ctx);

// Cost model (seconds). Link class parameters of DESIGN.md's alpha-beta model;
// one class is enough while a placement lives on one node.
struct CostModel {
  double alpha = 5e-6;          // per collective launch
  double bytesPerSecond = 5e9;  // link bandwidth
  double flopsPerSecond = 5e10; // device compute
};

// Time to move a tensor of `bytes` (the size held per group of `groupSize`
// ranks before the change) from `from` to `to` on one hierarchy dimension;
// infinity where no boxing exists (e.g. P(sum) -> P(max)).
double boxingCost(const CostModel &model, SbpDim from, SbpDim to, double bytes, int64_t groupSize);

// Bytes of one element of a tensor type (f32, i32: 4).
int64_t elementBytes(Type elementType);

} // namespace sbp
} // namespace mlir
