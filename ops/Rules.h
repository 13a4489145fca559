// What the op families (ops/<family>.cpp) share: the element-type rule of
// Ops.def applied to an op, shape checks that emit located errors, and
// builders of SBP signatures.
#pragma once

#include "ir/SbpDialect.h"

#include <string>

namespace mlir::sbp {

inline RankedTensorType tensorOf(Value v) { return llvm::cast<RankedTensorType>(v.getType()); }
inline llvm::ArrayRef<int64_t> shapeOf(Value v) { return tensorOf(v).getShape(); }
inline double elements(Value v) { return static_cast<double>(tensorOf(v).getNumElements()); }
std::string shapeString(llvm::ArrayRef<int64_t> shape);
int64_t product(llvm::ArrayRef<int64_t> shape);

//===-- shape rules ---------------------------------------------------------===//

// Checks the element types of `op`'s operands against its plan op's Ops.def
// letters (T: f32 or bf16, one type for every T; F: f32; I: i32; A: one type
// for every A; W and C: f32 or bf16), naming operand i `names[i]` (the last
// name repeats), and returns the element type each result takes by its own
// letter (a W or C result keeps its declared type where the letter allows it).
FailureOr<llvm::SmallVector<Type, 1>> checkElementTypes(Operation *op,
                                                        llvm::ArrayRef<llvm::StringRef> names);

LogicalResult expectRank(Operation *op, Value v, int64_t rank, llvm::StringRef what,
                         llvm::StringRef also = "");
LogicalResult expectMinRank(Operation *op, Value v, int64_t rank, llvm::StringRef what,
                            llvm::StringRef also = "");
// `x` and `y` alike in shape and element type; `also` extends the message.
LogicalResult expectSameType(Operation *op, Value x, Value y, llvm::StringRef names,
                             llvm::StringRef also = "");
LogicalResult expectAxis(Operation *op, int64_t axis, int64_t rank);
// An attribute that must be positive (eps, max_norm).
LogicalResult expectPositive(Operation *op, llvm::StringRef what, float value,
                             llvm::StringRef also = "");

// The one result of a shape rule: `shape` in the element type
// `elementTypes[0]`.
LogicalResult setResult(llvm::SmallVectorImpl<RankedTensorType> &results,
                        llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<Type> elementTypes);
// Every result shaped like `v`.
LogicalResult resultsLike(llvm::SmallVectorImpl<RankedTensorType> &results, Value v,
                          llvm::ArrayRef<Type> elementTypes);
// The shape rule of an op whose results are shaped like its operand `like`
// (elementwise), or are scalars (`like` null), once its operands' element
// types are checked.
LogicalResult inferLike(Operation *op, Value like, llvm::ArrayRef<llvm::StringRef> names,
                        llvm::SmallVectorImpl<RankedTensorType> &results);
// The declared result types (sources: nothing to infer).
LogicalResult declaredResults(Operation *op, llvm::SmallVectorImpl<RankedTensorType> &results);

//===-- SBP signatures -------------------------------------------------------===//

inline const SbpDim B = broadcastDim();
inline const SbpDim P = partialSumDim();
inline SbpDim S(int axis) { return splitDim(axis); }
SbpSignature sig(std::initializer_list<SbpDim> operands, std::initializer_list<SbpDim> results);

// The SBP of `t` at hierarchy dimension `dim`, if it has one.
std::optional<SbpDim> sbpAt(Type t, unsigned dim);
// Axes before the last (the rows of a last-axis op).
int leadAxes(Value v);
// `n` operands and one result all alike: S(i) for every axis of a rank-`rank`
// tensor but `except`, B, and P where the op is linear.
llvm::SmallVector<SbpSignature> uniform(int64_t rank, unsigned n, bool linear, int64_t except = -1);
// Adds (P, B, ...) -> P to the signatures of an op linear in its first operand.
llvm::SmallVector<SbpSignature> linearInFirst(llvm::SmallVector<SbpSignature> sigs);
// A reduction of every element of `x` into a scalar: S(i) -> P for every axis
// of x, B -> B, and P -> P where the reduction is linear.
llvm::SmallVector<SbpSignature> reduceToScalar(Value x, bool linear);

//===-- optimisers (ops/Training.cpp; local SGD's outer step and assign) ----===//

// The variable an optimiser updates: declared, shaped like its gradient
// (named `what` in errors) and on the gradient's placement.
FailureOr<VariableOp> verifyUpdated(OptimizerOpInterface op, SymbolTableCollection &symbols,
                                    llvm::StringRef what = "gradient");
// The gradient is laid out exactly like the variable it updates; the scale
// is a broadcast scalar.
llvm::SmallVector<SbpSignature> optimizerSignatures(OptimizerOpInterface op, unsigned dim);

// The shapes of the state variables `codec` keeps for a gradient of type
// `grad` on a placement of `hierarchy` (plan.fbs CodecAttrs.state): [ranks,
// L] each, one row per rank, L the most local elements a rank needs
// (PowerSGD's Q: its local columns times the rank). With `lgreco` (may be
// null) they are sized for the largest candidate, and L-GreCo's accumulator
// of the layer's gradients before each decision comes last.
llvm::SmallVector<llvm::SmallVector<int64_t, 2>>
codecStateShapes(CodecAttr codec, LgrecoAttr lgreco, RankedTensorType grad,
                 llvm::ArrayRef<int64_t> hierarchy);
} // namespace mlir::sbp
