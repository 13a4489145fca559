// A 1-D SBP signature (one SbpDim per operand and per result) and the helpers
// that convert between SbpDim values and the dialect's attributes.
#pragma once

#include "runtime/Shape.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace mlir {
class Attribute;
class MLIRContext;
namespace sbp {

using sbpflow::SbpDim;
using sbpflow::SbpKind;

inline SbpDim splitDim(int axis) { return {SbpKind::Split, axis}; }
inline SbpDim broadcastDim() { return {SbpKind::Broadcast, 0}; }
inline SbpDim partialSumDim() { return {SbpKind::PartialSum, 0}; }
inline bool isPartial(SbpDim d) {
  return d.kind == SbpKind::PartialSum || d.kind == SbpKind::PartialMax ||
         d.kind == SbpKind::PartialMin;
}

// Short form used in the tensor encoding and in diagnostics: S(0), B, P(sum).
using sbpflow::toString;
std::string toString(llvm::ArrayRef<SbpDim> dims);

struct SbpSignature {
  llvm::SmallVector<SbpDim, 3> operands;
  llvm::SmallVector<SbpDim, 1> results;
  // "S(0) x B -> S(0)"
  std::string str() const;
};

// Conversions between SbpDim and #sbp.split / #sbp.broadcast / #sbp.partial.
std::optional<SbpDim> sbpDimFromAttr(Attribute attr);
Attribute sbpDimToAttr(MLIRContext *ctx, SbpDim d);

} // namespace sbp
} // namespace mlir
