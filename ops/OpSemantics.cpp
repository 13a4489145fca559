// SbpOpInterface models: for every sbp op its result types, its candidate
// 1-D SBP signatures, its gradient rule (used by sbp-autodiff) and its flops.
#include "ops/OpSemantics.h"

#include "mlir/IR/DialectRegistry.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {

RankedTensorType tensorOf(Value v) { return llvm::cast<RankedTensorType>(v.getType()); }
double elements(Value v) { return static_cast<double>(tensorOf(v).getNumElements()); }

SbpSignature sig(std::initializer_list<SbpDim> ins, std::initializer_list<SbpDim> outs) {
  SbpSignature s;
  s.operands.assign(ins);
  s.results.assign(outs);
  return s;
}
const SbpDim B = broadcastDim();
const SbpDim P = partialSumDim();
SbpDim S(int axis) { return splitDim(axis); }

// The SBP of `v`'s type at hierarchy dimension `dim`, if it has one.
std::optional<SbpDim> sbpAt(Type t, unsigned dim) {
  auto dims = getSbpDims(getSbp(t));
  if (dim < dims.size())
    return dims[dim];
  return std::nullopt;
}

//===-- default rules --------------------------------------------------------===//

LogicalResult inferTypes(Operation *op, llvm::SmallVectorImpl<RankedTensorType> &r) {
  return inferComputeResultTypes(op, r);
}
LogicalResult sourceTypes(Operation *op, llvm::SmallVectorImpl<RankedTensorType> &r) {
  for (Value v : op->getResults())
    r.push_back(withoutSbp(v.getType()));
  return success();
}
LogicalResult noGradient(Operation *op) {
  return op->emitOpError("has no gradient rule (it cannot lie between a parameter and the loss)");
}

// Elementwise over n operands: the same SBP everywhere.
llvm::SmallVector<SbpSignature> elementwise(int64_t rank, unsigned nOperands, bool linear) {
  llvm::SmallVector<SbpSignature> out;
  auto uniform = [&](SbpDim d) {
    SbpSignature s;
    s.operands.assign(nOperands, d);
    s.results.push_back(d);
    out.push_back(s);
  };
  for (int i = 0; i < rank; ++i)
    uniform(S(i));
  uniform(B);
  if (linear)
    uniform(P);
  return out;
}

//===-- per-op rules ---------------------------------------------------------===//

struct Rules {
  // ---- sources
  static LogicalResult types(InputOp op, llvm::SmallVectorImpl<RankedTensorType> &r) {
    return sourceTypes(op, r);
  }
  static llvm::SmallVector<SbpSignature> signatures(InputOp op, unsigned dim) {
    if (auto d = sbpAt(op.getType(), dim))
      return {sig({}, {*d})};
    // An unannotated input: broadcast unless the cost model prefers a split.
    llvm::SmallVector<SbpSignature> out{sig({}, {B})};
    if (tensorOf(op.getResult()).getRank() > 0)
      out.push_back(sig({}, {S(0)}));
    return out;
  }

  static LogicalResult types(ParameterOp op, llvm::SmallVectorImpl<RankedTensorType> &r) {
    return sourceTypes(op, r);
  }
  static llvm::SmallVector<SbpSignature> signatures(ParameterOp op, unsigned dim) {
    if (auto d = sbpAt(op.getType(), dim))
      return {sig({}, {*d})};
    return {sig({}, {B})};
  }

  static LogicalResult types(FillOp op, llvm::SmallVectorImpl<RankedTensorType> &r) {
    return sourceTypes(op, r);
  }
  static llvm::SmallVector<SbpSignature> signatures(FillOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out{sig({}, {B})};
    for (int i = 0; i < tensorOf(op.getResult()).getRank(); ++i)
      out.push_back(sig({}, {S(i)}));
    return out;
  }
  static double flops(FillOp op) { return elements(op.getResult()); }

