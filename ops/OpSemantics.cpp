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

  // ---- matmul
  static llvm::SmallVector<SbpSignature> signatures(MatmulOp op, unsigned) {
    // Physical axes of the logical roles of op(a) = [M, K] and op(b) = [K, N].
    int aM = op.getTransposeA() ? 1 : 0, aK = 1 - aM;
    int bK = op.getTransposeB() ? 1 : 0, bN = 1 - bK;
    return {sig({S(aM), B}, {S(0)}), sig({B, S(bN)}, {S(1)}), sig({S(aK), S(bK)}, {P}),
            sig({B, B}, {B}),        sig({P, B}, {P}),        sig({B, P}, {P})};
  }
  static LogicalResult gradients(MatmulOp op, OpBuilder &b, llvm::ArrayRef<Value> dC,
                                 llvm::SmallVectorImpl<Value> &grads) {
    Location loc = op.getLoc();
    Value A = op.getA(), Bm = op.getB(), dc = dC[0];
    RankedTensorType ta = withoutSbp(A.getType()), tb = withoutSbp(Bm.getType());
    bool tA = op.getTransposeA(), tB = op.getTransposeB();
    auto mm = [&](RankedTensorType t, Value x, Value y, bool tx, bool ty) -> Value {
      return b.create<MatmulOp>(loc, t, x, y, tx, ty).getResult();
    };
    // C = op(A) op(B); dA and dB follow from the four transpose cases.
    if (!tA && !tB) {
      grads.push_back(mm(ta, dc, Bm, false, true));
      grads.push_back(mm(tb, A, dc, true, false));
    } else if (!tA && tB) {
      grads.push_back(mm(ta, dc, Bm, false, false));
      grads.push_back(mm(tb, dc, A, true, false));
    } else if (tA && !tB) {
      grads.push_back(mm(ta, Bm, dc, false, true));
      grads.push_back(mm(tb, A, dc, false, false));
    } else {
      grads.push_back(mm(ta, Bm, dc, true, true));
      grads.push_back(mm(tb, dc, A, true, true));
    }
    return success();
  }
  static double flops(MatmulOp op) {
    auto a = tensorOf(op.getA()).getShape();
    return 2.0 * static_cast<double>(a[0]) * static_cast<double>(a[1]) *
           static_cast<double>(tensorOf(op.getResult()).getShape()[1]);
  }

  // ---- bias_add
  static llvm::SmallVector<SbpSignature> signatures(BiasAddOp, unsigned) {
    return {sig({S(0), B}, {S(0)}), sig({S(1), S(0)}, {S(1)}), sig({B, B}, {B})};
  }
  static LogicalResult gradients(BiasAddOp op, OpBuilder &b, llvm::ArrayRef<Value> dy,
                                 llvm::SmallVectorImpl<Value> &grads) {
    grads.push_back(dy[0]);
    grads.push_back(
        b.create<ReduceRowsOp>(op.getLoc(), withoutSbp(op.getBias().getType()), dy[0]).getResult());
    return success();
  }
  static double flops(BiasAddOp op) { return elements(op.getResult()); }

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
    auto out = elementwise(tensorOf(op.getResult()).getRank(), 2, /*linear=*/false);
    out.push_back(sig({P, B}, {P}));
    return out;
  }
  static double flops(ReluGradOp op) { return elements(op.getResult()); }

  // ---- softmax_xent
  static llvm::SmallVector<SbpSignature> signatures(SoftmaxXentOp, unsigned) {
    return {sig({S(0), S(0)}, {S(0)}), sig({B, B}, {B})};
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

  static llvm::SmallVector<SbpSignature> signatures(SoftmaxXentGradOp, unsigned) {
    return {sig({S(0), S(0), S(0)}, {S(0)}), sig({B, B, B}, {B})};
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

  // ---- reduce_rows
  static llvm::SmallVector<SbpSignature> signatures(ReduceRowsOp, unsigned) {
    return {sig({S(0)}, {P}), sig({S(1)}, {S(0)}), sig({B}, {B}), sig({P}, {P})};
  }
  static double flops(ReduceRowsOp op) { return elements(op.getX()); }

  // ---- count_correct
  static llvm::SmallVector<SbpSignature> signatures(CountCorrectOp, unsigned) {
    return {sig({S(0), S(0)}, {P}), sig({B, B}, {B})};
  }
  static double flops(CountCorrectOp op) { return elements(op.getLogits()); }

  // ---- training
  static LogicalResult types(MetricOp, llvm::SmallVectorImpl<RankedTensorType> &) {
    return success();
  }
  static llvm::SmallVector<SbpSignature> signatures(MetricOp, unsigned) {
    return {sig({B}, {}), sig({P}, {})};
  }

  static LogicalResult types(SgdOp, llvm::SmallVectorImpl<RankedTensorType> &) { return success(); }
  static llvm::SmallVector<SbpSignature> signatures(SgdOp op, unsigned dim) {
    // The gradient must be laid out exactly like the variable it updates.
    auto var = SymbolTable::lookupNearestSymbolFrom<VariableOp>(op, op.getVariableAttr());
    if (!var)
      return {};
    if (auto d = sbpAt(var.getType(), dim))
      return {sig({*d}, {})};
    return {};
  }
  static double flops(SgdOp op) { return 4.0 * elements(op.getGrad()); }
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
  attachAll<InputOp, ParameterOp, FillOp, MatmulOp, BiasAddOp, AddOp, ReluOp, ReluGradOp,
            SoftmaxXentOp, SoftmaxXentGradOp, MeanOp, MeanGradOp, ReduceRowsOp, CountCorrectOp,
            MetricOp, SgdOp>(ctx);
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
