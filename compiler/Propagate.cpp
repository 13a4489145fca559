// sbp-propagate: gives every unannotated tensor and variable an SBP. A round
// is greedy in program order: per hierarchy dimension each op picks the
// signature with the least boxing cost (alpha-beta model) plus compute time,
// keeping user-given SBPs; a look-ahead round also charges each result for
// the boxing its consumers asked for in the round before. A local search then
// moves free variables, single activations and whole regions of activations
// to SBPs the solution asked for somewhere, keeping a move when the total
// cost of a fresh propagation drops. Optimiser slots follow their variable;
// a variable the user split is not gathered. The chosen operand SBPs are
// recorded as `sbp.operand_sbp` for sbp-insert-boxing.
#include "compiler/Passes.h"
#include "ops/Cost.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <functional>
#include <limits>
#include <optional>

namespace mlir::sbp {
#define GEN_PASS_DEF_PROPAGATEPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

constexpr llvm::StringLiteral kDebugType = "sbp-propagate";
constexpr llvm::StringLiteral kOperandSbp = "sbp.operand_sbp";

using NdSbp = llvm::SmallVector<SbpDim, 2>;

// A variable the user left unannotated (no #sbp.t in its type): the compiler
// chooses its SBP, and the optimiser slots of the same shape (momentum, m, v)
// take the same one, since an optimiser updates them elementwise together.
struct FreeVariable {
  VariableOp op;
  llvm::SmallVector<VariableOp, 2> slots;
};

// Per value, the nd-SBPs its consumers asked for in an earlier round.
using Requests = llvm::DenseMap<Value, llvm::SmallVector<SbpTensorAttr, 2>>;

// A point of the search: the SBP of every free variable (index-aligned with
// Propagation::freeVars) and of the activations pinned so far.
struct SearchState {
  llvm::SmallVector<SbpTensorAttr> vars;
  llvm::MapVector<Value, SbpTensorAttr> pins;
};

// One step of the search: free variables take new SBPs and/or values are
// pinned (kept like user-given SBPs while propagating).
struct Move {
  llvm::SmallVector<std::pair<int, SbpTensorAttr>, 1> vars; // index in freeVars
  llvm::SmallVector<std::pair<Value, SbpTensorAttr>, 1> pins;
  std::string what; // for --debug-only=sbp-propagate
};

struct SearchOptions {
  bool lookAhead = true;
  bool search = true;
  // Local SGD's replica dimension (-1: none): across it a value may only be
  // summed (P -> B, which sbp-local-sgd makes each replica's own estimate)
  // or changed locally; no other collective may cross the replicas.
  int64_t replicaDim = -1;
};

// Whether `from` -> `to` on hierarchy dimension `d` keeps local SGD's
// replicas apart (SearchOptions::replicaDim).
bool keepsReplicasApart(const SearchOptions &options, size_t d, SbpDim from, SbpDim to) {
  if (static_cast<int64_t>(d) != options.replicaDim || from == to)
    return true;
  if (isPartial(from))
    return to.kind == SbpKind::Broadcast;
  return from.kind == SbpKind::Broadcast; // a slice, or zeroing the others
}

// Sets of indices, joined by union-find.
struct UnionFind {
  explicit UnionFind(size_t n) : parent(n) {
    for (unsigned i = 0; i < n; ++i)
      parent[i] = i;
  }
  unsigned find(unsigned i) { return parent[i] == i ? i : parent[i] = find(parent[i]); }
  void join(unsigned a, unsigned b) { parent[find(a)] = find(b); }
  llvm::SmallVector<unsigned> parent;
};

// Joins each value w of `values` with the operands (the indices `node` gives
// them) that its op reads on hierarchy dimension d without boxing, unless
// `skip(w)`, and where `alsoJoin(operandIndex, need, w)` holds.
template <class Skip, class AlsoJoin>
void joinUnboxed(UnionFind &sets, llvm::ArrayRef<Value> values,
                 const llvm::DenseMap<Value, unsigned> &node, unsigned d, Skip skip,
                 AlsoJoin alsoJoin) {
  auto on = [&](Value v) { return getSbpDims(getSbp(v.getType()))[d]; };
  for (Value w : values) {
    Operation *def = w.getDefiningOp();
    auto required = def->getAttrOfType<ArrayAttr>(kOperandSbp);
    if (!required || skip(w))
      continue;
    for (auto [u, want] : llvm::zip(def->getOperands(), required)) {
      auto it = node.find(u);
      if (it == node.end())
        continue;
      SbpDim need = getSbpDims(cast<SbpTensorAttr>(want))[d];
      if (on(u) == need && alsoJoin(it->second, need, w))
        sets.join(it->second, node.find(w)->second);
    }
  }
}

class Propagation {
public:
  Propagation(ModuleOp module, const CostModel &model, SearchOptions options)
      : module(module), model(model), options(options) {}

