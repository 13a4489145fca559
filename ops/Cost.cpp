// The alpha-beta cost of one boxing step (DESIGN.md "Boxing"): bytes x
// (n-1)/n for gathers and scatters, twice that for an all-reduce.
#include "ops/OpSemantics.h"

#include <limits>

namespace mlir::sbp {

double boxingCost(const CostModel &m, SbpDim from, SbpDim to, double bytes, int64_t n) {
  if (from == to || n <= 1)
    return 0.0;
  double frac = static_cast<double>(n - 1) / static_cast<double>(n);
  double moved = 0.0;
  const double inf = std::numeric_limits<double>::infinity();
  bool fromP = isPartial(from), toP = isPartial(to);
  if (fromP && to.kind == SbpKind::Broadcast)
    moved = 2.0 * bytes * frac; // all-reduce
  else if (fromP && to.kind == SbpKind::Split)
    moved = bytes * frac; // reduce-scatter
  else if (from.kind == SbpKind::Split && to.kind == SbpKind::Broadcast)
    moved = bytes * frac; // all-gather
  else if (from.kind == SbpKind::Split && to.kind == SbpKind::Split)
    moved = bytes * frac / static_cast<double>(n); // all-to-all
  else if (from.kind == SbpKind::Broadcast && (to.kind == SbpKind::Split || toP))
    // Local: slice or zero the others. A tiny cost keeps "no change" preferred.
    return 1e-9 * bytes / m.bytesPerSecond;
  else if (from.kind == SbpKind::Split && toP)
    moved = bytes * frac; // all-gather, then zero the others
  else
    return inf; // P(a) -> P(b)
  return m.alpha + moved / m.bytesPerSecond;
}

int64_t elementBytes(Type t) {
  if (t.isIntOrFloat())
    return std::max<int64_t>(1, t.getIntOrFloatBitWidth() / 8);
  return 4;
}

} // namespace mlir::sbp
