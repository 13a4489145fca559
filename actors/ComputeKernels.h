// Compute tasks of a plan as closures over one rank's local buffers: the
// executor builds each once (checking shapes then, so a step only runs
// kernels) and calls it whenever the task fires. Optimisers and collectives,
// which touch variables and communicators, stay in Executor.cpp.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"
#include "runtime/plan/plan_generated.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sbpflow {

class DataSource;

// What a step's kernels may read besides their tensors.
struct StepContext {
  DataSource *data = nullptr;
  int64_t epoch = 0;
  int64_t batch = 0;
};

using Kernel = std::function<Status(const StepContext &)>;

// One tensor of a program as this rank sees it.
struct TensorView {
  void *data = nullptr; // null: this rank holds no shard
  Shape global, local;
  Region region; // the local shard's place in the global tensor
  NdSbp sbp;
  std::vector<int64_t> hierarchy, coord;
  int placement = 0;
  plan::DType dtype = plan::DType::F32;
};

// Copies `part` (a region in global coordinates) from a tensor holding
// `from` into the dense buffer dst.
void packRegion(const float *src, const Region &from, const Region &part, float *dst);
// Copies a dense block holding `part` into a tensor holding `into`.
void unpackRegion(const float *src, const Region &part, float *dst, const Region &into);
// As above, for elements of `elementBytes` bytes.
void packRegion(const void *src, const Region &from, const Region &part, void *dst,
                size_t elementBytes);
void unpackRegion(const void *src, const Region &part, void *dst, const Region &into,
                  size_t elementBytes);

// Whether buildComputeKernel handles `op`.
bool isComputeOp(plan::OpKind op);

// The kernel of a compute task whose tensors all live on this rank; `at`
// names the rank and task in errors. Built with buildWithF32Shadows: BF16
// tensors are stored as bf16, the op computes in f32.
StatusOr<Kernel> buildComputeKernel(const plan::Task &task,
                                    const std::vector<const TensorView *> &in,
                                    const std::vector<const TensorView *> &out,
                                    const std::string &at);

// Builds a task's f32 kernel over its tensors, given as f32 views.
using F32KernelBuilder = std::function<StatusOr<Kernel>(
    const std::vector<const TensorView *> &in, const std::vector<const TensorView *> &out)>;

// The CPU kernels work on f32. This gives `build` every BF16 tensor of a task
// as an f32 shadow buffer (allocated here, once; tensors that share a buffer
// share a shadow, so in-place ops stay in place) and returns a kernel that
// widens the BF16 inputs into their shadows, runs `build`'s kernel, then
// rounds (to nearest even) the shadows of the BF16 outputs into them. F32 and
// I32 tensors are used directly; without BF16 tensors `build`'s kernel is
// returned as it is. Every op thus stores bf16 and computes in f32, as the
// CUDA kernels do.
StatusOr<Kernel> buildWithF32Shadows(const std::vector<const TensorView *> &in,
                                     const std::vector<const TensorView *> &out,
                                     const F32KernelBuilder &build);

} // namespace sbpflow
