// The model as the DSL builds it: `sbp` ops created as the user calls the DSL,
// in call order, in a trace module of the model's own MLIR context. Each op is
// checked when it is created by the verifier of its op (the rules the compiler
// uses), and a failure is a ModelError at the user's line.
#pragma once

#include "frontend/Model.h"
#include "ir/SbpDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <set>

namespace sbpflow {

struct PlacementDecl {
  std::string name;
  PlacementSpec spec;
};

class Graph {
public:
  Graph(std::string name, uint64_t seed);
  ~Graph();

  const std::string &name() const { return name_; }
  mlir::MLIRContext &context() { return context_; }
  mlir::Location location(const SourceLoc &loc);

  // Declarations at module level (placements, variables): the op is checked
  // and kept, or erased and reported at `loc` (prefixed by `what`).
  int addPlacement(PlacementDecl decl, const SourceLoc &loc);
  const std::vector<PlacementDecl> &placements() const { return placements_; }
  mlir::sbp::VariableOp addVariable(const std::string &name, mlir::RankedTensorType type,
                                    const Init &init, const SourceLoc &loc);
  mlir::sbp::VariableOp variable(const std::string &name);

  // An attribute checked by its verifier (an initialiser, an optimiser); a
  // ModelError at `loc` (prefixed by `what`) when it has no meaning.
  template <typename AttrT, typename... Params>
  AttrT attribute(const SourceLoc &loc, const std::string &what, Params &&...params) {
    std::string message;
    AttrT attr;
    {
      mlir::ScopedDiagnosticHandler capture(&context_, [&](mlir::Diagnostic &d) {
        message = d.str();
        return mlir::success();
      });
      attr = AttrT::getChecked([&] { return mlir::emitError(location(loc)); }, &context_,
                               std::forward<Params>(params)...);
    }
    if (!attr)
      throw ModelError(loc, what + message);
    return attr;
  }

  // An op of the step at the end of the trace, built from `args` (values,
  // attributes) with its result type inferred by its shape rule. `type` is
  // the result type where the op cannot infer it: a source's, or the shape
  // of a reshape or narrow; elsewhere any type, replaced by the inferred one.
  // The result is on `placement`.
  template <typename OpT, typename... Args>
  Tensor create(const SourceLoc &loc, int placement, mlir::Type type, Args &&...args) {
    mlir::OpBuilder b = traceBuilder();
    auto op = b.create<OpT>(location(loc), type, std::forward<Args>(args)...);
    verifyCreated(op, loc);
    return add(op->getResult(0), placement);
  }
  // An op of the step without results (minimize, metric, output).
  template <typename OpT, typename... Args> void sink(const SourceLoc &loc, Args &&...args) {
    mlir::OpBuilder b = traceBuilder();
    verifyCreated(b.create<OpT>(location(loc), std::forward<Args>(args)...), loc);
  }

  // The traced value of `t`, and what the DSL reads of it.
  mlir::Value value(Tensor t) const { return tensors_.at(t.id()).value; }
  const std::vector<int64_t> &shape(int id) const { return tensors_.at(id).shape; }
  DType dtype(int id) const;
  int placementOf(Tensor t) const { return tensors_.at(t.id()).placement; }
  // The type of `t` without its SBP: what an op computed from it is typed
  // with before its shape rule runs (the compiler chooses its SBP).
  mlir::RankedTensorType typeOf(Tensor t) const {
    return mlir::sbp::withoutSbp(value(t).getType());
  }

  // Throws std::logic_error for a tensor of another model.
  const Graph &check(Tensor t) const;

  // Seed of a parameter or dropout: the model seed mixed with its name, so
  // adding a layer does not change the initial values of the others.
  uint64_t parameterSeed(const std::string &name) const;
  // Name of the next unnamed dropout: "dropout.<n>".
  std::string nextDropoutName() { return "dropout." + std::to_string(dropouts_++); }

  // Names the DSL allows once.
  std::set<std::string> inputs, dropouts;
  bool training = false;

  // The module: placements, variables, func @train (when the trace has an
  // sbp.minimize: the ops its loss needs, the loss metric, the minimize) and
  // func @eval (when it has metrics or outputs: the ops they and the loss
  // need, dropout left out, then the loss metric, the metrics, the outputs).
  mlir::OwningOpRef<mlir::ModuleOp> toModule();

private:
  struct Traced {
    mlir::Value value;
    std::vector<int64_t> shape;
    int placement;
  };

  mlir::OpBuilder traceBuilder();
  Tensor add(mlir::Value value, int placement);
  // Runs `op`'s verifier and symbol checks; on failure erases it and throws
  // a ModelError at `loc` saying what its verifier said.
  void verifyCreated(mlir::Operation *op, const SourceLoc &loc, const std::string &what = "");

  std::string name_;
  uint64_t seed_;
  mlir::MLIRContext context_;
  mlir::OwningOpRef<mlir::ModuleOp> trace_;
  mlir::Block *body_ = nullptr; // of func @trace
  std::vector<Traced> tensors_;
  std::vector<PlacementDecl> placements_;
  int dropouts_ = 0;
};

} // namespace sbpflow
