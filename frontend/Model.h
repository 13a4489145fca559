// The C++ DSL: a model is traced into a small graph of typed nodes as the
// user calls layers, then lowered to an MLIR module in the `sbp` dialect with
// a `train` function (forward, loss, minimize) and an `eval` function
// (forward, loss and metrics). Shape errors are reported at the user's line.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlir {
class MLIRContext;
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

namespace optim {
struct SGD {
  double lr = 0.01;
  double momentum = 0.0;
  double weight_decay = 0.0;
};
} // namespace optim

class Graph;

// A handle to a placement declared in a model.
class Placement {
public:
  Placement() = default;
  int id() const { return id_; }
  const PlacementSpec &spec() const;

private:
  friend class Model;
  Placement(Graph *g, int id) : graph_(g), id_(id) {}
  Graph *graph_ = nullptr;
  int id_ = -1;
};

// A handle to a traced value (global shape).
class Tensor {
public:
  Tensor() = default;
  const std::vector<int64_t> &shape() const;
  DType dtype() const;
  int64_t dim(int i) const { return shape().at(i); }
  int id() const { return id_; }
  Graph *graph() const { return graph_; }

private:
  friend class Graph;
  Tensor(Graph *g, int id) : graph_(g), id_(id) {}
  Graph *graph_ = nullptr;
  int id_ = -1;
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
  // Marks `loss` (a scalar) for minimisation; builds the training step.
  void minimize(Tensor loss, optim::SGD optimizer, SourceLoc loc = {});
  // A scalar reported by the evaluation program (e.g. accuracy()).
  void evaluate(const std::string &metric, Tensor value, SourceLoc loc = {});

  const std::string &name() const;
  Graph &graph() { return *graph_; }

  // The module: `sbp.placement`s, `sbp.variable`s, func @train and func @eval.
  mlir::OwningOpRef<mlir::ModuleOp> toMLIR(mlir::MLIRContext &context) const;

private:
  std::unique_ptr<Graph> graph_;
};

// Functional ops.
Tensor matmul(Tensor a, Tensor b, SourceLoc loc = {});
Tensor relu(Tensor x, SourceLoc loc = {});
Tensor operator+(Tensor a, Tensor b);
// Mean softmax cross-entropy of logits [N, C] against integer labels [N].
Tensor cross_entropy(Tensor logits, Tensor labels, SourceLoc loc = {});
// Number of rows whose argmax equals the label (summed over ranks by the
// driver, divided by the dataset size: accuracy).
Tensor correct_count(Tensor logits, Tensor labels, SourceLoc loc = {});

namespace nn {
struct LinearOptions {
  bool bias = true;
  std::optional<std::vector<Sbp>> weight_sbp; // default: broadcast
  std::optional<std::vector<Sbp>> bias_sbp;
};
// y = x Wᵀ + b with W [out, in] (PyTorch's nn.Linear layout, so weights move
// between the two as they are), initialised like nn.Linear (uniform in
// +-1/sqrt(in)), seeded by the model seed and the layer name.
Tensor linear(Tensor x, int64_t out, const std::string &name, LinearOptions options = {},
              SourceLoc loc = {});
} // namespace nn

} // namespace sbpflow