  // ---- matmul: operands viewed as [prod(lead), last]
  static llvm::SmallVector<SbpSignature> signatures(MatmulOp op, unsigned) {
    auto a = tensorOf(op.getA()).getShape(), bs = tensorOf(op.getB()).getShape();
    int ra = static_cast<int>(a.size()), rb = static_cast<int>(bs.size());
    bool tA = op.getTransposeA(), tB = op.getTransposeB();
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
  static LogicalResult gradients(MatmulOp op, OpBuilder &b, llvm::ArrayRef<Value> dC,
                                 llvm::SmallVectorImpl<Value> &grads) {
    Location loc = op.getLoc();
    Value A = op.getA(), Bm = op.getB(), dc = dC[0];
    RankedTensorType ta = withoutSbp(A.getType()), tb = withoutSbp(Bm.getType());
    bool tA = op.getTransposeA(), tB = op.getTransposeB();
    // The 2-D rules below read dC as [M, N]; with transpose_b and a rank > 2
    // b the N part has several axes: fold them into one first.
    auto cShape = tensorOf(op.getResult()).getShape();
    int64_t nAxes = tB ? tensorOf(Bm).getRank() - 1 : 1;
    if (nAxes != 1) {
      llvm::SmallVector<int64_t> folded(cShape.begin(), cShape.end() - nAxes);
      int64_t n = 1;
      for (int64_t d : cShape.take_back(nAxes))
        n *= d;
      folded.push_back(n);
      dc = b.create<ReshapeOp>(loc, RankedTensorType::get(folded, ta.getElementType()), dc)
               .getResult();
    }
    // op(x) op(y) with its own natural result shape, reshaped to the operand's.
    auto mm = [&](RankedTensorType t, Value x, Value y, bool tx, bool ty) -> FailureOr<Value> {
      auto natural = RankedTensorType::get(
          matmulResultShape(tensorOf(x).getShape(), tensorOf(y).getShape(), tx, ty),
          t.getElementType());
      Value r = b.create<MatmulOp>(loc, natural, x, y, tx, ty).getResult();
      if (natural.getShape() == t.getShape())
        return r;
      if (natural.getNumElements() != t.getNumElements()) {
        op.emitOpError("gradient rule produced ") << natural << " for an operand of type " << t;
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
  static double flops(MatmulOp op) {
    auto a = tensorOf(op.getA()).getShape();
    double k = op.getTransposeA() ? elements(op.getA()) / static_cast<double>(a.back())
                                  : static_cast<double>(a.back());
    return 2.0 * elements(op.getResult()) * k;
  }

  // ---- bias_add: bias on the trailing axes of x
  static llvm::SmallVector<SbpSignature> signatures(BiasAddOp op, unsigned) {
    return biasSignatures(op.getX(), op.getBias(), 1);
  }
  static LogicalResult gradients(BiasAddOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(dy[0]);
    grads.push_back(
        b.create<ReduceRowsOp>(op.getLoc(), withoutSbp(op.getBias().getType()), dy[0]).getResult());
    return success();
  }
  static double flops(BiasAddOp op) { return elements(op.getResult()); }

  // ---- bias_gelu (sbp-fuse-bias-gelu, after autodiff: no gradient rule):
  // bias_add's signatures, both results laid out alike.
  static llvm::SmallVector<SbpSignature> signatures(BiasGeluOp op, unsigned) {
    return biasSignatures(op.getX(), op.getBias(), 2);
  }
  static double flops(BiasGeluOp op) { return 11.0 * elements(op.getX()); }

  // ---- add
  static llvm::SmallVector<SbpSignature> signatures(AddOp op, unsigned) {
    return elementwise(tensorOf(op.getResult()).getRank(), 2, /*linear=*/true);
  }
  static LogicalResult gradients(AddOp, OpBuilder &, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(dy[0]);
    grads.push_back(dy[0]);
    return success();
  }
  static double flops(AddOp op) { return elements(op.getResult()); }

  // ---- relu
  static llvm::SmallVector<SbpSignature> signatures(ReluOp op, unsigned) {
    return elementwise(tensorOf(op.getResult()).getRank(), 1, /*linear=*/false);
  }
  static LogicalResult gradients(ReluOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(
        b.create<ReluGradOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0], op.getResult())
            .getResult());
    return success();
  }
  static double flops(ReluOp op) { return elements(op.getResult()); }

  // ---- relu_grad: linear in dy, so a partial dy with a broadcast y stays partial.
  static llvm::SmallVector<SbpSignature> signatures(ReluGradOp op, unsigned) {
    return linearInFirst(elementwise(tensorOf(op.getResult()).getRank(), 2, /*linear=*/false));
  }
  static double flops(ReluGradOp op) { return elements(op.getResult()); }

  // ---- softmax_xent: one loss per row (the logits' leading axes)
  static llvm::SmallVector<SbpSignature> signatures(SoftmaxXentOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < leadAxes(op.getLogits()); ++i)
      out.push_back(sig({S(i), S(i)}, {S(i)}));
    out.push_back(sig({B, B}, {B}));
    return out;
  }
  static LogicalResult gradients(SoftmaxXentOp op, OpBuilder &b, llvm::ArrayRef<Value> dl,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(b.create<SoftmaxXentGradOp>(op.getLoc(), withoutSbp(op.getLogits().getType()),
                                                op.getLogits(), op.getLabels(), dl[0])
                        .getResult());
    grads.push_back(Value()); // labels
    return success();
  }
  static double flops(SoftmaxXentOp op) { return 5.0 * elements(op.getLogits()); }

  static llvm::SmallVector<SbpSignature> signatures(SoftmaxXentGradOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < leadAxes(op.getLogits()); ++i)
      out.push_back(sig({S(i), S(i), S(i)}, {S(i)}));
    out.push_back(sig({B, B, B}, {B}));
    return out;
  }
  static double flops(SoftmaxXentGradOp op) { return 5.0 * elements(op.getLogits()); }

