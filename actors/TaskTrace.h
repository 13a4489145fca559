// A bounded record of when each task of a program ran, written in Chrome's
// trace-event format (chrome://tracing, Perfetto) so that the overlap of
// collectives with compute can be seen. Every slot is allocated when the
// executor is built: recording a task writes one preallocated slot.
#pragma once

#include "runtime/Status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow {

// Where a task's work runs: inline on its actor (a CAF scheduler thread) or
// on the ordered comm thread.
enum class TraceLane : uint8_t { Compute, Comm };

// Nanoseconds of std::chrono::steady_clock since this process's trace origin
// (fixed when the process starts).
int64_t traceNowNs();

struct TracedTask {
  std::string name; // plan Task.name
  std::string op;   // op kind, e.g. "MatMul"
  TraceLane lane = TraceLane::Compute;
};

// The first `maxSteps` steps of one program: one row per step, one slot per
// task in each row. A row is claimed by the step coordinator when a step
// begins; during the step each task writes its own slot from the thread it
// ran on. Steps never overlap (the coordinator's barrier), so the row read by
// a task is the one of the step it runs in.
class ProgramTrace {
public:
  ProgramTrace(std::string program, std::vector<TracedTask> tasks, int64_t maxSteps);

  // Step coordinator, before the step's first task may fire.
  void beginStep(int64_t epoch, int64_t batch) {
    row_ = stepsRun_ < maxSteps_ ? stepsRun_ : -1;
    ++stepsRun_;
    if (row_ >= 0)
      steps_[row_] = StepSlot{traceNowNs(), -1, epoch, batch};
  }
  // Step coordinator, once every task of the step has finished.
  void endStep() {
    if (row_ >= 0)
      steps_[row_].endNs = traceNowNs();
  }
  // The running step's row; -1 once past the bound (nothing to record).
  int64_t row() const { return row_; }
  // The thread that ran `task` in the step of `row`, right after it ended.
  void recordTask(int64_t row, int task, int64_t beginNs, int64_t endNs);
  // The task's actor, when it hands the task's work to the comm thread
  // (before recordTask, which the comm thread calls).
  void recordHandOff(int64_t row, int task, int64_t ns) {
    slots_[row * static_cast<int64_t>(tasks_.size()) + task].handOffNs = ns;
  }
  // While the executor is built (tasks start on the compute lane).
  void setLane(int task, TraceLane lane) { tasks_[task].lane = lane; }

  const std::string &program() const { return program_; }
  const std::vector<TracedTask> &tasks() const { return tasks_; }
  int64_t maxSteps() const { return maxSteps_; }
  int64_t stepsRun() const { return stepsRun_; }
  int64_t stepsTraced() const { return stepsRun_ < maxSteps_ ? stepsRun_ : maxSteps_; }

  struct TaskSlot {
    int64_t beginNs = -1, endNs = -1; // -1: did not run (the step failed)
    int64_t handOffNs = -1;           // work handed to another thread: when
    int32_t thread = 0;               // OS thread id
  };
  struct StepSlot {
    int64_t beginNs = -1, endNs = -1;
    int64_t epoch = 0, batch = 0;
  };
  const StepSlot &step(int64_t row) const { return steps_[row]; }
  const TaskSlot &slot(int64_t row, int task) const {
    return slots_[row * static_cast<int64_t>(tasks_.size()) + task];
  }

private:
  std::string program_;
  std::vector<TracedTask> tasks_;
  int64_t maxSteps_;
  std::vector<StepSlot> steps_;
  std::vector<TaskSlot> slots_; // maxSteps_ rows of tasks_.size()
  int64_t stepsRun_ = 0;
  int64_t row_ = -1;
};

// Writes `programs` as one Chrome trace (JSON object format): pid = `rank`,
// one lane (tid) per thread, named "compute" or "comm", and a "steps" lane
// with one event per step. Task events carry the plan's task name, the op
// kind as category and {program, step, task} as args, plus queued_us for
// work handed off (from the hand-off to its start); "otherData" says which
// steps were kept and the clock's origin.
Status writeChromeTrace(const std::string &path, int rank,
                        const std::vector<const ProgramTrace *> &programs);

} // namespace sbpflow
