// The MLP of the README trained on Fashion-MNIST, data-parallel over N CPU
// ranks: DSL -> MLIR (sbp dialect) -> compiler passes -> plan -> CAF workers.
#include "compiler/CompileFlags.h"
#include "frontend/Compile.h"
#include "frontend/Model.h"
#include "runtime/cluster/Driver.h"

#include <CLI/CLI.hpp>

#include <cstdio>

using namespace sbpflow;

int main(int argc, char **argv) {
  CLI::App app{"Train a 784-512-10 MLP on Fashion-MNIST, data-parallel over local CPU ranks"};
  int ranks = 2;
  int64_t batch = 256;
  uint64_t seed = 1;
  optim::SGD sgd{.lr = 0.05, .momentum = 0.9};
  std::string emitMlir, emitPlan;
  CompileOptions options;
  RunOptions run;
  app.add_option("--local", ranks, "CPU ranks (worker processes on this machine)")
      ->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "global batch size")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "initialisation and shuffling seed");
  app.add_option("--lr", sgd.lr, "SGD learning rate")->check(CLI::PositiveNumber);
  app.add_option("--momentum", sgd.momentum, "SGD momentum")->check(CLI::Range(0.0, 0.999));
  app.add_option("--emit-mlir", emitMlir, "write the model's MLIR (before compilation) here");
  app.add_option("--emit-plan", emitPlan, "write the compiled plan here");
  addCompileFlags(app, options);
  addRunOptions(app, run);
  CLI11_PARSE(app, argc, argv);

  try {
    Model m("mlp", seed);
    auto dp = m.placement("dp", devices(run.device, {ranks}));
    auto x = m.input("image", {batch, 784}, f32, dp, {S(0)});
    auto y = m.input("label", {batch}, i32, dp, {S(0)});
    // Data parallel: the weights are replicated (B). Left unannotated, the
    // compiler would choose their SBP by cost (for this model on 2 ranks it
    // picks tensor parallelism: gathering the batch moves fewer bytes than
    // all-reducing fc1's gradient).
    nn::LinearOptions replicated{.weight_sbp = std::vector<Sbp>{B},
                                 .bias_sbp = std::vector<Sbp>{B}};
    auto h = relu(nn::linear(x, 512, "fc1", replicated));
    auto logits = nn::linear(h, 10, "fc2", replicated);
    m.minimize(cross_entropy(logits, y), sgd);
    m.evaluate("correct", correct_count(logits, y));

    // DGC's sparsity warm-up counts epochs: the steps of one pass over
    // Fashion-MNIST's 60,000 training images (the driver drops the last
    // partial batch), whatever --max-steps says, so that a run resumed with
    // other --max-steps compiles the same plan.
    if (app.count("--compress-epoch-steps") == 0)
      options.compressEpochSteps = 60000 / batch;
    auto plan = compileModel(m, emitMlir, emitPlan, options);
    if (!plan) {
      std::fprintf(stderr, "error: %s\n", plan.status().message().c_str());
      return 1;
    }
    if (run.planOnly)
      return 0;
    run.seed = seed;
    run.localWorkers = ranks;
    JobReport report;
    Status s = runJob(*plan, run, &report);
    if (!s) {
      std::fprintf(stderr, "error: %s\n", s.message().c_str());
      return 1;
    }
  } catch (const ModelError &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
