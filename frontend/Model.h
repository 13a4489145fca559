// The C++ DSL: each call creates its op of the `sbp` dialect, checked by that
// op's verifier (shape errors are reported at the user's line); the model
// becomes an MLIR module with a `train` function (forward, loss, minimize)
// and an `eval` function (forward, loss, metrics and outputs). Tensors have
// any rank; shapes are global.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace mlir {
class ModuleOp;
template <typename OpTy> class OwningOpRef;
} // namespace mlir

namespace sbpflow {

// The user's source line, captured by default arguments so that errors (here
// and in the compiler's diagnostics) point at the line of the model.
struct SourceLoc {
  const char *file;
  int line;
  SourceLoc(const char *f = __builtin_FILE(), int l = __builtin_LINE()) : file(f), line(l) {}
};

// A model-building error: names the user's line and what was wrong.
class ModelError : public std::runtime_error {
public:
  ModelError(const SourceLoc &loc, const std::string &what);
};

enum class DType { f32, i32 };
constexpr DType f32 = DType::f32;
constexpr DType i32 = DType::i32;

// One dimension of an SBP: S(axis), B, P (partial sum).
struct Sbp {
  enum Kind { Split, Broadcast, Partial } kind;
  int axis = 0;
};
inline Sbp S(int axis) { return {Sbp::Split, axis}; }
constexpr Sbp B{Sbp::Broadcast, 0};
constexpr Sbp P{Sbp::Partial, 0};

enum class DeviceKind { cpu, cuda };

struct PlacementSpec {
  DeviceKind device;
  std::vector<int64_t> hierarchy; // ranks = 0 .. prod(hierarchy) - 1
};
// n CPU ranks in one dimension, or a mesh such as cpu({2, 2}).
inline PlacementSpec cpu(int64_t n) { return {DeviceKind::cpu, {n}}; }
inline PlacementSpec cpu(std::vector<int64_t> hierarchy) {
  return {DeviceKind::cpu, std::move(hierarchy)};
}
// n GPUs (one per rank), or a mesh such as cuda({2, 4}). A plan runs on the
// devices its placements name: `sbpflow run --device cuda` refuses a CPU plan.
inline PlacementSpec cuda(int64_t n) { return {DeviceKind::cuda, {n}}; }
inline PlacementSpec cuda(std::vector<int64_t> hierarchy) {
  return {DeviceKind::cuda, std::move(hierarchy)};
}
// cpu() or cuda() by the name `--device` takes ("cpu", "cuda").
inline PlacementSpec devices(const std::string &device, std::vector<int64_t> hierarchy) {
  return {device == "cuda" ? DeviceKind::cuda : DeviceKind::cpu, std::move(hierarchy)};
}

// How a parameter's global tensor is initialised (runtime/plan/plan.fbs,
// table Init): every rank draws the whole tensor from the parameter's seed,
// so a model starts from the same values on any number of ranks.
struct Init {
  enum Kind { Zeros, Constant, Uniform, Normal } kind = Zeros;
  double a = 0, b = 0; // Constant: a; Uniform: [a, b); Normal: mean a, std b
  static Init zeros() { return {Zeros, 0, 0}; }
  static Init constant(double value) { return {Constant, value, 0}; }
  static Init uniform(double low, double high) { return {Uniform, low, high}; }
  static Init normal(double mean, double stddev) { return {Normal, mean, stddev}; }
};

namespace optim {
struct SGD {
  double lr = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
};
// torch.optim.AdamW (decoupled weight decay). The decay applies to parameters
// of rank >= 2 only (nanoGPT's rule): biases and LayerNorm never decay.
struct AdamW {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};
using Optimizer = std::variant<SGD, AdamW>;
} // namespace optim

class Graph;

// What a Placement or Tensor handle is: an index into a model's graph.
class GraphHandle {
public:
  int id() const { return id_; }
  Graph *graph() const { return graph_; }

protected:
  GraphHandle() = default;
  GraphHandle(Graph *g, int id) : graph_(g), id_(id) {}
  Graph *graph_ = nullptr;
  int id_ = -1;
};

// A handle to a placement declared in a model.
class Placement : public GraphHandle {
public:
  Placement() = default;
  const PlacementSpec &spec() const;

private:
  friend class Model;
  using GraphHandle::GraphHandle;
};

// A handle to a traced value (global shape).
class Tensor : public GraphHandle {
public:
  Tensor() = default;
  const std::vector<int64_t> &shape() const;
  DType dtype() const;
  int rank() const { return static_cast<int>(shape().size()); }
  // Axis i; negative i counts from the end (-1 is the last axis).
  int64_t dim(int i) const { return shape().at(i < 0 ? i + rank() : i); }

private:
  friend class Graph;
  using GraphHandle::GraphHandle;
};

class Model {
public:
  explicit Model(std::string name, uint64_t seed = 0);
  ~Model();
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;

