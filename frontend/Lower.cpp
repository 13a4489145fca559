// Lowering half of the DSL: emits the traced graph as an `sbp` module with a
// `train` function (forward + loss + minimize + loss metric) and an `eval`
// function (forward + loss + user metrics + outputs, dropout left out), each
// holding only the nodes its roots need. Every op carries the user's source
// line as its location.
#include "frontend/Graph.h"
#include "ir/SbpDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <set>

namespace sbpflow {

namespace {

using namespace mlir;

class Lowering {
public:
  Lowering(const Graph &g, MLIRContext &ctx) : g_(g), ctx_(ctx), b_(&ctx) {}

  OwningOpRef<ModuleOp> run() {
    auto module = ModuleOp::create(loc(SourceLoc{"<model>", 0}), StringRef(g_.name()));
    b_.setInsertionPointToEnd(module.getBody());
    for (const PlacementDecl &p : g_.placements()) {
      int64_t n = 1;
      for (int64_t d : p.spec.hierarchy)
        n *= d;
      std::vector<int64_t> ranks(n);
      for (int64_t i = 0; i < n; ++i)
        ranks[i] = i;
      b_.create<sbp::PlacementOp>(loc(SourceLoc{"<model>", 0}), p.name,
                                  p.spec.device == DeviceKind::cpu ? sbp::DeviceKind::cpu
                                                                   : sbp::DeviceKind::cuda,
                                  ranks, p.spec.hierarchy);
    }
    for (const Node &n : g_.nodes()) {
      if (n.kind != NodeKind::Parameter)
        continue;
      auto init = sbp::InitAttr::get(&ctx_, initKind(n.init.kind), llvm::APFloat(n.init.a),
                                     llvm::APFloat(n.init.b));
      b_.create<sbp::VariableOp>(loc(n.loc), n.name, TypeAttr::get(typeOf(n)), init,
                                 b_.getI64IntegerAttr(static_cast<int64_t>(n.seed)));
    }
    if (g_.training) {
      emitFunction("train", {g_.training->loss}, /*train=*/true, [&](auto &values) {
        const Graph::Training &t = *g_.training;
        Value lossValue = values.at(t.loss);
        b_.create<sbp::MetricOp>(loc(t.loc), "loss", lossValue);
        FloatAttr maxGradNorm;
        if (t.maxGradNorm)
          maxGradNorm = b_.getF32FloatAttr(static_cast<float>(*t.maxGradNorm));
        b_.create<sbp::MinimizeOp>(loc(t.loc), lossValue, optimizerAttr(t.optimizer), maxGradNorm);
      });
    }
    // @eval exists when the model asks for evaluation (a metric or an
    // output): a training-only model (a benchmark) gets no validation pass.
    std::vector<int> evalRoots;
    for (auto &[name, id] : g_.evalMetrics)
      evalRoots.push_back(id);
    for (auto &[name, id] : g_.outputs)
      evalRoots.push_back(id);
    if (!evalRoots.empty() && g_.training)
      evalRoots.push_back(g_.training->loss);
    if (!evalRoots.empty()) {
      emitFunction("eval", evalRoots, /*train=*/false, [&](auto &values) {
        if (g_.training)
          b_.create<sbp::MetricOp>(loc(g_.training->loc), "loss", values.at(g_.training->loss));
        for (auto &[name, id] : g_.evalMetrics)
          b_.create<sbp::MetricOp>(loc(g_.node(id).loc), name, values.at(id));
        for (auto &[name, id] : g_.outputs)
          b_.create<sbp::OutputOp>(loc(g_.node(id).loc), StringRef(name), values.at(id));
      });
    }
    return module;
  }

private:
  Location loc(const SourceLoc &l) { return FileLineColLoc::get(&ctx_, l.file, l.line, 0); }

  static sbp::InitKind initKind(Init::Kind k) {
    switch (k) {
    case Init::Zeros:
      return sbp::InitKind::zeros;
    case Init::Constant:
      return sbp::InitKind::constant;
    case Init::Uniform:
      return sbp::InitKind::uniform;
    case Init::Normal:
      return sbp::InitKind::normal;
    }
    llvm_unreachable("unknown init kind");
  }

  Attribute optimizerAttr(const optim::Optimizer &optimizer) {
    if (const auto *o = std::get_if<optim::SGD>(&optimizer))
      return sbp::SgdAttr::get(&ctx_, llvm::APFloat(o->lr), llvm::APFloat(o->momentum),
                               llvm::APFloat(o->weight_decay));
    const auto &a = std::get<optim::AdamW>(optimizer);
    return sbp::AdamWAttr::get(&ctx_, llvm::APFloat(a.lr), llvm::APFloat(a.beta1),
                               llvm::APFloat(a.beta2), llvm::APFloat(a.eps),
                               llvm::APFloat(a.weight_decay));
  }

