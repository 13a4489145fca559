// sbp-propagate: gives every unannotated tensor an SBP. In program order each
// op picks, per hierarchy dimension, the signature with the least boxing cost
// (moving each operand from its producer's SBP, alpha-beta model) plus compute
// time over parallelism; SBPs already in a type (user-given) are kept. The
// chosen operand SBPs are recorded as `sbp.operand_sbp` for sbp-insert-boxing.
#include "compiler/Passes.h"
#include "ops/OpSemantics.h"

#include <limits>

using namespace mlir;
using namespace mlir::sbp;

namespace {

struct PropagatePass : public PassWrapper<PropagatePass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(PropagatePass)
  StringRef getArgument() const override { return "sbp-propagate"; }
  StringRef getDescription() const override {
    return "Choose an SBP for every unannotated tensor by the cost model";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<SbpDialect>();
    registerSbpOpSemantics(registry);
  }

  CostModel model;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    ensureSbpOpSemantics(module.getContext());
    SymbolTableCollection symbols;
    canonicalizeUnitDims(module, symbols);
    PlacementOp defaultPlacement;
    for (auto p : module.getOps<PlacementOp>()) {
      defaultPlacement = p;
      break;
    }
    for (auto fn : module.getOps<func::FuncOp>()) {
      for (Operation &op : fn.getBody().front())
        if (failed(propagate(&op, symbols, defaultPlacement)))
          return signalPassFailure();
      // Results may have changed type: keep the function type in step.
      if (auto ret = dyn_cast<func::ReturnOp>(fn.getBody().front().getTerminator()))
        fn.setFunctionType(
            FunctionType::get(&getContext(), fn.getArgumentTypes(), ret.getOperandTypes()));
    }
  }

  // On a hierarchy dimension of one rank, S(i), B and P hold the same data:
  // B is the canonical form, so a one-rank placement (or the unit dimension
  // of a mesh such as [1, 4]) needs no boxing. User-given SBPs are rewritten
  // too; they mean the same thing.
  void canonicalizeUnitDims(ModuleOp module, SymbolTableCollection &symbols) {
    auto canonical = [&](Operation *from, Type type) -> Type {
      SbpTensorAttr enc = getSbp(type);
      if (!enc)
        return type;
      auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(from, enc.getPlacement());
      if (!placement)
        return type; // the verifier reports it
      llvm::SmallVector<SbpDim, 2> dims = getSbpDims(enc);
      bool changed = false;
      for (auto [d, size] : llvm::enumerate(placement.getHierarchy()))
        if (size == 1 && d < dims.size() && dims[d] != broadcastDim()) {
          dims[d] = broadcastDim();
          changed = true;
        }
      if (!changed)
        return type;
      return withSbp(type, makeSbpTensorAttr(&getContext(), enc.getPlacement().getValue(), dims));
    };
    for (auto var : module.getOps<VariableOp>())
      var.setTypeAttr(TypeAttr::get(canonical(var, var.getType())));
    module.walk([&](Operation *op) {
      for (Value r : op->getResults())
        r.setType(canonical(op, r.getType()));
    });
  }

  // Bytes a rank holds of `type` outside hierarchy dimension `dim` (the data
  // one group of dimension `dim` moves).
  double groupBytes(RankedTensorType type, llvm::ArrayRef<SbpDim> sbp,
                    llvm::ArrayRef<int64_t> hierarchy, unsigned dim) {
    double bytes = static_cast<double>(type.getNumElements()) * elementBytes(type.getElementType());
    for (unsigned d = 0; d < hierarchy.size() && d < sbp.size(); ++d)
      if (d != dim && sbp[d].kind == SbpKind::Split)
        bytes /= static_cast<double>(hierarchy[d]);
    return bytes;
  }

  LogicalResult propagate(Operation *op, SymbolTableCollection &symbols,
                          PlacementOp defaultPlacement) {
    if (isa<func::ReturnOp>(op))
      return success();
    if (isa<MinimizeOp>(op))
      return op->emitOpError("must be removed by sbp-autodiff before sbp-propagate");
    auto iface = dyn_cast<SbpOpInterface>(op);
    if (!iface) {
      // Boxing ops and foreign ops must already be typed.
      for (Value r : op->getResults())
        if (isa<RankedTensorType>(r.getType()) && !getSbp(r.getType()))
          return op->emitOpError("has no SBP semantics and an unannotated result");
      return success();
    }

    // The placement: the operands' (all alike), else a fixed result's, else
    // the variable's for sgd, else the module's first.
    FlatSymbolRefAttr placementRef;
    for (Value v : op->getOperands()) {
      SbpTensorAttr enc = getSbp(v.getType());
      if (!enc)
        return op->emitOpError("operand has no SBP yet (its producer is not an sbp op)");
      if (placementRef && placementRef != enc.getPlacement())
        return op->emitOpError("mixes placements ")
               << placementRef << " and " << enc.getPlacement()
               << "; transfers between placements are not supported here";
      placementRef = enc.getPlacement();
    }
    for (Value r : op->getResults())
      if (SbpTensorAttr enc = getSbp(r.getType()); enc && !placementRef)
        placementRef = enc.getPlacement();
    if (auto sgd = dyn_cast<SgdOp>(op); sgd && !placementRef)
      if (auto var = symbols.lookupNearestSymbolFrom<VariableOp>(op, sgd.getVariableAttr()))
        placementRef = getSbp(var.getType()).getPlacement();
    if (!placementRef) {
      if (!defaultPlacement)
        return op->emitOpError("needs a placement but the module declares no sbp.placement");
      placementRef = FlatSymbolRefAttr::get(defaultPlacement.getSymNameAttr());
    }
    auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(op, placementRef);
    if (!placement)
      return op->emitOpError("references undeclared placement ") << placementRef;
    llvm::ArrayRef<int64_t> hierarchy = placement.getHierarchy();

    llvm::SmallVector<llvm::SmallVector<SbpDim, 2>> operandSbps, resultSbps;
    for (Value v : op->getOperands())
      operandSbps.push_back(getSbpDims(getSbp(v.getType())));
    for (Value r : op->getResults())
      resultSbps.push_back(getSbpDims(getSbp(r.getType())));

    double flops = iface.getFlops();
    llvm::SmallVector<SbpSignature> chosen;
    for (unsigned d = 0; d < hierarchy.size(); ++d) {
      llvm::SmallVector<SbpSignature> candidates = iface.getSbpSignatures(d);
      if (hierarchy[d] == 1) {
        // Unit dimension: keep the all-B signature (see canonicalizeUnitDims).
        llvm::SmallVector<SbpSignature> allB;
        for (const SbpSignature &sig : candidates)
          if (llvm::all_of(sig.operands, [](SbpDim x) { return x == broadcastDim(); }) &&
              llvm::all_of(sig.results, [](SbpDim x) { return x == broadcastDim(); }))
            allB.push_back(sig);
        if (!allB.empty())
          candidates = std::move(allB);
      }
      double best = std::numeric_limits<double>::infinity();
      std::optional<SbpSignature> pick;
      bool anyFits = false;
      llvm::SmallVector<SbpDim> inputs;
      for (auto &s : operandSbps)
        inputs.push_back(s[d]);
      for (const SbpSignature &sig : candidates) {
        if (sig.operands.size() != op->getNumOperands() ||
            sig.results.size() != op->getNumResults())
          continue;
        bool fits = true;
        for (unsigned i = 0; i < resultSbps.size(); ++i)
          if (!resultSbps[i].empty() && resultSbps[i][d] != sig.results[i])
            fits = false;
        if (!fits)
          continue;
        anyFits = true;
        double cost = 0;
        bool parallel = false;
        for (unsigned i = 0; i < sig.operands.size(); ++i) {
          auto type = cast<RankedTensorType>(op->getOperand(i).getType());
          cost += boxingCost(model, inputs[i], sig.operands[i],
                             groupBytes(type, operandSbps[i], hierarchy, d), hierarchy[d]);
          parallel |= sig.operands[i].kind == SbpKind::Split;
        }
        for (SbpDim r : sig.results)
          parallel |= r.kind == SbpKind::Split;
        cost += flops / model.flopsPerSecond / (parallel ? static_cast<double>(hierarchy[d]) : 1.0);
        if (cost < best) {
          best = cost;
          pick = sig;
        }
      }
      if (!pick) {
        std::string why;
        if (candidates.empty())
          why = "the op supports no signature here";
        else if (anyFits)
          why = "no boxing reaches any signature from these inputs";
        else
          why = "no signature produces the result SBP fixed in its type";
        return emitNoSignatureError(op, d, inputs, candidates, why);
      }
      chosen.push_back(*pick);
    }

    // Results: keep user-given encodings, set the others.
    for (auto [i, r] : llvm::enumerate(op->getResults())) {
      if (getSbp(r.getType()))
        continue;
      llvm::SmallVector<SbpDim> dims;
      for (const SbpSignature &s : chosen)
        dims.push_back(s.results[i]);
      setSbp(r, makeSbpTensorAttr(&getContext(), placementRef.getValue(), dims));
    }
    if (op->getNumOperands() > 0) {
      llvm::SmallVector<Attribute> required;
      for (unsigned i = 0; i < op->getNumOperands(); ++i) {
        llvm::SmallVector<SbpDim> dims;
        for (const SbpSignature &s : chosen)
          dims.push_back(s.operands[i]);
        required.push_back(makeSbpTensorAttr(&getContext(), placementRef.getValue(), dims));
      }
      op->setAttr("sbp.operand_sbp", ArrayAttr::get(&getContext(), required));
    }
    return success();
  }
};

} // namespace

std::unique_ptr<Pass> mlir::sbp::createPropagatePass() { return std::make_unique<PropagatePass>(); }