  LogicalResult run() {
    for (auto p : module.getOps<PlacementOp>()) {
      defaultPlacement = p;
      break;
    }
    if (failed(collect()))
      return failure();

    // Start: every free variable broadcast, as if the user had said B.
    SearchState best;
    for (FreeVariable &fv : freeVars)
      best.vars.push_back(allBroadcast(fv.op));
    // A variable the user split on a hierarchy dimension asks for that
    // parallelism there (tensor parallelism from weight annotations): its
    // parameter is not gathered on that dimension, though the cost model may
    // find the gather cheaper (it has no memory term). Only when nothing
    // propagates under that rule is it lifted.
    keepUserSplits = true;
    FailureOr<double> start = solve(best, /*quiet=*/true);
    if (failed(start)) {
      keepUserSplits = false;
      debug() << "no propagation keeps every user-split variable split; gathers allowed\n";
      start = solve(best, /*quiet=*/false);
    }
    if (failed(start))
      return failure();
    double bestCost = *start;
    debug() << "start: cost " << bestCost << " s\n";

    // Local search: a move gives free variables, single activations or whole
    // regions of activations an SBP that the current best solution asked for
    // somewhere (candidateMoves), and is kept when a fresh propagation costs
    // less in total. Greedy rounds are myopic (a split that is free now may
    // cost a gather later, and the backward pass pays for forward choices);
    // the total cost sees all of it. Sweeps repeat while a move is kept.
    bool irIsBest = true;
    int evaluations = 0;
    for (int sweep = 0; options.search && sweep < kMaxSweeps && evaluations < kMaxEvaluations;
         ++sweep) {
      if (!irIsBest) {
        if (failed(solve(best, /*quiet=*/true)))
          return module.emitError("sbp-propagate: a solution that was valid failed again");
        irIsBest = true;
      }
      llvm::SmallVector<Move> moves = candidateMoves();
      debug() << "sweep " << sweep << ": " << moves.size() << " moves\n";
      bool improved = false;
      for (const Move &move : moves) {
        if (evaluations >= kMaxEvaluations)
          break;
        SearchState trial = best;
        bool changes = false;
        for (auto [index, sbp] : move.vars) {
          changes |= trial.vars[index] != sbp;
          trial.vars[index] = sbp;
        }
        for (auto [v, sbp] : move.pins) {
          SbpTensorAttr &pin = trial.pins[v];
          changes |= pin != sbp;
          pin = sbp;
        }
        if (!changes)
          continue;
        ++evaluations;
        FailureOr<double> cost = solve(trial, /*quiet=*/true);
        // The margin keeps a move that only wins by rounding from being taken.
        bool keep = succeeded(cost) && *cost < bestCost * (1.0 - kMargin);
        if (isSbpDebugEnabled(kDebugType)) {
          debug() << "  " << move.what << ": ";
          if (succeeded(cost))
            llvm::dbgs() << "cost " << *cost << " s" << (keep ? ", kept" : "") << "\n";
          else
            llvm::dbgs() << "no valid propagation\n";
        }
        irIsBest = keep;
        if (keep) {
          // Pins the propagation would have chosen anyway only make later
          // moves harder (they are kept like user SBPs): drop them. The
          // solution is the same without them.
          trial.pins.remove_if([&](const auto &kv) { return !pinsUsed.count(kv.first); });
          best = std::move(trial);
          bestCost = *cost;
          improved = true;
        }
      }
      if (!improved)
        break;
    }
    if (!irIsBest && failed(solve(best, /*quiet=*/false)))
      return failure();
    debug() << "final: cost " << bestCost << " s after " << evaluations << " evaluations ("
            << rounds << " rounds)\n";
    if (isSbpDebugEnabled(kDebugType))
      totalCost(/*explain=*/true);
    return checkAnnotatedSlots();
  }

private:
  static constexpr int kMaxSweeps = 8;
  // A bound on compile time for very large programs; each evaluation is a
  // full propagation.
  static constexpr int kMaxEvaluations = 4000;
  // Look-ahead rounds after the greedy round of one solve.
  static constexpr int kMaxLookAheadRounds = 1;
  static constexpr double kMargin = 1e-9;
  // sbp-bucket-gradients' default bucket size (the sbp-compile pipeline).
  const int64_t kBucketBytes = BucketGradientsPassOptions().bucketBytes;

  ModuleOp module;
  const CostModel &model;
  SearchOptions options;
  SymbolTableCollection symbols;
  PlacementOp defaultPlacement;
  // Results whose SBP was in the input: the only SBPs kept across rounds.
  llvm::DenseSet<Value> userGiven;
  llvm::SmallVector<FreeVariable> freeVars;
  llvm::DenseMap<Operation *, int> freeVarIndex;
  llvm::DenseMap<std::pair<Operation *, unsigned>,
                 std::pair<std::optional<llvm::SmallVector<SbpSignature>>, Type>>
      signatureCache;
  llvm::SmallVector<SbpSignature> scratchSignatures;
  int rounds = 0;
  // Whether parameters of variables the user split stay split (see run()).
  bool keepUserSplits = true;
  // The pins of the round being propagated, and those of them that changed
  // some op's choice in the current solve (the others can be dropped).
  const llvm::MapVector<Value, SbpTensorAttr> *currentPins = nullptr;
  llvm::DenseSet<Value> pinsUsed;
  // Slots whose layout must equal their owner's: (slot, owner).
  llvm::SmallVector<std::pair<VariableOp, VariableOp>> slotOwners;

  llvm::raw_ostream &debug() {
    return isSbpDebugEnabled(kDebugType) ? (llvm::dbgs() << "[" << kDebugType << "] ")
                                         : llvm::nulls();
  }

  std::string describe(Value v) {
    std::string out;
    llvm::raw_string_ostream os(out);
    Operation *def = v.getDefiningOp();
    os << def->getName() << " result #" << cast<OpResult>(v).getResultNumber();
    if (auto loc = dyn_cast<FileLineColLoc>(def->getLoc()))
      os << " (line " << loc.getLine() << ")";
    return out;
  }

  SbpTensorAttr allBroadcast(VariableOp var) {
    PlacementOp placement = placementFor(var);
    NdSbp dims(placement.getHierarchy().size(), broadcastDim());
    return makeSbpTensorAttr(module.getContext(), placement.getSymName(), dims);
  }

  // A free variable lives where the user-placed operands of its consumers
  // live, else on the module's first placement.
  PlacementOp placementFor(VariableOp var) {
    for (auto fn : module.getOps<func::FuncOp>())
      for (auto param : fn.getOps<ParameterOp>()) {
        if (param.getVariable() != var.getSymName())
          continue;
        for (Operation *user : param->getUsers())
          for (Value v : user->getOperands())
            if (userGiven.count(v))
              if (SbpTensorAttr enc = getSbp(v.getType()))
                if (auto p = symbols.lookupNearestSymbolFrom<PlacementOp>(var, enc.getPlacement()))
                  return p;
      }
    return defaultPlacement;
  }

