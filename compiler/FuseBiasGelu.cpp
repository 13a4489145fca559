// sbp-fuse-bias-gelu: a bias_add whose result feeds gelu becomes one
// sbp.bias_gelu producing both the pre-activation (which gelu_grad still
// reads) and the activation, so the pre-activation is written once and not
// read back. Runs after sbp-autodiff (the fused op has no gradient rule) and
// before sbp-propagate (which lays out both results alike).
#include "compiler/Passes.h"

namespace mlir::sbp {
#define GEN_PASS_DEF_FUSEBIASGELUPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

struct FuseBiasGeluPass : public sbp::impl::FuseBiasGeluPassBase<FuseBiasGeluPass> {
  void runOnOperation() override {
    // A gelu whose result the user laid out otherwise than the bias_add's
    // (types carry the SBP) stays unfused: both results share one layout.
    auto fusible = [](BiasAddOp add, Operation *user) {
      auto gelu = dyn_cast<GeluOp>(user);
      return gelu && gelu.getResult().getType() == add.getResult().getType();
    };
    llvm::SmallVector<BiasAddOp> candidates;
    getOperation().walk([&](BiasAddOp add) {
      if (llvm::any_of(add.getResult().getUsers(), [&](Operation *u) { return fusible(add, u); }))
        candidates.push_back(add);
    });
    for (BiasAddOp add : candidates) {
      OpBuilder b(add);
      Type type = add.getResult().getType();
      auto fused = b.create<BiasGeluOp>(add.getLoc(), type, type, add.getX(), add.getBias());
      // Every gelu of the pre-activation is the fused op's activation.
      for (Operation *user : llvm::make_early_inc_range(add.getResult().getUsers()))
        if (fusible(add, user)) {
          user->getResult(0).replaceAllUsesWith(fused.getY());
          user->erase();
        }
      add.getResult().replaceAllUsesWith(fused.getPre());
      add.erase();
    }
  }
};

} // namespace
