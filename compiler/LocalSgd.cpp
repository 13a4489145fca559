// sbp-local-sgd: local SGD (DiLoCo). The replicas along the first hierarchy
// dimension of the trained variables' placement train alone: the training
// function's all-reduces across them become local estimates (each replica
// applies the gradient of its own batch), and the parameters and optimiser
// state they update become per-replica variables. A new function @outer
// sums each parameter's pseudo-gradient (the round's anchor minus the
// replica's parameters) across replicas and applies the outer optimiser;
// sbp.schedule says that @outer runs after every H training steps.
#include "compiler/Passes.h"

#include "ops/Rules.h"

#include "llvm/ADT/StringExtras.h"

namespace mlir::sbp {
#define GEN_PASS_DEF_LOCALSGDPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

// The replica dimension: data parallelism's, the first of the hierarchy.
constexpr int64_t kReplicaDim = 0;

struct SyncSpec {
  std::string algorithm; // ddp, diloco
  int64_t period = 0;    // H
  double outerLr = 0, outerMomentum = 0;
  bool nesterov = false;
};

FailureOr<SyncSpec> parseSync(llvm::StringRef spec, double outerLr, double outerMomentum,
                              llvm::function_ref<InFlightDiagnostic()> emitError) {
  SyncSpec s;
  auto [name, arg] = spec.split(':');
  s.algorithm = name.str();
  if (name == "ddp" && arg.empty())
    return s;
  if (name != "diloco")
    return emitError() << "--sync '" << spec << "': expected ddp or diloco:H";
  if (arg.empty() || arg.getAsInteger(10, s.period) || s.period < 1)
    return emitError() << "--sync '" << spec
                       << "': H, the inner steps between synchronisations, must be a "
                          "positive integer";
  // DiLoCo (Douillard et al. 2023): Nesterov SGD at lr 0.7, momentum 0.9.
  s.outerLr = outerLr >= 0 ? outerLr : 0.7;
  s.outerMomentum = outerMomentum >= 0 ? outerMomentum : 0.9;
  s.nesterov = true;
  if (!(s.outerMomentum < 1))
    return emitError() << "--outer-momentum " << s.outerMomentum << " must lie in [0, 1)";
  return s;
}

struct LocalSgdPass : public sbp::impl::LocalSgdPassBase<LocalSgdPass> {
  using LocalSgdPassBase::LocalSgdPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<SyncSpec> spec =
        parseSync(sync, outerLr, outerMomentum, [&] { return module.emitError(); });
    if (failed(spec))
      return signalPassFailure();
    if (spec->algorithm == "ddp")
      return;
    if (failed(apply(module, *spec)))
      signalPassFailure();
  }

  LogicalResult apply(ModuleOp module, const SyncSpec &spec) {
    SymbolTable symbols(module);
    func::FuncOp train;
    for (auto fn : module.getOps<func::FuncOp>()) {
      if (fn.getOps<OptimizerOpInterface>().empty())
        continue;
      if (train)
        return fn.emitOpError("is a second function that trains; local SGD schedules one");
      train = fn;
    }
    if (!train)
      return module.emitError("--sync ") << spec.algorithm << ": no function trains a variable";

    // The trained variables, in the order their updates run, all whole on
    // the replica dimension of one placement.
    llvm::SmallVector<std::pair<OptimizerOpInterface, VariableOp>> trained;
    FlatSymbolRefAttr placement;
    for (auto opt : train.getOps<OptimizerOpInterface>()) {
      auto var = symbols.lookup<VariableOp>(opt.getUpdatedVariable().getValue());
      SbpTensorAttr enc = var ? getSbp(var.getType()) : nullptr;
      if (!enc)
        return opt->emitOpError("updates a variable without a chosen SBP (run sbp-propagate "
                                "and sbp-insert-boxing first)");
      if (placement && enc.getPlacement() != placement)
        return opt->emitOpError("updates a variable on placement @")
               << enc.getPlacement().getValue() << " and another on " << placement
               << "; local SGD replicates one placement";
      placement = enc.getPlacement();
      if (var->hasAttr("compress"))
        return var.emitOpError("has a compress spec; local SGD exchanges no gradients to "
                               "compress");
      if (getSbpDims(enc)[kReplicaDim].kind != SbpKind::Broadcast)
        return var.emitOpError("is ")
               << toString(getSbpDims(enc)[kReplicaDim])
               << " on the replica dimension (dim 0); local SGD needs every replica to hold "
                  "it whole";
      trained.push_back({opt, var});
    }
    auto pl = symbols.lookup<PlacementOp>(placement.getValue());
    const int64_t replicas = pl.getHierarchy()[kReplicaDim];
    if (replicas < 2)
      return module.emitError("--sync ")
             << spec.algorithm << ": placement " << placement
             << " has 1 replica on its first hierarchy dimension; local SGD needs at least 2";

    if (failed(localGradients(train, placement, replicas)))
      return failure();
    if (symbols.lookup("outer"))
      return module.emitError("--sync ")
             << spec.algorithm << ": the module already has a symbol @outer";
    func::FuncOp outer = buildOuter(module, symbols, trained, spec, replicas);

    // Every replica keeps its own parameters and optimiser state.
    OpBuilder b(module.getContext());
    auto replicaDim = b.getI64IntegerAttr(kReplicaDim);
    for (auto &[opt, var] : trained) {
      var.setReplicaDimAttr(replicaDim);
      for (FlatSymbolRefAttr slot : opt.getStateVariables())
        symbols.lookup<VariableOp>(slot.getValue()).setReplicaDimAttr(replicaDim);
    }

    b.setInsertionPoint(train);
    b.create<ScheduleOp>(module.getLoc(), b.getStringAttr(spec.algorithm),
                         FlatSymbolRefAttr::get(train), b.getI64IntegerAttr(spec.period),
                         b.getArrayAttr({FlatSymbolRefAttr::get(outer.getSymNameAttr())}));
    return success();
  }

