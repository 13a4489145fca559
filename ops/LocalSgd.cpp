// Local SGD's ops (sbp-local-sgd): the schedule of the inner and outer
// functions, the inner program's local gradient (local_estimate, with the
// boxing ops in ops/Boxing.cpp's sense: one SBP change on one dimension),
// and the outer program's pseudo-gradient and outer step. Per op: checks,
// SBP signatures, flops.
#include "ops/Rules.h"

#include "llvm/ADT/StringSwitch.h"

#include <cmath>

using namespace mlir;
using namespace mlir::sbp;

//===-- schedule: which functions run, and when ----------------------------------===//

std::optional<std::pair<int, llvm::StringRef>> ScheduleOp::parseStep(llvm::StringRef step) {
  if (step == "join")
    return std::pair<int, llvm::StringRef>{2, {}};
  auto [action, fn] = step.split(' ');
  const int kind =
      llvm::StringSwitch<int>(action).Case("run", 0).Case("start", 1).Case("inner", 3).Default(-1);
  if (!fn.consume_front("@") || fn.empty() || kind < 0)
    return std::nullopt;
  return std::pair<int, llvm::StringRef>{kind, fn};
}

LogicalResult ScheduleOp::verifySymbolUses(SymbolTableCollection &symbols) {
  if (getAlgorithm().empty())
    return emitOpError("needs an algorithm name");
  const int64_t minSteps = getMinStepsAttr() ? getMinStepsAttr().getInt() : 0;
  if (FloatAttr secondsAttr = getSecondsAttr()) {
    const double seconds = secondsAttr.getValueAsDouble();
    if (!(seconds > 0 && std::isfinite(seconds)) || getPeriod() != 0 || minSteps < 0)
      return emitOpError("with seconds (timed rounds) needs seconds > 0, period 0 and min_steps "
                         ">= 0, got seconds = ")
             << seconds << ", period = " << getPeriod() << ", min_steps = " << minSteps;
    for (Attribute a : getRound())
      if (auto step = parseStep(llvm::cast<StringAttr>(a).getValue()); step && step->first != 3)
        return emitOpError("has step ")
               << a
               << " in timed rounds, which synchronise in their first inner step only (\"inner "
                  "@f\"), each replica ending its rounds at its own step";
  } else if (getPeriod() < 1) {
    return emitOpError("period must be at least 1, got ") << getPeriod();
  } else if (getMinStepsAttr()) {
    return emitOpError("has min_steps without seconds; only timed rounds take it");
  }
  if (getRound().empty())
    return emitOpError("needs at least one step in its round");
  if (!symbols.lookupNearestSymbolFrom<func::FuncOp>(*this, getInnerAttr()))
    return emitOpError("names no function ") << getInnerAttr();
  llvm::StringRef started;
  for (Attribute a : getRound()) {
    llvm::StringRef text = llvm::cast<StringAttr>(a).getValue();
    auto step = parseStep(text);
    if (!step)
      return emitOpError("step '")
             << text << "' is not \"run @f\", \"start @f\", \"inner @f\" or \"join\"";
    if (step->first == 2)
      continue;
    auto ref = FlatSymbolRefAttr::get(getContext(), step->second);
    if (!symbols.lookupNearestSymbolFrom<func::FuncOp>(*this, ref))
      return emitOpError("names no function ") << ref;
    if (ref == getInnerAttr())
      return emitOpError("runs ") << ref << " both as the inner step and in the round";
    if (step->first == 1) {
      if (!started.empty() && started != step->second)
        return emitOpError("starts two background functions, @")
               << started << " and " << ref << "; a schedule has one";
      started = step->second;
    }
  }
  return success();
}

//===-- local_estimate: P -> B by the group's size, no communication --------------===//

bool LocalEstimateOp::acceptsChange(SbpDim from, SbpDim to) {
  return from.kind == SbpKind::PartialSum && to.kind == SbpKind::Broadcast;
}
llvm::StringRef LocalEstimateOp::getChange() { return "P(sum) -> B"; }

// The factor is the group's size (sbp-local-sgd checks it against the
// placement); a rank's term times it.
LogicalResult LocalEstimateOp::verify() {
  if (!(getFactor().convertToFloat() >= 1.0f))
    return emitOpError("factor must be at least 1 (the group's size), got ")
           << getFactor().convertToFloat();
  return success();
}

//===-- pseudo_gradient: anchor - param, a term of the replicas' sum --------------===//

LogicalResult PseudoGradientOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"anchor", "param"});
  if (failed(types) || failed(expectSameType(*this, getAnchor(), getParam(), "anchor and param")))
    return failure();
  return resultsLike(results, getAnchor(), *types);
}

