// SbpOpInterface: what the compiler needs to know of an op (shapes, SBP
// signatures, gradient rule, cost). Declared here, implemented in ops/ as
// external models so that the IR library does not depend on the semantics.
#ifndef SBP_INTERFACES_TD
#define SBP_INTERFACES_TD

include "mlir/IR/OpBase.td"

def SbpOpInterface : OpInterface<"SbpOpInterface"> {
  let cppNamespace = "::mlir::sbp";
  let methods = [
    InterfaceMethod<
      "Result types (global shapes, no encoding) inferred from the operands.",
      "::mlir::LogicalResult", "inferResultTypes",
      (ins "::llvm::SmallVectorImpl<::mlir::RankedTensorType> &":$results)>,
    InterfaceMethod<
      "Candidate 1-D signatures for hierarchy dimension `dim`.",
      "::llvm::SmallVector<::mlir::sbp::SbpSignature>", "getSbpSignatures",
      (ins "unsigned":$dim)>,
    InterfaceMethod<
      "Builds the backward ops at the builder's insertion point: one gradient "
      "per operand (null where the operand is not differentiable).",
      "::mlir::LogicalResult", "buildGradients",
      (ins "::mlir::OpBuilder &":$builder,
           "::llvm::ArrayRef<::mlir::Value>":$resultGrads,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>,
    InterfaceMethod<"Floating point operations of the global computation.",
      "double", "getFlops", (ins)>,
  ];
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

#endif
