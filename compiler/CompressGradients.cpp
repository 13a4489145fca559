// sbp-compress-gradients: gives each gradient's P -> B all-reduce a codec
// (#sbp.codec) by the parameter's own spec, the global policy, or the cost
// model (`auto`), and declares the codec's state and step counter as
// variables. Runs after sbp-insert-boxing (the all-reduces exist) and before
// sbp-bucket-gradients (a compressed all-reduce travels alone).
#include "compiler/Passes.h"
#include "ops/Cost.h"
#include "ops/Rules.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cmath>

namespace mlir::sbp {
#define GEN_PASS_DEF_COMPRESSGRADIENTSPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

FailureOr<CodecAttr> mlir::sbp::parseCodecSpec(MLIRContext *ctx, llvm::StringRef spec,
                                               llvm::function_ref<InFlightDiagnostic()> emitError) {
  if (spec == "none")
    return CodecAttr();
  if (spec == "lgreco" || spec.starts_with("lgreco:")) {
    emitError() << "'" << spec << "' is a global policy (L-GreCo decides across layers), not a "
                << "codec of one parameter";
    return failure();
  }
  auto [name, arg] = spec.split(':');
  std::optional<CodecKind> kind = symbolizeCodecKind(name);
  auto bad = [&](llvm::StringRef why) -> FailureOr<CodecAttr> {
    emitError() << "bad compression spec '" << spec << "': " << why
                << " (expected none, topk:DENSITY, dgc:DENSITY, randomk:DENSITY, qsgd:BITS, "
                   "sign, powersgd:RANK or topk2bit:DENSITY)";
    return failure();
  };
  if (!kind)
    return bad("unknown codec '" + name.str() + "'");
  double value = 0;
  int64_t integer = 0;
  switch (*kind) {
  case CodecKind::sign:
    if (!arg.empty())
      return bad("sign takes no parameter");
    break;
  case CodecKind::qsgd:
    if (arg.getAsInteger(10, integer) || integer < 2 || integer > 8)
      return bad("QSGD's bits must be an integer from 2 to 8");
    value = static_cast<double>(integer);
    break;
  case CodecKind::powersgd:
    if (arg.getAsInteger(10, integer) || integer < 1)
      return bad("PowerSGD's rank must be a positive integer");
    value = static_cast<double>(integer);
    break;
  default:
    if (!llvm::to_float(arg, value) || !(value > 0 && value <= 1))
      return bad("the density must be a number in (0, 1]");
  }
  return codecWith(ctx, *kind, value);
}

LogicalResult mlir::sbp::attachCodec(AllReduceOp ar, CodecAttr codec, VariableOp var,
                                     LgrecoAttr lgreco, SymbolTable &symbols) {
  // State: one row per rank of the placement, split S(0) on every dimension.
  MLIRContext *ctx = ar.getContext();
  auto grad = tensorOf(ar.getInputs()[0]);
  auto placement = symbols.lookup<PlacementOp>(getSbp(grad).getPlacement().getValue());
  llvm::ArrayRef<int64_t> hierarchy = placement.getHierarchy();
  const double beta2 = codec.getBeta2().convertToDouble();
  auto flat = FlatSymbolRefAttr::get(ctx, getSbp(grad).getPlacement().getValue());
  llvm::SmallVector<Attribute> rowDims(hierarchy.size(), sbpDimToAttr(ctx, S(0)));
  llvm::SmallVector<Attribute> bDims(hierarchy.size(), sbpDimToAttr(ctx, B));
  auto rows = SbpTensorAttr::get(ctx, flat, ArrayAttr::get(ctx, rowDims));
  auto replicated = SbpTensorAttr::get(ctx, flat, ArrayAttr::get(ctx, bDims));
  // DGC keeps u and v (under AdamW m, v and the second moment s); EDiT its
  // anomaly detector; the others a residual, then PowerSGD's q, the u of
  // the momentum sign took, or top-k's AdamW moments m and s.
  const CodecKind kind = codec.getKind();
  auto stateName = [&](size_t i) -> llvm::StringRef {
    if (kind == CodecKind::edit)
      return "anomaly";
    if (kind == CodecKind::dgc)
      return i == 0 ? (beta2 > 0 ? "m" : "u") : i == 1 ? "v" : "s";
    if (i > 0 && beta2 > 0)
      return i == 1 ? "m" : "s";
    return i == 0 ? "residual" : kind == CodecKind::powersgd ? "q" : "u";
  };
  llvm::SmallVector<Attribute> state;
  const bool adapts = static_cast<bool>(lgreco);
  auto shapes = codecStateShapes(codec, lgreco, grad, hierarchy);
  auto zeros = InitAttr::get(ctx, InitKind::zeros, llvm::APFloat(0.0), llvm::APFloat(0.0));
  Operation *after = var;
  auto declare = [&](llvm::StringRef suffix, RankedTensorType type) {
    std::string name = (var.getSymName() + ".codec." + suffix).str();
    if (symbols.lookup(name)) {
      var.emitOpError("cannot declare codec state @") << name << ": the name is taken";
      return FlatSymbolRefAttr();
    }
    OpBuilder b(after);
    b.setInsertionPointAfter(after);
    auto created = b.create<VariableOp>(var.getLoc(), name, TypeAttr::get(type), zeros,
                                        b.getI64IntegerAttr(0));
    symbols.insert(created);
    after = created;
    return FlatSymbolRefAttr::get(ctx, name);
  };
  for (auto [i, shape] : llvm::enumerate(shapes)) {
    // L-GreCo's accumulator comes after the codec's own state.
    const bool accumulator = adapts && i + 1 == shapes.size();
    auto ref = declare(accumulator ? "acc" : stateName(i),
                       RankedTensorType::get(shape, Float32Type::get(ctx), rows));
    if (!ref)
      return failure();
    state.push_back(ref);
  }
  auto step = declare("step", RankedTensorType::get({}, IntegerType::get(ctx, 32), replicated));
  if (!step)
    return failure();
  ar.setCodecAttr(codec);
  ar.setStateAttr(ArrayAttr::get(ctx, state));
  ar.setStepAttr(step);
  return success();
}

namespace {

// FNV-1a of the parameter's name: a codec seed that does not change with
// the order of the module.
int64_t seedOf(llvm::StringRef name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : name)
    h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return static_cast<int64_t>(h & 0x7fffffffffffffffull);
}

struct CompressGradientsPass : public sbp::impl::CompressGradientsPassBase<CompressGradientsPass> {
  using Base::Base;

