// The boxing ops (DESIGN.md "Boxing"): each changes one SBP on one hierarchy
// dimension and nothing else. Per op: the change it makes; the verifier that
// checks it is shared.
#include "ops/Rules.h"

#include "kernels/cpu/Compression.h"
#include "runtime/Shape.h"

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
  if (auto ar = llvm::dyn_cast<AllReduceOp>(op);
      ar && (ar.getCodecAttr() || ar.getStateAttr() || ar.getStepAttr() || ar.getInnerStepsAttr()))
    return ar.verifyCodec();
  return success();
}

namespace {
int64_t maxLocal(llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<SbpDim> sbp,
                 llvm::ArrayRef<int64_t> hierarchy) {
  return sbpflow::maxLocalElements(shape.vec(), sbpflow::NdSbp(sbp.begin(), sbp.end()),
                                   hierarchy.vec());
}

unsigned stateCount(CodecAttr codec) {
  switch (codec.getKind()) {
  case CodecKind::topk: // the residual; under AdamW then m and s
  case CodecKind::topk2bit:
    return codec.getBeta2().isZero() ? 1 : 3;
  case CodecKind::sign: // and the momentum it took from an SGD
    return codec.getMomentum().isZero() ? 1 : 2;
  case CodecKind::dgc: // u and v; under AdamW m, v and the second moment
    return codec.getBeta2().isZero() ? 2 : 3;
  case CodecKind::powersgd:
    return 2;
  case CodecKind::edit: // the anomaly detector's row
    return 1;
  default:
    return 0;
  }
}
} // namespace

// The codec whose parameter is the largest of L-GreCo's candidates (buffers
// and state are sized for it); `codec` itself without `lgreco`.
static CodecAttr sizingCodec(CodecAttr codec, LgrecoAttr lgreco) {
  if (!lgreco || lgreco.getCandidates().empty())
    return codec;
  const double top = *llvm::max_element(lgreco.getCandidates().asArrayRef());
  CodecFields f = CodecFields::of(codec);
  if (isSparseCodec(f.kind))
    f.density = top;
  if (f.kind == CodecKind::qsgd)
    f.bits = static_cast<int64_t>(top);
  if (f.kind == CodecKind::powersgd)
    f.rank = static_cast<int64_t>(top);
  return f.get(codec.getContext());
}

llvm::SmallVector<llvm::SmallVector<int64_t, 2>>
mlir::sbp::codecStateShapes(CodecAttr given, LgrecoAttr lgreco, RankedTensorType grad,
                            llvm::ArrayRef<int64_t> hierarchy) {
  const CodecAttr codec = sizingCodec(given, lgreco);
  auto sbp = getSbpDims(getSbp(grad));
  const int64_t ranks = product(hierarchy);
  const int64_t local = maxLocal(grad.getShape(), sbp, hierarchy);
  llvm::SmallVector<llvm::SmallVector<int64_t, 2>> shapes(stateCount(codec), {ranks, local});
  if (codec.getKind() == CodecKind::powersgd) {
    // Q holds the local columns (the last axis, split where the gradient's is).
    const int64_t last = grad.getRank() ? grad.getRank() - 1 : 0;
    llvm::SmallVector<SbpDim> colSbp;
    for (SbpDim d : sbp)
      colSbp.push_back(d.kind == SbpKind::Split && d.axis == last ? S(0) : B);
    const int64_t cols = grad.getRank() ? grad.getShape().back() : 1;
    shapes[1][1] = maxLocal({cols}, colSbp, hierarchy) * codec.getRank();
  }
  if (codec.getKind() == CodecKind::edit)
    shapes[0][1] = sbpflow::cpu::kEditStateFloats;
  if (lgreco)
    shapes.push_back({ranks, local});
  return shapes;
}