  Placement placement(const std::string &name, PlacementSpec spec, SourceLoc loc = {});
  // A data field read each step; `shape` is the global batch shape.
  Tensor input(const std::string &field, std::vector<int64_t> shape, DType dtype,
               Placement placement, std::vector<Sbp> sbp, SourceLoc loc = {});
  // A trained f32 parameter (an `sbp.variable`) named `name`, seeded by the
  // model seed and the name. Without `sbp` the compiler chooses its SBP.
  Tensor parameter(const std::string &name, std::vector<int64_t> shape, Init init,
                   Placement placement, std::optional<std::vector<Sbp>> sbp = std::nullopt,
                   SourceLoc loc = {});
  // Compresses the gradient exchange of parameter `name` with the codec
  // `spec` (`topk:0.001`, `dgc:0.001`, `randomk:0.01`, `qsgd:4`, `sign`,
  // `powersgd:4`, `topk2bit:0.01`, or `none` to keep it dense), whatever the
  // compile options' global policy says (sbp-compress-gradients).
  void compress(const std::string &name, const std::string &spec, SourceLoc loc = {});
  // Marks `loss` (a scalar) for minimisation; builds the training step. With
  // `max_grad_norm` the gradients are scaled together so that their global
  // L2 norm is at most that (torch.nn.utils.clip_grad_norm_).
  void minimize(Tensor loss, optim::Optimizer optimizer,
                std::optional<double> max_grad_norm = std::nullopt, SourceLoc loc = {});
  // A scalar reported by the evaluation program (e.g. accuracy()).
  void evaluate(const std::string &metric, Tensor value, SourceLoc loc = {});
  // A tensor of the evaluation program the caller reads after a step
  // (`sbp.output`), e.g. next-token probabilities for sampling.
  void output(const std::string &name, Tensor value, SourceLoc loc = {});

  const std::string &name() const;
  Graph &graph() { return *graph_; }

