// The driver: publishes itself over CAF's middleman, registers workers (or
// starts them with `local`), ships the plan, runs the rendezvous and drives
// training epoch by epoch. Callable in-process (examples) and from `sbpflow run`.
#pragma once

#include "runtime/Status.h"
#include "runtime/cluster/Messages.h"

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace sbpflow::cluster {

struct RunOptions {
  // Workers: with localWorkers > 0 the driver starts that many worker
  // processes on this machine; otherwise it waits for `expectWorkers` to
  // connect (`sbpflow-worker --connect HOST:PORT` on each node).
  int localWorkers = 0;
  int expectWorkers = 0;
  // Or node daemons (`sbpflow-worker --listen HOST:PORT` on each node): the
  // driver proves the shared secret in `secretFile` to each, which starts
  // `ranksPerNode` rank processes; global rank = node index * ranksPerNode +
  // local rank. The driver must listen on an address the nodes reach (`host`).
  std::vector<std::string> nodes; // HOST:PORT each
  std::string secretFile;
  int ranksPerNode = 1;
  std::string host = "127.0.0.1"; // where the driver is published
  uint16_t port = 0;              // 0: ephemeral
  // The worker executable for localWorkers; empty: `sbpflow-worker` next to
  // /proc/self/exe. `workerArgs` are appended after `--connect HOST:PORT`.
  std::string workerBinary;
  std::vector<std::string> workerArgs;

  int epochs = 1;
  int64_t maxSteps = -1; // train steps per epoch; -1: every batch
  int logEvery = 50;     // progress line every P train steps
  // Non-empty: when the job ends, the workers write a checkpoint of every
  // variable here (runtime/checkpoint/Checkpoint.h; each distinct shard once).
  std::string checkpointDir;
  // Non-empty: every worker fills its variables from this checkpoint once
  // they are initialised, whatever layout saved it (resharding).
  std::string resumeDir;
  // Shipped to every worker. An empty dataDir is the source's default:
  // /usr/share/datasets/fashion-mnist or /usr/share/games/fortunes.
  std::string dataDir;
  // "fashion-mnist", "fortunes" (character-level text; the plan's "tokens"
  // input gives the context length) or "synthetic" (cluster protocol tests only).
  std::string data = "fashion-mnist";
  uint64_t seed = 0;
  int threads = 1; // kernel threads per worker
  // "cpu", or "cuda": each rank runs on one GPU (its index on its node) and
  // its collectives go through NCCL.
  std::string device = "cpu";
  // Non-empty: every worker records when each task ran in the first
  // `traceSteps` steps of each program and, when the job ends, writes
  // `traceDir`/rank<R>.trace.json (Chrome's trace-event format).
  std::string traceDir;
  int64_t traceSteps = 100;
  // Non-empty: once the job succeeded, write the JobReport here as one JSON
  // line (bench/ reads it: step time, losses, peak memory and sent bytes per
  // train step per rank).
  std::string benchJson;

  // The test harness's straggler (studying unequal workers): rank
  // `slowRank` sleeps `slowStepMs` milliseconds after each train step.
  int slowRank = -1;
  double slowStepMs = 0;

  // Registration and rendezvous must finish within this bound.
  int64_t rendezvousTimeoutMs = 60000;
  // Only for programs that compile and run: stop after writing the plan.
  bool planOnly = false;
  // Progress lines and per-epoch accuracy go here (null: silent).
  std::ostream *log = defaultLog();
  // Called once every worker has registered, with their pids (tests use it).
  std::function<void(const std::vector<int> &pids)> onWorkersRegistered;

  static std::ostream *defaultLog();
};

struct JobReport {
  std::vector<double> lossHistory;  // combined "loss" metric of every train step
  std::vector<double> testAccuracy; // per epoch; empty without an "eval" program
  // Per epoch: the eval program's "loss", averaged over every sample of the
  // split; empty without an eval program that reports "loss".
  std::vector<double> evalLoss;
  // The train wall time (seconds, evaluations excluded) before each of them.
  std::vector<double> evalAtSeconds;
  double meanStepSeconds = 0;     // driver wall time per train step
  double steadyStepSeconds = 0;   // first epoch, after min(10, steps/5) warm-up steps
  std::vector<int64_t> peakRssKb; // per rank (getrusage maxrss)
  // Per rank: the payload bytes its communicators sent (Communicator.h's
  // rules) over the train steps of the job, divided by their number. Eval
  // steps are not counted: they are not steps of training.
  std::vector<double> sentBytesPerStep;
  // The train steps of the job: the group's, and each rank's (which differ
  // under timed rounds, whose loss history holds only the steps every rank
  // reached).
  int64_t trainSteps = 0;
  std::vector<int64_t> rankTrainSteps;
};

// Runs the whole job; on failure every worker is told to abort, local worker
// processes are reaped (killed if they do not end), and the status names the
// rank and what went wrong.
Status runJob(const std::vector<uint8_t> &planBytes, const RunOptions &options, JobReport *report);

// Adds the run options (--epochs, --threads, --data-dir, --seed, ...) to a
// command line; shared by `sbpflow run` and the examples.
void addRunOptions(CLI::App &app, RunOptions &options);

} // namespace sbpflow::cluster

namespace sbpflow {
using cluster::addRunOptions;
using cluster::JobReport;
using cluster::runJob;
using cluster::RunOptions;
} // namespace sbpflow
