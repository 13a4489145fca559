// The ops a step's values start from: a data field's batch, a view of a
// variable, a constant. Their types are declared, not inferred. Per op:
// checks, SBP signatures, flops (no gradient: autodiff stops at them).
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

//===-- input ----------------------------------------------------------------------===//

LogicalResult InputOp::verify() {
  if (getField().empty())
    return emitOpError("needs a non-empty field name");
  // Each rank reads its shard of the batch (split) or all of it (broadcast);
  // partial values would be summed across ranks, which no data field means.
  for (SbpDim d : getSbpDims(getSbp(getType())))
    if (isPartial(d))
      return emitOpError("input '") << getField() << "' cannot be partial (" << toString(d)
                                    << "): a data field is split or broadcast";
  return success();
}

LogicalResult InputOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return declaredResults(*this, results);
}

llvm::SmallVector<SbpSignature> InputOp::getSbpSignatures(unsigned dim) {
  if (auto d = sbpAt(getType(), dim))
    return {sig({}, {*d})};
  // An unannotated input: broadcast unless the cost model prefers a split.
  llvm::SmallVector<SbpSignature> out{sig({}, {B})};
  if (tensorOf(getResult()).getRank() > 0)
    out.push_back(sig({}, {S(0)}));
  return out;
}

double InputOp::getFlops() { return 0.0; }

//===-- parameter: a view of a variable, typed like it ---------------------------===//

LogicalResult ParameterOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto var = symbols.lookupNearestSymbolFrom<VariableOp>(*this, getVariableAttr());
  if (!var)
    return emitOpError("references undeclared variable ") << getVariableAttr();
  // A per-replica variable (local SGD) may be viewed as partial on its
  // replica dimension: the replicas' values are the terms of a sum.
  auto replica = var.getReplicaDim();
  const bool replicaView = replica && *replica < getSbpDims(getSbp(var.getType())).size() &&
                           getType() == withPartialSum(var.getType(), *replica);
  if (var.getType() != getType() && !replicaView)
    return emitOpError("result type ") << getType() << " differs from the type of variable "
                                       << getVariableAttr() << " (" << var.getType() << ")";
  return verifyEncodings(*this, symbols);
}

LogicalResult ParameterOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return declaredResults(*this, results);
}

llvm::SmallVector<SbpSignature> ParameterOp::getSbpSignatures(unsigned dim) {
  if (auto d = sbpAt(getType(), dim))
    return {sig({}, {*d})};
  return {sig({}, {B})};
}

double ParameterOp::getFlops() { return 0.0; }

//===-- fill: the same value on every rank, so broadcast or split --------------===//

// Every rank writes the value: a partial result would mean the value times
// the ranks.
LogicalResult FillOp::verify() {
  for (SbpDim d : getSbpDims(getSbp(getType())))
    if (isPartial(d))
      return emitOpError("cannot be partial (") << toString(d) << "): every rank writes the value";
  return success();
}

LogicalResult FillOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  return declaredResults(*this, results);
}

llvm::SmallVector<SbpSignature> FillOp::getSbpSignatures(unsigned) {
  llvm::SmallVector<SbpSignature> out{sig({}, {B})};
  for (int i = 0; i < tensorOf(getResult()).getRank(); ++i)
    out.push_back(sig({}, {S(i)}));
  return out;
}

double FillOp::getFlops() { return elements(getResult()); }