  RankedTensorType typeOf(const Node &n) {
    Type elem = n.dtype == DType::f32 ? Type(b_.getF32Type()) : Type(b_.getI32Type());
    Attribute encoding;
    // No encoding leaves the SBP to sbp-propagate (for a variable too: it
    // then lives on the module's first placement).
    if (n.sbp) {
      llvm::SmallVector<sbp::SbpDim, 2> dims;
      for (const Sbp &s : *n.sbp) {
        switch (s.kind) {
        case Sbp::Split:
          dims.push_back(sbp::splitDim(s.axis));
          break;
        case Sbp::Broadcast:
          dims.push_back(sbp::broadcastDim());
          break;
        case Sbp::Partial:
          dims.push_back(sbp::partialSumDim());
          break;
        }
      }
      encoding = sbp::makeSbpTensorAttr(&ctx_, g_.placements().at(n.placement).name, dims);
    }
    return RankedTensorType::get(n.shape, elem, encoding);
  }

  // `train`: dropout is applied; otherwise (@eval) it is the identity.
  template <typename Finish>
  void emitFunction(StringRef name, const std::vector<int> &roots, bool train, Finish finish) {
    std::set<int> needed;
    std::vector<int> stack(roots.begin(), roots.end());
    while (!stack.empty()) {
      int id = stack.back();
      stack.pop_back();
      if (!needed.insert(id).second)
        continue;
      for (int in : g_.node(id).inputs)
        stack.push_back(in);
    }
    OpBuilder::InsertionGuard guard(b_);
    auto fn =
        b_.create<func::FuncOp>(loc(SourceLoc{"<model>", 0}), name, b_.getFunctionType({}, {}));
    b_.setInsertionPointToEnd(fn.addEntryBlock());
    std::map<int, Value> values;
    for (int id : needed) { // ids are in creation order: a topological order
      const Node &n = g_.node(id);
      values[id] =
          n.kind == NodeKind::Dropout && !train ? values.at(n.inputs.at(0)) : emitNode(n, values);
    }
    finish(values);
    b_.create<func::ReturnOp>(loc(SourceLoc{"<model>", 0}));
  }

  Value emitNode(const Node &n, const std::map<int, Value> &values) {
    auto in = [&](int i) { return values.at(n.inputs.at(i)); };
    Location l = loc(n.loc);
    RankedTensorType t = typeOf(n);
    switch (n.kind) {
    case NodeKind::Input:
      return b_.create<sbp::InputOp>(l, t, n.name);
    case NodeKind::Parameter:
      return b_.create<sbp::ParameterOp>(l, t, n.name);
    case NodeKind::MatMul:
      return b_.create<sbp::MatmulOp>(l, t, in(0), in(1), n.transposeA, n.transposeB);
    case NodeKind::BiasAdd:
      return b_.create<sbp::BiasAddOp>(l, t, in(0), in(1));
    case NodeKind::Add:
      return b_.create<sbp::AddOp>(l, t, in(0), in(1));
    case NodeKind::Relu:
      return b_.create<sbp::ReluOp>(l, t, in(0));
    case NodeKind::SoftmaxXent:
      return b_.create<sbp::SoftmaxXentOp>(l, t, in(0), in(1));
    case NodeKind::Mean:
      return b_.create<sbp::MeanOp>(l, t, in(0));
    case NodeKind::CountCorrect:
      return b_.create<sbp::CountCorrectOp>(l, t, in(0), in(1));
    case NodeKind::Embedding:
      return b_.create<sbp::EmbeddingOp>(l, t, in(0), in(1));
    case NodeKind::LayerNorm:
      return b_.create<sbp::LayerNormOp>(l, t, in(0), in(1), in(2),
                                         b_.getF32FloatAttr(static_cast<float>(n.eps)));
    case NodeKind::Gelu:
      return b_.create<sbp::GeluOp>(l, t, in(0));
    case NodeKind::Softmax:
      return b_.create<sbp::SoftmaxOp>(l, t, in(0));
    case NodeKind::CausalAttention:
      return b_.create<sbp::CausalAttentionOp>(l, t, in(0), in(1), in(2),
                                               b_.getI64IntegerAttr(n.heads));
    case NodeKind::Dropout:
      return b_.create<sbp::DropoutOp>(l, t, in(0), b_.getF32FloatAttr(static_cast<float>(n.p)),
                                       b_.getI64IntegerAttr(static_cast<int64_t>(n.seed)));
    case NodeKind::Reshape:
      return b_.create<sbp::ReshapeOp>(l, t, in(0));
    case NodeKind::Transpose:
      return b_.create<sbp::TransposeOp>(l, t, in(0), b_.getDenseI64ArrayAttr(n.perm));
    case NodeKind::Narrow:
      return b_.create<sbp::NarrowOp>(l, t, in(0), b_.getI64IntegerAttr(n.axis),
                                      b_.getI64IntegerAttr(n.begin));
    case NodeKind::Concat: {
      llvm::SmallVector<Value> operands;
      for (int id : n.inputs)
        operands.push_back(values.at(id));
      return b_.create<sbp::ConcatOp>(l, t, operands, b_.getI64IntegerAttr(n.axis));
    }
    }
    llvm_unreachable("unknown node kind");
  }

  const Graph &g_;
  MLIRContext &ctx_;
  OpBuilder b_;
};

} // namespace

OwningOpRef<ModuleOp> Model::toMLIR(MLIRContext &context) const {
  context.getOrLoadDialect<sbp::SbpDialect>();
  context.getOrLoadDialect<func::FuncDialect>();
  return Lowering(*graph_, context).run();
}

} // namespace sbpflow