  // Finds the user-given SBPs, the free variables and their slots, and gives
  // the free variables that nothing reads as a parameter (e.g. an optimiser's
  // step counter) a broadcast SBP.
  LogicalResult collect() {
    // The state variables of each optimiser belong to the variable it updates.
    llvm::MapVector<Operation *, VariableOp> ownerOf;
    for (auto fn : module.getOps<func::FuncOp>())
      for (auto optimizer : fn.getOps<OptimizerOpInterface>()) {
        auto var =
            symbols.lookupNearestSymbolFrom<VariableOp>(optimizer, optimizer.getUpdatedVariable());
        if (!var)
          continue; // the verifier reports it
        for (FlatSymbolRefAttr ref : optimizer.getStateVariables()) {
          auto slot = symbols.lookupNearestSymbolFrom<VariableOp>(optimizer, ref);
          if (slot && slot != var)
            ownerOf[slot] = var;
        }
      }
    // A slot the user laid out lays out its unannotated variable too (the
    // optimiser updates both elementwise); it counts as the user's SBP.
    for (auto [slotOp, owner] : ownerOf) {
      auto slot = cast<VariableOp>(slotOp);
      SbpTensorAttr slotSbp = getSbp(slot.getType());
      if (!slotSbp || getSbp(owner.getType()) ||
          slot.getTensorType().getShape() != owner.getTensorType().getShape())
        continue;
      owner.setTypeAttr(TypeAttr::get(withSbp(owner.getType(), slotSbp)));
      for (auto fn : module.getOps<func::FuncOp>())
        for (auto param : fn.getOps<ParameterOp>())
          if (param.getVariable() == owner.getSymName())
            param.getResult().setType(owner.getType());
    }

    for (auto fn : module.getOps<func::FuncOp>())
      for (Operation &op : fn.getBody().front())
        for (Value r : op.getResults())
          if (getSbp(r.getType()))
            userGiven.insert(r);

    llvm::SmallVector<VariableOp> stateOfFree; // free, not a parameter, not a same-shape slot
    for (auto var : module.getOps<VariableOp>()) {
      if (getSbp(var.getType()))
        continue;
      if (!defaultPlacement)
        return var.emitOpError("variable ")
               << var.getSymName()
               << " has no SBP and the module declares no sbp.placement to put it on";
      auto owner = ownerOf.lookup(var);
      if (owner && owner.getTensorType().getShape() == var.getTensorType().getShape())
        continue; // follows its owner, below
      if (owner) {
        stateOfFree.push_back(var);
        continue;
      }
      freeVarIndex[var] = static_cast<int>(freeVars.size());
      freeVars.push_back({var, {}});
    }
    for (auto [slotOp, ownerVar] : ownerOf) {
      auto slot = cast<VariableOp>(slotOp);
      if (ownerVar.getTensorType().getShape() != slot.getTensorType().getShape())
        continue;
      if (!getSbp(slot.getType()) && freeVarIndex.count(ownerVar))
        freeVars[freeVarIndex[ownerVar]].slots.push_back(slot);
      else
        slotOwners.push_back({slot, ownerVar});
    }
    // A free slot of an annotated variable takes its layout now.
    for (auto [slot, owner] : slotOwners)
      if (!getSbp(slot.getType()) && getSbp(owner.getType()))
        slot.setTypeAttr(TypeAttr::get(withSbp(slot.getType(), getSbp(owner.getType()))));
    for (VariableOp var : stateOfFree) {
      VariableOp owner = ownerOf.lookup(var);
      SbpTensorAttr ownerSbp = getSbp(owner.getType());
      PlacementOp placement =
          ownerSbp ? symbols.lookupNearestSymbolFrom<PlacementOp>(owner, ownerSbp.getPlacement())
                   : placementFor(owner);
      if (!placement)
        placement = defaultPlacement;
      NdSbp dims(placement.getHierarchy().size(), broadcastDim());
      var.setTypeAttr(TypeAttr::get(withSbp(
          var.getType(), makeSbpTensorAttr(module.getContext(), placement.getSymName(), dims))));
    }
    return success();
  }

  // The nd-SBPs the consumers of `v` asked for in the current IR.
  llvm::SmallVector<SbpTensorAttr, 2> requestsOf(Value v) {
    llvm::SmallVector<SbpTensorAttr, 2> out;
    for (OpOperand &use : v.getUses()) {
      auto required = use.getOwner()->getAttrOfType<ArrayAttr>(kOperandSbp);
      if (!required || use.getOperandNumber() >= required.size())
        continue;
      auto enc = dyn_cast<SbpTensorAttr>(required[use.getOperandNumber()]);
      if (enc && !llvm::is_contained(out, enc))
        out.push_back(enc);
    }
    return out;
  }

  // A value the search may pin: an unannotated result of an sbp op (a
  // parameter follows its variable instead).
  bool pinnable(Value v) {
    Operation *def = v.getDefiningOp();
    return def && isa<SbpOpInterface>(def) && !isa<ParameterOp>(def) && !userGiven.count(v) &&
           getSbp(v.getType());
  }

  PlacementOp placementOf(Value v) {
    return symbols.lookupNearestSymbolFrom<PlacementOp>(v.getDefiningOp(),
                                                        getSbp(v.getType()).getPlacement());
  }

  // Whether the producer of `v` boxed one of its operands on dimension `d`
  // (all dimensions when `d` is negative).
  static bool producerBoxed(Value v, int d) {
    Operation *def = v.getDefiningOp();
    auto required = def->getAttrOfType<ArrayAttr>(kOperandSbp);
    if (!required)
      return false;
    for (auto [u, want] : llvm::zip(def->getOperands(), required)) {
      auto have = getSbpDims(getSbp(u.getType()));
      auto need = getSbpDims(dyn_cast<SbpTensorAttr>(want));
      for (size_t k = 0; k < have.size() && k < need.size(); ++k)
        if ((d < 0 || static_cast<int>(k) == d) && have[k] != need[k])
          return true;
    }
    return false;
  }

  // The SBPs worth trying for `v` on hierarchy dimension `d`: those its
  // consumers asked for there, and, when its producer had to box an operand,
  // the others that the producer's signatures give.
  llvm::SmallVector<SbpDim, 4> alternativesOn(Value v, unsigned d) {
    llvm::SmallVector<SbpDim, 4> out;
    SbpDim current = getSbpDims(getSbp(v.getType()))[d];
    auto add = [&](SbpDim x) {
      if (x != current && !llvm::is_contained(out, x))
        out.push_back(x);
    };
    for (SbpTensorAttr want : requestsOf(v))
      add(getSbpDims(want)[d]);
    if (producerBoxed(v, d)) {
      auto iface = cast<SbpOpInterface>(v.getDefiningOp());
      unsigned index = cast<OpResult>(v).getResultNumber();
      for (const SbpSignature &sig : signaturesOf(iface, d))
        if (index < sig.results.size())
          add(sig.results[index]);
    }
    return out;
  }

