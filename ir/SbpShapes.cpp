// Shape inference of the sbp compute ops (global shapes): used by the op
// verifiers and by the op semantics in ops/. Ops whose result shape is not a
// function of the operands (mean_grad, reduce_rows, embedding_grad, reshape,
// narrow, narrow_grad) take it from their result type and check it.
#include "ir/SbpDialect.h"

#include "llvm/ADT/TypeSwitch.h"

#include <string>

using namespace mlir;
using namespace mlir::sbp;

namespace {
RankedTensorType tensorOf(Value v) { return llvm::cast<RankedTensorType>(v.getType()); }
llvm::ArrayRef<int64_t> shapeOf(Value v) { return tensorOf(v).getShape(); }

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

LogicalResult expectF32(Operation *op, Value v, llvm::StringRef what) {
  if (!tensorOf(v).getElementType().isF32())
    return op->emitOpError() << what << " must have element type f32, got "
                             << tensorOf(v).getElementType();
  return success();
}

// An activation: f32, or bf16 under mixed precision (sbp-mixed-precision).
LogicalResult expectFloat(Operation *op, Value v, llvm::StringRef what) {
  Type t = tensorOf(v).getElementType();
  if (!t.isF32() && !t.isBF16())
    return op->emitOpError() << what << " must have element type f32 or bf16, got " << t;
  return success();
}

// `result`'s element type when it is f32 or `operand`'s (bf16 products and
// sums may be accumulated into an f32 result), else `operand`'s.
Type accumulatorType(Value operand, Value result) {
  Type r = tensorOf(result).getElementType();
  return r.isF32() ? r : tensorOf(operand).getElementType();
}

LogicalResult expectI32(Operation *op, Value v, llvm::StringRef what) {
  if (!tensorOf(v).getElementType().isSignlessInteger(32))
    return op->emitOpError() << what << " must have element type i32, got "
                             << tensorOf(v).getElementType();
  return success();
}

LogicalResult expectRank(Operation *op, Value v, int64_t rank, llvm::StringRef what) {
  if (tensorOf(v).getRank() != rank)
    return op->emitOpError() << what << " must have rank " << rank << ", got "
                             << withoutSbp(tensorOf(v));
  return success();
}

LogicalResult expectMinRank(Operation *op, Value v, int64_t rank, llvm::StringRef what) {
  if (tensorOf(v).getRank() < rank)
    return op->emitOpError() << what << " must have rank >= " << rank << ", got "
                             << withoutSbp(tensorOf(v));
  return success();
}

// logits [..., V] (f32 or bf16) and labels [...] i32 (the logits' leading axes).
LogicalResult checkLogitsLabels(Operation *op, Value logits, Value labels) {
  if (failed(expectFloat(op, logits, "logits")) || failed(expectMinRank(op, logits, 1, "logits")) ||
      failed(expectI32(op, labels, "labels")))
    return failure();
  llvm::ArrayRef<int64_t> lead = shapeOf(logits).drop_back();
  if (failed(expectRank(op, labels, static_cast<int64_t>(lead.size()), "labels")))
    return failure();
  if (shapeOf(labels) != lead) {
    if (lead.size() == 1)
      return op->emitOpError("labels length ")
             << shapeOf(labels)[0] << " does not match the " << lead[0] << " rows of the logits";
    return op->emitOpError("labels shape ")
           << shapeString(shapeOf(labels)) << " does not match the leading axes "
           << shapeString(lead) << " of the logits";
  }
  return success();
}

// Last-axis ops: x [..., C] with a [C] vector parameter.
LogicalResult checkChannelVector(Operation *op, Value x, Value vec, llvm::StringRef what) {
  if (failed(expectF32(op, vec, what)) || failed(expectRank(op, vec, 1, what)))
    return failure();
  int64_t c = shapeOf(x).back();
  if (shapeOf(vec)[0] != c)
    return op->emitOpError() << what << " length " << shapeOf(vec)[0] << " does not match the " << c
                             << " channels (last axis) of the input";
  return success();
}

LogicalResult checkAxis(Operation *op, int64_t axis, int64_t rank) {
  if (axis < 0 || axis >= rank)
    return op->emitOpError("axis ") << axis << " is out of range for rank " << rank;
  return success();
}

RankedTensorType plain(llvm::ArrayRef<int64_t> shape, Type elt) {
  return RankedTensorType::get(shape, elt);
}
} // namespace

