// The `sbp` dialect: one header for its attributes, ops, interface and the
// helpers that read and write the SBP encoding of tensor types.
#pragma once

#include "ir/SbpSignature.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Attributes.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "runtime/plan/plan_generated.h"

#include "ir/SbpDialect.h.inc"
#include "ir/SbpEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "ir/SbpAttrs.h.inc"

#include "ir/SbpInterfaces.h.inc"

namespace mlir::OpTrait {
// PlanKind<"K"> in ODS (SbpOps.td): the op's plan kind, for PlanOpInterface.
template <::sbpflow::plan::OpKind Kind> struct PlanKind {
  template <typename ConcreteType> class Impl : public TraitBase<ConcreteType, Impl> {
  public:
    static constexpr ::sbpflow::plan::OpKind getPlanKind() { return Kind; }
  };
};
} // namespace mlir::OpTrait

#define GET_OP_CLASSES
#include "ir/SbpOps.h.inc"

namespace mlir {
namespace sbp {

// The SBP encoding of a ranked tensor type, or null when it has none (SBP not
// chosen yet).
SbpTensorAttr getSbp(Type type);
// The same type with `encoding` replaced (null removes it).
RankedTensorType withSbp(Type type, SbpTensorAttr encoding);
inline RankedTensorType withoutSbp(Type type) { return withSbp(type, nullptr); }
// Sets the type of `value` to carry `encoding`.
void setSbp(Value value, SbpTensorAttr encoding);

SbpTensorAttr makeSbpTensorAttr(MLIRContext *ctx, llvm::StringRef placement,
                                llvm::ArrayRef<SbpDim> dims);
// The nd-SBP of an encoding (empty for null).
llvm::SmallVector<SbpDim, 2> getSbpDims(SbpTensorAttr attr);

// Shape inference shared by the verifiers and the op semantics: the result
// types (no encoding) of an sbp compute op from its operands; emits located
// errors and fails on a shape or element type mismatch.
LogicalResult inferComputeResultTypes(Operation *op,
                                      llvm::SmallVectorImpl<RankedTensorType> &results);

// The shape of sbp.matmul's result for operands of shapes `a` and `b`, each
// read as the matrix [prod(leading dims), last dim] and transposed as asked:
// a's kept dims (its leading dims, or its last when transposed) followed by
// b's (its last, or its leading dims when transposed). Inner sizes are not
// checked here.
llvm::SmallVector<int64_t> matmulResultShape(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b,
                                             bool transposeA, bool transposeB);

} // namespace sbp
} // namespace mlir
