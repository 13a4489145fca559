// sbp-local-sgd: local SGD (DiLoCo, CO2, SparseLoCo, EDiT, A-EDiT). The replicas along the first
// hierarchy dimension of the trained variables' placement train alone: the
// training function's all-reduces across them become local estimates (each
// replica applies the gradient of its own batch), and the parameters and
// optimiser state they update become per-replica variables. New functions
// sum each parameter's pseudo-gradient (the round's anchor minus the
// replica's parameters) across replicas and apply the outer optimiser;
// sbp.schedule says what runs after every H training steps (Passes.td has
// the algorithms).
#include "compiler/Passes.h"

#include "ops/Rules.h"

#include "llvm/ADT/StringExtras.h"

#include <cmath>

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
  std::string algorithm; // ddp, diloco, co2, sparseloco, edit, aedit
  int64_t period = 0;    // H (0: timed rounds)
  double seconds = 0;    // aedit: the rounds' length
  double outerLr = 0, outerMomentum = 0;
  bool nesterov = false;
  int64_t staleness = 0;                  // co2
  double gapPenalty = 1, outerClip = 0;   // co2
  int64_t topk = 0, chunk = 0;            // sparseloco
  double errorDecay = 1;                  // sparseloco
  bool meanOverSenders = false;           // sparseloco
  double temperature = 0, pseudoClip = 0; // edit, aedit
  int64_t minSteps = 0;                   // aedit
  double stepWeight = 0;                  // aedit
};

struct SyncOptions {
  double outerLr, outerMomentum;
  int64_t staleness;
  double gapPenalty, outerClip;
  int64_t topk, chunk;
  double errorDecay;
  double temperature, pseudoClip;
  std::string average;
  int64_t minSteps;
  double stepWeight;
};

