// The verifiers every sbp op shares: tensor encodings (placement declared, one
// SBP per hierarchy dimension, split axes in range, one placement per op),
// result types against the op's shape rule, and the module-level ops. What is
// particular to one op lives with its family in ops/.
#include "ir/SbpDialect.h"

#include <cmath>

#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace mlir::sbp;

// Prints the full `#sbp.init<...>` form rather than the stripped one so that a
// variable reads the same as the attribute elsewhere.
template <typename AttrT> static ParseResult parseFullAttr(OpAsmParser &parser, AttrT &attr) {
  SMLoc loc = parser.getCurrentLocation();
  Attribute a;
  if (parser.parseAttribute(a))
    return failure();
  attr = llvm::dyn_cast<AttrT>(a);
  if (!attr)
    return parser.emitError(loc, "unexpected attribute kind ") << a;
  return success();
}
static void printFullAttr(OpAsmPrinter &printer, Operation *, Attribute attr) {
  printer.printAttribute(attr);
}

#define GET_OP_CLASSES
#include "ir/SbpOps.cpp.inc"

static LogicalResult verifyEncoding(Operation *op, Type type, llvm::StringRef what,
                                    SymbolTableCollection &symbols) {
  SbpTensorAttr enc = getSbp(type);
  if (!enc)
    return success();
  auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(op, enc.getPlacement());
  if (!placement)
    return op->emitOpError() << what << " references undeclared placement " << enc.getPlacement();
  size_t levels = placement.getHierarchy().size();
  if (enc.getSbp().size() != levels)
    return op->emitOpError() << what << " has " << enc.getSbp().size()
                             << " SBP dimension(s) but placement " << enc.getPlacement()
                             << " has a hierarchy of " << levels;
  int64_t rank = llvm::cast<RankedTensorType>(type).getRank();
  for (SbpDim d : getSbpDims(enc))
    if (d.kind == SbpKind::Split && (d.axis < 0 || d.axis >= rank))
      return op->emitOpError() << what << " splits axis " << d.axis << " of a rank-" << rank
                               << " tensor";
  return success();
}

LogicalResult mlir::sbp::verifyEncodings(Operation *op, SymbolTableCollection &symbols) {
  // An op runs on one placement: a tensor moves between placements only by a
  // transfer, which no op here is.
  FlatSymbolRefAttr placement;
  auto check = [&](Type type, const std::string &what) -> LogicalResult {
    if (failed(verifyEncoding(op, type, what, symbols)))
      return failure();
    if (SbpTensorAttr enc = getSbp(type)) {
      if (placement && placement != enc.getPlacement())
        return op->emitOpError() << what << " is on placement " << enc.getPlacement()
                                 << " but the op's other tensors are on " << placement
                                 << ": transfers between placements are not supported";
      placement = enc.getPlacement();
    }
    return success();
  };
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (failed(check(v.getType(), "operand #" + std::to_string(i))))
      return failure();
  for (auto [i, v] : llvm::enumerate(op->getResults()))
    if (failed(check(v.getType(), "result #" + std::to_string(i))))
      return failure();
  return success();
}

LogicalResult mlir::sbp::verifyInferredResultTypes(Operation *op) {
  llvm::SmallVector<RankedTensorType> inferred;
  if (failed(llvm::cast<SbpOpInterface>(op).inferResultTypes(inferred)))
    return failure();
  if (inferred.size() != op->getNumResults())
    return op->emitOpError("has ")
           << op->getNumResults() << " result(s) but the operands give " << inferred.size();
  for (auto [i, t] : llvm::enumerate(inferred)) {
    auto actual = llvm::cast<RankedTensorType>(op->getResult(i).getType());
    if (actual.getShape() != t.getShape() || actual.getElementType() != t.getElementType())
      return op->emitOpError("result #")
             << i << " has type " << withoutSbp(actual) << " but the operands give " << t;
  }
  return success();
}

//===-- module level --------------------------------------------------------===//

LogicalResult PlacementOp::verify() {
  llvm::ArrayRef<int64_t> ranks = getRanks(), hierarchy = getHierarchy();
  int64_t product = 1;
  for (int64_t h : hierarchy) {
    if (h <= 0)
      return emitOpError("hierarchy dimensions must be positive, got ") << h;
    product *= h;
  }
  if (ranks.empty() || hierarchy.empty())
    return emitOpError("needs at least one rank and one hierarchy dimension");
  if (product != static_cast<int64_t>(ranks.size()))
    return emitOpError("hierarchy product ")
           << product << " does not match the number of ranks " << ranks.size();
  llvm::DenseSet<int64_t> seen;
  for (int64_t r : ranks) {
    if (r < 0)
      return emitOpError("rank must be non-negative, got ") << r;
    if (!seen.insert(r).second)
      return emitOpError("rank ") << r << " appears more than once";
  }
  return success();
}

LogicalResult VariableOp::verifySymbolUses(SymbolTableCollection &symbols) {
  RankedTensorType type = getTensorType();
  // No encoding: the user left the layout to sbp-propagate, which sets one.
  for (SbpDim d : getSbpDims(getSbp(type)))
    if (isPartial(d))
      return emitOpError("variable ")
             << getSymName() << " cannot be partial (" << toString(d) << ")";
  // The plan holds f32 variables and i32 counters (runtime/plan/plan.fbs:
  // an i32 variable starts from zeros or an integral constant).
  Type elt = type.getElementType();
  if (!elt.isF32() && !elt.isSignlessInteger(32))
    return emitOpError("variable element type must be f32 or i32, got ") << elt;
  InitAttr init = getInit();
  if (elt.isSignlessInteger(32) && init.getKind() != InitKind::zeros &&
      (init.getKind() != InitKind::constant ||
       init.getA().convertToDouble() != std::trunc(init.getA().convertToDouble())))
    return emitOpError("an i32 variable starts from zeros or an integral constant, not ") << init;
  if (auto replica = getReplicaDim()) {
    if (!getSbp(type))
      return emitOpError("with replica_dim needs an encoding (its placement)");
    if (*replica >= getSbpDims(getSbp(type)).size())
      return emitOpError("replica_dim ")
             << *replica << " is outside the hierarchy of its placement "
             << getSbp(type).getPlacement();
  }
  return verifyEncoding(*this, type, "type", symbols);
}
