// Row lookups: the embedding and its gradient (a scatter-add into the f32
// table), and rows of an activation gathered by index and scattered back
// (message passing over a graph's edges). Per op: shape rule, SBP
// signatures, gradient, flops.
#include "ops/Rules.h"

using namespace mlir;
using namespace mlir::sbp;

//===-- embedding: table [V, C], ids [...] -> [..., C] ------------------------===//

LogicalResult EmbeddingOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"table", "ids"});
  if (failed(types) || failed(expectRank(*this, getTable(), 2, "table")))
    return failure();
  llvm::SmallVector<int64_t> shape(shapeOf(getIds()));
  shape.push_back(shapeOf(getTable())[1]);
  return setResult(results, shape, *types);
}

llvm::SmallVector<SbpSignature> EmbeddingOp::getSbpSignatures(unsigned) {
  int k = static_cast<int>(tensorOf(getIds()).getRank());
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

LogicalResult EmbeddingOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                          llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(
      b.create<EmbeddingGradOp>(getLoc(), withoutSbp(getTable().getType()), dy[0], getIds())
          .getResult());
  grads.push_back(Value()); // ids
  return success();
}

double EmbeddingOp::getFlops() { return elements(getResult()); }

//===-- embedding_grad: the vocabulary size comes from the result type ---------===//

LogicalResult EmbeddingGradOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkElementTypes(*this, {"dy", "ids"});
  if (failed(types))
    return failure();
  auto res = tensorOf(getResult());
  if (res.getRank() != 2)
    return emitOpError("result must be an f32 table [V, C], got ") << withoutSbp(res);
  llvm::SmallVector<int64_t> expect(shapeOf(getIds()));
  expect.push_back(res.getDimSize(1));
  if (shapeOf(getDy()) != llvm::ArrayRef<int64_t>(expect))
    return emitOpError("dy shape ") << shapeString(shapeOf(getDy()))
                                    << " is not ids' shape ++ [C] = " << shapeString(expect);
  return setResult(results, res.getShape(), *types);
}

llvm::SmallVector<SbpSignature> EmbeddingGradOp::getSbpSignatures(unsigned) {
  int k = static_cast<int>(tensorOf(getIds()).getRank());
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

double EmbeddingGradOp::getFlops() { return elements(getDy()); }

// The operands of gather_rows and scatter_rows: `rows` [N or E, C] named
// `name`, and idx [E]; their element types as checkElementTypes gives them.
static FailureOr<llvm::SmallVector<Type, 1>> checkRowsAndIndex(Operation *op, Value rows,
                                                               llvm::StringRef name, Value idx) {
  auto types = checkElementTypes(op, {name, "idx"});
  if (failed(types) || failed(expectRank(op, rows, 2, name)) ||
      failed(expectRank(op, idx, 1, "idx")))
    return failure();
  return types;
}

// gather_rows and scatter_rows are each other's gradient: a `Grad` of dy
// and idx, typed like the input `rows`; idx has none.
template <class Grad>
static LogicalResult rowsGradient(OpBuilder &b, Location loc, Value rows, Value dy, Value idx,
                                  llvm::SmallVectorImpl<Value> &grads) {
  grads.push_back(b.create<Grad>(loc, withoutSbp(rows.getType()), dy, idx).getResult());
  grads.push_back(Value()); // idx
  return success();
}

//===-- gather_rows: x [N, C], idx [E] -> [E, C] --------------------------------===//

LogicalResult GatherRowsOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkRowsAndIndex(*this, getX(), "x", getIdx());
  if (failed(types))
    return failure();
  return setResult(results, {shapeOf(getIdx())[0], shapeOf(getX())[1]}, *types);
}

// Split the edges (idx) or the channels; linear in x.
llvm::SmallVector<SbpSignature> GatherRowsOp::getSbpSignatures(unsigned) {
  return {sig({B, S(0)}, {S(0)}), sig({S(1), B}, {S(1)}), sig({B, B}, {B}), sig({P, B}, {P})};
}

LogicalResult GatherRowsOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                           llvm::SmallVectorImpl<Value> &grads) {
  return rowsGradient<ScatterRowsOp>(b, getLoc(), getX(), dy[0], getIdx(), grads);
}

double GatherRowsOp::getFlops() { return elements(getResult()); }

//===-- scatter_rows: y [E, C], idx [E] -> [N, C], N from the result type ------===//

LogicalResult ScatterRowsOp::inferResultTypes(llvm::SmallVectorImpl<RankedTensorType> &results) {
  auto types = checkRowsAndIndex(*this, getY(), "y", getIdx());
  if (failed(types))
    return failure();
  auto res = tensorOf(getResult());
  if (res.getRank() != 2 || res.getDimSize(1) != shapeOf(getY())[1])
    return emitOpError("result must be [N, ") << shapeOf(getY())[1] << "], got " << withoutSbp(res);
  if (shapeOf(getIdx())[0] != shapeOf(getY())[0])
    return emitOpError("idx holds ")
           << shapeOf(getIdx())[0] << " rows for the " << shapeOf(getY())[0] << " rows of y";
  return setResult(results, res.getShape(), *types);
}

// Edges split: every rank sums its edges' rows, a partial sum of the result.
llvm::SmallVector<SbpSignature> ScatterRowsOp::getSbpSignatures(unsigned) {
  return {sig({S(0), S(0)}, {P}), sig({S(1), B}, {S(1)}), sig({B, B}, {B}), sig({P, B}, {P})};
}

LogicalResult ScatterRowsOp::buildGradients(OpBuilder &b, llvm::ArrayRef<Value> dy,
                                            llvm::SmallVectorImpl<Value> &grads) {
  return rowsGradient<GatherRowsOp>(b, getLoc(), getY(), dy[0], getIdx(), grads);
}

double ScatterRowsOp::getFlops() { return elements(getY()); }
