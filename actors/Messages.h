// The executor's protocol messages (all of them, with their inspect functions
// and CAF type ids). Tensors never travel in messages: a register message only
// says that a slot is full or free again.
#pragma once

#include <caf/actor_system_config.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>

#include <cstdint>
#include <string>

namespace sbpflow {

// Coordinator -> task: step `step` may start; the task fires once for it.
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

// Kernel thread / comm thread -> task: the kernel finished; `error` is empty
// on success.
struct KernelDone {
  std::string error;
};

// Task -> coordinator: task `task` fired once in this step (or failed).
struct TaskDone {
  int32_t task = 0;
  std::string error;
};

template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StartStep &x) {
  return f(caf::meta::type_name("StartStep"), x.step);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, RegisterFull &x) {
  return f(caf::meta::type_name("RegisterFull"), x.reg);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, RegisterFree &x) {
  return f(caf::meta::type_name("RegisterFree"), x.reg, x.consumer);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, KernelDone &x) {
  return f(caf::meta::type_name("KernelDone"), x.error);
}
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, TaskDone &x) {
  return f(caf::meta::type_name("TaskDone"), x.task, x.error);
}

} // namespace sbpflow

CAF_BEGIN_TYPE_ID_BLOCK(sbpflow, caf::first_custom_type_id)
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::StartStep))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::RegisterFull))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::RegisterFree))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::KernelDone))
CAF_ADD_TYPE_ID(sbpflow, (sbpflow::TaskDone))
CAF_END_TYPE_ID_BLOCK(sbpflow)

namespace sbpflow {

// Configures an actor system for an executor before it starts (the tools and
// tests do): registers the message types, and sizes CAF's scheduler, which
// runs the compute kernels, to `kernelThreads` threads.
inline void configureExecutorSystem(caf::actor_system_config &cfg, int kernelThreads) {
  cfg.add_message_types<caf::id_block::sbpflow>();
  cfg.set("scheduler.max-threads", static_cast<size_t>(kernelThreads));
}

} // namespace sbpflow
