// The whole compiler pipeline: an sbp module (from the frontend or a .mlir
// file) to plan bytes.
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/LogicalResult.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <vector>

namespace mlir::sbp {

// Adds autodiff -> propagate -> insert-boxing (+ check) -> bucket-gradients
// -> plan-memory to `pm` (what `sbp-compile` runs).
void buildCompilePipeline(OpPassManager &pm);

// Runs the pipeline on `module` (in place) and emits the plan. Errors are
// reported through the module's context diagnostics.
LogicalResult compileModule(ModuleOp module, std::vector<uint8_t> &plan);

// Parses a .mlir file (errors carry file:line:col) and compiles it.
LogicalResult compileFileToPlan(llvm::StringRef path, std::vector<uint8_t> &plan);

} // namespace mlir::sbp

namespace sbpflow {
// The frontend calls these unqualified from namespace sbpflow.
using mlir::sbp::compileFileToPlan;
using mlir::sbp::compileModule;
} // namespace sbpflow
