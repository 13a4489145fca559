// sbp-mixed-precision: bf16 compute with f32 master weights, losses and
// reductions, the policy of torch.autocast(dtype=bfloat16). Runs before
// sbp-autodiff, on the forward program; the backward then follows the types
// (a cast's gradient casts back), so weight gradients reach the optimiser and
// the gradient all-reduce in f32 (sbp-fold-casts lets the producing matmul
// accumulate straight into f32).
//
//  - matmul and causal_attention run in bf16: their float operands are cast
//    to bf16 (a parameter once per function, however many ops read it);
//  - mean, square_sum, clip_scale, metrics, outputs and the loss are f32;
//  - every other op runs in the element type of its float operands (its
//    kernels accumulate in f32 either way); where they differ it runs in f32.
//    A bias follows its input, and layer_norm's gamma and beta stay f32.
// Variables, inputs and fills keep their types.
#include "compiler/Passes.h"
#include "ops/OpSemantics.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

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

  // Runs `op` in `elt`: its float operands (but `keepF32`) are cast to it,
  // its float results (but `keepF32Results`) take it.
  void runIn(Operation *op, Type elt, llvm::ArrayRef<unsigned> keepF32 = {},
             llvm::ArrayRef<unsigned> keepF32Results = {}) {
    for (unsigned i = 0; i < op->getNumOperands(); ++i)
      op->setOperand(i, castTo(op->getOperand(i), llvm::is_contained(keepF32, i) ? f32 : elt));
    for (unsigned i = 0; i < op->getNumResults(); ++i) {
      Value r = op->getResult(i);
      if (!isFloatTensor(r))
        continue;
      Type want = llvm::is_contained(keepF32Results, i) ? f32 : elt;
      r.setType(llvm::cast<RankedTensorType>(r.getType()).clone(want));
    }
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

  LogicalResult rewrite(Operation *op) {
    return llvm::TypeSwitch<Operation *, LogicalResult>(op)
        .Case<InputOp, ParameterOp, FillOp, CastOp, func::ReturnOp>(
            [](Operation *) { return success(); })
        .Case<MatmulOp, CausalAttentionOp>([&](Operation *o) {
          runIn(o, bf16);
          return success();
        })
        .Case<MeanOp, SquareSumOp, ClipScaleOp, MetricOp, OutputOp, MinimizeOp>([&](Operation *o) {
          runIn(o, f32);
          return success();
        })
        .Case([&](BiasAddOp o) {
          runIn(o, elementOf(o.getX()));
          return success();
        })
        .Case([&](LayerNormOp o) {
          runIn(o, elementOf(o.getX()), /*keepF32=*/{1, 2});
          return success();
        })
        .Case<SoftmaxXentOp, CountCorrectOp>([&](Operation *o) {
          // The logits' type; the losses and counts are f32.
          runIn(o, elementOf(o->getOperand(0)), {}, /*keepF32Results=*/{0});
          return success();
        })
        .Case<AddOp, ReluOp, GeluOp, SoftmaxOp, DropoutOp, ReshapeOp, TransposeOp, NarrowOp,
              ConcatOp, EmbeddingOp>([&](Operation *o) {
          runIn(o, common(o));
          return success();
        })
        .Default([](Operation *o) {
          return o->emitOpError("has no mixed-precision rule; sbp-mixed-precision runs on the "
                                "forward program, before sbp-autodiff");
        });
  }
};

struct MixedPrecisionPass : public PassWrapper<MixedPrecisionPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(MixedPrecisionPass)
  StringRef getArgument() const override { return "sbp-mixed-precision"; }
  StringRef getDescription() const override {
    return "bf16 matmuls and attention with f32 master weights, losses and reductions";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<SbpDialect>();
    registerSbpOpSemantics(registry);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    Rewriter rewriter(module.getContext());
    for (auto fn : module.getOps<func::FuncOp>())
      if (!fn.isExternal() && failed(rewriter.run(fn)))
        return signalPassFailure();
  }
};

} // namespace

std::unique_ptr<Pass> mlir::sbp::createMixedPrecisionPass() {
  return std::make_unique<MixedPrecisionPass>();
}
