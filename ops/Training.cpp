// The training ops: minimize (removed by sbp-autodiff), the optimisers it
// becomes (and how each optimiser attribute builds its op), gradient clipping
// by the global norm, metrics and outputs read by the driver. Per op: checks,
// SBP signatures, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

bool isF32Scalar(Type t) {
  auto r = llvm::cast<RankedTensorType>(t);
  return r.getRank() == 0 && r.getElementType().isF32();
}

// The driver reads metrics and outputs by name: one of each name per function.
template <typename OpT> LogicalResult verifyUniqueName(OpT op, llvm::StringRef what) {
  for (Operation *prev = op->getPrevNode(); prev; prev = prev->getPrevNode())
    if (auto other = dyn_cast<OpT>(prev); other && other.getName() == op.getName())
      return op.emitOpError() << what << " '" << op.getName() << "' declared twice in one function";
  return success();
}

// The optional gradient scale of an optimiser: an f32 scalar.
LogicalResult verifyScale(Operation *op, Value scale) {
  if (scale && !isF32Scalar(scale.getType()))
    return op->emitOpError("gradient scale must be an f32 scalar (tensor<f32>), got ")
           << scale.getType();
  return success();
}

// A state variable of an optimiser (momentum buffer, AdamW moment) exists
// and has the shape of the variable it belongs to.
LogicalResult verifySlot(Operation *op, SymbolTableCollection &symbols, VariableOp var,
                         FlatSymbolRefAttr slot, llvm::StringRef what) {
  auto slotVar = symbols.lookupNearestSymbolFrom<VariableOp>(op, slot);
  if (!slotVar)
    return op->emitOpError("references undeclared ") << what << " " << slot;
  if (slotVar.getTensorType().getShape() != var.getTensorType().getShape())
    return op->emitOpError() << what << " " << slot << " has a different shape than "
                             << FlatSymbolRefAttr::get(var.getSymNameAttr());
  return success();
}

} // namespace

FailureOr<VariableOp> mlir::sbp::verifyUpdated(OptimizerOpInterface op,
                                               SymbolTableCollection &symbols,
                                               llvm::StringRef what) {
  FlatSymbolRefAttr variable = op.getUpdatedVariable();
  auto var = symbols.lookupNearestSymbolFrom<VariableOp>(op, variable);
  if (!var)
    return op->emitOpError("references undeclared variable ") << variable;
  Value grad = op.getGradient();
  if (var.getTensorType().getShape() != shapeOf(grad))
    return op->emitOpError() << what << " shape differs from variable " << variable;
  SbpTensorAttr varSbp = getSbp(var.getType()), gradSbp = getSbp(grad.getType());
  if (varSbp && gradSbp && varSbp.getPlacement() != gradSbp.getPlacement())
    return op->emitOpError() << what << " is on placement " << gradSbp.getPlacement()
                             << " but variable " << variable << " is on " << varSbp.getPlacement();
  if (failed(verifyEncodings(op, symbols)))
    return failure();
  return var;
}

llvm::SmallVector<SbpSignature> mlir::sbp::optimizerSignatures(OptimizerOpInterface op,
                                                               unsigned dim) {
  auto var = SymbolTable::lookupNearestSymbolFrom<VariableOp>(op, op.getUpdatedVariable());
  if (!var)
    return {};
  if (auto d = sbpAt(var.getType(), dim))
    return {op.getGradientScale() ? sig({*d, B}, {}) : sig({*d}, {})};
  return {};
}

//===-- gradient clipping. The square of a partial sum is not partial, so
// square_sum takes no P input. ---------------------------------------------------===//

LogicalResult SquareSumOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferLike(*this, Value(), {"input"}, results);
}

llvm::SmallVector<SbpSignature> SquareSumOp::getSbpSignatures(unsigned) {
  return reduceToScalar(getX(), /*linear=*/false);
}

double SquareSumOp::getFlops() { return 2.0 * elements(getX()); }

LogicalResult ClipScaleOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"sumsq"});
  if (failed(types) || failed(expectRank(*this, getSumsq(), 0, "sumsq")) ||
      failed(expectPositive(*this, "max_norm", getMaxNorm().convertToFloat())))
    return failure();
  return setResult(results, {}, *types);
}

