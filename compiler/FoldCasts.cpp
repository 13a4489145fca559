// sbp-fold-casts: after sbp-autodiff under mixed precision, a weight or bias
// gradient is a bf16 matmul or reduce_rows whose only use casts it to f32 (the
// gradient of the parameter's cast). Such a producer accumulates in f32 anyway
// (its result's Ops.def letter is W: f32 or the operands' type): it writes the
// f32 result directly, and the rounding to bf16 in between disappears. So the
// partial gradients that sbp-insert-boxing all-reduces are f32 from the start.
#include "compiler/Passes.h"

namespace mlir::sbp {
#define GEN_PASS_DEF_FOLDCASTSPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

struct FoldCastsPass : public sbp::impl::FoldCastsPassBase<FoldCastsPass> {
  void runOnOperation() override {
    llvm::SmallVector<CastOp> folds;
    getOperation().walk([&](CastOp cast) {
      auto to = llvm::cast<RankedTensorType>(cast.getResult().getType());
      auto produced = dyn_cast<OpResult>(cast.getX());
      if (to.getElementType().isF32() && produced &&
          resultTypeRule(produced.getOwner(), produced.getResultNumber()) == 'W' &&
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
