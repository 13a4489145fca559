// What the op families share: the Ops.def element-type rule applied to an op
// (so that the verifier refuses what the plan loader would), shape checks and
// SBP signature builders.
#include "ops/Rules.h"

namespace mlir::sbp {

std::string shapeString(llvm::ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t product(llvm::ArrayRef<int64_t> shape) {
  int64_t p = 1;
  for (int64_t d : shape)
    p *= d;
  return p;
}

static bool isFloat(Type t) { return t.isF32() || t.isBF16(); }

FailureOr<llvm::SmallVector<Type, 1>> checkElementTypes(Operation *op,
                                                        llvm::ArrayRef<llvm::StringRef> names) {
  Builder b(op->getContext());
  Type t, a; // the task's T and A
  for (auto [i, v] : llvm::enumerate(op->getOperands())) {
    Type e = tensorOf(v).getElementType();
    llvm::StringRef name = names.empty() ? "operand" : names[std::min(i, names.size() - 1)];
    char rule = operandTypeRule(op, i);
    auto mismatch = [&](Type first) {
      return op->emitOpError("operands must have the same element type, got ")
             << first << " and " << e;
    };
    switch (rule) {
    case 'F':
      if (!e.isF32())
        return op->emitOpError() << name << " must have element type f32, got " << e;
      break;
    case 'I':
      if (!e.isSignlessInteger(32))
        return op->emitOpError() << name << " must have element type i32, got " << e << "; "
                                 << op->getName().stripDialect() << " needs i32 " << name;
      break;
    case 'A':
      if (a && a != e)
        return mismatch(a);
      a = e;
      break;
    case 'T':
      if (t && t != e)
        return mismatch(t);
      t = e;
      [[fallthrough]];
    default: // W, C: any float
      if (!isFloat(e))
        return op->emitOpError() << name << " must have element type f32 or bf16, got " << e;
    }
  }
  llvm::SmallVector<Type, 1> results;
  for (auto [i, r] : llvm::enumerate(op->getResults())) {
    Type declared = tensorOf(r).getElementType();
    switch (resultTypeRule(op, i)) {
    case 'F':
      results.push_back(b.getF32Type());
      break;
    case 'I':
      results.push_back(b.getI32Type());
      break;
    case 'A':
      results.push_back(a ? a : declared);
      break;
    case 'W': // a bf16 product may be accumulated into f32
      results.push_back(declared.isF32() ? declared : t ? t : b.getF32Type());
      break;
    default: // T, C
      if (resultTypeRule(op, i) == 'T' && t) {
        results.push_back(t);
        break;
      }
      if (!isFloat(declared))
        return op->emitOpError("result #")
               << i << " must have element type f32 or bf16, got " << declared;
      results.push_back(declared);
    }
  }
  return results;
}

LogicalResult expectRank(Operation *op, Value v, int64_t rank, llvm::StringRef what,
                         llvm::StringRef also) {
  if (tensorOf(v).getRank() != rank)
    return op->emitOpError() << what << " must have rank " << rank << ", got "
                             << withoutSbp(tensorOf(v)) << also;
  return success();
}

LogicalResult expectMinRank(Operation *op, Value v, int64_t rank, llvm::StringRef what,
                            llvm::StringRef also) {
  if (tensorOf(v).getRank() < rank)
    return op->emitOpError() << what << " must have rank >= " << rank << ", got "
                             << withoutSbp(tensorOf(v)) << also;
  return success();
}

LogicalResult expectSameType(Operation *op, Value x, Value y, llvm::StringRef names,
                             llvm::StringRef also) {
  if (tensorOf(x).getShape() != tensorOf(y).getShape() ||
      tensorOf(x).getElementType() != tensorOf(y).getElementType())
    return op->emitOpError() << names << " must have the same shape and element type, got "
                             << withoutSbp(tensorOf(x)) << " and " << withoutSbp(tensorOf(y))
                             << also;
  return success();
}

LogicalResult expectAxis(Operation *op, int64_t axis, int64_t rank) {
  if (axis < 0 || axis >= rank)
    return op->emitOpError("axis ") << axis << " is out of range for rank " << rank;
  return success();
}

LogicalResult expectPositive(Operation *op, llvm::StringRef what, float value,
                             llvm::StringRef also) {
  if (!(value > 0.0f))
    return op->emitOpError() << what << " must be positive, got " << value << also;
  return success();
}

LogicalResult setResult(llvm::SmallVectorImpl<RankedTensorType> &results,
                        llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<Type> elementTypes) {
  results.push_back(RankedTensorType::get(shape, elementTypes.front()));
  return success();
}

LogicalResult resultsLike(llvm::SmallVectorImpl<RankedTensorType> &results, Value v,
                          llvm::ArrayRef<Type> elementTypes) {
  for (Type type : elementTypes)
    results.push_back(RankedTensorType::get(shapeOf(v), type));
  return success();
}

LogicalResult inferLike(Operation *op, Value like, llvm::ArrayRef<llvm::StringRef> names,
                        llvm::SmallVectorImpl<RankedTensorType> &results) {
  FailureOr<llvm::SmallVector<Type, 1>> types = checkElementTypes(op, names);
  if (failed(types))
    return failure();
  for (Type type : *types)
    results.push_back(
        RankedTensorType::get(like ? shapeOf(like) : llvm::ArrayRef<int64_t>{}, type));
  return success();
}

LogicalResult declaredResults(Operation *op, llvm::SmallVectorImpl<RankedTensorType> &results) {
  FailureOr<llvm::SmallVector<Type, 1>> types = checkElementTypes(op, {});
  if (failed(types))
    return failure();
  for (auto [r, type] : llvm::zip(op->getResults(), *types))
    results.push_back(RankedTensorType::get(shapeOf(r), type));
  return success();
}

SbpSignature sig(std::initializer_list<SbpDim> operands, std::initializer_list<SbpDim> results) {
  SbpSignature s;
  s.operands.assign(operands);
  s.results.assign(results);
  return s;
}

std::optional<SbpDim> sbpAt(Type t, unsigned dim) {
  auto dims = getSbpDims(getSbp(t));
  if (dim < dims.size())
    return dims[dim];
  return std::nullopt;
}

int leadAxes(Value v) { return static_cast<int>(tensorOf(v).getRank()) - 1; }

llvm::SmallVector<SbpSignature> uniform(int64_t rank, unsigned n, bool linear, int64_t except) {
  llvm::SmallVector<SbpSignature> out;
  auto all = [&](SbpDim d) {
    SbpSignature s;
    s.operands.assign(n, d);
    s.results.push_back(d);
    out.push_back(s);
  };
  for (int i = 0; i < rank; ++i)
    if (i != except)
      all(S(i));
  all(B);
  if (linear)
    all(P);
  return out;
}

llvm::SmallVector<SbpSignature> linearInFirst(llvm::SmallVector<SbpSignature> sigs) {
  if (!sigs.empty()) {
    SbpSignature s;
    s.operands.assign(sigs.front().operands.size(), B);
    s.operands.front() = P;
    s.results.push_back(P);
    sigs.push_back(s);
  }
  return sigs;
}

llvm::SmallVector<SbpSignature> reduceToScalar(Value x, bool linear) {
  llvm::SmallVector<SbpSignature> out;
  for (int i = 0; i < tensorOf(x).getRank(); ++i)
    out.push_back(sig({S(i)}, {P}));
  out.push_back(sig({B}, {B}));
  if (linear)
    out.push_back(sig({P}, {P}));
  return out;
}

LogicalResult noGradient(Operation *op) {
  return op->emitOpError("has no gradient rule (it cannot lie between a parameter and the loss)");
}

} // namespace mlir::sbp
