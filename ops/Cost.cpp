// The alpha-beta cost of boxing (DESIGN.md "Boxing"): one step on one
// hierarchy dimension costs bytes x (n-1)/n for gathers and scatters, twice
// that for an all-reduce; an nd-SBP change is the cheapest order of its steps.
#include "ops/Cost.h"

#include <algorithm>
#include <limits>
#include <numeric>

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

double groupBytes(RankedTensorType type, llvm::ArrayRef<SbpDim> sbp,
                  llvm::ArrayRef<int64_t> hierarchy, unsigned dim) {
  // A bf16 reduction is widened to f32 for its collective (one rounding);
  // gathers and all-to-alls move bf16 as it is, but are counted as f32 too.
  Type elt = type.getElementType();
  double bytes =
      static_cast<double>(type.getNumElements()) * (elt.isBF16() ? 4 : elementBytes(elt));
  for (unsigned d = 0; d < hierarchy.size() && d < sbp.size(); ++d)
    if (d != dim && sbp[d].kind == SbpKind::Split)
      bytes /= static_cast<double>(hierarchy[d]);
  return bytes;
}

namespace {
// The order used when costs tie: changes to a split shrink what later steps
// move, so they go first; changes that grow the data (gathers) go last.
int shrinkRank(SbpDim from, SbpDim to) {
  if (to.kind == SbpKind::Split)
    return 0;
  if (isPartial(from) || (from.kind == SbpKind::Split && to.kind == SbpKind::Split))
    return 1;
  return 2;
}
// Beyond this many changed dimensions the orders are too many to try (8! is
// 40320); the tie order is used alone. Real hierarchies have 2 or 3 levels.
constexpr size_t kMaxOrderedDims = 7;
} // namespace

bool nestedSplitStep(llvm::ArrayRef<SbpDim> sbp, unsigned d, SbpDim to) {
  if (d >= sbp.size() || sbp[d] == to)
    return false;
  for (SbpDim x : {sbp[d], to}) {
    if (x.kind != SbpKind::Split)
      continue;
    for (unsigned e = d + 1; e < sbp.size(); ++e)
      if (sbp[e].kind == SbpKind::Split && sbp[e].axis == x.axis)
        return true;
  }
  return false;
}

NdBoxingPlan planNdBoxing(const CostModel &model, RankedTensorType type,
                          llvm::ArrayRef<SbpDim> from, llvm::ArrayRef<SbpDim> to,
                          llvm::ArrayRef<int64_t> hierarchy, bool bucketedAllReduce, bool detours) {
  NdBoxingPlan plan;
  size_t levels = std::min({from.size(), to.size(), hierarchy.size()});
  llvm::SmallVector<unsigned, 4> changed;
  for (unsigned d = 0; d < levels; ++d)
    if (from[d] != to[d])
      changed.push_back(d);
  llvm::stable_sort(changed, [&](unsigned a, unsigned b) {
    return shrinkRank(from[a], to[a]) < shrinkRank(from[b], to[b]);
  });
  if (changed.empty())
    return plan;
  for (unsigned d : changed)
    plan.allReduces |= isPartial(from[d]) && to[d].kind == SbpKind::Broadcast;
  // A gradient all-reduce into the optimiser is bucketed (no launch of its
  // own) and runs while the rest of backward computes: charge half its bytes
  // (bench/ measured 44-52% of a bucket hidden on the MLP), so that a
  // gather-based rewrite that saves a few bytes on paper but sits on the
  // critical path does not win.
  CostModel bucketed = model;
  bucketed.alpha = 0.0;
  bucketed.bytesPerSecond = 2.0 * model.bytesPerSecond;

  using Steps = llvm::SmallVector<NdBoxingStep, 4>;
  auto costOf = [&](const Steps &steps) {
    llvm::SmallVector<SbpDim, 4> cur(from.begin(), from.end());
    double total = 0.0;
    for (const NdBoxingStep &s : steps) {
      if (nestedSplitStep(cur, s.dim, s.to))
        return std::numeric_limits<double>::infinity();
      bool allReduce = isPartial(cur[s.dim]) && s.to.kind == SbpKind::Broadcast;
      total += boxingCost(bucketedAllReduce && allReduce ? bucketed : model, cur[s.dim], s.to,
                          groupBytes(type, cur, hierarchy, s.dim), hierarchy[s.dim]);
      cur[s.dim] = s.to;
    }
    return total;
  };
  auto straight = [&](llvm::ArrayRef<unsigned> order) {
    Steps steps;
    for (unsigned d : order)
      steps.push_back({d, to[d]});
    return steps;
  };
  plan.steps = straight(changed);
  plan.cost = costOf(plan.steps);
  if (changed.size() <= kMaxOrderedDims) {
    // Permutations of positions in the tie order, starting from the
    // identity: only a strictly cheaper order replaces an earlier one.
    llvm::SmallVector<unsigned, 8> perm(changed.size());
    std::iota(perm.begin(), perm.end(), 0u);
    llvm::SmallVector<unsigned, 4> order(changed.size());
    while (std::next_permutation(perm.begin(), perm.end())) {
      for (size_t i = 0; i < perm.size(); ++i)
        order[i] = changed[perm[i]];
      Steps steps = straight(order);
      double c = costOf(steps);
      // A relative margin: rounding must not reorder steps that cost the same.
      if (c < plan.cost * (1.0 - 1e-9)) {
        plan.cost = c;
        plan.steps = std::move(steps);
      }
    }
  }
  if (plan.cost != std::numeric_limits<double>::infinity() || !detours)
    return plan;
  // The detour: from the innermost dimension out to the outermost changed
  // one, gather every split that changes or that splits an axis an outer
  // step changes (then no inner split blocks an outer step), then from the
  // outermost changed dimension inwards go to `to` (each new split is the
  // innermost split of its axis so far).
  const unsigned outer = *llvm::min_element(changed);
  auto blocksOuterStep = [&](unsigned d) {
    for (unsigned c : changed)
      if (c < d)
        for (SbpDim x : {from[c], to[c]})
          if (x.kind == SbpKind::Split && x.axis == from[d].axis)
            return true;
    return false;
  };
  Steps steps;
  llvm::SmallVector<SbpDim, 4> cur(from.begin(), from.end());
  for (unsigned d = levels; d-- > outer;)
    if (cur[d].kind == SbpKind::Split && (cur[d] != to[d] || blocksOuterStep(d))) {
      steps.push_back({d, broadcastDim()});
      cur[d] = broadcastDim();
    }
  for (unsigned d = outer; d < levels; ++d)
    if (cur[d] != to[d]) {
      steps.push_back({d, to[d]});
      cur[d] = to[d];
    }
  plan.cost = costOf(steps);
  plan.steps = std::move(steps);
  return plan;
}

} // namespace mlir::sbp
