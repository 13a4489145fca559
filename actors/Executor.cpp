// The CPU executor: plan tasks as kernels on the register protocol of
// actors/TaskGraph.h, compute kernels on the actors' own scheduler threads and
// collectives on the ordered comm thread. Everything a step touches (arena,
// variables, local shapes, packing scratch, metric ring) is allocated at
// create time.
#include "actors/Executor.h"

#include "actors/ComputeKernels.h"
#include "actors/Messages.h"
#include "actors/TaskGraph.h"
#include "actors/TaskTrace.h"
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
#include <sys/stat.h>

namespace sbpflow {
namespace {

// How many steps the coordinator may run ahead of the caller's onStep (the
// rows of a program's metric ring); the caller acknowledges every half.
constexpr int64_t kStepWindow = 16;

struct ProgramRuntime {
  std::string name;
  std::vector<uint8_t> arenaStorage;
  uint8_t *arena = nullptr;
  std::shared_ptr<TaskGraph> graph;
  // Per task: what the comm thread runs for a collective (empty otherwise).
  // Built once, so that handing a collective off allocates nothing.
  std::vector<std::function<void()>> collectiveWork;
  int collectives = 0;
  std::vector<const float *> metrics; // null where this rank holds no shard
  // Program.outputs: name -> the tensor as this rank sees it.
  std::vector<std::pair<std::string, TensorView>> outputs;
  // kStepWindow rows of metrics: step s of a run starting at `first` writes
  // row (s - first) % kStepWindow on the coordinator, the caller reads it.
  std::vector<double> metricRing;
  int64_t runFirst = 0;
  caf::actor coordinator;
  std::unique_ptr<ProgramTrace> trace; // null: tracing is off
};

struct Devices {
  CollectiveQueue collectives;
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

// On the comm thread, once a collective's work ended.
void reportCollective(TaskGraph *graph, int task, const Status &s) {
  if (s)
    caf::anon_send(graph->actors[task], KernelDone{});
  else
    caf::anon_send(graph->actors[task], KernelFailed{s.message()});
}

ReduceOp toReduce(plan::ReduceOp op) {
  switch (op) {
  case plan::ReduceOp::Max:
    return ReduceOp::Max;
  case plan::ReduceOp::Min:
    return ReduceOp::Min;
  default:
    return ReduceOp::Sum;
  }
}

class CpuExecutor : public Executor {
public:
  CpuExecutor(caf::actor_system &system, const plan::Plan *plan, CommGroups *comms,
              const ExecutorOptions &options)
      : system_(system), plan_(plan), comms_(comms), options_(options),
        devices_(std::make_shared<Devices>()) {}

  ~CpuExecutor() override {
    std::vector<caf::actor> all;
    for (auto &p : programs_) {
      all.push_back(p->coordinator);
      for (auto &a : p->graph->actors)
        all.push_back(a);
    }
    for (auto &a : all)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    if (!all.empty()) {
      caf::scoped_actor self{system_};
      self->wait_for(all);
    }
    // Queued collectives point at variables, the step context and the task
    // graphs, which die with this object: let them finish first (no actor is
    // left to queue more).
    devices_->collectives.abandon();
    devices_->collectives.waitIdle();
  }

  Status init();
  Status run(const std::string &program, DataSource *data, int64_t epoch, int64_t firstBatch,
             int64_t count, const StepCallback &onStep) override;
  Status saveCheckpoint(const std::string &dir) const override;
  Status loadCheckpoint(const std::string &dir) override;
  Status writeTrace(const std::string &path) const override;
  Status readOutput(const std::string &program, const std::string &name,
                    std::vector<float> &values) const override;

private:
  struct VariableStorage {
    std::vector<float> data;
    Region region;
    bool local = false;
  };

  std::string where(const plan::Task &task) const {
    return "rank " + std::to_string(options_.globalRank) + ": task '" + task.name()->str() + "' (" +
           opName(task.op()) + ")";
  }
  Status buildProgram(const plan::Program &prog);
  StatusOr<Kernel> buildKernel(const plan::Program &prog, const plan::Task &task,
                               const std::vector<TensorView> &views);
  // Whether `task` is a collective over more than one rank (one over a group
  // of one is a copy).
  bool callsCommunicator(const plan::Task &task, const std::vector<TensorView> &views) const;
  StatusOr<Communicator *> groupComm(const TensorView &t, int dim, const plan::Task &task) const;

