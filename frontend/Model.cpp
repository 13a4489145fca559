// Tracing half of the DSL: records nodes and checks shapes at the user's line.
// Lowering to MLIR is in Lower.cpp.
#include "frontend/Graph.h"

#include <algorithm>
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

static void checkInit(const Init &init, const std::string &what, const SourceLoc &loc) {
  if (!std::isfinite(init.a) || !std::isfinite(init.b))
    throw ModelError(loc, what + ": initialiser parameters must be finite");
  if (init.kind == Init::Uniform && !(init.a < init.b))
    throw ModelError(loc, what + ": uniform initialiser needs low < high");
  if (init.kind == Init::Normal && init.b < 0)
    throw ModelError(loc, what + ": normal initialiser needs a standard deviation >= 0");
}

// A parameter on `placement`; `sbp` empty leaves the choice to the compiler.
static Tensor addParameter(Graph &g, const std::string &name, std::vector<int64_t> shape,
                           const Init &init, int placement,
                           const std::optional<std::vector<Sbp>> &sbp, const SourceLoc &loc) {
  const std::string what = "parameter '" + name + "'";
  if (name.empty())
    throw ModelError(loc, "a parameter needs a name");
  if (g.hasNamed(NodeKind::Parameter, name))
    throw ModelError(loc, what + " declared twice");
  for (int64_t d : shape)
    if (d < 1)
      throw ModelError(loc, what + " has a dimension < 1: " + shapeStr(shape));
  if (sbp)
    checkSbp(*sbp, g.placements().at(placement).spec, shape.size(), what, loc);
  // The IR puts an unannotated variable on the module's first placement.
  if (!sbp && placement != 0)
    throw ModelError(loc, what + " is on placement '" + g.placements().at(placement).name +
                              "', not the model's first: it needs an SBP annotation");
  checkInit(init, what, loc);
  Node n{NodeKind::Parameter};
  n.shape = std::move(shape);
  n.name = name;
  n.placement = placement;
  n.sbp = sbp;
  n.init = init;
  n.seed = g.parameterSeed(name);
  n.loc = loc;
  return g.add(std::move(n));
}

Tensor Model::parameter(const std::string &name, std::vector<int64_t> shape, Init init,
                        Placement placement, std::optional<std::vector<Sbp>> sbp, SourceLoc loc) {
  if (placement.id() < 0)
    throw ModelError(loc, "parameter '" + name + "' has no placement");
  return addParameter(*graph_, name, std::move(shape), init, placement.id(), sbp, loc);
}

