// sbp-autodiff: replaces `sbp.minimize %loss` by the reverse-mode gradient of
// the loss (each op's gradient rule from SbpOpInterface, fan-out summed with
// sbp.add), optional gradient clipping by the global norm, and one optimiser
// update per trained variable, built by the minimize's optimiser attribute
// (OptimizerAttrInterface) with the state variables it asks for.
#include "compiler/Passes.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::sbp {
#define GEN_PASS_DEF_AUTODIFFPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

struct AutodiffPass : public sbp::impl::AutodiffPassBase<AutodiffPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
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

    SymbolTable symbols(module);
    llvm::SmallVector<std::pair<VariableOp, Value>> trained;
    for (auto &[name, grad] : varGrads) {
      auto var = symbols.lookup<VariableOp>(name);
      if (!var)
        return minimize.emitOpError("parameter refers to undeclared variable @") << name;
      trained.push_back({var, grad});
    }

    // Gradient clipping: the global L2 norm over every trained gradient.
    // square_sum of a split gradient is partial, of a broadcast one
    // broadcast; boxing makes the sum right on any sharding.
    Value scale;
    if (auto maxNorm = minimize.getMaxGradNormAttr()) {
      auto scalar = RankedTensorType::get({}, b.getF32Type());
      Value total;
      for (auto &[var, grad] : trained) {
        Value sq = b.create<SquareSumOp>(loc, scalar, grad).getResult();
        total = total ? b.create<AddOp>(loc, scalar, total, sq).getResult() : sq;
      }
      scale = b.create<ClipScaleOp>(loc, scalar, total, maxNorm).getResult();
    }

    auto optimizer = cast<OptimizerAttrInterface>(minimize.getOptimizer());
    for (auto &[var, grad] : trained) {
      VariableOp owner = var;
      auto slot = [&](StringRef suffix, Type type) {
        return slotVariable(symbols, owner, (owner.getSymName() + "." + suffix).str(), type);
      };
      if (failed(optimizer.buildUpdate(b, loc, var, grad, scale, slot)))
        return failure();
    }
    minimize.erase();
    return success();
  }

  // The optimiser slot `slotName` of `var` (zero-initialised, declared after
  // it): created unless a variable of that name and type already exists.
  FailureOr<FlatSymbolRefAttr> slotVariable(SymbolTable &symbols, VariableOp var,
                                            StringRef slotName, Type type) {
    auto existing = symbols.lookup<VariableOp>(slotName);
    if (existing && existing.getType() != type)
      return existing.emitOpError("exists with type ")
             << existing.getType() << "; cannot hold " << type << " for @" << var.getSymName();
    if (!existing) {
      // After the variable and the slots already made for it, in creation order.
      Operation *after = var;
      std::string prefix = (var.getSymName() + ".").str();
      while (auto next = dyn_cast_or_null<VariableOp>(after->getNextNode())) {
        if (!next.getSymName().starts_with(prefix))
          break;
        after = next;
      }
      OpBuilder mb(var);
      mb.setInsertionPointAfter(after);
      auto zeros =
          InitAttr::get(&getContext(), InitKind::zeros, llvm::APFloat(0.0), llvm::APFloat(0.0));
      auto created = mb.create<VariableOp>(var.getLoc(), slotName, TypeAttr::get(type), zeros,
                                           mb.getI64IntegerAttr(0));
      symbols.insert(created);
    }
    return FlatSymbolRefAttr::get(&getContext(), slotName);
  }
};

} // namespace
