// The linear-layer ops: matmul, bias_add, its gradient reduce_rows and the
// fused bias_gelu. Per op: shape rule, SBP signatures, gradient, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

// The shape of matmul's result for operands of shapes `a` and `b`, each read
// as the matrix [prod(leading dims), last dim] and transposed as asked: a's
// kept dims (its leading dims, or its last when transposed) followed by b's
// (its last, or its leading dims when transposed).
llvm::SmallVector<int64_t> matmulResultShape(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b,
                                             bool transposeA, bool transposeB) {
  llvm::SmallVector<int64_t> shape;
  if (transposeA)
    shape.push_back(a.back());
  else
    shape.append(a.begin(), a.end() - 1);
  if (transposeB)
    shape.append(b.begin(), b.end() - 1);
  else
    shape.push_back(b.back());
  return shape;
}

// x [lead..., trailing...] with a bias on the trailing axes (the DSL's add()
// of a smaller shape); every result like x.
LogicalResult inferBias(Operation *op, Value x, Value bias,
                        llvm::SmallVectorImpl<RankedTensorType> &results) {
  if (failed(inferLike(op, x, {"input", "bias"}, results)))
    return failure();
  auto xs = shapeOf(x), bs = shapeOf(bias);
  std::string cannotAdd = "; cannot add shapes " + shapeString(xs) + " and " + shapeString(bs);
  if (failed(expectMinRank(op, x, 2, "input", cannotAdd)) ||
      failed(expectMinRank(op, bias, 1, "bias", cannotAdd)))
    return failure();
  if (bs.size() >= xs.size())
    return op->emitOpError("bias of rank ") << bs.size() << " must have fewer axes than the rank-"
                                            << xs.size() << " input" << cannotAdd;
  llvm::ArrayRef<int64_t> trailing = xs.take_back(bs.size());
  if (bs != trailing) {
    if (bs.size() == 1)
      return op->emitOpError("bias length ") << bs[0] << " does not match the " << xs.back()
                                             << " columns of the input" << cannotAdd;
    return op->emitOpError("bias shape ") << shapeString(bs) << " does not match the trailing axes "
                                          << shapeString(trailing) << " of the input" << cannotAdd;
  }
  return success();
}

// Split x on a leading axis (bias broadcast) or x and the bias alike on a
// trailing one; `results` results laid out like x.
llvm::SmallVector<SbpSignature> biasSignatures(Value x, Value bias, unsigned results) {
  int r = static_cast<int>(tensorOf(bias).getRank());
  int lead = static_cast<int>(tensorOf(x).getRank()) - r;
  llvm::SmallVector<SbpSignature> out;
  auto add = [&](SbpDim dx, SbpDim db) {
    SbpSignature s;
    s.operands = {dx, db};
    s.results.assign(results, dx);
    out.push_back(s);
  };
  for (int i = 0; i < lead; ++i)
    add(S(i), B);
  for (int j = 0; j < r; ++j)
    add(S(lead + j), S(j));
  add(B, B);
  return out;
}

} // namespace

//===-- matmul: operands viewed as [prod(lead), last] ------------------------===//

LogicalResult MatmulOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"lhs", "rhs"});
  if (failed(types) || failed(expectMinRank(*this, getA(), 2, "lhs")) ||
      failed(expectMinRank(*this, getB(), 2, "rhs")))
    return failure();
  auto a = shapeOf(getA()), bs = shapeOf(getB());
  bool tA = getTransposeA(), tB = getTransposeB();
  int64_t k = tA ? product(a.drop_back()) : a.back();
  int64_t k2 = tB ? bs.back() : product(bs.drop_back());
  if (k != k2)
    return emitOpError("inner dimensions differ: ")
           << k << " (lhs" << (tA ? ", transposed" : "") << ") vs " << k2 << " (rhs"
           << (tB ? ", transposed" : "") << "); matmul shapes do not agree: " << shapeString(a)
           << " x " << shapeString(bs);
  return setResult(results, matmulResultShape(a, bs, tA, tB), *types);
}

llvm::SmallVector<SbpSignature> MatmulOp::getSbpSignatures(unsigned) {
  auto a = shapeOf(getA()), bs = shapeOf(getB());
  int ra = static_cast<int>(a.size()), rb = static_cast<int>(bs.size());
  bool tA = getTransposeA(), tB = getTransposeB();
  // Axes of the logical roles: op(a) = [M..., K...], op(b) = [K..., N...];
  // the result is [M..., N...].
  llvm::SmallVector<int> aM, aK, bK, bN;
  for (int i = 0; i < ra - 1; ++i)
    (tA ? aK : aM).push_back(i);
  (tA ? aM : aK).push_back(ra - 1);
  for (int j = 0; j < rb - 1; ++j)
    (tB ? bN : bK).push_back(j);
  (tB ? bK : bN).push_back(rb - 1);
  int mRank = static_cast<int>(aM.size());
  llvm::SmallVector<SbpSignature> out;
  for (auto [r, axis] : llvm::enumerate(aM))
    out.push_back(sig({S(axis), B}, {S(static_cast<int>(r))}));
  for (auto [r, axis] : llvm::enumerate(bN))
    out.push_back(sig({B, S(axis)}, {S(mRank + static_cast<int>(r))}));
  // Splitting the contraction gives partial sums when both sides cut it
  // alike: the same K axes (as shapes) split at the same position.
  auto sizes = [](llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<int> axes) {
    llvm::SmallVector<int64_t> s;
    for (int x : axes)
      s.push_back(shape[x]);
    return s;
  };
  if (sizes(a, aK) == sizes(bs, bK))
    for (auto [x, y] : llvm::zip(aK, bK))
      out.push_back(sig({S(x), S(y)}, {P}));
  out.push_back(sig({B, B}, {B}));
  out.push_back(sig({P, B}, {P}));
  out.push_back(sig({B, P}, {P}));
  return out;
}

