// The CUDA executor: the register protocol of actors/TaskGraph.h over one
// GPU. Every compute task enqueues its kernels on the device's compute stream
// and returns at once; collectives enqueue on their NCCL communicator's
// stream from the ordered comm thread; the step's end hook waits for the GPU,
// reads the metrics and turns a fault into the step's error. Every buffer
// (variables, arenas, scratch) has its offset in one device allocation fixed
// at create: a step allocates nothing. A compute task runs its kernels in the
// element type of its T operands (f32 or bf16, the plan's dtype rules); a
// collective on bf16 tensors runs the f32 path on f32 copies in scratch.
#include "actors/CudaExecutor.h"

#include "actors/ActorExecutor.h"
#include "actors/ComputeKernels.h"
#include "actors/Messages.h"
#include "actors/OpChecks.h"
#include "actors/ProgramLayout.h"
#include "actors/TaskGraph.h"
#include "actors/Variables.h"
#include "kernels/cuda/Attention.h"
#include "kernels/cuda/Data.h"
#include "kernels/cuda/Elementwise.h"
#include "kernels/cuda/Gemm.h"
#include "kernels/cuda/LayerNorm.h"
#include "kernels/cuda/Loss.h"
#include "kernels/cuda/Optimizers.h"
#include "runtime/Shape.h"
#include "runtime/comm/CommGroups.h"
#include "runtime/comm/NcclCommunicator.h"
#include "runtime/data/DataSource.h"
#include "runtime/device/CpuDevice.h"
#include "runtime/device/CudaDevice.h"
#include "runtime/plan/PlanLoader.h"

#include <caf/all.hpp>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

namespace sbpflow {
namespace {

// A string_view, so that a step's literal `what` builds no string unless
// the call failed.
Status cudaStatus(cudaError_t e, std::string_view what) {
  if (e == cudaSuccess)
    return Status::ok();
  return Status::error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                       cudaGetErrorString(e) + ")");
}

// The block `part` (global coordinates) of a device tensor holding `from`
// into the dense device buffer dst, and back; as packRegion / unpackRegion.
Status packRegionGpu(const float *src, const Region &from, const Region &part, float *dst,
                     cudaStream_t s) {
  if (regionElements(part) == 0)
    return Status::ok();
  const RegionBox b = regionBox(from, part);
  return cuda::copyRegion<float>(src, b.shape, b.begin, b.size, b.rank, dst, s);
}

Status unpackRegionGpu(const float *src, const Region &part, float *dst, const Region &into,
                       cudaStream_t s) {
  if (regionElements(part) == 0)
    return Status::ok();
  const RegionBox b = regionBox(into, part);
  return cuda::copyIntoRegion<float>(src, b.begin, b.size, dst, b.shape, b.rank, s);
}

Status copyBytes(void *dst, const void *src, size_t bytes, cudaStream_t s) {
  if (dst == src || bytes == 0)
    return Status::ok();
  return cudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "device copy");
}

Status copyDevice(float *dst, const float *src, int64_t count, cudaStream_t s) {
  return copyBytes(dst, src, count > 0 ? static_cast<size_t>(count) * sizeof(float) : 0, s);
}

using cuda::bf16;

// A tensor's device address as T (the caller picks T from the tensor's dtype).
template <class T> T *as(const TensorView *t) { return static_cast<T *>(t->data); }

// A kernel's element type as a value, for a generic lambda: `using T =
// typename decltype(e)::type`.
template <class T> struct Elem { using type = T; };

// Calls build(Elem<float>) for F32 and build(Elem<bf16>) for BF16: the one
// place a task's element type T (the dtype of its T operands, PlanLoader.cpp's
// dtypeRule) picks the kernels' instantiation. Other dtypes are an error.
template <class Build>
StatusOr<Kernel> withFloatType(plan::DType dtype, const std::string &at, Build &&build) {
  if (dtype == plan::DType::F32)
    return build(Elem<float>{});
  if (dtype == plan::DType::BF16)
    return build(Elem<bf16>{});
  return Status::error(at + ": expects F32 or BF16 operands, got " + plan::EnumNameDType(dtype));
}

// As withFloatType, for kernels that only move elements (transpose, region
// copies, zero fills): an I32 tensor moves as float, 4 bytes each.
template <class Build>
StatusOr<Kernel> withStorageType(plan::DType dtype, const std::string &at, Build &&build) {
  return withFloatType(dtype == plan::DType::I32 ? plan::DType::F32 : dtype, at,
                       std::forward<Build>(build));
}

// The Communicator moves f32 only: a collective on BF16 tensors runs its f32
// path on f32 copies in scratch. The inputs are widened before it and the
// results rounded into the BF16 outputs after it, on the stream the f32 path
// enqueues on; so a reduction sums in f32 and rounds once.
struct Bf16Staging {
  struct Widen {
    const bf16 *from;
    float *to;
    int64_t n;
  };
  struct Round {
    const float *from;
    bf16 *to;
    int64_t n;
  };
  std::vector<Widen> widen;
  std::vector<Round> round;

  // f32Path with the casts around it; f32Path itself when nothing is BF16.
  Kernel wrap(Kernel f32Path, std::function<cudaStream_t()> streamOf, const std::string &at) const {
    if (widen.empty() && round.empty())
      return f32Path;
    return [f32Path = std::move(f32Path), streamOf = std::move(streamOf), widen = widen,
            round = round, at](const StepContext &ctx) -> Status {
      cudaStream_t s = streamOf();
      for (const Widen &c : widen)
        if (Status st = cuda::castToFloat(c.from, c.to, c.n, s); !st)
          return st.withContext(at);
      if (Status st = f32Path(ctx); !st)
        return st;
      for (const Round &c : round)
        if (Status st = cuda::castToBf16(c.from, c.to, c.n, s); !st)
          return st.withContext(at);
      return Status::ok();
    };
  }
};

// A device int64 a kernel sets to the first bad row (or -1), read at the end
// of every step; `describe` turns the row into the task's error message.
struct BadRowCheck {
  const int64_t *device = nullptr;
  std::function<std::string(int64_t row)> describe;
};

// ProgramActors' metrics and outputs hold device pointers.
struct CudaProgram : ProgramActors {
  std::vector<BadRowCheck> checks;
  // Pinned host memory the end hook copies metrics and bad rows into:
  // metrics.size() floats, then checks.size() int64s.
  void *pinned = nullptr;

  ~CudaProgram() {
    if (pinned)
      cudaFreeHost(pinned);
  }
};

class CudaExecutor : public ActorExecutor<CudaProgram> {
public:
  CudaExecutor(caf::actor_system &system, const plan::Plan *plan, CommGroups *comms,
               const ExecutorOptions &options)
      : ActorExecutor(system, plan, comms, options) {}

  ~CudaExecutor() override {
    stopPrograms();
    // Enqueued kernels read the device memory: let them end before
    // CudaDevice frees it (its destructor synchronizes both streams, and
    // these, which may be other streams).
    for (cudaStream_t s : commStreams_)
      cudaStreamSynchronize(s);
    programs_.clear();
    blas_.reset();
  }

