// A plan's programs as one rank sees them (see ProgramLayout.h).
#include "actors/ProgramLayout.h"

#include "runtime/comm/CommGroups.h"
#include "runtime/plan/PlanTypes.h"

#include <algorithm>

namespace sbpflow {

namespace {

// A plan::Tensor or plan::Variable as rank `globalRank` holds it, its data
// from `data()`; no data and no local shape where the rank is outside its
// placement.
template <class PlanTensor, class Data>
TensorView viewOf(const plan::Plan &plan, const PlanTensor &t, int globalRank, Data data) {
  TensorView v;
  v.name = t.name()->str();
  v.global = toShape(t.shape());
  v.sbp = toNdSbp(t.sbp());
  v.placement = t.placement();
  v.dtype = t.dtype();
  const plan::Placement &pl = *plan.placements()->Get(t.placement());
  v.hierarchy = toHierarchy(pl);
  const int index = rankIndexIn(pl, globalRank);
  if (index < 0)
    return v;
  v.coord = hierarchyCoord(v.hierarchy, index);
  v.region = localRegion(v.global, v.sbp, v.hierarchy, v.coord);
  v.local = localShape(v.global, v.sbp, v.hierarchy, v.coord);
  v.data = data();
  return v;
}

} // namespace

std::vector<TensorView> programViews(const plan::Plan &plan, const plan::Program &prog,
                                     int globalRank,
                                     const std::function<void *(const plan::Tensor &)> &dataOf) {
  std::vector<TensorView> views;
  views.reserve(prog.tensors()->size());
  for (const plan::Tensor *t : *prog.tensors())
    views.push_back(viewOf(plan, *t, globalRank, [&] { return dataOf(*t); }));
  return views;
}

std::vector<TensorView> variableViews(const plan::Plan &plan, int globalRank,
                                      const std::function<void *(int v)> &dataOf) {
  std::vector<TensorView> views;
  views.reserve(plan.variables()->size());
  for (size_t i = 0; i < plan.variables()->size(); ++i)
    views.push_back(viewOf(plan, *plan.variables()->Get(i), globalRank,
                           [&] { return dataOf(static_cast<int>(i)); }));
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
                          const std::vector<TensorView> &variables, const std::string &at) {
  const TensorView *anchor = !out.empty() ? out[0] : (!in.empty() ? in[0] : nullptr);
  if (const OpInfo *info = opInfo(task.op()); info && info->category == OpCategory::Optimizer) {
    const int param = updatedVariable(task);
    if (param < 0 || param >= static_cast<int>(variables.size()))
      return Status::error(at + ": names no parameter variable");
    if (!variables[param].data)
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

} // namespace sbpflow
