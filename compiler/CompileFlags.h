// The compile options as command-line flags (CLI11), one definition for
// `sbpflow compile` and the examples: --bf16, and gradient compression's
// --compress, --compress-warmup, --compress-epoch-steps, --lgreco-every,
// --link-bytes-per-second and --codec-costs, and local SGD's --sync,
// --outer-lr, --outer-momentum, --co2-staleness, --gap-penalty,
// --outer-clip, --sparseloco-topk, --sparseloco-chunk, --error-decay,
// --sparseloco-average, --edit-temperature, --pseudo-grad-clip, --aedit-min-steps and
// --aedit-step-weight
// (compiler/Pipeline.h, CompileOptions). Header-only: the compiler library
// does not link CLI11.
#pragma once

#include "compiler/Pipeline.h"

#include <CLI/CLI.hpp>

namespace sbpflow {

inline void addCompileFlags(CLI::App &app, CompileOptions &options) {
  app.add_flag("--bf16", options.bf16,
               "mixed precision: bf16 matmuls and attention, f32 master weights, losses and "
               "reductions");
  app.add_option("--compress", options.compress,
                 "gradient compression: none, auto, topk:DENSITY, dgc:DENSITY, randomk:DENSITY, "
                 "qsgd:BITS, sign, powersgd:RANK, topk2bit:DENSITY, or lgreco[:FAMILY] (L-GreCo "
                 "over powersgd (default), topk, topk2bit or qsgd)");
  app.add_option("--compress-warmup", options.compressWarmupSteps,
                 "dense gradient exchanges before compression starts")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--compress-epoch-steps", options.compressEpochSteps,
                 "steps per epoch of DGC's sparsity warm-up (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--lgreco-every", options.lgrecoEvery,
                 "--compress lgreco: steps between L-GreCo's per-layer decisions")
      ->check(CLI::PositiveNumber);
  app.add_option("--link-bytes-per-second", options.linkBytesPerSecond,
                 "--compress auto: the data-parallel link's bandwidth")
      ->check(CLI::PositiveNumber);
  app.add_option("--codec-costs", options.codecCosts,
                 "--compress auto: codec costs measured by build/bin/codec_costs (JSON)");
  app.add_option("--sync", options.sync,
                 "how data-parallel replicas synchronise: ddp (every step's gradients), "
                 "diloco:H (local SGD: H inner steps, then DiLoCo's outer step), co2:H "
                 "(CO2: the outer exchange overlaps the next H inner steps), sparseloco:H "
                 "(SparseLoCo: the outer exchange's top-k of each chunk in 2-bit values, with "
                 "error feedback), edit:H (EDiT: each layer synchronised in the next step's "
                 "forward, pseudo-gradients weighted by their norms) or aedit:SECONDS (A-EDiT: "
                 "EDiT in rounds of that much wall-clock time, for replicas of unequal speed)");
  app.add_option("--outer-lr", options.outerLr,
                 "--sync diloco, co2, sparseloco, edit: the outer learning rate (defaults 0.7, "
                 "1.0, 1.0, 0.7)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--outer-momentum", options.outerMomentum,
                 "--sync diloco, co2, edit: the outer momentum (Nesterov, heavy ball, Nesterov; "
                 "defaults 0.9, 0.5, 0.9)")
      ->check(CLI::Range(0.0, 0.999999));
  app.add_option("--co2-staleness", options.co2Staleness,
                 "--sync co2: rounds between an exchange's start and its adoption (0 or 1)")
      ->check(CLI::Range(0, 1));
  app.add_option("--gap-penalty", options.gapPenalty,
                 "--sync co2: the staleness gap penalty dividing the pseudo-gradient (>= 1)")
      ->check(CLI::Range(1.0, 1e30));
  app.add_option("--outer-clip", options.outerClip,
                 "--sync co2: clip the outer momentum elementwise to +-this (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--sparseloco-topk", options.sparselocoTopk,
                 "--sync sparseloco: values sent of each chunk of the pseudo-gradient (default 32)")
      ->check(CLI::PositiveNumber);
  app.add_option("--sparseloco-chunk", options.sparselocoChunk,
                 "--sync sparseloco: elements per chunk (default 4096, at most 65536)")
      ->check(CLI::Range(1, 65536));
  app.add_option("--error-decay", options.errorDecay,
                 "--sync sparseloco: the error-feedback residual's decay per round (default 0.95)")
      ->check(CLI::Range(1e-6, 1.0));
  app.add_option("--sparseloco-average", options.sparselocoAverage,
                 "--sync sparseloco: replicas (each value's mean over all replicas, the paper's; "
                 "default) or senders (over the replicas that sent it, as CCLoco)")
      ->check(CLI::IsMember({"replicas", "senders"}));
  app.add_option("--edit-temperature", options.editTemperature,
                 "--sync edit, aedit: softmax temperature of the replicas' pseudo-gradient weights "
                 "(0: equal weights)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--pseudo-grad-clip", options.pseudoGradClip,
                 "--sync edit, aedit: clip each parameter's averaged pseudo-gradient to this norm "
                 "(0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--aedit-min-steps", options.aeditMinSteps,
                 "--sync aedit: a round synchronises only if the replicas took at least this "
                 "many inner steps in all (default 100, dlrover's min_total_global_steps)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--aedit-step-weight", options.aeditStepWeight,
                 "--sync aedit: weight each replica (1 - r) by EDiT's norm weight and r by its "
                 "share of the inner steps (0, the default, as dlrover's use_step_weight = "
                 "False; dlrover's ratio is 0.5; needs AdamW)")
      ->check(CLI::Range(0.0, 1.0));
}

} // namespace sbpflow
