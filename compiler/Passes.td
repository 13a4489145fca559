// The sbpflow compiler passes, one per file in compiler/, with the options
// users type (sbpflow-opt --sbp-emit-plan=print=true). mlir-tblgen generates
// their base classes, create functions and registration (compiler/Passes.h).
#ifndef SBP_PASSES_TD
#define SBP_PASSES_TD

include "mlir/Pass/PassBase.td"

class SbpPass<string arg, string summary_> : Pass<arg, "::mlir::ModuleOp"> {
  let summary = summary_;
  let dependentDialects = ["::mlir::sbp::SbpDialect"];
}

def MixedPrecisionPass : SbpPass<"sbp-mixed-precision",
    "bf16 matmuls and attention with f32 master weights, losses and reductions">;

def AutodiffPass : SbpPass<"sbp-autodiff",
    "Reverse-mode autodiff of sbp.minimize: backward ops and one optimiser op per parameter">;

def FoldCastsPass : SbpPass<"sbp-fold-casts",
    "Lets a bf16 matmul or reduce_rows whose only use widens it produce f32 directly">;

def FuseBiasGeluPass : SbpPass<"sbp-fuse-bias-gelu",
    "Fuses bias_add followed by gelu into one bias_gelu">;

def PropagatePass : SbpPass<"sbp-propagate",
    "Choose an SBP for every unannotated tensor and variable by the cost model"> {
  // Both on by default; switches to measure what each contributes.
  let options = [
    Option<"lookAhead", "look-ahead", "bool", /*default=*/"true",
           "Refine each greedy round with the SBPs consumers asked for in the previous round">,
    Option<"search", "search", "bool", /*default=*/"true",
           "Search over variable and activation SBPs by total cost">,
    Option<"replicaDim", "replica-dim", "int64_t", /*default=*/"-1",
           "Local SGD's replica dimension: across it only sums (P -> B) and local changes">,
  ];
}

def InsertBoxingPass : SbpPass<"sbp-insert-boxing",
    "Insert boxing collectives where an operand's SBP differs from the chosen one">;

def VerifyBoxingPass : SbpPass<"sbp-verify-boxing",
    "Check that every op's SBPs form one of its signatures (no implicit boxing)">;

def BucketGradientsPass : SbpPass<"sbp-bucket-gradients",
    "Fuse gradient all-reduces into buckets issued as soon as their gradients exist"> {
  let options = [
    Option<"bucketBytes", "bucket-bytes", "int64_t", /*default=*/"1 << 20",
           "Largest bucket in bytes (per rank)">,
  ];
}

def CompressGradientsPass : SbpPass<"sbp-compress-gradients",
    "Give gradient all-reduces a codec (#sbp.codec) by the user's policy or by cost"> {
  let description = [{
    Each gradient's P -> B all-reduce (one that feeds an optimiser) gets the
    codec of its parameter's `compress` attribute (a string on the
    sbp.variable, as the DSL's `compress` sets it) or else of `policy`:
    `none`, `topk:D`, `dgc:D`, `randomk:D`, `qsgd:BITS`, `sign`,
    `powersgd:RANK`, `topk2bit:D` (D a density in (0, 1]); `auto`, which
    compresses a gradient only where the cost model says the bytes saved
    outweigh the codec's work; or `lgreco[:FAMILY]` (L-GreCo: the family's
    parameter chosen per layer at runtime every `lgreco-every` exchanges,
    FAMILY powersgd (the default), topk, topk2bit or qsgd). Under a global policy 1-D gradients and those
    below `min-elements` stay dense (as DGC and PowerSGD do), and PowerSGD
    keeps a matrix dense where rank (rows + cols) is not below rows cols / 2;
    a per-parameter spec always applies. The codec's state (residual, DGC's
    momentum, PowerSGD's Q) and step counter become variables, so that
    checkpoints carry them. DGC takes over an SGD's momentum (momentum
    correction: the optimiser then applies the sparse sum without it) and
    clips each rank's gradient to max_grad_norm / sqrt(ranks) where the
    model clips.
  }];
  let options = [
    Option<"policy", "policy", "std::string", /*default=*/"\"none\"",
           "none, auto, or a codec spec (topk:0.001, powersgd:4, ...)">,
    Option<"warmupSteps", "warmup-steps", "int64_t", /*default=*/"0",
           "Dense all-reduces before the first compressed exchange">,
    Option<"epochSteps", "epoch-steps", "int64_t", /*default=*/"0",
           "Steps per epoch of DGC's sparsity warm-up (0: none)">,
    Option<"minElements", "min-elements", "int64_t", /*default=*/"1024",
           "Gradients smaller than this stay dense under a global policy">,
    Option<"linkBytesPerSecond", "link-bytes-per-second", "double", /*default=*/"0",
           "auto: the data-parallel link's bandwidth (0: the cost model's)">,
    Option<"codecCosts", "codec-costs", "std::string", /*default=*/"",
           "auto: the JSON of build/bin/codec_costs measured on the target machine">,
    Option<"lgrecoEvery", "lgreco-every", "int64_t", /*default=*/"100",
           "lgreco: exchanges between L-GreCo's decisions">,
  ];
}

