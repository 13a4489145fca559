// The executor, one for every device: a plan's tasks become kernels (the op
// registry, kernels/Registry.h) on the register protocol of
// actors/TaskGraph.h. Compute tasks run on their actors' threads (on a GPU
// they enqueue on the compute stream, one at a time, in the order the
// protocol fires them, which is a valid order); collectives run in plan
// order on the comm thread (on a GPU enqueued on their NCCL stream, with
// events where a tensor crosses between streams). Everything a step touches
// (variables, every program's arena, every kernel's scratch) has its place in
// one allocation laid out at create: kernels are built twice, first to
// measure, then over the device's memory, and a step allocates nothing.
#include "actors/Executor.h"

#include "actors/Messages.h"
#include "actors/ProgramLayout.h"
#include "actors/TaskGraph.h"
#include "actors/TaskTrace.h"
#include "actors/Variables.h"
#include "kernels/Registry.h"
#include "kernels/cpu/Kernels.h"
#include "runtime/Shape.h"
#include "runtime/comm/CommGroups.h"
#include "runtime/data/DataSource.h"
#include "runtime/device/CollectiveQueue.h"
#include "runtime/device/CpuDevice.h"
#include "runtime/plan/PlanLoader.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Loss.h"
#include "runtime/device/CudaDevice.h"
#endif

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

namespace sbpflow {
namespace {

// How many steps the coordinator may run ahead of the caller's onStep (the
// rows of a program's metric ring); the caller acknowledges every half.
constexpr int64_t kStepWindow = 16;

// One program's task actors and what its steps hand to the caller.
struct Program {
  std::string name;
  std::shared_ptr<TaskGraph> graph;
  // Per task: what the comm thread runs for a collective (empty otherwise).
  // Built once, so that handing a collective off allocates nothing.
  std::vector<std::function<void()>> collectiveWork;
  int collectives = 0;
  // Program.outputs: name -> the tensor as this rank sees it.
  std::vector<std::pair<std::string, TensorView>> outputs;
  // What the host reads after every step: the metrics (f32, zero where this
  // rank holds no shard), then the kernels' error flags.
  std::vector<Fetch> fetches;
  std::vector<float> metricValues;
  // Device int64s kernels set to their first bad row (kernels/Registry.h
  // OpArgs::errorFlag), how each is worded, and their values after a step.
  std::vector<const int64_t *> flags;
  std::vector<std::function<std::string(int64_t)>> flagErrors;
  std::vector<int64_t> flagValues;
  // kStepWindow rows of metrics: step s of a run starting at `runFirst`
  // writes row (s - runFirst) % kStepWindow on the coordinator, the caller
  // reads it.
  std::vector<double> metricRing;
  int64_t runFirst = 0;
  // Where its collectives run and what its kernels read of the step: the
  // executor's, or the background program's own (plan.fbs ScheduleStep
  // Start: it runs while other programs do).
  CollectiveQueue *queue = nullptr;
  StepContext *context = nullptr;
  caf::actor coordinator;
  std::unique_ptr<ProgramTrace> trace; // null: tracing is off
};

// Runs a task's work and, while the trace has room, records when it ran in
// the running step's row (on the thread that ran it).
template <typename Work> Status traced(ProgramTrace *trace, int task, const Work &work) {
  const int64_t row = trace->row();
  if (row < 0)
    return work();
  const int64_t begin = traceNowNs();
  Status s = work();
  trace->recordTask(row, task, begin, traceNowNs());
  return s;
}

class ActorExecutor final : public Executor {
public:
  ActorExecutor(caf::actor_system &system, const plan::Plan *plan, CommGroups *comms,
                const ExecutorOptions &options)
      : system_(system), plan_(plan), comms_(comms), options_(options) {}

  ~ActorExecutor() override {
    // Queued collectives point at variables, the step context and the task
    // graphs: stop every actor and the comm thread, then let the device
    // finish what was enqueued before its memory goes.
    std::vector<caf::actor> all;
    for (auto &p : programs_) {
      all.push_back(p->coordinator);
      for (auto &a : p->graph->actors)
        all.push_back(a);
    }
    if (background_.thread.joinable()) {
      if (background_.running) {
        background_.collectives->abandon();
        (void)join();
      }
      {
        std::lock_guard<std::mutex> lock(background_.mutex);
        background_.stopping = true;
      }
      background_.wake.notify_all();
      background_.thread.join();
    }
    stopActors(system_, all);
    collectives_.abandon();
    collectives_.waitIdle();
    if (device_)
      (void)device_->synchronize();
    programs_.clear();
  }

  Status init();