  // The SBPs worth trying for a free variable, given one of its parameters
  // `param`: what the consumers asked for, broadcast, and on each hierarchy
  // dimension the other operand SBPs the consumers' signatures take there.
  // Never partial: a variable holds whole values.
  llvm::SmallVector<SbpTensorAttr, 4> variableAlternatives(Value param) {
    llvm::SmallVector<SbpTensorAttr, 4> out;
    auto add = [&](SbpTensorAttr x) {
      if (!llvm::any_of(getSbpDims(x), isPartial) && !llvm::is_contained(out, x))
        out.push_back(x);
    };
    for (SbpTensorAttr want : requestsOf(param))
      add(want);
    SbpTensorAttr current = getSbp(param.getType());
    NdSbp dims = getSbpDims(current);
    auto placement = placementOf(param);
    add(makeSbpTensorAttr(module.getContext(), current.getPlacement().getValue(),
                          NdSbp(dims.size(), broadcastDim())));
    for (OpOperand &use : param.getUses()) {
      auto iface = dyn_cast<SbpOpInterface>(use.getOwner());
      if (!iface)
        continue;
      for (unsigned d = 0; d < dims.size(); ++d) {
        if (placement && placement.getHierarchy()[d] == 1)
          continue;
        for (const SbpSignature &sig : signaturesOf(iface, d))
          if (use.getOperandNumber() < sig.operands.size())
            add(withDim(param, d, sig.operands[use.getOperandNumber()]));
      }
    }
    return out;
  }

  SbpTensorAttr withDim(Value v, unsigned d, SbpDim x) {
    SbpTensorAttr current = getSbp(v.getType());
    NdSbp dims = getSbpDims(current);
    dims[d] = x;
    return makeSbpTensorAttr(module.getContext(), current.getPlacement().getValue(), dims);
  }

  // The moves worth trying from the current IR:
  // - a free variable takes an SBP the consumers of its parameters asked for
  //   (not a partial one: a variable holds whole values);
  // - a region (values joined by ops that box nothing between them on a
  //   hierarchy dimension, all with one SBP there) takes another SBP on that
  //   dimension at once. Single changes cannot leave a consistent but costly
  //   layout, e.g. a residual stream split by sequence where its producer's
  //   reduce-scatter is locally cheaper than an all-reduce and every cost
  //   shows up only in the backward pass;
  // - one activation takes an SBP its consumers asked for (the boxing moves
  //   to the producer's side or disappears), or, where its producer boxed an
  //   operand, another SBP the producer's signatures give.
  llvm::SmallVector<Move> candidateMoves() {
    llvm::SmallVector<Move> moves;
    llvm::SmallVector<Value> values; // pinnable, in program order
    for (auto fn : module.getOps<func::FuncOp>())
      for (Operation &op : fn.getBody().front()) {
        if (auto param = dyn_cast<ParameterOp>(op)) {
          auto var = symbols.lookupNearestSymbolFrom<VariableOp>(param, param.getVariableAttr());
          auto it = var ? freeVarIndex.find(var) : freeVarIndex.end();
          if (it == freeVarIndex.end())
            continue;
          SbpTensorAttr current = getSbp(param.getType());
          for (SbpTensorAttr want : variableAlternatives(param.getResult()))
            if (want != current && llvm::none_of(moves, [&](const Move &m) {
                  return m.pins.empty() && m.vars.size() == 1 &&
                         m.vars[0] == std::make_pair(it->second, want);
                })) {
              Move m;
              m.vars.push_back({it->second, want});
              m.what = ("@" + var.getSymName() + " -> " + toString(getSbpDims(want))).str();
              moves.push_back(std::move(m));
            }
          continue;
        }
        for (Value r : op.getResults())
          if (pinnable(r))
            values.push_back(r);
      }
    llvm::SmallVector<std::pair<Value, int>> params; // of free variables
    for (auto fn : module.getOps<func::FuncOp>())
      for (auto param : fn.getOps<ParameterOp>())
        if (auto var = symbols.lookupNearestSymbolFrom<VariableOp>(param, param.getVariableAttr()))
          if (auto it = freeVarIndex.find(var); it != freeVarIndex.end())
            params.push_back({param.getResult(), it->second});

    // Regions, per hierarchy dimension, by union-find over the values.
    llvm::DenseMap<Value, unsigned> index;
    for (auto [i, v] : llvm::enumerate(values))
      index[v] = i;
    size_t levels = 0;
    for (Value v : values)
      levels = std::max(levels, getSbpDims(getSbp(v.getType())).size());
    // Loose regions join a result to each operand it did not box; tight ones
    // only through ops that boxed no operand on that dimension (so that a
    // region stops where, e.g., a weight was gathered).
    llvm::SmallVector<llvm::DenseSet<Value>, 4> seenRegions;
    for (unsigned pass = 0; pass < 2 * levels; ++pass) {
      unsigned d = pass / 2;
      bool tight = pass % 2 == 1;
      auto on = [&](Value v) { return getSbpDims(getSbp(v.getType()))[d]; };
      UnionFind sets(values.size());
      joinUnboxed(
          sets, values, index, d, [&](Value w) { return tight && producerBoxed(w, d); },
          [&](unsigned, SbpDim need, Value w) { return need == on(w); });
      llvm::MapVector<unsigned, llvm::SmallVector<Value>> regions;
      for (auto [i, v] : llvm::enumerate(values))
        if (placementOf(v) && placementOf(v).getHierarchy()[d] > 1)
          regions[sets.find(i)].push_back(v);
      for (auto &[root, members] : regions) {
        if (members.size() < 2)
          continue;
        llvm::DenseSet<Value> memberSet(members.begin(), members.end());
        if (llvm::any_of(seenRegions, [&](const llvm::DenseSet<Value> &seen) {
              return seen.size() == memberSet.size() &&
                     llvm::all_of(members, [&](Value v) { return seen.count(v); });
            }))
          continue;
        seenRegions.push_back(std::move(memberSet));
        llvm::SmallVector<SbpDim, 4> targets{broadcastDim()};
        for (Value v : members)
          for (SbpDim x : alternativesOn(v, d))
            if (!llvm::is_contained(targets, x))
              targets.push_back(x);
        SbpDim label = on(members.front());
        for (SbpDim x : targets) {
          if (x == label)
            continue;
          Move m;
          for (Value v : members)
            if (x.kind != SbpKind::Split || x.axis < cast<RankedTensorType>(v.getType()).getRank())
              m.pins.push_back({v, withDim(v, d, x)});
          if (m.pins.empty())
            continue;
          m.what = ((tight ? "tight region of " : "region of ") + llvm::Twine(members.size()) +
                    " values at " + describe(members.front()) + ": " + toString(label) + " -> " +
                    toString(x) + " on dim " + llvm::Twine(d))
                       .str();
          moves.push_back(std::move(m));
        }
      }
    }

    // Replicating regions: a loose region together with the free variables
    // its ops read without boxing becomes broadcast on one dimension, the
    // variables included. A layer that splits its compute by slicing its
    // inputs (weights included) only to gather its result again is undone
    // this way; one variable or one activation at a time cannot.
    for (unsigned d = 0; d < levels; ++d) {
      size_t n = values.size() + params.size();
      llvm::DenseMap<Value, unsigned> node = index;
      for (auto [i, p] : llvm::enumerate(params))
        node[p.first] = values.size() + i;
      auto on = [&](Value v) { return getSbpDims(getSbp(v.getType()))[d]; };
      UnionFind sets(n);
      joinUnboxed(
          sets, values, node, d, [](Value) { return false; },
          [&](unsigned operand, SbpDim need, Value w) {
            return operand >= values.size() || need == on(w); // a parameter, or unchanged
          });
      llvm::MapVector<unsigned, llvm::SmallVector<unsigned>> regions;
      for (unsigned i = 0; i < n; ++i) {
        Value v = i < values.size() ? values[i] : params[i - values.size()].first;
        if (placementOf(v) && placementOf(v).getHierarchy()[d] > 1)
          regions[sets.find(i)].push_back(i);
      }
      for (auto &[root, members] : regions) {
        Move m;
        bool anyParam = false, anyValue = false, anySplit = false;
        for (unsigned i : members) {
          Value v = i < values.size() ? values[i] : params[i - values.size()].first;
          anySplit |= on(v) != broadcastDim();
          if (i < values.size()) {
            anyValue = true;
            m.pins.push_back({v, withDim(v, d, broadcastDim())});
            continue;
          }
          anyParam = true;
          int var = params[i - values.size()].second;
          SbpTensorAttr sbp = withDim(v, d, broadcastDim());
          if (!llvm::is_contained(m.vars, std::make_pair(var, sbp)))
            m.vars.push_back({var, sbp});
        }
        if (!anyParam || !anyValue || !anySplit)
          continue;
        m.what = ("replicating region of " + llvm::Twine(members.size()) + " values at " +
                  describe(values[members.front()]) + " on dim " + llvm::Twine(d))
                     .str();
        moves.push_back(std::move(m));
      }
    }

    for (Value v : values) {
      SbpTensorAttr current = getSbp(v.getType());
      llvm::SmallVector<SbpTensorAttr, 4> wants;
      for (SbpTensorAttr want : requestsOf(v))
        if (want != current)
          wants.push_back(want);
      NdSbp dims = getSbpDims(current);
      if (producerBoxed(v, -1))
        for (unsigned d = 0; d < dims.size(); ++d) {
          if (placementOf(v).getHierarchy()[d] == 1)
            continue;
          for (SbpDim x : alternativesOn(v, d)) {
            SbpTensorAttr other = withDim(v, d, x);
            if (!llvm::is_contained(wants, other))
              wants.push_back(other);
          }
        }
      for (SbpTensorAttr want : wants) {
        Move m;
        m.pins.push_back({v, want});
        m.what = describe(v) + " -> " + toString(getSbpDims(want));
        moves.push_back(std::move(m));
      }
    }
    return moves;
  }

