// The DSL: each call creates its `sbp` op in the model's trace (Graph.h), where
// the op's own verifier checks it. What the DSL adds to the ops is here:
// negative axes, -1 in reshape, named and initialised parameters, layers.
#include "compiler/Passes.h"
#include "frontend/Graph.h"

#include <array>
#include <cmath>
#include <sstream>
#include <tuple>

namespace sbpflow {

namespace sbp = mlir::sbp;

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

// The graph and placement of an op's operands, which must share both.
std::pair<Graph *, int> placementOf(const std::vector<Tensor> &inputs, const SourceLoc &loc) {
  Graph &g = graphOf(inputs.at(0), loc);
  int placement = g.placementOf(inputs[0]);
  for (const Tensor &t : inputs) {
    if (&graphOf(t, loc) != &g)
      throw ModelError(loc, "tensors from two different models");
    if (g.placementOf(t) != placement)
      throw ModelError(loc, "operands on different placements need an explicit transfer");
  }
  return {&g, placement};
}

// The op `OpT` of `inputs` and `attrs` (`inputs[0]`'s type as the result
// type hint).
template <typename OpT, size_t N, typename... Attrs>
Tensor op(const std::array<Tensor, N> &inputs, const SourceLoc &loc, Attrs &&...attrs) {
  auto [g, placement] = placementOf({inputs.begin(), inputs.end()}, loc);
  return std::apply(
      [&, g = g, placement = placement](auto... t) {
        return g->template create<OpT>(loc, placement, g->typeOf(inputs[0]), g->value(t)...,
                                       std::forward<Attrs>(attrs)...);
      },
      inputs);
}

// A possibly negative axis of a tensor of rank `rank` as 0 .. rank-1.
int64_t normaliseAxis(int64_t axis, int rank, const char *op, const SourceLoc &loc) {
  if (axis < -rank || axis >= rank)
    throw ModelError(loc, std::string(op) + ": axis " + std::to_string(axis) +
                              " out of range for a tensor of rank " + std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

int64_t product(const std::vector<int64_t> &s) {
  int64_t p = 1;
  for (int64_t d : s)
    p *= d;
  return p;
}

// The tensor type of a source: global shape, and the user's SBP when given.
mlir::RankedTensorType sourceType(Graph &g, const std::vector<int64_t> &shape, DType dtype,
                                  int placement, const std::optional<std::vector<Sbp>> &sbp) {
  mlir::MLIRContext &ctx = g.context();
  mlir::Type elem = dtype == DType::f32 ? mlir::Type(mlir::Float32Type::get(&ctx))
                                        : mlir::Type(mlir::IntegerType::get(&ctx, 32));
  mlir::Attribute encoding;
  if (sbp) {
    llvm::SmallVector<sbp::SbpDim, 2> dims;
    for (const Sbp &s : *sbp)
      dims.push_back(s.kind == Sbp::Split       ? sbp::splitDim(s.axis)
                     : s.kind == Sbp::Broadcast ? sbp::broadcastDim()
                                                : sbp::partialSumDim());
    encoding = sbp::makeSbpTensorAttr(&ctx, g.placements().at(placement).name, dims);
  }
  return mlir::RankedTensorType::get(shape, elem, encoding);
}

void requirePositiveDims(const std::vector<int64_t> &shape, const std::string &what,
                         const SourceLoc &loc) {
  for (int64_t d : shape)
    if (d < 1)
      throw ModelError(loc, what + " has a dimension < 1: " + shapeStr(shape));
}

// A parameter on `placement`; `sbp` empty leaves the choice to the compiler.
Tensor addParameter(Graph &g, const std::string &name, std::vector<int64_t> shape, const Init &init,
                    int placement, const std::optional<std::vector<Sbp>> &sbp,
                    const SourceLoc &loc) {
  const std::string what = "parameter '" + name + "'";
  if (name.empty())
    throw ModelError(loc, "a parameter needs a name");
  if (g.variable(name))
    throw ModelError(loc, what + " declared twice");
  requirePositiveDims(shape, what, loc);
  // The IR puts an unannotated variable on the module's first placement.
  if (!sbp && placement != 0)
    throw ModelError(loc, what + " is on placement '" + g.placements().at(placement).name +
                              "', not the model's first: it needs an SBP annotation");
  mlir::RankedTensorType type = sourceType(g, shape, DType::f32, placement, sbp);
  g.addVariable(name, type, init, loc);
  return g.create<sbp::ParameterOp>(loc, placement, type, name);
}
} // namespace

ModelError::ModelError(const SourceLoc &loc, const std::string &what)
    : std::runtime_error(std::string(loc.file) + ":" + std::to_string(loc.line) + ": " + what) {}

const PlacementSpec &Placement::spec() const { return graph_->placements().at(id_).spec; }
const std::vector<int64_t> &Tensor::shape() const { return graph_->shape(id_); }
DType Tensor::dtype() const { return graph_->dtype(id_); }

Model::Model(std::string name, uint64_t seed)
    : graph_(std::make_unique<Graph>(std::move(name), seed)) {}
Model::~Model() = default;
const std::string &Model::name() const { return graph_->name(); }

Placement Model::placement(const std::string &name, PlacementSpec spec, SourceLoc loc) {
  for (const PlacementDecl &p : graph_->placements())
    if (p.name == name)
      throw ModelError(loc, "placement '" + name + "' declared twice");
  return Placement(graph_.get(), graph_->addPlacement({name, std::move(spec)}, loc));
}

Tensor Model::input(const std::string &field, std::vector<int64_t> shape, DType dtype,
                    Placement placement, std::vector<Sbp> sbp, SourceLoc loc) {
  const std::string what = "input '" + field + "'";
  if (placement.id() < 0)
    throw ModelError(loc, what + " has no placement");
  requirePositiveDims(shape, what, loc);
  if (graph_->inputs.count(field))
    throw ModelError(loc, what + " declared twice");
  mlir::RankedTensorType type = sourceType(*graph_, shape, dtype, placement.id(), sbp);
  Tensor t = graph_->create<sbp::InputOp>(loc, placement.id(), type, field);
  graph_->inputs.insert(field);
  return t;
}

Tensor Model::parameter(const std::string &name, std::vector<int64_t> shape, Init init,
                        Placement placement, std::optional<std::vector<Sbp>> sbp, SourceLoc loc) {
  if (placement.id() < 0)
    throw ModelError(loc, "parameter '" + name + "' has no placement");
  return addParameter(*graph_, name, std::move(shape), init, placement.id(), sbp, loc);
}

void Model::compress(const std::string &name, const std::string &spec, SourceLoc loc) {
  Graph &g = *graph_;
  sbp::VariableOp var = g.variable(name);
  if (!var)
    throw ModelError(loc, "compress: no parameter named '" + name + "'");
  std::string message;
  {
    mlir::ScopedDiagnosticHandler capture(var.getContext(), [&](mlir::Diagnostic &d) {
      message = d.str();
      return mlir::success();
    });
    if (failed(sbp::parseCodecSpec(var.getContext(), spec,
                                   [&] { return mlir::emitError(var.getLoc()); })))
      throw ModelError(loc, "compress '" + name + "': " + message);
  }
  var->setAttr("compress", mlir::StringAttr::get(var.getContext(), spec));
}

void Model::minimize(Tensor loss, optim::Optimizer optimizer, std::optional<double> maxGradNorm,
                     SourceLoc loc) {
  Graph &g = *graph_;
  g.check(loss);
  if (g.training)
    throw ModelError(loc, "minimize called twice");
  mlir::Attribute attr;
  if (const auto *o = std::get_if<optim::SGD>(&optimizer)) {
    attr = g.attribute<sbp::SgdAttr>(loc, "", llvm::APFloat(o->lr), llvm::APFloat(o->momentum),
                                     llvm::APFloat(o->weight_decay));
  } else {
    const auto &a = std::get<optim::AdamW>(optimizer);
    attr = g.attribute<sbp::AdamWAttr>(loc, "", llvm::APFloat(a.lr), llvm::APFloat(a.beta1),
                                       llvm::APFloat(a.beta2), llvm::APFloat(a.eps),
                                       llvm::APFloat(a.weight_decay));
  }
  mlir::FloatAttr norm;
  if (maxGradNorm)
    norm = mlir::FloatAttr::get(mlir::Float32Type::get(&g.context()),
                                static_cast<float>(*maxGradNorm));
  g.sink<sbp::MinimizeOp>(loc, g.value(loss), attr, norm);
  g.training = true;
}

void Model::evaluate(const std::string &metric, Tensor value, SourceLoc loc) {
  graph_->check(value);
  graph_->sink<sbp::MetricOp>(loc, metric, graph_->value(value));
}

void Model::output(const std::string &name, Tensor value, SourceLoc loc) {
  if (!value.graph())
    throw ModelError(loc, "output '" + name + "' of an empty Tensor");
  graph_->check(value);
  graph_->sink<sbp::OutputOp>(loc, name, graph_->value(value));
}

mlir::OwningOpRef<mlir::ModuleOp> Model::toMLIR() const { return graph_->toModule(); }

Tensor matmul(Tensor a, Tensor b, bool transposeA, bool transposeB, SourceLoc loc) {
  return op<sbp::MatmulOp>(std::array{a, b}, loc, transposeA, transposeB);
}

Tensor matmul(Tensor a, Tensor b, SourceLoc loc) { return matmul(a, b, false, false, loc); }

Tensor relu(Tensor x, SourceLoc loc) { return op<sbp::ReluOp>(std::array{x}, loc); }

Tensor gelu(Tensor x, SourceLoc loc) { return op<sbp::GeluOp>(std::array{x}, loc); }

Tensor softmax(Tensor x, SourceLoc loc) { return op<sbp::SoftmaxOp>(std::array{x}, loc); }

Tensor add(Tensor a, Tensor b, SourceLoc loc) {
  graphOf(a, loc);
  graphOf(b, loc);
  // Equal shapes add elementwise; otherwise b is a bias on a's trailing axes.
  if (a.shape() == b.shape())
    return op<sbp::AddOp>(std::array{a, b}, loc);
  return op<sbp::BiasAddOp>(std::array{a, b}, loc);
}

Tensor operator+(Tensor a, Tensor b) { return add(a, b); }

Tensor embedding(Tensor table, Tensor ids, SourceLoc loc) {
  return op<sbp::EmbeddingOp>(std::array{table, ids}, loc);
}

Tensor gather_rows(Tensor x, Tensor idx, SourceLoc loc) {
  return op<sbp::GatherRowsOp>(std::array{x, idx}, loc);
}

Tensor scatter_rows(Tensor y, Tensor idx, int64_t rows, SourceLoc loc) {
  Graph &g = graphOf(y, loc);
  if (rows < 0 || y.rank() != 2)
    throw ModelError(loc, "scatter_rows into " + std::to_string(rows) + " rows of " +
                              shapeStr(y.shape()) + ": needs rows >= 0 and y [E, C]");
  return g.create<sbp::ScatterRowsOp>(loc, g.placementOf(y), g.typeOf(y).clone({rows, y.dim(1)}),
                                      g.value(y), g.value(idx));
}

Tensor layer_norm(Tensor x, Tensor gamma, Tensor beta, double eps, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  return op<sbp::LayerNormOp>(
      std::array{x, gamma, beta}, loc,
      mlir::FloatAttr::get(mlir::Float32Type::get(&g.context()), static_cast<float>(eps)));
}

Tensor causal_attention(Tensor q, Tensor k, Tensor v, int64_t heads, SourceLoc loc) {
  Graph &g = graphOf(q, loc);
  return op<sbp::CausalAttentionOp>(
      std::array{q, k, v}, loc,
      mlir::IntegerAttr::get(mlir::IntegerType::get(&g.context(), 64), heads));
}

Tensor dropout(Tensor x, double p, const std::string &name, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  if (p == 0)
    return x;
  std::string opName = name.empty() ? g.nextDropoutName() : name;
  if (g.dropouts.count(opName))
    throw ModelError(loc, "dropout '" + opName + "' declared twice");
  mlir::MLIRContext &ctx = g.context();
  Tensor y = op<sbp::DropoutOp>(
      std::array{x}, loc, mlir::FloatAttr::get(mlir::Float32Type::get(&ctx), static_cast<float>(p)),
      mlir::IntegerAttr::get(mlir::IntegerType::get(&ctx, 64),
                             static_cast<int64_t>(g.parameterSeed(opName))));
  g.dropouts.insert(opName);
  return y;
}

Tensor reshape(Tensor x, std::vector<int64_t> shape, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  // One axis may be -1: the elements left over.
  int64_t known = 1;
  int inferred = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1 && inferred < 0)
      inferred = static_cast<int>(i);
    else if (shape[i] < 1)
      throw ModelError(loc, "reshape to " + shapeStr(shape) +
                                ": dimensions must be >= 1 (one may be -1)");
    else
      known *= shape[i];
  }
  int64_t count = product(x.shape());
  if (inferred >= 0) {
    if (count % known != 0)
      throw ModelError(loc, "cannot reshape " + shapeStr(x.shape()) + " (" + std::to_string(count) +
                                " elements) to " + shapeStr(shape));
    shape[inferred] = count / known;
  }
  return g.create<sbp::ReshapeOp>(loc, g.placementOf(x), g.typeOf(x).clone(shape), g.value(x));
}