  Status run(const std::string &program, DataSource *data, int64_t epoch, int64_t firstBatch,
             int64_t count, const StepCallback &onStep) override;
  Status start(const std::string &program, DataSource *data, int64_t epoch, int64_t batch) override;
  Status join() override;
  StatusOr<std::vector<checkpoint::ShardRecord>>
  writeCheckpointShards(const std::string &dir, uint64_t generation) const override;
  Status publishCheckpoint(const std::string &dir, uint64_t generation,
                           const std::vector<checkpoint::ShardRecord> &records,
                           const checkpoint::DataPosition &next) const override {
    return publishVariableCheckpoint(*plan_, options_.globalRank, dir, generation, records, next);
  }
  Status loadCheckpoint(const std::string &dir, checkpoint::DataPosition *next) override;
  Status readOutput(const std::string &program, const std::string &name,
                    std::vector<float> &values) const override {
    return readOutputAs(program, name, plan::DType::F32, values);
  }
  Status readOutput(const std::string &program, const std::string &name,
                    std::vector<int32_t> &values) const override {
    return readOutputAs(program, name, plan::DType::I32, values);
  }
  Status writeTrace(const std::string &path) const override;
  uint64_t sentBytes() const override { return comms_ ? comms_->sentBytes() : 0; }
  StatusOr<int> gatherOverReplicas(const int32_t *values, int count, int32_t *all) override;
  StatusOr<bool> anyInReplica(bool flag) override;

private:
  std::string rank() const { return "rank " + std::to_string(options_.globalRank); }
  // This rank's CPU communicator on hierarchy dimension `dim` of the plan's
  // replicated placement (null for a group of one); `what` words errors.
  StatusOr<Communicator *> replicaGroup(int dim, const char *what) const;
  bool onGpu() const { return options_.cudaDevice >= 0; }
  std::string where(const plan::Task &task) const {
    std::string at = rank() + ": task '" + task.name()->str() + "' (" + opName(task.op()) + ")";
    return onGpu() ? at + " on GPU " + std::to_string(options_.cudaDevice) : at;
  }
  // A device address from an offset in the layout. While measuring (before
  // the device exists) a stand-in that is never dereferenced and never null.
  uint8_t *at(size_t offset) const {
    if (!device_)
      return reinterpret_cast<uint8_t *>(static_cast<uintptr_t>(offset) + DeviceLayout::kAlign);
    return device_->at(offset);
  }
  // Per-kernel scratch: reserved while measuring, handed out in the same
  // order when building for real.
  void *scratch(size_t bytes) {
    if (!device_) {
      scratchOffsets_.push_back(layout_.reserve(std::max<size_t>(bytes, 1)));
      return at(scratchOffsets_.back());
    }
    return at(scratchOffsets_[scratchCursor_++]);
  }
  Status openDevice();
  Status buildProgram(const plan::Program &prog, size_t arenaOffset);
  StatusOr<Kernel> buildKernel(const plan::Task &task, const std::vector<TensorView> &views,
                               Program &program);
  Status copyVariablesToDevice();
  Status copyVariablesToHost() const;
  // Once a run ended or stopped, when no task runs a kernel any more but
  // handed-off work (a queued collective, enqueued device work) may: returns
  // once none does, so that the caller may read variables.
  void drain() {
    collectives_.abandon();
    collectives_.waitIdle();
    if (device_)
      (void)device_->synchronize();
  }
  Program *findProgram(const std::string &name) const {
    for (const auto &p : programs_)
      if (p->name == name)
        return p.get();
    return nullptr;
  }
  Status noProgram(const std::string &name) const {
    return Status::error(rank() + ": plan has no program '" + name + "'");
  }
  template <class T>
  Status readOutputAs(const std::string &program, const std::string &name, plan::DType dtype,
                      std::vector<T> &values) const;

  caf::actor_system &system_;
  const plan::Plan *plan_;
  CommGroups *comms_;
  ExecutorOptions options_;
  CollectiveQueue collectives_;       // the ordered comm thread
  std::vector<int64_t> gatherCounts_; // gatherOverReplicas' per-rank counts
  std::vector<std::unique_ptr<Program>> programs_;
  StepContext step_;
  std::atomic<int64_t> runs_{0};
  Status broken_;
  // The schedule's background program (plan.fbs ScheduleStep Start): its
  // comm thread, step context and the thread that runs it, started once
  // with the executor (a round starts nothing new); its status reaches
  // broken_ when joined.
  struct Background {
    std::string program; // empty: the plan starts none
    Program *prog = nullptr;
    std::unique_ptr<CollectiveQueue> collectives;
    StepContext step;
    std::thread thread;
    std::mutex mutex;
    std::condition_variable wake, done;
    // A run asked for (start) and not finished; its arguments. `running`
    // (start to join) is the caller's alone.
    bool pending = false, stopping = false, running = false;
    DataSource *data = nullptr;
    int64_t epoch = 0, batch = 0;
    Status status;
  } background_;
  void backgroundLoop();
  Status runProgram(Program &prog, DataSource *data, int64_t epoch, int64_t firstBatch,
                    int64_t count, const StepCallback &onStep);
  Status backgroundRunning(const std::string &what) const {
    if (!background_.running)
      return Status::ok();
    return Status::error(rank() + ": cannot " + what + " while background program '" +
                         background_.program + "' runs (join it first)");
  }