llvm::SmallVector<SbpSignature> ClipScaleOp::getSbpSignatures(unsigned) { return {sig({B}, {B})}; }

double ClipScaleOp::getFlops() { return 4.0; }

//===-- minimize ------------------------------------------------------------------===//

LogicalResult MinimizeOp::verify() {
  if (!isF32Scalar(getLoss().getType()))
    return emitOpError("loss must be an f32 scalar (tensor<f32>), got ") << getLoss().getType();
  if (auto norm = getMaxGradNorm(); norm && !(norm->convertToFloat() > 0.0f))
    return emitOpError("max_grad_norm must be positive, got ") << norm->convertToFloat();
  return success();
}

//===-- metric: a scalar, summed over ranks by the driver when partial --------===//

LogicalResult MetricOp::verify() {
  if (getName().empty())
    return emitOpError("needs a non-empty name");
  if (!isF32Scalar(getValue().getType()))
    return emitOpError("metric '")
           << getName() << "' must be an f32 scalar, got " << getValue().getType();
  return verifyUniqueName(*this, "metric");
}

LogicalResult MetricOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &) {
  return success();
}

llvm::SmallVector<SbpSignature> MetricOp::getSbpSignatures(unsigned) {
  return {sig({B}, {}), sig({P}, {})};
}

double MetricOp::getFlops() { return 0.0; }

//===-- output: the caller reads a whole tensor ---------------------------------===//

LogicalResult OutputOp::verify() {
  if (getName().empty())
    return emitOpError("needs a non-empty name");
  // That the caller reads a whole (B) tensor is the op's only SBP signature:
  // boxing provides it, so an operand typed S or P before boxing is fine here.
  return verifyUniqueName(*this, "output");
}

LogicalResult OutputOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &) {
  return success();
}

llvm::SmallVector<SbpSignature> OutputOp::getSbpSignatures(unsigned) { return {sig({B}, {})}; }

double OutputOp::getFlops() { return 0.0; }

//===-- sgd: momentum and weight decay ----------------------------------------------===//

LogicalResult SgdAttr::buildUpdate(
    OpBuilder &b, Location loc, Operation *variable, Value grad, Value scale,
    llvm::function_ref<FailureOr<FlatSymbolRefAttr>(llvm::StringRef, Type)> slot) const {
  auto var = llvm::cast<VariableOp>(variable);
  float momentum = getMomentum().convertToDouble();
  FlatSymbolRefAttr buffer;
  if (momentum != 0.0f) {
    FailureOr<FlatSymbolRefAttr> made = slot("momentum", var.getType());
    if (failed(made))
      return failure();
    buffer = *made;
  }
  b.create<SgdOp>(loc, grad, scale, FlatSymbolRefAttr::get(var.getSymNameAttr()), buffer,
                  b.getF32FloatAttr(getLr().convertToDouble()), b.getF32FloatAttr(momentum),
                  b.getF32FloatAttr(getWeightDecay().convertToDouble()));
  return success();
}

LogicalResult SgdOp::verify() {
  if (getMomentum().convertToFloat() != 0.0f && !getMomentumBuffer())
    return emitOpError("momentum ")
           << getMomentum().convertToFloat() << " needs a momentum_buffer variable";
  return verifyScale(*this, getScale());
}

LogicalResult SgdOp::verifySymbolUses(SymbolTableCollection &symbols) {
  FailureOr<VariableOp> var = verifyUpdated(*this, symbols);
  if (failed(var))
    return failure();
  if (auto buf = getMomentumBufferAttr())
    return verifySlot(*this, symbols, *var, buf, "momentum buffer");
  return success();
}

llvm::SmallVector<FlatSymbolRefAttr> SgdOp::getStateVariables() {
  if (auto buf = getMomentumBufferAttr())
    return {buf};
  return {};
}

LogicalResult SgdOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &) {
  return success(succeeded(checkElementTypes(*this, {"gradient", "gradient scale"})));
}

llvm::SmallVector<SbpSignature> SgdOp::getSbpSignatures(unsigned dim) {
  return optimizerSignatures(*this, dim);
}

double SgdOp::getFlops() { return 4.0 * elements(getGrad()); }

//===-- adamw: moments m and v, and a scalar step counter --------------------------===//