  // Sets the free variables (and their slots) and the pins of `state`, runs
  // a greedy round, then look-ahead rounds while they lower the total cost;
  // leaves the IR in the cheapest of those rounds and returns its cost.
  // `quiet` silences diagnostics: a trial that fails is only a bad candidate.
  FailureOr<double> solve(const SearchState &state, bool quiet) {
    std::optional<ScopedDiagnosticHandler> silence;
    if (quiet)
      silence.emplace(module.getContext(), [](Diagnostic &) { return success(); });
    for (auto [fv, sbp] : llvm::zip(freeVars, state.vars)) {
      fv.op.setTypeAttr(TypeAttr::get(withSbp(fv.op.getType(), sbp)));
      for (VariableOp slot : fv.slots)
        slot.setTypeAttr(TypeAttr::get(withSbp(slot.getType(), sbp)));
    }
    pinsUsed.clear();
    if (failed(round(state.pins, /*requests=*/nullptr)))
      return failure();
    double best = totalCost();
    if (!options.lookAhead)
      return best;
    // Look-ahead: each round also pays for boxing a result to what its
    // consumers asked for in the previous round, so that an op does not split
    // its result for free only for every consumer to gather it again.
    std::optional<Requests> bestRequests; // none: the greedy round was best
    Requests requests = collectRequests();
    bool lastIsBest = true;
    for (int k = 0; k < kMaxLookAheadRounds; ++k) {
      if (failed(round(state.pins, &requests))) {
        lastIsBest = false;
        break;
      }
      double cost = totalCost();
      Requests next = collectRequests();
      lastIsBest = cost < best * (1.0 - kMargin);
      if (lastIsBest) {
        best = cost;
        bestRequests = requests;
      }
      if (!lastIsBest || next == requests)
        break;
      requests = std::move(next);
    }
    if (!lastIsBest && failed(round(state.pins, bestRequests ? &*bestRequests : nullptr)))
      return failure();
    return best;
  }

  // Per value, what its consumers asked for in the current IR.
  Requests collectRequests() {
    Requests out;
    for (auto fn : module.getOps<func::FuncOp>())
      for (Operation &op : fn.getBody().front())
        for (Value r : op.getResults()) {
          auto wants = requestsOf(r);
          if (!wants.empty())
            out[r] = std::move(wants);
        }
    return out;
  }

