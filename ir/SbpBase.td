// The `sbp` dialect: SBP dimension attributes, the tensor encoding that carries
// placement + nd-SBP, initialiser and optimiser attributes.
#ifndef SBP_BASE_TD
#define SBP_BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "SbpInterfaces.td"

def Sbp_Dialect : Dialect {
  let name = "sbp";
  let cppNamespace = "::mlir::sbp";
  let summary = "SBP-placed tensors for distributed deep learning";
  let dependentDialects = ["::mlir::func::FuncDialect"];
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerAttributes();
  }];
}

def Sbp_ReduceKind : I32EnumAttr<"ReduceKind", "reduction of a partial value", [
    I32EnumAttrCase<"sum", 0>, I32EnumAttrCase<"max", 1>, I32EnumAttrCase<"min", 2>]> {
  let cppNamespace = "::mlir::sbp";
  let genSpecializedAttr = 0;
}

def Sbp_InitKind : I32EnumAttr<"InitKind", "variable initialiser", [
    I32EnumAttrCase<"zeros", 0>, I32EnumAttrCase<"constant", 1>,
    I32EnumAttrCase<"uniform", 2>, I32EnumAttrCase<"normal", 3>]> {
  let cppNamespace = "::mlir::sbp";
  let genSpecializedAttr = 0;
}

def Sbp_DeviceKind : I32EnumAttr<"DeviceKind", "device kind of a placement", [
    I32EnumAttrCase<"cpu", 0>, I32EnumAttrCase<"cuda", 1>]> {
  let cppNamespace = "::mlir::sbp";
}

def Sbp_CodecKind : I32EnumAttr<"CodecKind", "gradient compression codec", [
    I32EnumAttrCase<"topk", 0>, I32EnumAttrCase<"dgc", 1>, I32EnumAttrCase<"randomk", 2>,
    I32EnumAttrCase<"qsgd", 3>, I32EnumAttrCase<"sign", 4>, I32EnumAttrCase<"powersgd", 5>,
    I32EnumAttrCase<"topk2bit", 6>, I32EnumAttrCase<"edit", 7>]> {
  let cppNamespace = "::mlir::sbp";
  let genSpecializedAttr = 0;
}

class Sbp_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<Sbp_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def Sbp_SplitAttr : Sbp_Attr<"Split", "split"> {
  let summary = "S(axis): each rank of a hierarchy dimension holds a balanced chunk";
  let parameters = (ins "int64_t":$axis);
  let assemblyFormat = "`<` $axis `>`";
}

def Sbp_BroadcastAttr : Sbp_Attr<"Broadcast", "broadcast"> {
  let summary = "B: every rank holds the whole tensor";
}

def Sbp_PartialAttr : Sbp_Attr<"Partial", "partial"> {
  let summary = "P(op): the tensor is the reduction of the ranks' values";
  let parameters = (ins EnumParameter<Sbp_ReduceKind>:$reduce);
  let hasCustomAssemblyFormat = 1;
}