  // ---- mean
  static llvm::SmallVector<SbpSignature> signatures(MeanOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < tensorOf(op.getX()).getRank(); ++i)
      out.push_back(sig({S(i)}, {P}));
    out.push_back(sig({B}, {B}));
    out.push_back(sig({P}, {P}));
    return out;
  }
  static LogicalResult gradients(MeanOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(
        b.create<MeanGradOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0]).getResult());
    return success();
  }
  static double flops(MeanOp op) { return elements(op.getX()); }

  static llvm::SmallVector<SbpSignature> signatures(MeanGradOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < tensorOf(op.getResult()).getRank(); ++i)
      out.push_back(sig({B}, {S(i)}));
    out.push_back(sig({B}, {B}));
    out.push_back(sig({P}, {P}));
    return out;
  }
  static double flops(MeanGradOp op) { return elements(op.getResult()); }

  // ---- reduce_rows: sums the leading axes away
  static llvm::SmallVector<SbpSignature> signatures(ReduceRowsOp op, unsigned) {
    int kept = static_cast<int>(tensorOf(op.getResult()).getRank());
    int summed = static_cast<int>(tensorOf(op.getX()).getRank()) - kept;
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < summed; ++i)
      out.push_back(sig({S(i)}, {P}));
    for (int j = 0; j < kept; ++j)
      out.push_back(sig({S(summed + j)}, {S(j)}));
    out.push_back(sig({B}, {B}));
    out.push_back(sig({P}, {P}));
    return out;
  }
  static double flops(ReduceRowsOp op) { return elements(op.getX()); }

  // ---- count_correct
  static llvm::SmallVector<SbpSignature> signatures(CountCorrectOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < leadAxes(op.getLogits()); ++i)
      out.push_back(sig({S(i), S(i)}, {P}));
    out.push_back(sig({B, B}, {B}));
    return out;
  }
  static double flops(CountCorrectOp op) { return elements(op.getLogits()); }

  // ---- embedding: table [V, C], ids [...] -> [..., C]
  static llvm::SmallVector<SbpSignature> signatures(EmbeddingOp op, unsigned) {
    int k = static_cast<int>(tensorOf(op.getIds()).getRank());
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < k; ++i)
      out.push_back(sig({B, S(i)}, {S(i)}));
    out.push_back(sig({S(1), B}, {S(k)}));
    // Vocabulary-parallel: a rank holds some rows and contributes zeros for
    // the ids outside them.
    out.push_back(sig({S(0), B}, {P}));
    out.push_back(sig({B, B}, {B}));
    return out;
  }
  static LogicalResult gradients(EmbeddingOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(b.create<EmbeddingGradOp>(op.getLoc(), withoutSbp(op.getTable().getType()),
                                              dy[0], op.getIds())
                        .getResult());
    grads.push_back(Value()); // ids
    return success();
  }
  static double flops(EmbeddingOp op) { return elements(op.getResult()); }

  static llvm::SmallVector<SbpSignature> signatures(EmbeddingGradOp op, unsigned) {
    int k = static_cast<int>(tensorOf(op.getIds()).getRank());
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < k; ++i)
      out.push_back(sig({S(i), S(i)}, {P}));
    out.push_back(sig({S(k), B}, {S(1)}));
    // Every rank scatters all rows but keeps only its own rows of the table.
    out.push_back(sig({B, B}, {S(0)}));
    out.push_back(sig({B, B}, {B}));
    out.push_back(sig({P, B}, {P}));
    return out;
  }
  static double flops(EmbeddingGradOp op) { return elements(op.getDy()); }

  // ---- layer_norm over the last axis
  static llvm::SmallVector<SbpSignature> signatures(LayerNormOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < leadAxes(op.getX()); ++i)
      out.push_back(sig({S(i), B, B}, {S(i)}));
    out.push_back(sig({B, B, B}, {B}));
    return out;
  }
  static LogicalResult gradients(LayerNormOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    RankedTensorType gt = withoutSbp(op.getGamma().getType());
    auto g = b.create<LayerNormGradOp>(op.getLoc(), withoutSbp(op.getX().getType()), gt, gt, dy[0],
                                       op.getX(), op.getGamma(), op.getEpsAttr());
    grads.append({g.getDx(), g.getDgamma(), g.getDbeta()});
    return success();
  }
  static double flops(LayerNormOp op) { return 8.0 * elements(op.getX()); }

  static llvm::SmallVector<SbpSignature> signatures(LayerNormGradOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < leadAxes(op.getX()); ++i)
      out.push_back(sig({S(i), S(i), B}, {S(i), P, P}));
    out.push_back(sig({B, B, B}, {B, B, B}));
    out.push_back(sig({P, B, B}, {P, P, P}));
    return out;
  }
  static double flops(LayerNormGradOp op) { return 12.0 * elements(op.getX()); }

  // ---- gelu
  static llvm::SmallVector<SbpSignature> signatures(GeluOp op, unsigned) {
    return elementwise(tensorOf(op.getResult()).getRank(), 1, /*linear=*/false);
  }
  static LogicalResult gradients(GeluOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(
        b.create<GeluGradOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0], op.getX())
            .getResult());
    return success();
  }
  static double flops(GeluOp op) { return 10.0 * elements(op.getResult()); }

  static llvm::SmallVector<SbpSignature> signatures(GeluGradOp op, unsigned) {
    return linearInFirst(elementwise(tensorOf(op.getResult()).getRank(), 2, /*linear=*/false));
  }
  static double flops(GeluGradOp op) { return 12.0 * elements(op.getResult()); }

  // ---- softmax over the last axis
  static llvm::SmallVector<SbpSignature> signatures(SoftmaxOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < leadAxes(op.getX()); ++i)
      out.push_back(sig({S(i)}, {S(i)}));
    out.push_back(sig({B}, {B}));
    return out;
  }
  static LogicalResult gradients(SoftmaxOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(
        b.create<SoftmaxGradOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0], op.getResult())
            .getResult());
    return success();
  }
  static double flops(SoftmaxOp op) { return 5.0 * elements(op.getX()); }

  static llvm::SmallVector<SbpSignature> signatures(SoftmaxGradOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < leadAxes(op.getY()); ++i)
      out.push_back(sig({S(i), S(i)}, {S(i)}));
    out.push_back(sig({B, B}, {B}));
    out.push_back(sig({P, B}, {P}));
    return out;
  }
  static double flops(SoftmaxGradOp op) { return 4.0 * elements(op.getY()); }

  // ---- causal_attention: batch-parallel, or head-parallel on the channels
  static llvm::SmallVector<SbpSignature> signatures(CausalAttentionOp op, unsigned dim) {
    llvm::SmallVector<SbpSignature> out{sig({S(0), S(0), S(0)}, {S(0)})};
    if (headsSplit(op, op.getHeads(), dim))
      out.push_back(sig({S(2), S(2), S(2)}, {S(2)}));
    out.push_back(sig({B, B, B}, {B}));
    return out;
  }
  static LogicalResult gradients(CausalAttentionOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    RankedTensorType t = withoutSbp(op.getQ().getType());
    auto g = b.create<CausalAttentionGradOp>(op.getLoc(), t, t, t, dy[0], op.getQ(), op.getK(),
                                             op.getV(), op.getHeadsAttr());
    grads.append({g.getDq(), g.getDk(), g.getDv()});
    return success();
  }
  static double flops(CausalAttentionOp op) { return attentionFlops(op.getQ()); }

  static llvm::SmallVector<SbpSignature> signatures(CausalAttentionGradOp op, unsigned dim) {
    llvm::SmallVector<SbpSignature> out{sig({S(0), S(0), S(0), S(0)}, {S(0), S(0), S(0)})};
    if (headsSplit(op, op.getHeads(), dim))
      out.push_back(sig({S(2), S(2), S(2), S(2)}, {S(2), S(2), S(2)}));
    out.push_back(sig({B, B, B, B}, {B, B, B}));
    out.push_back(sig({P, B, B, B}, {P, P, P}));
    return out;
  }
  // Recomputing the weights and the four products of the backward.
  static double flops(CausalAttentionGradOp op) { return 3.0 * attentionFlops(op.getQ()); }

  // ---- dropout: linear, and its mask depends on global indices only
  static llvm::SmallVector<SbpSignature> signatures(DropoutOp op, unsigned) {
    return elementwise(tensorOf(op.getResult()).getRank(), 1, /*linear=*/true);
  }
  static LogicalResult gradients(DropoutOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(b.create<DropoutOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0],
                                        op.getPAttr(), op.getSeedAttr())
                        .getResult());
    return success();
  }
  static double flops(DropoutOp op) { return 2.0 * elements(op.getResult()); }

  // ---- reshape
  static llvm::SmallVector<SbpSignature> signatures(ReshapeOp op, unsigned) {
    auto xs = tensorOf(op.getX()).getShape(), ys = tensorOf(op.getResult()).getShape();
    llvm::SmallVector<SbpSignature> out;
    // A split axis survives when it is an axis of both shapes with the same
    // elements before it: each rank's chunk is then the same elements.
    int64_t before = 1;
    for (size_t i = 0; i < xs.size(); ++i) {
      int64_t yBefore = 1;
      for (size_t j = 0; j < ys.size(); ++j) {
        if (yBefore == before && xs[i] == ys[j])
          out.push_back(sig({S(static_cast<int>(i))}, {S(static_cast<int>(j))}));
        yBefore *= ys[j];
      }
      before *= xs[i];
    }
    out.push_back(sig({B}, {B}));
    out.push_back(sig({P}, {P}));
    return out;
  }
  static LogicalResult gradients(ReshapeOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(
        b.create<ReshapeOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0]).getResult());
    return success();
  }

  // ---- transpose
  static llvm::SmallVector<SbpSignature> signatures(TransposeOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (auto [k, p] : llvm::enumerate(op.getPerm()))
      out.push_back(sig({S(static_cast<int>(p))}, {S(static_cast<int>(k))}));
    out.push_back(sig({B}, {B}));
    out.push_back(sig({P}, {P}));
    return out;
  }
  static LogicalResult gradients(TransposeOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    llvm::ArrayRef<int64_t> perm = op.getPerm();
    llvm::SmallVector<int64_t> inverse(perm.size());
    for (size_t k = 0; k < perm.size(); ++k)
      inverse[perm[k]] = static_cast<int64_t>(k);
    grads.push_back(b.create<TransposeOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0],
                                          b.getDenseI64ArrayAttr(inverse))
                        .getResult());
    return success();
  }
  static double flops(TransposeOp op) { return elements(op.getResult()); }

  // ---- narrow / narrow_grad: any split but the narrowed axis
  static llvm::SmallVector<SbpSignature> signatures(NarrowOp op, unsigned) {
    return alongAxis(tensorOf(op.getX()).getRank(), op.getAxis(), 1);
  }
  static LogicalResult gradients(NarrowOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(b.create<NarrowGradOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0],
                                           op.getAxisAttr(), op.getBeginAttr())
                        .getResult());
    return success();
  }
  static double flops(NarrowOp op) { return elements(op.getResult()); }

  static llvm::SmallVector<SbpSignature> signatures(NarrowGradOp op, unsigned) {
    return alongAxis(tensorOf(op.getDy()).getRank(), op.getAxis(), 1);
  }
  static double flops(NarrowGradOp op) { return elements(op.getResult()); }

  // ---- concat
  static llvm::SmallVector<SbpSignature> signatures(ConcatOp op, unsigned) {
    return alongAxis(tensorOf(op.getResult()).getRank(), op.getAxis(),
                     static_cast<unsigned>(op.getInputs().size()));
  }
  static LogicalResult gradients(ConcatOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    int64_t begin = 0, axis = op.getAxis();
    for (Value in : op.getInputs()) {
      grads.push_back(b.create<NarrowOp>(op.getLoc(), withoutSbp(in.getType()), dy[0],
                                         op.getAxisAttr(), b.getI64IntegerAttr(begin))
                          .getResult());
      begin += tensorOf(in).getDimSize(axis);
    }
    return success();
  }
  static double flops(ConcatOp op) { return elements(op.getResult()); }

  // ---- cast: elementwise. Widening to f32 is exact, so a partial sum stays
  // one (and is then reduced in f32); narrowing would round each rank's
  // addend, so a bf16 result is never partial.
  static llvm::SmallVector<SbpSignature> signatures(CastOp op, unsigned) {
    bool widening = tensorOf(op.getResult()).getElementType().isF32();
    return elementwise(tensorOf(op.getResult()).getRank(), 1, /*linear=*/widening);
  }
  static LogicalResult gradients(CastOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(
        b.create<CastOp>(op.getLoc(), withoutSbp(op.getX().getType()), dy[0]).getResult());
    return success();
  }
  static double flops(CastOp op) { return elements(op.getResult()); }

  // ---- gradient clipping. The square of a partial sum is not partial, so
  // square_sum takes no P input.
  static llvm::SmallVector<SbpSignature> signatures(SquareSumOp op, unsigned) {
    llvm::SmallVector<SbpSignature> out;
    for (int i = 0; i < tensorOf(op.getX()).getRank(); ++i)
      out.push_back(sig({S(i)}, {P}));
    out.push_back(sig({B}, {B}));
    return out;
  }
  static double flops(SquareSumOp op) { return 2.0 * elements(op.getX()); }

  static llvm::SmallVector<SbpSignature> signatures(ClipScaleOp, unsigned) {
    return {sig({B}, {B})};
  }
  static double flops(ClipScaleOp) { return 4.0; }

  // ---- training
  static LogicalResult types(MetricOp, llvm::SmallVectorImpl<RankedTensorType> &) {
    return success();
  }
  static llvm::SmallVector<SbpSignature> signatures(MetricOp, unsigned) {
    return {sig({B}, {}), sig({P}, {})};
  }

  // The caller reads a whole tensor.
  static LogicalResult types(OutputOp, llvm::SmallVectorImpl<RankedTensorType> &) {
    return success();
  }
  static llvm::SmallVector<SbpSignature> signatures(OutputOp, unsigned) { return {sig({B}, {})}; }

  static LogicalResult types(SgdOp, llvm::SmallVectorImpl<RankedTensorType> &) { return success(); }
  static llvm::SmallVector<SbpSignature> signatures(SgdOp op, unsigned dim) {
    return optimizerSignatures(op, op.getVariableAttr(), op.getScale(), dim);
  }
  static double flops(SgdOp op) { return 4.0 * elements(op.getGrad()); }

  static LogicalResult types(AdamWOp, llvm::SmallVectorImpl<RankedTensorType> &) {
    return success();
  }
  static llvm::SmallVector<SbpSignature> signatures(AdamWOp op, unsigned dim) {
    return optimizerSignatures(op, op.getVariableAttr(), op.getScale(), dim);
  }
  static double flops(AdamWOp op) { return 12.0 * elements(op.getGrad()); }