  // Clears every SBP that is neither the user's nor pinned and chooses them
  // again in program order. `requests` (may be null) adds the cost of boxing
  // each result to what its consumers asked for in an earlier round.
  LogicalResult round(const llvm::MapVector<Value, SbpTensorAttr> &pins, const Requests *requests) {
    for (auto fn : module.getOps<func::FuncOp>())
      for (Operation &op : fn.getBody().front()) {
        op.removeAttr(kOperandSbp);
        for (Value r : op.getResults())
          if (!userGiven.count(r) && isa<RankedTensorType>(r.getType()))
            r.setType(withoutSbp(r.getType()));
        // A parameter of a free variable is as fixed as the variable this round.
        if (auto param = dyn_cast<ParameterOp>(op); param && !userGiven.count(param.getResult()))
          if (auto var =
                  symbols.lookupNearestSymbolFrom<VariableOp>(param, param.getVariableAttr()))
            if (getSbp(var.getType()))
              param.getResult().setType(var.getType());
      }
    for (auto [v, sbp] : pins)
      v.setType(withSbp(v.getType(), sbp));
    currentPins = &pins;
    ++rounds;
    auto reset = llvm::make_scope_exit([&] { currentPins = nullptr; });
    for (auto fn : module.getOps<func::FuncOp>()) {
      for (Operation &op : fn.getBody().front())
        if (failed(propagate(&op, requests)))
          return failure();
      // Results may have changed type: keep the function type in step.
      if (auto ret = dyn_cast<func::ReturnOp>(fn.getBody().front().getTerminator()))
        fn.setFunctionType(
            FunctionType::get(module.getContext(), fn.getArgumentTypes(), ret.getOperandTypes()));
    }
    return success();
  }

  // Total time of the current IR: every boxing (in its cheapest order of
  // hierarchy dimensions; once per value and target, as sbp-insert-boxing
  // shares the boxed copy) plus every op's compute.
  double totalCost(bool explain = false) {
    double total = 0.0;
    llvm::DenseSet<std::pair<Value, Attribute>> boxed;
    double gradientBytes = 0.0;
    llvm::SmallDenseSet<unsigned, 4> gradientDims;
    for (auto fn : module.getOps<func::FuncOp>())
      for (Operation &op : fn.getBody().front()) {
        auto iface = dyn_cast<SbpOpInterface>(&op);
        if (!iface)
          continue;
        auto required = op.getAttrOfType<ArrayAttr>(kOperandSbp);
        SbpTensorAttr any;
        if (required && !required.empty())
          any = dyn_cast<SbpTensorAttr>(required[0]);
        for (Value r : op.getResults())
          if (!any)
            any = getSbp(r.getType());
        if (!any)
          continue;
        auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(&op, any.getPlacement());
        if (!placement)
          continue;
        llvm::ArrayRef<int64_t> hierarchy = placement.getHierarchy();
        llvm::SmallVector<bool, 4> parallel(hierarchy.size(), false);
        auto markSplits = [&](SbpTensorAttr enc) {
          for (auto [d, s] : llvm::enumerate(getSbpDims(enc)))
            if (d < parallel.size() && s.kind == SbpKind::Split)
              parallel[d] = true;
        };
        if (required)
          for (auto [v, req] : llvm::zip(op.getOperands(), required)) {
            auto want = dyn_cast<SbpTensorAttr>(req);
            if (!want)
              continue;
            markSplits(want);
            if (!boxed.insert({v, want}).second)
              continue;
            auto have = getSbpDims(getSbp(v.getType())), need = getSbpDims(want);
            for (size_t d = 0; d < have.size() && d < need.size(); ++d)
              if (unsplitsUserVariable(v, have[d], need[d]) ||
                  !keepsReplicasApart(options, d, have[d], need[d]))
                return std::numeric_limits<double>::infinity();
            // The all-reduces of gradients into an optimiser are bucketed by
            // sbp-bucket-gradients (per hierarchy dimension): they pay their
            // bytes here and one launch per bucket below.
            bool gradient = isa<OptimizerOpInterface>(op);
            auto type = cast<RankedTensorType>(v.getType());
            NdBoxingPlan plan = planNdBoxing(model, type, have, need, hierarchy, gradient);
            double cost = plan.cost;
            if (gradient && plan.allReduces) {
              gradientBytes += static_cast<double>(type.getNumElements()) *
                               static_cast<double>(elementBytes(type.getElementType()));
              for (size_t d = 0; d < have.size() && d < need.size(); ++d)
                if (isPartial(have[d]) && need[d].kind == SbpKind::Broadcast && hierarchy[d] > 1)
                  gradientDims.insert(static_cast<unsigned>(d));
            }
            total += cost;
            if (explain && cost > 0)
              debug() << "  boxing " << toString(getSbpDims(getSbp(v.getType()))) << " -> "
                      << toString(getSbpDims(want)) << " of " << v.getType() << " for "
                      << op.getName() << ": " << cost << " s\n";
          }
        for (Value r : op.getResults())
          if (SbpTensorAttr enc = getSbp(r.getType()))
            markSplits(enc);
        double ways = 1.0;
        for (auto [d, p] : llvm::enumerate(parallel))
          if (p)
            ways *= static_cast<double>(hierarchy[d]);
        total += iface.getFlops() / model.flopsPerSecond / ways;
      }
    total += model.alpha * static_cast<double>(gradientDims.size()) *
             std::ceil(gradientBytes / static_cast<double>(kBucketBytes));
    return total;
  }

  // The op's candidate signatures on dimension `d`. A search propagates the
  // same ops many times, so they are kept; they depend on shapes, attributes
  // and placements only, except an optimiser's (its variable's SBP, part of
  // the key) and a source's (its own type: not kept).
  llvm::ArrayRef<SbpSignature> signaturesOf(SbpOpInterface iface, unsigned d) {
    Operation *op = iface.getOperation();
    if (isa<ParameterOp, InputOp>(op)) {
      scratchSignatures = iface.getSbpSignatures(d);
      return scratchSignatures;
    }
    Type key;
    if (auto optimizer = dyn_cast<OptimizerOpInterface>(op))
      if (auto var =
              symbols.lookupNearestSymbolFrom<VariableOp>(op, optimizer.getUpdatedVariable()))
        key = var.getType();
    auto &entry = signatureCache[{op, d}];
    if (!entry.first || entry.second != key) {
      entry.first.emplace(iface.getSbpSignatures(d));
      entry.second = key;
    }
    return *entry.first;
  }