  Status init();
  StatusOr<std::vector<checkpoint::ShardRecord>>
  writeCheckpointShards(const std::string &dir, uint64_t generation) const override;
  Status loadCheckpoint(const std::string &dir, checkpoint::DataPosition *next) override;
  Status writeTrace(const std::string &path) const override;
  Status readOutput(const std::string &program, const std::string &name,
                    std::vector<float> &values) const override;

private:
  // Stops what is queued and waits for the GPU, so that the caller may read
  // variables (and free the data source) once run returns.
  void drain() override {
    collectives_.abandon();
    collectives_.waitIdle();
    for (cudaStream_t s : commStreams_)
      cudaStreamSynchronize(s);
    cudaStreamSynchronize(device_->compute());
  }
  std::string where(const plan::Task &task) const {
    return rank() + ": task '" + task.name()->str() + "' (" + opName(task.op()) + ") on GPU " +
           std::to_string(options_.cudaDevice);
  }
  // A device address from an offset in the layout. While measuring (the
  // first pass of init, before the allocation exists) a stand-in that is
  // never dereferenced and never null.
  uint8_t *devAt(size_t offset) const {
    if (measuring_)
      return reinterpret_cast<uint8_t *>(static_cast<uintptr_t>(offset) + DeviceLayout::kAlign);
    return device_->at(offset);
  }
  // Per-task scratch: reserved while measuring, handed out in the same order
  // when building for real.
  uint8_t *scratch(size_t bytes) {
    if (measuring_) {
      scratchOffsets_.push_back(layout_.reserve(std::max<size_t>(bytes, 1)));
      return devAt(scratchOffsets_.back());
    }
    return devAt(scratchOffsets_[scratchCursor_++]);
  }
  float *variable(int v) const { return reinterpret_cast<float *>(devAt(varOffset_[v])); }
  Status buildProgram(const plan::Program &prog, size_t arenaOffset);
  StatusOr<Kernel> buildKernel(const plan::Task &task, const std::vector<TensorView> &views,
                               CudaProgram &rt);
  StatusOr<Kernel> buildComputeKernel(const plan::Task &task,
                                      const std::vector<const TensorView *> &in,
                                      const std::vector<const TensorView *> &out,
                                      const std::string &at, CudaProgram &rt);
  // The communicator of a collective over more than one rank, with its
  // stream; null for a group of one.
  StatusOr<NcclCommunicator *> groupComm(const TensorView &t, int dim,
                                         const plan::Task &task) const;
  Status copyVariablesToDevice();
  Status copyVariablesToHost() const;
  // Waits for every stream and checks for faults (between runs).
  Status synchronize() const;

  std::unique_ptr<CudaDevice> device_;
  std::unique_ptr<cuda::Blas> blas_;
  DeviceLayout layout_;
  bool measuring_ = true;
  std::vector<size_t> scratchOffsets_;
  size_t scratchCursor_ = 0;
  size_t partialsOffset_ = 0;
  // Host copies of the variables: the initial values, checkpoint staging.
  mutable std::vector<VariableShard> host_;
  std::vector<size_t> varOffset_;
  // AdamW step counters count on the host (the kernel takes the count by
  // value): stepCount_[v] is variable v's, written back to its i32 host and
  // device copies when a checkpoint is saved. Sized once: kernels hold
  // pointers into it.
  std::vector<bool> hostCounter_;
  std::vector<int64_t> stepCount_;
  void mirrorStepCounts();
  std::vector<cudaStream_t> commStreams_; // distinct NCCL streams the plan uses
  // Compute tasks fire on several CAF threads: one enqueues at a time, so
  // that a stream wait and the kernels after it stay together and cuBLASLt's
  // per-shape plan cache (not thread-safe) is touched by one thread.
  std::mutex enqueue_;
};

Status CudaExecutor::init() {
  const size_t variableCount = plan_->variables()->size();
  host_ = initVariableShards(*plan_, options_.globalRank);
  varOffset_.assign(variableCount, 0);
  hostCounter_.assign(variableCount, false);
  stepCount_.assign(variableCount, 0);
  mirrorStepCounts();
  for (size_t v = 0; v < variableCount; ++v)
    if (host_[v].local)
      varOffset_[v] = layout_.reserve(host_[v].bytes.size());
  partialsOffset_ = layout_.reserve(cuda::kReducePartials * sizeof(double));
  std::vector<size_t> arenas;
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    arenas.push_back(
        layout_.reserve(static_cast<size_t>(plan_->programs()->Get(p)->arena_bytes())));
  // Pass 1: check every task and reserve its scratch, before touching the GPU.
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    if (Status s = buildProgram(*plan_->programs()->Get(p), arenas[p]); !s)
      return s;
  commStreams_.clear();
  auto dev = CudaDevice::open(options_.cudaDevice, layout_.total());
  if (!dev)
    return dev.status().withContext(rank());
  device_ = std::move(*dev);
  auto blas = cuda::Blas::create();
  if (!blas)
    return blas.status().withContext(rank() + ": GPU " + std::to_string(options_.cudaDevice));
  blas_ = std::make_unique<cuda::Blas>(std::move(*blas));
  if (Status s = copyVariablesToDevice(); !s)
    return s;
  // Pass 2: the same build over the real allocation.
  measuring_ = false;
  scratchCursor_ = 0;
  std::fill(hostCounter_.begin(), hostCounter_.end(), false);
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    if (Status s = buildProgram(*plan_->programs()->Get(p), arenas[p]); !s)
      return s;
  return synchronize();
}

Status CudaExecutor::copyVariablesToDevice() {
  cudaSetDevice(options_.cudaDevice);
  for (size_t v = 0; v < host_.size(); ++v)
    if (host_[v].local && !host_[v].bytes.empty())
      if (Status s = cudaStatus(cudaMemcpy(device_->at(varOffset_[v]), host_[v].data(),
                                           host_[v].bytes.size(), cudaMemcpyHostToDevice),
                                rank() + ": copying variable '" +
                                    plan_->variables()->Get(v)->name()->str() + "' to the GPU");
          !s)
        return s;
  return Status::ok();
}

void CudaExecutor::mirrorStepCounts() {
  for (size_t v = 0; v < host_.size(); ++v)
    if (host_[v].local && host_[v].dtype == checkpoint::DType::I32 && host_[v].elements() == 1)
      stepCount_[v] = host_[v].i32()[0];
}

Status CudaExecutor::copyVariablesToHost() const {
  cudaSetDevice(options_.cudaDevice);
  for (size_t v = 0; v < host_.size(); ++v) {
    if (!host_[v].local || host_[v].bytes.empty())
      continue;
    const size_t bytes = host_[v].bytes.size();
    // A step counter lives on the host: refresh its i32 copies instead (the
    // kernels never exceed INT32_MAX).
    if (hostCounter_[v])
      host_[v].i32()[0] = static_cast<int32_t>(stepCount_[v]);
    Status s = hostCounter_[v] ? cudaStatus(cudaMemcpy(device_->at(varOffset_[v]), host_[v].data(),
                                                       bytes, cudaMemcpyHostToDevice),
                                            "")
                               : cudaStatus(cudaMemcpy(host_[v].data(), device_->at(varOffset_[v]),
                                                       bytes, cudaMemcpyDeviceToHost),
                                            "");
    if (!s)
      return Status::error(rank() + ": copying variable '" +
                           plan_->variables()->Get(v)->name()->str() + "' between GPU and host" +
                           s.message());
  }
  return Status::ok();
}