void Model::minimize(Tensor loss, optim::Optimizer optimizer, std::optional<double> maxGradNorm,
                     SourceLoc loc) {
  graph_->check(loss);
  if (!loss.shape().empty())
    throw ModelError(loc, "minimize needs a scalar loss, got shape " + shapeStr(loss.shape()));
  if (graph_->training)
    throw ModelError(loc, "minimize called twice");
  if (const auto *o = std::get_if<optim::SGD>(&optimizer)) {
    if (!(o->lr > 0) || !(o->momentum >= 0) || !(o->weight_decay >= 0))
      throw ModelError(loc, "SGD needs lr > 0, momentum >= 0 and weight_decay >= 0");
  } else {
    const auto &a = std::get<optim::AdamW>(optimizer);
    if (!(a.lr > 0) || !(a.beta1 >= 0 && a.beta1 < 1) || !(a.beta2 >= 0 && a.beta2 < 1) ||
        !(a.eps > 0) || !(a.weight_decay >= 0))
      throw ModelError(loc, "AdamW needs lr > 0, 0 <= beta1, beta2 < 1, eps > 0 and "
                            "weight_decay >= 0");
  }
  if (maxGradNorm && !(*maxGradNorm > 0))
    throw ModelError(loc, "max_grad_norm must be > 0, got " + std::to_string(*maxGradNorm));
  graph_->training = Graph::Training{loss.id(), optimizer, maxGradNorm, loc};
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

void Model::output(const std::string &name, Tensor value, SourceLoc loc) {
  if (!value.graph())
    throw ModelError(loc, "output '" + name + "' of an empty Tensor");
  graph_->check(value);
  if (name.empty())
    throw ModelError(loc, "an output needs a name");
  for (auto &[other, id] : graph_->outputs)
    if (other == name)
      throw ModelError(loc, "output '" + name + "' declared twice");
  graph_->outputs.emplace_back(name, value.id());
}

// A node computed from `inputs` (all of one graph and placement).
static Tensor addOp(Node n, const std::vector<Tensor> &inputs, const SourceLoc &loc) {
  Graph &g = graphOf(inputs.at(0), loc);
  for (const Tensor &t : inputs) {
    requireSameGraph(inputs[0], t, loc);
    if (g.node(t).placement != g.node(inputs[0]).placement)
      throw ModelError(loc, "operands on different placements need an explicit transfer");
    n.inputs.push_back(t.id());
  }
  n.placement = g.node(inputs[0]).placement;
  n.loc = loc;
  return g.add(std::move(n));
}

static Tensor op(NodeKind kind, const std::vector<Tensor> &inputs, std::vector<int64_t> shape,
                 DType dtype, const SourceLoc &loc) {
  Node n{kind};
  n.shape = std::move(shape);
  n.dtype = dtype;
  return addOp(std::move(n), inputs, loc);
}

static void requireF32(Tensor t, const char *op, const SourceLoc &loc) {
  graphOf(t, loc);
  if (t.dtype() != DType::f32)
    throw ModelError(loc, std::string(op) + " needs f32 operands");
}

static int64_t product(const std::vector<int64_t> &s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i)
    p *= s[i];
  return p;
}

