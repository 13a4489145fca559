// The CUDA executor's factory, built only with the CUDA backend
// (SBPFLOW_HAVE_CUDA): Executor::create calls it for options.cudaDevice >= 0.
#pragma once

#include "actors/Executor.h"

namespace sbpflow {

// As Executor::create, on CUDA device options.cudaDevice. `comms` must hold
// NcclCommunicators (runtime/comm/NcclCommunicator.h) on that device for
// every group of more than one rank.
StatusOr<std::unique_ptr<Executor>> createCudaExecutor(caf::actor_system &system,
                                                       const plan::Plan *plan, CommGroups *comms,
                                                       const ExecutorOptions &options);

} // namespace sbpflow