  // Boxing `v` from `from` to `to` (one hierarchy dimension) would gather a
  // parameter of a variable the user split there.
  bool unsplitsUserVariable(Value v, SbpDim from, SbpDim to) {
    return keepUserSplits && from.kind == SbpKind::Split && to != from &&
           v.getDefiningOp<ParameterOp>() && userGiven.count(v);
  }

  LogicalResult checkAnnotatedSlots() {
    for (auto [slot, owner] : slotOwners) {
      SbpTensorAttr s = getSbp(slot.getType()), o = getSbp(owner.getType());
      if (s && o && s != o)
        return slot.emitOpError("optimiser state ")
               << slot.getSymName() << " is laid out as " << s << " but its variable "
               << owner.getSymName() << " as " << o
               << "; an optimiser updates both elementwise, so they need the same SBP";
    }
    return success();
  }

  LogicalResult propagate(Operation *op, const Requests *requests) {
    if (isa<func::ReturnOp>(op))
      return success();
    if (isa<MinimizeOp>(op))
      return op->emitOpError("must be removed by sbp-autodiff before sbp-propagate");
    auto iface = dyn_cast<SbpOpInterface>(op);
    if (!iface) {
      // Boxing ops and foreign ops must already be typed.
      for (Value r : op->getResults())
        if (isa<RankedTensorType>(r.getType()) && !getSbp(r.getType()))
          return op->emitOpError("has no SBP semantics and an unannotated result");
      return success();
    }

    // The placement: the operands' (all alike), else a fixed result's, else
    // the optimiser's variable's, else the module's first.
    FlatSymbolRefAttr placementRef;
    for (Value v : op->getOperands()) {
      SbpTensorAttr enc = getSbp(v.getType());
      if (!enc)
        return op->emitOpError("operand has no SBP yet (its producer is not an sbp op)");
      if (placementRef && placementRef != enc.getPlacement())
        return op->emitOpError("mixes placements ")
               << placementRef << " and " << enc.getPlacement()
               << "; transfers between placements are not supported here";
      placementRef = enc.getPlacement();
    }
    for (Value r : op->getResults())
      if (SbpTensorAttr enc = getSbp(r.getType()); enc && !placementRef)
        placementRef = enc.getPlacement();
    if (auto optimizer = dyn_cast<OptimizerOpInterface>(op); optimizer && !placementRef)
      if (auto var =
              symbols.lookupNearestSymbolFrom<VariableOp>(op, optimizer.getUpdatedVariable()))
        if (SbpTensorAttr enc = getSbp(var.getType()))
          placementRef = enc.getPlacement();
    if (!placementRef) {
      if (!defaultPlacement)
        return op->emitOpError("needs a placement but the module declares no sbp.placement");
      placementRef = FlatSymbolRefAttr::get(defaultPlacement.getSymNameAttr());
    }
    auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(op, placementRef);
    if (!placement)
      return op->emitOpError("references undeclared placement ") << placementRef;
    llvm::ArrayRef<int64_t> hierarchy = placement.getHierarchy();

    llvm::SmallVector<NdSbp> operandSbps, resultSbps;
    for (Value v : op->getOperands())
      operandSbps.push_back(getSbpDims(getSbp(v.getType())));
    for (Value r : op->getResults())
      resultSbps.push_back(getSbpDims(getSbp(r.getType())));

    llvm::SmallVector<bool, 2> pinnedResult;
    for (Value r : op->getResults())
      pinnedResult.push_back(currentPins && currentPins->count(r));

    double flops = iface.getFlops();
    llvm::SmallVector<SbpSignature> chosen, freeChosen;
    bool freeWithDetour = false; // every operand reaches freeChosen through a detour
    // Whether every operand reaches `sigs` (with planNdBoxing's detours or
    // only in straight single-dim steps).
    auto reachable = [&](llvm::ArrayRef<SbpSignature> sigs, bool detours) {
      for (unsigned i = 0; i < op->getNumOperands(); ++i) {
        NdSbp want;
        for (const SbpSignature &sig : sigs)
          want.push_back(sig.operands[i]);
        if (planNdBoxing(model, cast<RankedTensorType>(op->getOperand(i).getType()), operandSbps[i],
                         want, hierarchy, /*bucketedAllReduce=*/false, detours)
                .cost == std::numeric_limits<double>::infinity())
          return false;
      }
      return true;
    };
    // First choose freely; if some operand's change then has no order of
    // single-dim steps (nestedSplitStep), choose again without such steps;
    // if that finds nothing, the free choice with a detour (gathering an
    // inner split first).
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool conservative = attempt == 1;
      chosen.clear();
      for (unsigned d = 0; d < hierarchy.size(); ++d) {
        llvm::ArrayRef<SbpSignature> candidates = signaturesOf(iface, d);
        llvm::SmallVector<SbpSignature> allB;
        if (hierarchy[d] == 1) {
          // Unit dimension: keep the all-B signature (see canonicalizeUnitDims).
          for (const SbpSignature &sig : candidates)
            if (llvm::all_of(sig.operands, [](SbpDim x) { return x == broadcastDim(); }) &&
                llvm::all_of(sig.results, [](SbpDim x) { return x == broadcastDim(); }))
              allB.push_back(sig);
          if (!allB.empty())
            candidates = allB;
        }
        double best = std::numeric_limits<double>::infinity(), bestFree = best;
        std::optional<SbpSignature> pick, freePick;
        bool anyFits = false;
        // Per operand its SBP and group bytes on this dimension, per result
        // what its consumers asked for here: fixed over the candidates.
        llvm::SmallVector<SbpDim> inputs;
        llvm::SmallVector<double, 4> inputBytes;
        for (auto [i, s] : llvm::enumerate(operandSbps)) {
          inputs.push_back(s[d]);
          inputBytes.push_back(
              groupBytes(cast<RankedTensorType>(op->getOperand(i).getType()), s, hierarchy, d));
        }
        llvm::SmallVector<llvm::SmallVector<std::pair<SbpDim, double>, 2>, 1> wanted(
            op->getNumResults());
        if (requests)
          for (auto [i, r] : llvm::enumerate(op->getResults())) {
            auto it = requests->find(r);
            if (it == requests->end())
              continue;
            auto type = cast<RankedTensorType>(r.getType());
            for (SbpTensorAttr want : it->second) {
              NdSbp w = getSbpDims(want);
              wanted[i].push_back({w[d], groupBytes(type, w, hierarchy, d)});
            }
          }
        for (const SbpSignature &sig : candidates) {
          if (sig.operands.size() != op->getNumOperands() ||
              sig.results.size() != op->getNumResults())
            continue;
          // `fits`: produces every fixed result; `fitsFree`: every result
          // but the pinned ones (to tell whether a pin changed anything).
          bool fits = true, fitsFree = true;
          for (unsigned i = 0; i < resultSbps.size(); ++i)
            if (!resultSbps[i].empty() && resultSbps[i][d] != sig.results[i]) {
              fits = false;
              fitsFree &= pinnedResult[i];
            }
          if (!fitsFree)
            continue;
          // A step on dim d that splits or unsplits an axis which a later
          // (inner) dim of the operand already splits moves data across that
          // dim's groups: no single-dim collective does it (nestedSplitStep).
          bool nested = false;
          for (unsigned i = 0; conservative && i < sig.operands.size() && !nested; ++i)
            nested = nestedSplitStep(operandSbps[i], d, sig.operands[i]);
          if (nested)
            continue;
          anyFits |= fits;
          double cost = 0;
          bool parallel = false;
          for (unsigned i = 0; i < sig.operands.size(); ++i) {
            if (unsplitsUserVariable(op->getOperand(i), inputs[i], sig.operands[i]) ||
                !keepsReplicasApart(options, d, inputs[i], sig.operands[i]))
              cost = std::numeric_limits<double>::infinity();
            cost += boxingCost(model, inputs[i], sig.operands[i], inputBytes[i], hierarchy[d]);
            parallel |= sig.operands[i].kind == SbpKind::Split;
          }
          for (auto [i, r] : llvm::enumerate(sig.results)) {
            parallel |= r.kind == SbpKind::Split;
            for (auto [want, bytes] : wanted[i]) {
              if (!keepsReplicasApart(options, d, r, want))
                cost = std::numeric_limits<double>::infinity();
              cost += boxingCost(model, r, want, bytes, hierarchy[d]);
            }
          }
          cost +=
              flops / model.flopsPerSecond / (parallel ? static_cast<double>(hierarchy[d]) : 1.0);
          if (cost == std::numeric_limits<double>::infinity())
            continue;
          if (fits && cost < best) {
            best = cost;
            pick = sig;
          }
          if (cost < bestFree) {
            bestFree = cost;
            freePick = sig;
          }
        }
        // A pin that the op would have chosen anyway changes nothing here.
        if (pick && freePick)
          for (unsigned i = 0; i < pinnedResult.size(); ++i)
            if (pinnedResult[i] && freePick->results[i] != pick->results[i])
              pinsUsed.insert(op->getResult(i));
        if (!pick && freeWithDetour)
          break;
        if (!pick) {
          std::string why;
          if (candidates.empty())
            why = "the op supports no signature here";
          else if (anyFits)
            why = "no boxing reaches any signature from these inputs";
          else
            why = "no signature produces the result SBP fixed in its type";
          return emitNoSignatureError(op, d, inputs, candidates, why);
        }
        chosen.push_back(*pick);
      }
      if (chosen.size() == hierarchy.size() && reachable(chosen, /*detours=*/false))
        break;
      if (!conservative) {
        freeChosen = chosen;
        freeWithDetour = reachable(freeChosen, /*detours=*/true);
        continue;
      }
      if (freeWithDetour)
        chosen = freeChosen;
    }

