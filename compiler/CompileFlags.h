// The compile options as command-line flags (CLI11), one definition for
// `sbpflow compile` and the examples: --bf16, and gradient compression's
// --compress, --compress-warmup, --compress-epoch-steps, --lgreco-every,
// --link-bytes-per-second and --codec-costs, and local SGD's --sync,
// --outer-lr and --outer-momentum (compiler/Pipeline.h, CompileOptions). Header-only: the compiler
// library does not link CLI11.
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
                 "how data-parallel replicas synchronise: ddp (every step's gradients) or "
                 "diloco:H (local SGD: H inner steps, then DiLoCo's outer step)");
  app.add_option("--outer-lr", options.outerLr,
                 "--sync diloco: the outer learning rate (default 0.7)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--outer-momentum", options.outerMomentum,
                 "--sync diloco: the outer Nesterov momentum (default 0.9)")
      ->check(CLI::Range(0.0, 0.999999));
}

} // namespace sbpflow