LogicalResult MatmulOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dC,
                                       llvm::SmallVectorImpl<Value> &grads) {
  Location loc = getLoc();
  Value A = getA(), Bm = getB(), dc = dC[0];
  RankedTensorType ta = withoutSbp(A.getType()), tb = withoutSbp(Bm.getType());
  bool tA = getTransposeA(), tB = getTransposeB();
  // The 2-D rules below read dC as [M, N]; with transpose_b and a rank > 2
  // b the N part has several axes: fold them into one first.
  auto cShape = shapeOf(getResult());
  int64_t nAxes = tB ? tensorOf(Bm).getRank() - 1 : 1;
  if (nAxes != 1) {
    llvm::SmallVector<int64_t> folded(cShape.begin(), cShape.end() - nAxes);
    folded.push_back(product(cShape.take_back(nAxes)));
    dc = b.create<ReshapeOp>(loc, RankedTensorType::get(folded, ta.getElementType()), dc)
             .getResult();
  }
  // op(x) op(y) with its own natural result shape, reshaped to the operand's.
  auto mm = [&](RankedTensorType t, Value x, Value y, bool tx, bool ty) -> FailureOr<Value> {
    auto natural = RankedTensorType::get(matmulResultShape(shapeOf(x), shapeOf(y), tx, ty),
                                         t.getElementType());
    Value r = b.create<MatmulOp>(loc, natural, x, y, tx, ty).getResult();
    if (natural.getShape() == t.getShape())
      return r;
    if (natural.getNumElements() != t.getNumElements()) {
      emitOpError("gradient rule produced ") << natural << " for an operand of type " << t;
      return failure();
    }
    return b.create<ReshapeOp>(loc, t, r).getResult();
  };
  // C = op(A) op(B) on the 2-D views; dA and dB follow from the four
  // transpose cases.
  FailureOr<Value> dA, dB;
  if (!tA && !tB) {
    dA = mm(ta, dc, Bm, false, true);
    dB = mm(tb, A, dc, true, false);
  } else if (!tA && tB) {
    dA = mm(ta, dc, Bm, false, false);
    dB = mm(tb, dc, A, true, false);
  } else if (tA && !tB) {
    dA = mm(ta, Bm, dc, false, true);
    dB = mm(tb, A, dc, false, false);
  } else {
    dA = mm(ta, Bm, dc, true, true);
    dB = mm(tb, dc, A, true, true);
  }
  if (failed(dA) || failed(dB))
    return failure();
  grads.push_back(*dA);
  grads.push_back(*dB);
  return success();
}

double MatmulOp::getFlops() {
  auto a = shapeOf(getA());
  double k = getTransposeA() ? elements(getA()) / static_cast<double>(a.back())
                             : static_cast<double>(a.back());
  return 2.0 * elements(getResult()) * k;
}

//===-- bias_add: bias on the trailing axes of x ------------------------------===//

LogicalResult BiasAddOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferBias(*this, getX(), getBias(), results);
}

llvm::SmallVector<SbpSignature> BiasAddOp::getSbpSignatures(unsigned) {
  return biasSignatures(getX(), getBias(), 1);
}

LogicalResult BiasAddOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                        llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(dy[0]);
  grads.push_back(
      b.create<ReduceRowsOp>(getLoc(), withoutSbp(getBias().getType()), dy[0]).getResult());
  return success();
}

double BiasAddOp::getFlops() { return elements(getResult()); }

//===-- bias_gelu (sbp-fuse-bias-gelu, after autodiff): bias_add's
// signatures, both results laid out alike ----------------------------------===//

LogicalResult BiasGeluOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return inferBias(*this, getX(), getBias(), results);
}

llvm::SmallVector<SbpSignature> BiasGeluOp::getSbpSignatures(unsigned) {
  return biasSignatures(getX(), getBias(), 2);
}

double BiasGeluOp::getFlops() { return 11.0 * elements(getX()); }

//===-- reduce_rows: sums the leading axes away (a bias gradient) -------------===//

LogicalResult ReduceRowsOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"input"});
  if (failed(types) || failed(expectMinRank(*this, getX(), 2, "input")))
    return failure();
  // How many trailing axes are kept is the result type's rank.
  auto x = shapeOf(getX());
  auto res = tensorOf(getResult());
  if (res.getRank() < 1 || res.getRank() >= static_cast<int64_t>(x.size()))
    return emitOpError("result rank ")
           << res.getRank() << " must lie in [1, " << x.size() - 1
           << "]: the sum runs over at least one leading axis and keeps at least one";
  if (res.getShape() != x.take_back(res.getRank()))
    return emitOpError("result shape ")
           << shapeString(res.getShape()) << " is not the trailing axes of the input "
           << shapeString(x);
  return setResult(results, res.getShape(), *types);
}

llvm::SmallVector<SbpSignature> ReduceRowsOp::getSbpSignatures(unsigned) {
  int kept = static_cast<int>(tensorOf(getResult()).getRank());
  int summed = static_cast<int>(tensorOf(getX()).getRank()) - kept;
  llvm::SmallVector<SbpSignature> out;
  for (int i = 0; i < summed; ++i)
    out.push_back(sig({S(i)}, {P}));
  for (int j = 0; j < kept; ++j)
    out.push_back(sig({S(summed + j)}, {S(j)}));
  out.push_back(sig({B}, {B}));
  out.push_back(sig({P}, {P}));
  return out;
}

double ReduceRowsOp::getFlops() { return elements(getX()); }
