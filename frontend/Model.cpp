// Tracing half of the DSL: records nodes and checks shapes at the user's line.
// Lowering to MLIR is in Lower.cpp.
#include "frontend/Graph.h"

#include <cmath>
#include <sstream>

namespace sbpflow {

namespace {
std::string shapeStr(const std::vector<int64_t> &s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i)
    os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

Graph &graphOf(Tensor t, const SourceLoc &loc) {
  if (!t.graph())
    throw ModelError(loc, "use of an empty Tensor (not produced by a model)");
  return *t.graph();
}

void requireSameGraph(Tensor a, Tensor b, const SourceLoc &loc) {
  graphOf(a, loc);
  graphOf(b, loc);
  if (a.graph() != b.graph())
    throw ModelError(loc, "tensors from two different models");
}
} // namespace

ModelError::ModelError(const SourceLoc &loc, const std::string &what)
    : std::runtime_error(std::string(loc.file) + ":" + std::to_string(loc.line) + ": " + what) {}

Tensor Graph::add(Node node) {
  nodes_.push_back(std::move(node));
  return Tensor(this, static_cast<int>(nodes_.size()) - 1);
}

bool Graph::hasNamed(NodeKind kind, const std::string &name) const {
  for (const Node &n : nodes_)
    if (n.kind == kind && n.name == name)
      return true;
  return false;
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

const PlacementSpec &Placement::spec() const { return graph_->placements().at(id_).spec; }
const std::vector<int64_t> &Tensor::shape() const { return graph_->node(id_).shape; }
DType Tensor::dtype() const { return graph_->node(id_).dtype; }

Model::Model(std::string name, uint64_t seed)
    : graph_(std::make_unique<Graph>(std::move(name), seed)) {}
Model::~Model() = default;
const std::string &Model::name() const { return graph_->name(); }

Placement Model::placement(const std::string &name, PlacementSpec spec, SourceLoc loc) {
  if (spec.hierarchy.empty())
    throw ModelError(loc, "placement '" + name + "' has an empty hierarchy");
  for (int64_t d : spec.hierarchy)
    if (d < 1)
      throw ModelError(loc, "placement '" + name + "' has a hierarchy dimension < 1");
  for (const PlacementDecl &p : graph_->placements())
    if (p.name == name)
      throw ModelError(loc, "placement '" + name + "' declared twice");
  return Placement(graph_.get(), graph_->addPlacement({name, std::move(spec)}));
}

static void checkSbp(const std::vector<Sbp> &sbp, const PlacementSpec &p, size_t rank,
                     const std::string &what, const SourceLoc &loc) {
  if (sbp.size() != p.hierarchy.size())
    throw ModelError(loc, what + ": SBP has " + std::to_string(sbp.size()) +
                              " dimensions but the placement hierarchy has " +
                              std::to_string(p.hierarchy.size()));
  for (const Sbp &s : sbp)
    if (s.kind == Sbp::Split && (s.axis < 0 || static_cast<size_t>(s.axis) >= rank))
      throw ModelError(loc, what + ": split axis " + std::to_string(s.axis) +
                                " out of range for a tensor of rank " + std::to_string(rank));
}

Tensor Model::input(const std::string &field, std::vector<int64_t> shape, DType dtype,
                    Placement placement, std::vector<Sbp> sbp, SourceLoc loc) {
  if (placement.id() < 0)
    throw ModelError(loc, "input '" + field + "' has no placement");
  for (int64_t d : shape)
    if (d < 1)
      throw ModelError(loc, "input '" + field + "' has a dimension < 1: " + shapeStr(shape));
  checkSbp(sbp, placement.spec(), shape.size(), "input '" + field + "'", loc);
  if (graph_->hasNamed(NodeKind::Input, field))
    throw ModelError(loc, "input '" + field + "' declared twice");
  Node n{NodeKind::Input};
  n.shape = std::move(shape);
  n.dtype = dtype;
  n.name = field;
  n.placement = placement.id();
  n.sbp = std::move(sbp);
  n.loc = loc;
  return graph_->add(std::move(n));
}

void Model::minimize(Tensor loss, optim::SGD optimizer, SourceLoc loc) {
  graph_->check(loss);
  if (!loss.shape().empty())
    throw ModelError(loc, "minimize needs a scalar loss, got shape " + shapeStr(loss.shape()));
  if (graph_->training)
    throw ModelError(loc, "minimize called twice");
  if (optimizer.lr <= 0 || optimizer.momentum < 0 || optimizer.weight_decay < 0)
    throw ModelError(loc, "SGD needs lr > 0, momentum >= 0 and weight_decay >= 0");
  graph_->training = Graph::Training{loss.id(), optimizer, loc};
}

void Model::evaluate(const std::string &metric, Tensor value, SourceLoc loc) {
  graph_->check(value);
  if (!value.shape().empty())
    throw ModelError(loc, "metric '" + metric + "' must be a scalar");
  for (auto &[name, id] : graph_->evalMetrics)
    if (name == metric)
      throw ModelError(loc, "metric '" + metric + "' declared twice");
  graph_->evalMetrics.emplace_back(metric, value.id());
}

static Tensor unary(NodeKind kind, Tensor x, std::vector<int64_t> shape, DType dtype,
                    const SourceLoc &loc) {
  Graph &g = graphOf(x, loc);
  Node n{kind};
  n.inputs = {x.id()};
  n.shape = std::move(shape);
  n.dtype = dtype;
  n.placement = g.node(x).placement;
  n.loc = loc;
  return g.add(std::move(n));
}

static Tensor binary(NodeKind kind, Tensor a, Tensor b, std::vector<int64_t> shape, DType dtype,
                     const SourceLoc &loc, bool transposeB = false) {
  requireSameGraph(a, b, loc);
  Graph &g = *a.graph();
  if (g.node(a).placement != g.node(b).placement)
    throw ModelError(loc, "operands on different placements need an explicit transfer");
  Node n{kind};
  n.inputs = {a.id(), b.id()};
  n.shape = std::move(shape);
  n.dtype = dtype;
  n.placement = g.node(a).placement;
  n.transposeB = transposeB;
  n.loc = loc;
  return g.add(std::move(n));
}

static void requireF32(Tensor t, const char *op, const SourceLoc &loc) {
  if (t.dtype() != DType::f32)
    throw ModelError(loc, std::string(op) + " needs f32 operands");
}

Tensor matmul(Tensor a, Tensor b, SourceLoc loc) {
  graphOf(a, loc);
  graphOf(b, loc);
  requireF32(a, "matmul", loc);
  requireF32(b, "matmul", loc);
  if (a.shape().size() != 2 || b.shape().size() != 2 || a.dim(1) != b.dim(0))
    throw ModelError(loc, "matmul shapes do not agree: " + shapeStr(a.shape()) + " x " +
                              shapeStr(b.shape()));
  return binary(NodeKind::MatMul, a, b, {a.dim(0), b.dim(1)}, DType::f32, loc);
}

Tensor relu(Tensor x, SourceLoc loc) {
  graphOf(x, loc);
  requireF32(x, "relu", loc);
  return unary(NodeKind::Relu, x, x.shape(), DType::f32, loc);
}

Tensor operator+(Tensor a, Tensor b) {
  SourceLoc loc;
  graphOf(a, loc);
  graphOf(b, loc);
  requireF32(a, "add", loc);
  requireF32(b, "add", loc);
  if (a.shape() == b.shape())
    return binary(NodeKind::Add, a, b, a.shape(), DType::f32, loc);
  if (a.shape().size() == 2 && b.shape().size() == 1 && b.dim(0) == a.dim(1))
    return binary(NodeKind::BiasAdd, a, b, a.shape(), DType::f32, loc);
  throw ModelError(loc, "cannot add shapes " + shapeStr(a.shape()) + " and " + shapeStr(b.shape()));
}

static void checkLogitsLabels(Tensor logits, Tensor labels, const char *op, const SourceLoc &loc) {
  graphOf(logits, loc);
  graphOf(labels, loc);
  requireF32(logits, op, loc);
  if (labels.dtype() != DType::i32)
    throw ModelError(loc, std::string(op) + " needs i32 labels");
  if (logits.shape().size() != 2 || labels.shape().size() != 1 || labels.dim(0) != logits.dim(0))
    throw ModelError(loc, std::string(op) + " needs logits [N, C] and labels [N], got " +
                              shapeStr(logits.shape()) + " and " + shapeStr(labels.shape()));
}

Tensor cross_entropy(Tensor logits, Tensor labels, SourceLoc loc) {
  checkLogitsLabels(logits, labels, "cross_entropy", loc);
  Tensor perSample =
      binary(NodeKind::SoftmaxXent, logits, labels, {logits.dim(0)}, DType::f32, loc);
  return unary(NodeKind::Mean, perSample, {}, DType::f32, loc);
}

Tensor correct_count(Tensor logits, Tensor labels, SourceLoc loc) {
  checkLogitsLabels(logits, labels, "correct_count", loc);
  return binary(NodeKind::CountCorrect, logits, labels, {}, DType::f32, loc);
}

namespace nn {
Tensor linear(Tensor x, int64_t out, const std::string &name, LinearOptions options,
              SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  requireF32(x, "linear", loc);
  if (x.shape().size() != 2)
    throw ModelError(loc, "linear '" + name + "' needs a 2-D input, got " + shapeStr(x.shape()));
  if (out < 1)
    throw ModelError(loc, "linear '" + name + "' needs out >= 1");
  int64_t in = x.dim(1);
  int placement = g.node(x).placement;
  const PlacementSpec &spec = g.placements().at(placement).spec;
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  auto param = [&](const std::string &pname, std::vector<int64_t> shape,
                   const std::optional<std::vector<Sbp>> &sbp) {
    if (g.hasNamed(NodeKind::Parameter, pname))
      throw ModelError(loc, "parameter '" + pname + "' declared twice");
    Node n{NodeKind::Parameter};
    n.shape = std::move(shape);
    n.name = pname;
    n.placement = placement;
    n.sbp = sbp ? *sbp : std::vector<Sbp>(spec.hierarchy.size(), B);
    checkSbp(*n.sbp, spec, n.shape.size(), "parameter '" + pname + "'", loc);
    n.init = {InitSpec::Uniform, -bound, bound};
    n.seed = g.parameterSeed(pname);
    n.loc = loc;
    return g.add(std::move(n));
  };
  Tensor w = param(name + ".weight", {out, in}, options.weight_sbp);
  // x Wᵀ: the weight gradient is then dyᵀ x, a GEMM shape OpenBLAS runs
  // faster than xᵀ dy for the usual in > out (bench/).
  Tensor y = binary(NodeKind::MatMul, x, w, {x.dim(0), out}, DType::f32, loc, /*transposeB=*/true);
  if (!options.bias)
    return y;
  Tensor b = param(name + ".bias", {out}, options.bias_sbp);
  return binary(NodeKind::BiasAdd, y, b, y.shape(), DType::f32, loc);
}
} // namespace nn

} // namespace sbpflow