// A possibly negative axis of a tensor of rank `rank` as 0 .. rank-1.
static int64_t normaliseAxis(int64_t axis, int rank, const char *op, const SourceLoc &loc) {
  if (axis < -rank || axis >= rank)
    throw ModelError(loc, std::string(op) + ": axis " + std::to_string(axis) +
                              " out of range for a tensor of rank " + std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

Tensor matmul(Tensor a, Tensor b, bool transposeA, bool transposeB, SourceLoc loc) {
  requireF32(a, "matmul", loc);
  requireF32(b, "matmul", loc);
  const auto &as = a.shape(), &bs = b.shape();
  if (as.size() < 2 || bs.size() < 2)
    throw ModelError(loc, "matmul needs operands of rank >= 2, got " + shapeStr(as) + " x " +
                              shapeStr(bs));
  // Both viewed as [prod(lead), last].
  int64_t aK = transposeA ? product(as, 0, as.size() - 1) : as.back();
  int64_t bK = transposeB ? bs.back() : product(bs, 0, bs.size() - 1);
  if (aK != bK)
    throw ModelError(loc, "matmul shapes do not agree: " + shapeStr(as) + " x " + shapeStr(bs) +
                              (transposeA ? " (a transposed)" : "") +
                              (transposeB ? " (b transposed)" : ""));
  std::vector<int64_t> shape;
  if (transposeA)
    shape.push_back(as.back());
  else
    shape.insert(shape.end(), as.begin(), as.end() - 1);
  if (transposeB)
    shape.insert(shape.end(), bs.begin(), bs.end() - 1);
  else
    shape.push_back(bs.back());
  Node n{NodeKind::MatMul};
  n.shape = std::move(shape);
  n.transposeA = transposeA;
  n.transposeB = transposeB;
  return addOp(std::move(n), {a, b}, loc);
}

Tensor matmul(Tensor a, Tensor b, SourceLoc loc) { return matmul(a, b, false, false, loc); }

Tensor relu(Tensor x, SourceLoc loc) {
  requireF32(x, "relu", loc);
  return op(NodeKind::Relu, {x}, x.shape(), DType::f32, loc);
}

Tensor gelu(Tensor x, SourceLoc loc) {
  requireF32(x, "gelu", loc);
  return op(NodeKind::Gelu, {x}, x.shape(), DType::f32, loc);
}

Tensor softmax(Tensor x, SourceLoc loc) {
  requireF32(x, "softmax", loc);
  if (x.shape().empty())
    throw ModelError(loc, "softmax needs a tensor of rank >= 1");
  return op(NodeKind::Softmax, {x}, x.shape(), DType::f32, loc);
}

Tensor add(Tensor a, Tensor b, SourceLoc loc) {
  requireF32(a, "add", loc);
  requireF32(b, "add", loc);
  const auto &as = a.shape(), &bs = b.shape();
  if (as == bs)
    return op(NodeKind::Add, {a, b}, as, DType::f32, loc);
  // A bias: b matches the trailing axes of a.
  if (!bs.empty() && bs.size() < as.size() &&
      std::equal(bs.begin(), bs.end(), as.end() - bs.size()))
    return op(NodeKind::BiasAdd, {a, b}, as, DType::f32, loc);
  throw ModelError(loc, "cannot add shapes " + shapeStr(as) + " and " + shapeStr(bs) +
                            " (equal shapes, or the second matching the trailing axes of the "
                            "first)");
}

Tensor operator+(Tensor a, Tensor b) { return add(a, b); }

Tensor embedding(Tensor table, Tensor ids, SourceLoc loc) {
  requireF32(table, "embedding", loc);
  graphOf(ids, loc);
  if (ids.dtype() != DType::i32)
    throw ModelError(loc, "embedding needs i32 ids");
  if (table.rank() != 2)
    throw ModelError(loc, "embedding needs a table [vocab, dim], got " + shapeStr(table.shape()));
  std::vector<int64_t> shape = ids.shape();
  shape.push_back(table.dim(1));
  return op(NodeKind::Embedding, {table, ids}, std::move(shape), DType::f32, loc);
}

Tensor layer_norm(Tensor x, Tensor gamma, Tensor beta, double eps, SourceLoc loc) {
  requireF32(x, "layer_norm", loc);
  requireF32(gamma, "layer_norm", loc);
  requireF32(beta, "layer_norm", loc);
  if (x.rank() < 1)
    throw ModelError(loc, "layer_norm needs a tensor of rank >= 1");
  std::vector<int64_t> c{x.dim(-1)};
  if (gamma.shape() != c || beta.shape() != c)
    throw ModelError(loc, "layer_norm of " + shapeStr(x.shape()) + " needs gamma and beta " +
                              shapeStr(c) + ", got " + shapeStr(gamma.shape()) + " and " +
                              shapeStr(beta.shape()));
  if (!(eps > 0))
    throw ModelError(loc, "layer_norm needs eps > 0");
  Node n{NodeKind::LayerNorm};
  n.shape = x.shape();
  n.eps = eps;
  return addOp(std::move(n), {x, gamma, beta}, loc);
}

Tensor causal_attention(Tensor q, Tensor k, Tensor v, int64_t heads, SourceLoc loc) {
  requireF32(q, "causal_attention", loc);
  requireF32(k, "causal_attention", loc);
  requireF32(v, "causal_attention", loc);
  if (q.rank() != 3 || k.shape() != q.shape() || v.shape() != q.shape())
    throw ModelError(loc, "causal_attention needs q, k, v of one shape [batch, T, C], got " +
                              shapeStr(q.shape()) + ", " + shapeStr(k.shape()) + ", " +
                              shapeStr(v.shape()));
  if (heads < 1 || q.dim(2) % heads != 0)
    throw ModelError(loc, "causal_attention: " + std::to_string(heads) +
                              " heads do not divide the width " + std::to_string(q.dim(2)));
  Node n{NodeKind::CausalAttention};
  n.shape = q.shape();
  n.heads = heads;
  return addOp(std::move(n), {q, k, v}, loc);
}

Tensor dropout(Tensor x, double p, const std::string &name, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  requireF32(x, "dropout", loc);
  if (!(p >= 0 && p < 1))
    throw ModelError(loc, "dropout needs 0 <= p < 1, got " + std::to_string(p));
  if (p == 0)
    return x;
  std::string opName = name.empty() ? g.nextDropoutName() : name;
  if (g.hasNamed(NodeKind::Dropout, opName))
    throw ModelError(loc, "dropout '" + opName + "' declared twice");
  Node n{NodeKind::Dropout};
  n.shape = x.shape();
  n.name = opName;
  n.p = p;
  n.seed = g.parameterSeed(opName);
  return addOp(std::move(n), {x}, loc);
}

Tensor reshape(Tensor x, std::vector<int64_t> shape, SourceLoc loc) {
  graphOf(x, loc);
  int64_t known = 1;
  int inferred = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1 && inferred < 0) {
      inferred = static_cast<int>(i);
    } else if (shape[i] < 1) {
      throw ModelError(loc, "reshape to " + shapeStr(shape) +
                                ": dimensions must be >= 1 (one may be -1)");
    } else {
      known *= shape[i];
    }
  }
  int64_t count = product(x.shape(), 0, x.shape().size());
  if (inferred >= 0 && count % known == 0)
    shape[inferred] = count / known;
  if ((inferred >= 0 && count % known != 0) || product(shape, 0, shape.size()) != count)
    throw ModelError(loc, "cannot reshape " + shapeStr(x.shape()) + " (" + std::to_string(count) +
                              " elements) to " + shapeStr(shape));
  return op(NodeKind::Reshape, {x}, std::move(shape), x.dtype(), loc);
}