def LocalSgdPass : SbpPass<"sbp-local-sgd",
    "Local SGD: replicas train alone (no gradient collectives across them) and outer functions exchange pseudo-gradients"> {
  let description = [{
    `sync` names the algorithm: `ddp` (nothing to do), `diloco:H`,
    `co2:H`, `sparseloco:H`, `edit:H` or `aedit:SECONDS`. On the first hierarchy dimension of the trained variables'
    placement (the replica dimension) every replica keeps parameters and
    optimiser state of its own (`replica_dim` on their variables): each
    gradient all-reduce across replicas becomes an `sbp.local_estimate` (the
    replica's own gradient). Every H steps of the training function:
    - DiLoCo: @outer computes each parameter's pseudo-gradient
      (`<param>.outer_anchor`, the parameters at the round's start, minus the
      replica's), sums it across replicas and applies the outer optimiser
      (`sbp.outer_step`: Nesterov SGD at `outer-lr`, `outer-momentum`, 0.7
      and 0.9 by default); every replica continues from the new anchor.
    - CO2: @outer_send keeps the round's pseudo-gradient
      (`<param>.outer_delta`, per replica); @outer_exchange, started in the
      background, sums it across replicas and computes the next anchor
      (`<param>.outer_next`: heavy-ball momentum at `outer-lr`,
      `outer-momentum`, 1.0 and 0.5 by default, the pseudo-gradient divided
      by `gap-penalty`, the momentum clipped to +-`outer-clip` when
      positive); @outer_adopt makes it the anchor and every replica's
      parameters. With `staleness` 1 the exchange of round t runs during
      round t + 1 and is adopted at its end (one round stale); with 0 it is
      joined at once (DiLoCo with CO2's outer step).
    - SparseLoCo: DiLoCo's @outer without outer momentum, the sum of the
      pseudo-gradients compressed (#sbp.codec<topk2bit> with `chunk`,
      `decay`): each replica sends the `sparseloco-topk` largest of every
      `sparseloco-chunk` elements of its pseudo-gradient plus its residual
      (decayed by `error-decay`) in 2-bit values, and keeps the rest; the
      mean is applied at `outer-lr` (1 by default); with
      `sparseloco-average=senders` each value is averaged over the replicas
      that sent it (the reference code's), not over all.
    - EDiT: @train_sync, @train with each parameter synchronised just
      before its first read (the exchange of each layer overlapping the
      forward of the layers before it), runs as the first inner step of
      every round after the first (schedule step "inner @train_sync"):
      DiLoCo's outer step on the replicas' pseudo-gradients averaged with
      EDiT's penalty (#sbp.codec<edit>: anomalous norms dropped by an EWMA
      z-score, the others weighted by softmax(-norm / `edit-temperature`),
      equal weights at 0; the average clipped to `pseudo-grad-clip`).
    - A-EDiT (`aedit:SECONDS`): EDiT in rounds of SECONDS of wall-clock time
      rather than H steps, so a faster replica takes more steps; a round
      whose replicas took fewer than `aedit-min-steps` steps in all is not
      synchronised, and with `aedit-step-weight` r > 0 each replica's weight
      is (1 - r) w + r (its steps / all steps), each parameter's AdamW step
      counting the replica's steps. A replica's ranks (tensor parallelism
      inside it) end each round together.
    `sbp.schedule` says what runs when.
  }];
  let options = [
    Option<"sync", "sync", "std::string", /*default=*/"\"ddp\"", "ddp, diloco:H, co2:H, sparseloco:H, edit:H or aedit:SECONDS">,
    Option<"outerLr", "outer-lr", "double", /*default=*/"-1",
           "The outer learning rate (negative: the algorithm's default)">,
    Option<"outerMomentum", "outer-momentum", "double", /*default=*/"-1",
           "The outer momentum (negative: the algorithm's default)">,
    Option<"staleness", "staleness", "int64_t", /*default=*/"1",
           "co2: rounds between an exchange's start and its adoption (0 or 1)">,
    Option<"gapPenalty", "gap-penalty", "double", /*default=*/"1",
           "co2: the staleness gap penalty dividing the pseudo-gradient (>= 1)">,
    Option<"outerClip", "outer-clip", "double", /*default=*/"0",
           "co2: clip the outer momentum elementwise to +-this (0: no clipping)">,
    Option<"sparselocoTopk", "sparseloco-topk", "int64_t", /*default=*/"32",
           "sparseloco: values sent of each chunk">,
    Option<"sparselocoChunk", "sparseloco-chunk", "int64_t", /*default=*/"4096",
           "sparseloco: elements per chunk (at most 65536)">,
    Option<"errorDecay", "error-decay", "double", /*default=*/"0.95",
           "sparseloco: the error-feedback residual's decay per round, in (0, 1]">,
    Option<"sparselocoAverage", "sparseloco-average", "std::string", /*default=*/"\"replicas\"",
           "sparseloco: replicas (the mean over all replicas, the paper's) or senders (each "
           "value's mean over the replicas that sent it, CCLoco's)">,
    Option<"editTemperature", "edit-temperature", "double", /*default=*/"0",
           "edit: the softmax temperature of the pseudo-gradient weights (0: equal weights)">,
    Option<"pseudoGradClip", "pseudo-grad-clip", "double", /*default=*/"0",
           "edit: clip each parameter's averaged pseudo-gradient to this norm (0: none)">,
    Option<"aeditMinSteps", "aedit-min-steps", "int64_t", /*default=*/"100",
           "aedit: the fewest inner steps, over all replicas, a round synchronises">,
    Option<"aeditStepWeight", "aedit-step-weight", "double", /*default=*/"0",
           "aedit: the share of a replica's weight given by its share of the inner steps (0: "
           "none; needs AdamW, whose step counts them)">,
  ];
}
def PlanMemoryPass : SbpPass<"sbp-plan-memory",
    "Assign arena offsets to activations from their lifetimes (best-fit reuse)">;

def EmitPlanPass : SbpPass<"sbp-emit-plan",
    "Emit the execution plan (flatbuffers) and optionally print it as text"> {
  let options = [
    Option<"output", "output", "std::string", /*default=*/"", "Write the plan to this file">,
    Option<"print", "print", "bool", /*default=*/"false", "Print the plan as text to stdout">,
  ];
}

#endif