FailureOr<SyncSpec> parseSync(llvm::StringRef spec, const SyncOptions &o,
                              llvm::function_ref<InFlightDiagnostic()> emitError) {
  SyncSpec s;
  auto [name, arg] = spec.split(':');
  s.algorithm = name.str();
  if (name == "ddp" && arg.empty())
    return s;
  if (name != "diloco" && name != "co2" && name != "sparseloco" && name != "edit" &&
      name != "aedit")
    return emitError() << "--sync '" << spec
                       << "': expected ddp, diloco:H, co2:H, sparseloco:H, edit:H or "
                          "aedit:SECONDS";
  if (name == "aedit") {
    // A-EDiT (EDiT's asynchronous variant, as the reference code, dlrover
    // atorch local_sgd): rounds of `local_sgd_sync_time` seconds, skipped
    // below `min_total_global_steps` (100) steps in all; a replica's weight
    // may blend in its share of the steps (`step_weight_ratio`; off by
    // default, as `use_step_weight`).
    if (arg.empty() || !llvm::to_float(arg, s.seconds) || !(s.seconds > 0) ||
        !std::isfinite(s.seconds))
      return emitError() << "--sync '" << spec
                         << "': SECONDS, the wall-clock time between synchronisations, must be "
                            "a positive number";
    s.minSteps = o.minSteps;
    s.stepWeight = o.stepWeight;
    if (s.minSteps < 0 || !(s.stepWeight >= 0 && s.stepWeight <= 1))
      return emitError() << "--aedit-min-steps " << s.minSteps << " --aedit-step-weight "
                         << s.stepWeight << ": need min steps >= 0 and a ratio in [0, 1]";
  } else if (arg.empty() || arg.getAsInteger(10, s.period) || s.period < 1) {
    return emitError() << "--sync '" << spec
                       << "': H, the inner steps between synchronisations, must be a "
                          "positive integer";
  }
  if (name == "diloco" || name == "edit" || name == "aedit") {
    // DiLoCo (Douillard et al. 2023): Nesterov SGD at lr 0.7, momentum 0.9;
    // EDiT's outer optimiser is configurable, DiLoCo's here.
    s.outerLr = o.outerLr >= 0 ? o.outerLr : 0.7;
    s.outerMomentum = o.outerMomentum >= 0 ? o.outerMomentum : 0.9;
    s.nesterov = true;
    s.temperature = o.temperature;
    s.pseudoClip = o.pseudoClip;
    if (name == "diloco" && (s.temperature != 0 || s.pseudoClip != 0))
      return emitError() << "--edit-temperature and --pseudo-grad-clip are EDiT's (--sync edit:H "
                            "or aedit:SECONDS)";
    if (!(s.temperature >= 0) || !(s.pseudoClip >= 0))
      return emitError() << "--edit-temperature " << s.temperature << " --pseudo-grad-clip "
                         << s.pseudoClip << ": neither may be negative";
  } else if (name == "sparseloco") {
    // SparseLoCo (arXiv 2508.15706): error feedback in place of the outer
    // momentum, the top `topk` of each `chunk` with 2-bit values, the mean
    // applied at outer lr 1 (its reference code, CCLoco: 32 of 4096, error
    // decay 0.95).
    s.outerLr = o.outerLr >= 0 ? o.outerLr : 1.0;
    if (o.outerMomentum > 0)
      return emitError() << "--sync sparseloco: error feedback replaces the outer momentum; "
                            "--outer-momentum "
                         << o.outerMomentum << " has no place";
    s.topk = o.topk;
    s.chunk = o.chunk;
    s.errorDecay = o.errorDecay;
    if (s.chunk < 1 || s.chunk > 65536 || s.topk < 1 || s.topk > s.chunk)
      return emitError() << "--sparseloco-chunk " << s.chunk << " --sparseloco-topk " << s.topk
                         << ": need 1 <= topk <= chunk <= 65536";
    if (!(s.errorDecay > 0 && s.errorDecay <= 1))
      return emitError() << "--error-decay " << s.errorDecay << " must lie in (0, 1]";
    if (o.average != "replicas" && o.average != "senders")
      return emitError() << "--sparseloco-average '" << o.average
                         << "': replicas (the paper's mean) or senders (each value's mean over "
                            "the replicas that sent it, as CCLoco)";
    s.meanOverSenders = o.average == "senders";
  } else {
    // CO2 (Sun et al. 2024), as its reference code (fairscale-CO2): heavy
    // ball at lr 1.0, momentum 0.5, a constant gap penalty.
    s.outerLr = o.outerLr >= 0 ? o.outerLr : 1.0;
    s.outerMomentum = o.outerMomentum >= 0 ? o.outerMomentum : 0.5;
    s.staleness = o.staleness;
    s.gapPenalty = o.gapPenalty;
    s.outerClip = o.outerClip;
    if (s.staleness != 0 && s.staleness != 1)
      return emitError() << "--co2-staleness " << s.staleness << ": 0 or 1 rounds";
    if (!(s.gapPenalty >= 1))
      return emitError() << "--gap-penalty " << s.gapPenalty << " must be at least 1";
    if (!(s.outerClip >= 0))
      return emitError() << "--outer-clip " << s.outerClip << " must not be negative";
    if (s.outerClip > 0 && s.outerMomentum == 0)
      return emitError() << "--outer-clip clips the outer momentum; --outer-momentum is 0";
  }
  if (!(s.outerMomentum < 1))
    return emitError() << "--outer-momentum " << s.outerMomentum << " must lie in [0, 1)";
  return s;
}

struct LocalSgdPass : public sbp::impl::LocalSgdPassBase<LocalSgdPass> {
  using LocalSgdPassBase::LocalSgdPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    FailureOr<SyncSpec> spec =
        parseSync(sync,
                  {outerLr, outerMomentum, staleness, gapPenalty, outerClip, sparselocoTopk,
                   sparselocoChunk, errorDecay, editTemperature, pseudoGradClip, sparselocoAverage,
                   aeditMinSteps, aeditStepWeight},
                  [&] { return module.emitError(); });
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
    for (llvm::StringRef name :
         {"outer", "outer_send", "outer_exchange", "outer_adopt", "train_sync"})
      if (symbols.lookup(name))
        return module.emitError("--sync ")
               << spec.algorithm << ": the module already has a symbol @" << name;

    // Every replica keeps its own parameters and optimiser state.
    OpBuilder b(module.getContext());
    auto replicaDim = b.getI64IntegerAttr(kReplicaDim);
    for (auto &[opt, var] : trained) {
      var.setReplicaDimAttr(replicaDim);
      for (FlatSymbolRefAttr slot : opt.getStateVariables())
        symbols.lookup<VariableOp>(slot.getValue()).setReplicaDimAttr(replicaDim);
    }