  std::unique_ptr<Device> device_; // null while measuring
  std::unique_ptr<CudaResources> cuda_;
  DeviceLayout layout_;
  std::vector<size_t> scratchOffsets_;
  size_t scratchCursor_ = 0;
  size_t partialsOffset_ = 0;
  // The variables on the host: on a host-visible device the variables
  // themselves; elsewhere their initial values, checkpoint staging and, for
  // step counters (hostCounter_), the values themselves.
  mutable std::vector<VariableShard> host_;
  std::vector<size_t> varOffset_;
  mutable std::vector<bool> hostCounter_;
  std::vector<TensorView> variables_; // as the kernels see them
  std::vector<Stream> commStreams_;   // distinct streams the collectives use
  // On a GPU compute tasks fire on several CAF threads: one enqueues at a
  // time, so that a stream wait and the kernels after it stay together and
  // cuBLASLt's per-shape plan cache (not thread-safe) sees one thread.
  std::mutex enqueue_;
};

// The (placement, hierarchy dimension) groups whose communicators the
// collectives of `prog` use.
std::set<std::pair<int, int>> commGroupsOf(const plan::Program &prog) {
  std::set<std::pair<int, int>> groups;
  for (const plan::Task *task : *prog.tasks())
    if (isCollective(task->op()) && task->inputs() && task->inputs()->size() > 0)
      if (const plan::CollectiveAttrs *c = task->attrs_as_CollectiveAttrs())
        groups.insert(
            {prog.tensors()->Get(task->inputs()->Get(0))->placement(), c->hierarchy_dim()});
  return groups;
}

// The background program `name` runs on a comm thread of its own while other
// programs run, so no other program may use its communicators (their calls
// would interleave in different orders on different ranks). GPU ranks would
// share the communication stream: refused until it has one of its own.
Status checkBackgroundProgram(const plan::Plan &plan, const std::string &name, bool onGpu) {
  const plan::Schedule *schedule = plan.schedule();
  if (onGpu)
    return Status::error("schedule '" + schedule->algorithm()->str() + "' starts program '" + name +
                         "' in the background, which GPU ranks do not run yet (it would share "
                         "the communication stream)");
  std::set<std::pair<int, int>> mine, others;
  for (const plan::Program *prog : *plan.programs())
    for (const auto &g : commGroupsOf(*prog))
      (prog->name()->str() == name ? mine : others).insert(g);
  for (const auto &g : mine)
    if (others.count(g))
      return Status::error("schedule '" + schedule->algorithm()->str() + "': background program '" +
                           name + "' shares the communicators of hierarchy dimension " +
                           std::to_string(g.second) + " of placement " + std::to_string(g.first) +
                           " with another program");
  return Status::ok();
}

Status ActorExecutor::init() {
  cpu::setBlasThreads(options_.kernelThreads);
  background_.program = backgroundProgram(*plan_);
  if (!background_.program.empty()) {
    if (Status s = checkBackgroundProgram(*plan_, background_.program, onGpu()); !s)
      return s.withContext(rank());
    if (caf::get_or(system_.config().content, "scheduler.policy", caf::atom("stealing")) !=
        caf::atom("sharing"))
      return Status::error(rank() + ": the plan starts program '" + background_.program +
                           "' in the background, but the actor system was configured for one "
                           "program at a time (configureExecutorSystem: concurrentPrograms)");
    background_.collectives = std::make_unique<CollectiveQueue>();
  }
  const size_t variableCount = plan_->variables()->size();
  host_ = initVariableShards(*plan_, options_.globalRank);
  varOffset_.assign(variableCount, 0);
  hostCounter_.assign(variableCount, false);
  if (onGpu()) {
    for (size_t v = 0; v < variableCount; ++v)
      if (host_[v].local)
        varOffset_[v] = layout_.reserve(host_[v].bytes.size());
#ifdef SBPFLOW_HAVE_CUDA
    partialsOffset_ = layout_.reserve(cuda::kReducePartials * sizeof(double));
#endif
  }
  std::vector<size_t> arenas;
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    arenas.push_back(
        layout_.reserve(static_cast<size_t>(plan_->programs()->Get(p)->arena_bytes())));
  // Pass 1: check every task and reserve its scratch, before touching the
  // device.
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    if (Status s = buildProgram(*plan_->programs()->Get(p), arenas[p]); !s)
      return s;
  programs_.clear();
  commStreams_.clear();
  if (Status s = openDevice(); !s)
    return s;
  // Pass 2: the same build over the device's memory.
  scratchCursor_ = 0;
  std::fill(hostCounter_.begin(), hostCounter_.end(), false);
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    if (Status s = buildProgram(*plan_->programs()->Get(p), arenas[p]); !s)
      return s;
  if (Status st = device_->synchronize(); !st)
    return st.withContext(rank());
  if (!background_.program.empty()) {
    background_.prog = findProgram(background_.program);
    background_.thread = std::thread([this] { backgroundLoop(); });
  }
  return Status::ok();
}

Status ActorExecutor::openDevice() {
  if (!onGpu()) {
    auto cpu = CpuDevice::open(layout_.total());
    if (!cpu)
      return cpu.status().withContext(rank());
    device_ = cpu.take();
    return Status::ok();
  }
#ifdef SBPFLOW_HAVE_CUDA
  auto gpu = CudaDevice::open(options_.cudaDevice, layout_.total());
  if (!gpu)
    return gpu.status().withContext(rank());
  device_ = gpu.take();
  auto blas = cuda::Blas::create();
  if (!blas)
    return blas.status().withContext(rank() + ": GPU " + std::to_string(options_.cudaDevice));
  cuda_ = std::make_unique<CudaResources>(
      CudaResources{std::move(*blas), reinterpret_cast<double *>(at(partialsOffset_))});
  return copyVariablesToDevice();
#else
  return Status::error(rank() + ": CUDA device " + std::to_string(options_.cudaDevice) +
                       " requested, but this build has no CUDA backend (configure with the "
                       "CUDA toolkit installed)");
#endif
}

Status ActorExecutor::copyVariablesToDevice() {
  if (device_->hostVisible())
    return Status::ok();
  for (size_t v = 0; v < host_.size(); ++v)
    if (host_[v].local && !host_[v].bytes.empty())
      if (Status s = device_->upload(at(varOffset_[v]), host_[v].data(), host_[v].bytes.size(),
                                     device_->computeStream());
          !s)
        return s.withContext(rank() + ": variable '" + plan_->variables()->Get(v)->name()->str() +
                             "'");
  return device_->synchronize().withContext(rank());
}

Status ActorExecutor::copyVariablesToHost() const {
  if (Status s = device_->synchronize(); !s)
    return s.withContext(rank());
  if (device_->hostVisible())
    return Status::ok();
  for (size_t v = 0; v < host_.size(); ++v) {
    if (!host_[v].local || host_[v].bytes.empty())
      continue;
    const size_t bytes = host_[v].bytes.size();
    // A step counter lives on the host: refresh its device copy instead.
    Status s = hostCounter_[v]
                   ? device_->upload(device_->at(varOffset_[v]), host_[v].data(), bytes,
                                     device_->computeStream())
                   : device_->download(host_[v].data(), device_->at(varOffset_[v]), bytes);
    if (!s)
      return s.withContext(rank() + ": variable '" + plan_->variables()->Get(v)->name()->str() +
                           "'");
  }
  return device_->synchronize().withContext(rank());
}

Status ActorExecutor::buildProgram(const plan::Program &prog, size_t arenaOffset) {
  auto rt = std::make_unique<Program>();
  rt->name = prog.name()->str();
  const bool background = rt->name == background_.program;
  rt->queue = background ? background_.collectives.get() : &collectives_;
  rt->context = background ? &background_.step : &step_;
  uint8_t *arena = at(arenaOffset);
  // Variables in the device's memory: on a host-visible device the host
  // shards themselves.
  auto variableData = [&](int v) -> void * {
    if (!host_[v].local)
      return nullptr;
    return onGpu() ? static_cast<void *>(at(varOffset_[v])) : host_[v].data();
  };
  variables_ = variableViews(*plan_, options_.globalRank, variableData);
  std::vector<TensorView> views =
      programViews(*plan_, prog, options_.globalRank, [&](const plan::Tensor &t) -> void * {
        if (t.variable() >= 0)
          return variableData(t.variable());
        return arena + t.offset();
      });

  const size_t taskCount = prog.tasks()->size();
  // The stream each collective runs on (null on the CPU): the hazards
  // between compute and collective streams, fixed here.
  std::vector<Stream> readByComm(views.size(), nullptr), writtenByComm(views.size(), nullptr);
  std::vector<Stream> taskStream(taskCount, nullptr);
  std::vector<Stream> variableReadByComm(host_.size(), nullptr);
  std::vector<Communicator *> taskComm(taskCount, nullptr);
  std::vector<bool> talks(taskCount, false);
  for (size_t k = 0; k < taskCount; ++k) {
    const plan::Task *task = prog.tasks()->Get(k);
    if (!callsCommunicator(*task, views))
      continue;
    auto comm = groupCommunicator(*plan_, comms_, views[task->inputs()->Get(0)],
                                  task->attrs_as_CollectiveAttrs()->hierarchy_dim(), where(*task));
    if (!comm)
      return comm.status();
    talks[k] = true;
    taskComm[k] = *comm;
    Stream s = (*comm)->deviceStream();
    if (onGpu() && !s)
      return Status::error(
          where(*task) + ": the communicator for placement '" +
          plan_->placements()->Get(views[task->inputs()->Get(0)].placement)->name()->str() +
          "' is not a device communicator (a GPU executor needs NCCL)");
    taskStream[k] = s;
    if (s && std::find(commStreams_.begin(), commStreams_.end(), s) == commStreams_.end())
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
  if (options_.traceSteps > 0) {
    std::vector<TracedTask> tracedTasks(taskCount);
    for (size_t k = 0; k < taskCount; ++k) {
      tracedTasks[k].name = prog.tasks()->Get(k)->name()->str();
      tracedTasks[k].op = opName(prog.tasks()->Get(k)->op());
    }
    rt->trace =
        std::make_unique<ProgramTrace>(rt->name, std::move(tracedTasks), options_.traceSteps);
  }
  ProgramTrace *trace = rt->trace.get();
  rt->collectiveWork.resize(taskCount);
  std::vector<std::pair<int, int>> collectives; // (collective_seq, task)
  for (size_t k = 0; k < taskCount; ++k) {
    const plan::Task *task = prog.tasks()->Get(k);
    const int index = static_cast<int>(k);
    auto built = buildKernel(*task, views, *rt);
    if (!built)
      return built.status();
    Kernel kernel = built.take();
    if (!kernel) {
      // Nothing to do on this rank: the task only passes registers on. A
      // trace still shows that it fired.
      if (trace)
        graph->tasks[k].run = [trace, index] {
          return traced(trace, index, [] { return Status::ok(); });
        };
      continue;
    }
    Stream mine = taskStream[k];
    // Streams this task's work must wait for: a compute task reading a
    // collective's output waits for its stream; so does one writing a
    // collective's input (the collective may not have read it yet when the
    // register comes back: conservative, and cheap). A collective waits for
    // compute (its input's producer, and its output's last readers) and for
    // another collective stream that produced its input.
    std::vector<Stream> waits;
    auto addWait = [&](Stream s) {
      if (s && s != mine && std::find(waits.begin(), waits.end(), s) == waits.end())
        waits.push_back(s);
    };
    for (size_t i = 0; task->inputs() && i < task->inputs()->size(); ++i)
      addWait(writtenByComm[task->inputs()->Get(i)]);
    if (!talks[k])
      for (size_t o = 0; task->outputs() && o < task->outputs()->size(); ++o)
        addWait(readByComm[task->outputs()->Get(o)]);
    // An optimiser writes its parameter, which is no output tensor; a
    // collective may read it (a parameter gathered for the forward pass).
    if (int v = updatedVariable(*task); v >= 0 && v < static_cast<int>(host_.size()))
      addWait(variableReadByComm[v]);
    if (!device_)
      continue; // measured: the kernels built in this pass are dropped
    const StepContext *ctx = rt->context;
    Device *dev = device_.get();
    if (!talks[k]) {
      Kernel work = std::move(kernel);
      if (!waits.empty())
        work = [kernel = std::move(work), waits, dev](const StepContext &c) -> Status {
          for (Stream s : waits)
            if (Status st = dev->order(s, dev->computeStream()); !st)
              return st;
          return kernel(c);
        };
      if (onGpu()) {
        // CAF's threads serve several executors: select the GPU, and
        // enqueue one task at a time.
        std::mutex *lock = &enqueue_;
        const int gpu = options_.cudaDevice;
        work = [work = std::move(work), lock, gpu](const StepContext &c) {
          std::lock_guard<std::mutex> guard(*lock);
#ifdef SBPFLOW_HAVE_CUDA
          cudaSetDevice(gpu);
#endif
          return work(c);
        };
      }
      // Without a trace the task's work is the kernel alone: tracing costs
      // nothing when off.
      if (trace)
        graph->tasks[k].run = [work = std::move(work), ctx, trace, index] {
          return traced(trace, index, [&] { return work(*ctx); });
        };
      else
        graph->tasks[k].run = [work = std::move(work), ctx] { return work(*ctx); };
      continue;
    }
    // Issued in plan order from the comm thread, so that every rank calls
    // its collectives in the same order (Gloo blocks there; NCCL work only
    // enqueues, so the task is done for the protocol once it is enqueued).
    // The executor stops the task actors and drains the thread before it
    // frees what this refers to.
    TaskGraph *g = graph.get();
    const std::string at = where(*task);
    Kernel work = [kernel = std::move(kernel), waits, dev, mine, gpu = options_.cudaDevice,
                   at](const StepContext &c) -> Status {
#ifdef SBPFLOW_HAVE_CUDA
      if (gpu >= 0)
        cudaSetDevice(gpu);
#endif
      Status s = dev->order(dev->computeStream(), mine);
      for (Stream w : waits)
        if (s)
          s = dev->order(w, mine);
      if (s)
        s = kernel(c);
      return s ? s : s.withContext(at);
    };
    if (trace) {
      trace->setLane(index, TraceLane::Comm);
      rt->collectiveWork[k] = [work = std::move(work), ctx, g, trace, index] {
        reportCollective(g, index, traced(trace, index, [&] { return work(*ctx); }));
      };
    } else {
      rt->collectiveWork[k] = [work = std::move(work), ctx, g, index] {
        reportCollective(g, index, work(*ctx));
      };
    }
    collectives.emplace_back(task->collective_seq(), index);
  }
  if (!device_)
    return Status::ok(); // checked and measured

  const std::vector<int> order = collectiveOrder(std::move(collectives));
  rt->collectives = static_cast<int>(order.size());
  for (int seq = 0; seq < rt->collectives; ++seq) {
    const int k = order[seq];
    CollectiveQueue *queue = rt->queue;
    const std::function<void()> *work = &rt->collectiveWork[k];
    if (trace)
      graph->tasks[k].handOff = [queue, seq, work, trace, k] {
        if (const int64_t row = trace->row(); row >= 0)
          trace->recordHandOff(row, k, traceNowNs());
        queue->submit(seq, work);
      };
    else
      graph->tasks[k].handOff = [queue, seq, work] { queue->submit(seq, work); };
  }
  std::vector<const float *> metrics;
  if (Status s = bindMetricsAndOutputs(prog, views, metrics, rt->outputs); !s)
    return s;
  rt->metricValues.assign(metrics.size(), 0.0f);
  rt->flagValues.assign(rt->flags.size(), -1);
  for (size_t m = 0; m < metrics.size(); ++m)
    if (metrics[m])
      rt->fetches.push_back({metrics[m], &rt->metricValues[m], sizeof(float)});
  for (size_t c = 0; c < rt->flags.size(); ++c)
    rt->fetches.push_back({rt->flags[c], &rt->flagValues[c], sizeof(int64_t)});
  if (Status s = device_->reserveFetch(rt->fetches.size() * sizeof(int64_t)); !s)
    return s.withContext(rank());
  rt->metricRing.resize(static_cast<size_t>(kStepWindow) * metrics.size());

  // The hooks run on the coordinator, between the steps' task firings: the
  // batch is set before a step's first task may fire; once every task of the
  // step has finished (on a GPU: has been enqueued) the device is waited for
  // once, the metrics and error flags read, and a fault fails the step.
  StepHooks hooks;
  hooks.begin = [ctx = rt->context, trace](int64_t step) {
    ctx->batch = step;
    if (trace)
      trace->beginStep(ctx->epoch, step);
  };
  hooks.check = [this, p = rt.get()](int64_t step) -> Status {
    Status s = device_->fetch(commStreams_, p->fetches);
    for (size_t c = 0; s && c < p->flagValues.size(); ++c)
      if (p->flagValues[c] >= 0)
        return Status::error(p->flagErrors[c](p->flagValues[c]));
    if (!s)
      return Status::error(rank() + ": " + device_->name() + ", program '" + p->name + "' step " +
                           std::to_string(step) + ": " + s.message());
    return Status::ok();
  };
  hooks.end = [p = rt.get(), trace](int64_t step) {
    if (trace)
      trace->endStep();
    const size_t n = p->metricValues.size();
    double *row = p->metricRing.data() + ((step - p->runFirst) % kStepWindow) * n;
    for (size_t m = 0; m < n; ++m)
      row[m] = p->metricValues[m];
  };
  rt->graph = graph;
  rt->coordinator = spawnStepCoordinator(system_, graph, std::move(hooks));
  spawnTaskActors(system_, graph, rt->coordinator);
  programs_.push_back(std::move(rt));
  return Status::ok();
}

StatusOr<Kernel> ActorExecutor::buildKernel(const plan::Task &task,
                                            const std::vector<TensorView> &views,
                                            Program &program) {
  OpArgs a(*plan_, task, where(task));
  taskOperands(task, views, a.in, a.out);
  auto here = runsOnRank(task, a.in, a.out, variables_, a.at);
  if (!here)
    return here.status();
  if (!*here)
    return Kernel();
  const OpEntry &entry = opEntry(task.op());
  const KernelBuilder build = onGpu() ? entry.cuda : entry.cpu;
  if (!build)
    return Status::error(a.at + ": op has no " + (onGpu() ? "CUDA" : "CPU") + " kernel");
  a.device = device_.get();
  a.comm = nullptr;
  a.stream = device_ ? device_->computeStream() : nullptr;
  if (callsCommunicator(task, views)) {
    auto comm = groupCommunicator(*plan_, comms_, *a.in[0],
                                  task.attrs_as_CollectiveAttrs()->hierarchy_dim(), a.at);
    if (!comm)
      return comm.status();
    a.comm = *comm;
    a.stream = a.comm->deviceStream();
  }
  a.variables = &variables_;
  a.hostVariable = [this](int v) -> void * {
    if (onGpu())
      hostCounter_[v] = true;
    return host_[v].data();
  };
  a.scratch = [this](size_t bytes) { return scratch(bytes); };
  a.errorFlag = [this, &program](std::function<std::string(int64_t)> describe) {
    auto *flag = static_cast<int64_t *>(scratch(sizeof(int64_t)));
    program.flags.push_back(flag);
    program.flagErrors.push_back(std::move(describe));
    return flag;
  };
  a.cuda = cuda_.get();
  return build(a);
}

Status ActorExecutor::run(const std::string &program, DataSource *data, int64_t epoch,
                          int64_t firstBatch, int64_t count, const StepCallback &onStep) {
  if (!broken_)
    return Status::error(rank() + ": executor stopped by an earlier error: " + broken_.message());
  Program *prog = findProgram(program);
  if (!prog)
    return noProgram(program);
  if (program == background_.program)
    if (Status s = backgroundRunning("run it again"); !s)
      return s;
  if (Status s = runProgram(*prog, data, epoch, firstBatch, count, onStep); !s) {
    drain();
    broken_ = s;
  }
  return broken_;
}

// One run of `prog` on its own queue and step context; the caller drains
// on an error.
Status ActorExecutor::runProgram(Program &prog, DataSource *data, int64_t epoch, int64_t firstBatch,
                                 int64_t count, const StepCallback &onStep) {
  if (count <= 0)
    return Status::ok();
  prog.queue->reset(prog.collectives);
  // Read by the coordinator and the kernels after RunSteps, which orders
  // these writes before them.
  prog.context->data = data;
  prog.context->epoch = epoch;
  prog.runFirst = firstBatch;
  // Only a foreground run has a callback that may throw.
  std::string error =
      awaitSteps(system_, prog.coordinator, RunSteps{++runs_, firstBatch, count, kStepWindow},
                 prog.metricRing, prog.metricValues.size(), onStep, [&] {
                   drain();
                   broken_ = Status::error(rank() + ": a step callback threw");
                 });
  return error.empty() ? Status::ok() : Status::error(error);
}

// The background thread: one step of the background program per start.
void ActorExecutor::backgroundLoop() {
  Background &bg = background_;
  std::unique_lock<std::mutex> lock(bg.mutex);
  while (true) {
    bg.wake.wait(lock, [&] { return bg.pending || bg.stopping; });
    if (bg.stopping)
      return;
    lock.unlock();
    Status s = runProgram(*bg.prog, bg.data, bg.epoch, bg.batch, 1, nullptr);
    if (!s) {
      bg.collectives->abandon();
      bg.collectives->waitIdle();
    }
    lock.lock();
    bg.status = std::move(s);
    bg.pending = false;
    bg.done.notify_all();
  }
}

Status ActorExecutor::start(const std::string &program, DataSource *data, int64_t epoch,
                            int64_t batch) {
  if (!broken_)
    return Status::error(rank() + ": executor stopped by an earlier error: " + broken_.message());
  if (program != background_.program)
    return Status::error(rank() + ": program '" + program +
                         "' is not the plan's background program" +
                         (background_.program.empty() ? "" : " ('" + background_.program + "')"));
  if (Status s = backgroundRunning("start it again"); !s)
    return s;
  {
    std::lock_guard<std::mutex> lock(background_.mutex);
    background_.data = data;
    background_.epoch = epoch;
    background_.batch = batch;
    background_.pending = true;
  }
  background_.running = true;
  background_.wake.notify_one();
  return Status::ok();
}

Status ActorExecutor::join() {
  if (!background_.running)
    return broken_;
  {
    std::unique_lock<std::mutex> lock(background_.mutex);
    background_.done.wait(lock, [&] { return !background_.pending; });
  }
  background_.running = false;
  if (!background_.status && broken_) {
    drain();
    broken_ = background_.status;
  }
  return broken_;
}

StatusOr<std::vector<checkpoint::ShardRecord>>
ActorExecutor::writeCheckpointShards(const std::string &dir, uint64_t generation) const {
  if (Status s = backgroundRunning("write a checkpoint"); !s)
    return s;
  if (Status s = copyVariablesToHost(); !s)
    return s;
  return writeVariableShards(*plan_, options_.globalRank, host_, dir, generation);
}

Status ActorExecutor::loadCheckpoint(const std::string &dir, checkpoint::DataPosition *next) {
  if (Status s = backgroundRunning("load a checkpoint"); !s)
    return s;
  if (Status s = device_->synchronize(); !s)
    return s.withContext(rank());
  if (Status s = loadVariableShards(*plan_, options_.globalRank, host_, dir, next); !s)
    return s;
  return copyVariablesToDevice();
}

template <class T>
Status ActorExecutor::readOutputAs(const std::string &program, const std::string &name,
                                   plan::DType dtype, std::vector<T> &values) const {
  const Program *prog = findProgram(program);
  if (!prog)
    return noProgram(program);
  for (const auto &[outputName, view] : prog->outputs) {
    if (outputName != name)
      continue;
    if (!view.data)
      return Status::error(rank() + ": holds no part of output '" + name + "' of '" + program +
                           "'");
    if (view.dtype != dtype)
      return Status::error(rank() + ": output '" + name + "' is not an " +
                           (dtype == plan::DType::I32 ? "i32" : "f32") + " tensor");
    values.resize(static_cast<size_t>(elementCount(view.local)));
    if (Status s = device_->synchronize(); !s)
      return s.withContext(rank());
    return device_->download(values.data(), view.data, values.size() * sizeof(T))
        .withContext(rank() + ": reading output '" + name + "'");
  }
  return Status::error(rank() + ": program '" + program + "' has no output '" + name + "'");
}

StatusOr<Communicator *> ActorExecutor::replicaGroup(int dim, const char *what) const {
  const plan::Variable *replicated = firstReplicated(*plan_);
  if (!replicated)
    return Status::error(rank() + ": the plan has no per-replica variable to " + what + " over");
  Communicator *comm =
      comms_ ? comms_->get(static_cast<int>(replicated->placement()), dim) : nullptr;
  if (comm && (onGpu() || comm->deviceStream()))
    return Status::error(rank() + ": timed rounds " + what +
                         " on CPU ranks; this rank's group is a device communicator");
  return comm;
}

StatusOr<int> ActorExecutor::gatherOverReplicas(const int32_t *values, int count, int32_t *all) {
  const plan::Variable *replicated = firstReplicated(*plan_);
  auto comm = replicaGroup(replicated ? replicated->replica_dim() : 0, "gather step counts");
  if (!comm)
    return comm.status();
  if (!*comm) {
    std::copy(values, values + count, all);
    return 0;
  }
  gatherCounts_.assign(static_cast<size_t>((*comm)->size()), count);
  if (Status s = (*comm)->allGather(values, all, gatherCounts_.data(), plan::DType::I32); !s)
    return s.withContext(rank() + ": gathering the replicas' step counts");
  return (*comm)->rank();
}

StatusOr<bool> ActorExecutor::anyInReplica(bool flag) {
  const plan::Variable *replicated = firstReplicated(*plan_);
  if (!replicated)
    return Status::error(rank() + ": the plan has no per-replica variable to agree within");
  const auto dims =
      static_cast<int>(plan_->placements()->Get(replicated->placement())->hierarchy()->size());
  int32_t any = flag ? 1 : 0;
  for (int d = 0; d < dims; ++d) {
    if (d == replicated->replica_dim())
      continue;
    auto comm = replicaGroup(d, "agree within a replica");
    if (!comm)
      return comm.status();
    if (!*comm)
      continue;
    if (Status s = (*comm)->allReduce(&any, 1, plan::DType::I32, ReduceOp::Max); !s)
      return s.withContext(rank() + ": agreeing on the end of a timed round");
  }
  return any != 0;
}

Status ActorExecutor::writeTrace(const std::string &path) const {
  if (options_.traceSteps <= 0)
    return Status::error(rank() + ": no trace to write to '" + path +
                         "': the executor was created with tracing off");
  std::vector<const ProgramTrace *> traces;
  for (const auto &p : programs_)
    traces.push_back(p->trace.get());
  return writeChromeTrace(path, options_.globalRank, traces).withContext(rank());
}

} // namespace

std::string backgroundProgram(const plan::Plan &plan) {
  if (const plan::Schedule *schedule = plan.schedule())
    for (const plan::ScheduleStep *step : *schedule->round())
      if (step->action() == plan::ScheduleAction::Start)
        return step->program()->str();
  return "";
}

std::vector<int64_t> shareRound(int64_t remaining, const std::vector<int32_t> &counts) {
  const auto R = static_cast<int64_t>(counts.size());
  int64_t total = 0;
  for (int32_t c : counts)
    total += std::max<int32_t>(c, 0);
  // Each replica's exact share is remaining * c / total (equal shares
  // without counts): its floor, at least one, then the steps still missing
  // by largest remainder, or those in excess taken from the largest quotas.
  std::vector<int64_t> quota(static_cast<size_t>(R)), remainder(static_cast<size_t>(R));
  int64_t given = 0;
  for (int64_t r = 0; r < R; ++r) {
    const int64_t c = total > 0 ? std::max<int32_t>(counts[r], 0) : 1;
    const int64_t share = remaining * c, of = total > 0 ? total : R;
    quota[r] = std::max<int64_t>(1, share / of);
    remainder[r] = share % of;
    given += quota[r];
  }
  std::vector<int64_t> order(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r)
    order[r] = r;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return remainder[a] > remainder[b]; });
  for (int64_t i = 0; given < remaining && R > 0; i = (i + 1) % R, ++given)
    ++quota[order[i]];
  while (given > remaining) {
    const auto largest = std::max_element(quota.begin(), quota.end());
    if (*largest <= 1)
      break;
    --*largest;
    --given;
  }
  return quota;
}

