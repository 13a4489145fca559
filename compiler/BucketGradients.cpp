// sbp-bucket-gradients: fuses the P -> B all-reduces of gradients (those that
// feed an optimiser) into buckets of at most `bucket-bytes`, in the order backward
// produces the gradients, and issues each bucket right after its last
// gradient is produced so that it overlaps the rest of backward (as DDP does).
#include "compiler/Passes.h"
#include "ops/Cost.h"

#include "runtime/Shape.h"

#include "mlir/Analysis/TopologicalSortUtils.h"

#include <map>
#include <set>

namespace mlir::sbp {
#define GEN_PASS_DEF_BUCKETGRADIENTSPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;

namespace {

struct BucketGradientsPass : public sbp::impl::BucketGradientsPassBase<BucketGradientsPass> {
  using Base::Base;

  struct Candidate {
    AllReduceOp op;
    Operation *producer;
    unsigned position;
    int64_t bytes;
  };

  void runOnOperation() override {
    if (bucketBytes <= 0) {
      getOperation().emitError("sbp-bucket-gradients: bucket-bytes must be positive, got ")
          << static_cast<int64_t>(bucketBytes);
      return signalPassFailure();
    }
    SymbolTableCollection symbols;
    for (auto fn : getOperation().getOps<func::FuncOp>()) {
      // Dimension by dimension: the buckets of dim d feed those of dim d+1
      // (a 2-D placement reduces a gradient over both dimensions).
      std::set<int64_t> dims;
      for (auto ar : fn.getBody().front().getOps<AllReduceOp>())
        dims.insert(ar.getDim());
      for (int64_t dim : dims)
        bucketDim(fn, dim, symbols);
    }
  }

  void bucketDim(func::FuncOp fn, int64_t dim, SymbolTableCollection &symbols) {
    Block &body = fn.getBody().front();
    llvm::DenseMap<Operation *, unsigned> position;
    unsigned n = 0;
    for (Operation &op : body)
      position[&op] = n++;
    // Buckets never mix placements.
    std::map<const void *, std::vector<Candidate>> groups;
    for (auto ar : body.getOps<AllReduceOp>()) {
      // A compressed all-reduce travels alone.
      if (static_cast<int64_t>(ar.getDim()) != dim || ar.getInputs().size() != 1 ||
          ar.getCodecAttr() || !feedsOptimizer(ar))
        continue;
      Value in = ar.getInputs()[0];
      Operation *producer = in.getDefiningOp();
      if (!producer || producer->getBlock() != &body)
        continue;
      SbpTensorAttr enc = getSbp(in.getType());
      auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(ar, enc.getPlacement());
      if (!placement)
        continue;
      auto type = cast<RankedTensorType>(in.getType());
      auto sbp = getSbpDims(enc);
      int64_t bytes =
          sbpflow::maxLocalElements(type.getShape().vec(), sbpflow::NdSbp(sbp.begin(), sbp.end()),
                                    placement.getHierarchy().vec()) *
          elementBytes(type.getElementType());
      groups[enc.getPlacement().getAsOpaquePointer()].push_back(
          {ar, producer, position[producer], bytes});
    }
    for (auto &[key, cands] : groups) {
      llvm::stable_sort(
          cands, [](const Candidate &a, const Candidate &b) { return a.position < b.position; });
      std::vector<Candidate> bucket;
      int64_t size = 0;
      for (const Candidate &c : cands) {
        if (!bucket.empty() && size + c.bytes > bucketBytes) {
          flush(bucket);
          bucket.clear();
          size = 0;
        }
        bucket.push_back(c);
        size += c.bytes;
      }
      flush(bucket);
    }
  }

  void flush(std::vector<Candidate> &bucket) {
    if (bucket.empty())
      return;
    Operation *last = bucket.back().producer;
    if (bucket.size() == 1) {
      bucket.front().op->moveAfter(last);
      keepUsersAfter(bucket.front().op);
      sortTopologically(last->getBlock());
      return;
    }
    llvm::SmallVector<Value> inputs;
    llvm::SmallVector<Type> types;
    for (Candidate c : bucket) {
      inputs.push_back(c.op.getInputs()[0]);
      types.push_back(c.op.getResult(0).getType());
    }
    OpBuilder b(last->getContext());
    b.setInsertionPointAfter(last);
    auto fused = b.create<AllReduceOp>(bucket.front().op.getLoc(), types, inputs,
                                       bucket.front().op.getDim());
    for (auto [i, c0] : llvm::enumerate(bucket)) {
      Candidate c = c0;
      c.op.getResult(0).replaceAllUsesWith(fused.getResult(i));
      c.op.erase();
    }
    keepUsersAfter(fused);
    sortTopologically(fused->getBlock());
  }

  // The consumers of a bucket may sit before its new position (boxing chains
  // interleave with the optimiser ops); moving them, and in turn their consumers,
  // later keeps every value defined before its uses. A moved consumer may read
  // another value defined after the bucket (an optimiser reads the clipping
  // scale): the stable topological sort after it (which leaves an ordered
  // block as it is) moves such a consumer after that value.
  void keepUsersAfter(Operation *op) {
    llvm::SmallVector<Operation *> early;
    for (Operation *user : op->getUsers())
      if (user->isBeforeInBlock(op) && !llvm::is_contained(early, user))
        early.push_back(user);
    llvm::sort(early, [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
    Operation *after = op;
    for (Operation *user : early) {
      user->moveAfter(after);
      keepUsersAfter(user);
      after = user;
    }
  }
};

} // namespace

bool mlir::sbp::feedsOptimizer(AllReduceOp ar) {
  return !ar->use_empty() && llvm::all_of(ar->getUsers(), [](Operation *u) {
    auto next = dyn_cast<AllReduceOp>(u);
    return isa<OptimizerOpInterface, SquareSumOp>(u) ||
           (next && next.getInputs().size() == 1 && feedsOptimizer(next));
  });
}
