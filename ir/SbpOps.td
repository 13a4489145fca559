// Ops of the `sbp` dialect: module-level placements and variables, the compute
// ops of a step function, the optimiser and the boxing collectives. An op's
// facts live here (plan kind, mixed-precision policy, attributes) and in its
// family in ops/ (shapes, SBP signatures, gradient, cost).
#ifndef SBP_OPS_TD
#define SBP_OPS_TD

include "SbpBase.td"
include "SbpInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

// Every op's tensor encodings name a declared placement with one SBP per
// hierarchy dimension, the same placement for all of them. An op that
// references other symbols (variables) replaces extraClassDefinition by its
// own verifySymbolUses.
defvar Sbp_VerifyEncodings = [{
  ::mlir::LogicalResult $cppClass::verifySymbolUses(::mlir::SymbolTableCollection &symbols) {
    return ::mlir::sbp::verifyEncodings(*this, symbols);
  }
}];
class Sbp_Op<string mnemonic, list<Trait> traits = []>
    : Op<Sbp_Dialect, mnemonic,
         traits # [DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let extraClassDefinition = Sbp_VerifyEncodings;
}

// The op's facts for the compiler: SbpOpInterface, defined by its family in
// ops/. The interface's verifier runs the op's shape rule. A Differentiable
// op also defines its gradient rule (the others have none: backward and
// fused ops, sources, training ops).
defvar SbpSemantics = DeclareOpInterfaceMethods<SbpOpInterface>;
defvar SbpDifferentiable = DeclareOpInterfaceMethods<SbpOpInterface, ["buildGradients"]>;
defvar Differentiable = 1;

// An op that becomes one task of the plan: its row of runtime/plan/Ops.def
// (plan kind, arity, element types, attributes table). sbp-emit-plan reads
// it through PlanOpInterface.
class PlanKind<string kind>
    : ParamNativeOpTrait<"PlanKind", "::sbpflow::plan::OpKind::" # kind>;
class PlanOp<string kind> : TraitList<[PlanKind<kind>, Sbp_PlanOpInterface]>;

// The op under sbp-mixed-precision (ir/SbpDialect.h, enum Precision):
// Unchanged, Bf16, F32, FirstOperand or Common. Its plan kind's Ops.def
// letters say which operands and results take that type (T, A, W), stay f32
// (F) or are not floats (I). Ops without a policy (the backward ops) are
// refused: the pass runs before sbp-autodiff.
class PrecisionPolicy<string policy>
    : ParamNativeOpTrait<"PrecisionPolicy", "::mlir::sbp::Precision::" # policy>;
class Precision<string policy>
    : TraitList<[PrecisionPolicy<policy>, Sbp_PrecisionOpInterface]>;

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
  let description = [{
    With `replica_dim` (local SGD) each replica along that hierarchy
    dimension holds a value of its own; the encoding there is B in shape only.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, TypeAttrOf<AnyRankedTensor>:$type,
                       Sbp_InitAttr:$init, I64Attr:$seed, OptionalAttr<I64Attr>:$replica_dim);
  let assemblyFormat = [{
    $sym_name `:` $type `init` custom<FullAttr>($init) `seed` $seed attr-dict
  }];
  let builders = [
    OpBuilder<(ins "::llvm::StringRef":$name, "::mlir::TypeAttr":$type,
                   "::mlir::sbp::InitAttr":$init, "::mlir::IntegerAttr":$seed), [{
      build($_builder, $_state, $_builder.getStringAttr(name), type, init, seed, nullptr);
    }]>
  ];
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
  }];
  let extraClassDefinition = [{}];
}