Tensor transpose(Tensor x, std::vector<int64_t> perm, SourceLoc loc) {
  graphOf(x, loc);
  std::vector<bool> seen(x.rank(), false);
  bool valid = perm.size() == static_cast<size_t>(x.rank());
  for (int64_t p : perm) {
    if (!valid || p < 0 || p >= x.rank() || seen[p]) {
      valid = false;
      break;
    }
    seen[p] = true;
  }
  if (!valid)
    throw ModelError(loc, "transpose of " + shapeStr(x.shape()) + ": " + shapeStr(perm) +
                              " is not a permutation of its axes");
  std::vector<int64_t> shape;
  for (int64_t p : perm)
    shape.push_back(x.dim(static_cast<int>(p)));
  Node n{NodeKind::Transpose};
  n.shape = std::move(shape);
  n.dtype = x.dtype();
  n.perm = std::move(perm);
  return addOp(std::move(n), {x}, loc);
}

Tensor slice(Tensor x, int64_t axis, int64_t begin, int64_t end, SourceLoc loc) {
  graphOf(x, loc);
  axis = normaliseAxis(axis, x.rank(), "slice", loc);
  int64_t size = x.dim(static_cast<int>(axis));
  if (begin < 0 || end > size || begin >= end)
    throw ModelError(loc, "slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                              ") of axis " + std::to_string(axis) + " of " + shapeStr(x.shape()) +
                              ": need 0 <= begin < end <= " + std::to_string(size));
  Node n{NodeKind::Narrow};
  n.shape = x.shape();
  n.shape[axis] = end - begin;
  n.dtype = x.dtype();
  n.axis = axis;
  n.begin = begin;
  return addOp(std::move(n), {x}, loc);
}

Tensor concat(const std::vector<Tensor> &xs, int64_t axis, SourceLoc loc) {
  if (xs.empty())
    throw ModelError(loc, "concat of no tensors");
  graphOf(xs[0], loc);
  axis = normaliseAxis(axis, xs[0].rank(), "concat", loc);
  std::vector<int64_t> shape = xs[0].shape();
  for (size_t i = 1; i < xs.size(); ++i) {
    graphOf(xs[i], loc);
    const auto &s = xs[i].shape();
    bool agree = s.size() == shape.size() && xs[i].dtype() == xs[0].dtype();
    for (size_t d = 0; agree && d < s.size(); ++d)
      agree = d == static_cast<size_t>(axis) || s[d] == shape[d];
    if (!agree)
      throw ModelError(loc, "concat on axis " + std::to_string(axis) + ": operand " +
                                std::to_string(i) + " " + shapeStr(s) + " does not match " +
                                shapeStr(xs[0].shape()) + " (dtype and every other axis)");
    shape[axis] += s[axis];
  }
  if (xs.size() == 1)
    return xs[0];
  Node n{NodeKind::Concat};
  n.shape = std::move(shape);
  n.dtype = xs[0].dtype();
  n.axis = axis;
  return addOp(std::move(n), xs, loc);
}