llvm::SmallVector<int64_t> mlir::sbp::matmulResultShape(llvm::ArrayRef<int64_t> a,
                                                        llvm::ArrayRef<int64_t> b, bool transposeA,
                                                        bool transposeB) {
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
  // An elementwise op of an activation `x`: one result like x.
  auto likeFloat = [&](Value x, llvm::StringRef what) -> LogicalResult {
    if (failed(expectFloat(op, x, what)))
      return failure();
    out.push_back(withoutSbp(tensorOf(x)));
    return success();
  };
  // A reduction of a whole f32 tensor: one f32 scalar.
  auto reduceF32ToScalar = [&](Value x) -> LogicalResult {
    if (failed(expectF32(op, x, "input")))
      return failure();
    out.push_back(plain({}, f32));
    return success();
  };
  // The backward of an elementwise op: dy like `other` (its input or
  // output), one result like dy.
  auto gradLikeFloat = [&](Value dy, Value other, llvm::StringRef names) -> LogicalResult {
    if (failed(sameAs(dy, other, names)))
      return failure();
    return likeFloat(dy, "dy");
  };
  // Causal attention's q, k, v (and the backward's dy): [batch, seqLen, C]
  // alike, with `heads` dividing C.
  auto checkAttention = [&](Value q, Value k, Value v, Value dy, int64_t heads) -> LogicalResult {
    if (failed(expectFloat(op, q, "q")) || failed(expectRank(op, q, 3, "q")) ||
        (dy && failed(sameAs(dy, q, "dy and q"))) || failed(sameAs(q, k, "q and k")) ||
        failed(sameAs(q, v, "q and v")))
      return failure();
    int64_t c = shapeOf(q)[2];
    if (heads <= 0 || c % heads != 0)
      return op->emitOpError("heads ")
             << heads << " must be positive and divide the " << c << " channels";
    return success();
  };
  auto resultType = [&](unsigned i) { return tensorOf(op->getResult(i)); };
  auto sameElement = [&](Value x, Value y) -> LogicalResult {
    if (tensorOf(x).getElementType() != tensorOf(y).getElementType())
      return op->emitOpError("operands must have the same element type, got ")
             << tensorOf(x).getElementType() << " and " << tensorOf(y).getElementType();
    return success();
  };
  // narrow (the result is the part of `in`) and narrow_grad (the result is
  // the whole that `in` is the part of): equal off `axis`, and the part's
  // range [begin, begin + length) inside the whole.
  auto narrowShape = [&](Value in, llvm::StringRef inName, int64_t axis, int64_t begin,
                         bool resultIsWhole) -> LogicalResult {
    auto x = shapeOf(in);
    auto res = resultType(0);
    if (failed(checkAxis(op, axis, static_cast<int64_t>(x.size()))))
      return failure();
    llvm::SmallVector<int64_t> expect(x);
    expect[axis] = res.getRank() == static_cast<int64_t>(x.size()) ? res.getDimSize(axis) : 0;
    if (res.getShape() != llvm::ArrayRef<int64_t>(expect))
      return op->emitOpError("result ")
             << withoutSbp(res) << " must differ from " << inName << " " << withoutSbp(tensorOf(in))
             << " on axis " << axis << " only";
    const int64_t part = resultIsWhole ? x[axis] : res.getDimSize(axis);
    const int64_t whole = resultIsWhole ? res.getDimSize(axis) : x[axis];
    if (begin < 0 || begin + part > whole)
      return op->emitOpError("range [")
             << begin << ", " << begin + part << ") on axis " << axis << " is outside the "
             << (resultIsWhole ? "result's" : "input's") << " length " << whole;
    out.push_back(plain(expect, tensorOf(in).getElementType()));
    return success();
  };
  // bias_add's operands: a bias of x's element type on x's trailing axes.
  auto checkBias = [&](Value x, Value bias) -> LogicalResult {
    if (failed(expectFloat(op, x, "input")) || failed(sameElement(x, bias)) ||
        failed(expectMinRank(op, x, 2, "input")) || failed(expectMinRank(op, bias, 1, "bias")))
      return failure();
    auto xs = shapeOf(x), bs = shapeOf(bias);
    if (bs.size() >= xs.size())
      return op->emitOpError("bias of rank ")
             << bs.size() << " must have fewer axes than the rank-" << xs.size() << " input";
    llvm::ArrayRef<int64_t> trailing = xs.take_back(bs.size());
    if (bs != trailing) {
      if (bs.size() == 1)
        return op->emitOpError("bias length ")
               << bs[0] << " does not match the " << xs.back() << " columns of the input";
      return op->emitOpError("bias shape ")
             << shapeString(bs) << " does not match the trailing axes " << shapeString(trailing)
             << " of the input";
    }
    return success();
  };
  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case([&](MatmulOp m) -> LogicalResult {
        if (failed(expectMinRank(op, m.getA(), 2, "lhs")) ||
            failed(expectMinRank(op, m.getB(), 2, "rhs")) ||
            failed(expectFloat(op, m.getA(), "lhs")) || failed(sameElement(m.getA(), m.getB())))
          return failure();
        // Each operand is the matrix [prod(lead), last].
        auto a = shapeOf(m.getA()), bs = shapeOf(m.getB());
        bool tA = m.getTransposeA(), tB = m.getTransposeB();
        int64_t K = tA ? product(a.drop_back()) : a.back();
        int64_t K2 = tB ? bs.back() : product(bs.drop_back());
        if (K != K2)
          return op->emitOpError("inner dimensions differ: ")
                 << K << " (lhs" << (tA ? ", transposed" : "") << ") vs " << K2 << " (rhs"
                 << (tB ? ", transposed" : "") << ")";
        out.push_back(
            plain(matmulResultShape(a, bs, tA, tB), accumulatorType(m.getA(), m.getResult())));
        return success();
      })
      .Case([&](BiasAddOp o) -> LogicalResult {
        if (failed(checkBias(o.getX(), o.getBias())))
          return failure();
        out.push_back(withoutSbp(tensorOf(o.getX())));
        return success();
      })
      .Case([&](BiasGeluOp o) -> LogicalResult {
        if (failed(checkBias(o.getX(), o.getBias())))
          return failure();
        out.push_back(withoutSbp(tensorOf(o.getX())));
        out.push_back(withoutSbp(tensorOf(o.getX())));
        return success();
      })
      .Case([&](AddOp o) -> LogicalResult {
        if (failed(sameAs(o.getLhs(), o.getRhs(), "operands")))
          return failure();
        out.push_back(withoutSbp(tensorOf(o.getLhs())));
        return success();
      })
      .Case([&](ReluOp o) { return likeFloat(o.getX(), "input"); })
      .Case([&](ReluGradOp o) { return gradLikeFloat(o.getDy(), o.getY(), "dy and y"); })
      .Case([&](SoftmaxXentOp o) -> LogicalResult {
        if (failed(checkLogitsLabels(op, o.getLogits(), o.getLabels())))
          return failure();
        out.push_back(plain(shapeOf(o.getLabels()), f32));
        return success();
      })
      .Case([&](SoftmaxXentGradOp o) -> LogicalResult {
        if (failed(checkLogitsLabels(op, o.getLogits(), o.getLabels())) ||
            failed(expectF32(op, o.getDloss(), "dloss")))
          return failure();
        if (shapeOf(o.getDloss()) != shapeOf(o.getLabels()))
          return op->emitOpError("dloss shape ")
                 << shapeString(shapeOf(o.getDloss())) << " does not match the labels' "
                 << shapeString(shapeOf(o.getLabels()));
        out.push_back(withoutSbp(tensorOf(o.getLogits())));
        return success();
      })
      .Case([&](MeanOp o) { return reduceF32ToScalar(o.getX()); })
      .Case([&](MeanGradOp o) -> LogicalResult {
        if (failed(expectF32(op, o.getDy(), "dy")) || failed(expectRank(op, o.getDy(), 0, "dy")))
          return failure();
        // The result shape is the forward input's: given by the result type.
        auto res = resultType(0);
        if (!res.getElementType().isF32())
          return op->emitOpError("result must have element type f32");
        out.push_back(withoutSbp(res));
        return success();
      })
      .Case([&](ReduceRowsOp o) -> LogicalResult {
        if (failed(expectFloat(op, o.getX(), "input")) ||
            failed(expectMinRank(op, o.getX(), 2, "input")))
          return failure();
        // How many trailing axes are kept is the result type's rank.
        auto x = shapeOf(o.getX());
        auto res = resultType(0);
        if (res.getRank() < 1 || res.getRank() >= static_cast<int64_t>(x.size()))
          return op->emitOpError("result rank ")
                 << res.getRank() << " must lie in [1, " << x.size() - 1
                 << "]: the sum runs over at least one leading axis and keeps at least one";
        if (res.getShape() != x.take_back(res.getRank()))
          return op->emitOpError("result shape ")
                 << shapeString(res.getShape()) << " is not the trailing axes of the input "
                 << shapeString(x);
        out.push_back(plain(res.getShape(), accumulatorType(o.getX(), o.getResult())));
        return success();
      })
      .Case([&](CountCorrectOp o) -> LogicalResult {
        if (failed(checkLogitsLabels(op, o.getLogits(), o.getLabels())))
          return failure();
        out.push_back(plain({}, f32));
        return success();
      })
      .Case([&](EmbeddingOp o) -> LogicalResult {
        if (failed(expectFloat(op, o.getTable(), "table")) ||
            failed(expectRank(op, o.getTable(), 2, "table")) ||
            failed(expectI32(op, o.getIds(), "ids")))
          return failure();
        llvm::SmallVector<int64_t> shape(shapeOf(o.getIds()));
        shape.push_back(shapeOf(o.getTable())[1]);
        out.push_back(plain(shape, tensorOf(o.getTable()).getElementType()));
        return success();
      })
      .Case([&](EmbeddingGradOp o) -> LogicalResult {
        if (failed(expectFloat(op, o.getDy(), "dy")) || failed(expectI32(op, o.getIds(), "ids")))
          return failure();
        // The vocabulary size comes from the result type (the table's).
        auto res = resultType(0);
        if (res.getRank() != 2 || !res.getElementType().isF32())
          return op->emitOpError("result must be an f32 table [V, C], got ") << withoutSbp(res);
        llvm::SmallVector<int64_t> expect(shapeOf(o.getIds()));
        expect.push_back(res.getDimSize(1));
        if (shapeOf(o.getDy()) != llvm::ArrayRef<int64_t>(expect))
          return op->emitOpError("dy shape ")
                 << shapeString(shapeOf(o.getDy()))
                 << " is not ids' shape ++ [C] = " << shapeString(expect);
        out.push_back(withoutSbp(res));
        return success();
      })
      .Case([&](LayerNormOp o) -> LogicalResult {
        if (failed(expectFloat(op, o.getX(), "input")) ||
            failed(expectMinRank(op, o.getX(), 1, "input")) ||
            failed(checkChannelVector(op, o.getX(), o.getGamma(), "gamma")) ||
            failed(checkChannelVector(op, o.getX(), o.getBeta(), "beta")))
          return failure();
        if (!(o.getEps().convertToFloat() > 0.0f))
          return op->emitOpError("eps must be positive, got ") << o.getEps().convertToFloat();
        out.push_back(withoutSbp(tensorOf(o.getX())));
        return success();
      })
      .Case([&](LayerNormGradOp o) -> LogicalResult {
        if (failed(expectMinRank(op, o.getX(), 1, "x")) ||
            failed(sameAs(o.getDy(), o.getX(), "dy and x")) ||
            failed(expectFloat(op, o.getX(), "x")) ||
            failed(checkChannelVector(op, o.getX(), o.getGamma(), "gamma")))
          return failure();
        if (!(o.getEps().convertToFloat() > 0.0f))
          return op->emitOpError("eps must be positive, got ") << o.getEps().convertToFloat();
        out.push_back(withoutSbp(tensorOf(o.getX())));
        out.push_back(withoutSbp(tensorOf(o.getGamma())));
        out.push_back(withoutSbp(tensorOf(o.getGamma())));
        return success();
      })
      .Case([&](GeluOp o) { return likeFloat(o.getX(), "input"); })
      .Case([&](GeluGradOp o) { return gradLikeFloat(o.getDy(), o.getX(), "dy and x"); })
      .Case([&](SoftmaxOp o) -> LogicalResult {
        if (failed(expectMinRank(op, o.getX(), 1, "input")))
          return failure();
        return likeFloat(o.getX(), "input");
      })
      .Case([&](SoftmaxGradOp o) -> LogicalResult {
        if (failed(expectMinRank(op, o.getY(), 1, "y")))
          return failure();
        return gradLikeFloat(o.getDy(), o.getY(), "dy and y");
      })
      .Case([&](CausalAttentionOp o) -> LogicalResult {
        if (failed(checkAttention(o.getQ(), o.getK(), o.getV(), Value(), o.getHeads())))
          return failure();
        out.push_back(withoutSbp(tensorOf(o.getQ())));
        return success();
      })
      .Case([&](CausalAttentionGradOp o) -> LogicalResult {
        if (failed(checkAttention(o.getQ(), o.getK(), o.getV(), o.getDy(), o.getHeads())))
          return failure();
        for (int i = 0; i < 3; ++i)
          out.push_back(withoutSbp(tensorOf(o.getQ())));
        return success();
      })
      .Case([&](DropoutOp o) -> LogicalResult {
        float p = o.getP().convertToFloat();
        if (!(p >= 0.0f && p < 1.0f))
          return op->emitOpError("probability p must lie in [0, 1), got ") << p;
        return likeFloat(o.getX(), "input");
      })
      .Case([&](ReshapeOp o) -> LogicalResult {
        auto res = resultType(0);
        if (res.getElementType() != tensorOf(o.getX()).getElementType() ||
            res.getNumElements() != tensorOf(o.getX()).getNumElements())
          return op->emitOpError("cannot reshape ")
                 << withoutSbp(tensorOf(o.getX())) << " into " << withoutSbp(res)
                 << ": element count or type differs";
        out.push_back(withoutSbp(res));
        return success();
      })
      .Case([&](TransposeOp o) -> LogicalResult {
        auto x = shapeOf(o.getX());
        llvm::ArrayRef<int64_t> perm = o.getPerm();
        llvm::SmallVector<bool> seen(x.size(), false);
        bool valid = perm.size() == x.size();
        for (int64_t p : perm) {
          valid = valid && p >= 0 && p < static_cast<int64_t>(x.size()) && !seen[p];
          if (valid)
            seen[p] = true;
        }
        if (!valid)
          return op->emitOpError("perm ") << shapeString(perm) << " is not a permutation of the "
                                          << x.size() << " axes of the input";
        llvm::SmallVector<int64_t> shape;
        for (int64_t p : perm)
          shape.push_back(x[p]);
        out.push_back(plain(shape, tensorOf(o.getX()).getElementType()));
        return success();
      })
      .Case([&](NarrowOp o) -> LogicalResult {
        // The narrowed length is the result type's.
        return narrowShape(o.getX(), "the input", o.getAxis(), o.getBegin(), false);
      })
      .Case([&](NarrowGradOp o) -> LogicalResult {
        // The whole (forward input) shape is the result type's.
        return narrowShape(o.getDy(), "dy", o.getAxis(), o.getBegin(), true);
      })
      .Case([&](ConcatOp o) -> LogicalResult {
        if (o.getInputs().empty())
          return op->emitOpError("needs at least one operand");
        Value first = o.getInputs().front();
        int64_t axis = o.getAxis(), rank = tensorOf(first).getRank();
        if (failed(checkAxis(op, axis, rank)))
          return failure();
        llvm::SmallVector<int64_t> shape(shapeOf(first));
        shape[axis] = 0;
        for (auto [i, v] : llvm::enumerate(o.getInputs())) {
          llvm::SmallVector<int64_t> s(shapeOf(v));
          if (static_cast<int64_t>(s.size()) != rank ||
              tensorOf(v).getElementType() != tensorOf(first).getElementType())
            return op->emitOpError("operand #")
                   << i << " " << withoutSbp(tensorOf(v))
                   << " differs in rank or element type from " << withoutSbp(tensorOf(first));
          for (int64_t d = 0; d < rank; ++d)
            if (d != axis && s[d] != shapeOf(first)[d])
              return op->emitOpError("operand #")
                     << i << " " << withoutSbp(tensorOf(v)) << " differs from "
                     << withoutSbp(tensorOf(first)) << " on axis " << d << " (concat axis is "
                     << axis << ")";
          shape[axis] += s[axis];
        }
        out.push_back(plain(shape, tensorOf(first).getElementType()));
        return success();
      })
      .Case([&](CastOp o) -> LogicalResult {
        // The target element type is the result type's.
        auto res = resultType(0);
        if (failed(expectFloat(op, o.getX(), "input")) ||
            failed(expectFloat(op, o.getResult(), "result")))
          return failure();
        out.push_back(plain(shapeOf(o.getX()), res.getElementType()));
        return success();
      })
      .Case([&](SquareSumOp o) { return reduceF32ToScalar(o.getX()); })
      .Case([&](ClipScaleOp o) -> LogicalResult {
        if (failed(expectF32(op, o.getSumsq(), "sumsq")) ||
            failed(expectRank(op, o.getSumsq(), 0, "sumsq")))
          return failure();
        if (!(o.getMaxNorm().convertToFloat() > 0.0f))
          return op->emitOpError("max_norm must be positive, got ")
                 << o.getMaxNorm().convertToFloat();
        out.push_back(plain({}, f32));
        return success();
      })
      .Default([&](Operation *) -> LogicalResult {
        return op->emitOpError("is not an sbp compute op: no shape inference");
      });
}