def Sbp_ScheduleOp : Sbp_Op<"schedule", [HasParent<"::mlir::ModuleOp">]> {
  let summary = "how the functions interleave in training (plan.fbs Schedule)";
  let description = [{
    Local SGD (sbp-local-sgd): `inner` runs `period` steps a round, then the
    steps of `round` in order: "run @f" runs a function once, "start @f"
    starts it in the background (CO2's exchange), "join" waits for it;
    "inner @f" makes @f the next round's first inner step (EDiT's
    synchronisation inside its forward). With `seconds` (A-EDiT) rounds are
    timed instead: period 0, each replica's round ends `seconds` after it
    began, and a round whose replicas took fewer than `min_steps` steps in
    all is not synchronised (plan.fbs Schedule).
  }];
  let arguments = (ins StrAttr:$algorithm, FlatSymbolRefAttr:$inner, I64Attr:$period,
                       StrArrayAttr:$round, OptionalAttr<F64Attr>:$seconds,
                       OptionalAttr<I64Attr>:$min_steps);
  let assemblyFormat = "$algorithm $inner `every` $period `then` $round attr-dict";
  let extraClassDeclaration = [{
    // A step of `round`: its action (plan.fbs ScheduleAction: 0 run, 1
    // start, 2 join, 3 inner) and function (empty for join); nullopt if
    // malformed.
    static std::optional<std::pair<int, ::llvm::StringRef>> parseStep(::llvm::StringRef step);
  }];
  let extraClassDefinition = [{}];
}

//===-- sources (ops/Sources.cpp) --------------------------------------------===//

