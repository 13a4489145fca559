// Shape inference of the sbp compute ops (global shapes): used by the op
// verifiers and by the op semantics in ops/.
#include "ir/SbpDialect.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {
RankedTensorType tensorOf(Value v) { return llvm::cast<RankedTensorType>(v.getType()); }

LogicalResult expectF32(Operation *op, Value v, llvm::StringRef what) {
  if (!tensorOf(v).getElementType().isF32())
    return op->emitOpError() << what << " must have element type f32, got "
                             << tensorOf(v).getElementType();
  return success();
}

LogicalResult expectRank(Operation *op, Value v, int64_t rank, llvm::StringRef what) {
  if (tensorOf(v).getRank() != rank)
    return op->emitOpError() << what << " must have rank " << rank << ", got "
                             << withoutSbp(tensorOf(v));
  return success();
}

// logits [N, C] f32 and labels [N] i32.
LogicalResult checkLogitsLabels(Operation *op, Value logits, Value labels) {
  if (failed(expectF32(op, logits, "logits")) || failed(expectRank(op, logits, 2, "logits")) ||
      failed(expectRank(op, labels, 1, "labels")))
    return failure();
  if (!tensorOf(labels).getElementType().isSignlessInteger(32))
    return op->emitOpError("labels must have element type i32, got ")
           << tensorOf(labels).getElementType();
  if (tensorOf(labels).getDimSize(0) != tensorOf(logits).getDimSize(0))
    return op->emitOpError("labels length ")
           << tensorOf(labels).getDimSize(0) << " does not match the "
           << tensorOf(logits).getDimSize(0) << " rows of the logits";
  return success();
}

RankedTensorType plain(llvm::ArrayRef<int64_t> shape, Type elt) {
  return RankedTensorType::get(shape, elt);
}
} // namespace

LogicalResult mlir::sbp::inferComputeResultTypes(Operation *op,
                                                 llvm::SmallVectorImpl<RankedTensorType> &out) {
  Builder b(op->getContext());
  Type f32 = b.getF32Type();
  auto sameAs = [&](Value x, Value y, llvm::StringRef names) -> LogicalResult {
    if (tensorOf(x).getShape() != tensorOf(y).getShape() ||
        tensorOf(x).getElementType() != tensorOf(y).getElementType())
      return op->emitOpError() << names << " must have the same shape and element type, got "
                               << withoutSbp(tensorOf(x)) << " and " << withoutSbp(tensorOf(y));
    return success();
  };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](MatmulOp m) -> LogicalResult {
        if (failed(expectRank(op, m.getA(), 2, "lhs")) ||
            failed(expectRank(op, m.getB(), 2, "rhs")) || failed(expectF32(op, m.getA(), "lhs")) ||
            failed(expectF32(op, m.getB(), "rhs")))
          return failure();
        auto a = tensorOf(m.getA()).getShape(), bs = tensorOf(m.getB()).getShape();
        int64_t M = m.getTransposeA() ? a[1] : a[0], K = m.getTransposeA() ? a[0] : a[1];
        int64_t K2 = m.getTransposeB() ? bs[1] : bs[0], N = m.getTransposeB() ? bs[0] : bs[1];
        if (K != K2)
          return op->emitOpError("inner dimensions differ: ")
                 << K << " (lhs" << (m.getTransposeA() ? ", transposed" : "") << ") vs " << K2
                 << " (rhs" << (m.getTransposeB() ? ", transposed" : "") << ")";
        out.push_back(plain({M, N}, f32));
        return success();
      })
      .Case([&](BiasAddOp o) -> LogicalResult {
        if (failed(expectRank(op, o.getX(), 2, "input")) ||
            failed(expectRank(op, o.getBias(), 1, "bias")) ||
            failed(expectF32(op, o.getX(), "input")) || failed(expectF32(op, o.getBias(), "bias")))
          return failure();
        int64_t n = tensorOf(o.getX()).getDimSize(1);
        if (tensorOf(o.getBias()).getDimSize(0) != n)
          return op->emitOpError("bias length ")
                 << tensorOf(o.getBias()).getDimSize(0) << " does not match the " << n
                 << " columns of the input";
        out.push_back(withoutSbp(tensorOf(o.getX())));
        return success();
      })
      .Case([&](AddOp o) -> LogicalResult {
        if (failed(sameAs(o.getLhs(), o.getRhs(), "operands")))
          return failure();
        out.push_back(withoutSbp(tensorOf(o.getLhs())));
        return success();
      })
      .Case([&](ReluOp o) -> LogicalResult {
        if (failed(expectF32(op, o.getX(), "input")))
          return failure();
        out.push_back(withoutSbp(tensorOf(o.getX())));
        return success();
      })
      .Case([&](ReluGradOp o) -> LogicalResult {
        if (failed(expectF32(op, o.getDy(), "dy")) ||
            failed(sameAs(o.getDy(), o.getY(), "dy and y")))
          return failure();
        out.push_back(withoutSbp(tensorOf(o.getDy())));
        return success();
      })
      .Case([&](SoftmaxXentOp o) -> LogicalResult {
        if (failed(checkLogitsLabels(op, o.getLogits(), o.getLabels())))
          return failure();
        out.push_back(plain({tensorOf(o.getLogits()).getDimSize(0)}, f32));
        return success();
      })
      .Case([&](SoftmaxXentGradOp o) -> LogicalResult {
        if (failed(checkLogitsLabels(op, o.getLogits(), o.getLabels())) ||
            failed(expectF32(op, o.getDloss(), "dloss")) ||
            failed(expectRank(op, o.getDloss(), 1, "dloss")))
          return failure();
        if (tensorOf(o.getDloss()).getDimSize(0) != tensorOf(o.getLogits()).getDimSize(0))
          return op->emitOpError("dloss length does not match the rows of the logits");
        out.push_back(withoutSbp(tensorOf(o.getLogits())));
        return success();
      })
      .Case([&](MeanOp o) -> LogicalResult {
        if (failed(expectF32(op, o.getX(), "input")))
          return failure();
        out.push_back(plain({}, f32));
        return success();
      })
      .Case([&](MeanGradOp o) -> LogicalResult {
        if (failed(expectF32(op, o.getDy(), "dy")) || failed(expectRank(op, o.getDy(), 0, "dy")))
          return failure();
        // The result shape is the forward input's: given by the result type.
        auto res = tensorOf(o.getResult());
        if (!res.getElementType().isF32())
          return op->emitOpError("result must have element type f32");
        out.push_back(withoutSbp(res));
        return success();
      })
      .Case([&](ReduceRowsOp o) -> LogicalResult {
        if (failed(expectF32(op, o.getX(), "input")) ||
            failed(expectRank(op, o.getX(), 2, "input")))
          return failure();
        out.push_back(plain({tensorOf(o.getX()).getDimSize(1)}, f32));
        return success();
      })
      .Case([&](CountCorrectOp o) -> LogicalResult {
        if (failed(checkLogitsLabels(op, o.getLogits(), o.getLabels())))
          return failure();
        out.push_back(plain({}, f32));
        return success();
      })
      .Default([&](Operation *) -> LogicalResult {
        return op->emitOpError("is not an sbp compute op: no shape inference");
      });
}