  // L-GreCo's candidates per family and the uniform default among them:
  // PowerSGD ranks as the paper's repository (every rank from half to twice
  // the default, 4), top-k densities around SparseLoCo's 1%, QSGD bits.
  static std::pair<llvm::SmallVector<double>, int64_t> lgrecoCandidates(CodecKind kind) {
    switch (kind) {
    case CodecKind::powersgd:
      return {{2, 3, 4, 5, 6, 7, 8}, 2};
    case CodecKind::qsgd:
      return {{2, 3, 4, 6, 8}, 2};
    default:
      return {{0.0025, 0.005, 0.01, 0.02, 0.04}, 2};
    }
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    const llvm::StringRef spec = policy;
    // At the module's location, not the module: a bad flag needs no dump of the IR.
    auto error = [&] { return mlir::emitError(module.getLoc(), "sbp-compress-gradients: "); };
    FailureOr<CodecAttr> global = CodecAttr();
    if (spec == "lgreco" || spec.starts_with("lgreco:")) {
      // lgreco[:FAMILY]: the family's codec at the uniform default, adapted
      // per layer.
      llvm::StringRef family = spec == "lgreco" ? "powersgd" : spec.drop_front(7);
      std::optional<CodecKind> kind = symbolizeCodecKind(family);
      if (!kind || !lgrecoAdapts(*kind)) {
        error() << "L-GreCo adapts powersgd, topk, topk2bit or qsgd, not '" << family << "'";
        return signalPassFailure();
      }
      auto [values, index] = lgrecoCandidates(*kind);
      adaptive = LgrecoAttr::get(&getContext(), DenseF64ArrayAttr::get(&getContext(), values),
                                 index, 0, 0, lgrecoEvery);
      global = codecWith(&getContext(), *kind, values[static_cast<size_t>(index)]);
    } else if (spec != "auto") {
      global = parseCodecSpec(&getContext(), spec, error);
    }
    if (failed(global) || warmupSteps < 0 || epochSteps < 0 || warmupSteps > INT32_MAX ||
        lgrecoEvery < 1) {
      if (succeeded(global))
        error() << "warmup-steps and epoch-steps must be in [0, 2^31), lgreco-every positive";
      return signalPassFailure();
    }
    if (failed(loadCodecCosts()))
      return signalPassFailure();
    // The model's gradient clipping (DGC clips locally to it).
    module.walk([&](ClipScaleOp c) { maxGradNorm = c.getMaxNorm().convertToDouble(); });
    SymbolTable symbols(module);
    llvm::SmallVector<AllReduceOp> gradients;
    module.walk([&](AllReduceOp ar) {
      if (ar.getInputs().size() == 1 && !ar.getCodecAttr() && feedsOptimizer(ar))
        gradients.push_back(ar);
    });
    for (AllReduceOp ar : gradients)
      if (failed(compress(ar, *global, symbols)))
        return signalPassFailure();
    if (failed(shareLgreco(symbols)))
      return signalPassFailure();
  }