Status CudaExecutor::synchronize() const {
  cudaSetDevice(options_.cudaDevice);
  for (cudaStream_t s : commStreams_)
    if (Status st = cudaStatus(cudaStreamSynchronize(s),
                               "GPU " + std::to_string(options_.cudaDevice) + ": NCCL stream");
        !st)
      return st.withContext(rank());
  if (Status s = device_->synchronize(); !s)
    return s.withContext(rank());
  return Status::ok();
}

StatusOr<NcclCommunicator *> CudaExecutor::groupComm(const TensorView &t, int dim,
                                                     const plan::Task &task) const {
  auto c = groupCommunicator(*plan_, comms_, t, dim, where(task));
  if (!c)
    return c.status();
  if (!*c)
    return static_cast<NcclCommunicator *>(nullptr);
  auto *nccl = dynamic_cast<NcclCommunicator *>(*c);
  if (!nccl)
    return Status::error(
        where(task) + ": the communicator for placement '" +
        plan_->placements()->Get(t.placement)->name()->str() + "' dim " + std::to_string(dim) +
        " is not an NCCL communicator (the CUDA executor needs device collectives)");
  return nccl;
}

Status CudaExecutor::buildProgram(const plan::Program &prog, size_t arenaOffset) {
  auto rt = std::make_unique<CudaProgram>();
  rt->name = prog.name()->str();
  uint8_t *arena = devAt(arenaOffset);

  std::vector<TensorView> views =
      programViews(*plan_, prog, options_.globalRank, [&](const plan::Tensor &t) -> void * {
        if (t.variable() >= 0)
          return variable(t.variable());
        return arena + t.offset();
      });

  const size_t taskCount = prog.tasks()->size();
  // Which tensors collectives read and write, and on which stream: the
  // hazards between the compute stream and the NCCL streams, fixed here.
  std::vector<cudaStream_t> readByComm(views.size(), nullptr), writtenByComm(views.size(), nullptr);
  std::vector<cudaStream_t> taskComm(taskCount, nullptr);
  std::vector<cudaStream_t> variableReadByComm(host_.size(), nullptr);
  for (size_t k = 0; k < taskCount; ++k) {
    const plan::Task *task = prog.tasks()->Get(k);
    if (!callsCommunicator(*task, views))
      continue;
    auto comm = groupComm(views[task->inputs()->Get(0)],
                          task->attrs_as_CollectiveAttrs()->hierarchy_dim(), *task);
    if (!comm)
      return comm.status();
    cudaStream_t s = (*comm)->stream();
    taskComm[k] = s;
    if (std::find(commStreams_.begin(), commStreams_.end(), s) == commStreams_.end())
      commStreams_.push_back(s);
    for (int t : *task->inputs()) {
      readByComm[t] = s;
      if (int v = prog.tensors()->Get(t)->variable(); v >= 0)
        variableReadByComm[v] = s;
    }
    for (size_t o = 0; task->outputs() && o < task->outputs()->size(); ++o)
      writtenByComm[task->outputs()->Get(o)] = s;
  }

  std::shared_ptr<TaskGraph> graph = taskGraphOf(prog);
  rt->collectiveWork.resize(taskCount);
  std::vector<std::pair<int, int>> collectives; // (collective_seq, task)
  for (size_t k = 0; k < taskCount; ++k) {
    const plan::Task *task = prog.tasks()->Get(k);
    auto kernel = buildKernel(*task, views, *rt);
    if (!kernel)
      return kernel.status();
    if (!*kernel)
      continue;
    const int index = static_cast<int>(k);
    // Streams this task's work must wait for: a compute task reading a
    // collective's output waits for its stream; so does one writing a
    // collective's input (the collective may not have read it yet when the
    // register comes back: conservative, and cheap). A collective waits for
    // compute (its input's producer, and its output's last readers) and for
    // another NCCL stream that produced its input.
    std::vector<cudaStream_t> waits;
    auto addWait = [&](cudaStream_t s) {
      if (s && s != taskComm[k] && std::find(waits.begin(), waits.end(), s) == waits.end())
        waits.push_back(s);
    };
    for (size_t i = 0; task->inputs() && i < task->inputs()->size(); ++i)
      addWait(writtenByComm[task->inputs()->Get(i)]);
    if (!taskComm[k])
      for (size_t o = 0; task->outputs() && o < task->outputs()->size(); ++o)
        addWait(readByComm[task->outputs()->Get(o)]);
    // An optimiser writes its parameter, which is no output tensor; a
    // collective may read it (a parameter gathered for the forward pass).
    if (task->op() == plan::OpKind::SgdMomentum || task->op() == plan::OpKind::AdamW) {
      const int param = task->op() == plan::OpKind::AdamW ? task->attrs_as_AdamWAttrs()->param()
                                                          : task->attrs_as_SgdAttrs()->param();
      if (param >= 0 && param < static_cast<int>(host_.size()))
        addWait(variableReadByComm[param]);
    }
    if (measuring_)
      continue;
    const StepContext *ctx = &step_;
    CudaDevice *dev = device_.get();
    const int gpu = options_.cudaDevice;
    if (!taskComm[k]) {
      std::mutex *lock = &enqueue_;
      graph->tasks[k].run = [kernel = std::move(*kernel), ctx, dev, gpu, lock, waits] {
        std::lock_guard<std::mutex> guard(*lock);
        cudaSetDevice(gpu); // CAF's threads serve several executors
        for (cudaStream_t s : waits)
          if (Status st = dev->order(s, dev->compute()); !st)
            return st;
        return kernel(*ctx);
      };
      continue;
    }
    // Issued in plan order from the comm thread, so every rank enqueues its
    // NCCL calls in the same order; the work only enqueues, so the task is
    // done (for the register protocol) once its calls are on the stream.
    TaskGraph *g = graph.get();
    cudaStream_t mine = taskComm[k];
    const std::string at = where(*task);
    rt->collectiveWork[k] = [kernel = std::move(*kernel), ctx, dev, gpu, g, index, waits, mine,
                             at] {
      cudaSetDevice(gpu);
      Status s = dev->order(dev->compute(), mine);
      for (cudaStream_t w : waits)
        if (s)
          s = dev->order(w, mine);
      if (s)
        s = kernel(*ctx);
      reportCollective(g, index, s ? s : s.withContext(at));
    };
    collectives.emplace_back(task->collective_seq(), index);
  }
  if (measuring_)
    return Status::ok(); // checked and measured; the kernels built here are dropped
  const std::vector<int> order = collectiveOrder(std::move(collectives));
  rt->collectives = static_cast<int>(order.size());
  for (int seq = 0; seq < rt->collectives; ++seq) {
    const int k = order[seq];
    CollectiveQueue *queue = &collectives_;
    const std::function<void()> *work = &rt->collectiveWork[k];
    graph->tasks[k].handOff = [queue, seq, work] { queue->submit(seq, work); };
  }
  if (Status s = bindMetricsAndOutputs(prog, views, rt->metrics, rt->outputs); !s)
    return s;
  rt->metricRing.resize(static_cast<size_t>(kStepWindow) * rt->metrics.size());
  const size_t pinnedBytes = rt->metrics.size() * sizeof(float) + 8 + rt->checks.size() * 8;
  if (Status s = cudaStatus(cudaMallocHost(&rt->pinned, pinnedBytes),
                            rank() + ": pinned host memory for metrics");
      !s)
    return s;

  StepHooks hooks;
  hooks.begin = [ctx = &step_](int64_t step) { ctx->batch = step; };
  // After every task of the step was enqueued: wait for the GPU once per
  // step (here, not on a task's path), then read metrics and bad rows.
  hooks.check = [this, p = rt.get()](int64_t step) -> Status {
    cudaSetDevice(options_.cudaDevice);
    cudaStream_t compute = device_->compute();
    for (cudaStream_t s : commStreams_)
      if (Status st = device_->order(s, compute); !st)
        return st.withContext(rank());
    float *metrics = static_cast<float *>(p->pinned);
    int64_t *bad = reinterpret_cast<int64_t *>(static_cast<uint8_t *>(p->pinned) +
                                               (p->metrics.size() * sizeof(float) + 7) / 8 * 8);
    Status s;
    for (size_t m = 0; s && m < p->metrics.size(); ++m)
      if (p->metrics[m])
        s = cudaStatus(cudaMemcpyAsync(&metrics[m], p->metrics[m], sizeof(float),
                                       cudaMemcpyDeviceToHost, compute),
                       "reading a metric");
    for (size_t c = 0; s && c < p->checks.size(); ++c)
      s = cudaStatus(cudaMemcpyAsync(&bad[c], p->checks[c].device, sizeof(int64_t),
                                     cudaMemcpyDeviceToHost, compute),
                     "reading a kernel's error flag");
    if (s)
      s = cudaStatus(cudaStreamSynchronize(compute), "waiting for the step");
    if (s)
      s = device_->asyncError();
    for (size_t c = 0; c < p->checks.size() && s; ++c)
      if (bad[c] >= 0)
        return Status::error(p->checks[c].describe(bad[c]));
    if (!s)
      return Status::error(rank() + ": GPU " + std::to_string(options_.cudaDevice) + ", program '" +
                           p->name + "' step " + std::to_string(step) + ": " + s.message());
    const size_t n = p->metrics.size();
    double *row = p->metricRing.data() + ((step - p->runFirst) % kStepWindow) * n;
    for (size_t m = 0; m < n; ++m)
      row[m] = p->metrics[m] ? metrics[m] : 0.0;
    return Status::ok();
  };
  rt->graph = graph;
  rt->coordinator = spawnStepCoordinator(system_, graph, std::move(hooks));
  spawnTaskActors(system_, graph, rt->coordinator);
  programs_.push_back(std::move(rt));
  return Status::ok();
}