    llvm::SmallVector<std::string> round;
    if (spec.algorithm == "co2") {
      round = buildCo2(module, symbols, trained, spec, replicas);
    } else if (spec.algorithm == "edit" || spec.algorithm == "aedit") {
      if (failed(buildEdit(symbols, train, trained, spec, round)))
        return failure();
    } else if (failed(buildDiloco(module, symbols, trained, spec, replicas, round)))
      return failure();
    b.setInsertionPoint(train);
    const bool timed = spec.seconds > 0;
    b.create<ScheduleOp>(
        module.getLoc(), b.getStringAttr(spec.algorithm), FlatSymbolRefAttr::get(train),
        b.getI64IntegerAttr(spec.period),
        b.getStrArrayAttr(llvm::SmallVector<llvm::StringRef>(round.begin(), round.end())),
        timed ? b.getF64FloatAttr(spec.seconds) : FloatAttr(),
        timed ? b.getI64IntegerAttr(spec.minSteps) : IntegerAttr());
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

  using Trained = llvm::MutableArrayRef<std::pair<OptimizerOpInterface, VariableOp>>;

  // A new function `name` of the module, its builder at its end.
  OpBuilder function(ModuleOp module, SymbolTable &symbols, llvm::StringRef name) {
    MLIRContext *ctx = module.getContext();
    OpBuilder mb(ctx);
    mb.setInsertionPointToEnd(module.getBody());
    auto fn = mb.create<func::FuncOp>(module.getLoc(), name, FunctionType::get(ctx, {}, {}));
    symbols.insert(fn);
    return OpBuilder::atBlockEnd(fn.addEntryBlock());
  }

  // A variable `<var>.<suffix>` declared after `var`: initialised as `var`
  // (so equal to it before the first round), or zeros; per replica or not.
  VariableOp companion(SymbolTable &symbols, VariableOp var, llvm::StringRef suffix, bool zeros,
                       bool perReplica) {
    OpBuilder vb(var);
    vb.setInsertionPointAfter(var);
    auto made = cast<VariableOp>(vb.clone(*var));
    made.setSymName((var.getSymName() + "." + suffix).str());
    made->removeAttr("replica_dim");
    if (zeros) {
      made.setInitAttr(
          InitAttr::get(var.getContext(), InitKind::zeros, llvm::APFloat(0.0), llvm::APFloat(0.0)));
      made.setSeed(0);
    }
    if (perReplica)
      made.setReplicaDimAttr(vb.getI64IntegerAttr(kReplicaDim));
    symbols.insert(made);
    return made;
  }

  static FlatSymbolRefAttr ref(VariableOp v) { return FlatSymbolRefAttr::get(v.getSymNameAttr()); }

  // `type` with its replica dimension partial: the replicas' terms of a sum.
  static RankedTensorType partialOnReplicas(RankedTensorType type) {
    return withPartialSum(type, kReplicaDim);
  }

  // The replica's pseudo-gradient of `var` against `anchor`: its term of the
  // replicas' sum.
  static Value pseudoGradient(OpBuilder &b, Location loc, VariableOp anchor, VariableOp var) {
    auto type = cast<RankedTensorType>(var.getType());
    Value a = b.create<ParameterOp>(loc, type, ref(anchor));
    Value p = b.create<ParameterOp>(loc, type, ref(var));
    return b.create<PseudoGradientOp>(loc, partialOnReplicas(type), a, p,
                                      b.getI64IntegerAttr(kReplicaDim));
  }

  // The sum of the replicas' `terms`, laid out as `var`.
  static Value sumOverReplicas(OpBuilder &b, Location loc, Value terms, VariableOp var) {
    return b.create<AllReduceOp>(loc, TypeRange{var.getType()}, ValueRange{terms}, kReplicaDim)
        .getResult(0);
  }

  // The anchor of `var` (initialised as `var`) and, with an outer momentum,
  // its buffer (zeros; null without).
  std::pair<VariableOp, VariableOp> outerState(SymbolTable &symbols, VariableOp var,
                                               const SyncSpec &spec) {
    VariableOp anchor = companion(symbols, var, "outer_anchor", false, false);
    VariableOp momentum = spec.outerMomentum != 0
                              ? companion(symbols, var, "outer_momentum", true, false)
                              : VariableOp();
    return {anchor, momentum};
  }

  // The outer step of `param` from the summed pseudo-gradient `sum`.
  static void outerStep(OpBuilder &b, Location loc, Value sum, VariableOp param, VariableOp anchor,
                        VariableOp momentum, const SyncSpec &spec, int64_t replicas,
                        bool keepAnchor) {
    b.create<OuterStepOp>(loc, sum, Value(), ref(param), ref(anchor),
                          momentum ? ref(momentum) : FlatSymbolRefAttr(),
                          b.getF32FloatAttr(spec.outerLr), b.getF32FloatAttr(spec.outerMomentum),
                          b.getBoolAttr(spec.nesterov), b.getI64IntegerAttr(replicas),
                          b.getF32FloatAttr(spec.gapPenalty), b.getF32FloatAttr(spec.outerClip),
                          b.getBoolAttr(keepAnchor));
  }

