// Ops of the `sbp` dialect: module-level placements and variables, the compute
// ops of a step function, the optimiser and the boxing collectives.
#ifndef SBP_OPS_TD
#define SBP_OPS_TD

include "SbpBase.td"
include "SbpInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

class Sbp_Op<string mnemonic, list<Trait> traits = []>
    : Op<Sbp_Dialect, mnemonic,
         traits # [DeclareOpInterfaceMethods<SymbolUserOpInterface>]>;

//===-- module level ------------------------------------------------------===//

def Sbp_PlacementOp : Sbp_Op<"placement", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "a set of ranks arranged in a hierarchy";
  let arguments = (ins SymbolNameAttr:$sym_name, Sbp_DeviceKind:$device,
                       DenseI64ArrayAttr:$ranks, DenseI64ArrayAttr:$hierarchy);
  let assemblyFormat = [{
    $sym_name $device `ranks` $ranks `hierarchy` $hierarchy attr-dict
  }];
  let hasVerifier = 1;
}

def Sbp_VariableOp : Sbp_Op<"variable", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "persistent state (parameter or optimiser slot)";
  let arguments = (ins SymbolNameAttr:$sym_name, TypeAttrOf<AnyRankedTensor>:$type,
                       Sbp_InitAttr:$init, I64Attr:$seed);
  let assemblyFormat = [{
    $sym_name `:` $type `init` custom<FullAttr>($init) `seed` $seed attr-dict
  }];
  let builders = [
    OpBuilder<(ins "::llvm::StringRef":$name, "::mlir::TypeAttr":$type,
                   "::mlir::sbp::InitAttr":$init, "::mlir::IntegerAttr":$seed), [{
      build($_builder, $_state, $_builder.getStringAttr(name), type, init, seed);
    }]>
  ];
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
  }];
}

//===-- sources ------------------------------------------------------------===//

def Sbp_InputOp : Sbp_Op<"input", [Pure]> {
  let summary = "this step's batch of a named data field";
  let arguments = (ins StrAttr:$field);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$field attr-dict `:` type($result)";
}

def Sbp_ParameterOp : Sbp_Op<"parameter", [Pure]> {
  let summary = "a view of a variable";
  let arguments = (ins FlatSymbolRefAttr:$variable);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$variable attr-dict `:` type($result)";
}

def Sbp_FillOp : Sbp_Op<"fill", [Pure]> {
  let summary = "a tensor with every element equal to `value`";
  let arguments = (ins F32Attr:$value);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$value attr-dict `:` type($result)";
}

//===-- compute ------------------------------------------------------------===//

class Sbp_ComputeOp<string mnemonic, list<Trait> traits = []>
    : Sbp_Op<mnemonic, traits # [Pure]> {
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

def Sbp_MatmulOp : Sbp_ComputeOp<"matmul"> {
  let summary = "2-D matrix product op(a) x op(b)";
  let arguments = (ins AnyRankedTensor:$a, AnyRankedTensor:$b,
                       DefaultValuedAttr<BoolAttr, "false">:$transpose_a,
                       DefaultValuedAttr<BoolAttr, "false">:$transpose_b);
}

def Sbp_BiasAddOp : Sbp_ComputeOp<"bias_add"> {
  let summary = "x[i, j] + bias[j]";
  let arguments = (ins AnyRankedTensor:$x, AnyRankedTensor:$bias);
}

def Sbp_AddOp : Sbp_ComputeOp<"add"> {
  let summary = "elementwise sum";
  let arguments = (ins AnyRankedTensor:$lhs, AnyRankedTensor:$rhs);
}

