// sbp-verify-boxing: proves that no implicit redistribution is left: every
// op's operand and result SBPs form one of its signatures on every hierarchy
// dimension, and every tensor has an SBP.
#include "compiler/Passes.h"

namespace mlir::sbp {
#define GEN_PASS_DEF_VERIFYBOXINGPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

InFlightDiagnostic mlir::sbp::emitNoSignatureError(Operation *op, unsigned dim,
                                                   llvm::ArrayRef<SbpDim> inputs,
                                                   llvm::ArrayRef<SbpSignature> supported,
                                                   llvm::StringRef why) {
  std::string in;
  for (size_t i = 0; i < inputs.size(); ++i)
    in += (i ? " x " : "") + toString(inputs[i]);
  if (inputs.empty())
    in = "()";
  std::string list;
  for (size_t i = 0; i < supported.size(); ++i)
    list += (i ? "; " : "") + supported[i].str();
  InFlightDiagnostic diag = op->emitOpError();
  diag << "has no SBP signature for inputs " << in << " on hierarchy dim " << dim << ": " << why
       << "; supported signatures: " << (list.empty() ? std::string("none") : list);
  return diag;
}

LogicalResult mlir::sbp::verifyNoImplicitBoxing(ModuleOp module) {
  for (auto fn : module.getOps<func::FuncOp>()) {
    for (Operation &op : fn.getBody().front()) {
      auto iface = dyn_cast<SbpOpInterface>(&op);
      if (!iface)
        continue;
      FlatSymbolRefAttr placement;
      llvm::SmallVector<llvm::SmallVector<SbpDim, 2>> ins, outs;
      for (Value v : op.getOperands()) {
        SbpTensorAttr enc = getSbp(v.getType());
        if (!enc)
          return op.emitOpError("has an operand without SBP; run sbp-propagate");
        if (placement && placement != enc.getPlacement())
          return op.emitOpError("mixes placements ") << placement << " and " << enc.getPlacement();
        placement = enc.getPlacement();
        ins.push_back(getSbpDims(enc));
      }
      for (Value v : op.getResults()) {
        SbpTensorAttr enc = getSbp(v.getType());
        if (!enc)
          return op.emitOpError("has a result without SBP; run sbp-propagate");
        outs.push_back(getSbpDims(enc));
      }
      size_t levels = !ins.empty() ? ins[0].size() : (!outs.empty() ? outs[0].size() : 0);
      for (unsigned d = 0; d < levels; ++d) {
        llvm::SmallVector<SbpDim> inputs;
        for (auto &s : ins)
          inputs.push_back(s[d]);
        auto candidates = iface.getSbpSignatures(d);
        bool ok = llvm::any_of(candidates, [&](const SbpSignature &sig) {
          if (sig.operands.size() != ins.size() || sig.results.size() != outs.size())
            return false;
          for (size_t i = 0; i < ins.size(); ++i)
            if (sig.operands[i] != ins[i][d])
              return false;
          for (size_t i = 0; i < outs.size(); ++i)
            if (sig.results[i] != outs[i][d])
              return false;
          return true;
        });
        if (!ok) {
          std::string res;
          for (size_t i = 0; i < outs.size(); ++i)
            res += (i ? ", " : "") + toString(outs[i][d]);
          return emitNoSignatureError(&op, d, inputs, candidates,
                                      "result " + (res.empty() ? std::string("()") : res) +
                                          " would need an implicit redistribution");
        }
      }
    }
  }
  return success();
}

namespace {
struct VerifyBoxingPass : public sbp::impl::VerifyBoxingPassBase<VerifyBoxingPass> {
  void runOnOperation() override {
    if (failed(verifyNoImplicitBoxing(getOperation())))
      signalPassFailure();
  }
};
} // namespace