  // At `b`: `var`'s anchor and outer momentum, its pseudo-gradient summed
  // across replicas (under `codec` where there is one) and the outer step,
  // the sum divided by `divisor`, which sets the anchor and every replica's
  // parameters; the codec reads the replica's inner steps from
  // `innerSteps` where one is given (A-EDiT).
  LogicalResult synchronise(OpBuilder &b, SymbolTable &symbols, VariableOp var, CodecAttr codec,
                            const SyncSpec &spec, int64_t divisor,
                            FlatSymbolRefAttr innerSteps = {}) {
    Location loc = var.getLoc();
    auto [anchor, momentum] = outerState(symbols, var, spec);
    Value sum = sumOverReplicas(b, loc, pseudoGradient(b, loc, anchor, var), var);
    auto ar = cast<AllReduceOp>(sum.getDefiningOp());
    if (codec && failed(attachCodec(ar, codec, var, LgrecoAttr(), symbols)))
      return failure();
    if (innerSteps)
      ar.setInnerStepsAttr(innerSteps);
    outerStep(b, loc, sum, var, anchor, momentum, spec, divisor, /*keepAnchor=*/false);
    return success();
  }

  // DiLoCo's @outer: every trained variable synchronised. SparseLoCo's is
  // the same without momentum, its sum compressed: the top of each chunk of
  // the pseudo-gradient plus the decayed residual, in 2-bit values (a
  // topk2bit codec, whose state keeps each rank's residual: the error
  // feedback).
  LogicalResult buildDiloco(ModuleOp module, SymbolTable &symbols, Trained trained,
                            const SyncSpec &spec, int64_t replicas,
                            llvm::SmallVector<std::string> &round) {
    OpBuilder b = function(module, symbols, "outer");
    const CodecAttr codec = spec.algorithm == "sparseloco" ? sparseCodec(b, spec) : CodecAttr();
    // Averaged over its senders, the sum is already a mean.
    const int64_t divisor = spec.meanOverSenders ? 1 : replicas;
    for (auto &[opt, var] : trained)
      if (failed(synchronise(b, symbols, var, codec, spec, divisor)))
        return failure();
    b.create<func::ReturnOp>(module.getLoc());
    round = {"run @outer"};
    return success();
  }

  // SparseLoCo's codec: `topk` of each `chunk`, 2-bit values, the residual
  // decayed by `errorDecay`; each value averaged over its senders or summed.
  static CodecAttr sparseCodec(OpBuilder &b, const SyncSpec &spec) {
    CodecFields f;
    f.kind = CodecKind::topk2bit;
    f.density = static_cast<double>(spec.topk) / static_cast<double>(spec.chunk);
    f.chunk = spec.chunk;
    f.decay = spec.errorDecay;
    f.senders = spec.meanOverSenders ? 1 : 0;
    return f.get(b.getContext());
  }

