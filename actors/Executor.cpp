// The CPU executor: plan tasks as kernels on the register protocol of
// actors/TaskGraph.h, compute kernels on the actors' own scheduler threads and
// collectives on the ordered comm thread. Everything a step touches (arena,
// variables, local shapes, packing scratch, metric ring) is allocated at
// create time.
#include "actors/Executor.h"

#include "actors/ActorExecutor.h"
#include "actors/ComputeKernels.h"
#ifdef SBPFLOW_HAVE_CUDA
#include "actors/CudaExecutor.h"
#endif
#include "actors/Messages.h"
#include "actors/ProgramLayout.h"
#include "actors/TaskGraph.h"
#include "actors/TaskTrace.h"
#include "actors/Variables.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "runtime/Shape.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/comm/CommGroups.h"
#include "runtime/data/DataSource.h"
#include "runtime/device/CpuDevice.h"
#include "runtime/plan/PlanLoader.h"

#include <caf/all.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <sys/stat.h>

namespace sbpflow {
namespace {

struct ProgramRuntime : ProgramActors {
  std::vector<uint8_t> arenaStorage;
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

class CpuExecutor : public ActorExecutor<ProgramRuntime> {
public:
  CpuExecutor(caf::actor_system &system, const plan::Plan *plan, CommGroups *comms,
              const ExecutorOptions &options)
      : ActorExecutor(system, plan, comms, options) {}
  ~CpuExecutor() override { stopPrograms(); }

  Status init();
  StatusOr<std::vector<checkpoint::ShardRecord>>
  writeCheckpointShards(const std::string &dir, uint64_t generation) const override;
  Status loadCheckpoint(const std::string &dir, checkpoint::DataPosition *next) override;
  Status writeTrace(const std::string &path) const override;
  Status readOutput(const std::string &program, const std::string &name,
                    std::vector<float> &values) const override;

private:
  // The kernels run inline and collectives on the comm thread, which is
  // all there is to wait for.
  void drain() override {
    collectives_.abandon();
    collectives_.waitIdle();
  }
  std::string where(const plan::Task &task) const {
    return rank() + ": task '" + task.name()->str() + "' (" + opName(task.op()) + ")";
  }
  Status buildProgram(const plan::Program &prog);
  StatusOr<Kernel> buildKernel(const plan::Task &task, const std::vector<TensorView> &views);
  // Optimisers, collectives, Slice and ZeroOthers over f32 tensors.
  StatusOr<Kernel> buildF32Kernel(const plan::Task &task, const Operands &in, const Operands &out,
                                  const std::string &at);

