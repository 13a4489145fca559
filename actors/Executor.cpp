// The CPU executor: plan tasks as kernels on the register protocol of
// actors/TaskGraph.h, compute kernels on the actors' own scheduler threads and
// collectives on the ordered comm thread. Everything a step touches (arena,
// variables, local shapes, packing scratch, metric ring) is allocated at
// create time.
#include "actors/Executor.h"

#include "actors/Messages.h"
#include "actors/TaskGraph.h"
#include "actors/TaskTrace.h"
#include "kernels/cpu/Kernels.h"
#include "runtime/Shape.h"
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

using Region = std::vector<Chunk>;

struct StepContext {
  DataSource *data = nullptr;
  int64_t epoch = 0;
  int64_t batch = 0;
};

using Kernel = std::function<Status(const StepContext &)>;

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

Region intersect(const Region &a, const Region &b) {
  Region out(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    int64_t lo = std::max(a[i].begin, b[i].begin);
    int64_t hi = std::min(a[i].begin + a[i].size, b[i].begin + b[i].size);
    out[i] = Chunk{lo, std::max<int64_t>(0, hi - lo)};
  }
  return out;
}

int64_t regionElements(const Region &r) {
  int64_t n = 1;
  for (const Chunk &c : r)
    n *= c.size;
  return n;
}

// Copies `part` (a region in global coordinates) from a tensor holding
// `from` into the dense buffer dst.
void packRegion(const float *src, const Region &from, const Region &part, float *dst) {
  if (regionElements(part) == 0)
    return;
  int64_t shape[kMaxTensorRank], begin[kMaxTensorRank], size[kMaxTensorRank];
  for (size_t i = 0; i < from.size(); ++i) {
    shape[i] = from[i].size;
    begin[i] = part[i].begin - from[i].begin;
    size[i] = part[i].size;
  }
  cpu::copyRegion(src, shape, begin, size, static_cast<int>(from.size()), dst);
}

// Copies a dense block holding `part` into a tensor holding `into`.
void unpackRegion(const float *src, const Region &part, float *dst, const Region &into) {
  if (regionElements(part) == 0)
    return;
  int64_t shape[kMaxTensorRank], begin[kMaxTensorRank], size[kMaxTensorRank];
  for (size_t i = 0; i < into.size(); ++i) {
    shape[i] = into[i].size;
    begin[i] = part[i].begin - into[i].begin;
    size[i] = part[i].size;
  }
  cpu::copyIntoRegion(src, begin, size, dst, shape, static_cast<int>(into.size()));
}

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
  Status saveVariables(const std::string &dir) const override;
  Status writeTrace(const std::string &path) const override;