def Sbp_ReluOp : Sbp_ComputeOp<"relu"> {
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_ReluGradOp : Sbp_ComputeOp<"relu_grad"> {
  let summary = "y > 0 ? dy : 0";
  let arguments = (ins AnyRankedTensor:$dy, AnyRankedTensor:$y);
}

def Sbp_SoftmaxXentOp : Sbp_ComputeOp<"softmax_xent"> {
  let summary = "per-row cross entropy of softmax(logits) against i32 labels";
  let arguments = (ins AnyRankedTensor:$logits, AnyRankedTensor:$labels);
}

def Sbp_SoftmaxXentGradOp : Sbp_ComputeOp<"softmax_xent_grad"> {
  let summary = "(softmax(logits) - onehot(labels)) * dloss[i]";
  let arguments = (ins AnyRankedTensor:$logits, AnyRankedTensor:$labels,
                       AnyRankedTensor:$dloss);
}

def Sbp_MeanOp : Sbp_ComputeOp<"mean"> {
  let summary = "mean of all elements (a scalar)";
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_MeanGradOp : Sbp_ComputeOp<"mean_grad"> {
  let summary = "dy / count broadcast into the result shape";
  let arguments = (ins AnyRankedTensor:$dy);
}

def Sbp_ReduceRowsOp : Sbp_ComputeOp<"reduce_rows"> {
  let summary = "column sums of a matrix ([M, N] -> [N])";
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_CountCorrectOp : Sbp_ComputeOp<"count_correct"> {
  let summary = "number of rows whose argmax equals the label (f32 scalar)";
  let arguments = (ins AnyRankedTensor:$logits, AnyRankedTensor:$labels);
}

//===-- training -----------------------------------------------------------===//

def Sbp_MinimizeOp : Sbp_Op<"minimize"> {
  let summary = "train every parameter feeding `loss` (removed by sbp-autodiff)";
  let arguments = (ins AnyRankedTensor:$loss, Sbp_SgdAttr:$optimizer);
  let assemblyFormat = "$loss attr-dict `:` type($loss)";
  let hasVerifier = 1;
}

def Sbp_MetricOp : Sbp_Op<"metric"> {
  let summary = "a scalar reported to the driver each step";
  let arguments = (ins StrAttr:$name, AnyRankedTensor:$value);
  let assemblyFormat = "$name $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

def Sbp_SgdOp : Sbp_Op<"sgd"> {
  let summary = "in-place SGD update of `variable` from `grad`";
  let arguments = (ins AnyRankedTensor:$grad, FlatSymbolRefAttr:$variable,
                       OptionalAttr<FlatSymbolRefAttr>:$momentum_buffer,
                       F32Attr:$lr, F32Attr:$momentum, F32Attr:$weight_decay);
  let assemblyFormat = "$grad attr-dict `:` type($grad)";
  let hasVerifier = 1;
}

//===-- boxing -------------------------------------------------------------===//

class Sbp_BoxingOp<string mnemonic, list<Trait> traits = []>
    : Sbp_Op<mnemonic, traits # [Pure]> {
  let hasVerifier = 1;
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
}

def Sbp_AllReduceOp : Sbp_BoxingOp<"all_reduce"> {
  let summary = "P -> B on hierarchy dimension `dim`; several operands form one bucket";
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs, I64Attr:$dim);
  let results = (outs Variadic<AnyRankedTensor>:$results);
}

def Sbp_AllGatherOp : Sbp_BoxingOp<"all_gather"> {
  let summary = "S(i) -> B on hierarchy dimension `dim`";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_ReduceScatterOp : Sbp_BoxingOp<"reduce_scatter"> {
  let summary = "P -> S(i) on hierarchy dimension `dim`";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_AllToAllOp : Sbp_BoxingOp<"all_to_all"> {
  let summary = "S(i) -> S(j) on hierarchy dimension `dim`";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_SliceOp : Sbp_BoxingOp<"slice"> {
  let summary = "B -> S(i) on hierarchy dimension `dim` (local, no communication)";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_ZeroOthersOp : Sbp_BoxingOp<"zero_others"> {
  let summary = "B -> P on hierarchy dimension `dim`: one rank keeps the value";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

#endif
