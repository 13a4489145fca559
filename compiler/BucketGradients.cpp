// sbp-bucket-gradients: fuses the P -> B all-reduces of gradients (those that
// feed an optimiser) into buckets of at most `bucket-bytes`, in the order backward
// produces the gradients, and issues each bucket right after its last
// gradient is produced so that it overlaps the rest of backward (as DDP does).
// Compressed all-reduces are fused only under PowerSGD, whose matrices then
// share their two small all-reduces, as PyTorch's PowerSGD hook does for a
// bucket; a fused one keeps the first's step counter and seed, and the
// others' counters go. Under L-GreCo the layers are then numbered again in
// block order, so that a fused all-reduce's are consecutive. Every other
// compressed all-reduce travels alone, issued right after its gradient.
#include "compiler/Passes.h"
#include "ops/Cost.h"

#include "runtime/Shape.h"

#include "mlir/Analysis/TopologicalSortUtils.h"

#include <map>
#include <set>
#include <tuple>

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
      if (failed(numberLgrecoLayers(fn)))
        return signalPassFailure();
    }
  }

  // L-GreCo's layers 0, 1, ... in block order, a fused all-reduce's in turn.
  LogicalResult numberLgrecoLayers(func::FuncOp fn) {
    int64_t next = 0, layers = -1;
    for (auto ar : fn.getBody().front().getOps<AllReduceOp>()) {
      LgrecoAttr lg = ar.getLgrecoAttr();
      if (!lg)
        continue;
      layers = lg.getLayers();
      ar.setLgrecoAttr(LgrecoAttr::get(lg.getContext(), lg.getCandidates(), lg.getDefaultIndex(),
                                       next, lg.getLayers(), lg.getEvery()));
      next += static_cast<int64_t>(ar.getInputs().size());
    }
    if (layers >= 0 && next != layers)
      return fn.emitError("sbp-bucket-gradients: L-GreCo's all-reduces hold ")
             << next << " layers, their attributes say " << layers;
    return success();
  }

  void bucketDim(func::FuncOp fn, int64_t dim, SymbolTableCollection &symbols) {
    Block &body = fn.getBody().front();
    llvm::DenseMap<Operation *, unsigned> position;
    unsigned n = 0;
    for (Operation &op : body)
      position[&op] = n++;
    // Buckets never mix placements.
    std::map<const void *, std::vector<Candidate>> groups;
    // PowerSGD's, by placement and codec (its seed aside).
    std::map<std::tuple<const void *, const void *, const void *>, std::vector<Candidate>>
        powerGroups;
    std::vector<Candidate> alone;
    for (auto ar : body.getOps<AllReduceOp>()) {
      if (static_cast<int64_t>(ar.getDim()) != dim || ar.getInputs().size() != 1 ||
          !feedsOptimizer(ar))
        continue;
      Value in = ar.getInputs()[0];
      Operation *producer = in.getDefiningOp();
      if (!producer || producer->getBlock() != &body)
        continue;
      SbpTensorAttr enc = getSbp(in.getType());
      auto placement = symbols.lookupNearestSymbolFrom<PlacementOp>(ar, enc.getPlacement());
      CodecAttr codec = ar.getCodecAttr();
      if (codec && (codec.getKind() != CodecKind::powersgd || !placement)) {
        alone.push_back({ar, producer, position[producer], 0});
        continue;
      }
      if (!placement)
        continue;
      auto type = cast<RankedTensorType>(in.getType());
      auto sbp = getSbpDims(enc);
      int64_t bytes =
          sbpflow::maxLocalElements(type.getShape().vec(), sbpflow::NdSbp(sbp.begin(), sbp.end()),
                                    placement.getHierarchy().vec()) *
          elementBytes(type.getElementType());
      const Candidate c{ar, producer, position[producer], bytes};
      if (codec)
        powerGroups[{enc.getPlacement().getAsOpaquePointer(), withoutSeed(codec),
                     withoutLayer(ar.getLgrecoAttr())}]
            .push_back(c);
      else
        groups[enc.getPlacement().getAsOpaquePointer()].push_back(c);
    }
    for (auto &[key, cands] : groups)
      bucketInOrder(cands, [&](std::vector<Candidate> &b) { flush(b); });
    for (auto &[key, cands] : powerGroups)
      bucketInOrder(cands, [&](std::vector<Candidate> &b) { flushPowerSgd(b, symbols); });
    for (Candidate &c : alone) {
      std::vector<Candidate> one{c};
      flush(one);
    }
  }

  // A codec's identity apart from its seed (one per parameter).
  static const void *withoutSeed(CodecAttr c) {
    CodecFields f = CodecFields::of(c);
    f.seed = 0;
    return f.get(c.getContext()).getAsOpaquePointer();
  }

  // L-GreCo's attribute apart from the layer (null without L-GreCo).
  static const void *withoutLayer(LgrecoAttr lg) {
    if (!lg)
      return nullptr;
    return LgrecoAttr::get(lg.getContext(), lg.getCandidates(), lg.getDefaultIndex(), 0,
                           lg.getLayers(), lg.getEvery())
        .getAsOpaquePointer();
  }

  // Cuts `cands` in the order backward produces them into buckets of at
  // most bucket-bytes (a larger gradient alone) and hands each to `flushOne`.
  template <class Flush> void bucketInOrder(std::vector<Candidate> &cands, Flush flushOne) {
    llvm::stable_sort(
        cands, [](const Candidate &a, const Candidate &b) { return a.position < b.position; });
    std::vector<Candidate> bucket;
    int64_t size = 0;
    for (const Candidate &c : cands) {
      if (!bucket.empty() && size + c.bytes > bucketBytes) {
        flushOne(bucket);
        bucket.clear();
        size = 0;
      }
      bucket.push_back(c);
      size += c.bytes;
    }
    flushOne(bucket);
  }

  // PowerSGD's all-reduces in one, with the first's attributes (codec and
  // its seed, step counter, L-GreCo's) and every one's state in turn; the
  // others' counters go.
  void flushPowerSgd(std::vector<Candidate> &bucket, SymbolTableCollection &symbols) {
    if (bucket.size() < 2)
      return flush(bucket);
    AllReduceOp first = bucket.front().op;
    const DictionaryAttr attrs = first->getAttrDictionary();
    llvm::SmallVector<Attribute> state;
    llvm::SmallVector<FlatSymbolRefAttr> steps;
    for (Candidate &c : bucket) {
      llvm::append_range(state, c.op.getStateAttr());
      if (c.op != first)
        steps.push_back(c.op.getStepAttr());
    }
    AllReduceOp fused = fuse(bucket);
    fused->setAttrs(attrs);
    fused.setStateAttr(ArrayAttr::get(fused.getContext(), state));
    SymbolTable &table = symbols.getSymbolTable(getOperation());
    for (FlatSymbolRefAttr ref : steps)
      if (Operation *var = table.lookup(ref.getValue()))
        table.erase(var);
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
    fuse(bucket);
  }

  // One all-reduce of the bucket's inputs right after its last gradient, in
  // place of theirs.
  AllReduceOp fuse(std::vector<Candidate> &bucket) {
    Operation *last = bucket.back().producer;
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
    return fused;
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
