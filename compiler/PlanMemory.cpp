// sbp-plan-memory: per function, assigns every activation an arena offset
// (64-byte aligned) from its lifetime in op order (first definition to last
// use; metrics to the end of the step), reusing freed space best-fit. An all-reduce result
// aliases its operand (in place) when the all-reduce is the operand's only user: another
// reader would otherwise see the reduced bytes. Parameters are views of variables and get no
// offset (-1). Records
// `sbp.offset` (one per result) on ops and `sbp.arena_bytes` on funcs.
#include "compiler/Passes.h"
#include "ops/Cost.h"

#include "runtime/Shape.h"
#include "runtime/plan/OpInfo.h"

#include <map>

namespace mlir::sbp {
#define GEN_PASS_DEF_PLANMEMORYPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

constexpr int64_t kAlign = 64;
int64_t alignUp(int64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// A view of a variable (Ops.def category View) has no buffer of its own.
bool isView(Operation *op) {
  auto planOp = dyn_cast<PlanOpInterface>(op);
  const sbpflow::OpInfo *info = planOp ? sbpflow::opInfo(planOp.getPlanKind()) : nullptr;
  return info && info->category == sbpflow::OpCategory::View;
}

struct PlanMemoryPass : public sbp::impl::PlanMemoryPassBase<PlanMemoryPass> {
  void runOnOperation() override {
    SymbolTableCollection symbols;
    for (auto fn : getOperation().getOps<func::FuncOp>())
      if (failed(plan(fn, symbols)))
        return signalPassFailure();
  }

  struct Buffer {
    Value root;
    unsigned def = 0, lastUse = 0;
    int64_t bytes = 0;
    int64_t offset = -1;
  };

  LogicalResult plan(func::FuncOp fn, SymbolTableCollection &symbols) {
    Block &body = fn.getBody().front();
    llvm::DenseMap<Operation *, unsigned> index;
    unsigned n = 0;
    for (Operation &op : body)
      index[&op] = n++;

    // Alias roots: an all-reduce result shares its operand's buffer when nothing else reads
    // the operand (the reduction overwrites it).
    llvm::DenseMap<Value, Value> root;
    std::vector<Buffer> buffers;
    llvm::DenseMap<Value, size_t> bufferOf;
    for (Operation &op : body) {
      for (auto [i, r] : llvm::enumerate(op.getResults())) {
        auto type = dyn_cast<RankedTensorType>(r.getType());
        if (!type || isView(&op))
          continue;
        if (Value in = inPlaceOperand(&op, i); in && root.count(in)) {
          root[r] = root.lookup(in);
          continue;
        }
        SbpTensorAttr enc = getSbp(type);
        if (!enc)
          return op.emitOpError("result #") << i << " has no SBP; run sbp-propagate first";
        auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(&op, enc.getPlacement());
        if (!placement)
          return op.emitOpError("references undeclared placement ") << enc.getPlacement();
        auto dims = getSbpDims(enc);
        int64_t elems = sbpflow::maxLocalElements(type.getShape().vec(),
                                                  sbpflow::NdSbp(dims.begin(), dims.end()),
                                                  placement.getHierarchy().vec());
        Buffer buf;
        buf.root = r;
        buf.def = buf.lastUse = index[&op];
        buf.bytes = alignUp(std::max<int64_t>(1, elems * elementBytes(type.getElementType())));
        root[r] = r;
        bufferOf[r] = buffers.size();
        buffers.push_back(buf);
      }
    }
    for (auto &[v, r] : root) {
      Buffer &buf = buffers[bufferOf[r]];
      for (Operation *user : v.getUsers()) {
        // The driver reads metrics and outputs after the step: they live to the end.
        unsigned at = isa<MetricOp, OutputOp>(user) ? n : index[body.findAncestorOpInBlock(*user)];
        buf.lastUse = std::max(buf.lastUse, at);
      }
      if (Operation *def = v.getDefiningOp())
        buf.lastUse = std::max(buf.lastUse, index[def]);
    }

    // Buffers are created in definition order; live ones sorted by offset.
    std::multimap<int64_t, size_t> live;
    int64_t arena = 0;
    for (size_t b = 0; b < buffers.size(); ++b) {
      Buffer &buf = buffers[b];
      for (auto it = live.begin(); it != live.end();)
        it = buffers[it->second].lastUse < buf.def ? live.erase(it) : std::next(it);
      int64_t bestOffset = -1, bestGap = std::numeric_limits<int64_t>::max();
      int64_t cursor = 0;
      for (auto &[off, idx] : live) {
        int64_t gap = off - cursor;
        if (gap >= buf.bytes && gap < bestGap) {
          bestGap = gap;
          bestOffset = cursor;
        }
        cursor = std::max(cursor, off + buffers[idx].bytes);
      }
      buf.offset = bestOffset >= 0 ? bestOffset : cursor;
      live.insert({buf.offset, b});
      arena = std::max(arena, buf.offset + buf.bytes);
    }

    Builder builder(&getContext());
    for (Operation &op : body) {
      if (op.getNumResults() == 0)
        continue;
      llvm::SmallVector<int64_t> offsets;
      for (Value r : op.getResults()) {
        auto it = root.find(r);
        offsets.push_back(it == root.end() ? -1 : buffers[bufferOf[it->second]].offset);
      }
      op.setAttr("sbp.offset", builder.getDenseI64ArrayAttr(offsets));
    }
    fn->setAttr("sbp.arena_bytes", builder.getI64IntegerAttr(arena));
    return success();
  }
};

} // namespace

Value mlir::sbp::inPlaceOperand(Operation *op, unsigned i) {
  auto ar = dyn_cast<AllReduceOp>(op);
  if (!ar)
    return {};
  Value in = ar.getInputs()[i];
  bool onlyReader = llvm::all_of(in.getUses(), [&](OpOperand &use) {
    return use.getOwner() == op && use.getOperandNumber() == i;
  });
  return onlyReader ? in : Value();
}
