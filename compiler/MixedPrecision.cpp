// sbp-mixed-precision: bf16 compute with f32 master weights, losses and
// reductions, the policy of torch.autocast(dtype=bfloat16). Runs before
// sbp-autodiff, on the forward program; the backward then follows the types
// (a cast's gradient casts back), so weight gradients reach the optimiser and
// the gradient all-reduce in f32 (sbp-fold-casts lets the producing matmul
// accumulate straight into f32).
//
// Each op says in ODS which element type it computes in (Precision<...>: bf16,
// f32, its first operand's, its float operands' common type, or unchanged),
// and its plan kind's Ops.def letters say which operands and results take it
// (T, A, W), which stay f32 (F) and which are no floats (I). An op without a
// plan kind (metric, output, minimize) takes it everywhere. Float operands
// are cast where needed, once per value and type.
#include "compiler/Passes.h"

#include "llvm/ADT/DenseMap.h"

namespace mlir::sbp {
#define GEN_PASS_DEF_MIXEDPRECISIONPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

bool isFloatTensor(Value v) {
  auto t = llvm::dyn_cast<RankedTensorType>(v.getType());
  return t && (t.getElementType().isF32() || t.getElementType().isBF16());
}

Type elementOf(Value v) { return llvm::cast<RankedTensorType>(v.getType()).getElementType(); }

class Rewriter {
public:
  explicit Rewriter(MLIRContext *ctx) : f32(Float32Type::get(ctx)), bf16(BFloat16Type::get(ctx)) {}

  LogicalResult run(func::FuncOp fn) {
    casts.clear();
    for (Operation &op : llvm::make_early_inc_range(fn.getBody().front()))
      if (failed(rewrite(&op)))
        return failure();
    return success();
  }

private:
  Type f32, bf16;
  // (value, element type) -> its cast, so each value is converted once.
  llvm::DenseMap<std::pair<Value, Type>, Value> casts;

  // `v` with element type `elt`, by a cast placed right after its producer
  // (keeping v's SBP, since a cast is elementwise).
  Value castTo(Value v, Type elt) {
    if (!isFloatTensor(v) || elementOf(v) == elt)
      return v;
    Value &cached = casts[{v, elt}];
    if (cached)
      return cached;
    OpBuilder b(v.getContext());
    if (Operation *def = v.getDefiningOp())
      b.setInsertionPointAfter(def);
    else
      b.setInsertionPointToStart(llvm::cast<BlockArgument>(v).getOwner());
    auto type = llvm::cast<RankedTensorType>(v.getType()).clone(elt);
    cached = b.create<CastOp>(v.getLoc(), type, v).getResult();
    return cached;
  }

  // The element type the float operands agree on, f32 where they differ.
  Type common(Operation *op) {
    Type elt;
    for (Value v : op->getOperands())
      if (isFloatTensor(v)) {
        if (elt && elt != elementOf(v))
          return f32;
        elt = elementOf(v);
      }
    return elt ? elt : f32;
  }

  // The type a float operand or result of Ops.def letter `rule` takes when
  // the op computes in `elt` (0: the op has no plan kind).
  Type byRule(char rule, Type elt) { return rule == 'F' ? f32 : elt; }

  LogicalResult rewrite(Operation *op) {
    if (op->hasTrait<OpTrait::IsTerminator>())
      return success();
    auto policy = dyn_cast<PrecisionOpInterface>(op);
    if (!policy)
      return op->emitOpError("has no mixed-precision rule; sbp-mixed-precision runs on the "
                             "forward program, before sbp-autodiff");
    Type elt;
    switch (policy.getPrecision()) {
    case Precision::Unchanged:
      return success();
    case Precision::Bf16:
      elt = bf16;
      break;
    case Precision::F32:
      elt = f32;
      break;
    case Precision::FirstOperand:
      elt = elementOf(op->getOperand(0));
      break;
    case Precision::Common:
      elt = common(op);
      break;
    }
    for (unsigned i = 0; i < op->getNumOperands(); ++i)
      op->setOperand(i, castTo(op->getOperand(i), byRule(operandTypeRule(op, i), elt)));
    for (unsigned i = 0; i < op->getNumResults(); ++i) {
      Value r = op->getResult(i);
      if (isFloatTensor(r))
        r.setType(
            llvm::cast<RankedTensorType>(r.getType()).clone(byRule(resultTypeRule(op, i), elt)));
    }
    return success();
  }
};

struct MixedPrecisionPass : public sbp::impl::MixedPrecisionPassBase<MixedPrecisionPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    Rewriter rewriter(module.getContext());
    for (auto fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal() && failed(rewriter.run(fn)))
        return signalPassFailure();
  }
};

} // namespace
