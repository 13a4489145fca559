// sbp-insert-boxing: wherever an operand's SBP differs from the one recorded
// in `sbp.operand_sbp`, inserts a chain of boxing ops, one hierarchy dimension
// at a time, in the order the cost model finds cheapest (planNdBoxing). Each
// step is built by the first builder of a short chain that accepts the change
// (DESIGN.md's table); `--debug-only=sbp-insert-boxing` prints the chosen
// order and builders. Ends with the no-implicit-boxing check.
#include "compiler/Passes.h"
#include "ops/Cost.h"

#include "llvm/Support/Debug.h"
#include "llvm/Support/raw_ostream.h"

#include <limits>
#include <map>

namespace mlir::sbp {
#define GEN_PASS_DEF_INSERTBOXINGPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

constexpr llvm::StringLiteral kDebugType = "sbp-insert-boxing";

// One kind of change on one hierarchy dimension; `build` returns null to
// decline.
struct BoxingBuilder {
  virtual ~BoxingBuilder() = default;
  virtual llvm::StringRef name() const = 0;
  virtual Value build(OpBuilder &b, Location loc, Value in, int64_t dim, SbpDim from, SbpDim to,
                      RankedTensorType outType) const = 0;
};

// One boxing op, for the changes it accepts (BoxingOpInterface).
template <typename OpT> struct SingleOpBuilder : BoxingBuilder {
  explicit SingleOpBuilder(llvm::StringRef n) : n(n) {}
  llvm::StringRef n;
  llvm::StringRef name() const override { return n; }
  Value build(OpBuilder &b, Location loc, Value in, int64_t dim, SbpDim from, SbpDim to,
              RankedTensorType outType) const override {
    if (!OpT::acceptsChange(from, to))
      return {};
    if constexpr (std::is_same_v<OpT, AllReduceOp>)
      return b.create<AllReduceOp>(loc, TypeRange{outType}, ValueRange{in}, dim).getResult(0);
    else
      return b.create<OpT>(loc, outType, in, dim).getResult();
  }
};

// S(i) -> P: gather to B, then keep one rank's copy.
struct GatherThenZeroBuilder : BoxingBuilder {
  llvm::StringRef name() const override { return "all-gather+zero-others"; }
  Value build(OpBuilder &b, Location loc, Value in, int64_t dim, SbpDim from, SbpDim to,
              RankedTensorType outType) const override {
    if (from.kind != SbpKind::Split || !isPartial(to))
      return {};
    auto dims = getSbpDims(getSbp(outType));
    dims[dim] = broadcastDim();
    auto mid = withSbp(outType, makeSbpTensorAttr(b.getContext(),
                                                  getSbp(outType).getPlacement().getValue(), dims));
    Value gathered = b.create<AllGatherOp>(loc, mid, in, dim).getResult();
    return b.create<ZeroOthersOp>(loc, outType, gathered, dim).getResult();
  }
};

const std::vector<std::unique_ptr<BoxingBuilder>> &builderChain() {
  static const std::vector<std::unique_ptr<BoxingBuilder>> chain = [] {
    std::vector<std::unique_ptr<BoxingBuilder>> c;
    c.push_back(std::make_unique<SingleOpBuilder<AllReduceOp>>("all-reduce"));
    c.push_back(std::make_unique<SingleOpBuilder<ReduceScatterOp>>("reduce-scatter"));
    c.push_back(std::make_unique<SingleOpBuilder<AllGatherOp>>("all-gather"));
    c.push_back(std::make_unique<SingleOpBuilder<AllToAllOp>>("all-to-all"));
    c.push_back(std::make_unique<SingleOpBuilder<SliceOp>>("slice"));
    c.push_back(std::make_unique<SingleOpBuilder<ZeroOthersOp>>("zero-others"));
    c.push_back(std::make_unique<GatherThenZeroBuilder>());
    return c;
  }();
  return chain;
}

struct InsertBoxingPass : public sbp::impl::InsertBoxingPassBase<InsertBoxingPass> {
  CostModel model;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    for (auto fn : module.getOps<func::FuncOp>()) {
      // One boxed copy per (value, target), shared by later consumers.
      std::map<std::pair<const void *, const void *>, Value> boxed;
      llvm::SmallVector<Operation *> ops;
      for (Operation &op : fn.getBody().front())
        ops.push_back(&op);
      for (Operation *op : ops) {
        auto required = op->getAttrOfType<ArrayAttr>("sbp.operand_sbp");
        if (!required)
          continue;
        if (required.size() != op->getNumOperands()) {
          op->emitOpError("sbp.operand_sbp has ")
              << required.size() << " entries for " << op->getNumOperands() << " operands";
          return signalPassFailure();
        }
        for (unsigned i = 0; i < op->getNumOperands(); ++i) {
          auto target = dyn_cast<SbpTensorAttr>(required[i]);
          if (!target) {
            op->emitOpError("sbp.operand_sbp entry #") << i << " is not an #sbp.t encoding";
            return signalPassFailure();
          }
          Value v = op->getOperand(i);
          if (getSbp(v.getType()) == target)
            continue;
          std::pair<const void *, const void *> key{v.getAsOpaquePointer(),
                                                    target.getAsOpaquePointer()};
          auto it = boxed.find(key);
          if (it == boxed.end()) {
            OpBuilder b(op);
            FailureOr<Value> out = box(b, op, i, v, target);
            if (failed(out))
              return signalPassFailure();
            it = boxed.insert({key, *out}).first;
          }
          op->setOperand(i, it->second);
        }
        op->removeAttr("sbp.operand_sbp");
      }
    }
    if (failed(verifyNoImplicitBoxing(module)))
      signalPassFailure();
  }

