// What the CPU and CUDA executors share: each program's task actors and the
// ordered comm thread, running steps of a program and stopping at the first
// error, and finding a program's outputs. A backend adds its kernels, its
// memory and how it waits for work already handed off.
#pragma once

#include "actors/ComputeKernels.h"
#include "actors/Executor.h"
#include "actors/Messages.h"
#include "actors/TaskGraph.h"
#include "actors/Variables.h"
#include "runtime/device/CpuDevice.h"

#include <caf/actor.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace sbpflow {

// How many steps the coordinator may run ahead of the caller's onStep (the
// rows of a program's metric ring); the caller acknowledges every half.
inline constexpr int64_t kStepWindow = 16;

// One program's task actors and what its steps hand to the caller.
struct ProgramActors {
  std::string name;
  std::shared_ptr<TaskGraph> graph;
  // Per task: what the comm thread runs for a collective (empty otherwise).
  // Built once, so that handing a collective off allocates nothing.
  std::vector<std::function<void()>> collectiveWork;
  int collectives = 0;
  std::vector<const float *> metrics; // null where this rank holds no shard
  // Program.outputs: name -> the tensor as this rank sees it.
  std::vector<std::pair<std::string, TensorView>> outputs;
  // kStepWindow rows of metrics: step s of a run starting at `runFirst`
  // writes row (s - runFirst) % kStepWindow on the coordinator, the caller
  // reads it.
  std::vector<double> metricRing;
  int64_t runFirst = 0;
  caf::actor coordinator;
};

// `Program` derives from ProgramActors and adds what the backend keeps.
template <typename Program> class ActorExecutor : public Executor {
public:
  Status run(const std::string &program, DataSource *data, int64_t epoch, int64_t firstBatch,
             int64_t count, const StepCallback &onStep) final {
    if (!broken_)
      return Status::error(rank() + ": executor stopped by an earlier error: " + broken_.message());
    Program *prog = findProgram(program);
    if (!prog)
      return noProgram(program);
    if (count <= 0)
      return Status::ok();
    collectives_.reset(prog->collectives);
    // Read by the coordinator and the kernels after RunSteps, which orders
    // these writes before them.
    step_.data = data;
    step_.epoch = epoch;
    prog->runFirst = firstBatch;
    std::string error =
        awaitSteps(system_, prog->coordinator, RunSteps{++runs_, firstBatch, count, kStepWindow},
                   prog->metricRing, prog->metrics.size(), onStep, [&] {
                     drain();
                     broken_ = Status::error(rank() + ": a step callback threw");
                   });
    if (!error.empty()) {
      drain();
      broken_ = Status::error(error);
      return broken_;
    }
    return Status::ok();
  }

  Status publishCheckpoint(const std::string &dir, uint64_t generation,
                           const std::vector<checkpoint::ShardRecord> &records,
                           const checkpoint::DataPosition &next) const final {
    return publishVariableCheckpoint(*plan_, options_.globalRank, dir, generation, records, next);
  }

protected:
  ActorExecutor(caf::actor_system &system, const plan::Plan *plan, CommGroups *comms,
                const ExecutorOptions &options)
      : system_(system), plan_(plan), comms_(comms), options_(options) {}

  // Called once a run ended or stopped, when no task runs a kernel any more
  // but handed-off work (a queued collective, an enqueued GPU kernel) may:
  // returns once none does, so that the caller may read variables.
  virtual void drain() = 0;

  // Stops every program's actors and the comm thread. A backend's
  // destructor calls it first: queued collectives point at variables, the
  // step context and the task graphs (no actor is left to queue more).
  void stopPrograms() {
    std::vector<caf::actor> all;
    for (auto &p : programs_) {
      all.push_back(p->coordinator);
      for (auto &a : p->graph->actors)
        all.push_back(a);
    }
    stopActors(system_, all);
    collectives_.abandon();
    collectives_.waitIdle();
  }

  std::string rank() const { return "rank " + std::to_string(options_.globalRank); }

  Program *findProgram(const std::string &name) const {
    for (const auto &p : programs_)
      if (p->name == name)
        return p.get();
    return nullptr;
  }
  Status noProgram(const std::string &name) const {
    return Status::error(rank() + ": plan has no program '" + name + "'");
  }

  // Output `name` of `program`, when this rank holds an f32 shard of it.
  StatusOr<const TensorView *> findOutput(const std::string &program,
                                          const std::string &name) const {
    const Program *prog = findProgram(program);
    if (!prog)
      return noProgram(program);
    for (const auto &[outputName, view] : prog->outputs) {
      if (outputName != name)
        continue;
      if (!view.data)
        return Status::error(rank() + ": holds no part of output '" + name + "' of '" + program +
                             "'");
      if (view.dtype != plan::DType::F32)
        return Status::error(rank() + ": output '" + name + "' is not an f32 tensor");
      return &view;
    }
    return Status::error(rank() + ": program '" + program + "' has no output '" + name + "'");
  }

  caf::actor_system &system_;
  const plan::Plan *plan_;
  CommGroups *comms_;
  ExecutorOptions options_;
  CollectiveQueue collectives_; // the ordered comm thread
  std::vector<std::unique_ptr<Program>> programs_;
  StepContext step_;
  int64_t runs_ = 0;
  Status broken_;
};

} // namespace sbpflow