StatusOr<Kernel> CudaExecutor::buildKernel(const plan::Task &task,
                                           const std::vector<TensorView> &views, CudaProgram &rt) {
  using K = plan::OpKind;
  Operands in, out;
  taskOperands(task, views, in, out);
  const std::string at = where(task);
  auto here = runsOnRank(task, in, out, host_, at);
  if (!here)
    return here.status();
  if (!*here)
    return Kernel();
  if (isComputeOp(task.op()))
    return buildComputeKernel(task, in, out, at, rt);
  auto f32 = [](const TensorView *t) { return as<float>(t); };
  CudaDevice *dev = device_.get();
  // The compute stream, read when the kernel runs (null while measuring).
  auto computeOf = [dev] { return dev->compute(); };
  // What a collective's f32 path reads and writes for tensor t: t itself, or
  // for a BF16 t an f32 copy in scratch that `staging` fills from t before
  // the f32 path (an input) or rounds into t after it (an output).
  auto f32Input = [&](const TensorView *t, Bf16Staging &staging) -> const float * {
    if (t->dtype != plan::DType::BF16)
      return f32(t);
    const int64_t n = elementCount(t->local);
    auto *wide = reinterpret_cast<float *>(scratch(static_cast<size_t>(n) * sizeof(float)));
    staging.widen.push_back({as<bf16>(t), wide, n});
    return wide;
  };
  auto f32Output = [&](const TensorView *t, Bf16Staging &staging) -> float * {
    if (t->dtype != plan::DType::BF16)
      return f32(t);
    const int64_t n = elementCount(t->local);
    auto *wide = reinterpret_cast<float *>(scratch(static_cast<size_t>(n) * sizeof(float)));
    staging.round.push_back({wide, as<bf16>(t), n});
    return wide;
  };

  switch (task.op()) {
  case K::Parameter:
    return Kernel();
  case K::SgdMomentum:
  case K::AdamW: {
    auto checked = checkOptimizer(task, in, host_, at);
    if (!checked)
      return checked.status();
    const OptimizerWork w = checked.take();
    auto var = [&](int index) { return index >= 0 ? variable(index) : nullptr; };
    // The clipping factor stays on the device (no host sync in a step).
    const float *scale = w.scaled ? f32(in[1]) : nullptr;
    float *wp = var(w.param);
    const float *g = f32(in[0]);
    if (!w.adam) {
      float *v = var(w.momentum);
      return Kernel([=](const StepContext &) -> Status {
        if (Status s = cuda::sgdMomentum(wp, v, g, w.n, w.lr, w.momentumFactor, w.weightDecay,
                                         scale, computeOf());
            !s)
          return s.withContext(at);
        return Status::ok();
      });
    }
    // The step count is known on the host before the launch (the kernel
    // takes it by value); the variable's copies are refreshed for
    // checkpoints.
    hostCounter_[w.step] = true;
    int64_t *step = &stepCount_[w.step];
    float *mp = var(w.m), *vp = var(w.v);
    const std::string name = plan_->variables()->Get(w.step)->name()->str();
    return Kernel([=](const StepContext &) -> Status {
      if (*step >= std::numeric_limits<int32_t>::max())
        return Status::error(at + ": step counter '" + name + "' is at INT32_MAX (" +
                             std::to_string(*step) + "): it cannot count another step");
      ++*step;
      if (Status s = cuda::adamw(wp, mp, vp, g, w.n, w.lr, w.beta1, w.beta2, w.eps, w.weightDecay,
                                 *step, scale, computeOf());
          !s)
        return s.withContext(at);
      return Status::ok();
    });
  }
  case K::AllReduce: {
    const plan::CollectiveAttrs *c = task.attrs_as_CollectiveAttrs();
    auto comm = groupComm(*in[0], c->hierarchy_dim(), task);
    if (!comm)
      return comm.status();
    auto checked = checkAllReduce(in, out, at);
    if (!checked)
      return checked.status();
    const std::vector<int64_t> counts = checked->counts;
    const int64_t total = checked->total;
    NcclCommunicator *cm = *comm;
    ReduceOp op = toReduce(c->reduce());
    // One element type for every operand (the plan loader's dtype rules).
    // BF16: pair i is reduced in place in f32 scratch at offset sum(counts[<i]),
    // which is also where a bucket packs it, so the f32 path's copies are no-ops.
    const bool bf = in[0]->dtype == plan::DType::BF16;
    float *wide =
        bf ? reinterpret_cast<float *>(scratch(static_cast<size_t>(total) * sizeof(float)))
           : nullptr;
    Bf16Staging staging;
    std::vector<std::pair<const float *, float *>> pairs;
    for (size_t i = 0, off = 0; i < in.size(); off += counts[i], ++i) {
      if (!bf) {
        pairs.emplace_back(f32(in[i]), f32(out[i]));
        continue;
      }
      pairs.emplace_back(wide + off, wide + off);
      staging.widen.push_back({as<bf16>(in[i]), wide + off, counts[i]});
      staging.round.push_back({wide + off, as<bf16>(out[i]), counts[i]});
    }
    auto streamOf = [cm, computeOf] { return cm ? cm->stream() : computeOf(); };
    if (cm && pairs.size() > 1) {
      // A bucket: one NCCL call over a packed copy (scratch fixed at create).
      float *buf =
          bf ? wide
             : reinterpret_cast<float *>(scratch(static_cast<size_t>(total) * sizeof(float)));
      return staging.wrap(
          [=](const StepContext &) -> Status {
            cudaStream_t s = cm->stream();
            Status st;
            for (size_t i = 0, off = 0; st && i < pairs.size(); off += counts[i], ++i)
              st = copyDevice(buf + off, pairs[i].first, counts[i], s);
            if (st)
              st = cm->allReduce(buf, total, op);
            for (size_t i = 0, off = 0; st && i < pairs.size(); off += counts[i], ++i)
              st = copyDevice(pairs[i].second, buf + off, counts[i], s);
            return st;
          },
          streamOf, at);
    }
    return staging.wrap(
        [=](const StepContext &) -> Status {
          cudaStream_t s = streamOf();
          for (size_t i = 0; i < pairs.size(); ++i) {
            if (Status st = copyDevice(pairs[i].second, pairs[i].first, counts[i], s); !st)
              return st.withContext(at);
            if (cm && counts[i] > 0)
              if (Status st = cm->allReduce(pairs[i].second, counts[i], op); !st)
                return st;
          }
          return Status::ok();
        },
        streamOf, at);
  }
  case K::AllGather:
  case K::ReduceScatter:
  case K::AllToAll: {
    auto checked = checkExchange(task, in, out, at);
    if (!checked)
      return checked.status();
    auto comm = groupComm(*in[0], checked->dim, task);
    if (!comm)
      return comm.status();
    NcclCommunicator *cm = *comm;
    auto streamOf = [cm, computeOf] { return cm ? cm->stream() : computeOf(); };
    Bf16Staging staging;
    const float *src = f32Input(in[0], staging);
    float *dst = f32Output(out[0], staging);
    if (checked->copyOnly) {
      const int64_t count = elementCount(out[0]->local);
      return staging.wrap(
          [=](const StepContext &) { return copyDevice(dst, src, count, computeOf()); }, computeOf,
          at);
    }
    auto w = std::make_shared<const ExchangeWork>(checked.take());
    float *sb =
        reinterpret_cast<float *>(scratch(static_cast<size_t>(w->sendTotal) * sizeof(float)));
    float *rb =
        reinterpret_cast<float *>(scratch(static_cast<size_t>(w->recvTotal) * sizeof(float)));
    Region inRegion = in[0]->region, outRegion = out[0]->region;
    ReduceOp op = toReduce(task.attrs_as_CollectiveAttrs()->reduce());
    K kind = task.op();
    return staging.wrap(
        [=](const StepContext &) -> Status {
          // Packing runs on the collective's stream, ordered with its NCCL calls.
          cudaStream_t s = streamOf();
          Status st;
          if (kind == K::AllGather) {
            st = packRegionGpu(src, inRegion, w->sendParts[0], sb, s);
          } else {
            int64_t off = 0;
            for (int64_t r = 0; st && r < w->n; ++r) {
              st = packRegionGpu(src, inRegion, w->sendParts[r], sb + off, s);
              off += w->sendCounts[r];
            }
          }
          if (!st) {
          } else if (!cm) {
            st = copyDevice(rb, sb, w->recvTotal, s);
          } else if (kind == K::AllGather) {
            st = cm->allGather(sb, rb, w->recvCounts.data());
          } else if (kind == K::ReduceScatter) {
            st = cm->reduceScatter(sb, rb, w->sendCounts.data(), op);
          } else {
            st = cm->allToAll(sb, w->sendCounts.data(), rb, w->recvCounts.data());
          }
          if (st && kind == K::ReduceScatter) {
            st = unpackRegionGpu(rb, w->recvParts[0], dst, outRegion, s);
          } else if (st) {
            int64_t off = 0;
            for (int64_t r = 0; st && r < w->n; ++r) {
              st = unpackRegionGpu(rb + off, w->recvParts[r], dst, outRegion, s);
              off += w->recvCounts[r];
            }
          }
          return st;
        },
        streamOf, at);
  }
  case K::Slice: {
    auto w = checkSlice(in, out, at);
    if (!w)
      return w.status();
    Bf16Staging staging;
    const float *src = f32Input(in[0], staging);
    float *dst = f32Output(out[0], staging);
    return staging.wrap(
        [=, w = w.take()](const StepContext &) -> Status {
          if (Status s = packRegionGpu(src, w.from, w.part, dst, computeOf()); !s)
            return s.withContext(at);
          return Status::ok();
        },
        computeOf, at);
  }
  case K::ZeroOthers: {
    auto w = checkZeroOthers(in, out, at);
    if (!w)
      return w.status();
    Bf16Staging staging;
    const float *src = f32Input(in[0], staging);
    float *dst = f32Output(out[0], staging);
    return staging.wrap(
        [=, w = *w](const StepContext &) -> Status {
          Status s = w.keep ? copyDevice(dst, src, w.count, computeOf())
                            : cuda::fill<float>(dst, 0.0f, w.count, computeOf());
          return s ? s : s.withContext(at);
        },
        computeOf, at);
  }
  default:
    break;
  }
  return Status::error(at + ": op has no CUDA kernel (the CUDA executor does not run it)");
}

