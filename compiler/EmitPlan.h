// Plan emission: turns a compiled sbp module (after sbp-plan-memory) into the
// flatbuffers plan of runtime/plan/plan.fbs.
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <vector>

namespace mlir::sbp {

// One Program per func.func; fails with a located error on anything the plan
// cannot express (e.g. a tensor without SBP or offset).
LogicalResult emitPlan(ModuleOp module, std::vector<uint8_t> &plan);

} // namespace mlir::sbp