namespace {

// Timed rounds (runScheduled's comment): `step(name, batch)` runs one step.
Status runTimedRounds(Executor &executor, const plan::Plan &plan, const plan::Schedule &schedule,
                      const std::string &program, const std::string &substitute, int64_t epoch,
                      int64_t firstBatch, int64_t count, int64_t batchesPerEpoch,
                      const std::function<Status(const std::string &, int64_t)> &step) {
  using Clock = std::chrono::steady_clock;
  const plan::Variable *replicated = firstReplicated(plan);
  if (!replicated)
    return Status::error("schedule " + schedule.algorithm()->str() +
                         ": timed rounds need a per-replica variable");
  // The replicas, and the ranks of each (tensor parallelism inside it), who
  // agree on each round's end.
  const auto *hierarchy = plan.placements()->Get(replicated->placement())->hierarchy();
  const int64_t R = hierarchy->Get(replicated->replica_dim());
  int64_t perReplica = 1;
  for (int32_t h : *hierarchy)
    perReplica *= h;
  perReplica /= R;
  const auto length = std::chrono::duration<double>(schedule.seconds());
  const int64_t budget = count * R;
  int64_t done = 0;
  // Every replica's (steps this round, next batch), and its steps alone:
  // sized once, not per round.
  std::vector<int32_t> gathered(static_cast<size_t>(2 * R)), counts(static_cast<size_t>(R));
  // This replica's next batch (a resumed job's replicas start at batches
  // of their own); the quotas of a shared-out last round, and this
  // replica's index.
  int64_t position = firstBatch;
  std::vector<int64_t> quota;
  int me = 0;
  // The job's first round has nothing to synchronise; any later one opens
  // with the last round's synchronisation.
  bool synchronise = epoch * batchesPerEpoch + firstBatch > 0 && !substitute.empty();
  while (true) {
    // At most this replica's share of what the budget leaves (so that no
    // round passes it) or its quota, and what the epoch has.
    const int64_t cap =
        std::min(quota.empty() ? (budget - done) / R : quota[me], batchesPerEpoch - position);
    int64_t n = 0;
    const auto began = Clock::now();
    while (n < std::max<int64_t>(cap, 1)) {
      if (Status s = step(n == 0 && synchronise ? substitute : program, position + n); !s)
        return s;
      ++n;
      // A shared-out last round runs its quota whatever the time; a
      // replica of several ranks ends its round when any of them is due.
      if (!quota.empty() || n >= cap)
        continue;
      bool due = Clock::now() - began >= length;
      if (perReplica > 1) {
        auto any = executor.anyInReplica(due);
        if (!any)
          return any.status();
        due = *any;
      }
      if (due)
        break;
    }
    position += n;
    const int32_t mine[2] = {static_cast<int32_t>(n),
                             static_cast<int32_t>(std::min<int64_t>(position, INT32_MAX))};
    auto replica = executor.gatherOverReplicas(mine, 2, gathered.data());
    if (!replica)
      return replica.status();
    me = *replica;
    int64_t total = 0;
    bool ended = false;
    for (int64_t r = 0; r < R; ++r) {
      counts[r] = gathered[2 * r];
      total += counts[r];
      ended = ended || gathered[2 * r + 1] >= batchesPerEpoch;
    }
    done += total;
    synchronise = !substitute.empty() && total >= schedule.min_steps();
    if (!quota.empty() || ended || budget - done < R)
      return Status::ok();
    if (budget - done <= total)
      quota = shareRound(budget - done, counts);
  }
}

} // namespace