  // EDiT's @train_sync, the first inner step of every round after the
  // first: @train with each trained parameter synchronised just before the
  // first op that uses it (its reads moved after the synchronisation), so
  // that the exchange of each layer overlaps the forward of the layers
  // before it (the comm lane runs the all-reduces in block order beside the
  // compute lane). The synchronisation is DiLoCo's outer step on
  // EDiT's penalised average of the replicas' pseudo-gradients (#sbp.codec
  // <edit>: anomalous ones dropped, the rest weighted by the softmax of
  // minus their norms, the average clipped), the weights summing to one.
  // A-EDiT's codec blends in each replica's share of the inner steps (its
  // `inner_steps`: the parameter's AdamW step counter, per replica).
  LogicalResult buildEdit(SymbolTable &symbols, func::FuncOp train, Trained trained,
                          const SyncSpec &spec, llvm::SmallVector<std::string> &round) {
    auto sync = cast<func::FuncOp>(train->clone());
    sync.setSymName("train_sync");
    OpBuilder(train).insert(sync);
    sync->moveAfter(train);
    symbols.insert(sync);
    CodecFields fields;
    fields.kind = CodecKind::edit;
    fields.temperature = spec.temperature;
    fields.clip = spec.pseudoClip;
    fields.stepWeight = spec.stepWeight;
    const CodecAttr codec = fields.get(train.getContext());
    Block &body = sync.front();
    for (auto &[opt, var] : trained) {
      // The reads of `var`, and the first op (in block order) using one.
      llvm::SmallVector<ParameterOp> reads;
      Operation *firstUse = nullptr;
      for (auto p : sync.getOps<ParameterOp>()) {
        if (p.getVariable() != var.getSymName())
          continue;
        reads.push_back(p);
        for (Operation *user : p->getUsers()) {
          Operation *at = body.findAncestorOpInBlock(*user);
          if (at && (!firstUse || at->isBeforeInBlock(firstUse)))
            firstUse = at;
        }
      }
      if (reads.empty() || !firstUse)
        return opt->emitOpError("updates @")
               << var.getSymName() << ", which the training function never uses";
      for (ParameterOp p : reads)
        if (p->isBeforeInBlock(firstUse))
          p->moveBefore(firstUse);
      OpBuilder b(reads.front());
      FlatSymbolRefAttr innerSteps;
      if (spec.stepWeight > 0) {
        auto adam = dyn_cast<AdamWOp>(opt.getOperation());
        if (!adam)
          return opt->emitOpError("updates @")
                 << var.getSymName()
                 << " without AdamW; A-EDiT's step weights count a replica's inner steps by "
                    "AdamW's step (--aedit-step-weight 0 turns them off)";
        innerSteps = adam.getStepAttr();
      }
      // The weights sum to one.
      if (failed(synchronise(b, symbols, var, codec, spec, /*divisor=*/1, innerSteps)))
        return failure();
    }
    round = {"inner @train_sync"};
    return success();
  }

  // CO2's functions, per trained variable. @outer_send keeps the replica's
  // pseudo-gradient against the anchor (`.outer_delta`: all its progress
  // since the last send); @outer_exchange, in the background, sums it across
  // replicas and computes the next anchor into `.outer_next` (the anchor is
  // still read meanwhile); @outer_adopt makes it the anchor and merges it
  // into the replica's parameters keeping the progress made since the send:
  // param = next + ((param - anchor) + delta), exactly next when nothing
  // was made (x + -x is 0 in floating point), so staleness 0 is DiLoCo to
  // the bit. Each round's progress is summed once, one round late; no
  // replica throws work away (restarting every replica from the stale
  // anchor instead applies overlapping rounds twice: the char GPT diverged).
  llvm::SmallVector<std::string> buildCo2(ModuleOp module, SymbolTable &symbols, Trained trained,
                                          const SyncSpec &spec, int64_t replicas) {
    OpBuilder send = function(module, symbols, "outer_send");
    OpBuilder exchange = function(module, symbols, "outer_exchange");
    OpBuilder adopt = function(module, symbols, "outer_adopt");
    for (auto &[opt, var] : trained) {
      Location loc = var.getLoc();
      auto type = cast<RankedTensorType>(var.getType());
      VariableOp next = companion(symbols, var, "outer_next", false, false);
      auto [anchor, momentum] = outerState(symbols, var, spec);
      VariableOp delta = companion(symbols, var, "outer_delta", true, true);

      send.create<AssignOp>(loc, pseudoGradient(send, loc, anchor, var), ref(delta));

      Value terms = exchange.create<ParameterOp>(loc, partialOnReplicas(type), ref(delta));
      Value sum = sumOverReplicas(exchange, loc, terms, var);
      outerStep(exchange, loc, sum, next, anchor, momentum, spec, replicas, /*keepAnchor=*/true);

      Value n = adopt.create<ParameterOp>(loc, type, ref(next));
      Value pa = adopt.create<ParameterOp>(loc, type, ref(anchor));
      Value pp = adopt.create<ParameterOp>(loc, type, ref(var));
      Value pd = adopt.create<ParameterOp>(loc, type, ref(delta));
      Value progress =
          adopt.create<PseudoGradientOp>(loc, type, pp, pa, adopt.getI64IntegerAttr(kReplicaDim));
      Value sinceSend = adopt.create<AddOp>(loc, type, progress, pd);
      Value merged = adopt.create<AddOp>(loc, type, n, sinceSend);
      adopt.create<AssignOp>(loc, merged, ref(var));
      adopt.create<AssignOp>(loc, n, ref(anchor));
    }
    for (OpBuilder *b : {&send, &exchange, &adopt})
      b->create<func::ReturnOp>(module.getLoc());
    if (spec.staleness == 0)
      return {"run @outer_send", "start @outer_exchange", "join", "run @outer_adopt"};
    return {"join", "run @outer_adopt", "run @outer_send", "start @outer_exchange"};
  }
};

} // namespace