Tensor transpose(Tensor x, std::vector<int64_t> perm, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  return op<sbp::TransposeOp>(std::array{x}, loc, mlir::DenseI64ArrayAttr::get(&g.context(), perm));
}

Tensor slice(Tensor x, int64_t axis, int64_t begin, int64_t end, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  axis = normaliseAxis(axis, x.rank(), "slice", loc);
  int64_t size = x.dim(static_cast<int>(axis));
  // The result's length on `axis`; narrow's rule checks the range.
  if (begin >= end)
    throw ModelError(loc, "slice [" + std::to_string(begin) + ", " + std::to_string(end) +
                              ") of axis " + std::to_string(axis) + " of " + shapeStr(x.shape()) +
                              ": need 0 <= begin < end <= " + std::to_string(size));
  std::vector<int64_t> shape = x.shape();
  shape[axis] = end - begin;
  mlir::Type i64 = mlir::IntegerType::get(&g.context(), 64);
  return g.create<sbp::NarrowOp>(loc, g.placementOf(x), g.typeOf(x).clone(shape), g.value(x),
                                 mlir::IntegerAttr::get(i64, axis),
                                 mlir::IntegerAttr::get(i64, begin));
}

Tensor concat(const std::vector<Tensor> &xs, int64_t axis, SourceLoc loc) {
  if (xs.empty())
    throw ModelError(loc, "concat of no tensors");
  Graph &g = graphOf(xs[0], loc);
  axis = normaliseAxis(axis, xs[0].rank(), "concat", loc);
  if (xs.size() == 1)
    return xs[0];
  auto placement = placementOf(xs, loc).second;
  llvm::SmallVector<mlir::Value> values;
  for (const Tensor &x : xs)
    values.push_back(g.value(x));
  return g.create<sbp::ConcatOp>(
      loc, placement, g.typeOf(xs[0]), values,
      mlir::IntegerAttr::get(mlir::IntegerType::get(&g.context(), 64), axis));
}

