// The elementwise ops: add, relu, gelu, dropout and the activations'
// gradients. Per op: shape rule, SBP signatures (every operand alike),
// gradient, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

int64_t rankOf(Value v) { return tensorOf(v).getRank(); }

// The backward of an activation: dy like `other` (its input or output), one
// result like dy.
LogicalResult inferGradLike(Operation *op, Value dy, Value other, llvm::StringRef otherName,
                            llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(op, {"dy", otherName});
  if (failed(types) || failed(expectSameType(op, dy, other, ("dy and " + otherName).str())))
    return failure();
  return resultsLike(results, dy, *types);
}

} // namespace

//===-- add ----------------------------------------------------------------------===//

LogicalResult AddOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"lhs", "rhs"});
  if (failed(types) || failed(expectSameType(*this, getLhs(), getRhs(), "operands")))
    return failure();
  return resultsLike(results, getLhs(), *types);
}

llvm::SmallVector<SbpSignature> AddOp::getSbpSignatures(unsigned) {
  return uniform(rankOf(getResult()), 2, /*linear=*/true);
}

LogicalResult AddOp::buildGradients(OpBuilder &, llvm::ArrayRef<Value> dy,
                                    llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(dy[0]);
  grads.push_back(dy[0]);
  return success();
}

double AddOp::getFlops() { return elements(getResult()); }

//===-- relu ---------------------------------------------------------------------===//

LogicalResult ReluOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferLike(*this, getX(), {"input"}, results);
}

llvm::SmallVector<SbpSignature> ReluOp::getSbpSignatures(unsigned) {
  return uniform(rankOf(getResult()), 1, /*linear=*/false);
}

LogicalResult ReluOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                     llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(
      b.create<ReluGradOp>(getLoc(), withoutSbp(getX().getType()), dy[0], getResult()).getResult());
  return success();
}

double ReluOp::getFlops() { return elements(getResult()); }

//===-- relu_grad: linear in dy, so a partial dy with a broadcast y stays partial

LogicalResult ReluGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferGradLike(*this, getDy(), getY(), "y", results);
}

llvm::SmallVector<SbpSignature> ReluGradOp::getSbpSignatures(unsigned) {
  return linearInFirst(uniform(rankOf(getResult()), 2, /*linear=*/false));
}

double ReluGradOp::getFlops() { return elements(getResult()); }

//===-- gelu ---------------------------------------------------------------------===//

LogicalResult GeluOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferLike(*this, getX(), {"input"}, results);
}

llvm::SmallVector<SbpSignature> GeluOp::getSbpSignatures(unsigned) {
  return uniform(rankOf(getResult()), 1, /*linear=*/false);
}

LogicalResult GeluOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                     llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(
      b.create<GeluGradOp>(getLoc(), withoutSbp(getX().getType()), dy[0], getX()).getResult());
  return success();
}

double GeluOp::getFlops() { return 10.0 * elements(getResult()); }

//===-- gelu_grad: linear in dy ------------------------------------------------===//

LogicalResult GeluGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferGradLike(*this, getDy(), getX(), "x", results);
}

llvm::SmallVector<SbpSignature> GeluGradOp::getSbpSignatures(unsigned) {
  return linearInFirst(uniform(rankOf(getResult()), 2, /*linear=*/false));
}

double GeluGradOp::getFlops() { return 12.0 * elements(getResult()); }

//===-- dropout: linear, and its mask depends on global indices only; its
// gradient is the same dropout of dy ----------------------------------------===//

LogicalResult DropoutOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"input"});
  if (failed(types))
    return failure();
  float p = getP().convertToFloat();
  if (!(p >= 0.0f && p < 1.0f))
    return emitOpError("probability p must lie in [0, 1), got ")
           << p << "; dropout needs 0 <= p < 1";
  return resultsLike(results, getX(), *types);
}

llvm::SmallVector<SbpSignature> DropoutOp::getSbpSignatures(unsigned) {
  return uniform(rankOf(getResult()), 1, /*linear=*/true);
}

LogicalResult DropoutOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                        llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(
      b.create<DropoutOp>(getLoc(), withoutSbp(getX().getType()), dy[0], getPAttr(), getSeedAttr())
          .getResult());
  return success();
}

double DropoutOp::getFlops() { return 2.0 * elements(getResult()); }