static void checkLogitsLabels(Tensor logits, Tensor labels, const char *op, const SourceLoc &loc) {
  requireF32(logits, op, loc);
  graphOf(labels, loc);
  if (labels.dtype() != DType::i32)
    throw ModelError(loc, std::string(op) + " needs i32 labels");
  const auto &ls = logits.shape();
  if (ls.size() < 2 || std::vector<int64_t>(ls.begin(), ls.end() - 1) != labels.shape())
    throw ModelError(loc, std::string(op) + " needs logits [..., C] and labels [...], got " +
                              shapeStr(ls) + " and " + shapeStr(labels.shape()));
}

Tensor cross_entropy(Tensor logits, Tensor labels, SourceLoc loc) {
  checkLogitsLabels(logits, labels, "cross_entropy", loc);
  Tensor perRow = op(NodeKind::SoftmaxXent, {logits, labels}, labels.shape(), DType::f32, loc);
  return op(NodeKind::Mean, {perRow}, {}, DType::f32, loc);
}

Tensor correct_count(Tensor logits, Tensor labels, SourceLoc loc) {
  checkLogitsLabels(logits, labels, "correct_count", loc);
  return op(NodeKind::CountCorrect, {logits, labels}, {}, DType::f32, loc);
}

namespace nn {
Tensor linear(Tensor x, int64_t out, const std::string &name, LinearOptions options,
              SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  requireF32(x, "linear", loc);
  if (x.rank() < 2)
    throw ModelError(loc, "linear '" + name + "' needs an input of rank >= 2, got " +
                              shapeStr(x.shape()));
  if (out < 1)
    throw ModelError(loc, "linear '" + name + "' needs out >= 1");
  int64_t in = x.dim(-1);
  int placement = g.node(x).placement;
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  Tensor w = addParameter(g, name + ".weight", {out, in},
                          options.weight_init.value_or(Init::uniform(-bound, bound)), placement,
                          options.weight_sbp, loc);
  // x Wᵀ: the weight gradient is then dyᵀ x, a GEMM shape OpenBLAS runs
  // faster than xᵀ dy for the usual in > out (bench/).
  Tensor y = matmul(x, w, /*transposeA=*/false, /*transposeB=*/true, loc);
  if (!options.bias)
    return y;
  Tensor b = addParameter(g, name + ".bias", {out},
                          options.bias_init.value_or(Init::uniform(-bound, bound)), placement,
                          options.bias_sbp, loc);
  return add(y, b, loc);
}

Tensor embedding(Tensor ids, int64_t vocab, int64_t dim, const std::string &name,
                 EmbeddingOptions options, SourceLoc loc) {
  Graph &g = graphOf(ids, loc);
  if (vocab < 1 || dim < 1)
    throw ModelError(loc, "embedding '" + name + "' needs vocab >= 1 and dim >= 1");
  Tensor table = addParameter(g, name + ".weight", {vocab, dim}, options.weight_init,
                              g.node(ids).placement, options.weight_sbp, loc);
  return sbpflow::embedding(table, ids, loc);
}

Tensor layer_norm(Tensor x, const std::string &name, LayerNormOptions options, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  requireF32(x, "layer_norm", loc);
  if (x.rank() < 1)
    throw ModelError(loc, "layer_norm '" + name + "' needs a tensor of rank >= 1");
  int placement = g.node(x).placement;
  Tensor gamma = addParameter(g, name + ".weight", {x.dim(-1)}, Init::constant(1.0), placement,
                              options.weight_sbp, loc);
  Tensor beta =
      addParameter(g, name + ".bias", {x.dim(-1)}, Init::zeros(), placement, options.bias_sbp, loc);
  return sbpflow::layer_norm(x, gamma, beta, options.eps, loc);
}
} // namespace nn

} // namespace sbpflow
