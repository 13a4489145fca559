// The command-line face of RunOptions, shared by `sbpflow run` and examples.
#include "runtime/cluster/Driver.h"

#include <CLI/CLI.hpp>

namespace sbpflow::cluster {

void addRunOptions(CLI::App &app, RunOptions &o) {
  app.add_option("--epochs", o.epochs, "passes over the training set")->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "kernel threads per worker")->check(CLI::PositiveNumber);
  app.add_option("--device", o.device,
                 "cpu, or cuda: one GPU per rank (its index on its node), NCCL collectives")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--data-dir", o.dataDir,
                 "the data's directory, read by every worker (default: "
                 "/usr/share/datasets/fashion-mnist, or /usr/share/games/fortunes for fortunes)");
  app.add_option("--data", o.data,
                 "data source: fashion-mnist, fortunes, or synthetic (only for tests of the "
                 "cluster)")
      ->check(CLI::IsMember({"fashion-mnist", "fortunes", "synthetic"}));
  app.add_option("--log-every", o.logEvery, "print a progress line every P train steps")
      ->check(CLI::PositiveNumber);
  app.add_option("--checkpoint", o.checkpointDir,
                 "at the end, write a checkpoint of every variable to DIR (each distinct shard "
                 "once; index.json lists them); a checkpoint already there is replaced only "
                 "once every rank has written its shards");
  app.add_option("--resume", o.resumeDir,
                 "start from the checkpoint in DIR, saved on any layout (variables, "
                 "optimiser state, and the data position: training continues with the batch "
                 "after the last one the checkpointed job ran)");
  app.add_option("--trace-dir", o.traceDir,
                 "every worker writes DIR/rank<R>.trace.json: its tasks on compute and comm "
                 "lanes, per step (chrome://tracing, Perfetto)");
  app.add_option("--trace-steps", o.traceSteps,
                 "with --trace-dir: trace the first N steps of each program")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-steps", o.maxSteps,
                 "train steps per epoch at most (default: all; a resumed "
                 "epoch counts from where it resumes)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--slow-rank", o.slowRank,
                 "test harness: make this rank a straggler (with --slow-step-ms)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--slow-step-ms", o.slowStepMs,
                 "test harness: --slow-rank sleeps this long after each train step")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--rendezvous-timeout-ms", o.rendezvousTimeoutMs,
                 "bound on worker registration and communicator setup")
      ->check(CLI::PositiveNumber);
  app.add_option("--bench-json", o.benchJson,
                 "once the job succeeded, write its step time, losses and peak memory per rank "
                 "as one JSON line (bench/)");
  app.add_flag("--plan-only", o.planOnly, "stop once the plan is built and verified; run nothing");
}

} // namespace sbpflow::cluster
