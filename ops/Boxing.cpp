// The boxing ops (DESIGN.md "Boxing"): each changes one SBP on one hierarchy
// dimension and nothing else. Per op: the change it makes; the verifier that
// checks it is shared.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

LogicalResult mlir::sbp::verifyBoxing(Operation *op) {
  auto boxing = llvm::cast<BoxingOpInterface>(op);
  // Operands and results pair up (several pairs form an all-reduce bucket).
  if (op->getNumOperands() == 0 || op->getNumOperands() != op->getNumResults())
    return op->emitOpError("needs as many results as operands (at least one), got ")
           << op->getNumOperands() << " operand(s) and " << op->getNumResults() << " result(s)";
  int64_t dim = boxing.getHierarchyDim();
  for (auto [inValue, outValue] : llvm::zip(op->getOperands(), op->getResults())) {
    auto in = tensorOf(inValue), out = llvm::cast<RankedTensorType>(outValue.getType());
    if (in.getShape() != out.getShape() || in.getElementType() != out.getElementType())
      return op->emitOpError("changes the tensor's shape or element type: ")
             << withoutSbp(in) << " vs " << withoutSbp(out);
    SbpTensorAttr inSbp = getSbp(in), outSbp = getSbp(out);
    if (!inSbp || !outSbp)
      return op->emitOpError("operand and result need SBP encodings");
    if (inSbp.getPlacement() != outSbp.getPlacement())
      return op->emitOpError("cannot move between placements (")
             << inSbp.getPlacement() << " -> " << outSbp.getPlacement() << ")";
    auto from = getSbpDims(inSbp), to = getSbpDims(outSbp);
    if (from.size() != to.size())
      return op->emitOpError("operand and result have different hierarchy lengths");
    if (dim < 0 || dim >= static_cast<int64_t>(from.size()))
      return op->emitOpError("dim ")
             << dim << " is outside the hierarchy of " << from.size() << " dimension(s)";
    for (size_t d = 0; d < from.size(); ++d) {
      if (static_cast<int64_t>(d) == dim)
        continue;
      if (from[d] != to[d])
        return op->emitOpError("changes hierarchy dimension ")
               << d << " (" << toString(from[d]) << " -> " << toString(to[d])
               << ") but acts only on dim " << dim;
    }
    if (!boxing.acceptsChange(from[dim], to[dim]))
      return op->emitOpError("expects ") << boxing.getChange() << " on dim " << dim << ", got "
                                         << toString(from[dim]) << " -> " << toString(to[dim]);
  }
  return success();
}

//===-- collectives ----------------------------------------------------------------===//

bool AllReduceOp::acceptsChange(SbpDim from, SbpDim to) {
  return isPartial(from) && to.kind == SbpKind::Broadcast;
}
llvm::StringRef AllReduceOp::getChange() { return "P -> B"; }

bool AllGatherOp::acceptsChange(SbpDim from, SbpDim to) {
  return from.kind == SbpKind::Split && to.kind == SbpKind::Broadcast;
}
llvm::StringRef AllGatherOp::getChange() { return "S(i) -> B"; }

bool ReduceScatterOp::acceptsChange(SbpDim from, SbpDim to) {
  return isPartial(from) && to.kind == SbpKind::Split;
}
llvm::StringRef ReduceScatterOp::getChange() { return "P -> S(i)"; }

bool AllToAllOp::acceptsChange(SbpDim from, SbpDim to) {
  return from.kind == SbpKind::Split && to.kind == SbpKind::Split && from.axis != to.axis;
}
llvm::StringRef AllToAllOp::getChange() { return "S(i) -> S(j), i != j"; }

//===-- local steps, no communication ---------------------------------------------===//

bool SliceOp::acceptsChange(SbpDim from, SbpDim to) {
  return from.kind == SbpKind::Broadcast && to.kind == SbpKind::Split;
}
llvm::StringRef SliceOp::getChange() { return "B -> S(i)"; }

bool ZeroOthersOp::acceptsChange(SbpDim from, SbpDim to) {
  return from.kind == SbpKind::Broadcast && isPartial(to);
}
llvm::StringRef ZeroOthersOp::getChange() { return "B -> P"; }
