// The per-rank executor: turns one verified plan into CAF task actors (one per
// task) connected by registers, and runs steps of a program on them.
#pragma once

#include "runtime/Status.h"
#include "runtime/checkpoint/Checkpoint.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace caf {
class actor_system;
}

namespace sbpflow {
namespace plan {
struct Plan;
}
class CommGroups;
class DataSource;

struct ExecutorOptions {
  int globalRank = 0;
  int kernelThreads =
      1; // OpenBLAS threads (the CAF scheduler size is set by configureExecutorSystem)
  // > 0: record when every task ran in the first `traceSteps` steps of each
  // program (buffers allocated by create; see writeTrace). 0: no tracing,
  // and nothing on a step's path reads a clock.
  int64_t traceSteps = 0;
  // >= 0: run on this CUDA device (runtime/device/CudaDevice.h; the plan's
  // communicators must then be NCCL ones). -1: run on the CPU. A build
  // without CUDA refuses a device rather than falling back to the CPU.
  int cudaDevice = -1;
};

class Executor {
public:
  // `plan` must already be verified (runtime/plan/PlanLoader.h) and outlive
  // the executor; `comms` holds this rank's communicators for every
  // (placement, hierarchy dim) of the plan and may be null when every
  // placement has one rank.
  static StatusOr<std::unique_ptr<Executor>> create(caf::actor_system &system,
                                                    const plan::Plan *plan, CommGroups *comms,
                                                    const ExecutorOptions &options);
  virtual ~Executor() = default;

  // Runs `count` steps of `program`; step i reads global batch `firstBatch + i`
  // of `epoch` from `data`. After each step `onStep(batch, metrics)` gets this
  // rank's local value of every metric of the program, in plan order, on the
  // calling thread; later steps may already run meanwhile, so it must not
  // call into the executor. Returns the first error (naming rank, task and
  // op) and stops there, once no kernel of the program runs any more.
  using StepCallback = std::function<void(int64_t batch, const std::vector<double> &metrics)>;
  virtual Status run(const std::string &program, DataSource *data, int64_t epoch,
                     int64_t firstBatch, int64_t count, const StepCallback &onStep) = 0;
  // The plan's background program (plan.fbs ScheduleStep Start): start
  // runs one step of it on a thread and comm thread of its own and returns;
  // join waits for it and returns its error, if any (it then stops the
  // executor as a failed run does). Other programs run meanwhile; checkpoints
  // wait for the join. join without a running program returns at once.
  virtual Status start(const std::string &program, DataSource *data, int64_t epoch,
                       int64_t batch) = 0;
  virtual Status join() = 0;

  // Every replica's `count` values (timed rounds' step counts and
  // positions) into `all` ([replicas, count], replica order), returning this
  // rank's replica: an all-gather over the replica dimension's communicator
  // (that of the plan's first variable with a replica_dim), on the calling
  // thread; a copy of `values` for a group of one. Call it between runs, on
  // CPU ranks.
  virtual StatusOr<int> gatherOverReplicas(const int32_t *values, int count, int32_t *all) = 0;
  // Whether `flag` is set on any rank of this rank's replica (its ranks
  // along the other dimensions of that placement: tensor parallelism inside
  // a replica), so that they end a timed round at the same step; `flag`
  // itself for a replica of one rank. Between runs, on CPU ranks.
  virtual StatusOr<bool> anyInReplica(bool flag) = 0;

  // The payload bytes this rank's communicators have sent so far, over every
  // run (Communicator::sentBytes; 0 without communicators): a run's bytes
  // are the difference across it.
  virtual uint64_t sentBytes() const = 0;

  // A checkpoint is saved in two phases, so that it appears whole or not at
  // all (runtime/checkpoint/Checkpoint.h). Phase 1, on every rank of the
  // job: writes the variable shards this rank owns (one writer per distinct
  // shard) into the staging directory of save `generation` of `dir`, and
  // returns what it wrote. Call it between runs.
  virtual StatusOr<std::vector<checkpoint::ShardRecord>>
  writeCheckpointShards(const std::string &dir, uint64_t generation) const = 0;