    // Results: keep fixed encodings, set the others.
    for (auto [i, r] : llvm::enumerate(op->getResults())) {
      if (getSbp(r.getType()))
        continue;
      NdSbp dims;
      for (const SbpSignature &s : chosen)
        dims.push_back(s.results[i]);
      setSbp(r, makeSbpTensorAttr(module.getContext(), placementRef.getValue(), dims));
    }
    if (op->getNumOperands() > 0) {
      llvm::SmallVector<Attribute> required;
      for (unsigned i = 0; i < op->getNumOperands(); ++i) {
        NdSbp dims;
        for (const SbpSignature &s : chosen)
          dims.push_back(s.operands[i]);
        required.push_back(makeSbpTensorAttr(module.getContext(), placementRef.getValue(), dims));
      }
      op->setAttr(kOperandSbp, ArrayAttr::get(module.getContext(), required));
    }
    return success();
  }
};

struct PropagatePass : public sbp::impl::PropagatePassBase<PropagatePass> {
  using Base::Base;

  CostModel model;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTableCollection symbols;
    canonicalizeUnitDims(module, symbols);
    SearchOptions options;
    options.lookAhead = lookAhead;
    options.search = search;
    options.replicaDim = replicaDim;
    Propagation propagation(module, model, options);
    if (failed(propagation.run()))
      signalPassFailure();
  }

  // On a hierarchy dimension of one rank, S(i), B and P hold the same data:
  // B is the canonical form, so a one-rank placement (or the unit dimension
  // of a mesh such as [1, 4]) needs no boxing. User-given SBPs are rewritten
  // too; they mean the same thing.
  void canonicalizeUnitDims(ModuleOp module, SymbolTableCollection &symbols) {
    auto canonical = [&](Operation *from, Type type) -> Type {
      SbpTensorAttr enc = getSbp(type);
      if (!enc)
        return type;
      auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(from, enc.getPlacement());
      if (!placement)
        return type; // the verifier reports it
      NdSbp dims = getSbpDims(enc);
      bool changed = false;
      for (auto [d, size] : llvm::enumerate(placement.getHierarchy()))
        if (size == 1 && d < dims.size() && dims[d] != broadcastDim()) {
          dims[d] = broadcastDim();
          changed = true;
        }
      if (!changed)
        return type;
      return withSbp(type, makeSbpTensorAttr(&getContext(), enc.getPlacement().getValue(), dims));
    };
    for (auto var : module.getOps<VariableOp>())
      var.setTypeAttr(TypeAttr::get(canonical(var, var.getType())));
    module.walk([&](Operation *op) {
      for (Value r : op->getResults())
        r.setType(canonical(op, r.getType()));
    });
  }
};

} // namespace