  // The module, in the model's own MLIR context: `sbp.placement`s,
  // `sbp.variable`s, func @train (only with minimize) and func @eval (only
  // with a metric or an output: those and the loss; dropout left out). It may
  // not outlive the model.
  mlir::OwningOpRef<mlir::ModuleOp> toMLIR() const;

private:
  std::unique_ptr<Graph> graph_;
};

// Functional ops. "lead" axes are all axes but the last.

// op(a) x op(b) with a and b of rank >= 2 viewed as matrices [prod(lead),
// last]: the result is (transpose_a ? [a.last] : a.lead) ++ (transpose_b ?
// b.lead : [b.last]).
Tensor matmul(Tensor a, Tensor b, SourceLoc loc = {});
Tensor matmul(Tensor a, Tensor b, bool transpose_a, bool transpose_b, SourceLoc loc = {});
Tensor relu(Tensor x, SourceLoc loc = {});
// Exact (erf) GELU, torch.nn.GELU's default.
Tensor gelu(Tensor x, SourceLoc loc = {});
// Softmax over the last axis.
Tensor softmax(Tensor x, SourceLoc loc = {});
// a + b of equal shapes, or x + bias where bias matches the trailing axes of
// x (a [C] bias on [B, T, C], a [T, C] position table on [B, T, C]).
Tensor add(Tensor a, Tensor b, SourceLoc loc = {});
// The same as add() but the error names Model.cpp: an operator cannot take
// the user's line. Prefer add() in models.
Tensor operator+(Tensor a, Tensor b);
// Rows of `table` [V, C] picked by i32 `ids` [...]: the result is [..., C].
Tensor embedding(Tensor table, Tensor ids, SourceLoc loc = {});
// Rows of x [N, C] picked by i32 idx [E]: [E, C] (a message per edge of a
// graph). Its gradient is scatter_rows.
Tensor gather_rows(Tensor x, Tensor idx, SourceLoc loc = {});
// The rows of y [E, C] summed into rows idx [E] of an [rows, C] result (a
// graph layer's aggregation at the edges' targets).
Tensor scatter_rows(Tensor y, Tensor idx, int64_t rows, SourceLoc loc = {});
// LayerNorm over the last axis with gamma, beta [C] (biased variance, as
// torch.nn.LayerNorm).
Tensor layer_norm(Tensor x, Tensor gamma, Tensor beta, double eps = 1e-5, SourceLoc loc = {});
// Causal multi-head self-attention of q, k, v [B, T, C] split into `heads`
// heads of C / heads: per head softmax(q kᵀ / sqrt(C / heads) + causal mask) v.
Tensor causal_attention(Tensor q, Tensor k, Tensor v, int64_t heads, SourceLoc loc = {});
// Inverted dropout with probability p, only in training (@eval leaves it out).
// The mask is a function of the element's global index, the batch, the epoch
// and the op's seed, derived from the model seed and `name` (default: a
// counter, "dropout.<n>"), so it is the same on any number of ranks. p == 0
// is the identity and adds no op.
Tensor dropout(Tensor x, double p, const std::string &name = "", SourceLoc loc = {});
// The same elements in another shape; one entry may be -1 (inferred).
Tensor reshape(Tensor x, std::vector<int64_t> shape, SourceLoc loc = {});
// Axes permuted: result.shape[k] = x.shape[perm[k]].
Tensor transpose(Tensor x, std::vector<int64_t> perm, SourceLoc loc = {});
// x[..., begin:end, ...] on `axis` (negative axis counts from the end).
Tensor slice(Tensor x, int64_t axis, int64_t begin, int64_t end, SourceLoc loc = {});
// The tensors joined along `axis`; every other axis must agree.
Tensor concat(const std::vector<Tensor> &xs, int64_t axis, SourceLoc loc = {});
// Mean softmax cross-entropy of logits [..., V] against i32 labels [...]
// (every row counts once; labels < 0 add 0).
Tensor cross_entropy(Tensor logits, Tensor labels, SourceLoc loc = {});
// Number of rows whose argmax equals the label (summed over ranks by the
// driver, divided by the dataset size: accuracy).
Tensor correct_count(Tensor logits, Tensor labels, SourceLoc loc = {});

namespace nn {
// Parameters are named "<name>.weight" and "<name>.bias" (PyTorch's
// state_dict names). An SBP left empty is chosen by the compiler; an init
// left empty is PyTorch's default for the layer.
struct LinearOptions {
  bool bias = true;
  std::optional<std::vector<Sbp>> weight_sbp;
  std::optional<std::vector<Sbp>> bias_sbp;
  std::optional<Init> weight_init = {}; // default: uniform in +-1/sqrt(in), as nn.Linear
  std::optional<Init> bias_init = {};   // default: the same
};
// y = x Wᵀ + b on x [..., in] with W [out, in] (PyTorch's nn.Linear layout,
// so weights move between the two as they are); y is [..., out].
Tensor linear(Tensor x, int64_t out, const std::string &name, LinearOptions options = {},
              SourceLoc loc = {});

struct EmbeddingOptions {
  std::optional<std::vector<Sbp>> weight_sbp;
  Init weight_init = Init::normal(0, 0.02); // nanoGPT's (nn.Embedding's default is N(0, 1))
};
// A table "<name>.weight" [vocab, dim] looked up by i32 ids [...]: [..., dim].
Tensor embedding(Tensor ids, int64_t vocab, int64_t dim, const std::string &name,
                 EmbeddingOptions options = {}, SourceLoc loc = {});

struct LayerNormOptions {
  double eps = 1e-5;
  std::optional<std::vector<Sbp>> weight_sbp; // gamma, initialised to ones
  std::optional<std::vector<Sbp>> bias_sbp;   // beta, initialised to zeros
};
// torch.nn.LayerNorm over the last axis: "<name>.weight" and "<name>.bias" [C].
Tensor layer_norm(Tensor x, const std::string &name, LayerNormOptions options = {},
                  SourceLoc loc = {});
} // namespace nn

} // namespace sbpflow
