// The op interfaces through which the compiler reads an op's facts. Every
// op declares them in SbpOps.td; its family in ops/ defines the methods, so
// they are part of the dialect and an op cannot lack them.
#ifndef SBP_INTERFACES_TD
#define SBP_INTERFACES_TD

include "mlir/IR/OpBase.td"

// Shapes, SBP signatures, gradient and cost: one ops/<family>.cpp per family.
// The verifier of every op that has it checks its result types against
// inferResultTypes (the rule the frontend builds ops with).
def SbpOpInterface : OpInterface<"SbpOpInterface"> {
  let cppNamespace = "::mlir::sbp";
  let methods = [
    InterfaceMethod<
      "Result types (global shapes, no encoding) inferred from the operands; "
      "emits a located error and fails on operands the op does not accept.",
      "::mlir::LogicalResult", "inferResultTypes",
      (ins "::llvm::SmallVectorImpl<::mlir::RankedTensorType> &":$results)>,
    InterfaceMethod<
      "Candidate 1-D signatures for hierarchy dimension `dim`.",
      "::llvm::SmallVector<::mlir::sbp::SbpSignature>", "getSbpSignatures",
      (ins "unsigned":$dim)>,
    InterfaceMethod<
      "Builds the backward ops at the builder's insertion point: one gradient "
      "per operand (null where the operand is not differentiable). Only ops "
      "declared Differentiable in SbpOps.td have a rule.",
      "::mlir::LogicalResult", "buildGradients",
      (ins "::mlir::OpBuilder &":$builder,
           "::llvm::ArrayRef<::mlir::Value>":$resultGrads,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads), [{}],
      [{ return ::mlir::sbp::noGradient($_op); }]>,
    InterfaceMethod<"Floating point operations of the global computation.",
      "double", "getFlops", (ins)>,
  ];
  let verify = [{ return ::mlir::sbp::verifyInferredResultTypes($_op); }];
}

// An op that becomes one plan task (PlanOp<"Kind"> in SbpOps.td). Its plan
// kind names its row of runtime/plan/Ops.def: everything else the plan holds
// of it (attributes table, element types) follows from that row and the op's
// attributes of the same names.
def Sbp_PlanOpInterface : OpInterface<"PlanOpInterface"> {
  let cppNamespace = "::mlir::sbp";
  let methods = [
    StaticInterfaceMethod<"The plan op kind (runtime/plan/Ops.def).",
      "::sbpflow::plan::OpKind", "getPlanKind", (ins)>,
  ];
}

// The op's policy under sbp-mixed-precision (Precision<"..."> in SbpOps.td).
def Sbp_PrecisionOpInterface : OpInterface<"PrecisionOpInterface"> {
  let cppNamespace = "::mlir::sbp";
  let methods = [
    StaticInterfaceMethod<"The element type the op computes in under mixed precision.",
      "::mlir::sbp::Precision", "getPrecision", (ins)>,
  ];
}

// An optimiser: updates `variable` in place from a gradient (times an
// optional scalar scale), with state variables of its own.
def Sbp_OptimizerOpInterface : OpInterface<"OptimizerOpInterface"> {
  let cppNamespace = "::mlir::sbp";
  let methods = [
    InterfaceMethod<"The variable updated.", "::mlir::FlatSymbolRefAttr", "getUpdatedVariable",
      (ins), [{ return $_op.getVariableAttr(); }]>,
    InterfaceMethod<"The optimiser's state variables (momentum, moments, step counter).",
      "::llvm::SmallVector<::mlir::FlatSymbolRefAttr>", "getStateVariables", (ins)>,
    InterfaceMethod<"The gradient of the variable (an sbp.assign's value).", "::mlir::Value",
      "getGradient", (ins), [{}], [{ return $_op.getGrad(); }]>,
    InterfaceMethod<"The scalar the gradient is scaled by, or null.", "::mlir::Value",
      "getGradientScale", (ins), [{}], [{ return $_op.getScale(); }]>,
  ];
}

// A boxing step: one SBP change on one hierarchy dimension. Its verifier
// checks that its operands and results differ by exactly that change.
def Sbp_BoxingOpInterface : OpInterface<"BoxingOpInterface"> {
  let cppNamespace = "::mlir::sbp";
  let methods = [
    StaticInterfaceMethod<"Whether the op turns `from` into `to` on its dimension.",
      "bool", "acceptsChange", (ins "::mlir::sbp::SbpDim":$from, "::mlir::sbp::SbpDim":$to)>,
    StaticInterfaceMethod<"The change the op makes, for diagnostics (\"P -> B\").",
      "::llvm::StringRef", "getChange", (ins)>,
    InterfaceMethod<"The hierarchy dimension acted on.", "int64_t", "getHierarchyDim",
      (ins), [{ return static_cast<int64_t>($_op.getDim()); }]>,
  ];
  let verify = [{ return ::mlir::sbp::verifyBoxing($_op); }];
}

// An optimiser attribute of sbp.minimize (#sbp.sgd, #sbp.adamw): how
// sbp-autodiff updates a trained variable with it.
def Sbp_OptimizerAttrInterface : AttrInterface<"OptimizerAttrInterface"> {
  let cppNamespace = "::mlir::sbp";
  let methods = [
    InterfaceMethod<
      "Builds the update of `variable` (an sbp.variable) from `grad`, scaled by "
      "`scale` (may be null), at the builder's insertion point. `slot(suffix, "
      "type)` names the optimiser state variable `<variable>.<suffix>`, "
      "zero-initialised, creating it when missing.",
      "::mlir::LogicalResult", "buildUpdate",
      (ins "::mlir::OpBuilder &":$builder, "::mlir::Location":$loc,
           "::mlir::Operation *":$variable, "::mlir::Value":$grad, "::mlir::Value":$scale,
           "::llvm::function_ref<::mlir::FailureOr<::mlir::FlatSymbolRefAttr>("
           "::llvm::StringRef, ::mlir::Type)>":$slot)>,
  ];
}

#endif