  // L-GreCo under the global policy: the layers it adapts (in program
  // order), sharing one table, choice, previous choice and pending count.
  LgrecoAttr adaptive;
  double maxGradNorm = 0; // 0: the model does not clip
  llvm::SmallVector<AllReduceOp> adapted;

  LogicalResult shareLgreco(SymbolTable &symbols) {
    if (adapted.empty())
      return success();
    MLIRContext *ctx = &getContext();
    auto grad0 = tensorOf(adapted.front().getInputs()[0]);
    auto placement = getSbp(grad0).getPlacement();
    for (AllReduceOp ar : adapted)
      if (getSbp(tensorOf(ar.getInputs()[0])).getPlacement() != placement)
        return ar.emitOpError("L-GreCo adapts the gradients of one placement; this one is on ")
               << getSbp(tensorOf(ar.getInputs()[0])).getPlacement() << ", not " << placement;
    auto pl = symbols.lookup<PlacementOp>(placement.getValue());
    llvm::SmallVector<Attribute> bDims(pl.getHierarchy().size(), sbpDimToAttr(ctx, B));
    auto replicated = SbpTensorAttr::get(ctx, placement, ArrayAttr::get(ctx, bDims));
    const auto layers = static_cast<int64_t>(adapted.size());
    const auto C = static_cast<int64_t>(adaptive.getCandidates().size());
    auto i32 = IntegerType::get(ctx, 32);
    auto zeros = InitAttr::get(ctx, InitKind::zeros, llvm::APFloat(0.0), llvm::APFloat(0.0));
    auto start = InitAttr::get(ctx, InitKind::constant,
                               llvm::APFloat(static_cast<double>(adaptive.getDefaultIndex())),
                               llvm::APFloat(0.0));
    // Declared with the other variables, before the functions that use them.
    OpBuilder b(ctx);
    auto fns = getOperation().getOps<func::FuncOp>();
    if (fns.empty())
      b.setInsertionPointToEnd(getOperation().getBody());
    else
      b.setInsertionPoint(*fns.begin());
    llvm::SmallVector<Attribute> refs;
    for (auto [name, type, init] :
         {std::tuple{"lgreco.errors",
                     RankedTensorType::get({layers, 2 * C}, b.getF32Type(), replicated), zeros},
          std::tuple{"lgreco.choice", RankedTensorType::get({layers}, i32, replicated), start},
          std::tuple{"lgreco.previous", RankedTensorType::get({layers}, i32, replicated), start},
          std::tuple{"lgreco.pending", RankedTensorType::get({}, i32, replicated), zeros}}) {
      if (symbols.lookup(name))
        return getOperation().emitError("sbp-compress-gradients: cannot declare @")
               << name << ": the name is taken";
      auto var = b.create<VariableOp>(getOperation().getLoc(), name, TypeAttr::get(type), init,
                                      b.getI64IntegerAttr(0));
      symbols.insert(var);
      refs.push_back(FlatSymbolRefAttr::get(ctx, name));
    }
    for (auto [layer, ar] : llvm::enumerate(adapted)) {
      ar.setLgrecoAttr(LgrecoAttr::get(ctx, adaptive.getCandidates(), adaptive.getDefaultIndex(),
                                       static_cast<int64_t>(layer), layers, adaptive.getEvery()));
      ar.setLgrecoStateAttr(ArrayAttr::get(ctx, refs));
    }
    return success();
  }

