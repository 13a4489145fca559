// The CPU executor: one CAF actor per task, registers with back-pressure, a
// step barrier, compute kernels on the actors' own scheduler threads and collectives on the ordered
// comm thread. Everything a step touches (arena, variables, local shapes, packing scratch) is
// allocated at create time.
#include "actors/Executor.h"

#include "actors/Messages.h"
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

struct TaskRuntime {
  std::string name; // for errors
  plan::OpKind op = plan::OpKind::Fill;
  bool comm = false;
  int seq = -1;
  Kernel kernel; // empty: nothing to do on this rank
  std::vector<int> inRegs, outRegs;
};

struct RegisterRuntime {
  int producer = 0;
  int count = 1;
  std::vector<int> consumers;
};

struct ProgramRuntime {
  std::string name;
  std::vector<uint8_t> arenaStorage;
  uint8_t *arena = nullptr;
  std::vector<TaskRuntime> tasks;
  std::vector<RegisterRuntime> registers;
  int collectives = 0;
  std::vector<const float *> metrics; // null where this rank holds no shard
  std::vector<caf::actor> actors;
};

struct Devices {
  CollectiveQueue collectives;
};

// What a task's actor keeps between messages.
struct TaskActorState {
  std::shared_ptr<ProgramRuntime> program;
  std::shared_ptr<Devices> devices;
  int task = 0;
  caf::actor coordinator;
  int64_t started = 0, fired = 0;
  bool running = false, failed = false;
  std::vector<int64_t> full;               // per input register: slots holding data
  std::vector<int64_t> produced;           // per output register
  std::vector<std::vector<int64_t>> freed; // per output register, per consumer

  bool ready() const {
    if (running || failed || fired >= started)
      return false;
    for (int64_t f : full)
      if (f == 0)
        return false;
    const TaskRuntime &t = program->tasks[task];
    for (size_t i = 0; i < t.outRegs.size(); ++i) {
      int64_t slowest = *std::min_element(freed[i].begin(), freed[i].end());
      if (produced[i] - slowest >= program->registers[t.outRegs[i]].count)
        return false;
    }
    return true;
  }
};

void fireIfReady(caf::event_based_actor *self, TaskActorState &st, const StepContext *ctx) {
  if (!st.ready())
    return;
  st.running = true;
  const TaskRuntime &t = st.program->tasks[st.task];
  for (auto &f : st.full)
    --f;
  for (auto &p : st.produced)
    ++p;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  if (!t.kernel) {
    self->send(me, KernelDone{});
    return;
  }
  if (!t.comm) {
    // Compute kernels run on this actor's scheduler thread (CAF's scheduler
    // is the CPU kernel pool): a hand-off to another pool cost two thread
    // wake-ups per task, more than most kernels of a step take.
    Status s = t.kernel(*ctx);
    self->send(me, KernelDone{s ? std::string() : s.message()});
    return;
  }
  // Collectives block in Gloo: they go to the ordered comm thread. The program
  // runtime is kept alive by the closure: the executor joins the thread before
  // it frees anything, but an actor may outlive a run.
  st.devices->collectives.submit(t.seq, [program = st.program, task = st.task, me, ctx] {
    Status s = program->tasks[task].kernel(*ctx);
    caf::anon_send(me, KernelDone{s ? std::string() : s.message()});
  });
}