  FailureOr<Value> box(OpBuilder &b, Operation *user, unsigned operandIndex, Value v,
                       SbpTensorAttr target) {
    SbpTensorAttr source = getSbp(v.getType());
    if (!source)
      return user->emitOpError("operand #") << operandIndex << " has no SBP; run sbp-propagate";
    if (source.getPlacement() != target.getPlacement())
      return user->emitOpError("operand #")
             << operandIndex << " lives on " << source.getPlacement() << " but is needed on "
             << target.getPlacement() << ": transfers between placements are not supported yet";
    auto cur = getSbpDims(source), want = getSbpDims(target);
    if (cur.size() != want.size())
      return user->emitOpError("operand #") << operandIndex << " has a hierarchy of " << cur.size()
                                            << " but " << want.size() << " is required";
    auto placementOp =
        SymbolTable::lookupNearestSymbolFrom<PlacementOp>(user, target.getPlacement());
    if (!placementOp)
      return user->emitOpError("operand #")
             << operandIndex << " needs undeclared placement " << target.getPlacement();
    NdBoxingPlan plan = planNdBoxing(model, cast<RankedTensorType>(v.getType()), cur, want,
                                     placementOp.getHierarchy());
    if (plan.cost == std::numeric_limits<double>::infinity())
      return user->emitOpError("operand #")
             << operandIndex << ": no order of single-dimension steps boxes " << toString(cur)
             << " into " << toString(want);
    if (plan.steps.size() > 1 && isSbpDebugEnabled(kDebugType)) {
      llvm::dbgs() << "[" << kDebugType << "] order:";
      for (auto [k, step] : llvm::enumerate(plan.steps))
        llvm::dbgs() << (k ? ", " : " ") << "dim " << step.dim
                     << (step.to == want[step.dim] ? "" : " to " + toString(step.to));
      llvm::dbgs() << " for operand #" << operandIndex << " of " << user->getName() << " "
                   << toString(cur) << " -> " << toString(want) << " (cost " << plan.cost
                   << " s)\n";
    }
    StringRef placement = target.getPlacement().getValue();
    for (const NdBoxingStep &step : plan.steps) {
      const unsigned d = step.dim;
      auto next = cur;
      next[d] = step.to;
      RankedTensorType outType =
          withSbp(v.getType(), makeSbpTensorAttr(&getContext(), placement, next));
      Value out;
      for (const auto &builder : builderChain()) {
        out = builder->build(b, user->getLoc(), v, d, cur[d], next[d], outType);
        if (!out)
          continue;
        if (isSbpDebugEnabled(kDebugType))
          llvm::dbgs() << "[" << kDebugType << "] " << builder->name() << ": operand #"
                       << operandIndex << " of " << user->getName() << " " << toString(cur[d])
                       << " -> " << toString(next[d]) << " on dim " << d << "\n";
        break;
      }
      if (!out)
        return user->emitOpError("no boxing from ")
               << toString(cur[d]) << " to " << toString(next[d]) << " on hierarchy dim " << d
               << " for operand #" << operandIndex;
      v = out;
      cur = next;
    }
    return v;
  }
};

} // namespace