Tensor cross_entropy(Tensor logits, Tensor labels, SourceLoc loc) {
  Tensor perRow = op<sbp::SoftmaxXentOp>(std::array{logits, labels}, loc);
  return op<sbp::MeanOp>(std::array{perRow}, loc);
}

Tensor correct_count(Tensor logits, Tensor labels, SourceLoc loc) {
  return op<sbp::CountCorrectOp>(std::array{logits, labels}, loc);
}

namespace nn {
Tensor linear(Tensor x, int64_t out, const std::string &name, LinearOptions options,
              SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  if (x.rank() < 2)
    throw ModelError(loc, "linear '" + name + "' needs an input of rank >= 2, got " +
                              shapeStr(x.shape()));
  if (out < 1)
    throw ModelError(loc, "linear '" + name + "' needs out >= 1");
  int64_t in = x.dim(-1);
  int placement = g.placementOf(x);
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
                              g.placementOf(ids), options.weight_sbp, loc);
  return sbpflow::embedding(table, ids, loc);
}

Tensor layer_norm(Tensor x, const std::string &name, LayerNormOptions options, SourceLoc loc) {
  Graph &g = graphOf(x, loc);
  if (x.rank() < 1)
    throw ModelError(loc, "layer_norm '" + name + "' needs a tensor of rank >= 1");
  int placement = g.placementOf(x);
  Tensor gamma = addParameter(g, name + ".weight", {x.dim(-1)}, Init::constant(1.0), placement,
                              options.weight_sbp, loc);
  Tensor beta =
      addParameter(g, name + ".bias", {x.dim(-1)}, Init::zeros(), placement, options.bias_sbp, loc);
  return sbpflow::layer_norm(x, gamma, beta, options.eps, loc);
}
} // namespace nn

} // namespace sbpflow