StatusOr<Kernel> CudaExecutor::buildComputeKernel(const plan::Task &task,
                                                  const std::vector<const TensorView *> &in,
                                                  const std::vector<const TensorView *> &out,
                                                  const std::string &at, CudaProgram &rt) {
  using K = plan::OpKind;
  auto f32 = [](const TensorView *t) { return as<float>(t); };
  auto i32 = [](const TensorView *t) { return as<int32_t>(t); };
  auto elems = [](const TensorView *t) { return elementCount(t->local); };
  if (Status s = checkOperandCount(task, in, at); !s)
    return s;
  const size_t wantOut = task.outputs() ? task.outputs()->size() : 0;
  if (wantOut == 0)
    return Status::error(at + ": has no result");
  CudaDevice *dev = device_.get();
  cuda::Blas *blas = blas_.get();
  auto stream = [dev] { return dev->compute(); };
  // A kernel's status, naming the task when it failed.
  auto named = [at](Status s) { return s ? s : s.withContext(at); };
  // A device int64 that a kernel sets to its first bad row, checked at the
  // end of every step.
  auto badRow = [&](std::function<std::string(int64_t)> describe) {
    auto *flag = reinterpret_cast<int64_t *>(scratch(sizeof(int64_t)));
    rt.checks.push_back({flag, std::move(describe)});
    return flag;
  };
  // One element of a device i32 tensor, read once the step has ended (only
  // to word an error).
  auto readI32 = [](const int32_t *p) {
    int32_t v = 0;
    cudaMemcpy(&v, p, sizeof v, cudaMemcpyDeviceToHost);
    return v;
  };
  double *reduceScratch = reinterpret_cast<double *>(devAt(partialsOffset_));
  // The element type T of the task's T operands (PlanLoader.cpp's dtypeRule):
  // every case below reads it off one of them and builds its kernel in T.
  auto inT = [&](size_t i, auto build) { return withFloatType(in[i]->dtype, at, build); };

  switch (task.op()) {
  case K::Input: {
    auto w = checkInput(task, out, at);
    if (!w)
      return w.status();
    // A data field holds f32 or i32 samples (4 bytes each); a BF16 input
    // receives them in f32 scratch and rounds them on the GPU.
    const int64_t n = elems(out[0]);
    const size_t bytes = static_cast<size_t>(n) * 4;
    const bool rounds = out[0]->dtype == plan::DType::BF16;
    void *dst = rounds ? static_cast<void *>(scratch(bytes)) : out[0]->data;
    bf16 *y = rounds ? as<bf16>(out[0]) : nullptr;
    // The host side of the copy, allocated once.
    auto host = std::make_shared<std::vector<uint8_t>>(bytes + 1);
    return Kernel([=, w = w.take()](const StepContext &ctx) -> Status {
      if (Status s = checkDataField(w, ctx.data, at); !s)
        return s;
      if (Status s = ctx.data->fill(w.field, ctx.epoch, ctx.batch, w.globalBatch, w.rowBegin,
                                    w.rowCount, host->data());
          !s)
        return s.withContext(at);
      // From pageable memory cudaMemcpyAsync returns once the source has
      // been staged (CUDA runtime API, "API synchronization behavior"), so
      // the host buffer may be refilled by the next step at once.
      if (Status s = cudaStatus(
              cudaMemcpyAsync(dst, host->data(), bytes, cudaMemcpyHostToDevice, stream()),
              "copying the batch to the GPU");
          !s)
        return named(s);
      if (rounds)
        return named(cuda::castToBf16(static_cast<const float *>(dst), y, n, stream()));
      return Status::ok();
    });
  }
  case K::Fill: {
    const FillWork w = checkFill(task, out);
    float *y = f32(out[0]);
    return Kernel(
        [=](const StepContext &) { return named(cuda::fill<float>(y, w.value, w.n, stream())); });
  }
  case K::Cast: {
    auto w = checkElementwise(task, in, out, at);
    if (!w)
      return w.status();
    const int64_t n = w->n;
    const plan::DType from = in[0]->dtype, to = out[0]->dtype;
    if (from == plan::DType::F32 && to == plan::DType::BF16) {
      const float *x = f32(in[0]);
      bf16 *y = as<bf16>(out[0]);
      return Kernel(
          [=](const StepContext &) { return named(cuda::castToBf16(x, y, n, stream())); });
    }
    if (from == plan::DType::BF16 && to == plan::DType::F32) {
      const bf16 *x = as<bf16>(in[0]);
      float *y = f32(out[0]);
      return Kernel(
          [=](const StepContext &) { return named(cuda::castToFloat(x, y, n, stream())); });
    }
    if (from == to && (from == plan::DType::F32 || from == plan::DType::BF16)) {
      const void *x = in[0]->data;
      void *y = out[0]->data;
      const size_t bytes = static_cast<size_t>(n) * dtypeSize(from);
      return Kernel([=](const StepContext &) { return named(copyBytes(y, x, bytes, stream())); });
    }
    return Status::error(at + ": cannot cast " + plan::EnumNameDType(from) + " to " +
                         plan::EnumNameDType(to) + " (F32 and BF16 only)");
  }
  case K::MatMul: {
    auto w = checkMatMul(task, in, out, at);
    if (!w)
      return w.status();
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *a = as<T>(in[0]), *b = as<T>(in[1]);
      // The result is T, or F32: a bf16 product kept in its fp32
      // accumulator (a weight gradient), through matmul's mixed overload.
      if (out[0]->dtype == plan::DType::F32) {
        float *c = f32(out[0]);
        return Kernel([=, w = *w](const StepContext &) {
          return named(cuda::matmul(*blas, a, b, c, w.m, w.n, w.k, w.transA, w.transB, stream()));
        });
      }
      T *c = as<T>(out[0]);
      return Kernel([=, w = *w](const StepContext &) {
        return named(cuda::matmul(*blas, a, b, c, w.m, w.n, w.k, w.transA, w.transB, stream()));
      });
    });
  }
  case K::BiasAdd: {
    auto w = checkBiasAdd(in, out, at);
    if (!w)
      return w.status();
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *x = as<T>(in[0]), *b = as<T>(in[1]);
      T *y = as<T>(out[0]);
      return Kernel([=, w = *w](const StepContext &) {
        return named(cuda::biasAdd<T>(x, b, y, w.rows, w.cols, stream()));
      });
    });
  }
  case K::BiasGelu: {
    auto w = checkBiasGelu(in, out, at);
    if (!w)
      return w.status();
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *x = as<T>(in[0]), *b = as<T>(in[1]);
      T *pre = as<T>(out[0]), *y = as<T>(out[1]);
      return Kernel([=, w = *w](const StepContext &) {
        return named(cuda::biasGelu<T>(x, b, pre, y, w.rows, w.cols, stream()));
      });
    });
  }
  case K::Reshape: {
    auto w = checkElementwise(task, in, out, at);
    if (!w)
      return w.status();
    // Any element type: the bytes move as they are.
    const void *x = in[0]->data;
    void *y = out[0]->data;
    const size_t bytes = static_cast<size_t>(w->n) * dtypeSize(out[0]->dtype);
    return Kernel([=](const StepContext &) { return named(copyBytes(y, x, bytes, stream())); });
  }
  case K::Add:
  case K::ReluGrad:
  case K::Relu:
  case K::Gelu:
  case K::GeluGrad: {
    auto w = checkElementwise(task, in, out, at);
    if (!w)
      return w.status();
    const int64_t n = w->n;
    const K op = task.op();
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *a = as<T>(in[0]), *b = in.size() > 1 ? as<T>(in[1]) : nullptr;
      T *y = as<T>(out[0]);
      switch (op) {
      case K::Add:
        return Kernel(
            [=](const StepContext &) { return named(cuda::add<T>(a, b, y, n, stream())); });
      case K::ReluGrad:
        return Kernel(
            [=](const StepContext &) { return named(cuda::reluGrad<T>(a, b, y, n, stream())); });
      case K::Relu:
        return Kernel([=](const StepContext &) { return named(cuda::relu<T>(a, y, n, stream())); });
      case K::Gelu:
        return Kernel([=](const StepContext &) { return named(cuda::gelu<T>(a, y, n, stream())); });
      default: // GeluGrad
        return Kernel(
            [=](const StepContext &) { return named(cuda::geluGrad<T>(a, b, y, n, stream())); });
      }
    });
  }
  case K::SoftmaxXent:
  case K::CountCorrect:
  case K::SoftmaxXentGrad: {
    auto w = checkSoftmaxXent(task, in, at);
    if (!w)
      return w.status();
    const int64_t rows = w->rows, classes = w->cols;
    const int32_t *labels = i32(in[1]);
    const K op = task.op();
    // Logits (and their gradient) are T; losses, the count and dloss F32.
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *logits = as<T>(in[0]);
      if (op == K::SoftmaxXent) {
        float *loss = f32(out[0]);
        int64_t *bad = badRow([=](int64_t row) {
          return at + ": label " + std::to_string(readI32(labels + row)) + " at row " +
                 std::to_string(row) + " is out of range for " + std::to_string(classes) +
                 " classes";
        });
        return Kernel([=](const StepContext &) {
          return named(
              cuda::softmaxXent<T>(logits, labels, loss, nullptr, bad, rows, classes, stream()));
        });
      }
      if (op == K::CountCorrect) {
        float *count = f32(out[0]);
        return Kernel([=](const StepContext &) {
          return named(cuda::countCorrect<T>(logits, labels, count, rows, classes, stream()));
        });
      }
      const float *dloss = f32(in[2]);
      T *dlogits = as<T>(out[0]);
      return Kernel([=](const StepContext &) {
        return named(cuda::softmaxXentGrad<T>(logits, labels, dloss, nullptr, dlogits, rows,
                                              classes, stream()));
      });
    });
  }
  case K::Mean:
  case K::MeanGrad: {
    const MeanWork w = checkMean(task, in, out);
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    if (task.op() == K::Mean) {
      if (elems(out[0]) != 1)
        return Status::error(at + ": the mean must be a scalar");
      // Every reduction runs on the compute stream: they share the partials.
      return Kernel([=](const StepContext &) {
        return named(cuda::mean(x, y, w.n, w.count, reduceScratch, stream()));
      });
    }
    if (elems(in[0]) != 1)
      return Status::error(at + ": the mean's gradient must be a scalar");
    return Kernel(
        [=](const StepContext &) { return named(cuda::meanGrad(x, y, w.n, w.count, stream())); });
  }
  case K::ReduceRows: {
    auto w = checkReduceRows(in, out, at);
    if (!w)
      return w.status();
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *x = as<T>(in[0]);
      // The sum is F32 (a bias gradient for the fp32 optimiser) or T; it is
      // accumulated in fp32 either way and rounded once.
      if (out[0]->dtype == plan::DType::F32) {
        float *y = f32(out[0]);
        return Kernel([=, w = *w](const StepContext &) {
          return named(cuda::reduceRows<T, float>(x, y, w.rows, w.cols, stream()));
        });
      }
      T *y = as<T>(out[0]);
      return Kernel([=, w = *w](const StepContext &) {
        return named(cuda::reduceRows<T, T>(x, y, w.rows, w.cols, stream()));
      });
    });
  }
  case K::Embedding:
  case K::EmbeddingGrad: {
    auto w = checkEmbedding(task, in, out, at);
    if (!w)
      return w.status();
    const int32_t *ids = i32(in[1]);
    const K op = task.op();
    // The table (and the rows looked up) or dy is T; the table's gradient F32.
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      if (op == K::Embedding) {
        const T *table = as<T>(in[0]);
        T *y = as<T>(out[0]);
        const int64_t vocab = w->vocab;
        int64_t *bad = badRow([=](int64_t row) {
          return at + ": token id " + std::to_string(readI32(ids + row)) + " at position " +
                 std::to_string(row) + " is outside the vocabulary of " + std::to_string(vocab);
        });
        return Kernel([=, w = *w](const StepContext &) {
          return named(cuda::embedding<T>(table, w.tableRows, w.rowBegin, w.vocab, ids, w.ids,
                                          w.dim, y, bad, stream()));
        });
      }
      const T *dy = as<T>(in[0]);
      float *dtable = f32(out[0]);
      return Kernel([=, w = *w](const StepContext &) {
        return named(cuda::embeddingGrad<T>(dy, ids, w.ids, w.dim, dtable, w.tableRows, w.rowBegin,
                                            stream()));
      });
    });
  }
  case K::LayerNorm:
  case K::LayerNormGrad: {
    auto w = checkLayerNorm(task, in, out, at);
    if (!w)
      return w.status();
    const K op = task.op();
    // x, y, dy, dx are T; gamma, beta and their gradients F32.
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      if (op == K::LayerNorm) {
        const T *x = as<T>(in[0]);
        const float *g = f32(in[1]), *b = f32(in[2]);
        T *y = as<T>(out[0]);
        return Kernel([=, w = *w](const StepContext &) {
          return named(cuda::layerNorm<T>(x, g, b, y, w.rows, w.cols, w.eps, stream()));
        });
      }
      const T *dy = as<T>(in[0]), *x = as<T>(in[1]);
      const float *g = f32(in[2]);
      T *dx = as<T>(out[0]);
      float *dg = f32(out[1]), *db = f32(out[2]);
      float *work = reinterpret_cast<float *>(scratch(
          static_cast<size_t>(cuda::layerNormGradScratch(w->rows, w->cols)) * sizeof(float)));
      return Kernel([=, w = *w](const StepContext &) {
        return named(
            cuda::layerNormGrad<T>(dy, x, g, dx, dg, db, w.rows, w.cols, w.eps, work, stream()));
      });
    });
  }
  case K::Softmax:
  case K::SoftmaxGrad: {
    auto w = checkSoftmax(task, in, out, at);
    if (!w)
      return w.status();
    const K op = task.op();
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *a = as<T>(in[0]);
      T *y = as<T>(out[0]);
      if (op == K::Softmax)
        return Kernel([=, w = *w](const StepContext &) {
          return named(cuda::softmax<T>(a, y, w.rows, w.cols, stream()));
        });
      const T *b = as<T>(in[1]);
      return Kernel([=, w = *w](const StepContext &) {
        return named(cuda::softmaxGrad<T>(a, b, y, w.rows, w.cols, stream()));
      });
    });
  }
  case K::CausalAttention:
  case K::CausalAttentionGrad: {
    auto checked = checkAttention(task, in, out, at, cuda::kMaxAttentionHeadDim);
    if (!checked)
      return checked.status();
    const AttentionWork w = *checked;
    const K op = task.op();
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      if (op == K::CausalAttention) {
        const T *q = as<T>(in[0]), *k = as<T>(in[1]), *v = as<T>(in[2]);
        T *y = as<T>(out[0]);
        return Kernel([=](const StepContext &) {
          return named(cuda::causalAttention<T>(q, k, v, y, nullptr, w.batch, w.T, w.localHeads,
                                                w.headDim, stream()));
        });
      }
      // The backward needs the forward's y and row statistics, but the plan
      // gives CausalAttentionGrad only (dy, q, k, v): the forward's y may
      // have been overwritten by then (its arena space is reused after its
      // last reader) and the forward keeps no lse. So the backward
      // recomputes the forward into its own scratch y (in T, as the
      // forward's) and lse, one more attention pass per layer. Keeping them
      // needs the compiler to connect the two tasks.
      float *lse = reinterpret_cast<float *>(
          scratch(static_cast<size_t>(cuda::causalAttentionLseSize(w.batch, w.T, w.localHeads)) *
                  sizeof(float)));
      T *ys = reinterpret_cast<T *>(scratch(static_cast<size_t>(elems(in[1])) * sizeof(T)));
      const T *dy = as<T>(in[0]), *q = as<T>(in[1]), *k = as<T>(in[2]), *v = as<T>(in[3]);
      T *dq = as<T>(out[0]), *dk = as<T>(out[1]), *dv = as<T>(out[2]);
      return Kernel([=](const StepContext &) -> Status {
        if (Status s = cuda::causalAttention<T>(q, k, v, ys, lse, w.batch, w.T, w.localHeads,
                                                w.headDim, stream());
            !s)
          return s.withContext(at);
        return named(cuda::causalAttentionGrad<T>(dy, q, k, v, ys, lse, dq, dk, dv, w.batch, w.T,
                                                  w.localHeads, w.headDim, stream()));
      });
    });
  }
  case K::Dropout: {
    auto w = checkDropout(task, in, out, at);
    if (!w)
      return w.status();
    auto d = std::make_shared<const DropoutWork>(w.take());
    return inT(0, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *x = as<T>(in[0]);
      T *y = as<T>(out[0]);
      return Kernel([=](const StepContext &ctx) {
        return named(cuda::dropout<T>(x, y, d->global.data(), d->begin.data(), d->size.data(),
                                      static_cast<int>(d->global.size()), d->p, d->seed,
                                      static_cast<uint32_t>(ctx.batch),
                                      static_cast<uint32_t>(ctx.epoch), stream()));
      });
    });
  }
  case K::Transpose: {
    auto w = checkTranspose(task, in, out, at);
    if (!w)
      return w.status();
    auto t = std::make_shared<const TransposeWork>(w.take());
    return withStorageType(in[0]->dtype, at, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *x = as<T>(in[0]);
      T *y = as<T>(out[0]);
      return Kernel([=](const StepContext &) {
        return named(cuda::transpose<T>(x, y, t->shape.data(), t->perm.data(),
                                        static_cast<int>(t->perm.size()), stream()));
      });
    });
  }
  case K::Narrow:
  case K::NarrowGrad: {
    auto w = checkNarrow(task, in, out, at);
    if (!w)
      return w.status();
    auto c = std::make_shared<const NarrowWork>(w.take());
    const int rank = static_cast<int>(c->whole.size());
    const K op = task.op();
    return withStorageType(in[0]->dtype, at, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      const T *x = as<T>(in[0]);
      T *y = as<T>(out[0]);
      if (op == K::Narrow)
        return Kernel([=](const StepContext &) {
          return named(cuda::copyRegion<T>(x, c->whole.data(), c->offset.data(), c->part.data(),
                                           rank, y, stream()));
        });
      // Zero bits are 0 in f32, bf16 and i32 alike.
      return Kernel([=](const StepContext &) -> Status {
        if (Status s = cuda::fill<T>(y, 0.0f, c->n, stream()); !s)
          return s.withContext(at);
        return named(cuda::copyIntoRegion<T>(x, c->offset.data(), c->part.data(), y,
                                             c->whole.data(), rank, stream()));
      });
    });
  }
  case K::Concat: {
    auto w = checkConcat(task, in, out, at);
    if (!w)
      return w.status();
    auto c = std::make_shared<const ConcatWork>(w.take());
    return withStorageType(in[0]->dtype, at, [&](auto e) -> StatusOr<Kernel> {
      using T = typename decltype(e)::type;
      std::vector<const T *> parts;
      for (const TensorView *t : in)
        parts.push_back(as<T>(t));
      T *y = as<T>(out[0]);
      return Kernel([=](const StepContext &) -> Status {
        const int rank = static_cast<int>(c->result.size());
        for (size_t i = 0; i < parts.size(); ++i)
          if (Status s = cuda::copyIntoRegion<T>(parts[i], c->offsets[i].data(), c->parts[i].data(),
                                                 y, c->result.data(), rank, stream());
              !s)
            return s.withContext(at);
        return Status::ok();
      });
    });
  }
  case K::SquareSum:
  case K::ClipScale: {
    auto w = checkScalarOp(task, in, out, at);
    if (!w)
      return w.status();
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    if (task.op() == K::SquareSum)
      return Kernel([=, n = w->n](const StepContext &) {
        return named(cuda::squareSum(x, n, y, reduceScratch, stream()));
      });
    return Kernel([=, maxNorm = w->maxNorm](const StepContext &) {
      return named(cuda::clipScale(x, 1, maxNorm, y, stream()));
    });
  }
  default:
    break;
  }
  return Status::error(at + ": op has no CUDA kernel (the CUDA executor does not run it)");
}