  std::vector<VariableShard> variables_;
};

Status CpuExecutor::init() {
  cpu::setBlasThreads(options_.kernelThreads);
  variables_ = initVariableShards(*plan_, options_.globalRank);
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    if (Status s = buildProgram(*plan_->programs()->Get(p)); !s)
      return s;
  return Status::ok();
}

Status CpuExecutor::buildProgram(const plan::Program &prog) {
  auto rt = std::make_unique<ProgramRuntime>();
  rt->name = prog.name()->str();
  // 64-byte alignment for vectorised kernels; the plan's offsets are relative.
  rt->arenaStorage.resize(static_cast<size_t>(prog.arena_bytes()) + 64);
  uint8_t *arena = rt->arenaStorage.data() +
                   (64 - reinterpret_cast<uintptr_t>(rt->arenaStorage.data()) % 64) % 64;

  std::vector<TensorView> views =
      programViews(*plan_, prog, options_.globalRank, [&](const plan::Tensor &t) -> void * {
        if (t.variable() >= 0)
          return variables_[t.variable()].data();
        return arena + t.offset();
      });

  std::shared_ptr<TaskGraph> graph = taskGraphOf(prog);
  const size_t taskCount = prog.tasks()->size();
  if (options_.traceSteps > 0) {
    std::vector<TracedTask> traced(taskCount);
    for (size_t k = 0; k < taskCount; ++k) {
      traced[k].name = prog.tasks()->Get(k)->name()->str();
      traced[k].op = opName(prog.tasks()->Get(k)->op());
    }
    rt->trace = std::make_unique<ProgramTrace>(rt->name, std::move(traced), options_.traceSteps);
  }
  ProgramTrace *trace = rt->trace.get();
  rt->collectiveWork.resize(taskCount);
  std::vector<std::pair<int, int>> collectives; // (collective_seq, task)
  for (size_t k = 0; k < taskCount; ++k) {
    const plan::Task *task = prog.tasks()->Get(k);
    auto built = buildKernel(*task, views);
    if (!built)
      return built.status();
    Kernel kernel = built.take();
    const int index = static_cast<int>(k);
    if (!kernel) {
      // Nothing to do on this rank: the task only passes registers on. A
      // trace still shows that it fired.
      if (trace)
        graph->tasks[k].run = [trace, index] {
          return traced(trace, index, [] { return Status::ok(); });
        };
      continue;
    }
    const StepContext *ctx = &step_;
    // Without a trace the task's work is the kernel alone: tracing costs
    // nothing when off.
    if (!callsCommunicator(*task, views)) {
      if (trace)
        graph->tasks[k].run = [kernel = std::move(kernel), ctx, trace, index] {
          return traced(trace, index, [&] { return kernel(*ctx); });
        };
      else
        graph->tasks[k].run = [kernel = std::move(kernel), ctx] { return kernel(*ctx); };
      continue;
    }
    // Collectives that talk to peers block in Gloo: they go to the ordered
    // comm thread (the rest are copies and run inline). The executor stops
    // the task actors and drains the thread before it frees what this
    // refers to.
    TaskGraph *g = graph.get();
    if (trace) {
      trace->setLane(index, TraceLane::Comm);
      rt->collectiveWork[k] = [kernel = std::move(kernel), ctx, g, trace, index] {
        reportCollective(g, index, traced(trace, index, [&] { return kernel(*ctx); }));
      };
    } else {
      rt->collectiveWork[k] = [kernel = std::move(kernel), ctx, g, index] {
        reportCollective(g, index, kernel(*ctx));
      };
    }
    collectives.emplace_back(task->collective_seq(), index);
  }
  const std::vector<int> order = collectiveOrder(std::move(collectives));
  rt->collectives = static_cast<int>(order.size());
  for (int seq = 0; seq < rt->collectives; ++seq) {
    const int k = order[seq];
    CollectiveQueue *queue = &collectives_;
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
  if (Status s = bindMetricsAndOutputs(prog, views, rt->metrics, rt->outputs); !s)
    return s;
  rt->metricRing.resize(static_cast<size_t>(kStepWindow) * rt->metrics.size());

  // The hooks run on the coordinator, between the steps' task firings: the
  // batch is set before a step's Input tasks are started, metrics are read
  // once every task of the step has finished.
  StepHooks hooks;
  auto readMetrics = [p = rt.get()](int64_t step) {
    const size_t n = p->metrics.size();
    double *row = p->metricRing.data() + ((step - p->runFirst) % kStepWindow) * n;
    for (size_t m = 0; m < n; ++m)
      row[m] = p->metrics[m] ? *p->metrics[m] : 0.0;
  };
  if (trace) {
    hooks.begin = [ctx = &step_, trace](int64_t step) {
      ctx->batch = step;
      trace->beginStep(ctx->epoch, step);
    };
    hooks.end = [readMetrics, trace](int64_t step) {
      trace->endStep();
      readMetrics(step);
    };
  } else {
    hooks.begin = [ctx = &step_](int64_t step) { ctx->batch = step; };
    hooks.end = readMetrics;
  }
  rt->graph = graph;
  rt->coordinator = spawnStepCoordinator(system_, graph, std::move(hooks));
  spawnTaskActors(system_, graph, rt->coordinator);
  programs_.push_back(std::move(rt));
  return Status::ok();
}

StatusOr<Kernel> CpuExecutor::buildKernel(const plan::Task &task,
                                          const std::vector<TensorView> &views) {
  Operands in, out;
  taskOperands(task, views, in, out);
  const std::string at = where(task);
  auto here = runsOnRank(task, in, out, variables_, at);
  if (!here)
    return here.status();
  if (!*here)
    return Kernel();
  if (isComputeOp(task.op()))
    return buildComputeKernel(task, in, out, at);
  // Gloo moves f32 only: BF16 tensors of collectives (and of the local
  // boxing copies) go through f32 shadows, so a reduction sums in f32 and
  // its result is rounded once. Optimisers see F32 only (the plan loader's
  // rule).
  return buildWithF32Shadows(in, out, [&](const Operands &in32, const Operands &out32) {
    return buildF32Kernel(task, in32, out32, at);
  });
}

StatusOr<Kernel> CpuExecutor::buildF32Kernel(const plan::Task &task, const Operands &in,
                                             const Operands &out, const std::string &at) {
  using K = plan::OpKind;
  auto f32 = [](const TensorView *t) { return static_cast<float *>(t->data); };
  auto comm = [&](const TensorView &t, int dim) {
    return groupCommunicator(*plan_, comms_, t, dim, at);
  };

  switch (task.op()) {
  case K::Parameter:
    return Kernel();
  case K::SgdMomentum:
  case K::AdamW: {
    auto checked = checkOptimizer(task, in, variables_, at);
    if (!checked)
      return checked.status();
    const OptimizerWork w = checked.take();
    auto var = [&](int index) { return index >= 0 ? variables_[index].f32() : nullptr; };
    const float *scale = w.scaled ? f32(in[1]) : nullptr;
    float *wp = var(w.param);
    const float *g = f32(in[0]);
    if (!w.adam) {
      float *v = var(w.momentum);
      return Kernel([=](const StepContext &) {
        cpu::sgdMomentum(wp, v, g, w.n, w.lr, w.momentumFactor, w.weightDecay,
                         scale ? *scale : 1.0f);
        return Status::ok();
      });
    }
    // The step count lives in an i32 variable so that checkpoints resume it.
    int32_t *step = variables_[w.step].i32();
    float *mp = var(w.m), *vp = var(w.v);
    const std::string name = plan_->variables()->Get(w.step)->name()->str();
    return Kernel([=](const StepContext &) {
      if (*step == std::numeric_limits<int32_t>::max())
        return Status::error(at + ": step counter '" + name + "' is at INT32_MAX (" +
                             std::to_string(*step) + "): it cannot count another step");
      ++*step;
      cpu::adamw(wp, mp, vp, g, w.n, w.lr, w.beta1, w.beta2, w.eps, w.weightDecay, *step,
                 scale ? *scale : 1.0f);
      return Status::ok();
    });
  }
  case K::AllReduce: {
    const plan::CollectiveAttrs *c = task.attrs_as_CollectiveAttrs();
    auto cm = comm(*in[0], c->hierarchy_dim());
    if (!cm)
      return cm.status();
    auto checked = checkAllReduce(in, out, at);
    if (!checked)
      return checked.status();
    std::vector<std::pair<const float *, float *>> pairs;
    for (size_t i = 0; i < in.size(); ++i)
      pairs.emplace_back(f32(in[i]), f32(out[i]));
    const std::vector<int64_t> counts = checked->counts;
    Communicator *group = *cm;
    ReduceOp op = toReduce(c->reduce());
    if (group && pairs.size() > 1) {
      // A bucket: one all-reduce over a packed copy, not one per tensor (each
      // costs Gloo round trips). The scratch is allocated here, once.
      const int64_t total = checked->total;
      auto scratch = std::make_shared<std::vector<float>>(static_cast<size_t>(total) + 1);
      return Kernel([=](const StepContext &) -> Status {
        float *buf = scratch->data();
        for (size_t i = 0, off = 0; i < pairs.size(); off += counts[i], ++i)
          std::memcpy(buf + off, pairs[i].first, counts[i] * sizeof(float));
        if (Status s = group->allReduce(buf, total, op); !s)
          return s.withContext(at);
        for (size_t i = 0, off = 0; i < pairs.size(); off += counts[i], ++i)
          std::memcpy(pairs[i].second, buf + off, counts[i] * sizeof(float));
        return Status::ok();
      });
    }
    return Kernel([=](const StepContext &) -> Status {
      for (size_t i = 0; i < pairs.size(); ++i) {
        if (pairs[i].first != pairs[i].second && counts[i] > 0)
          std::memmove(pairs[i].second, pairs[i].first, counts[i] * sizeof(float));
        if (group)
          if (Status s = group->allReduce(pairs[i].second, counts[i], op); !s)
            return s.withContext(at);
      }
      return Status::ok();
    });
  }
  case K::AllGather:
  case K::ReduceScatter:
  case K::AllToAll: {
    auto checked = checkExchange(task, in, out, at);
    if (!checked)
      return checked.status();
    auto cm = comm(*in[0], checked->dim);
    if (!cm)
      return cm.status();
    const float *src = f32(in[0]);
    float *dst = f32(out[0]);
    if (checked->copyOnly) {
      // A group of one: the output is the input (one copy, not pack + unpack).
      const int64_t count = elementCount(out[0]->local);
      return Kernel([=](const StepContext &) {
        if (src != dst && count > 0)
          std::memmove(dst, src, count * sizeof(float));
        return Status::ok();
      });
    }
    auto w = std::make_shared<const ExchangeWork>(checked.take());
    // Packing scratch: allocated here, once, so steps allocate nothing.
    auto sendBuf = std::make_shared<std::vector<float>>(static_cast<size_t>(w->sendTotal) + 1);
    auto recvBuf = std::make_shared<std::vector<float>>(static_cast<size_t>(w->recvTotal) + 1);
    Region inRegion = in[0]->region, outRegion = out[0]->region;
    Communicator *group = *cm;
    ReduceOp op = toReduce(task.attrs_as_CollectiveAttrs()->reduce());
    K kind = task.op();
    return Kernel([=](const StepContext &) -> Status {
      float *sb = sendBuf->data(), *rb = recvBuf->data();
      if (kind == K::AllGather) {
        packRegion(src, inRegion, w->sendParts[0], sb);
      } else {
        int64_t off = 0;
        for (int64_t r = 0; r < w->n; ++r) {
          packRegion(src, inRegion, w->sendParts[r], sb + off);
          off += w->sendCounts[r];
        }
      }
      Status s;
      if (!group) {
        std::memcpy(rb, sb,
                    std::max(w->sendTotal, w->recvTotal) > 0 ? w->recvTotal * sizeof(float) : 0);
      } else if (kind == K::AllGather) {
        s = group->allGather(sb, rb, w->recvCounts.data());
      } else if (kind == K::ReduceScatter) {
        s = group->reduceScatter(sb, rb, w->sendCounts.data(), op);
      } else {
        s = group->allToAll(sb, w->sendCounts.data(), rb, w->recvCounts.data());
      }
      if (!s)
        return s.withContext(at);
      if (kind == K::ReduceScatter) {
        unpackRegion(rb, w->recvParts[0], dst, outRegion);
      } else {
        int64_t off = 0;
        for (int64_t r = 0; r < w->n; ++r) {
          unpackRegion(rb + off, w->recvParts[r], dst, outRegion);
          off += w->recvCounts[r];
        }
      }
      return Status::ok();
    });
  }
  case K::Slice: {
    auto w = checkSlice(in, out, at);
    if (!w)
      return w.status();
    const float *src = f32(in[0]);
    float *dst = f32(out[0]);
    return Kernel([=, w = w.take()](const StepContext &) {
      packRegion(src, w.from, w.part, dst);
      return Status::ok();
    });
  }
  case K::ZeroOthers: {
    auto w = checkZeroOthers(in, out, at);
    if (!w)
      return w.status();
    const float *src = f32(in[0]);
    float *dst = f32(out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      if (!w.keep)
        cpu::fill(dst, 0.0f, w.count);
      else if (src != dst && w.count > 0)
        std::memmove(dst, src, w.count * sizeof(float));
      return Status::ok();
    });
  }
  default:
    break;
  }
  return Status::error(at + ": op not supported by the CPU executor");
}

StatusOr<std::vector<checkpoint::ShardRecord>>
CpuExecutor::writeCheckpointShards(const std::string &dir, uint64_t generation) const {
  return writeVariableShards(*plan_, options_.globalRank, variables_, dir, generation);
}

Status CpuExecutor::loadCheckpoint(const std::string &dir, checkpoint::DataPosition *next) {
  return loadVariableShards(*plan_, options_.globalRank, variables_, dir, next);
}

Status CpuExecutor::readOutput(const std::string &program, const std::string &name,
                               std::vector<float> &values) const {
  auto view = findOutput(program, name);
  if (!view)
    return view.status();
  const float *data = static_cast<const float *>((*view)->data);
  values.assign(data, data + elementCount((*view)->local));
  return Status::ok();
}

Status CpuExecutor::writeTrace(const std::string &path) const {
  if (options_.traceSteps <= 0)
    return Status::error(rank() + ": no trace to write to '" + path +
                         "': the executor was created with tracing off");
  std::vector<const ProgramTrace *> traces;
  for (const auto &p : programs_)
    traces.push_back(p->trace.get());
  return writeChromeTrace(path, options_.globalRank, traces).withContext(rank());
}

} // namespace

StatusOr<std::unique_ptr<Executor>> Executor::create(caf::actor_system &system,
                                                     const plan::Plan *plan, CommGroups *comms,
                                                     const ExecutorOptions &options) {
  if (!plan)
    return Status::error("Executor::create: no plan");
  if (options.cudaDevice >= 0) {
#ifdef SBPFLOW_HAVE_CUDA
    return createCudaExecutor(system, plan, comms, options);
#else
    return Status::error("rank " + std::to_string(options.globalRank) + ": CUDA device " +
                         std::to_string(options.cudaDevice) +
                         " requested, but this build has no CUDA backend (configure with the "
                         "CUDA toolkit installed)");
#endif
  }
  auto exec = std::make_unique<CpuExecutor>(system, plan, comms, options);
  if (Status s = exec->init(); !s)
    return s;
  return std::unique_ptr<Executor>(std::move(exec));
}

} // namespace sbpflow