  // The optimiser that applies `ar`'s result (through the next dimension's
  // all-reduce where the placement has more than one), or null.
  static OptimizerOpInterface optimizerOf(AllReduceOp ar) {
    for (Operation *u : ar->getUsers()) {
      if (auto opt = dyn_cast<OptimizerOpInterface>(u))
        return opt;
      if (auto next = dyn_cast<AllReduceOp>(u))
        if (auto opt = optimizerOf(next))
          return opt;
    }
    return nullptr;
  }

  LogicalResult compress(AllReduceOp ar, CodecAttr global, SymbolTable &symbols) {
    OptimizerOpInterface opt = optimizerOf(ar);
    if (!opt)
      return success();
    auto var = symbols.lookup<VariableOp>(opt.getUpdatedVariable().getValue());
    auto grad = tensorOf(ar.getInputs()[0]);
    auto dims = getSbpDims(getSbp(grad));
    // Only a gradient partial on this dimension alone, in f32.
    const int64_t dim = ar.getDim();
    for (auto [d, s] : llvm::enumerate(dims))
      if (isPartial(s) != (static_cast<int64_t>(d) == dim))
        return success();
    if (!grad.getElementType().isF32() || dims[dim].kind != SbpKind::PartialSum)
      return success();
    auto placement = symbols.lookup<PlacementOp>(getSbp(grad).getPlacement().getValue());
    llvm::ArrayRef<int64_t> hierarchy = placement.getHierarchy();
    if (hierarchy[dim] == 1)
      return success();

    CodecAttr codec = global;
    bool own = false;
    if (auto spec = var->getAttrOfType<StringAttr>("compress")) {
      auto parsed = parseCodecSpec(&getContext(), spec.getValue(),
                                   [&] { return var.emitOpError("compress: "); });
      if (failed(parsed))
        return failure();
      codec = *parsed;
      own = true;
    } else if (std::string(policy) == "auto") {
      codec = chooseByCost(grad, hierarchy, dim);
    }
    if (!codec)
      return success();
    if (!own && !worthCompressing(codec, grad))
      return success();

    // DGC (momentum correction) and EF-SignSGD (as its reference code)
    // compress an SGD's momentum, which the optimiser then no longer keeps;
    // under AdamW, DGC and top-k compress the AdamW update (adamToSgd). DGC,
    // and top-k under AdamW, clip locally where the model clips (DGC
    // section 3.3: the threshold over sqrt(N)).
    double momentum = 0, clip = 0, beta2 = 0, eps = 0;
    if (auto adam = dyn_cast<AdamWOp>(opt.getOperation());
        adam && compressesAdamUpdate(codec.getKind())) {
      momentum = adam.getBeta1().convertToDouble();
      beta2 = adam.getBeta2().convertToDouble();
      eps = adam.getEps().convertToDouble();
      if (failed(adamToSgd(adam, symbols)))
        return failure();
    } else if (takesMomentum(codec.getKind())) {
      if (auto sgd = dyn_cast<SgdOp>(opt.getOperation())) {
        momentum = sgd.getMomentum().convertToDouble();
        sgd.setMomentumAttr(FloatAttr::get(sgd.getMomentumAttr().getType(), 0.0));
        if (auto buffer = sgd.getMomentumBufferAttr()) {
          sgd.removeMomentumBufferAttr();
          auto slot = symbols.lookup<VariableOp>(buffer.getValue());
          if (slot && SymbolTable::symbolKnownUseEmpty(slot, getOperation()))
            slot.erase();
        }
      }
    }
    if (maxGradNorm > 0 && (codec.getKind() == CodecKind::dgc || beta2 > 0))
      clip = maxGradNorm / std::sqrt(static_cast<double>(hierarchy[dim]));
    CodecFields fields = CodecFields::of(codec);
    fields.momentum = momentum;
    fields.clip = clip;
    fields.warmup = warmupSteps;
    fields.epochSteps = codec.getKind() == CodecKind::dgc ? int64_t(epochSteps) : 0;
    fields.seed = seedOf(var.getSymName());
    fields.beta2 = beta2;
    fields.eps = eps;
    codec = fields.get(&getContext());

    const bool adapts = adaptive && !own;
    if (failed(attachCodec(ar, codec, var, adapts ? adaptive : LgrecoAttr(), symbols)))
      return failure();
    if (adapts)
      adapted.push_back(ar);
    return success();
  }

