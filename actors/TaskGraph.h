// The register protocol apart from what tasks compute: one event-based actor
// per task, registers with back-pressure, and a step coordinator that starts
// steps, detects their end and halts every task on the first error. The CPU
// executor plugs its kernels in; tests plug in trivial work and run the same
// actors under CAF's deterministic scheduler.
#pragma once

#include "actors/Messages.h"
#include "runtime/Status.h"

#include <caf/actor.hpp>

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
struct Program;
}

// A register: `count` slots that `producer` fills and every consumer frees.
// The producer may run at most `count` firings ahead of its slowest consumer.
struct RegisterNode {
  int producer = 0;
  int count = 1;
  std::vector<int> consumers; // distinct task indices
};

struct TaskNode {
  std::vector<int> inRegs, outRegs; // register indices
  // Work done on the task's actor (one of CAF's scheduler threads) when the
  // task fires; an error fails the run. Empty: nothing to do.
  std::function<Status()> run;
  // Work handed to another thread instead (a collective): called when the
  // task fires; whoever runs the work sends KernelDone or KernelFailed to
  // the task's actor (TaskGraph::actors) when it ends.
  std::function<void()> handOff;
};

struct TaskGraph {
  std::vector<TaskNode> tasks;
  std::vector<RegisterNode> registers;
  std::vector<caf::actor> actors; // one per task, filled by spawnTaskActors
};

// The registers of a verified `program` and every task's input and output
// registers, in plan order; no task has work yet.
std::shared_ptr<TaskGraph> taskGraphOf(const plan::Program &program);

// Called on the coordinator's thread: `begin(step)` before the step's first
// task may fire, `end(step)` once every task of the step has finished.
// `check(step)` (optional) runs just before `end`: an error fails the run as
// a task's would (a GPU executor learns of a kernel fault only there).
struct StepHooks {
  std::function<void(int64_t step)> begin, end;
  std::function<Status(int64_t step)> check;
};

// The step coordinator of `graph`. It answers RunSteps from a caller with one
// StepDone per step, in order, and a RunFailed with the first error (after
// every task halted) instead of the rest. A step starts only after the
// previous one ended (a barrier: every task of it, sinks included, finished)
// and at most `window` steps after the caller's last StepsTaken.
caf::actor spawnStepCoordinator(caf::actor_system &system, std::shared_ptr<TaskGraph> graph,
                                StepHooks hooks);

// Spawns one actor per task of `graph` into graph->actors. Source tasks fire
// once per StartStep; sink tasks report each firing to `coordinator` with
// TaskDone; any task reports a failure with TaskFailed.
void spawnTaskActors(caf::actor_system &system, const std::shared_ptr<TaskGraph> &graph,
                     const caf::actor &coordinator);

// On the comm thread, once a collective's work ended: tells task `task`'s
// actor how it went.
void reportCollective(TaskGraph *graph, int task, const Status &s);

// Sends `run` to `coordinator` and waits for its steps, handing each step's
// row of `metricRing` (metricCount values per row, run.window rows) to
// onStep; returns the run's error, empty when every step ended. When onStep
// throws, stops the run, waits until no task runs, calls `stopped` and
// rethrows.
std::string awaitSteps(caf::actor_system &system, const caf::actor &coordinator,
                       const RunSteps &run, const std::vector<double> &metricRing,
                       size_t metricCount,
                       const std::function<void(int64_t, const std::vector<double> &)> &onStep,
                       const std::function<void()> &stopped);

// Stops the coordinators and task actors of an executor's programs and
// waits until they are gone.
void stopActors(caf::actor_system &system, const std::vector<caf::actor> &actors);

} // namespace sbpflow