LogicalResult AdamWAttr::buildUpdate(
    OpBuilder &b, Location loc, Operation *variable, Value grad, Value scale,
    llvm::function_ref<FailureOr<FlatSymbolRefAttr>(llvm::StringRef, Type)> slot) const {
  auto var = llvm::cast<VariableOp>(variable);
  // The step counter is the same on every rank: broadcast everywhere, on the
  // variable's placement (the module's first for a variable whose layout
  // sbp-propagate chooses). An i32: an f32 stops counting at 2^24.
  auto module = var->getParentOfType<ModuleOp>();
  PlacementOp placement;
  if (SbpTensorAttr enc = getSbp(var.getType()))
    placement = SymbolTable::lookupNearestSymbolFrom<PlacementOp>(var, enc.getPlacement());
  else if (auto first = module.getOps<PlacementOp>(); !first.empty())
    placement = *first.begin();
  if (!placement)
    return var.emitOpError("has no placement for its AdamW step counter");
  llvm::SmallVector<SbpDim> allB(placement.getHierarchy().size(), broadcastDim());
  auto stepType = RankedTensorType::get(
      {}, b.getI32Type(), makeSbpTensorAttr(b.getContext(), placement.getSymName(), allB));
  FailureOr<FlatSymbolRefAttr> m = slot("adam_m", var.getType());
  FailureOr<FlatSymbolRefAttr> v = slot("adam_v", var.getType());
  FailureOr<FlatSymbolRefAttr> step = slot("adam_step", stepType);
  if (failed(m) || failed(v) || failed(step))
    return failure();
  // nanoGPT's rule: matrices (weights, embeddings) decay; biases and
  // normalisation parameters do not.
  double wd = var.getTensorType().getRank() >= 2 ? getWeightDecay().convertToDouble() : 0;
  b.create<AdamWOp>(loc, grad, scale, FlatSymbolRefAttr::get(var.getSymNameAttr()), *m, *v, *step,
                    b.getF32FloatAttr(getLr().convertToDouble()),
                    b.getF32FloatAttr(getBeta1().convertToDouble()),
                    b.getF32FloatAttr(getBeta2().convertToDouble()),
                    b.getF32FloatAttr(getEps().convertToDouble()), b.getF32FloatAttr(wd));
  return success();
}

LogicalResult AdamWOp::verify() {
  float b1 = getBeta1().convertToFloat(), b2 = getBeta2().convertToFloat();
  if (!(b1 >= 0.0f && b1 < 1.0f) || !(b2 >= 0.0f && b2 < 1.0f))
    return emitOpError("betas must lie in [0, 1), got beta1 = ") << b1 << ", beta2 = " << b2;
  if (!(getEps().convertToFloat() > 0.0f))
    return emitOpError("eps must be positive, got ") << getEps().convertToFloat();
  return verifyScale(*this, getScale());
}

LogicalResult AdamWOp::verifySymbolUses(SymbolTableCollection &symbols) {
  FailureOr<VariableOp> var = verifyUpdated(*this, symbols);
  if (failed(var) || failed(verifySlot(*this, symbols, *var, getMAttr(), "first moment")) ||
      failed(verifySlot(*this, symbols, *var, getVAttr(), "second moment")))
    return failure();
  auto step = symbols.lookupNearestSymbolFrom<VariableOp>(*this, getStepAttr());
  if (!step)
    return emitOpError("references undeclared step counter ") << getStepAttr();
  if (RankedTensorType t = step.getTensorType();
      t.getRank() != 0 || !t.getElementType().isSignlessInteger(32))
    return emitOpError("step counter ")
           << getStepAttr() << " must be an i32 scalar, got " << step.getType();
  return success();
}

llvm::SmallVector<FlatSymbolRefAttr> AdamWOp::getStateVariables() {
  return {getMAttr(), getVAttr(), getStepAttr()};
}

LogicalResult AdamWOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &) {
  return success(succeeded(checkElementTypes(*this, {"gradient", "gradient scale"})));
}

llvm::SmallVector<SbpSignature> AdamWOp::getSbpSignatures(unsigned dim) {
  return optimizerSignatures(*this, dim);
}

double AdamWOp::getFlops() { return 12.0 * elements(getGrad()); }