// On the replica dimension each replica's difference is one term of the sum
// the outer step averages, or the replica's own value (CO2 merges it into
// its parameters); elsewhere it is elementwise.
llvm::SmallVector<SbpSignature> PseudoGradientOp::getSbpSignatures(unsigned dim) {
  if (dim == getDim())
    return {sig({B, B}, {P}), sig({B, B}, {B})};
  return uniform(tensorOf(getAnchor()).getRank(), 2, /*linear=*/false);
}

double PseudoGradientOp::getFlops() { return elements(getAnchor()); }

//===-- outer_step -----------------------------------------------------------------===//

LogicalResult OuterStepOp::verify() {
  if (getScale())
    return emitOpError("takes no gradient scale");
  const float lr = getLr().convertToFloat(), momentum = getMomentum().convertToFloat();
  if (!std::isfinite(lr))
    return emitOpError("lr must be finite, got ") << lr;
  if (!(momentum >= 0.0f && momentum < 1.0f))
    return emitOpError("momentum must lie in [0, 1), got ") << momentum;
  if ((momentum != 0.0f) != static_cast<bool>(getMomentumBuffer()))
    return emitOpError(momentum != 0.0f ? "momentum needs a momentum_buffer variable"
                                        : "has a momentum_buffer but momentum 0");
  if (getReplicas() < 1)
    return emitOpError("replicas must be at least 1, got ") << getReplicas();
  if (!(getGapPenalty().convertToFloat() >= 1.0f))
    return emitOpError("gap_penalty must be at least 1, got ") << getGapPenalty().convertToFloat();
  if (!(getClip().convertToFloat() >= 0.0f))
    return emitOpError("clip must be non-negative, got ") << getClip().convertToFloat();
  if (getClip().convertToFloat() > 0.0f && !getMomentumBuffer())
    return emitOpError("clips the outer momentum, which needs a momentum_buffer");
  return success();
}

LogicalResult OuterStepOp::verifySymbolUses(SymbolTableCollection &symbols) {
  FailureOr<VariableOp> var = verifyUpdated(*this, symbols, "pseudo-gradient");
  if (failed(var))
    return failure();
  for (auto [slot, what] : {std::pair{getAnchorAttr(), "anchor"},
                            std::pair{getMomentumBufferAttr(), "momentum buffer"}}) {
    if (!slot)
      continue;
    auto slotVar = symbols.lookupNearestSymbolFrom<VariableOp>(*this, slot);
    if (!slotVar)
      return emitOpError("references undeclared ") << what << " " << slot;
    if (slotVar.getTensorType() != var->getTensorType())
      return emitOpError() << what << " " << slot << " differs in type from " << getVariableAttr();
  }
  return success();
}

llvm::SmallVector<FlatSymbolRefAttr> OuterStepOp::getStateVariables() {
  llvm::SmallVector<FlatSymbolRefAttr> state{getAnchorAttr()};
  if (auto buf = getMomentumBufferAttr())
    state.push_back(buf);
  return state;
}

LogicalResult OuterStepOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &) {
  return success(succeeded(checkElementTypes(*this, {"pseudo-gradient"})));
}

// The summed pseudo-gradient is laid out as the variable.
llvm::SmallVector<SbpSignature> OuterStepOp::getSbpSignatures(unsigned dim) {
  return optimizerSignatures(*this, dim);
}

double OuterStepOp::getFlops() { return 6.0 * elements(getGrad()); }

//===-- assign -------------------------------------------------------------------===//

Value AssignOp::getGradient() { return getValue(); }
Value AssignOp::getGradientScale() { return {}; }
llvm::SmallVector<FlatSymbolRefAttr> AssignOp::getStateVariables() { return {}; }

LogicalResult AssignOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return success(succeeded(verifyUpdated(*this, symbols, "value")));
}

LogicalResult AssignOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &) {
  return success(succeeded(checkElementTypes(*this, {"value"})));
}

// The value is laid out as the variable; on the variable's replica
// dimension each replica may write its own term of a partial value.
llvm::SmallVector<SbpSignature> AssignOp::getSbpSignatures(unsigned dim) {
  llvm::SmallVector<SbpSignature> sigs = optimizerSignatures(*this, dim);
  auto var = SymbolTable::lookupNearestSymbolFrom<VariableOp>(*this, getVariableAttr());
  if (auto replica = var ? var.getReplicaDim() : std::nullopt;
      !sigs.empty() && replica && *replica == dim)
    sigs.push_back(sig({P}, {}));
  return sigs;
}

double AssignOp::getFlops() { return 0.0; }
