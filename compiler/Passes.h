// The sbpflow compiler passes (one per file) and their registration with the
// MLIR pass registry (for sbpflow-opt and the pipeline).
#pragma once

#include "ir/SbpDialect.h"

#include "mlir/Pass/Pass.h"

#include <cstdint>
#include <memory>

namespace mlir::sbp {

std::unique_ptr<Pass> createMixedPrecisionPass();
std::unique_ptr<Pass> createAutodiffPass();
std::unique_ptr<Pass> createFoldCastsPass();
std::unique_ptr<Pass> createFuseBiasGeluPass();
std::unique_ptr<Pass> createPropagatePass();
std::unique_ptr<Pass> createInsertBoxingPass();
std::unique_ptr<Pass> createVerifyBoxingPass();
std::unique_ptr<Pass> createBucketGradientsPass(int64_t bucketBytes = 1 << 20);
std::unique_ptr<Pass> createPlanMemoryPass();
// Emits the plan; `outputPath` (may be empty) receives the flatbuffer and
// `print` dumps it as text to stdout (for FileCheck).
std::unique_ptr<Pass> createEmitPlanPass(std::string outputPath = "", bool print = false);

// The operand whose buffer result `i` of `op` reuses, or null: an all-reduce
// works in place when it is its operand's only reader (another reader would see
// the reduced bytes). sbp-plan-memory and sbp-emit-plan share this rule.
Value inPlaceOperand(Operation *op, unsigned i);

// Registers every pass above and the pipeline `sbp-compile`.
void registerSbpPasses();

// Proves that every op's operand and result SBPs form one of its signatures
// (no implicit redistribution is left); emits a located error otherwise.
LogicalResult verifyNoImplicitBoxing(ModuleOp module);

// The error for an op whose SBPs match none of its signatures: names the op,
// its inputs' SBPs and every signature it supports.
InFlightDiagnostic emitNoSignatureError(Operation *op, unsigned dim, llvm::ArrayRef<SbpDim> inputs,
                                        llvm::ArrayRef<SbpSignature> supported,
                                        llvm::StringRef why);

// Debug output switched on by sbpflow-opt's --debug-only=<type>; LLVM's own
// flag exists only in builds with assertions, which Debian's LLVM is not.
void setSbpDebugTypes(llvm::ArrayRef<std::string> types);
bool isSbpDebugEnabled(llvm::StringRef type);

} // namespace mlir::sbp