def Sbp_InputOp : Sbp_Op<"input", [Pure, PlanOp<"Input">, Precision<"Unchanged">, SbpSemantics]> {
  let summary = "this step's batch of a named data field";
  let arguments = (ins StrAttr:$field);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$field attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Sbp_ParameterOp : Sbp_Op<"parameter",
    [Pure, PlanOp<"Parameter">, Precision<"Unchanged">, SbpSemantics]> {
  let summary = "a view of a variable";
  let arguments = (ins FlatSymbolRefAttr:$variable);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$variable attr-dict `:` type($result)";
  let extraClassDefinition = [{}];
}

def Sbp_FillOp : Sbp_Op<"fill", [Pure, PlanOp<"Fill">, Precision<"Unchanged">, SbpSemantics]> {
  let summary = "a tensor with every element equal to `value`";
  let arguments = (ins F32Attr:$value);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "$value attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===-- compute ------------------------------------------------------------===//

class Sbp_ComputeOp<string mnemonic, string planKind, list<Trait> traits = [],
                    bit differentiable = 0>
    : Sbp_Op<mnemonic, traits # [Pure, PlanOp<planKind>,
                                 !if(differentiable, SbpDifferentiable, SbpSemantics)]> {
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
}

// ---- ops/Linear.cpp

def Sbp_MatmulOp : Sbp_ComputeOp<"matmul", "MatMul", [Precision<"Bf16">], Differentiable> {
  let summary = "matrix product op(a) x op(b) of operands viewed as [prod(lead), last]";
  let description = [{
    Operands of rank >= 2 are viewed as 2-D matrices [product of the leading
    axes, last axis]. The result shape is (transpose_a ? [a.last] : a.lead) ++
    (transpose_b ? b.lead : [b.last]): a linear layer on [B, T, in] is
    `matmul(x, W, transpose_b = true)` with W [out, in], and its weight
    gradient `matmul(dy, x, transpose_a = true)` contracts every leading axis.
  }];
  let arguments = (ins AnyRankedTensor:$a, AnyRankedTensor:$b,
                       DefaultValuedAttr<BoolAttr, "false">:$transpose_a,
                       DefaultValuedAttr<BoolAttr, "false">:$transpose_b);
}

def Sbp_BiasAddOp : Sbp_ComputeOp<"bias_add", "BiasAdd",
                                  [Precision<"FirstOperand">], Differentiable> {
  let summary = "x + bias, bias matching the trailing bias.rank axes of x";
  let arguments = (ins AnyRankedTensor:$x, AnyRankedTensor:$bias);
}

def Sbp_BiasGeluOp : Sbp_ComputeOp<"bias_gelu", "BiasGelu"> {
  let summary = "pre = bias_add(x, bias), y = gelu(pre) in one pass (sbp-fuse-bias-gelu)";
  let arguments = (ins AnyRankedTensor:$x, AnyRankedTensor:$bias);
  let results = (outs AnyRankedTensor:$pre, AnyRankedTensor:$y);
}

def Sbp_ReduceRowsOp : Sbp_ComputeOp<"reduce_rows", "ReduceRows"> {
  let summary = "sum over the leading axes of x down to the result's (trailing) shape";
  let arguments = (ins AnyRankedTensor:$x);
}

// ---- ops/Elementwise.cpp

def Sbp_AddOp : Sbp_ComputeOp<"add", "Add", [Precision<"Common">], Differentiable> {
  let summary = "elementwise sum";
  let arguments = (ins AnyRankedTensor:$lhs, AnyRankedTensor:$rhs);
}

def Sbp_ReluOp : Sbp_ComputeOp<"relu", "Relu", [Precision<"Common">], Differentiable> {
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_ReluGradOp : Sbp_ComputeOp<"relu_grad", "ReluGrad"> {
  let summary = "y > 0 ? dy : 0";
  let arguments = (ins AnyRankedTensor:$dy, AnyRankedTensor:$y);
}

def Sbp_GeluOp : Sbp_ComputeOp<"gelu", "Gelu", [Precision<"Common">], Differentiable> {
  let summary = "exact (erf) GELU";
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_GeluGradOp : Sbp_ComputeOp<"gelu_grad", "GeluGrad"> {
  let summary = "dy * gelu'(x)";
  let arguments = (ins AnyRankedTensor:$dy, AnyRankedTensor:$x);
}

def Sbp_DropoutOp : Sbp_ComputeOp<"dropout", "Dropout", [Precision<"Common">], Differentiable> {
  let summary = "x * keep / (1 - p), the keep mask a function of (seed, global index, batch)";
  let arguments = (ins AnyRankedTensor:$x, F32Attr:$p, I64Attr:$seed);
}

// ---- ops/Loss.cpp

def Sbp_SoftmaxXentOp : Sbp_ComputeOp<"softmax_xent", "SoftmaxXent",
                                      [Precision<"FirstOperand">], Differentiable> {
  let summary = "cross entropy of softmax(logits[..., :]) against i32 labels[...]";
  let arguments = (ins AnyRankedTensor:$logits, AnyRankedTensor:$labels);
}

def Sbp_SoftmaxXentGradOp : Sbp_ComputeOp<"softmax_xent_grad", "SoftmaxXentGrad"> {
  let summary = "(softmax(logits) - onehot(labels)) * dloss[...]";
  let arguments = (ins AnyRankedTensor:$logits, AnyRankedTensor:$labels,
                       AnyRankedTensor:$dloss);
}

def Sbp_MeanOp : Sbp_ComputeOp<"mean", "Mean", [Precision<"F32">], Differentiable> {
  let summary = "mean of all elements (a scalar)";
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_MeanGradOp : Sbp_ComputeOp<"mean_grad", "MeanGrad"> {
  let summary = "dy / count broadcast into the result shape";
  let arguments = (ins AnyRankedTensor:$dy);
}

def Sbp_CountCorrectOp : Sbp_ComputeOp<"count_correct", "CountCorrect",
                                       [Precision<"FirstOperand">]> {
  let summary = "number of rows whose argmax equals the label (f32 scalar)";
  let arguments = (ins AnyRankedTensor:$logits, AnyRankedTensor:$labels);
}

// ---- ops/Embedding.cpp

def Sbp_EmbeddingOp : Sbp_ComputeOp<"embedding", "Embedding",
                                    [Precision<"Common">], Differentiable> {
  let summary = "rows of table [V, C] picked by i32 ids [...] -> [..., C]";
  let arguments = (ins AnyRankedTensor:$table, AnyRankedTensor:$ids);
}

def Sbp_EmbeddingGradOp : Sbp_ComputeOp<"embedding_grad", "EmbeddingGrad"> {
  let summary = "scatter-add of dy [..., C] into the rows ids [...] of a [V, C] result";
  let arguments = (ins AnyRankedTensor:$dy, AnyRankedTensor:$ids);
}

def Sbp_GatherRowsOp : Sbp_ComputeOp<"gather_rows", "GatherRows",
                                     [Precision<"FirstOperand">], Differentiable> {
  let summary = "rows of x [N, C] picked by i32 idx [E] -> [E, C] (one message per edge)";
  let arguments = (ins AnyRankedTensor:$x, AnyRankedTensor:$idx);
}

def Sbp_ScatterRowsOp : Sbp_ComputeOp<"scatter_rows", "ScatterRows",
                                      [Precision<"FirstOperand">], Differentiable> {
  let summary = "the rows y [E, C] summed into rows idx [E] of the [N, C] result";
  let description = [{
    N comes from the result type. The gradient of gather_rows, and a graph
    layer's aggregation: messages of the edges summed at their targets.
  }];
  let arguments = (ins AnyRankedTensor:$y, AnyRankedTensor:$idx);
}

// ---- ops/Normalization.cpp

def Sbp_LayerNormOp : Sbp_ComputeOp<"layer_norm", "LayerNorm",
                                    [Precision<"FirstOperand">], Differentiable> {
  let summary = "layer normalisation over the last axis, scaled by gamma and shifted by beta";
  let arguments = (ins AnyRankedTensor:$x, AnyRankedTensor:$gamma, AnyRankedTensor:$beta,
                       F32Attr:$eps);
}

def Sbp_LayerNormGradOp : Sbp_ComputeOp<"layer_norm_grad", "LayerNormGrad"> {
  let summary = "gradients dx, dgamma, dbeta of layer_norm from dy, x and gamma";
  let arguments = (ins AnyRankedTensor:$dy, AnyRankedTensor:$x, AnyRankedTensor:$gamma,
                       F32Attr:$eps);
  let results = (outs AnyRankedTensor:$dx, AnyRankedTensor:$dgamma, AnyRankedTensor:$dbeta);
}

def Sbp_SoftmaxOp : Sbp_ComputeOp<"softmax", "Softmax", [Precision<"Common">], Differentiable> {
  let summary = "softmax over the last axis";
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_SoftmaxGradOp : Sbp_ComputeOp<"softmax_grad", "SoftmaxGrad"> {
  let summary = "y * (dy - sum(dy * y)) over the last axis (y: the softmax output)";
  let arguments = (ins AnyRankedTensor:$dy, AnyRankedTensor:$y);
}

// ---- ops/Attention.cpp

def Sbp_CausalAttentionOp : Sbp_ComputeOp<"causal_attention", "CausalAttention",
                                          [Precision<"Bf16">], Differentiable> {
  let summary = "causal multi-head self-attention of q, k, v [B, T, C], C = heads * d";
  let arguments = (ins AnyRankedTensor:$q, AnyRankedTensor:$k, AnyRankedTensor:$v,
                       I64Attr:$heads);
}

def Sbp_CausalAttentionGradOp : Sbp_ComputeOp<"causal_attention_grad", "CausalAttentionGrad"> {
  let summary = "gradients dq, dk, dv of causal_attention (weights recomputed)";
  let arguments = (ins AnyRankedTensor:$dy, AnyRankedTensor:$q, AnyRankedTensor:$k,
                       AnyRankedTensor:$v, I64Attr:$heads);
  let results = (outs AnyRankedTensor:$dq, AnyRankedTensor:$dk, AnyRankedTensor:$dv);
}

// ---- ops/Shape.cpp

def Sbp_ReshapeOp : Sbp_ComputeOp<"reshape", "Reshape", [Precision<"Common">], Differentiable> {
  let summary = "the same elements in the result type's shape";
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_TransposeOp : Sbp_ComputeOp<"transpose", "Transpose",
                                    [Precision<"Common">], Differentiable> {
  let summary = "axes permuted: result.shape[k] = x.shape[perm[k]]";
  let arguments = (ins AnyRankedTensor:$x, DenseI64ArrayAttr:$perm);
}

def Sbp_NarrowOp : Sbp_ComputeOp<"narrow", "Narrow", [Precision<"Common">], Differentiable> {
  let summary = "x[..., begin : begin + result.shape[axis], ...] (torch.narrow)";
  let arguments = (ins AnyRankedTensor:$x, I64Attr:$axis, I64Attr:$begin);
}

def Sbp_NarrowGradOp : Sbp_ComputeOp<"narrow_grad", "NarrowGrad"> {
  let summary = "zeros of the result type with dy written at begin on axis";
  let arguments = (ins AnyRankedTensor:$dy, I64Attr:$axis, I64Attr:$begin);
}

def Sbp_ConcatOp : Sbp_ComputeOp<"concat", "Concat", [Precision<"Common">], Differentiable> {
  let summary = "the operands joined along axis";
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs, I64Attr:$axis);
}

def Sbp_CastOp : Sbp_ComputeOp<"cast", "Cast", [Precision<"Unchanged">], Differentiable> {
  let summary = "x converted to the result's element type (f32 <-> bf16, round to nearest even)";
  let description = [{
    Inserted by sbp-mixed-precision: activations in bf16, variables (master
    weights), losses and reductions in f32. Its gradient casts back.
  }];
  let arguments = (ins AnyRankedTensor:$x);
}

//===-- training (ops/Training.cpp) ---------------------------------------------===//

def Sbp_SquareSumOp : Sbp_ComputeOp<"square_sum", "SquareSum", [Precision<"F32">]> {
  let summary = "sum of the squares of all elements (an f32 scalar)";
  let arguments = (ins AnyRankedTensor:$x);
}

def Sbp_ClipScaleOp : Sbp_ComputeOp<"clip_scale", "ClipScale", [Precision<"F32">]> {
  let summary = "min(1, max_norm / (sqrt(sumsq) + 1e-6)): the gradient clipping factor";
  let arguments = (ins AnyRankedTensor:$sumsq, F32Attr:$max_norm);
}

def Sbp_PseudoGradientOp : Sbp_ComputeOp<"pseudo_gradient", "PseudoGradient",
                                        [Precision<"F32">]> {
  let summary = "anchor - param: a replica's pseudo-gradient, partial on the replica dimension";
  let arguments = (ins AnyRankedTensor:$anchor, AnyRankedTensor:$param, I64Attr:$dim);
}

def Sbp_OptimizerAttr : Attr<CPred<"::llvm::isa<::mlir::sbp::OptimizerAttrInterface>($_self)">,
                              "an optimiser (#sbp.sgd, #sbp.adamw)"> {
  let storageType = "::mlir::Attribute";
  let returnType = "::mlir::Attribute";
  let convertFromStorage = "$_self";
}

def Sbp_MinimizeOp : Sbp_Op<"minimize", [Precision<"F32">]> {
  let summary = "train every parameter feeding `loss` (removed by sbp-autodiff)";
  let description = [{
    `optimizer` is an optimiser attribute (#sbp.sgd<...>, #sbp.adamw<...>);
    with `max_grad_norm` the gradients are scaled so that their global L2
    norm is at most it.
  }];
  let arguments = (ins AnyRankedTensor:$loss,
                       Sbp_OptimizerAttr:$optimizer,
                       OptionalAttr<F32Attr>:$max_grad_norm);
  let assemblyFormat = "$loss attr-dict `:` type($loss)";
  let builders = [
    OpBuilder<(ins "::mlir::Value":$loss, "::mlir::Attribute":$optimizer), [{
      build($_builder, $_state, loss, optimizer, ::mlir::FloatAttr());
    }]>
  ];
  let hasVerifier = 1;
}

def Sbp_MetricOp : Sbp_Op<"metric", [Precision<"F32">, SbpSemantics]> {
  let summary = "a scalar reported to the driver each step";
  let arguments = (ins StrAttr:$name, AnyRankedTensor:$value);
  let assemblyFormat = "$name $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

def Sbp_OutputOp : Sbp_Op<"output", [Precision<"F32">, SbpSemantics]> {
  let summary = "a tensor the caller reads after a step (e.g. probabilities for sampling)";
  let arguments = (ins StrAttr:$name, AnyRankedTensor:$value);
  let assemblyFormat = "$name $value attr-dict `:` type($value)";
  let hasVerifier = 1;
}

class Sbp_OptimizerOp<string mnemonic, string planKind>
    : Sbp_Op<mnemonic, [PlanOp<planKind>, Precision<"F32">, SbpSemantics,
                        DeclareOpInterfaceMethods<Sbp_OptimizerOpInterface>]> {
  let assemblyFormat = [{
    $grad (`,` $scale^)? attr-dict `:` type($grad) (`,` type($scale)^)?
  }];
  let hasVerifier = 1;
  let extraClassDefinition = [{}];
}

def Sbp_SgdOp : Sbp_OptimizerOp<"sgd", "SgdMomentum"> {
  let summary = "in-place SGD update of `variable` from `grad` (times the optional scalar `scale`)";
  let arguments = (ins AnyRankedTensor:$grad, Optional<AnyRankedTensor>:$scale,
                       FlatSymbolRefAttr:$variable,
                       OptionalAttr<FlatSymbolRefAttr>:$momentum_buffer,
                       F32Attr:$lr, F32Attr:$momentum, F32Attr:$weight_decay);
}

def Sbp_AdamWOp : Sbp_OptimizerOp<"adamw", "AdamW"> {
  let summary = "in-place AdamW update of `variable` from `grad` (times the optional `scale`)";
  let description = [{
    `m` and `v` are variables of the variable's type holding the moments,
    `step` a scalar i32 variable counting the updates (plan.fbs AdamWAttrs;
    an executor refuses to count past INT32_MAX).
  }];
  let arguments = (ins AnyRankedTensor:$grad, Optional<AnyRankedTensor>:$scale,
                       FlatSymbolRefAttr:$variable, FlatSymbolRefAttr:$m,
                       FlatSymbolRefAttr:$v, FlatSymbolRefAttr:$step,
                       F32Attr:$lr, F32Attr:$beta1, F32Attr:$beta2, F32Attr:$eps,
                       F32Attr:$weight_decay);
}

// Local SGD's outer step (ops/LocalSgd.cpp; plan.fbs OuterAttrs has the
// formula): `grad` is the replicas' summed pseudo-gradient of `variable`,
// `anchor` holds the parameters at the round's start.
def Sbp_OuterStepOp : Sbp_OptimizerOp<"outer_step", "OuterStep"> {
  let summary = "local SGD's outer update of `anchor` and `variable` (DiLoCo, CO2)";
  let arguments = (ins AnyRankedTensor:$grad, Optional<AnyRankedTensor>:$scale,
                       FlatSymbolRefAttr:$variable, FlatSymbolRefAttr:$anchor,
                       OptionalAttr<FlatSymbolRefAttr>:$momentum_buffer,
                       F32Attr:$lr, F32Attr:$momentum, BoolAttr:$nesterov, I64Attr:$replicas,
                       F32Attr:$gap_penalty, F32Attr:$clip,
                       DefaultValuedAttr<BoolAttr, "false">:$keep_anchor);
}

// variable = value: local SGD's bookkeeping between rounds (CO2 keeps the
// round's pseudo-gradient and adopts the next anchor). On the variable's
// replica dimension the value may be partial: each replica keeps its term.
def Sbp_AssignOp : Sbp_Op<"assign", [PlanOp<"Assign">, Precision<"F32">, SbpSemantics,
    DeclareOpInterfaceMethods<Sbp_OptimizerOpInterface, ["getGradient", "getGradientScale"]>]> {
  let summary = "writes `value` into `variable` (this rank's shard)";
  let arguments = (ins AnyRankedTensor:$value, FlatSymbolRefAttr:$variable);
  let assemblyFormat = "$value attr-dict `:` type($value)";
  let extraClassDefinition = [{}];
}

//===-- boxing (ops/Boxing.cpp) -----------------------------------------------===//

class Sbp_BoxingOp<string mnemonic, string planKind, list<Trait> traits = []>
    : Sbp_Op<mnemonic, traits # [Pure, PlanOp<planKind>,
                                 DeclareOpInterfaceMethods<Sbp_BoxingOpInterface>]> {
  let assemblyFormat = "operands attr-dict `:` functional-type(operands, results)";
}

def Sbp_AllReduceOp : Sbp_BoxingOp<"all_reduce", "AllReduce"> {
  let summary = "P -> B on hierarchy dimension `dim`; several operands form one bucket";
  let description = [{
    With a `codec` (#sbp.codec, set by sbp-compress-gradients) it sums one f32
    gradient by exchanging compressed payloads: `state` names the codec's
    variables (one row per rank of the placement: the residual, DGC's
    momentum and accumulation, PowerSGD's Q) and `step` the i32 scalar
    counting its exchanges. With `lgreco` (#sbp.lgreco) the codec's parameter
    is chosen per layer at runtime; `lgreco_state` names the shared table,
    choice, previous choice and pending count. An edit codec with a
    step_weight reads each rank's inner steps from the i32 scalar
    `inner_steps` (the parameter's optimiser step counter).
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs, I64Attr:$dim,
                       OptionalAttr<Sbp_CodecAttr>:$codec,
                       OptionalAttr<SymbolRefArrayAttr>:$state,
                       OptionalAttr<FlatSymbolRefAttr>:$step,
                       OptionalAttr<Sbp_LgrecoAttr>:$lgreco,
                       OptionalAttr<SymbolRefArrayAttr>:$lgreco_state,
                       OptionalAttr<FlatSymbolRefAttr>:$inner_steps);
  let results = (outs Variadic<AnyRankedTensor>:$results);
  let builders = [
    OpBuilder<(ins "::mlir::TypeRange":$results, "::mlir::ValueRange":$inputs, "int64_t":$dim), [{
      build($_builder, $_state, results, inputs, dim, nullptr, nullptr, nullptr, nullptr, nullptr,
            nullptr);
    }]>
  ];
  let extraClassDeclaration = [{
    ::mlir::LogicalResult verifyCodec();
  }];
}

def Sbp_AllGatherOp : Sbp_BoxingOp<"all_gather", "AllGather"> {
  let summary = "S(i) -> B on hierarchy dimension `dim`";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_ReduceScatterOp : Sbp_BoxingOp<"reduce_scatter", "ReduceScatter"> {
  let summary = "P -> S(i) on hierarchy dimension `dim`";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_AllToAllOp : Sbp_BoxingOp<"all_to_all", "AllToAll"> {
  let summary = "S(i) -> S(j) on hierarchy dimension `dim`";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_SliceOp : Sbp_BoxingOp<"slice", "Slice"> {
  let summary = "B -> S(i) on hierarchy dimension `dim` (local, no communication)";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_ZeroOthersOp : Sbp_BoxingOp<"zero_others", "ZeroOthers"> {
  let summary = "B -> P on hierarchy dimension `dim`: one rank keeps the value";
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim);
  let results = (outs AnyRankedTensor:$result);
}

def Sbp_LocalEstimateOp : Sbp_BoxingOp<"local_estimate", "Scale"> {
  let summary = "P -> B on hierarchy dimension `dim` without communication";
  let description = [{
    Each rank's term times `factor`, the group's size: the rank's own
    estimate of the sum. Local SGD's inner program uses it where data
    parallelism all-reduces a gradient: a replica applies the gradient of its
    own batch (ops/LocalSgd.cpp).
  }];
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$dim, F32Attr:$factor);
  let results = (outs AnyRankedTensor:$result);
  let hasVerifier = 1;
}

#endif