private:
  struct TensorView {
    void *data = nullptr; // null: this rank holds no shard
    Shape global, local;
    Region region;
    NdSbp sbp;
    std::vector<int64_t> hierarchy, coord;
    int placement = 0;
    plan::DType dtype = plan::DType::F32;
  };
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
      Region full;
      for (int64_t d : global)
        full.push_back(Chunk{0, d});
      storage.data.resize(static_cast<size_t>(regionElements(storage.region)));
      if (global.empty())
        storage.data[0] = whole[0];
      else
        packRegion(whole.data(), full, storage.region, storage.data.data());
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
  if (task.op() == K::SgdMomentum) {
    if (!variables_[task.attrs_as_SgdAttrs()->param()].local)
      return Kernel();
  } else if (!anchor || !anchor->data) {
    return Kernel();
  }
  for (const TensorView *t : in)
    if (!t->data)
      return Status::error(at + ": an input is not on this rank (cross-placement tasks need "
                                "send/recv, which this executor does not have)");
  auto f32 = [](const TensorView *t) { return static_cast<float *>(t->data); };
  auto i32 = [](const TensorView *t) { return static_cast<int32_t *>(t->data); };
  auto elems = [](const TensorView *t) { return elementCount(t->local); };
  auto rows2d = [&](const TensorView *t, int64_t &rows, int64_t &cols) -> Status {
    if (t->local.empty())
      return Status::error(at + ": expects a matrix, got a scalar");
    cols = t->local.back();
    rows = cols ? elementCount(t->local) / cols : 0;
    return Status::ok();
  };
  auto needI32 = [&](const TensorView *t) -> Status {
    return t->dtype == plan::DType::I32 ? Status::ok()
                                        : Status::error(at + ": labels must be an i32 tensor");
  };

  switch (task.op()) {
  case K::Parameter:
    return Kernel();
  case K::Input: {
    const TensorView *o = out[0];
    std::string field = task.attrs_as_InputAttrs()->field()->str();
    if (o->global.empty())
      return Status::error(at + ": input tensor must have a batch axis");
    for (size_t d = 0; d < o->sbp.size(); ++d)
      if (o->sbp[d].kind == SbpKind::Split && o->sbp[d].axis != 0)
        return Status::error(at + ": inputs may only be split on axis 0");
    int64_t globalBatch = o->global[0], rowBegin = o->region[0].begin, rowCount = o->region[0].size;
    int64_t sample = elementCount(o->global) / std::max<int64_t>(1, globalBatch);
    FieldType want = o->dtype == plan::DType::I32 ? FieldType::I32 : FieldType::F32;
    const std::string planShape = toString(o->global); // `o` dies with buildProgram
    void *dst = o->data;
    return Kernel([=](const StepContext &ctx) -> Status {
      if (!ctx.data)
        return Status::error(at + ": program reads data field '" + field +
                             "' but no data source was given");
      const FieldInfo *info = nullptr;
      for (const FieldInfo &fi : ctx.data->fields())
        if (fi.name == field)
          info = &fi;
      if (!info)
        return Status::error(at + ": data source has no field '" + field + "'");
      if (info->type != want || elementCount(info->sampleShape) != sample) {
        auto typeName = [](FieldType t) { return t == FieldType::I32 ? "i32" : "f32"; };
        return Status::error(at + ": data field '" + field + "' holds " + typeName(info->type) +
                             " samples of " + std::to_string(elementCount(info->sampleShape)) +
                             " elements, but the plan's input is " + typeName(want) + " " +
                             planShape + " (" + std::to_string(sample) + " elements per sample)");
      }
      Status s = ctx.data->fill(field, ctx.epoch, ctx.batch, globalBatch, rowBegin, rowCount, dst);
      return s ? s : s.withContext(at);
    });
  }
  case K::Fill: {
    float value = task.attrs_as_FillAttrs()->value();
    float *y = f32(out[0]);
    int64_t n = elems(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::fill(y, value, n);
      return Status::ok();
    });
  }
  case K::MatMul: {
    bool ta = false, tb = false;
    if (auto *a = task.attrs_as_MatMulAttrs()) {
      ta = a->transpose_a();
      tb = a->transpose_b();
    }
    if (in[0]->local.size() != 2 || in[1]->local.size() != 2 || out[0]->local.size() != 2)
      return Status::error(at + ": matmul needs 2-D operands");
    int64_t m = ta ? in[0]->local[1] : in[0]->local[0];
    int64_t k = ta ? in[0]->local[0] : in[0]->local[1];
    int64_t k2 = tb ? in[1]->local[1] : in[1]->local[0];
    int64_t n = tb ? in[1]->local[0] : in[1]->local[1];
    if (k != k2 || out[0]->local[0] != m || out[0]->local[1] != n)
      return Status::error(at + ": local shapes do not multiply ([" + std::to_string(m) + "x" +
                           std::to_string(k) + "] x [" + std::to_string(k2) + "x" +
                           std::to_string(n) + "])");
    const float *a = f32(in[0]), *b = f32(in[1]);
    float *c = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::matmul(a, b, c, m, n, k, ta, tb);
      return Status::ok();
    });
  }
  case K::BiasAdd: {
    int64_t rows, cols;
    if (Status s = rows2d(in[0], rows, cols); !s)
      return s;
    if (elems(in[1]) != cols || elems(out[0]) != rows * cols)
      return Status::error(at + ": bias size differs from the column count");
    const float *x = f32(in[0]), *b = f32(in[1]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::biasAdd(x, b, y, rows, cols);
      return Status::ok();
    });
  }
  case K::Add:
  case K::ReluGrad: {
    int64_t n = elems(out[0]);
    if (elems(in[0]) != n || elems(in[1]) != n)
      return Status::error(at + ": operands differ in local size");
    const float *a = f32(in[0]), *b = f32(in[1]);
    float *y = f32(out[0]);
    bool add = task.op() == K::Add;
    return Kernel([=](const StepContext &) {
      if (add)
        cpu::add(a, b, y, n);
      else
        cpu::reluGrad(a, b, y, n);
      return Status::ok();
    });
  }
  case K::Relu: {
    int64_t n = elems(out[0]);
    if (elems(in[0]) != n)
      return Status::error(at + ": input and output differ in local size");
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::relu(x, y, n);
      return Status::ok();
    });
  }
  case K::SoftmaxXent:
  case K::CountCorrect:
  case K::SoftmaxXentGrad: {
    int64_t rows, classes;
    if (Status s = rows2d(in[0], rows, classes); !s)
      return s;
    if (Status s = needI32(in[1]); !s)
      return s;
    if (elems(in[1]) != rows)
      return Status::error(at + ": " + std::to_string(elems(in[1])) + " labels for " +
                           std::to_string(rows) + " rows");
    const float *logits = f32(in[0]);
    const int32_t *labels = i32(in[1]);
    float *y = f32(out[0]);
    if (task.op() == K::SoftmaxXent)
      return Kernel([=](const StepContext &) {
        int64_t bad = cpu::softmaxXent(logits, labels, y, rows, classes);
        if (bad >= 0)
          return Status::error(at + ": label " + std::to_string(labels[bad]) + " at row " +
                               std::to_string(bad) + " is out of range for " +
                               std::to_string(classes) + " classes");
        return Status::ok();
      });
    if (task.op() == K::CountCorrect)
      return Kernel([=](const StepContext &) {
        cpu::countCorrect(logits, labels, y, rows, classes);
        return Status::ok();
      });
    if (elems(in[2]) != rows)
      return Status::error(at + ": loss gradient size differs from the row count");
    const float *dloss = f32(in[2]);
    return Kernel([=](const StepContext &) {
      cpu::softmaxXentGrad(logits, labels, dloss, y, rows, classes);
      return Status::ok();
    });
  }
  case K::Mean:
  case K::MeanGrad: {
    int64_t count = task.attrs_as_MeanAttrs()->count();
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    if (task.op() == K::Mean) {
      int64_t n = elems(in[0]);
      return Kernel([=](const StepContext &) {
        cpu::mean(x, y, n, count);
        return Status::ok();
      });
    }
    int64_t n = elems(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::meanGrad(x, y, n, count);
      return Status::ok();
    });
  }
  case K::ReduceRows: {
    int64_t cols = elems(out[0]);
    int64_t rows = cols ? elems(in[0]) / cols : 0;
    if (rows * cols != elems(in[0]))
      return Status::error(at + ": input size is not a multiple of the output size");
    const float *x = f32(in[0]);
    float *y = f32(out[0]);
    return Kernel([=](const StepContext &) {
      cpu::reduceRows(x, y, rows, cols);
      return Status::ok();
    });
  }
  case K::SgdMomentum: {
    const plan::SgdAttrs *a = task.attrs_as_SgdAttrs();
    VariableStorage &w = variables_[a->param()];
    float *v = nullptr;
    if (a->momentum_buffer() >= 0) {
      VariableStorage &buf = variables_[a->momentum_buffer()];
      if (buf.data.size() != w.data.size())
        return Status::error(at + ": momentum buffer size differs from the parameter");
      v = buf.data.data();
    }
    int64_t n = static_cast<int64_t>(w.data.size());
    if (!in[0]->data || elems(in[0]) != n)
      return Status::error(at + ": gradient holds " + std::to_string(elems(in[0])) +
                           " local elements, parameter " + std::to_string(n));
    float *wp = w.data.data();
    const float *g = f32(in[0]);
    float lr = a->lr(), momentum = a->momentum(), wd = a->weight_decay();
    return Kernel([=](const StepContext &) {
      cpu::sgdMomentum(wp, v, g, n, lr, momentum, wd);
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
    auto sameRegion = [](const Region &a, const Region &b) {
      if (a.size() != b.size())
        return false;
      for (size_t i = 0; i < a.size(); ++i)
        if (a[i].begin != b[i].begin || a[i].size != b[i].size)
          return false;
      return true;
    };
    if (n == 1 && sameRegion(x.region, y.region)) {
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

Status CpuExecutor::saveVariables(const std::string &dir) const {
  ::mkdir(dir.c_str(), 0755);
  const std::string rank = std::to_string(options_.globalRank);
  for (size_t v = 0; v < variables_.size(); ++v) {
    if (!variables_[v].local)
      continue;
    const std::string base = dir + "/" + plan_->variables()->Get(v)->name()->str() + "." + rank;
    std::ofstream data(base + ".f32", std::ios::binary);
    data.write(reinterpret_cast<const char *>(variables_[v].data.data()),
               variables_[v].data.size() * sizeof(float));
    std::ofstream region(base + ".region");
    for (const Chunk &c : variables_[v].region)
      region << c.begin << " " << c.size << "\n";
    if (!data || !region)
      return Status::error("rank " + rank + ": cannot write variable files '" + base + ".*'");
  }
  return Status::ok();
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
