// Verifiers of the `sbp` ops: placements, symbol references, tensor encodings
// (placement declared, one SBP per hierarchy dimension, split axis < rank),
// shapes of the compute ops and the one-dimension change of each boxing op.
#include "ir/SbpDialect.h"

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
    if (d.kind == SbpKind::Split && d.axis >= rank)
      return op->emitOpError() << what << " splits axis " << d.axis << " of a rank-" << rank
                               << " tensor";
  return success();
}

static LogicalResult verifyEncodings(Operation *op, SymbolTableCollection &symbols) {
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (failed(verifyEncoding(op, v.getType(), "operand #" + std::to_string(i), symbols)))
      return failure();
  for (auto [i, v] : llvm::enumerate(op->getResults()))
    if (failed(verifyEncoding(op, v.getType(), "result #" + std::to_string(i), symbols)))
      return failure();
  return success();
}

#define SBP_ENCODING_ONLY_SYMBOL_USES(OP)                                                          \
  LogicalResult OP::verifySymbolUses(SymbolTableCollection &symbols) {                             \
    return verifyEncodings(*this, symbols);                                                        \
  }
SBP_ENCODING_ONLY_SYMBOL_USES(PlacementOp)
SBP_ENCODING_ONLY_SYMBOL_USES(InputOp)
SBP_ENCODING_ONLY_SYMBOL_USES(FillOp)
SBP_ENCODING_ONLY_SYMBOL_USES(MatmulOp)
SBP_ENCODING_ONLY_SYMBOL_USES(BiasAddOp)
SBP_ENCODING_ONLY_SYMBOL_USES(BiasGeluOp)
SBP_ENCODING_ONLY_SYMBOL_USES(AddOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ReluOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ReluGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(SoftmaxXentOp)
SBP_ENCODING_ONLY_SYMBOL_USES(SoftmaxXentGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(MeanOp)
SBP_ENCODING_ONLY_SYMBOL_USES(MeanGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ReduceRowsOp)
SBP_ENCODING_ONLY_SYMBOL_USES(CountCorrectOp)
SBP_ENCODING_ONLY_SYMBOL_USES(EmbeddingOp)
SBP_ENCODING_ONLY_SYMBOL_USES(EmbeddingGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(LayerNormOp)
SBP_ENCODING_ONLY_SYMBOL_USES(LayerNormGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(GeluOp)
SBP_ENCODING_ONLY_SYMBOL_USES(GeluGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(SoftmaxOp)
SBP_ENCODING_ONLY_SYMBOL_USES(SoftmaxGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(CausalAttentionOp)
SBP_ENCODING_ONLY_SYMBOL_USES(CausalAttentionGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(DropoutOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ReshapeOp)
SBP_ENCODING_ONLY_SYMBOL_USES(TransposeOp)
SBP_ENCODING_ONLY_SYMBOL_USES(NarrowOp)
SBP_ENCODING_ONLY_SYMBOL_USES(NarrowGradOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ConcatOp)
SBP_ENCODING_ONLY_SYMBOL_USES(CastOp)
SBP_ENCODING_ONLY_SYMBOL_USES(SquareSumOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ClipScaleOp)
SBP_ENCODING_ONLY_SYMBOL_USES(MinimizeOp)
SBP_ENCODING_ONLY_SYMBOL_USES(MetricOp)
SBP_ENCODING_ONLY_SYMBOL_USES(OutputOp)
SBP_ENCODING_ONLY_SYMBOL_USES(AllReduceOp)
SBP_ENCODING_ONLY_SYMBOL_USES(AllGatherOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ReduceScatterOp)
SBP_ENCODING_ONLY_SYMBOL_USES(AllToAllOp)
SBP_ENCODING_ONLY_SYMBOL_USES(SliceOp)
SBP_ENCODING_ONLY_SYMBOL_USES(ZeroOthersOp)
#undef SBP_ENCODING_ONLY_SYMBOL_USES

//===-- module level --------------------------------------------------------===//

LogicalResult PlacementOp::verify() {
  llvm::ArrayRef<int64_t> ranks = getRanks(), hierarchy = getHierarchy();
  if (ranks.empty() || hierarchy.empty())
    return emitOpError("needs at least one rank and one hierarchy dimension");
  int64_t product = 1;
  for (int64_t h : hierarchy) {
    if (h <= 0)
      return emitOpError("hierarchy dimensions must be positive, got ") << h;
    product *= h;
  }
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
  if (!type.getElementType().isF32() && !type.getElementType().isSignlessInteger(32))
    return emitOpError("variable element type must be f32 or i32");
  return verifyEncoding(*this, type, "type", symbols);
}

LogicalResult ParameterOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto var = symbols.lookupNearestSymbolFrom<VariableOp>(*this, getVariableAttr());
  if (!var)
    return emitOpError("references undeclared variable ") << getVariableAttr();
  if (var.getType() != getType())
    return emitOpError("result type ") << getType() << " differs from the type of variable "
                                       << getVariableAttr() << " (" << var.getType() << ")";
  return verifyEncodings(*this, symbols);
}

//===-- compute -------------------------------------------------------------===//

static LogicalResult verifyCompute(Operation *op) {
  llvm::SmallVector<RankedTensorType> inferred;
  if (failed(inferComputeResultTypes(op, inferred)))
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

#define SBP_COMPUTE_VERIFIER(OP)                                                                   \
  LogicalResult OP::verify() { return verifyCompute(*this); }
SBP_COMPUTE_VERIFIER(MatmulOp)
SBP_COMPUTE_VERIFIER(BiasAddOp)
SBP_COMPUTE_VERIFIER(BiasGeluOp)
SBP_COMPUTE_VERIFIER(AddOp)
SBP_COMPUTE_VERIFIER(ReluOp)
SBP_COMPUTE_VERIFIER(ReluGradOp)
SBP_COMPUTE_VERIFIER(SoftmaxXentOp)
SBP_COMPUTE_VERIFIER(SoftmaxXentGradOp)
SBP_COMPUTE_VERIFIER(MeanOp)
SBP_COMPUTE_VERIFIER(MeanGradOp)
SBP_COMPUTE_VERIFIER(ReduceRowsOp)
SBP_COMPUTE_VERIFIER(CountCorrectOp)
SBP_COMPUTE_VERIFIER(EmbeddingOp)
SBP_COMPUTE_VERIFIER(EmbeddingGradOp)
SBP_COMPUTE_VERIFIER(LayerNormOp)
SBP_COMPUTE_VERIFIER(LayerNormGradOp)
SBP_COMPUTE_VERIFIER(GeluOp)
SBP_COMPUTE_VERIFIER(GeluGradOp)
SBP_COMPUTE_VERIFIER(SoftmaxOp)
SBP_COMPUTE_VERIFIER(SoftmaxGradOp)
SBP_COMPUTE_VERIFIER(CausalAttentionOp)
SBP_COMPUTE_VERIFIER(CausalAttentionGradOp)
SBP_COMPUTE_VERIFIER(DropoutOp)
SBP_COMPUTE_VERIFIER(ReshapeOp)
SBP_COMPUTE_VERIFIER(TransposeOp)
SBP_COMPUTE_VERIFIER(NarrowOp)
SBP_COMPUTE_VERIFIER(CastOp)
SBP_COMPUTE_VERIFIER(NarrowGradOp)
SBP_COMPUTE_VERIFIER(ConcatOp)
SBP_COMPUTE_VERIFIER(SquareSumOp)
SBP_COMPUTE_VERIFIER(ClipScaleOp)
#undef SBP_COMPUTE_VERIFIER

//===-- training ------------------------------------------------------------===//

static bool isF32Scalar(Type t) {
  auto r = llvm::cast<RankedTensorType>(t);
  return r.getRank() == 0 && r.getElementType().isF32();
}

LogicalResult MinimizeOp::verify() {
  if (!isF32Scalar(getLoss().getType()))
    return emitOpError("loss must be an f32 scalar (tensor<f32>), got ") << getLoss().getType();
  if (auto norm = getMaxGradNorm(); norm && !(norm->convertToFloat() > 0.0f))
    return emitOpError("max_grad_norm must be positive, got ") << norm->convertToFloat();
  return success();
}

LogicalResult MetricOp::verify() {
  if (!isF32Scalar(getValue().getType()))
    return emitOpError("metric '")
           << getName() << "' must be an f32 scalar, got " << getValue().getType();
  return success();
}

LogicalResult OutputOp::verify() {
  if (getName().empty())
    return emitOpError("needs a non-empty name");
  // That the caller reads a whole (B) tensor is the op's only SBP signature:
  // boxing provides it, so an operand typed S or P before boxing is fine here.
  return success();
}

// The optional gradient scale of an optimiser op: an f32 scalar.
static LogicalResult verifyScale(Operation *op, Value scale) {
  if (scale && !isF32Scalar(scale.getType()))
    return op->emitOpError("gradient scale must be an f32 scalar (tensor<f32>), got ")
           << scale.getType();
  return success();
}

LogicalResult SgdOp::verify() {
  if (!getGrad().getType().getElementType().isF32())
    return emitOpError("gradient must be f32");
  if (getMomentum().convertToFloat() != 0.0f && !getMomentumBuffer())
    return emitOpError("momentum ")
           << getMomentum().convertToFloat() << " needs a momentum_buffer variable";
  return verifyScale(*this, getScale());
}

// A slot variable of an optimiser (momentum buffer, AdamW moment) exists and has
// the shape of the variable it belongs to.
static LogicalResult verifySlot(Operation *op, SymbolTableCollection &symbols, VariableOp var,
                                FlatSymbolRefAttr slot, llvm::StringRef what) {
  auto slotVar = symbols.lookupNearestSymbolFrom<VariableOp>(op, slot);
  if (!slotVar)
    return op->emitOpError("references undeclared ") << what << " " << slot;
  if (slotVar.getTensorType().getShape() != var.getTensorType().getShape())
    return op->emitOpError() << what << " " << slot << " has a different shape than "
                             << FlatSymbolRefAttr::get(var.getSymNameAttr());
  return success();
}

static FailureOr<VariableOp> verifyUpdated(Operation *op, SymbolTableCollection &symbols,
                                           FlatSymbolRefAttr variable, Value grad) {
  auto var = symbols.lookupNearestSymbolFrom<VariableOp>(op, variable);
  if (!var)
    return op->emitOpError("references undeclared variable ") << variable;
  if (var.getTensorType().getShape() != llvm::cast<RankedTensorType>(grad.getType()).getShape())
    return op->emitOpError("gradient shape differs from variable ") << variable;
  return var;
}

LogicalResult SgdOp::verifySymbolUses(SymbolTableCollection &symbols) {
  FailureOr<VariableOp> var = verifyUpdated(*this, symbols, getVariableAttr(), getGrad());
  if (failed(var))
    return failure();
  if (auto buf = getMomentumBufferAttr())
    if (failed(verifySlot(*this, symbols, *var, buf, "momentum buffer")))
      return failure();
  return verifyEncodings(*this, symbols);
}

LogicalResult AdamWOp::verify() {
  if (!getGrad().getType().getElementType().isF32())
    return emitOpError("gradient must be f32");
  float b1 = getBeta1().convertToFloat(), b2 = getBeta2().convertToFloat();
  if (!(b1 >= 0.0f && b1 < 1.0f) || !(b2 >= 0.0f && b2 < 1.0f))
    return emitOpError("betas must lie in [0, 1), got beta1 = ") << b1 << ", beta2 = " << b2;
  if (!(getEps().convertToFloat() > 0.0f))
    return emitOpError("eps must be positive, got ") << getEps().convertToFloat();
  return verifyScale(*this, getScale());
}

LogicalResult AdamWOp::verifySymbolUses(SymbolTableCollection &symbols) {
  FailureOr<VariableOp> var = verifyUpdated(*this, symbols, getVariableAttr(), getGrad());
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
  return verifyEncodings(*this, symbols);
}

//===-- boxing --------------------------------------------------------------===//

enum class BoxKind { AllReduce, AllGather, ReduceScatter, AllToAll, Slice, ZeroOthers };

static bool changeMatches(BoxKind kind, SbpDim from, SbpDim to) {
  switch (kind) {
  case BoxKind::AllReduce:
    return isPartial(from) && to.kind == SbpKind::Broadcast;
  case BoxKind::AllGather:
    return from.kind == SbpKind::Split && to.kind == SbpKind::Broadcast;
  case BoxKind::ReduceScatter:
    return isPartial(from) && to.kind == SbpKind::Split;
  case BoxKind::AllToAll:
    return from.kind == SbpKind::Split && to.kind == SbpKind::Split && from.axis != to.axis;
  case BoxKind::Slice:
    return from.kind == SbpKind::Broadcast && to.kind == SbpKind::Split;
  case BoxKind::ZeroOthers:
    return from.kind == SbpKind::Broadcast && isPartial(to);
  }
  return false;
}

static const char *expectedChange(BoxKind kind) {
  switch (kind) {
  case BoxKind::AllReduce:
    return "P -> B";
  case BoxKind::AllGather:
    return "S(i) -> B";
  case BoxKind::ReduceScatter:
    return "P -> S(i)";
  case BoxKind::AllToAll:
    return "S(i) -> S(j), i != j";
  case BoxKind::Slice:
    return "B -> S(i)";
  case BoxKind::ZeroOthers:
    return "B -> P";
  }
  return "?";
}

static LogicalResult verifyBoxPair(Operation *op, BoxKind kind, int64_t dim, Type inType,
                                   Type outType) {
  auto in = llvm::cast<RankedTensorType>(inType), out = llvm::cast<RankedTensorType>(outType);
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
  if (!changeMatches(kind, from[dim], to[dim]))
    return op->emitOpError("expects ") << expectedChange(kind) << " on dim " << dim << ", got "
                                       << toString(from[dim]) << " -> " << toString(to[dim]);
  return success();
}

LogicalResult AllReduceOp::verify() {
  if (getInputs().empty() || getInputs().size() != getResults().size())
    return emitOpError("needs as many results as operands (at least one), got ")
           << getInputs().size() << " operand(s) and " << getResults().size() << " result(s)";
  for (auto [in, out] : llvm::zip(getInputs(), getResults()))
    if (failed(verifyBoxPair(*this, BoxKind::AllReduce, getDim(), in.getType(), out.getType())))
      return failure();
  return success();
}

#define SBP_BOX_VERIFIER(OP, KIND)                                                                 \
  LogicalResult OP::verify() {                                                                     \
    return verifyBoxPair(*this, BoxKind::KIND, getDim(), getInput().getType(),                     \
                         getResult().getType());                                                   \
  }
SBP_BOX_VERIFIER(AllGatherOp, AllGather)
SBP_BOX_VERIFIER(ReduceScatterOp, ReduceScatter)
SBP_BOX_VERIFIER(AllToAllOp, AllToAll)
SBP_BOX_VERIFIER(SliceOp, Slice)
SBP_BOX_VERIFIER(ZeroOthersOp, ZeroOthers)
#undef SBP_BOX_VERIFIER