  // DGC and top-k under AdamW (as DGC's momentum correction accumulates the SGD
  // update rather than the gradient): the codec keeps each rank's AdamW moments
  // and compresses the AdamW update with error feedback, so the optimiser only
  // applies the group's sum, as SGD at AdamW's learning rate with its decoupled
  // decay (w -= lr (sum + weight_decay w)). Its moments and step counter go,
  // and the model's gradient clipping leaves this gradient to the codec's local
  // clipping.
  static LogicalResult adamToSgd(AdamWOp adam, SymbolTable &symbols) {
    OpBuilder b(adam);
    auto sgd =
        b.create<SgdOp>(adam.getLoc(), adam.getGrad(), Value(), adam.getVariableAttr(),
                        FlatSymbolRefAttr(), adam.getLrAttr(),
                        FloatAttr::get(adam.getLrAttr().getType(), 0.0), adam.getWeightDecayAttr());
    sgd->setDiscardableAttrs(adam->getDiscardableAttrDictionary());
    const bool clipped = adam.getScale() != nullptr;
    Value grad = adam.getGrad();
    const Location loc = adam.getLoc();
    llvm::SmallVector<llvm::StringRef, 3> slots{adam.getM(), adam.getV(), adam.getStep()};
    adam.erase();
    for (llvm::StringRef name : slots)
      if (auto slot = symbols.lookup<VariableOp>(name);
          slot && SymbolTable::symbolKnownUseEmpty(slot, symbols.getOp()))
        slot.erase();
    return clipped ? dropFromNorm(grad, loc) : success();
  }

  // Takes `grad`'s square_sum out of the clipping norm: the add that joins
  // it (through boxing of the scalar) now yields its other operand; where it
  // was the last term, the clip_scale goes (its optimisers, all compressed,
  // no longer read it). sbp-autodiff builds that chain with one use per
  // term: any other shape is an error, not a norm left wrong.
  static LogicalResult dropFromNorm(Value grad, Location loc) {
    SquareSumOp sq;
    for (Operation *u : grad.getUsers())
      if (auto s = dyn_cast<SquareSumOp>(u))
        sq = s;
    llvm::SmallVector<Operation *> chain;
    Value term;
    if (sq) {
      chain.push_back(sq);
      term = sq.getResult();
    }
    auto eraseChain = [&] {
      for (Operation *op : llvm::reverse(chain))
        op->erase();
      return success();
    };
    while (term && term.hasOneUse()) {
      Operation *u = *term.getUsers().begin();
      chain.push_back(u);
      if (auto add = dyn_cast<AddOp>(u)) {
        add.getResult().replaceAllUsesWith(add.getLhs() == term ? add.getRhs() : add.getLhs());
        return eraseChain();
      }
      if (isa<ClipScaleOp>(u) || u->getNumResults() != 1) {
        if (isa<ClipScaleOp>(u) && u->getResult(0).use_empty())
          return eraseChain();
        break;
      }
      term = u->getResult(0);
    }
    return emitError(loc,
                     "sbp-compress-gradients: cannot take a gradient compressed under AdamW "
                     "out of the clipping norm (its square_sum does not reach the norm alone)");
  }

