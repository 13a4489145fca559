// The ops that move elements without arithmetic: reshape, transpose, narrow
// and its gradient, concat, and the f32 <-> bf16 cast. Per op: shape rule,
// SBP signatures, gradient, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

// narrow (the result is the part of `in`) and narrow_grad (the result is the
// whole that `in` is the part of): equal off `axis`, and the part's range
// [begin, begin + length) inside the whole.
LogicalResult narrowShape(Operation *op, Value in, llvm::StringRef inName, int64_t axis,
                          int64_t begin, bool resultIsWhole,
                          llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(op, {inName});
  if (failed(types))
    return failure();
  auto x = shapeOf(in);
  auto res = tensorOf(op->getResult(0));
  if (failed(expectAxis(op, axis, static_cast<int64_t>(x.size()))))
    return failure();
  llvm::SmallVector<int64_t> expect(x);
  expect[axis] = res.getRank() == static_cast<int64_t>(x.size()) ? res.getDimSize(axis) : 0;
  if (res.getShape() != llvm::ArrayRef<int64_t>(expect))
    return op->emitOpError("result ") << withoutSbp(res) << " must differ from " << inName << " "
                                      << withoutSbp(tensorOf(in)) << " on axis " << axis << " only";
  const int64_t part = resultIsWhole ? x[axis] : res.getDimSize(axis);
  const int64_t whole = resultIsWhole ? res.getDimSize(axis) : x[axis];
  if (begin < 0 || begin + part > whole)
    return op->emitOpError("range [")
           << begin << ", " << begin + part << ") on axis " << axis << " is outside the "
           << (resultIsWhole ? "result's" : "input's") << " length " << whole
           << "; need 0 <= begin < end <= " << whole;
  return setResult(results, expect, *types);
}

} // namespace

//===-- reshape: the result shape is the result type's --------------------------===//

LogicalResult ReshapeOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"input"});
  if (failed(types))
    return failure();
  auto res = tensorOf(getResult());
  if (res.getElementType() != tensorOf(getX()).getElementType() ||
      res.getNumElements() != tensorOf(getX()).getNumElements())
    return emitOpError("cannot reshape ") << withoutSbp(tensorOf(getX())) << " into "
                                          << withoutSbp(res) << ": element count or type differs";
  return setResult(results, res.getShape(), *types);
}

llvm::SmallVector<SbpSignature> ReshapeOp::getSbpSignatures(unsigned) {
  auto xs = shapeOf(getX()), ys = shapeOf(getResult());
  llvm::SmallVector<SbpSignature> out;
  // A split axis survives when it is an axis of both shapes with the same
  // elements before it: each rank's chunk is then the same elements.
  int64_t before = 1;
  for (size_t i = 0; i < xs.size(); ++i) {
    int64_t yBefore = 1;
    for (size_t j = 0; j < ys.size(); ++j) {
      if (yBefore == before && xs[i] == ys[j])
        out.push_back(sig({S(static_cast<int>(i))}, {S(static_cast<int>(j))}));
      yBefore *= ys[j];
    }
    before *= xs[i];
  }
  out.push_back(sig({B}, {B}));
  out.push_back(sig({P}, {P}));
  return out;
}

LogicalResult ReshapeOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                        llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(b.create<ReshapeOp>(getLoc(), withoutSbp(getX().getType()), dy[0]).getResult());
  return success();
}

double ReshapeOp::getFlops() { return 0.0; }

//===-- transpose -----------------------------------------------------------------===//

LogicalResult TransposeOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"input"});
  if (failed(types))
    return failure();
  auto x = shapeOf(getX());
  llvm::ArrayRef<int64_t> perm = getPerm();
  llvm::SmallVector<bool> seen(x.size(), false);
  bool valid = perm.size() == x.size();
  for (int64_t p : perm) {
    valid = valid && p >= 0 && p < static_cast<int64_t>(x.size()) && !seen[p];
    if (valid)
      seen[p] = true;
  }
  if (!valid)
    return emitOpError("perm ") << shapeString(perm) << " is not a permutation of the " << x.size()
                                << " axes of the input";
  llvm::SmallVector<int64_t> shape;
  for (int64_t p : perm)
    shape.push_back(x[p]);
  return setResult(results, shape, *types);
}

llvm::SmallVector<SbpSignature> TransposeOp::getSbpSignatures(unsigned) {
  llvm::SmallVector<SbpSignature> out;
  for (auto [k, p] : llvm::enumerate(getPerm()))
    out.push_back(sig({S(static_cast<int>(p))}, {S(static_cast<int>(k))}));
  out.push_back(sig({B}, {B}));
  out.push_back(sig({P}, {P}));
  return out;
}