  // The training function's all-reduces across replicas become local
  // estimates; any other communication across them is refused.
  LogicalResult localGradients(func::FuncOp train, FlatSymbolRefAttr placement, int64_t replicas) {
    llvm::SmallVector<Operation *> across;
    train.walk([&](BoxingOpInterface box) {
      SbpTensorAttr enc = getSbp(box->getOperand(0).getType());
      if (enc && enc.getPlacement() == placement && box.getHierarchyDim() == kReplicaDim &&
          !isa<SliceOp>(box))
        across.push_back(box);
    });
    for (Operation *op : across) {
      auto ar = dyn_cast<AllReduceOp>(op);
      if (!ar)
        return op->emitOpError("communicates across replicas (dim 0) in the training "
                               "function; local SGD's inner step cannot");
      if (ar.getCodecAttr())
        return ar.emitOpError("is compressed; local SGD exchanges no gradients to compress");
      OpBuilder b(ar);
      for (auto [in, out] : llvm::zip(ar.getInputs(), ar.getResults())) {
        if (getSbpDims(getSbp(in.getType()))[kReplicaDim].kind != SbpKind::PartialSum)
          return ar.emitOpError("reduces a ")
                 << toString(getSbpDims(getSbp(in.getType()))[kReplicaDim])
                 << " across replicas; a replica estimates only sums alone";
        auto estimate = b.create<LocalEstimateOp>(ar.getLoc(), out.getType(), in,
                                                  b.getI64IntegerAttr(kReplicaDim),
                                                  b.getF32FloatAttr(static_cast<float>(replicas)));
        out.replaceAllUsesWith(estimate.getResult());
      }
      ar.erase();
    }
    return success();
  }

  // @outer: per trained variable, its anchor (initialised as the variable,
  // so equal to it before the first round) and outer momentum, the
  // pseudo-gradient summed across replicas, and the outer step.
  func::FuncOp
  buildOuter(ModuleOp module, SymbolTable &symbols,
             llvm::MutableArrayRef<std::pair<OptimizerOpInterface, VariableOp>> trained,
             const SyncSpec &spec, int64_t replicas) {
    MLIRContext *ctx = module.getContext();
    OpBuilder mb(ctx);
    mb.setInsertionPointToEnd(module.getBody());
    auto outer = mb.create<func::FuncOp>(module.getLoc(), "outer", FunctionType::get(ctx, {}, {}));
    symbols.insert(outer);
    OpBuilder b = OpBuilder::atBlockEnd(outer.addEntryBlock());
    for (auto &[opt, var] : trained) {
      Location loc = var.getLoc();
      OpBuilder vb(var);
      vb.setInsertionPointAfter(var);
      auto anchor = cast<VariableOp>(vb.clone(*var));
      anchor.setSymName((var.getSymName() + ".outer_anchor").str());
      symbols.insert(anchor);
      FlatSymbolRefAttr momentum;
      if (spec.outerMomentum != 0) {
        auto zeros = InitAttr::get(ctx, InitKind::zeros, llvm::APFloat(0.0), llvm::APFloat(0.0));
        auto m =
            vb.create<VariableOp>(loc, (var.getSymName() + ".outer_momentum").str(),
                                  TypeAttr::get(var.getType()), zeros, vb.getI64IntegerAttr(0));
        symbols.insert(m);
        momentum = FlatSymbolRefAttr::get(m.getSymNameAttr());
      }
      auto type = cast<RankedTensorType>(var.getType());
      SbpTensorAttr enc = getSbp(type);
      llvm::SmallVector<SbpDim> partial = getSbpDims(enc);
      partial[kReplicaDim] = partialSumDim();
      auto partialType =
          withSbp(type, makeSbpTensorAttr(ctx, enc.getPlacement().getValue(), partial));
      Value a = b.create<ParameterOp>(loc, type, FlatSymbolRefAttr::get(anchor.getSymNameAttr()));
      Value p = b.create<ParameterOp>(loc, type, FlatSymbolRefAttr::get(var.getSymNameAttr()));
      Value delta =
          b.create<PseudoGradientOp>(loc, partialType, a, p, b.getI64IntegerAttr(kReplicaDim));
      Value sum =
          b.create<AllReduceOp>(loc, TypeRange{type}, ValueRange{delta}, kReplicaDim).getResult(0);
      b.create<OuterStepOp>(loc, sum, Value(), FlatSymbolRefAttr::get(var.getSymNameAttr()),
                            FlatSymbolRefAttr::get(anchor.getSymNameAttr()), momentum,
                            b.getF32FloatAttr(spec.outerLr), b.getF32FloatAttr(spec.outerMomentum),
                            b.getBoolAttr(spec.nesterov), b.getI64IntegerAttr(replicas),
                            b.getF32FloatAttr(1.0f), b.getF32FloatAttr(0.0f));
    }
    b.create<func::ReturnOp>(module.getLoc());
    return outer;
  }
};

} // namespace
