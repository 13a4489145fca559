// The loss ops: softmax cross-entropy per row and its gradient, the mean that
// makes it a scalar and its gradient, and the count of correct rows. Per op:
// shape rule, SBP signatures, gradient, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

// logits [..., V] and labels [...] (the logits' leading axes).
LogicalResult checkLogitsLabels(Operation *op, Value logits, Value labels) {
  constexpr llvm::StringLiteral kNeeds = "; needs logits [..., C] and labels [...]";
  if (failed(expectMinRank(op, logits, 1, "logits", kNeeds)))
    return failure();
  llvm::ArrayRef<int64_t> lead = shapeOf(logits).drop_back();
  if (failed(expectRank(op, labels, static_cast<int64_t>(lead.size()), "labels", kNeeds)))
    return failure();
  if (shapeOf(labels) != lead) {
    if (lead.size() == 1)
      return op->emitOpError("labels length ") << shapeOf(labels)[0] << " does not match the "
                                               << lead[0] << " rows of the logits" << kNeeds;
    return op->emitOpError("labels shape ")
           << shapeString(shapeOf(labels)) << " does not match the leading axes "
           << shapeString(lead) << " of the logits" << kNeeds;
  }
  return success();
}

// One value per row: split on a leading axis of the logits (and labels).
llvm::SmallVector<SbpSignature> perRow(Value logits, unsigned operands, SbpDim splitResult) {
  llvm::SmallVector<SbpSignature> out;
  auto all = [&](SbpDim d, SbpDim r) {
    SbpSignature s;
    s.operands.assign(operands, d);
    s.results.push_back(r);
    out.push_back(s);
  };
  for (int i = 0; i < leadAxes(logits); ++i)
    all(S(i), splitResult.kind == SbpKind::Split ? S(i) : splitResult);
  all(B, B);
  return out;
}

} // namespace

//===-- softmax_xent: one loss per row -----------------------------------------===//

LogicalResult SoftmaxXentOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"logits", "labels"});
  if (failed(types) || failed(checkLogitsLabels(*this, getLogits(), getLabels())))
    return failure();
  return resultsLike(results, getLabels(), *types);
}

llvm::SmallVector<SbpSignature> SoftmaxXentOp::getSbpSignatures(unsigned) {
  return perRow(getLogits(), 2, S(0));
}

LogicalResult SoftmaxXentOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dl,
                                            llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(b.create<SoftmaxXentGradOp>(getLoc(), withoutSbp(getLogits().getType()),
                                              getLogits(), getLabels(), dl[0])
                      .getResult());
  grads.push_back(Value()); // labels
  return success();
}

double SoftmaxXentOp::getFlops() { return 5.0 * elements(getLogits()); }

//===-- softmax_xent_grad ----------------------------------------------------------===//

LogicalResult
SoftmaxXentGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"logits", "labels", "dloss"});
  if (failed(types) || failed(checkLogitsLabels(*this, getLogits(), getLabels())))
    return failure();
  if (shapeOf(getDloss()) != shapeOf(getLabels()))
    return emitOpError("dloss shape ")
           << shapeString(shapeOf(getDloss())) << " does not match the labels' "
           << shapeString(shapeOf(getLabels()));
  return resultsLike(results, getLogits(), *types);
}

llvm::SmallVector<SbpSignature> SoftmaxXentGradOp::getSbpSignatures(unsigned) {
  return perRow(getLogits(), 3, S(0));
}

double SoftmaxXentGradOp::getFlops() { return 5.0 * elements(getLogits()); }

//===-- mean of all elements -----------------------------------------------------===//

LogicalResult MeanOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferLike(*this, Value(), {"input"}, results);
}

llvm::SmallVector<SbpSignature> MeanOp::getSbpSignatures(unsigned) {
  return reduceToScalar(getX(), /*linear=*/true);
}

LogicalResult MeanOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                     llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(b.create<MeanGradOp>(getLoc(), withoutSbp(getX().getType()), dy[0]).getResult());
  return success();
}

double MeanOp::getFlops() { return elements(getX()); }

//===-- mean_grad: the result shape is the forward input's, given by its type ----===//

LogicalResult MeanGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"dy"});
  if (failed(types) || failed(expectRank(*this, getDy(), 0, "dy")))
    return failure();
  return resultsLike(results, getResult(), *types);
}

llvm::SmallVector<SbpSignature> MeanGradOp::getSbpSignatures(unsigned) {
  llvm::SmallVector<SbpSignature> out;
  for (int i = 0; i < tensorOf(getResult()).getRank(); ++i)
    out.push_back(sig({B}, {S(i)}));
  out.push_back(sig({B}, {B}));
  out.push_back(sig({P}, {P}));
  return out;
}

double MeanGradOp::getFlops() { return elements(getResult()); }

//===-- count_correct: rows counted on each rank are summed -------------------===//

LogicalResult CountCorrectOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"logits", "labels"});
  if (failed(types) || failed(checkLogitsLabels(*this, getLogits(), getLabels())))
    return failure();
  return setResult(results, {}, *types);
}

llvm::SmallVector<SbpSignature> CountCorrectOp::getSbpSignatures(unsigned) {
  return perRow(getLogits(), 2, P);
}

double CountCorrectOp::getFlops() { return elements(getLogits()); }
