// The DSL's trace: the model's sbp ops in its own MLIR context, each checked by
// its op's verifier when it is created, and the module with the train and eval
// functions made by cloning the ops their roots need.
#include "frontend/Graph.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Verifier.h"

#include <functional>

namespace sbpflow {

using namespace mlir;

namespace {
const SourceLoc kModelLoc{"<model>", 0};
} // namespace

Graph::Graph(std::string name, uint64_t seed) : name_(std::move(name)), seed_(seed) {
  context_.loadDialect<sbp::SbpDialect, func::FuncDialect>();
  // An error names the user's line; the op it was made for is not printed.
  context_.printOpOnDiagnostic(false);
  trace_ = ModuleOp::create(location(kModelLoc), StringRef(name_));
  OpBuilder b(&context_);
  b.setInsertionPointToEnd(trace_->getBody());
  auto fn = b.create<func::FuncOp>(location(kModelLoc), "trace", b.getFunctionType({}, {}));
  body_ = fn.addEntryBlock();
}

Graph::~Graph() = default;

Location Graph::location(const SourceLoc &loc) {
  return FileLineColLoc::get(&context_, loc.file, loc.line, 0);
}

OpBuilder Graph::traceBuilder() {
  OpBuilder b(&context_);
  b.setInsertionPointToEnd(body_);
  return b;
}

void Graph::verifyCreated(Operation *op, const SourceLoc &loc, const std::string &what) {
  std::string message;
  bool ok;
  {
    ScopedDiagnosticHandler capture(&context_, [&](Diagnostic &d) {
      if (message.empty())
        message = d.str();
      return success();
    });
    ok = true;
    // The result types the op's shape rule gives (a source keeps its SBP).
    if (auto semantics = dyn_cast<sbp::SbpOpInterface>(op)) {
      llvm::SmallVector<RankedTensorType> types;
      ok = succeeded(semantics.inferResultTypes(types));
      for (auto [r, t] : llvm::zip(op->getResults(), types))
        r.setType(sbp::withSbp(t, sbp::getSbp(r.getType())));
    }
    SymbolTableCollection symbols;
    auto user = dyn_cast<SymbolUserOpInterface>(op);
    ok = ok && succeeded(verify(op, /*verifyRecursively=*/false)) &&
         (!user || succeeded(user.verifySymbolUses(symbols)));
  }
  if (!ok) {
    op->erase();
    throw ModelError(loc, what + message);
  }
}

Tensor Graph::add(Value value, int placement) {
  auto type = llvm::cast<RankedTensorType>(value.getType());
  tensors_.push_back({value, type.getShape().vec(), placement});
  return Tensor(this, static_cast<int>(tensors_.size()) - 1);
}

DType Graph::dtype(int id) const {
  Type e = llvm::cast<RankedTensorType>(tensors_.at(id).value.getType()).getElementType();
  return e.isSignlessInteger(32) ? DType::i32 : DType::f32;
}

const Graph &Graph::check(Tensor t) const {
  if (t.graph() != this)
    throw std::logic_error("tensor of another model");
  return *this;
}

uint64_t Graph::parameterSeed(const std::string &name) const {
  uint64_t h = 1469598103934665603ull; // FNV-1a
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h ^ (seed_ * 0x9e3779b97f4a7c15ull);
}

int Graph::addPlacement(PlacementDecl decl, const SourceLoc &loc) {
  const std::vector<int64_t> &hierarchy = decl.spec.hierarchy;
  // Ranks 0 .. prod(hierarchy) - 1 (none where a dimension is not positive:
  // the placement's verifier says which).
  int64_t n = 1;
  for (int64_t d : hierarchy)
    n = d > 0 ? n * d : 0;
  std::vector<int64_t> ranks(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ranks[i] = i;
  OpBuilder b(&context_);
  b.setInsertionPoint(body_->getParentOp());
  auto op = b.create<sbp::PlacementOp>(location(loc), decl.name,
                                       decl.spec.device == DeviceKind::cpu ? sbp::DeviceKind::cpu
                                                                           : sbp::DeviceKind::cuda,
                                       ranks, hierarchy);
  verifyCreated(op, loc, "placement '" + decl.name + "': ");
  placements_.push_back(std::move(decl));
  return static_cast<int>(placements_.size()) - 1;
}

sbp::VariableOp Graph::addVariable(const std::string &name, RankedTensorType type, const Init &init,
                                   const SourceLoc &loc) {
  const std::string what = "parameter '" + name + "': ";
  sbp::InitKind kind = init.kind == Init::Zeros      ? sbp::InitKind::zeros
                       : init.kind == Init::Constant ? sbp::InitKind::constant
                       : init.kind == Init::Uniform  ? sbp::InitKind::uniform
                                                     : sbp::InitKind::normal;
  auto initAttr =
      attribute<sbp::InitAttr>(loc, what, kind, llvm::APFloat(init.a), llvm::APFloat(init.b));
  OpBuilder b(&context_);
  b.setInsertionPoint(body_->getParentOp());
  auto op =
      b.create<sbp::VariableOp>(location(loc), name, TypeAttr::get(type), initAttr,
                                b.getI64IntegerAttr(static_cast<int64_t>(parameterSeed(name))));
  verifyCreated(op, loc, what);
  return op;
}

sbp::VariableOp Graph::variable(const std::string &name) {
  return trace_->lookupSymbol<sbp::VariableOp>(name);
}

OwningOpRef<ModuleOp> Graph::toModule() {
  OwningOpRef<ModuleOp> module = ModuleOp::create(location(kModelLoc), StringRef(name_));
  OpBuilder b(&context_);
  b.setInsertionPointToEnd(module->getBody());
  for (auto p : trace_->getOps<sbp::PlacementOp>())
    b.clone(*p);
  for (auto v : trace_->getOps<sbp::VariableOp>())
    b.clone(*v);

  sbp::MinimizeOp minimize;
  llvm::SmallVector<sbp::MetricOp> metrics;
  llvm::SmallVector<sbp::OutputOp> outputs;
  for (Operation &op : *body_) {
    if (auto m = dyn_cast<sbp::MinimizeOp>(op))
      minimize = m;
    else if (auto m = dyn_cast<sbp::MetricOp>(op))
      metrics.push_back(m);
    else if (auto o = dyn_cast<sbp::OutputOp>(op))
      outputs.push_back(o);
  }

  // A function of the ops that `roots` need, in trace order (a topological
  // order); in @eval (not `train`) dropout is the identity.
  auto emitFunction = [&](StringRef name, llvm::ArrayRef<Value> roots, bool train,
                          const std::function<void(OpBuilder &, IRMapping &)> &finish) {
    llvm::DenseSet<Operation *> needed;
    llvm::SmallVector<Value> work(roots.begin(), roots.end());
    while (!work.empty()) {
      Operation *def = work.pop_back_val().getDefiningOp();
      if (def && needed.insert(def).second)
        work.append(def->operand_begin(), def->operand_end());
    }
    OpBuilder::InsertionGuard guard(b);
    auto fn = b.create<func::FuncOp>(location(kModelLoc), name, b.getFunctionType({}, {}));
    OpBuilder fb = OpBuilder::atBlockEnd(fn.addEntryBlock());
    IRMapping map;
    for (Operation &op : *body_) {
      if (!needed.count(&op))
        continue;
      if (!train && isa<sbp::DropoutOp>(op))
        map.map(op.getResult(0), map.lookup(op.getOperand(0)));
      else
        fb.clone(op, map);
    }
    finish(fb, map);
    fb.create<func::ReturnOp>(location(kModelLoc));
  };

  if (minimize)
    emitFunction("train", {minimize.getLoss()}, /*train=*/true, [&](OpBuilder &fb, IRMapping &map) {
      fb.create<sbp::MetricOp>(minimize.getLoc(), "loss", map.lookup(minimize.getLoss()));
      fb.clone(*minimize, map);
    });
  // @eval exists when the model asks for evaluation (a metric or an output):
  // a training-only model (a benchmark) gets no validation pass.
  if (!metrics.empty() || !outputs.empty()) {
    llvm::SmallVector<Value> roots;
    for (sbp::MetricOp m : metrics)
      roots.push_back(m.getValue());
    for (sbp::OutputOp o : outputs)
      roots.push_back(o.getValue());
    if (minimize)
      roots.push_back(minimize.getLoss());
    emitFunction("eval", roots, /*train=*/false, [&](OpBuilder &fb, IRMapping &map) {
      if (minimize)
        fb.create<sbp::MetricOp>(minimize.getLoc(), "loss", map.lookup(minimize.getLoss()));
      for (sbp::MetricOp m : metrics)
        fb.clone(*m, map);
      for (sbp::OutputOp o : outputs)
        fb.clone(*o, map);
    });
  }
  return module;
}

} // namespace sbpflow
