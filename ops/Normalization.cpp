// The row normalisations over the last axis: layer_norm and softmax, and
// their gradients. Per op: shape rule, SBP signatures (split on the rows),
// gradient, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

// A [C] vector parameter of x [..., C]; `also` extends the messages.
LogicalResult checkChannelVector(Operation *op, Value x, Value vec, llvm::StringRef what,
                                 llvm::StringRef also) {
  if (failed(expectRank(op, vec, 1, what, also)))
    return failure();
  int64_t c = shapeOf(x).back();
  if (shapeOf(vec)[0] != c)
    return op->emitOpError() << what << " length " << shapeOf(vec)[0] << " does not match the " << c
                             << " channels (last axis) of the input" << also;
  return success();
}

// Split on a leading axis, or broadcast.
llvm::SmallVector<SbpSignature> rowSignatures(Value x) {
  llvm::SmallVector<SbpSignature> out;
  for (int i = 0; i < leadAxes(x); ++i)
    out.push_back(sig({S(i)}, {S(i)}));
  out.push_back(sig({B}, {B}));
  return out;
}

} // namespace

//===-- layer_norm: gamma and beta [C] over x [..., C] -------------------------===//

LogicalResult LayerNormOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"input", "gamma", "beta"});
  if (failed(types) || failed(expectMinRank(*this, getX(), 1, "input")))
    return failure();
  std::string needs = "; needs gamma and beta " + shapeString({shapeOf(getX()).back()});
  if (failed(checkChannelVector(*this, getX(), getGamma(), "gamma", needs)) ||
      failed(checkChannelVector(*this, getX(), getBeta(), "beta", needs)) ||
      failed(expectPositive(*this, "eps", getEps().convertToFloat())))
    return failure();
  return resultsLike(results, getX(), *types);
}

llvm::SmallVector<SbpSignature> LayerNormOp::getSbpSignatures(unsigned) {
  llvm::SmallVector<SbpSignature> out;
  for (int i = 0; i < leadAxes(getX()); ++i)
    out.push_back(sig({S(i), B, B}, {S(i)}));
  out.push_back(sig({B, B, B}, {B}));
  return out;
}

LogicalResult LayerNormOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                          llvm::SmallVectorImpl<Value> &grads) {
  RankedTensorType gt = withoutSbp(getGamma().getType());
  auto g = b.create<LayerNormGradOp>(getLoc(), withoutSbp(getX().getType()), gt, gt, dy[0], getX(),
                                     getGamma(), getEpsAttr());
  grads.append({g.getDx(), g.getDgamma(), g.getDbeta()});
  return success();
}

double LayerNormOp::getFlops() { return 8.0 * elements(getX()); }

//===-- layer_norm_grad: dx like x, dgamma and dbeta like gamma ----------------===//

LogicalResult LayerNormGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"dy", "x", "gamma"});
  if (failed(types) || failed(expectMinRank(*this, getX(), 1, "x")) ||
      failed(expectSameType(*this, getDy(), getX(), "dy and x")) ||
      failed(checkChannelVector(*this, getX(), getGamma(), "gamma", "")) ||
      failed(expectPositive(*this, "eps", getEps().convertToFloat())))
    return failure();
  results.push_back(RankedTensorType::get(shapeOf(getX()), (*types)[0]));
  for (unsigned i = 1; i < 3; ++i)
    results.push_back(RankedTensorType::get(shapeOf(getGamma()), (*types)[i]));
  return success();
}

llvm::SmallVector<SbpSignature> LayerNormGradOp::getSbpSignatures(unsigned) {
  llvm::SmallVector<SbpSignature> out;
  for (int i = 0; i < leadAxes(getX()); ++i)
    out.push_back(sig({S(i), S(i), B}, {S(i), P, P}));
  out.push_back(sig({B, B, B}, {B, B, B}));
  out.push_back(sig({P, B, B}, {P, P, P}));
  return out;
}

double LayerNormGradOp::getFlops() { return 12.0 * elements(getX()); }

//===-- softmax over the last axis ---------------------------------------------===//

LogicalResult SoftmaxOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"input"});
  if (failed(types) || failed(expectMinRank(*this, getX(), 1, "input")))
    return failure();
  return resultsLike(results, getX(), *types);
}

llvm::SmallVector<SbpSignature> SoftmaxOp::getSbpSignatures(unsigned) {
  return rowSignatures(getX());
}

LogicalResult SoftmaxOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                        llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(
      b.create<SoftmaxGradOp>(getLoc(), withoutSbp(getX().getType()), dy[0], getResult())
          .getResult());
  return success();
}

double SoftmaxOp::getFlops() { return 5.0 * elements(getX()); }

//===-- softmax_grad: linear in dy ----------------------------------------------===//

LogicalResult SoftmaxGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"dy", "y"});
  if (failed(types) || failed(expectMinRank(*this, getY(), 1, "y")) ||
      failed(expectSameType(*this, getDy(), getY(), "dy and y")))
    return failure();
  return resultsLike(results, getDy(), *types);
}

llvm::SmallVector<SbpSignature> SoftmaxGradOp::getSbpSignatures(unsigned) {
  llvm::SmallVector<SbpSignature> out;
  for (int i = 0; i < leadAxes(getY()); ++i)
    out.push_back(sig({S(i), S(i)}, {S(i)}));
  out.push_back(sig({B, B}, {B}));
  out.push_back(sig({P, B}, {P}));
  return out;
}

double SoftmaxGradOp::getFlops() { return 4.0 * elements(getY()); }