  // Under a global policy: 1-D and small gradients stay dense (DGC,
  // PowerSGD), and PowerSGD only where it compresses at least twofold
  // (torch's min_compression_rate).
  bool worthCompressing(CodecAttr codec, RankedTensorType grad) {
    if (grad.getRank() < 2 || grad.getNumElements() < minElements)
      return false;
    if (codec.getKind() != CodecKind::powersgd)
      return true;
    const int64_t cols = grad.getShape().back(), rows = grad.getNumElements() / cols;
    return 2 * codec.getRank() * (rows + cols) < rows * cols;
  }

  CostModel model;

  // The codec costs measured on the target machine (codec_costs' JSON), in
  // place of the cost model's.
  LogicalResult loadCodecCosts() {
    if (codecCosts.empty())
      return success();
    auto error = [&] {
      return mlir::emitError(getOperation().getLoc(), "sbp-compress-gradients: codec-costs '")
             << codecCosts << "': ";
    };
    auto file = llvm::MemoryBuffer::getFile(codecCosts);
    if (!file)
      return error() << file.getError().message();
    llvm::Expected<llvm::json::Value> json = llvm::json::parse((*file)->getBuffer());
    if (!json)
      return error() << llvm::toString(json.takeError());
    const llvm::json::Object *o = json->getAsObject();
    auto get = [&](llvm::StringRef key, double &into) -> LogicalResult {
      std::optional<double> v = o ? o->getNumber(key) : std::nullopt;
      if (!v || !(*v > 0))
        return error() << "needs a positive number '" << key << "' (seconds per element)";
      into = *v;
      return success();
    };
    return failure(failed(get("topk2bit", model.topk2bitSecondsPerElement)) ||
                   failed(get("powersgd", model.powersgdSecondsPerElementRank)));
  }

  // auto: per gradient, the candidate codec of least modelled time (its
  // collectives over the link, as boxingCost prices them, plus its own work,
  // as measured), where that beats the dense all-reduce.
  CodecAttr chooseByCost(RankedTensorType grad, llvm::ArrayRef<int64_t> hierarchy, int64_t dim) {
    CostModel link = model;
    if (linkBytesPerSecond > 0)
      link.bytesPerSecond = double(linkBytesPerSecond);
    auto dims = getSbpDims(getSbp(grad));
    const double n = static_cast<double>(sbpflow::maxLocalElements(
        grad.getShape().vec(), sbpflow::NdSbp(dims.begin(), dims.end()), hierarchy.vec()));
    const int64_t ranks = hierarchy[dim];
    auto allReduce = [&](double bytes) { return boxingCost(link, P, B, bytes, ranks); };
    double best = allReduce(4 * n);
    CodecAttr chosen;
    for (CodecAttr c : {codecWith(&getContext(), CodecKind::powersgd, 4),
                        codecWith(&getContext(), CodecKind::topk2bit, 0.01)}) {
      if (!worthCompressing(c, grad))
        continue;
      double t;
      if (c.getKind() == CodecKind::powersgd) {
        // Two all-reduces: P (rows x rank), then Q (cols x rank).
        const double cols = grad.getShape().back(), rows = n / cols;
        t = allReduce(4 * c.getRank() * rows) + allReduce(4 * c.getRank() * cols) +
            n * c.getRank() * model.powersgdSecondsPerElementRank;
      } else {
        // An all-gather of every rank's k indices, 2-bit codes and table.
        const double k = std::ceil(c.getDensity().convertToDouble() * n);
        t = boxingCost(link, S(0), B, static_cast<double>(ranks) * (4 * k + k / 4 + 20), ranks) +
            n * model.topk2bitSecondsPerElement;
      }
      if (t < best) {
        best = t;
        chosen = c;
      }
    }
    return chosen;
  }
};

} // namespace
