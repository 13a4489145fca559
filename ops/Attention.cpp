// Causal multi-head self-attention and its gradient (the weights
// recomputed). Per op: shape rule, SBP signatures (batch- or head-parallel),
// gradient, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

// q, k, v (and the backward's dy): [batch, T, C] alike, with `heads`
// dividing C.
LogicalResult checkAttention(Operation *op, Value q, Value k, Value v, Value dy, int64_t heads) {
  constexpr llvm::StringLiteral kNeeds = "; needs q, k, v of one shape [batch, T, C]";
  if (failed(expectRank(op, q, 3, "q", kNeeds)) ||
      (dy && failed(expectSameType(op, dy, q, "dy and q", kNeeds))) ||
      failed(expectSameType(op, q, k, "q and k", kNeeds)) ||
      failed(expectSameType(op, q, v, "q and v", kNeeds)))
    return failure();
  int64_t c = shapeOf(q)[2];
  if (heads <= 0 || c % heads != 0)
    return op->emitOpError("heads ")
           << heads << " must be positive and divide the " << c << " channels (" << heads
           << " heads do not divide the width " << c << ")";
  return success();
}

// Head-parallel attention needs whole heads on every rank of hierarchy
// dimension `dim`: its size must divide the head count.
bool headsSplit(Operation *op, int64_t heads, unsigned dim) {
  SbpTensorAttr enc;
  for (Value v : op->getOperands())
    if ((enc = getSbp(v.getType())))
      break;
  if (!enc)
    for (Value v : op->getResults())
      if ((enc = getSbp(v.getType())))
        break;
  if (!enc)
    return false;
  auto placement = SymbolTable::lookupNearestSymbolFrom<PlacementOp>(op, enc.getPlacement());
  if (!placement || dim >= placement.getHierarchy().size())
    return false;
  int64_t size = placement.getHierarchy()[dim];
  return size > 0 && heads % size == 0;
}

// q k^T and the weights times v, each half of a full [T, T] product.
double attentionFlops(Value q) {
  auto s = shapeOf(q);
  return 2.0 * static_cast<double>(s[0]) * static_cast<double>(s[1]) * static_cast<double>(s[1]) *
         static_cast<double>(s[2]);
}

} // namespace

//===-- causal_attention: batch-parallel, or head-parallel on the channels -----===//

LogicalResult
CausalAttentionOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"q", "k", "v"});
  if (failed(types) || failed(checkAttention(*this, getQ(), getK(), getV(), Value(), getHeads())))
    return failure();
  return resultsLike(results, getQ(), *types);
}

llvm::SmallVector<SbpSignature> CausalAttentionOp::getSbpSignatures(unsigned dim) {
  llvm::SmallVector<SbpSignature> out{sig({S(0), S(0), S(0)}, {S(0)})};
  if (headsSplit(*this, getHeads(), dim))
    out.push_back(sig({S(2), S(2), S(2)}, {S(2)}));
  out.push_back(sig({B, B, B}, {B}));
  return out;
}

LogicalResult CausalAttentionOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                                llvm::SmallVectorImpl<Value> &grads) {
  RankedTensorType t = withoutSbp(getQ().getType());
  auto g = b.create<CausalAttentionGradOp>(getLoc(), t, t, t, dy[0], getQ(), getK(), getV(),
                                           getHeadsAttr());
  grads.append({g.getDq(), g.getDk(), g.getDv()});
  return success();
}

double CausalAttentionOp::getFlops() { return attentionFlops(getQ()); }

//===-- causal_attention_grad: dq, dk, dv like q ----------------------------------===//

LogicalResult
CausalAttentionGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"dy", "q", "k", "v"});
  if (failed(types) || failed(checkAttention(*this, getQ(), getK(), getV(), getDy(), getHeads())))
    return failure();
  return resultsLike(results, getQ(), *types);
}

llvm::SmallVector<SbpSignature> CausalAttentionGradOp::getSbpSignatures(unsigned dim) {
  llvm::SmallVector<SbpSignature> out{sig({S(0), S(0), S(0), S(0)}, {S(0), S(0), S(0)})};
  if (headsSplit(*this, getHeads(), dim))
    out.push_back(sig({S(2), S(2), S(2), S(2)}, {S(2), S(2), S(2)}));
  out.push_back(sig({B, B, B, B}, {B, B, B}));
  out.push_back(sig({P, B, B, B}, {P, P, P}));
  return out;
}

// Recomputing the weights and the four products of the backward.
double CausalAttentionGradOp::getFlops() { return 3.0 * attentionFlops(getQ()); }
