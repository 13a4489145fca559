// The executor's protocol messages (all of them, with their inspect functions
// and CAF type ids). Tensors never travel in messages: a register message only
// says that a slot is full or free again. The messages of a healthy step carry
// a few integers; strings travel only with an error.
#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>

#include <cstdint>
#include <string>

namespace sbpflow {

// Step coordinator -> source task (a task without input registers): step
// `step` may start; the task fires once for it. Tasks with inputs need no
// start: their inputs fill only once their producers fired in this step.
struct StartStep {
  int64_t step = 0;
};

// Producer -> consumer: register `reg` holds data (or, for a control
// register, the producer has finished this step).
struct RegisterFull {
  int32_t reg = 0;
};

// Consumer -> producer: consumer task `consumer` is done with its oldest
// slot of register `reg`.
struct RegisterFree {
  int32_t reg = 0;
  int32_t consumer = 0;
};

// Comm thread -> task: the work handed off by the task finished.
struct KernelDone {};

// Comm thread -> task: the work handed off by the task failed.
struct KernelFailed {
  std::string error;
};

// Sink task (one whose outputs nobody reads) -> step coordinator: `task`
// finished once more. Every other task finished before some sink could.
struct TaskDone {
  int32_t task = 0;
};

// Task -> step coordinator: `task` failed; `error` names rank, task and op.
struct TaskFailed {
  int32_t task = 0;
  std::string error;
};

// Caller -> step coordinator: run steps first, ..., first + count - 1 of run
// `run`, at most `window` steps ahead of the last StepsTaken.
struct RunSteps {
  int64_t run = 0;
  int64_t first = 0;
  int64_t count = 0;
  int64_t window = 1;
};

// Step coordinator -> caller: every task of step `step` finished.
struct StepDone {
  int64_t step = 0;
};

// Caller -> step coordinator: the caller has consumed the first `taken`
// steps of run `run` (their metrics may be overwritten).
struct StepsTaken {
  int64_t run = 0;
  int64_t taken = 0;
};

// Caller -> step coordinator: stop the run (the caller is unwinding).
struct StopRun {};

// Step coordinator -> caller: the run ended early with `error` (the first
// one); no task runs a kernel any more.
struct RunFailed {
  std::string error;
};

// Step coordinator -> task: fire no more (the run failed); answer Halted.
struct Halt {};

// Task -> step coordinator: this task has halted.
struct Halted {};

template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StartStep &x) {
  return f(caf::meta::type_name("StartStep"), x.step);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, RegisterFull &x) {
  return f(caf::meta::type_name("RegisterFull"), x.reg);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, RegisterFree &x) {
  return f(caf::meta::type_name("RegisterFree"), x.reg, x.consumer);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, KernelDone &) {
  return f(caf::meta::type_name("KernelDone"));
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, KernelFailed &x) {
  return f(caf::meta::type_name("KernelFailed"), x.error);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, TaskDone &x) {
  return f(caf::meta::type_name("TaskDone"), x.task);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, TaskFailed &x) {
  return f(caf::meta::type_name("TaskFailed"), x.task, x.error);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, RunSteps &x) {
  return f(caf::meta::type_name("RunSteps"), x.run, x.first, x.count, x.window);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StepDone &x) {
  return f(caf::meta::type_name("StepDone"), x.step);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StepsTaken &x) {
  return f(caf::meta::type_name("StepsTaken"), x.run, x.taken);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StopRun &) {
  return f(caf::meta::type_name("StopRun"));
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, RunFailed &x) {
  return f(caf::meta::type_name("RunFailed"), x.error);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, Halt &) {
  return f(caf::meta::type_name("Halt"));
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, Halted &) {
  return f(caf::meta::type_name("Halted"));
}

} // namespace sbpflow

CAF_BEGIN_TYPE_ID_BLOCK(sbpflow, caf::first_custom_type_id)
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::StartStep))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::RegisterFull))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::RegisterFree))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::KernelDone))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::KernelFailed))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::TaskDone))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::TaskFailed))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::RunSteps))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::StepDone))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::StepsTaken))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::StopRun))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::RunFailed))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::Halt))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::Halted))
CAF_END_TYPE_ID_BLOCK(sbpflow)

namespace sbpflow {

// Configures an actor system for an executor before it starts (the tools and
// tests do): registers the message types, and sizes CAF's scheduler, which
// runs the compute kernels, to `kernelThreads` threads. `concurrentPrograms`
// (a plan whose schedule starts a program in the background: local SGD's
// exchange) asks for CAF's first-come-first-served scheduler: under work
// stealing a worker runs the jobs its own actors enqueue before any enqueued
// from outside, so a program started from another thread would wait until
// the running one stops. Work stealing is kept otherwise (about 2% faster
// steps on the char GPT).
inline void configureExecutorSystem(caf::actor_system_config &cfg, int kernelThreads,
                                    bool concurrentPrograms = false) {
  cfg.add_message_types<caf::id_block::sbpflow>();
  cfg.set("scheduler.max-threads", static_cast<size_t>(kernelThreads));
  if (concurrentPrograms)
    cfg.set("scheduler.policy", caf::atom("sharing"));
}

} // namespace sbpflow