StatusOr<std::vector<checkpoint::ShardRecord>>
CudaExecutor::writeCheckpointShards(const std::string &dir, uint64_t generation) const {
  if (Status s = synchronize(); !s)
    return s;
  if (Status s = copyVariablesToHost(); !s)
    return s;
  return writeVariableShards(*plan_, options_.globalRank, host_, dir, generation);
}

Status CudaExecutor::loadCheckpoint(const std::string &dir, checkpoint::DataPosition *next) {
  if (Status s = synchronize(); !s)
    return s;
  if (Status s = loadVariableShards(*plan_, options_.globalRank, host_, dir, next); !s)
    return s;
  mirrorStepCounts();
  return copyVariablesToDevice();
}

Status CudaExecutor::readOutput(const std::string &program, const std::string &name,
                                std::vector<float> &values) const {
  auto view = findOutput(program, name);
  if (!view)
    return view.status();
  if (Status s = synchronize(); !s)
    return s;
  values.resize(static_cast<size_t>(elementCount((*view)->local)));
  return cudaStatus(cudaMemcpy(values.data(), (*view)->data, values.size() * sizeof(float),
                               cudaMemcpyDeviceToHost),
                    rank() + ": reading output '" + name + "'");
}

Status CudaExecutor::writeTrace(const std::string &path) const {
  return Status::error(rank() + ": cannot write '" + path +
                       "': tracing is not implemented on the CUDA executor");
}

} // namespace

StatusOr<std::unique_ptr<Executor>> createCudaExecutor(caf::actor_system &system,
                                                       const plan::Plan *plan, CommGroups *comms,
                                                       const ExecutorOptions &options) {
  if (!plan)
    return Status::error("Executor::create: no plan");
  auto exec = std::make_unique<CudaExecutor>(system, plan, comms, options);
  if (Status s = exec->init(); !s)
    return s;
  return std::unique_ptr<Executor>(std::move(exec));
}

} // namespace sbpflow