  // Phase 2, on global rank 0 alone, once every rank's phase 1 succeeded
  // (the driver's SaveCheckpoint, then PublishCheckpoint): writes the index
  // with every rank's `records` and `next` (where the training data
  // continues) and publishes the checkpoint as `dir`, replacing a previous
  // one atomically. Until then a checkpoint already at `dir` is untouched.
  virtual Status publishCheckpoint(const std::string &dir, uint64_t generation,
                                   const std::vector<checkpoint::ShardRecord> &records,
                                   const checkpoint::DataPosition &next) const = 0;

  // Both phases, for a job of one rank (this one, global rank 0): a plan
  // placed on more ranks is refused when publishing, naming a shard that no
  // rank reported.
  Status saveCheckpoint(const std::string &dir, const checkpoint::DataPosition &next = {}) const {
    const uint64_t generation = checkpoint::newGeneration();
    auto records = writeCheckpointShards(dir, generation);
    if (!records)
      return records.status();
    return publishCheckpoint(dir, generation, *records, next);
  }

  // Fills every variable's local shard from the checkpoint `dir`, whatever
  // layout saved it (resharding). A variable missing from the checkpoint, or
  // stored with another shape or dtype, is an error. `next` (may be null)
  // receives the data position the checkpoint recorded. Call it between runs.
  virtual Status loadCheckpoint(const std::string &dir,
                                checkpoint::DataPosition *next = nullptr) = 0;

  // Copies this rank's shard of output `name` (Program.outputs) of `program`,
  // as its last step left it, into `values`. Call it between runs.
  virtual Status readOutput(const std::string &program, const std::string &name,
                            std::vector<float> &values) const = 0;
  // As above, for an I32 output.
  virtual Status readOutput(const std::string &program, const std::string &name,
                            std::vector<int32_t> &values) const = 0;

  // Writes the traced steps of every program to `path` in Chrome's
  // trace-event format (actors/TaskTrace.h). Call it between runs; an error
  // (and no file) when the executor was created without traceSteps.
  virtual Status writeTrace(const std::string &path) const = 0;
};

// The program `plan`'s schedule starts in the background ("" if none, which
// the plan loader allows at most one of): its executor needs an actor system
// configured for concurrent programs (configureExecutorSystem).
std::string backgroundProgram(const plan::Plan &plan);

// `remaining` inner steps (at least one per replica) shared out over the
// replicas in proportion to `counts` (their last round's steps): each the
// floor of its share but at least one, the steps missing by largest
// remainder (ties to the lower replica), those in excess from the largest
// quotas. Sums to `remaining`.
std::vector<int64_t> shareRound(int64_t remaining, const std::vector<int32_t> &counts);

// Runs `count` steps of `program` from global batch `firstBatch` of `epoch`
// as the plan's schedule says (plan.fbs Schedule): where `program` is the
// schedule's inner program, the round's steps (run, start or join a
// program; an "inner" step makes its program the next round's first step)
// follow every step that ends a round (global step epoch *
// batchesPerEpoch + batch, so rounds continue across chunks, epochs and
// resumed jobs), and a background program still running is joined before it
// returns; otherwise as Executor::run. `onStep` sees `program`'s steps only.
// A positive `stepDelay` makes this rank a straggler (the test harness's
// --slow-step-ms): `program`'s steps run one at a time, each followed by a
// sleep that long.
//
// Timed rounds (A-EDiT; plan.fbs Schedule `seconds`): a chunk of `count`
// steps is a budget of count x replicas inner steps, and `firstBatch` is
// this rank's own (a resumed job's replicas continue at batches of their
// own). Each replica's round ends `seconds` after it began (after one step
// at least; at most its share, 1 / replicas, of the budget left, and what
// the epoch has left); then the replicas gather (steps, next batch)
// (Executor::gatherOverReplicas), so every rank knows where every replica
// is. A round totalling fewer than `min_steps` is not synchronised. When
// the budget left is no more than the last round's total, the last round is
// shared out (shareRound), each replica running its quota whatever the
// time, and the chunk ends after it; it also ends when less than one step
// per replica is left or a replica has reached the epoch's end. The
// synchronisation of a chunk's last round opens the next chunk. `onStep`
// sees this rank's own batches, which differ between replicas.
Status runScheduled(Executor &executor, const plan::Plan &plan, const std::string &program,
                    DataSource *data, int64_t epoch, int64_t firstBatch, int64_t count,
                    int64_t batchesPerEpoch, const Executor::StepCallback &onStep,
                    std::chrono::microseconds stepDelay = std::chrono::microseconds(0));

} // namespace sbpflow
