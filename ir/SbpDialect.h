// The `sbp` dialect: one header for its attributes, ops, interfaces and the
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

#include "ir/SbpAttrInterfaces.h.inc"

#define GET_ATTRDEF_CLASSES
#include "ir/SbpAttrs.h.inc"

namespace mlir::sbp {
// An op's policy under sbp-mixed-precision (torch.autocast's bf16 policy):
// the element type its operands and results of Ops.def letter T, A or W take.
enum class Precision {
  Unchanged,    // sources and casts keep their types
  Bf16,         // matmul, attention
  F32,          // reductions to a scalar, losses' means, training ops
  FirstOperand, // the first operand's type (a bias follows its input)
  Common,       // the float operands' common type, f32 where they differ
};

// The gradient rule of an op that has none (SbpOpInterface's default).
LogicalResult noGradient(Operation *op);

// The verifiers every op of an interface runs (SbpInterfaces.td).
LogicalResult verifyInferredResultTypes(Operation *op);
LogicalResult verifyBoxing(Operation *op);
// The encodings of `op`'s operands and results: a declared placement, one
// SBP per hierarchy dimension, split axes inside the tensor's rank, and one
// placement for the whole op.
LogicalResult verifyEncodings(Operation *op, SymbolTableCollection &symbols);

// Whether a codec sends k (index, value) pairs, k from a density.
bool isSparseCodec(CodecKind kind);
// Whether L-GreCo adapts a codec's parameter: top-k densities (plain or
// with 2-bit values), QSGD's bits, PowerSGD's rank.
bool lgrecoAdapts(CodecKind kind);
// Whether a codec keeps an SGD's momentum before compressing (DGC's momentum
// correction; EF-SignSGD as its reference code).
bool takesMomentum(CodecKind kind);
// Whether, under AdamW, a codec compresses the AdamW update (keeping each
// rank's moments, momentum = beta1, beta2, eps) rather than the gradient:
// DGC (momentum correction's idea) and top-k, plain or with 2-bit values.
bool compressesAdamUpdate(CodecKind kind);
// Every field of a #sbp.codec, at its default (SbpBase.td): read one with
// `of`, change what differs, and `get` the new attribute, so that a pass
// changing a few fields names only those.
struct CodecFields {
  CodecKind kind = CodecKind::topk;
  double density = 0;
  int64_t bits = 0, rank = 0;
  double momentum = 0, clip = 0;
  int64_t warmup = 0, epochSteps = 0, bucket = 512, seed = 0;
  double beta2 = 0, eps = 0;
  int64_t chunk = 0;
  double decay = 1, temperature = 0;
  int64_t senders = 0;
  double stepWeight = 0;

  static CodecFields of(CodecAttr codec);
  CodecAttr get(MLIRContext *ctx) const;
};
// The codec `kind` with its one parameter `value` (a density, bits or a
// rank, whichever it takes) and every other field at its default.
CodecAttr codecWith(MLIRContext *ctx, CodecKind kind, double value);
} // namespace mlir::sbp

#include "ir/SbpInterfaces.h.inc"

namespace mlir::OpTrait {
// PlanKind<"K"> in ODS (SbpOps.td): the op's plan kind, for PlanOpInterface.
template <::sbpflow::plan::OpKind Kind> struct PlanKind {
  template <typename ConcreteType> class Impl : public TraitBase<ConcreteType, Impl> {
  public:
    static constexpr ::sbpflow::plan::OpKind getPlanKind() { return Kind; }
  };
};
// PrecisionPolicy<"P"> in ODS: the op's mixed-precision policy.
template <::mlir::sbp::Precision P> struct PrecisionPolicy {
  template <typename ConcreteType> class Impl : public TraitBase<ConcreteType, Impl> {
  public:
    static constexpr ::mlir::sbp::Precision getPrecision() { return P; }
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
// The same type partial (sum) on hierarchy dimension `dim` of its encoding,
// which it must have: a per-replica variable (local SGD) viewed as the terms
// of a sum over its replicas.
RankedTensorType withPartialSum(Type type, unsigned dim);
// Sets the type of `value` to carry `encoding`.
void setSbp(Value value, SbpTensorAttr encoding);

SbpTensorAttr makeSbpTensorAttr(MLIRContext *ctx, llvm::StringRef placement,
                                llvm::ArrayRef<SbpDim> dims);
// The nd-SBP of an encoding (empty for null).
llvm::SmallVector<SbpDim, 2> getSbpDims(SbpTensorAttr attr);

// The element-type rule (runtime/plan/Ops.def: T, F, I, A, W or C) of
// operand / result `i` of a plan op; 0 for an op that becomes no plan task.
char operandTypeRule(Operation *op, unsigned i);
char resultTypeRule(Operation *op, unsigned i);

} // namespace sbp
} // namespace mlir
