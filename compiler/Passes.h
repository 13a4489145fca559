// The sbpflow compiler passes (one per file, declared in compiler/Passes.td):
// their create functions and options, and registerSbpPasses() for the MLIR
// pass registry (sbpflow-opt).
#pragma once

#include "ir/SbpDialect.h"

#include "mlir/Pass/Pass.h"

#include <cstdint>
#include <memory>
#include <string>

namespace mlir::sbp {

#define GEN_PASS_DECL
#include "compiler/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/Passes.h.inc"

// The operand whose buffer result `i` of `op` reuses, or null: an all-reduce
// works in place when it is its operand's only reader (another reader would see
// the reduced bytes). sbp-plan-memory and sbp-emit-plan share this rule.
Value inPlaceOperand(Operation *op, unsigned i);

// Whether `ar` reduces a gradient: what it reduces is read only by
// optimisers (and the gradient norm of clipping), possibly through the next
// dimension's all-reduce. sbp-compress-gradients and sbp-bucket-gradients
// share this rule.
bool feedsOptimizer(AllReduceOp ar);

// The codec a spec names (`topk:0.001`, `powersgd:4`, `sign`, ...; the
// grammar of sbp-compress-gradients' policy), or null for `none`; an error
// naming the spec where it is not one.
FailureOr<CodecAttr> parseCodecSpec(MLIRContext *ctx, llvm::StringRef spec,
                                    llvm::function_ref<InFlightDiagnostic()> emitError);

// Puts `codec` on `ar`, the all-reduce of `var`'s gradient, and declares
// the state and step variables it keeps (`<var>.codec.<slot>`: one row per
// rank of the placement; with `lgreco`, the accumulator last). Used by
// sbp-compress-gradients and by sbp-local-sgd (SparseLoCo's outer exchange).
LogicalResult attachCodec(AllReduceOp ar, CodecAttr codec, VariableOp var, LgrecoAttr lgreco,
                          SymbolTable &symbols);

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
