// The traced graph behind the DSL: nodes in creation order (which is a
// topological order), each with its global shape, dtype and optional SBP.
#pragma once

#include "frontend/Model.h"

#include <map>

namespace sbpflow {

enum class NodeKind {
  Input,
  Parameter,
  MatMul,
  BiasAdd,
  Add,
  Relu,
  SoftmaxXent,
  Mean,
  CountCorrect,
  Embedding,
  LayerNorm,
  Gelu,
  Softmax,
  CausalAttention,
  Dropout,
  Reshape,
  Transpose,
  Narrow,
  Concat
};

struct Node {
  explicit Node(NodeKind k) : kind(k) {}
  NodeKind kind;
  std::vector<int> inputs;
  std::vector<int64_t> shape;
  DType dtype = DType::f32;
  std::string name; // input field or parameter (variable) name
  int placement = -1;
  std::optional<std::vector<Sbp>> sbp;         // user-given; otherwise chosen by the compiler
  Init init;                                   // Parameter
  uint64_t seed = 0;                           // Parameter, Dropout
  bool transposeA = false, transposeB = false; // MatMul
  double eps = 0;                              // LayerNorm
  double p = 0;                                // Dropout
  int64_t heads = 0;                           // CausalAttention
  int64_t axis = 0, begin = 0;                 // Narrow (axis, begin), Concat (axis)
  std::vector<int64_t> perm;                   // Transpose

  SourceLoc loc;
};

struct PlacementDecl {
  std::string name;
  PlacementSpec spec;
};

class Graph {
public:
  Graph(std::string name, uint64_t seed) : name_(std::move(name)), seed_(seed) {}

  Tensor add(Node node);
  const Node &node(int id) const { return nodes_.at(id); }
  const Node &node(Tensor t) const { return check(t).nodes_.at(t.id()); }
  const std::vector<Node> &nodes() const { return nodes_; }
  // An input (field) or parameter (variable) of that name exists.
  bool hasNamed(NodeKind kind, const std::string &name) const;
  int addPlacement(PlacementDecl decl) {
    placements_.push_back(std::move(decl));
    return static_cast<int>(placements_.size()) - 1;
  }
  const std::vector<PlacementDecl> &placements() const { return placements_; }
  const std::string &name() const { return name_; }
  uint64_t seed() const { return seed_; }
  // Seed of a parameter or dropout: the model seed mixed with its name, so
  // adding a layer does not change the initial values of the others.
  uint64_t parameterSeed(const std::string &name) const;
  // Name of the next unnamed dropout: "dropout.<n>".
  std::string nextDropoutName() { return "dropout." + std::to_string(dropouts_++); }

  struct Training {
    int loss = -1;
    optim::Optimizer optimizer;
    std::optional<double> maxGradNorm;
    SourceLoc loc;
  };
  std::optional<Training> training;
  std::vector<std::pair<std::string, int>> evalMetrics;
  std::vector<std::pair<std::string, int>> outputs; // read after an @eval step

  const Graph &check(Tensor t) const;

private:
  std::string name_;
  uint64_t seed_;
  std::vector<Node> nodes_;
  std::vector<PlacementDecl> placements_;
  int dropouts_ = 0;
};

} // namespace sbpflow