Status runScheduled(Executor &executor, const plan::Plan &plan, const std::string &program,
                    DataSource *data, int64_t epoch, int64_t firstBatch, int64_t count,
                    int64_t batchesPerEpoch, const Executor::StepCallback &onStep,
                    std::chrono::microseconds stepDelay) {
  // `n` steps of `name` from `batch`, a straggler's one at a time.
  auto steps = [&](const std::string &name, int64_t batch, int64_t n) -> Status {
    if (stepDelay.count() <= 0)
      return executor.run(name, data, epoch, batch, n, onStep);
    for (int64_t b = batch; b < batch + n; ++b) {
      if (Status s = executor.run(name, data, epoch, b, 1, onStep); !s)
        return s;
      std::this_thread::sleep_for(stepDelay);
    }
    return Status::ok();
  };
  const plan::Schedule *schedule = plan.schedule();
  if (!schedule || program != schedule->inner()->str())
    return steps(program, firstBatch, count);
  if (batchesPerEpoch <= 0)
    return Status::error("schedule " + schedule->algorithm()->str() + ": program '" + program +
                         "' has no batches per epoch");
  const int64_t period = schedule->period();
  // The round's substitute first inner step (EDiT's), if any.
  std::string substitute;
  for (const plan::ScheduleStep *step : *schedule->round())
    if (step->action() == plan::ScheduleAction::Inner)
      substitute = step->program()->str();
  if (schedule->seconds() > 0)
    return runTimedRounds(
        executor, plan, *schedule, program, substitute, epoch, firstBatch, count, batchesPerEpoch,
        [&](const std::string &name, int64_t batch) { return steps(name, batch, 1); });
  const Executor::StepCallback quiet = [](int64_t, const std::vector<double> &) {};
  auto rounds = [&]() -> Status {
    for (int64_t batch = firstBatch, end = firstBatch + count; batch < end;) {
      const int64_t global = epoch * batchesPerEpoch + batch;
      const int64_t toRoundEnd = period - global % period;
      const int64_t n = std::min(toRoundEnd, end - batch);
      // After a round (not before the first), its first step synchronises.
      const bool substituted = !substitute.empty() && global > 0 && global % period == 0;
      if (substituted)
        if (Status s = steps(substitute, batch, 1); !s)
          return s;
      const int64_t rest = n - (substituted ? 1 : 0);
      if (rest > 0)
        if (Status s = steps(program, batch + n - rest, rest); !s)
          return s;
      batch += n;
      if (n < toRoundEnd)
        break;
      for (const plan::ScheduleStep *step : *schedule->round()) {
        Status s;
        switch (step->action()) {
        case plan::ScheduleAction::Run:
          s = executor.run(step->program()->str(), data, epoch, batch - 1, 1, quiet);
          break;
        case plan::ScheduleAction::Start:
          s = executor.start(step->program()->str(), data, epoch, batch - 1);
          break;
        case plan::ScheduleAction::Join:
          s = executor.join();
          break;
        case plan::ScheduleAction::Inner:
          break; // the next round's first step
        }
        if (!s)
          return s;
      }
    }
    return Status::ok();
  };
  Status s = rounds();
  Status joined = executor.join();
  return s ? joined : s;
}

StatusOr<std::unique_ptr<Executor>> Executor::create(caf::actor_system &system,
                                                     const plan::Plan *plan, CommGroups *comms,
                                                     const ExecutorOptions &options) {
  if (!plan)
    return Status::error("Executor::create: no plan");
  if (Status s = checkRankFits(
          *plan, options.globalRank,
          options.cudaDevice >= 0 ? plan::DeviceKind::CUDA : plan::DeviceKind::CPU, -1);
      !s)
    return s.withContext("rank " + std::to_string(options.globalRank));
#ifndef SBPFLOW_HAVE_CUDA
  if (options.cudaDevice >= 0)
    return Status::error("rank " + std::to_string(options.globalRank) + ": CUDA device " +
                         std::to_string(options.cudaDevice) +
                         " requested, but this build has no CUDA backend (configure with the "
                         "CUDA toolkit installed)");
#endif
  auto exec = std::make_unique<ActorExecutor>(system, plan, comms, options);
  if (Status s = exec->init(); !s)
    return s;
  return std::unique_ptr<Executor>(std::move(exec));
}

} // namespace sbpflow