private:
  // x [lead..., trailing...] with a bias on the trailing axes: split x on a
  // leading axis (bias broadcast) or x and the bias alike on a trailing one;
  // `results` results laid out like x.
  static llvm::SmallVector<SbpSignature> biasSignatures(Value x, Value bias, unsigned results) {
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

  // Axes before the last (the rows of a last-axis op).
  static int leadAxes(Value v) { return static_cast<int>(tensorOf(v).getRank()) - 1; }

  // Adds (P, B, ...) -> P to an op linear in its first operand.
  static llvm::SmallVector<SbpSignature> linearInFirst(llvm::SmallVector<SbpSignature> sigs) {
    if (!sigs.empty()) {
      SbpSignature s;
      s.operands.assign(sigs.front().operands.size(), B);
      s.operands.front() = P;
      s.results.push_back(P);
      sigs.push_back(s);
    }
    return sigs;
  }

  // All operands alike: S(i) for every axis i but `axis`, B, P.
  static llvm::SmallVector<SbpSignature> alongAxis(int64_t rank, int64_t axis, unsigned n) {
    llvm::SmallVector<SbpSignature> out;
    auto uniform = [&](SbpDim d) {
      SbpSignature s;
      s.operands.assign(n, d);
      s.results.push_back(d);
      out.push_back(s);
    };
    for (int i = 0; i < rank; ++i)
      if (i != axis)
        uniform(S(i));
    uniform(B);
    uniform(P);
    return out;
  }

  // Head-parallel attention needs whole heads on every rank of hierarchy
  // dimension `dim`: its size must divide the head count.
  static bool headsSplit(Operation *op, int64_t heads, unsigned dim) {
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
  static double attentionFlops(Value q) {
    auto s = tensorOf(q).getShape();
    return 2.0 * static_cast<double>(s[0]) * static_cast<double>(s[1]) * static_cast<double>(s[1]) *
           static_cast<double>(s[2]);
  }

  // The gradient must be laid out exactly like the variable it updates; the
  // scale is a broadcast scalar.
  static llvm::SmallVector<SbpSignature>
  optimizerSignatures(Operation *op, FlatSymbolRefAttr variable, Value scale, unsigned dim) {
    auto var = SymbolTable::lookupNearestSymbolFrom<VariableOp>(op, variable);
    if (!var)
      return {};
    if (auto d = sbpAt(var.getType(), dim))
      return {scale ? sig({*d, B}, {}) : sig({*d}, {})};
    return {};
  }
};

// Fallbacks picked by overload resolution when an op has no specific rule.
template <typename OpT>
auto typesOf(OpT op, llvm::SmallVectorImpl<RankedTensorType> &r, int)
    -> decltype(Rules::types(op, r)) {
  return Rules::types(op, r);
}
template <typename OpT>
LogicalResult typesOf(OpT op, llvm::SmallVectorImpl<RankedTensorType> &r, long) {
  return inferTypes(op, r);
}
template <typename OpT>
auto gradientsOf(OpT op, OpBuilder &b, llvm::ArrayRef<Value> g, llvm::SmallVectorImpl<Value> &o,
                 int) -> decltype(Rules::gradients(op, b, g, o)) {
  return Rules::gradients(op, b, g, o);
}
template <typename OpT>
LogicalResult gradientsOf(OpT op, OpBuilder &, llvm::ArrayRef<Value>,
                          llvm::SmallVectorImpl<Value> &, long) {
  return noGradient(op);
}
template <typename OpT> auto flopsOf(OpT op, int) -> decltype(Rules::flops(op)) {
  return Rules::flops(op);
}
template <typename OpT> double flopsOf(OpT, long) { return 0.0; }

template <typename OpT> struct SbpModel : public SbpOpInterface::ExternalModel<SbpModel<OpT>, OpT> {
  LogicalResult inferResultTypes(Operation *op,
                                 llvm::SmallVectorImpl<RankedTensorType> &results) const {
    return typesOf(llvm::cast<OpT>(op), results, 0);
  }
  llvm::SmallVector<SbpSignature> getSbpSignatures(Operation *op, unsigned dim) const {
    return Rules::signatures(llvm::cast<OpT>(op), dim);
  }
  LogicalResult buildGradients(Operation *op, OpBuilder &builder, llvm::ArrayRef<Value> resultGrads,
                               llvm::SmallVectorImpl<Value> &operandGrads) const {
    return gradientsOf(llvm::cast<OpT>(op), builder, resultGrads, operandGrads, 0);
  }
  double getFlops(Operation *op) const { return flopsOf(llvm::cast<OpT>(op), 0); }
};

template <typename... OpTs> void attachAll(MLIRContext *ctx) {
  (OpTs::template attachInterface<SbpModel<OpTs>>(*ctx), ...);
}

void attachModels(MLIRContext *ctx) {
  attachAll<InputOp, ParameterOp, FillOp, MatmulOp, BiasAddOp, BiasGeluOp, AddOp, ReluOp,
            ReluGradOp, SoftmaxXentOp, SoftmaxXentGradOp, MeanOp, MeanGradOp, ReduceRowsOp,
            CountCorrectOp, EmbeddingOp, EmbeddingGradOp, LayerNormOp, LayerNormGradOp, GeluOp,
            GeluGradOp, SoftmaxOp, SoftmaxGradOp, CausalAttentionOp, CausalAttentionGradOp,
            DropoutOp, ReshapeOp, TransposeOp, NarrowOp, NarrowGradOp, ConcatOp, CastOp,
            SquareSumOp, ClipScaleOp, MetricOp, OutputOp, SgdOp, AdamWOp>(ctx);
}

} // namespace

void mlir::sbp::registerSbpOpSemantics(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *ctx, SbpDialect *) { attachModels(ctx); });
}

void mlir::sbp::ensureSbpOpSemantics(MLIRContext *ctx) {
  ctx->getOrLoadDialect<SbpDialect>();
  auto name = RegisteredOperationName::lookup(MatmulOp::getOperationName(), ctx);
  if (name && !name->hasInterface<SbpOpInterface>())
    attachModels(ctx);
}
