// sbp-autodiff: replaces `sbp.minimize %loss` by the reverse-mode gradient of
// the loss (each op's gradient rule from SbpOpInterface, fan-out summed with
// sbp.add) and one sbp.sgd per trained variable (plus its momentum buffer).
#include "compiler/Passes.h"
#include "ops/OpSemantics.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

struct AutodiffPass : public PassWrapper<AutodiffPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(AutodiffPass)
  StringRef getArgument() const override { return "sbp-autodiff"; }
  StringRef getDescription() const override {
    return "Reverse-mode autodiff of sbp.minimize: backward ops and one sbp.sgd per parameter";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registry.insert<SbpDialect>();
    registerSbpOpSemantics(registry);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    ensureSbpOpSemantics(module.getContext());
    for (auto fn : module.getOps<func::FuncOp>()) {
      llvm::SmallVector<MinimizeOp> minimizes(fn.getOps<MinimizeOp>());
      if (minimizes.empty())
        continue;
      if (minimizes.size() > 1) {
        minimizes[1].emitOpError("is the second sbp.minimize in @")
            << fn.getSymName() << "; a function trains one loss";
        return signalPassFailure();
      }
      if (failed(differentiate(module, fn, minimizes.front())))
        return signalPassFailure();
    }
  }

  LogicalResult differentiate(ModuleOp module, func::FuncOp fn, MinimizeOp minimize) {
    Block &body = fn.getBody().front();
    // Values that depend on a parameter: only they need gradients.
    llvm::DenseSet<Value> active;
    for (Operation &op : body) {
      if (&op == minimize.getOperation())
        break;
      bool isActive = isa<ParameterOp>(op) ||
                      llvm::any_of(op.getOperands(), [&](Value v) { return active.count(v); });
      if (isActive)
        for (Value r : op.getResults())
          active.insert(r);
    }
    Value loss = minimize.getLoss();
    if (!active.count(loss))
      return minimize.emitOpError("loss does not depend on any parameter: nothing to train");

    OpBuilder b(minimize);
    Location loc = minimize.getLoc();
    llvm::DenseMap<Value, Value> grads;
    grads[loss] = b.create<FillOp>(loc, withoutSbp(loss.getType()), b.getF32FloatAttr(1.0f));

    auto accumulate = [&](Value v, Value g, Location at) {
      auto it = grads.find(v);
      if (it == grads.end()) {
        grads[v] = g;
        return;
      }
      it->second = b.create<AddOp>(at, withoutSbp(v.getType()), it->second, g).getResult();
    };

    // Gradient per variable, in the order backward finishes them.
    llvm::MapVector<StringAttr, Value> varGrads;
    llvm::SmallVector<Operation *> forward;
    for (Operation &op : body) {
      if (&op == minimize.getOperation())
        break;
      forward.push_back(&op);
    }
    for (Operation *op : llvm::reverse(forward)) {
      if (auto param = dyn_cast<ParameterOp>(op)) {
        auto it = grads.find(param.getResult());
        if (it == grads.end())
          continue;
        StringAttr name = param.getVariableAttr().getAttr();
        auto vit = varGrads.find(name);
        if (vit == varGrads.end())
          varGrads.insert({name, it->second});
        else
          vit->second =
              b.create<AddOp>(param.getLoc(), withoutSbp(param.getType()), vit->second, it->second);
        continue;
      }
      if (op->getNumResults() == 0 || !llvm::any_of(op->getResults(), [&](Value r) {
            return grads.count(r) && active.count(r);
          }))
        continue;
      auto iface = dyn_cast<SbpOpInterface>(op);
      if (!iface)
        return op->emitOpError("has no gradient rule (no SbpOpInterface)");
      llvm::SmallVector<Value> resultGrads;
      for (Value r : op->getResults())
        resultGrads.push_back(grads.lookup(r));
      Operation *lastBefore = minimize->getPrevNode();
      llvm::SmallVector<Value> operandGrads;
      b.setInsertionPoint(minimize);
      if (failed(iface.buildGradients(b, resultGrads, operandGrads)))
        return failure();
      if (operandGrads.size() != op->getNumOperands())
        return op->emitOpError("gradient rule returned ")
               << operandGrads.size() << " gradients for " << op->getNumOperands() << " operands";
      for (auto [operand, g] : llvm::zip(op->getOperands(), operandGrads))
        if (g && active.count(operand))
          accumulate(operand, g, op->getLoc());
      // Drop what the rule built for operands that need no gradient (inputs).
      llvm::SmallVector<Operation *> created;
      for (Operation *o = lastBefore ? lastBefore->getNextNode() : &body.front();
           o && o != minimize.getOperation(); o = o->getNextNode())
        created.push_back(o);
      for (Operation *o : llvm::reverse(created))
        if (o->use_empty() && !llvm::any_of(o->getResults(), [&](Value r) {
              return llvm::any_of(grads, [&](auto &kv) { return kv.second == r; });
            }))
          o->erase();
    }

    SgdAttr opt = minimize.getOptimizer();
    float lr = opt.getLr().convertToDouble(), momentum = opt.getMomentum().convertToDouble(),
          wd = opt.getWeightDecay().convertToDouble();
    SymbolTable symbols(module);
    for (auto &[name, grad] : varGrads) {
      auto var = symbols.lookup<VariableOp>(name);
      if (!var)
        return minimize.emitOpError("parameter refers to undeclared variable @") << name;
      FlatSymbolRefAttr buffer;
      if (momentum != 0.0f) {
        std::string bufName = (name.getValue() + ".momentum").str();
        auto existing = symbols.lookup<VariableOp>(bufName);
        if (existing && existing.getType() != var.getType())
          return existing.emitOpError("exists with another type; cannot hold the momentum of @")
                 << name.getValue();
        if (!existing) {
          OpBuilder mb(var);
          mb.setInsertionPointAfter(var);
          auto zeros =
              InitAttr::get(&getContext(), InitKind::zeros, llvm::APFloat(0.0), llvm::APFloat(0.0));
          auto created = mb.create<VariableOp>(var.getLoc(), bufName, TypeAttr::get(var.getType()),
                                               zeros, mb.getI64IntegerAttr(0));
          symbols.insert(created);
        }
        buffer = FlatSymbolRefAttr::get(&getContext(), bufName);
      }
      b.create<SgdOp>(loc, grad, FlatSymbolRefAttr::get(name), buffer, b.getF32FloatAttr(lr),
                      b.getF32FloatAttr(momentum), b.getF32FloatAttr(wd));
    }
    minimize.erase();
    return success();
  }
};

} // namespace

std::unique_ptr<Pass> mlir::sbp::createAutodiffPass() { return std::make_unique<AutodiffPass>(); }
