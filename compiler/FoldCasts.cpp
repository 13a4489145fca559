// sbp-fold-casts: after sbp-autodiff under mixed precision, a weight or bias
// gradient is a bf16 matmul or reduce_rows whose only use casts it to f32 (the
// gradient of the parameter's cast). The producer accumulates in f32 anyway:
// it writes the f32 result directly, and the rounding to bf16 in between
// disappears. So the partial gradients that sbp-insert-boxing all-reduces are
// f32 from the start.
#include "compiler/Passes.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

struct FoldCastsPass : public PassWrapper<FoldCastsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(FoldCastsPass)
  StringRef getArgument() const override { return "sbp-fold-casts"; }
  StringRef getDescription() const override {
    return "Lets a bf16 matmul or reduce_rows whose only use widens it produce f32 directly";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<SbpDialect>();
  }

  void runOnOperation() override {
    llvm::SmallVector<CastOp> folds;
    getOperation().walk([&](CastOp cast) {
      auto to = llvm::cast<RankedTensorType>(cast.getResult().getType());
      Operation *producer = cast.getX().getDefiningOp();
      if (to.getElementType().isF32() && producer && isa<MatmulOp, ReduceRowsOp>(producer) &&
          cast.getX().hasOneUse())
        folds.push_back(cast);
    });
    for (CastOp cast : folds) {
      Value narrow = cast.getX();
      auto from = llvm::cast<RankedTensorType>(narrow.getType());
      auto to = llvm::cast<RankedTensorType>(cast.getResult().getType());
      // The producer's SBP (if any) stays: the cast is elementwise.
      narrow.setType(
          RankedTensorType::get(from.getShape(), to.getElementType(),
                                from.getEncoding() ? from.getEncoding() : to.getEncoding()));
      cast.getResult().replaceAllUsesWith(narrow);
      cast.erase();
    }
  }
};

} // namespace

std::unique_ptr<Pass> mlir::sbp::createFoldCastsPass() { return std::make_unique<FoldCastsPass>(); }