  caf::actor_system &system_;
  const plan::Plan *plan_;
  CommGroups *comms_;
  ExecutorOptions options_;
  std::shared_ptr<Devices> devices_;
  std::vector<VariableStorage> variables_;
  std::vector<std::shared_ptr<ProgramRuntime>> programs_;
  StepContext step_;
  int64_t runs_ = 0;
  Status broken_;
};

Status CpuExecutor::init() {
  cpu::setBlasThreads(options_.kernelThreads);
  for (size_t v = 0; v < plan_->variables()->size(); ++v) {
    const plan::Variable *var = plan_->variables()->Get(v);
    VariableStorage storage;
    const plan::Placement &pl = *plan_->placements()->Get(var->placement());
    int index = rankIndexIn(pl, options_.globalRank);
    if (index >= 0) {
      Shape global = toShape(var->shape());
      std::vector<int64_t> h = toHierarchy(pl);
      storage.region = localRegion(global, toNdSbp(var->sbp()), h, hierarchyCoord(h, index));
      storage.local = true;
      std::vector<float> whole = initGlobalTensor(*var->init(), elementCount(global));
      storage.data.resize(static_cast<size_t>(regionElements(storage.region)));
      if (global.empty())
        storage.data[0] = whole[0];
      else
        packRegion(whole.data(), wholeRegion(global), storage.region, storage.data.data());
    }
    variables_.push_back(std::move(storage));
  }
  for (size_t p = 0; p < plan_->programs()->size(); ++p)
    if (Status s = buildProgram(*plan_->programs()->Get(p)); !s)
      return s;
  return Status::ok();
}

StatusOr<Communicator *> CpuExecutor::groupComm(const TensorView &t, int dim,
                                                const plan::Task &task) const {
  if (t.hierarchy[dim] == 1)
    return static_cast<Communicator *>(nullptr);
  Communicator *c = comms_ ? comms_->get(t.placement, dim) : nullptr;
  if (!c)
    return Status::error(where(task) + ": no communicator for placement '" +
                         plan_->placements()->Get(t.placement)->name()->str() + "' dim " +
                         std::to_string(dim) + " (CommGroups missing or not connected)");
  return c;
}

bool CpuExecutor::callsCommunicator(const plan::Task &task,
                                    const std::vector<TensorView> &views) const {
  if (!isCollective(task.op()) || !task.inputs() || task.inputs()->size() == 0)
    return false;
  const TensorView &x = views[task.inputs()->Get(0)];
  int dim = task.attrs_as_CollectiveAttrs()->hierarchy_dim();
  return dim >= 0 && dim < static_cast<int>(x.hierarchy.size()) && x.hierarchy[dim] > 1;
}

Status CpuExecutor::buildProgram(const plan::Program &prog) {
  auto rt = std::make_shared<ProgramRuntime>();
  rt->name = prog.name()->str();
  // 64-byte alignment for vectorised kernels; the plan's offsets are relative.
  rt->arenaStorage.resize(static_cast<size_t>(prog.arena_bytes()) + 64);
  rt->arena = rt->arenaStorage.data() +
              (64 - reinterpret_cast<uintptr_t>(rt->arenaStorage.data()) % 64) % 64;

  std::vector<TensorView> views(prog.tensors()->size());
  for (size_t i = 0; i < views.size(); ++i) {
    const plan::Tensor *t = prog.tensors()->Get(i);
    TensorView &v = views[i];
    v.global = toShape(t->shape());
    v.sbp = toNdSbp(t->sbp());
    v.placement = t->placement();
    v.dtype = t->dtype();
    const plan::Placement &pl = *plan_->placements()->Get(t->placement());
    v.hierarchy = toHierarchy(pl);
    int index = rankIndexIn(pl, options_.globalRank);
    if (index < 0)
      continue;
    v.coord = hierarchyCoord(v.hierarchy, index);
    v.region = localRegion(v.global, v.sbp, v.hierarchy, v.coord);
    v.local = localShape(v.global, v.sbp, v.hierarchy, v.coord);
    if (t->variable() >= 0) {
      VariableStorage &var = variables_[t->variable()];
      v.data = var.data.data();
    } else {
      v.data = rt->arena + t->offset();
    }
  }

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
  // Collectives this rank takes part in, by plan order: the comm thread
  // numbers them densely, so that one not on this rank leaves no hole.
  std::vector<std::pair<int, int>> collectives; // (collective_seq, task)
  for (size_t k = 0; k < taskCount; ++k) {
    const plan::Task *task = prog.tasks()->Get(k);
    auto built = buildKernel(prog, *task, views);
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
  std::sort(collectives.begin(), collectives.end());
  rt->collectives = static_cast<int>(collectives.size());
  for (int seq = 0; seq < rt->collectives; ++seq) {
    int k = collectives[seq].second;
    CollectiveQueue *queue = &devices_->collectives;
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
  for (size_t m = 0; prog.metrics() && m < prog.metrics()->size(); ++m)
    rt->metrics.push_back(static_cast<const float *>(views[prog.metrics()->Get(m)->tensor()].data));
  rt->metricRing.resize(static_cast<size_t>(kStepWindow) * rt->metrics.size());
  for (size_t o = 0; prog.outputs() && o < prog.outputs()->size(); ++o) {
    const plan::Binding *b = prog.outputs()->Get(o);
    if (b->tensor() < 0 || b->tensor() >= static_cast<int>(views.size()))
      return Status::error("program '" + rt->name + "': output '" + b->name()->str() +
                           "' names no tensor");
    rt->outputs.emplace_back(b->name()->str(), views[b->tensor()]);
  }

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

StatusOr<Kernel> CpuExecutor::buildKernel(const plan::Program &prog, const plan::Task &task,
                                          const std::vector<TensorView> &views) {
  using K = plan::OpKind;
  std::vector<const TensorView *> in, out;
  for (size_t i = 0; task.inputs() && i < task.inputs()->size(); ++i)
    in.push_back(&views[task.inputs()->Get(i)]);
  for (size_t i = 0; task.outputs() && i < task.outputs()->size(); ++i)
    out.push_back(&views[task.outputs()->Get(i)]);
  const std::string at = where(task);
  // A task runs on this rank only if its tensors live here.
  const TensorView *anchor = !out.empty() ? out[0] : (!in.empty() ? in[0] : nullptr);
  if (task.op() == K::SgdMomentum || task.op() == K::AdamW) {
    int param = task.op() == K::AdamW ? task.attrs_as_AdamWAttrs()->param()
                                      : task.attrs_as_SgdAttrs()->param();
    if (!variables_[param].local)
      return Kernel();
  } else if (!anchor || !anchor->data) {
    return Kernel();
  }
  for (const TensorView *t : in)
    if (!t->data)
      return Status::error(at + ": an input is not on this rank (cross-placement tasks need "
                                "send/recv, which this executor does not have)");
  if (isComputeOp(task.op()))
    return buildComputeKernel(task, in, out, at);
  auto f32 = [](const TensorView *t) { return static_cast<float *>(t->data); };
  auto elems = [](const TensorView *t) { return elementCount(t->local); };

  switch (task.op()) {
  case K::Parameter:
    return Kernel();
  case K::SgdMomentum:
  case K::AdamW: {
    const bool adam = task.op() == K::AdamW;
    const int param =
        adam ? task.attrs_as_AdamWAttrs()->param() : task.attrs_as_SgdAttrs()->param();
    VariableStorage &w = variables_[param];
    const int64_t n = static_cast<int64_t>(w.data.size());
    // An optimiser slot variable (momentum, moments) laid out like the parameter.
    auto slot = [&](int index, const char *what) -> StatusOr<float *> {
      if (index < 0 || index >= static_cast<int>(variables_.size()) ||
          variables_[index].data.size() != w.data.size())
        return Status::error(at + ": " + what + " variable differs from the parameter in size");
      return variables_[index].data.data();
    };
    if (!in[0]->data || elems(in[0]) != n)
      return Status::error(at + ": gradient holds " + std::to_string(elems(in[0])) +
                           " local elements, parameter " + std::to_string(n));
    // The optional second input is the gradient-clipping factor (a scalar).
    const float *scale = nullptr;
    if (in.size() > 1) {
      if (elems(in[1]) != 1)
        return Status::error(at + ": the gradient scale must be a scalar");
      scale = f32(in[1]);
    }
    float *wp = w.data.data();
    const float *g = f32(in[0]);
    if (!adam) {
      const plan::SgdAttrs *a = task.attrs_as_SgdAttrs();
      float *v = nullptr;
      if (a->momentum_buffer() >= 0) {
        auto buf = slot(a->momentum_buffer(), "momentum");
        if (!buf)
          return buf.status();
        v = *buf;
      }
      float lr = a->lr(), momentum = a->momentum(), wd = a->weight_decay();
      return Kernel([=](const StepContext &) {
        cpu::sgdMomentum(wp, v, g, n, lr, momentum, wd, scale ? *scale : 1.0f);
        return Status::ok();
      });
    }
    const plan::AdamWAttrs *a = task.attrs_as_AdamWAttrs();
    auto m = slot(a->m(), "first-moment");
    auto v = slot(a->v(), "second-moment");
    if (!m)
      return m.status();
    if (!v)
      return v.status();
    if (a->step() < 0 || a->step() >= static_cast<int>(variables_.size()) ||
        variables_[a->step()].data.size() != 1)
      return Status::error(at + ": the step variable must be a scalar");
    float *step = variables_[a->step()].data.data();
    float *mp = *m, *vp = *v;
    const float lr = a->lr(), b1 = a->beta1(), b2 = a->beta2(), eps = a->eps(),
                wd = a->weight_decay();
    return Kernel([=](const StepContext &) {
      // The step count lives in a variable so that checkpoints resume it.
      *step += 1.0f;
      cpu::adamw(wp, mp, vp, g, n, lr, b1, b2, eps, wd, static_cast<int64_t>(*step),
                 scale ? *scale : 1.0f);
      return Status::ok();
    });
  }
  case K::AllReduce: {
    const plan::CollectiveAttrs *c = task.attrs_as_CollectiveAttrs();
    auto comm = groupComm(*in[0], c->hierarchy_dim(), task);
    if (!comm)
      return comm.status();
    std::vector<std::pair<const float *, float *>> pairs;
    std::vector<int64_t> counts;
    for (size_t i = 0; i < in.size(); ++i) {
      if (elems(in[i]) != elems(out[i]))
        return Status::error(at + ": input and output " + std::to_string(i) +
                             " differ in local size");
      pairs.emplace_back(f32(in[i]), f32(out[i]));
      counts.push_back(elems(in[i]));
    }
    Communicator *cm = *comm;
    ReduceOp op = toReduce(c->reduce());
    if (cm && pairs.size() > 1) {
      // A bucket: one all-reduce over a packed copy, not one per tensor (each
      // costs Gloo round trips). The scratch is allocated here, once.
      int64_t total = 0;
      for (int64_t n : counts)
        total += n;
      auto scratch = std::make_shared<std::vector<float>>(static_cast<size_t>(total) + 1);
      return Kernel([=](const StepContext &) -> Status {
        float *buf = scratch->data();
        for (size_t i = 0, off = 0; i < pairs.size(); off += counts[i], ++i)
          std::memcpy(buf + off, pairs[i].first, counts[i] * sizeof(float));
        if (Status s = cm->allReduce(buf, total, op); !s)
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
        if (cm)
          if (Status s = cm->allReduce(pairs[i].second, counts[i], op); !s)
            return s.withContext(at);
      }
      return Status::ok();
    });
  }
  case K::AllGather:
  case K::ReduceScatter:
  case K::AllToAll: {
    const plan::CollectiveAttrs *c = task.attrs_as_CollectiveAttrs();
    const int dim = c->hierarchy_dim();
    const TensorView &x = *in[0], &y = *out[0];
    if (x.placement != y.placement || x.global != y.global)
      return Status::error(at + ": input and output differ in placement or global shape");
    auto comm = groupComm(x, dim, task);
    if (!comm)
      return comm.status();
    const int64_t n = x.hierarchy[dim];
    if (n == 1 && x.region == y.region) {
      // A group of one: the output is the input (one copy, not pack + unpack).
      const float *src = f32(&x);
      float *dst = f32(&y);
      const int64_t count = elems(&y);
      return Kernel([=](const StepContext &) {
        if (src != dst && count > 0)
          std::memmove(dst, src, count * sizeof(float));
        return Status::ok();
      });
    }
    // Regions of every group member, in global coordinates.
    std::vector<Region> inOf(n), outOf(n);
    for (int64_t r = 0; r < n; ++r) {
      std::vector<int64_t> coord = x.coord;
      coord[dim] = r;
      inOf[r] = localRegion(x.global, x.sbp, x.hierarchy, coord);
      outOf[r] = localRegion(y.global, y.sbp, y.hierarchy, coord);
    }
    const int64_t me = x.coord[dim];
    // send[r]: the part of my input that member r needs; recv[r]: what r sends me.
    std::vector<Region> sendParts(n), recvParts(n);
    std::vector<int64_t> sendCounts(n), recvCounts(n);
    for (int64_t r = 0; r < n; ++r) {
      if (task.op() == K::AllGather) {
        sendParts[r] = inOf[me];
        recvParts[r] = inOf[r];
      } else if (task.op() == K::ReduceScatter) {
        sendParts[r] = outOf[r];
        recvParts[r] = outOf[me];
      } else {
        sendParts[r] = intersect(inOf[me], outOf[r]);
        recvParts[r] = intersect(inOf[r], outOf[me]);
      }
      sendCounts[r] = regionElements(sendParts[r]);
      recvCounts[r] = regionElements(recvParts[r]);
    }
    int64_t sendTotal = 0, recvTotal = 0;
    for (int64_t r = 0; r < n; ++r) {
      sendTotal += task.op() == K::AllGather ? (r == 0 ? sendCounts[0] : 0) : sendCounts[r];
      recvTotal += task.op() == K::ReduceScatter ? (r == 0 ? recvCounts[0] : 0) : recvCounts[r];
    }
    // Packing scratch: allocated here, once, so steps allocate nothing.
    auto sendBuf = std::make_shared<std::vector<float>>(static_cast<size_t>(sendTotal) + 1);
    auto recvBuf = std::make_shared<std::vector<float>>(static_cast<size_t>(recvTotal) + 1);
    const float *src = f32(&x);
    float *dst = f32(&y);
    Region inRegion = x.region, outRegion = y.region;
    Communicator *cm = *comm;
    ReduceOp op = toReduce(c->reduce());
    K kind = task.op();
    return Kernel([=](const StepContext &) -> Status {
      float *sb = sendBuf->data(), *rb = recvBuf->data();
      if (kind == K::AllGather) {
        packRegion(src, inRegion, sendParts[0], sb);
      } else {
        int64_t off = 0;
        for (int64_t r = 0; r < n; ++r) {
          packRegion(src, inRegion, sendParts[r], sb + off);
          off += sendCounts[r];
        }
      }
      Status s;
      if (!cm) {
        std::memcpy(rb, sb, std::max(sendTotal, recvTotal) > 0 ? recvTotal * sizeof(float) : 0);
      } else if (kind == K::AllGather) {
        s = cm->allGather(sb, rb, recvCounts.data());
      } else if (kind == K::ReduceScatter) {
        s = cm->reduceScatter(sb, rb, sendCounts.data(), op);
      } else {
        s = cm->allToAll(sb, sendCounts.data(), rb, recvCounts.data());
      }
      if (!s)
        return s.withContext(at);
      if (kind == K::ReduceScatter) {
        unpackRegion(rb, recvParts[0], dst, outRegion);
      } else {
        int64_t off = 0;
        for (int64_t r = 0; r < n; ++r) {
          unpackRegion(rb + off, recvParts[r], dst, outRegion);
          off += recvCounts[r];
        }
      }
      return Status::ok();
    });
  }
  case K::Slice: {
    const TensorView &x = *in[0], &y = *out[0];
    if (x.global != y.global)
      return Status::error(at + ": input and output differ in global shape");
    Region check = intersect(x.region, y.region);
    if (regionElements(check) != regionElements(y.region))
      return Status::error(at + ": output region is not inside the input region");
    const float *src = f32(&x);
    float *dst = f32(&y);
    Region from = x.region, part = y.region;
    return Kernel([=](const StepContext &) {
      packRegion(src, from, part, dst);
      return Status::ok();
    });
  }
  case K::ZeroOthers: {
    const TensorView &x = *in[0], &y = *out[0];
    bool keep = true;
    for (size_t d = 0; d < y.sbp.size(); ++d) {
      bool partialOut = y.sbp[d].kind >= SbpKind::PartialSum;
      bool partialIn = x.sbp[d].kind >= SbpKind::PartialSum;
      if (partialOut && !partialIn && y.coord[d] != 0)
        keep = false;
    }
    int64_t count = elems(&y);
    if (elems(&x) != count)
      return Status::error(at + ": input and output differ in local size");
    const float *src = f32(&x);
    float *dst = f32(&y);
    return Kernel([=](const StepContext &) {
      if (!keep)
        cpu::fill(dst, 0.0f, count);
      else if (src != dst && count > 0)
        std::memmove(dst, src, count * sizeof(float));
      return Status::ok();
    });
  }
  }
  return Status::error(at + ": op not supported by the CPU executor");
}

Status CpuExecutor::run(const std::string &program, DataSource *data, int64_t epoch,
                        int64_t firstBatch, int64_t count, const StepCallback &onStep) {
  if (!broken_)
    return Status::error("rank " + std::to_string(options_.globalRank) +
                         ": executor stopped by an earlier error: " + broken_.message());
  std::shared_ptr<ProgramRuntime> prog;
  for (auto &p : programs_)
    if (p->name == program)
      prog = p;
  if (!prog)
    return Status::error("rank " + std::to_string(options_.globalRank) + ": plan has no program '" +
                         program + "'");
  if (count <= 0)
    return Status::ok();
  devices_->collectives.reset(prog->collectives);
  // Read by the coordinator and the kernels after RunSteps, which orders
  // these writes before them.
  step_.data = data;
  step_.epoch = epoch;
  prog->runFirst = firstBatch;
  const int64_t runId = ++runs_;
  const size_t n = prog->metrics.size();
  std::vector<double> metrics(n);
  caf::scoped_actor self{system_};
  self->send(prog->coordinator, RunSteps{runId, firstBatch, count, kStepWindow});
  // One wake-up of this thread per step: the coordinator runs the steps
  // back to back and only reports each one (its metrics wait in the ring).
  int64_t taken = 0;
  std::string error;
  auto onDone = [&](StepDone &d) {
    const double *row = prog->metricRing.data() + ((d.step - firstBatch) % kStepWindow) * n;
    std::copy(row, row + n, metrics.begin());
    ++taken;
    if (taken % (kStepWindow / 2) == 0)
      self->send(prog->coordinator, StepsTaken{runId, taken});
    if (onStep)
      onStep(d.step, metrics);
  };
  auto onFailed = [&](RunFailed &f) { error = std::move(f.error); };
  try {
    while (taken < count && error.empty())
      self->receive(onDone, onFailed);
  } catch (...) {
    // onStep threw while later steps may be running (and reading `data`):
    // stop them before unwinding.
    self->send(prog->coordinator, StopRun{});
    error.clear();
    while (error.empty())
      self->receive([](StepDone &) {}, onFailed);
    devices_->collectives.abandon();
    devices_->collectives.waitIdle();
    broken_ =
        Status::error("rank " + std::to_string(options_.globalRank) + ": a step callback threw");
    throw;
  }
  if (!error.empty()) {
    // No task runs a kernel any more, but a collective may still be queued
    // or running; the caller may read variables as soon as we return.
    devices_->collectives.abandon();
    devices_->collectives.waitIdle();
    broken_ = Status::error(error);
    return broken_;
  }
  return Status::ok();
}

// A variable as the checkpoint stores it. Variable storage is f32 whatever
// the plan's dtype field says, so it is saved as f32.
checkpoint::TensorMeta checkpointMeta(const plan::Plan &plan, const plan::Variable &var) {
  checkpoint::TensorMeta meta;
  meta.name = var.name()->str();
  meta.dtype = checkpoint::DType::F32;
  meta.shape = toShape(var.shape());
  meta.sbp = toNdSbp(var.sbp());
  meta.hierarchy = toHierarchy(*plan.placements()->Get(var.placement()));
  return meta;
}

Status CpuExecutor::saveCheckpoint(const std::string &dir) const {
  const std::string rank = "rank " + std::to_string(options_.globalRank);
  std::vector<checkpoint::TensorMeta> metas;
  for (size_t v = 0; v < variables_.size(); ++v) {
    const plan::Variable *var = plan_->variables()->Get(v);
    checkpoint::TensorMeta meta = checkpointMeta(*plan_, *var);
    if (variables_[v].local) {
      auto shards = checkpoint::distinctShards(meta);
      if (!shards)
        return shards.status().withContext(rank);
      const plan::Placement &pl = *plan_->placements()->Get(var->placement());
      const std::vector<int64_t> coord =
          hierarchyCoord(meta.hierarchy, rankIndexIn(pl, options_.globalRank));
      for (const checkpoint::ShardOwner &shard : *shards)
        if (shard.coord == coord)
          if (Status s = checkpoint::writeShard(dir, meta, variables_[v].region,
                                                variables_[v].data.data());
              !s)
            return s.withContext(rank);
    }
    metas.push_back(std::move(meta));
  }
  // Shard file names follow from names and regions: rank 0 lists every
  // rank's files without hearing from them.
  if (options_.globalRank == 0)
    if (Status s = checkpoint::writeIndex(dir, metas); !s)
      return s.withContext(rank);
  return Status::ok();
}

Status CpuExecutor::loadCheckpoint(const std::string &dir) {
  const std::string rank = "rank " + std::to_string(options_.globalRank);
  auto reader = checkpoint::CheckpointReader::open(dir);
  if (!reader)
    return reader.status().withContext(rank);
  // Every variable is checked on every rank, so each rank reports a mismatch
  // whether or not it holds a part of that variable.
  for (size_t v = 0; v < variables_.size(); ++v) {
    const checkpoint::TensorMeta want = checkpointMeta(*plan_, *plan_->variables()->Get(v));
    const checkpoint::TensorMeta *got = reader->find(want.name);
    if (!got)
      return Status::error(rank + ": checkpoint '" + dir + "' has no variable '" + want.name + "'");
    if (got->shape != want.shape || got->dtype != want.dtype)
      return Status::error(rank + ": checkpoint '" + dir + "' holds variable '" + want.name +
                           "' as " + checkpoint::toString(got->dtype) + " " + toString(got->shape) +
                           ", the plan has " + checkpoint::toString(want.dtype) + " " +
                           toString(want.shape));
    if (!variables_[v].local)
      continue;
    if (Status s = reader->read(want.name, want.shape, want.dtype, variables_[v].region,
                                variables_[v].data.data());
        !s)
      return s.withContext(rank);
  }
  return Status::ok();
}

Status CpuExecutor::readOutput(const std::string &program, const std::string &name,
                               std::vector<float> &values) const {
  const std::string rank = "rank " + std::to_string(options_.globalRank);
  for (const auto &p : programs_) {
    if (p->name != program)
      continue;
    for (const auto &[outputName, view] : p->outputs) {
      if (outputName != name)
        continue;
      if (!view.data)
        return Status::error(rank + ": holds no part of output '" + name + "' of '" + program +
                             "'");
      if (view.dtype != plan::DType::F32)
        return Status::error(rank + ": output '" + name + "' is not an f32 tensor");
      const float *data = static_cast<const float *>(view.data);
      values.assign(data, data + elementCount(view.local));
      return Status::ok();
    }
    return Status::error(rank + ": program '" + program + "' has no output '" + name + "'");
  }
  return Status::error(rank + ": plan has no program '" + program + "'");
}

Status CpuExecutor::writeTrace(const std::string &path) const {
  const std::string rank = std::to_string(options_.globalRank);
  if (options_.traceSteps <= 0)
    return Status::error("rank " + rank + ": no trace to write to '" + path +
                         "': the executor was created with tracing off");
  std::vector<const ProgramTrace *> traces;
  for (const auto &p : programs_)
    traces.push_back(p->trace.get());
  return writeChromeTrace(path, options_.globalRank, traces).withContext("rank " + rank);
}

} // namespace

StatusOr<std::unique_ptr<Executor>> Executor::create(caf::actor_system &system,
                                                     const plan::Plan *plan, CommGroups *comms,
                                                     const ExecutorOptions &options) {
  if (!plan)
    return Status::error("Executor::create: no plan");
  auto exec = std::make_unique<CpuExecutor>(system, plan, comms, options);
  if (Status s = exec->init(); !s)
    return s;
  return std::unique_ptr<Executor>(std::move(exec));
}

} // namespace sbpflow