// A compressed all-reduce: one f32 gradient (several, on one placement,
// under PowerSGD), partial sum on `dim`, and the state (each gradient's in
// turn) and step variables its codec keeps, shaped as codecStateShapes says.
LogicalResult mlir::sbp::AllReduceOp::verifyCodec() {
  CodecAttr codec = getCodecAttr();
  if (!codec || !getStepAttr())
    return emitOpError("with state or step needs a codec and a step counter");
  if (getInputs().size() != 1 && codec.getKind() != CodecKind::powersgd)
    return emitOpError("with a codec reduces one gradient (several only under powersgd), got ")
           << getInputs().size();
  SymbolTableCollection symbols;
  const SymbolRefAttr where = getSbp(tensorOf(getInputs()[0])).getPlacement();
  auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(*this, where);
  if (!placement)
    return failure(); // verifyEncodings names it
  llvm::SmallVector<llvm::SmallVector<int64_t, 2>> shapes;
  for (Value input : getInputs()) {
    auto grad = tensorOf(input);
    if (!grad.getElementType().isF32())
      return emitOpError("with a codec reduces an f32 gradient, got ") << grad.getElementType();
    auto dims = getSbpDims(getSbp(grad));
    if (dims[getDim()].kind != SbpKind::PartialSum)
      return emitOpError("with a codec reduces a partial sum, got ") << toString(dims[getDim()]);
    if (getSbp(grad).getPlacement() != where)
      return emitOpError("with a codec reduces gradients of one placement");
    llvm::append_range(shapes,
                       codecStateShapes(codec, getLgrecoAttr(), grad, placement.getHierarchy()));
  }
  auto grad = tensorOf(getInputs()[0]);
  const unsigned got = getStateAttr() ? getStateAttr().size() : 0;
  if (got != shapes.size())
    return emitOpError("codec ") << codec << " keeps " << shapes.size()
                                 << " state variable(s), got " << got;
  for (unsigned i = 0; i < got; ++i) {
    auto ref = cast<FlatSymbolRefAttr>(getStateAttr()[i]);
    auto var = symbols.lookupNearestSymbolFrom<VariableOp>(*this, ref);
    if (!var)
      return emitOpError("codec state ") << ref << " is not a variable";
    RankedTensorType t = var.getTensorType();
    auto sbp = getSbpDims(getSbp(t));
    const bool rowPerRank =
        getSbp(t) && getSbp(t).getPlacement() == getSbp(grad).getPlacement() &&
        llvm::all_of(sbp, [](SbpDim d) { return d.kind == SbpKind::Split && d.axis == 0; });
    if (!t.getElementType().isF32() || t.getShape() != llvm::ArrayRef<int64_t>(shapes[i]) ||
        !rowPerRank)
      return emitOpError("codec state ")
             << ref << " must be f32 " << shapeString(shapes[i])
             << " split S(0) on every dimension of the gradient's placement, got " << t;
  }
  // A counter the codec reads: an i32 scalar variable.
  auto i32Scalar = [&](FlatSymbolRefAttr ref) {
    auto var = symbols.lookupNearestSymbolFrom<VariableOp>(*this, ref);
    return var && var.getTensorType().getElementType().isSignlessInteger(32) &&
           var.getTensorType().getRank() == 0;
  };
  if (!i32Scalar(getStepAttr()))
    return emitOpError("codec step ") << getStepAttr() << " must be an i32 scalar variable";
  // A-EDiT's step weights read each rank's inner steps.
  const bool weighsSteps = !codec.getStepWeight().isZero();
  if (weighsSteps != static_cast<bool>(getInnerStepsAttr()))
    return emitOpError("names inner_steps exactly when its codec has a step_weight (A-EDiT)");
  if (weighsSteps && !i32Scalar(getInnerStepsAttr()))
    return emitOpError("inner_steps ")
           << getInnerStepsAttr() << " must be an i32 scalar variable (an optimiser's step)";
  if (!getLgreco() && !getLgrecoState())
    return success();
  LgrecoAttr lg = getLgrecoAttr();
  const CodecKind kind = codec.getKind();
  if (!lg || !getLgrecoStateAttr() || getLgrecoStateAttr().size() != 4)
    return emitOpError("L-GreCo needs #sbp.lgreco and four state variables (errors, choice, "
                       "previous, pending)");
  if (!lgrecoAdapts(kind))
    return emitOpError("L-GreCo adapts topk, topk2bit, qsgd or powersgd, not ")
           << stringifyCodecKind(kind);
  if (codec.getChunk() != 0)
    return emitOpError("L-GreCo measures whole-tensor top-k; a chunked topk2bit (chunk = ")
           << codec.getChunk() << ") cannot adapt";
  const int64_t C = static_cast<int64_t>(lg.getCandidates().size());
  const auto gradients = static_cast<int64_t>(getInputs().size());
  if (C < 1 || C > 127 || lg.getDefaultIndex() < 0 || lg.getDefaultIndex() >= C ||
      lg.getLayer() < 0 || lg.getLayer() + gradients > lg.getLayers() || lg.getEvery() < 1)
    return emitOpError("L-GreCo needs 1 to 127 candidates, a default among them, 0 <= layer, "
                       "layer + gradients <= layers and every >= 1, got ")
           << lg;
  const int64_t layers = lg.getLayers();
  const std::pair<int64_t, bool> want[] = {
      {layers * 2 * C, true}, {layers, false}, {layers, false}, {1, false}};
  for (auto [ref, w] : llvm::zip(getLgrecoStateAttr(), want)) {
    auto var = symbols.lookupNearestSymbolFrom<VariableOp>(*this, cast<FlatSymbolRefAttr>(ref));
    if (!var || var.getTensorType().getNumElements() != w.first ||
        var.getTensorType().getElementType().isF32() != w.second)
      return emitOpError("L-GreCo state ") << ref << " must be a variable of " << w.first
                                           << (w.second ? " f32" : " i32") << " elements";
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
