// The runtime's op registry: for every plan op (runtime/plan/Ops.def) a check
// and a CPU and a CUDA kernel builder. The plan loader checks every task with
// it (on global shapes) and the executor builds every task's kernel with it
// (on this rank's shards), so neither has a switch over ops. An op's entry
// lives in its family's file, kernels/<Family>.cpp, beside the other ops of
// the family: check##Op, cpu##Op and cuda##Op in namespace sbpflow::ops.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"
#include "runtime/device/Device.h"
#include "runtime/plan/plan_generated.h"

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace sbpflow {

class Communicator;
class DataSource;

// What a step's kernels may read besides their tensors: it travels with the
// step (several may be in flight).
struct StepContext {
  DataSource *data = nullptr;
  int64_t epoch = 0;
  int64_t batch = 0;
};

// A task's work for one step, built once.
using Kernel = std::function<Status(const StepContext &)>;

// One tensor of a program as a rank sees it.
struct TensorView {
  void *data = nullptr; // null: this rank holds no shard (or the plan is being checked)
  std::string name;     // the plan's, for errors
  Shape global, local;
  Region region; // the local shard's place in the global tensor
  NdSbp sbp;
  std::vector<int64_t> hierarchy, coord;
  int placement = 0;
  plan::DType dtype = plan::DType::F32;
};
using Operands = std::vector<const TensorView *>;

// The CUDA libraries' per-device state the CUDA builders use (kernels/cuda/
// Resources.h: the cuBLASLt handle, the reductions' partial sums).
struct CudaResources;

// What a check or a builder gets. When the plan loader checks a task, the
// views are the global tensors (local == global) and only the first block of
// fields is set; a builder gets the rest.
struct OpArgs {
  OpArgs(const plan::Plan &p, const plan::Task &t, std::string where)
      : plan(p), task(t), at(std::move(where)) {}

  const plan::Plan &plan;
  const plan::Task &task;
  Operands in, out;
  std::string at; // the rank, task and op, for errors

  Device *device = nullptr;     // null while the executor measures (kernels then are dropped)
  Stream stream = nullptr;      // where the task's work is enqueued
  Communicator *comm = nullptr; // a collective's group; null for a group of one
  // Every variable as this rank holds it (optimisers update them in place).
  const std::vector<TensorView> *variables = nullptr;
  // Host memory the task reads and writes as variable v (a step counter):
  // the variable itself where the device is host-visible, else a host copy
  // the executor writes to the device before it saves a checkpoint.
  std::function<void *(int v)> hostVariable;
  // Device memory of `bytes` for the kernel alone, fixed when the executor
  // is built (the same address every step).
  std::function<void *(size_t bytes)> scratch;
  // A device int64 the kernel sets to its first bad row or leaves at -1,
  // read after every step; `describe` words the error for a row.
  std::function<int64_t *(std::function<std::string(int64_t)> describe)> errorFlag;
  CudaResources *cuda = nullptr;
};

using OpCheck = Status (*)(const OpArgs &);
using KernelBuilder = StatusOr<Kernel> (*)(const OpArgs &);

struct OpEntry {
  OpCheck check;
  KernelBuilder cpu;
  KernelBuilder cuda; // null in a build without the CUDA backend
};

// The entry of a kind Ops.def lists (the plan loader refuses any other).
const OpEntry &opEntry(plan::OpKind kind);

// The variable an optimiser task updates in place (it is no output tensor),
// or -1 for any other task.
int updatedVariable(const plan::Task &task);

// The plan loader's check of one task: its views are the global tensors.
Status checkTask(const plan::Plan &plan, const plan::Task &task,
                 const std::vector<const plan::Tensor *> &in,
                 const std::vector<const plan::Tensor *> &out, const std::string &at);

// Runs `build` over f32 views of the task's BF16 tensors: a shadow per
// distinct BF16 buffer in scratch, widened before the kernel and rounded (to
// nearest even) after it, on the task's stream; tensors that share a buffer
// share a shadow, so in-place ops stay in place. Without BF16 tensors it is
// `build(a)`. The CPU's math kernels and the reductions of collectives
// compute in f32 this way.
StatusOr<Kernel> withF32(const OpArgs &a,
                         const std::function<StatusOr<Kernel>(const OpArgs &)> &build);

// Helpers for the family files.
template <class T> T *data(const TensorView *t) { return static_cast<T *>(t->data); }
inline int64_t elements(const TensorView *t) { return elementCount(t->local); }
// A kernel's failure, naming the task.
inline Status named(const std::string &at, Status s) { return s ? s : s.withContext(at); }

} // namespace sbpflow