caf::behavior taskActor(caf::event_based_actor *self, std::shared_ptr<TaskActorState> st,
                        const StepContext *ctx) {
  return {
      [=](StartStep &) {
        st->coordinator = caf::actor_cast<caf::actor>(self->current_sender());
        ++st->started;
        fireIfReady(self, *st, ctx);
      },
      [=](RegisterFull &m) {
        const auto &in = st->program->tasks[st->task].inRegs;
        for (size_t i = 0; i < in.size(); ++i)
          if (in[i] == m.reg)
            ++st->full[i];
        fireIfReady(self, *st, ctx);
      },
      [=](RegisterFree &m) {
        const auto &out = st->program->tasks[st->task].outRegs;
        for (size_t i = 0; i < out.size(); ++i) {
          if (out[i] != m.reg)
            continue;
          const auto &consumers = st->program->registers[m.reg].consumers;
          for (size_t c = 0; c < consumers.size(); ++c)
            if (consumers[c] == m.consumer)
              ++st->freed[i][c];
        }
        fireIfReady(self, *st, ctx);
      },
      [=](KernelDone &m) {
        st->running = false;
        ++st->fired;
        if (!m.error.empty()) {
          st->failed = true;
          self->send(st->coordinator, TaskDone{st->task, m.error});
          return;
        }
        const ProgramRuntime &p = *st->program;
        const TaskRuntime &t = p.tasks[st->task];
        for (int r : t.outRegs)
          for (int c : p.registers[r].consumers)
            self->send(p.actors[c], RegisterFull{r});
        for (int r : t.inRegs)
          self->send(p.actors[p.registers[r].producer], RegisterFree{r, st->task});
        self->send(st->coordinator, TaskDone{st->task, std::string()});
        fireIfReady(self, *st, ctx);
      },
  };
}

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
    for (auto &p : programs_)
      for (auto &a : p->actors)
        all.push_back(a);
    for (auto &a : all)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    if (!all.empty()) {
      caf::scoped_actor self{system_};
      self->wait_for(all);
    }
    for (auto &p : programs_)
      p->actors.clear();
    // Queued kernels point at variables and the step context, which die
    // with this object: let them finish first.
    devices_->collectives.abandon();
    devices_->collectives.waitIdle();
  }

  Status init();
  Status run(const std::string &program, DataSource *data, int64_t epoch, int64_t firstBatch,
             int64_t count, const StepCallback &onStep) override;
  Status saveVariables(const std::string &dir) const override;

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
  StatusOr<Communicator *> groupComm(const TensorView &t, int dim, const plan::Task &task) const;

  caf::actor_system &system_;
  const plan::Plan *plan_;
  CommGroups *comms_;
  ExecutorOptions options_;
  std::shared_ptr<Devices> devices_;
  std::vector<VariableStorage> variables_;
  std::vector<std::shared_ptr<ProgramRuntime>> programs_;
  StepContext step_;
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

  for (size_t k = 0; k < prog.tasks()->size(); ++k) {
    const plan::Task *task = prog.tasks()->Get(k);
    TaskRuntime tr;
    tr.name = task->name()->str();
    tr.op = task->op();
    tr.comm = isCollective(task->op());
    tr.seq = task->collective_seq();
    auto kernel = buildKernel(prog, *task, views);
    if (!kernel)
      return kernel.status();
    tr.kernel = kernel.take();
    if (tr.comm)
      ++rt->collectives;
    rt->tasks.push_back(std::move(tr));
  }
  for (size_t r = 0; r < prog.registers()->size(); ++r) {
    const plan::Register *reg = prog.registers()->Get(r);
    RegisterRuntime rr;
    rr.producer = reg->producer();
    rr.count = reg->count();
    for (size_t c = 0; c < reg->consumers()->size(); ++c) {
      int consumer = reg->consumers()->Get(c);
      if (std::find(rr.consumers.begin(), rr.consumers.end(), consumer) == rr.consumers.end())
        rr.consumers.push_back(consumer);
    }
    rt->tasks[rr.producer].outRegs.push_back(static_cast<int>(r));
    for (int c : rr.consumers)
      rt->tasks[c].inRegs.push_back(static_cast<int>(r));
    rt->registers.push_back(std::move(rr));
  }
  for (size_t m = 0; prog.metrics() && m < prog.metrics()->size(); ++m)
    rt->metrics.push_back(static_cast<const float *>(views[prog.metrics()->Get(m)->tensor()].data));

  // Every actor needs every other's handle: spawn all, then publish the list
  // before the first StartStep (the message send orders the two).
  for (size_t k = 0; k < rt->tasks.size(); ++k) {
    auto st = std::make_shared<TaskActorState>();
    st->program = rt;
    st->devices = devices_;
    st->task = static_cast<int>(k);
    st->full.assign(rt->tasks[k].inRegs.size(), 0);
    st->produced.assign(rt->tasks[k].outRegs.size(), 0);
    for (int r : rt->tasks[k].outRegs)
      st->freed.emplace_back(rt->registers[r].consumers.size(), 0);
    rt->actors.push_back(system_.spawn(taskActor, st, &step_));
  }
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
      if (info->type != want || elementCount(info->sampleShape) != sample)
        return Status::error(at + ": data field '" + field +
                             "' has a different type or sample size than the plan expects");
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
  devices_->collectives.reset(prog->collectives);
  caf::scoped_actor self{system_};
  std::vector<double> metrics(prog->metrics.size());
  for (int64_t i = 0; i < count; ++i) {
    // Written before StartStep is sent; kernels read it after receiving it.
    step_.data = data;
    step_.epoch = epoch;
    step_.batch = firstBatch + i;
    for (const caf::actor &a : prog->actors)
      self->send(a, StartStep{step_.batch});
    std::string error;
    size_t done = 0;
    while (done < prog->actors.size() && error.empty()) {
      self->receive([&](TaskDone &d) {
        ++done;
        if (!d.error.empty())
          error = d.error;
      });
    }
    if (!error.empty()) {
      // Other tasks of this step may still be running; the caller may read
      // variables as soon as we return.
      devices_->collectives.abandon();
      devices_->collectives.waitIdle();
      broken_ = Status::error(error);
      return broken_;
    }
    for (size_t m = 0; m < metrics.size(); ++m)
      metrics[m] = prog->metrics[m] ? *prog->metrics[m] : 0.0;
    if (onStep)
      onStep(step_.batch, metrics);
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
