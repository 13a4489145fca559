// The device-independent plumbing of the executors (see ProgramLayout.h).
#include "actors/ProgramLayout.h"

#include "runtime/comm/CommGroups.h"
#include "runtime/plan/PlanLoader.h"

#include <algorithm>

namespace sbpflow {
namespace {

using K = plan::OpKind;

int64_t elems(const TensorView *t) { return elementCount(t->local); }

int optimizerParam(const plan::Task &task) {
  return task.op() == K::AdamW ? task.attrs_as_AdamWAttrs()->param()
                               : task.attrs_as_SgdAttrs()->param();
}

} // namespace

std::vector<TensorView> programViews(const plan::Plan &plan, const plan::Program &prog,
                                     int globalRank,
                                     const std::function<void *(const plan::Tensor &)> &dataOf) {
  std::vector<TensorView> views(prog.tensors()->size());
  for (size_t i = 0; i < views.size(); ++i) {
    const plan::Tensor *t = prog.tensors()->Get(i);
    TensorView &v = views[i];
    v.global = toShape(t->shape());
    v.sbp = toNdSbp(t->sbp());
    v.placement = t->placement();
    v.dtype = t->dtype();
    const plan::Placement &pl = *plan.placements()->Get(t->placement());
    v.hierarchy = toHierarchy(pl);
    int index = rankIndexIn(pl, globalRank);
    if (index < 0)
      continue;
    v.coord = hierarchyCoord(v.hierarchy, index);
    v.region = localRegion(v.global, v.sbp, v.hierarchy, v.coord);
    v.local = localShape(v.global, v.sbp, v.hierarchy, v.coord);
    v.data = dataOf(*t);
  }
  return views;
}

void taskOperands(const plan::Task &task, const std::vector<TensorView> &views, Operands &in,
                  Operands &out) {
  for (size_t i = 0; task.inputs() && i < task.inputs()->size(); ++i)
    in.push_back(&views[task.inputs()->Get(i)]);
  for (size_t i = 0; task.outputs() && i < task.outputs()->size(); ++i)
    out.push_back(&views[task.outputs()->Get(i)]);
}

StatusOr<bool> runsOnRank(const plan::Task &task, const Operands &in, const Operands &out,
                          const std::vector<VariableShard> &variables, const std::string &at) {
  const TensorView *anchor = !out.empty() ? out[0] : (!in.empty() ? in[0] : nullptr);
  if (task.op() == K::SgdMomentum || task.op() == K::AdamW) {
    const int param = optimizerParam(task);
    if (param < 0 || param >= static_cast<int>(variables.size()))
      return Status::error(at + ": names no parameter variable");
    if (!variables[param].local)
      return false;
  } else if (!anchor || !anchor->data) {
    return false;
  }
  for (const TensorView *t : in)
    if (!t->data)
      return Status::error(at + ": an input is not on this rank (cross-placement tasks need "
                                "send/recv, which this executor does not have)");
  return true;
}

StatusOr<OptimizerWork> checkOptimizer(const plan::Task &task, const Operands &in,
                                       const std::vector<VariableShard> &variables,
                                       const std::string &at) {
  OptimizerWork w;
  w.adam = task.op() == K::AdamW;
  w.param = optimizerParam(task);
  const size_t size = static_cast<size_t>(variables[w.param].elements());
  w.n = static_cast<int64_t>(size);
  // An optimiser slot variable (momentum, moments) laid out like the parameter.
  auto slot = [&](int index, const char *what) -> Status {
    if (index < 0 || index >= static_cast<int>(variables.size()) ||
        static_cast<size_t>(variables[index].elements()) != size)
      return Status::error(at + ": " + what + " variable differs from the parameter in size");
    return Status::ok();
  };
  if (!in[0]->data || elems(in[0]) != w.n)
    return Status::error(at + ": gradient holds " + std::to_string(elems(in[0])) +
                         " local elements, parameter " + std::to_string(w.n));
  // The optional second input is the gradient-clipping factor (a scalar).
  if (in.size() > 1) {
    if (elems(in[1]) != 1)
      return Status::error(at + ": the gradient scale must be a scalar");
    w.scaled = true;
  }
  if (!w.adam) {
    const plan::SgdAttrs *a = task.attrs_as_SgdAttrs();
    if (a->momentum_buffer() >= 0) {
      if (Status s = slot(a->momentum_buffer(), "momentum"); !s)
        return s;
      w.momentum = a->momentum_buffer();
    }
    w.lr = a->lr();
    w.momentumFactor = a->momentum();
    w.weightDecay = a->weight_decay();
    return w;
  }
  const plan::AdamWAttrs *a = task.attrs_as_AdamWAttrs();
  if (Status s = slot(a->m(), "first-moment"); !s)
    return s;
  if (Status s = slot(a->v(), "second-moment"); !s)
    return s;
  if (a->step() < 0 || a->step() >= static_cast<int>(variables.size()) ||
      variables[a->step()].elements() != 1)
    return Status::error(at + ": the step variable must be a scalar");
  w.m = a->m();
  w.v = a->v();
  w.step = a->step();
  w.lr = a->lr();
  w.beta1 = a->beta1();
  w.beta2 = a->beta2();
  w.eps = a->eps();
  w.weightDecay = a->weight_decay();
  return w;
}

StatusOr<AllReduceWork> checkAllReduce(const Operands &in, const Operands &out,
                                       const std::string &at) {
  AllReduceWork w;
  for (size_t i = 0; i < in.size(); ++i) {
    if (i >= out.size() || elems(in[i]) != elems(out[i]))
      return Status::error(at + ": input and output " + std::to_string(i) +
                           " differ in local size");
    w.counts.push_back(elems(in[i]));
    w.total += w.counts.back();
  }
  return w;
}

StatusOr<ExchangeWork> checkExchange(const plan::Task &task, const Operands &in,
                                     const Operands &out, const std::string &at) {
  const TensorView &x = *in[0], &y = *out[0];
  ExchangeWork w;
  w.dim = task.attrs_as_CollectiveAttrs()->hierarchy_dim();
  const int dim = w.dim;
  if (x.placement != y.placement || x.global != y.global)
    return Status::error(at + ": input and output differ in placement or global shape");
  if (dim < 0 || dim >= static_cast<int>(x.hierarchy.size()))
    return Status::error(at + ": hierarchy dim " + std::to_string(dim) + " out of range");
  const int64_t n = w.n = x.hierarchy[dim];
  w.copyOnly = n == 1 && x.region == y.region;
  if (w.copyOnly)
    return w;
  // Regions of every group member, in global coordinates.
  std::vector<Region> inOf(n), outOf(n);
  for (int64_t r = 0; r < n; ++r) {
    std::vector<int64_t> coord = x.coord;
    coord[dim] = r;
    inOf[r] = localRegion(x.global, x.sbp, x.hierarchy, coord);
    outOf[r] = localRegion(y.global, y.sbp, y.hierarchy, coord);
  }
  const int64_t me = x.coord[dim];
  w.sendParts.resize(n);
  w.recvParts.resize(n);
  w.sendCounts.resize(n);
  w.recvCounts.resize(n);
  for (int64_t r = 0; r < n; ++r) {
    if (task.op() == K::AllGather) {
      w.sendParts[r] = inOf[me];
      w.recvParts[r] = inOf[r];
    } else if (task.op() == K::ReduceScatter) {
      w.sendParts[r] = outOf[r];
      w.recvParts[r] = outOf[me];
    } else {
      w.sendParts[r] = intersect(inOf[me], outOf[r]);
      w.recvParts[r] = intersect(inOf[r], outOf[me]);
    }
    w.sendCounts[r] = regionElements(w.sendParts[r]);
    w.recvCounts[r] = regionElements(w.recvParts[r]);
  }
  for (int64_t r = 0; r < n; ++r) {
    w.sendTotal += task.op() == K::AllGather ? (r == 0 ? w.sendCounts[0] : 0) : w.sendCounts[r];
    w.recvTotal += task.op() == K::ReduceScatter ? (r == 0 ? w.recvCounts[0] : 0) : w.recvCounts[r];
  }
  return w;
}

StatusOr<SliceWork> checkSlice(const Operands &in, const Operands &out, const std::string &at) {
  const TensorView &x = *in[0], &y = *out[0];
  if (x.global != y.global)
    return Status::error(at + ": input and output differ in global shape");
  Region check = intersect(x.region, y.region);
  if (regionElements(check) != regionElements(y.region))
    return Status::error(at + ": output region is not inside the input region");
  return SliceWork{x.region, y.region};
}

StatusOr<ZeroOthersWork> checkZeroOthers(const Operands &in, const Operands &out,
                                         const std::string &at) {
  const TensorView &x = *in[0], &y = *out[0];
  ZeroOthersWork w;
  for (size_t d = 0; d < y.sbp.size(); ++d) {
    bool partialOut = y.sbp[d].kind >= SbpKind::PartialSum;
    bool partialIn = x.sbp[d].kind >= SbpKind::PartialSum;
    if (partialOut && !partialIn && y.coord[d] != 0)
      w.keep = false;
  }
  w.count = elems(&y);
  if (elems(&x) != w.count)
    return Status::error(at + ": input and output differ in local size");
  return w;
}

bool callsCommunicator(const plan::Task &task, const std::vector<TensorView> &views) {
  if (!isCollective(task.op()) || !task.inputs() || task.inputs()->size() == 0)
    return false;
  const TensorView &x = views[task.inputs()->Get(0)];
  if (!x.data)
    return false;
  int dim = task.attrs_as_CollectiveAttrs()->hierarchy_dim();
  return dim >= 0 && dim < static_cast<int>(x.hierarchy.size()) && x.hierarchy[dim] > 1;
}

StatusOr<Communicator *> groupCommunicator(const plan::Plan &plan, CommGroups *comms,
                                           const TensorView &t, int dim, const std::string &at) {
  if (t.hierarchy[dim] == 1)
    return static_cast<Communicator *>(nullptr);
  Communicator *c = comms ? comms->get(t.placement, dim) : nullptr;
  if (!c)
    return Status::error(at + ": no communicator for placement '" +
                         plan.placements()->Get(t.placement)->name()->str() + "' dim " +
                         std::to_string(dim) + " (CommGroups missing or not connected)");
  return c;
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

std::vector<int> collectiveOrder(std::vector<std::pair<int, int>> collectives) {
  std::sort(collectives.begin(), collectives.end());
  std::vector<int> tasks;
  for (const auto &c : collectives)
    tasks.push_back(c.second);
  return tasks;
}

Status bindMetricsAndOutputs(const plan::Program &prog, const std::vector<TensorView> &views,
                             std::vector<const float *> &metrics,
                             std::vector<std::pair<std::string, TensorView>> &outputs) {
  for (size_t m = 0; prog.metrics() && m < prog.metrics()->size(); ++m)
    metrics.push_back(static_cast<const float *>(views[prog.metrics()->Get(m)->tensor()].data));
  for (size_t o = 0; prog.outputs() && o < prog.outputs()->size(); ++o) {
    const plan::Binding *b = prog.outputs()->Get(o);
    if (b->tensor() < 0 || b->tensor() >= static_cast<int>(views.size()))
      return Status::error("program '" + prog.name()->str() + "': output '" + b->name()->str() +
                           "' names no tensor");
    outputs.emplace_back(b->name()->str(), views[b->tensor()]);
  }
  return Status::ok();
}

RegionBox regionBox(const Region &holder, const Region &part) {
  RegionBox b;
  b.rank = static_cast<int>(holder.size());
  for (size_t i = 0; i < holder.size(); ++i) {
    b.shape[i] = holder[i].size;
    b.begin[i] = part[i].begin - holder[i].begin;
    b.size[i] = part[i].size;
  }
  return b;
}

} // namespace sbpflow