def Sbp_TensorAttr : Sbp_Attr<"SbpTensor", "t"> {
  let summary = "placement + nd-SBP, used as a ranked tensor's encoding";
  let parameters = (ins "::mlir::FlatSymbolRefAttr":$placement,
                        "::mlir::ArrayAttr":$sbp);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def Sbp_InitAttr : Sbp_Attr<"Init", "init"> {
  let summary = "initialiser of a variable's global tensor";
  let parameters = (ins EnumParameter<Sbp_InitKind>:$kind,
                        APFloatParameter<"first parameter">:$a,
                        APFloatParameter<"second parameter">:$b);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

// Optimisers: their ops are built by ops/Training.cpp (OptimizerAttrInterface).
def Sbp_SgdAttr : Sbp_Attr<"Sgd", "sgd",
                           [DeclareAttrInterfaceMethods<Sbp_OptimizerAttrInterface>]> {
  let summary = "SGD with momentum and weight decay";
  let parameters = (ins APFloatParameter<"learning rate">:$lr,
                        APFloatParameter<"momentum">:$momentum,
                        APFloatParameter<"weight decay">:$weight_decay);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def Sbp_AdamWAttr : Sbp_Attr<"AdamW", "adamw",
                               [DeclareAttrInterfaceMethods<Sbp_OptimizerAttrInterface>]> {
  let summary = "AdamW (PyTorch's torch.optim.AdamW): decoupled weight decay";
  let parameters = (ins APFloatParameter<"learning rate">:$lr,
                        APFloatParameter<"first moment decay">:$beta1,
                        APFloatParameter<"second moment decay">:$beta2,
                        APFloatParameter<"denominator epsilon">:$eps,
                        APFloatParameter<"weight decay">:$weight_decay);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def Sbp_CodecAttr : Sbp_Attr<"Codec", "codec"> {
  let summary = "how a gradient's P -> B all-reduce is compressed (plan.fbs CodecAttrs)";
  let description = [{
    `#sbp.codec<kind, name = value, ...>`: density (top-k, DGC, random-k,
    top-k with 2-bit values), bits and bucket (QSGD), rank (PowerSGD),
    momentum, clip and epoch_steps (DGC), warmup (dense exchanges first),
    seed, and beta2 and eps (DGC and top-k under AdamW: the codec keeps each
    rank's AdamW moments, momentum being beta1, and compresses the AdamW
    update), chunk (top-k with 2-bit values: the top density of each chunk of
    that many elements, sent as offsets within it; 0: of the whole tensor) and
    decay (top-k with 2-bit values: the residual's error-feedback decay,
    SparseLoCo's beta), senders (top-k with 2-bit values, 1: each index is
    averaged over the ranks that sent it, as CCLoco, instead of summed).
    edit is EDiT's weighted average of pseudo-gradients (softmax of minus the
    norms over `temperature`, 0: equal weights; anomalous norms dropped;
    the result clipped to the global norm `clip`, 0: none; with `step_weight`
    r > 0, A-EDiT's blend (1 - r) w + r steps / total steps, the steps being
    each rank's count in the all-reduce's `inner_steps` variable).
    Unnamed fields are 0 except QSGD's bucket (512) and decay (1).
  }];
  let parameters = (ins EnumParameter<Sbp_CodecKind>:$kind, APFloatParameter<"density">:$density,
                        "int64_t":$bits, "int64_t":$rank, APFloatParameter<"DGC momentum">:$momentum,
                        APFloatParameter<"DGC local clip">:$clip, "int64_t":$warmup,
                        "int64_t":$epoch_steps, "int64_t":$bucket, "int64_t":$seed,
                        APFloatParameter<"DGC under AdamW: beta2">:$beta2,
                        APFloatParameter<"DGC under AdamW: eps">:$eps, "int64_t":$chunk,
                        APFloatParameter<"error-feedback decay">:$decay,
                        APFloatParameter<"EDiT's softmax temperature">:$temperature,
                        "int64_t":$senders,
                        APFloatParameter<"A-EDiT's step weight ratio">:$step_weight);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
}

def Sbp_LgrecoAttr : Sbp_Attr<"Lgreco", "lgreco"> {
  let summary = "L-GreCo's per-layer choice of a codec's parameter (plan.fbs LgrecoAttrs)";
  let description = [{
    The codec's parameter (density, bits or rank) is chosen among
    `candidates` for this layer (`layer` of `layers` gradients deciding
    together; a PowerSGD all-reduce of several gradients holds layers
    `layer`, `layer` + 1, ...) every `every` exchanges; `default_index` is
    the uniform setting whose summed error is the budget.
  }];
  let parameters = (ins "::mlir::DenseF64ArrayAttr":$candidates, "int64_t":$default_index,
                        "int64_t":$layer, "int64_t":$layers, "int64_t":$every);
  let assemblyFormat = "`<` struct(params) `>`";
}

#endif