LogicalResult TransposeOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                          llvm::SmallVectorImpl<Value> &grads) {
  llvm::ArrayRef<int64_t> perm = getPerm();
  llvm::SmallVector<int64_t> inverse(perm.size());
  for (size_t k = 0; k < perm.size(); ++k)
    inverse[perm[k]] = static_cast<int64_t>(k);
  grads.push_back(b.create<TransposeOp>(getLoc(), withoutSbp(getX().getType()), dy[0],
                                        b.getDenseI64ArrayAttr(inverse))
                      .getResult());
  return success();
}

double TransposeOp::getFlops() { return elements(getResult()); }

//===-- narrow / narrow_grad: any split but the narrowed axis -------------------===//

LogicalResult NarrowOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  // The narrowed length is the result type's.
  return narrowShape(*this, getX(), "the input", getAxis(), getBegin(), false, results);
}

llvm::SmallVector<SbpSignature> NarrowOp::getSbpSignatures(unsigned) {
  return uniform(tensorOf(getX()).getRank(), 1, /*linear=*/true, getAxis());
}

LogicalResult NarrowOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                       llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(b.create<NarrowGradOp>(getLoc(), withoutSbp(getX().getType()), dy[0],
                                         getAxisAttr(), getBeginAttr())
                      .getResult());
  return success();
}

double NarrowOp::getFlops() { return elements(getResult()); }

LogicalResult NarrowGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  // The whole (forward input) shape is the result type's.
  return narrowShape(*this, getDy(), "dy", getAxis(), getBegin(), true, results);
}

llvm::SmallVector<SbpSignature> NarrowGradOp::getSbpSignatures(unsigned) {
  return uniform(tensorOf(getDy()).getRank(), 1, /*linear=*/true, getAxis());
}

double NarrowGradOp::getFlops() { return elements(getResult()); }

//===-- concat: its gradient narrows dy back into the operands -------------------===//

LogicalResult ConcatOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  if (getInputs().empty())
    return emitOpError("needs at least one operand");
  auto types = checkElementTypes(*this, {"operands"});
  if (failed(types))
    return failure();
  Value first = getInputs().front();
  int64_t axis = getAxis(), rank = tensorOf(first).getRank();
  if (failed(expectAxis(*this, axis, rank)))
    return failure();
  llvm::SmallVector<int64_t> shape(shapeOf(first));
  shape[axis] = 0;
  for (auto [i, v] : llvm::enumerate(getInputs())) {
    auto s = shapeOf(v);
    std::string noMatch = "; operand " + std::to_string(i) + " " + shapeString(s) +
                          " does not match " + shapeString(shapeOf(first));
    if (static_cast<int64_t>(s.size()) != rank)
      return emitOpError("operand #")
             << i << " " << withoutSbp(tensorOf(v)) << " differs in rank from "
             << withoutSbp(tensorOf(first)) << noMatch;
    for (int64_t d = 0; d < rank; ++d)
      if (d != axis && s[d] != shapeOf(first)[d])
        return emitOpError("operand #") << i << " " << withoutSbp(tensorOf(v)) << " differs from "
                                        << withoutSbp(tensorOf(first)) << " on axis " << d
                                        << " (concat axis is " << axis << ")" << noMatch;
    shape[axis] += s[axis];
  }
  return setResult(results, shape, *types);
}

llvm::SmallVector<SbpSignature> ConcatOp::getSbpSignatures(unsigned) {
  return uniform(tensorOf(getResult()).getRank(), static_cast<unsigned>(getInputs().size()),
                 /*linear=*/true, getAxis());
}

LogicalResult ConcatOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                       llvm::SmallVectorImpl<Value> &grads) {
  int64_t begin = 0, axis = getAxis();
  for (Value in : getInputs()) {
    grads.push_back(b.create<NarrowOp>(getLoc(), withoutSbp(in.getType()), dy[0], getAxisAttr(),
                                       b.getI64IntegerAttr(begin))
                        .getResult());
    begin += tensorOf(in).getDimSize(axis);
  }
  return success();
}

double ConcatOp::getFlops() { return elements(getResult()); }

//===-- cast: elementwise. Widening to f32 is exact, so a partial sum stays one
// (and is then reduced in f32); narrowing would round each rank's addend, so
// a bf16 result is never partial. Its gradient casts back. ---------------------===//

LogicalResult CastOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  // The target element type is the result type's.
  return inferLike(*this, getX(), {"input"}, results);
}

llvm::SmallVector<SbpSignature> CastOp::getSbpSignatures(unsigned) {
  bool widening = tensorOf(getResult()).getElementType().isF32();
  return uniform(tensorOf(getResult()).getRank(), 1, /*linear=*/widening);
}

LogicalResult CastOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                     llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(b.create<CastOp>(getLoc(), withoutSbp(getX().getType()), dy[0]).getResult());
  return success();
}

double CastOp::getFlops() { return elements(getResult()); }
