// Plan loading: flatbuffers verification, then the semantic checks that the
// executor relies on (indices in range, producers before consumers, arena
// bounds, collective order), each reported with the program/task/tensor name.
#include "runtime/plan/PlanLoader.h"

#include "kernels/Registry.h"
#include "runtime/plan/OpInfo.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace sbpflow {
namespace {

std::string str(const flatbuffers::String *s) { return s ? s->str() : std::string("?"); }

template <typename T> size_t len(const flatbuffers::Vector<T> *v) { return v ? v->size() : 0; }

// Whether a schema enum read from the buffer is one of its values: the
// verifier checks none, and a `byte` enum may hold a negative number.
template <typename E> bool known(E value) {
  return static_cast<int64_t>(value) >= static_cast<int64_t>(E::MIN) &&
         static_cast<int64_t>(value) <= static_cast<int64_t>(E::MAX);
}

// Checks what tensors and variables share: placement, shape, nd-SBP.
Status checkTyped(const plan::Plan &p, const std::string &what, int placement,
                  const flatbuffers::Vector<int64_t> *shape,
                  const flatbuffers::Vector<const plan::SbpDim *> *sbp) {
  if (placement < 0 || placement >= static_cast<int>(len(p.placements())))
    return Status::error(what + ": placement " + std::to_string(placement) +
                         " out of range (plan has " + std::to_string(len(p.placements())) +
                         " placements)");
  if (len(shape) > kMaxTensorRank)
    return Status::error(what + ": " + std::to_string(len(shape)) + " axes, more than the " +
                         std::to_string(kMaxTensorRank) + " the runtime supports");
  int64_t elements = 1;
  for (size_t i = 0; i < len(shape); ++i) {
    if (shape->Get(i) < 0)
      return Status::error(what + ": negative dimension " + std::to_string(shape->Get(i)) +
                           " at axis " + std::to_string(i));
    // Sizes in bytes must fit in int64 everywhere downstream.
    if (__builtin_mul_overflow(elements, shape->Get(i), &elements) || elements > (int64_t{1} << 48))
      return Status::error(what + ": more than 2^48 elements");
  }
  size_t dims = len(p.placements()->Get(placement)->hierarchy());
  if (len(sbp) != dims)
    return Status::error(what + ": nd-SBP has " + std::to_string(len(sbp)) +
                         " dimensions but its placement hierarchy has " + std::to_string(dims));
  for (size_t i = 0; i < len(sbp); ++i) {
    const plan::SbpDim *d = sbp->Get(i);
    if (!known(d->kind()))
      return Status::error(what + ": unknown SBP kind " +
                           std::to_string(static_cast<int>(d->kind())));
    if (d->kind() == plan::SbpKind::Split &&
        (d->axis() < 0 || d->axis() >= static_cast<int>(len(shape))))
      return Status::error(what + ": split axis " + std::to_string(d->axis()) +
                           " out of range for rank " + std::to_string(len(shape)));
  }
  return Status::ok();
}

// The element types of a task's tensors by the rule of its op (Ops.def: one
// letter per input and output). Mixed precision (bf16 activations, f32
// master weights, losses and reductions) is expressed by these rules;
// kernels rely on them.
Status checkOpDtypes(const OpInfo &info, const std::vector<const plan::Tensor *> &in,
                     const std::vector<const plan::Tensor *> &out, const std::string &kname) {
  std::optional<plan::DType> t, a;
  auto isFloat = [](plan::DType d) { return d == plan::DType::F32 || d == plan::DType::BF16; };
  auto check = [&](const plan::Tensor *x, char role, const std::string &what) -> Status {
    const plan::DType d = x->dtype();
    auto bad = [&](const std::string &want) {
      return Status::error(kname + ": " + what + " '" + str(x->name()) + "' must be " + want +
                           ", is " + plan::EnumNameDType(d));
    };
    switch (role) {
    case 'F':
      return d == plan::DType::F32 ? Status::ok() : bad("F32");
    case 'I':
      return d == plan::DType::I32 ? Status::ok() : bad("I32");
    case 'C':
      return isFloat(d) ? Status::ok() : bad("F32 or BF16");
    case 'W':
      if (d == plan::DType::F32)
        return Status::ok();
      [[fallthrough]];
    case 'T':
      if (!isFloat(d))
        return bad("F32 or BF16");
      if (t && *t != d)
        return bad(std::string(plan::EnumNameDType(*t)) + " like the task's other operands");
      t = d;
      return Status::ok();
    default: // 'A'
      if (a && *a != d)
        return bad(std::string(plan::EnumNameDType(*a)) + " like the task's other tensors");
      a = d;
      return Status::ok();
    }
  };
  auto roleAt = [](const char *roles, size_t i) {
    size_t n = std::strlen(roles);
    return n == 0 ? 'A' : roles[std::min(i, n - 1)];
  };
  // Inputs first, so that T is fixed by the operands when a result may be W.
  for (size_t i = 0; i < in.size(); ++i)
    if (Status s = check(in[i], roleAt(info.inTypes, i), "input " + std::to_string(i)); !s)
      return s;
  for (size_t i = 0; i < out.size(); ++i)
    if (Status s = check(out[i], roleAt(info.outTypes, i), "output " + std::to_string(i)); !s)
      return s;
  return Status::ok();
}

Status checkProgram(const plan::Plan &p, const plan::Program &prog) {
  const std::string pname = "program '" + str(prog.name()) + "'";
  const auto *tensors = prog.tensors();
  const auto *tasks = prog.tasks();
  const auto *regs = prog.registers();
  const int nt = static_cast<int>(len(tensors));
  const int nk = static_cast<int>(len(tasks));
  const int nv = static_cast<int>(len(p.variables()));
  if (prog.arena_bytes() < 0)
    return Status::error(pname + ": negative arena_bytes " + std::to_string(prog.arena_bytes()));

  for (int i = 0; i < nt; ++i) {
    const plan::Tensor *t = tensors->Get(i);
    std::string tname = pname + ": tensor " + std::to_string(i) + " '" + str(t->name()) + "'";
    if (!known(t->dtype()))
      return Status::error(tname + ": unknown dtype " +
                           std::to_string(static_cast<int>(t->dtype())));
    // No kernel reads or writes U8 yet (the communicators carry it).
    if (t->dtype() == plan::DType::U8)
      return Status::error(tname + ": dtype U8 is not supported by any op yet");
    if (Status s = checkTyped(p, tname, t->placement(), t->shape(), t->sbp()); !s)
      return s;
    if (t->variable() < -1 || t->variable() >= nv)
      return Status::error(tname + ": variable " + std::to_string(t->variable()) +
                           " out of range (plan has " + std::to_string(nv) + " variables)");
    Shape shape = toShape(t->shape());
    if (t->variable() >= 0) {
      const plan::Variable *v = p.variables()->Get(t->variable());
      if (toShape(v->shape()) != shape || v->placement() != t->placement() ||
          !holdsVariableShards(*v, toNdSbp(t->sbp())))
        return Status::error(tname + ": view of variable '" + str(v->name()) +
                             "' but shape/placement/SBP differ");
      if (v->dtype() == plan::DType::I32 && t->dtype() != plan::DType::I32)
        return Status::error(tname + ": " + plan::EnumNameDType(t->dtype()) +
                             " view of i32 variable '" + str(v->name()) + "'");
      continue;
    }
    int64_t need = maxLocalElements(shape, toNdSbp(t->sbp()),
                                    toHierarchy(*p.placements()->Get(t->placement()))) *
                   static_cast<int64_t>(dtypeSize(t->dtype()));
    if (t->bytes() < need)
      return Status::error(tname + ": bytes " + std::to_string(t->bytes()) +
                           " smaller than its largest local shard (" + std::to_string(need) + ")");
    if (t->offset() < 0)
      return Status::error(tname + ": activation without an arena offset");
    if (t->bytes() > prog.arena_bytes() - t->offset())
      return Status::error(tname + ": offset " + std::to_string(t->offset()) + " + bytes " +
                           std::to_string(t->bytes()) + " exceeds arena_bytes " +
                           std::to_string(prog.arena_bytes()));
  }

  std::vector<int> producer(nt, -1);
  std::vector<int> seqs;
  for (int k = 0; k < nk; ++k) {
    const plan::Task *task = tasks->Get(k);
    std::string kname = pname + ": task " + std::to_string(k) + " '" + str(task->name()) + "'";
    const OpInfo *info = opInfo(task->op());
    if (!info)
      return Status::error(kname + ": unknown op kind " +
                           std::to_string(static_cast<int>(task->op())));
    kname += " (" + std::string(info->name) + ")";
    int gotIn = static_cast<int>(len(task->inputs())),
        gotOut = static_cast<int>(len(task->outputs()));
    auto expected = [](int lo, int hi) {
      if (lo == hi)
        return std::to_string(lo);
      return hi < 0 ? "at least " + std::to_string(lo)
                    : std::to_string(lo) + " to " + std::to_string(hi);
    };
    if (gotIn < info->minIn || (info->maxIn >= 0 && gotIn > info->maxIn))
      return Status::error(kname + ": expects " + expected(info->minIn, info->maxIn) +
                           " inputs, has " + std::to_string(gotIn));
    if (gotOut < info->minOut || (info->maxOut >= 0 && gotOut > info->maxOut))
      return Status::error(kname + ": expects " + expected(info->minOut, info->maxOut) +
                           " outputs, has " + std::to_string(gotOut));
    if (task->op() == plan::OpKind::AllReduce && gotIn != gotOut)
      return Status::error(kname + ": AllReduce needs as many outputs as inputs");
    // An operand's tensor index outside the program.
    auto outOfRange = [&](const char *what, int j, int t) {
      return Status::error(kname + ": " + what + " " + std::to_string(j) + " is tensor " +
                           std::to_string(t) + ", out of range (" + std::to_string(nt) +
                           " tensors)");
    };
    for (int j = 0; j < gotIn; ++j) {
      int t = task->inputs()->Get(j);
      if (t < 0 || t >= nt)
        return outOfRange("input", j, t);
      if (producer[t] < 0)
        return Status::error(kname + ": input tensor '" + str(tensors->Get(t)->name()) +
                             "' is not produced by an earlier task");
      bool found = false;
      for (size_t r = 0; r < len(regs) && !found; ++r) {
        const plan::Register *reg = regs->Get(r);
        if (reg->tensor() != t || reg->producer() != producer[t])
          continue;
        for (size_t c = 0; c < len(reg->consumers()); ++c)
          found = found || reg->consumers()->Get(c) == k;
      }
      if (!found)
        return Status::error(kname + ": no register carries input tensor '" +
                             str(tensors->Get(t)->name()) + "' to this task");
    }
    for (int j = 0; j < gotOut; ++j) {
      int t = task->outputs()->Get(j);
      if (t < 0 || t >= nt)
        return outOfRange("output", j, t);
      if (producer[t] >= 0)
        return Status::error(kname + ": tensor '" + str(tensors->Get(t)->name()) +
                             "' already produced by task '" + str(tasks->Get(producer[t])->name()) +
                             "'");
      producer[t] = k;
    }
    if (task->op() == plan::OpKind::Parameter &&
        tensors->Get(task->outputs()->Get(0))->variable() < 0)
      return Status::error(kname + ": output is not a view of a variable");

    const plan::OpAttrs want = info->attrs;
    if (task->attrs_type() == plan::OpAttrs::NONE && info->attrsRequired)
      return Status::error(kname + ": missing attrs (" + plan::EnumNameOpAttrs(want) +
                           " expected)");
    if (task->attrs_type() != plan::OpAttrs::NONE && task->attrs_type() != want)
      return Status::error(kname + ": attrs are " +
                           std::string(plan::EnumNameOpAttrs(task->attrs_type())) + ", expected " +
                           plan::EnumNameOpAttrs(want));
    std::vector<const plan::Tensor *> inT, outT;
    for (int j = 0; j < gotIn; ++j)
      inT.push_back(tensors->Get(task->inputs()->Get(j)));
    for (int j = 0; j < gotOut; ++j)
      outT.push_back(tensors->Get(task->outputs()->Get(j)));
    if (Status s = checkOpDtypes(*info, inT, outT, kname); !s)
      return s;
    // What the op itself requires of its tensors and attributes (its entry in
    // the op registry, kernels/Registry.h), on the global tensors.
    if (Status s = checkTask(p, *task, inT, outT, kname); !s)
      return s;
    if (const plan::MeanAttrs *m = task->attrs_as_MeanAttrs(); m && m->count() <= 0)
      return Status::error(kname + ": MeanAttrs.count must be positive, is " +
                           std::to_string(m->count()));
    if (isCollective(task->op())) {
      if (task->collective_seq() < 0)
        return Status::error(kname + ": collective without a collective_seq");
      seqs.push_back(task->collective_seq());
    } else if (task->collective_seq() != -1) {
      return Status::error(kname + ": collective_seq " + std::to_string(task->collective_seq()) +
                           " on a task that is not a collective");
    }
  }
  std::vector<bool> seen(seqs.size(), false);
  for (int s : seqs) {
    if (s >= static_cast<int>(seqs.size()) || seen[s])
      return Status::error(pname + ": collective_seq values are not a permutation of 0.." +
                           std::to_string(static_cast<int>(seqs.size()) - 1) + " (bad value " +
                           std::to_string(s) + ")");
    seen[s] = true;
  }

  for (int r = 0; r < static_cast<int>(len(regs)); ++r) {
    const plan::Register *reg = regs->Get(r);
    std::string rname = pname + ": register " + std::to_string(r);
    if (reg->producer() < 0 || reg->producer() >= nk)
      return Status::error(rname + ": producer task " + std::to_string(reg->producer()) +
                           " out of range (" + std::to_string(nk) + " tasks)");
    rname += " (from task '" + str(tasks->Get(reg->producer())->name()) + "')";
    if (reg->tensor() < -1 || reg->tensor() >= nt)
      return Status::error(rname + ": tensor " + std::to_string(reg->tensor()) + " out of range");
    if (reg->tensor() >= 0 && producer[reg->tensor()] != reg->producer())
      return Status::error(rname + ": tensor '" + str(tensors->Get(reg->tensor())->name()) +
                           "' is not an output of its producer");
    if (len(reg->consumers()) == 0)
      return Status::error(rname + ": no consumers");
    for (size_t c = 0; c < len(reg->consumers()); ++c) {
      int k = reg->consumers()->Get(c);
      if (k < 0 || k >= nk)
        return Status::error(rname + ": consumer task " + std::to_string(k) + " out of range");
      if (k <= reg->producer())
        return Status::error(rname + ": consumer '" + str(tasks->Get(k)->name()) +
                             "' does not come after its producer (tasks must be in "
                             "topological order)");
    }
    if (reg->count() < 1)
      return Status::error(rname + ": count " + std::to_string(reg->count()) +
                           " (at least 1 slot needed)");
  }

  for (size_t i = 0; i < len(prog.inputs()); ++i) {
    const plan::Binding *b = prog.inputs()->Get(i);
    if (b->tensor() < 0 || b->tensor() >= nt)
      return Status::error(pname + ": input binding '" + str(b->name()) + "' points at tensor " +
                           std::to_string(b->tensor()) + ", out of range");
  }
  std::set<std::string> outputNames;
  for (size_t i = 0; i < len(prog.outputs()); ++i) {
    const plan::Binding *b = prog.outputs()->Get(i);
    if (b->tensor() < 0 || b->tensor() >= nt)
      return Status::error(pname + ": output binding '" + str(b->name()) + "' points at tensor " +
                           std::to_string(b->tensor()) + ", out of range");
    if (!outputNames.insert(str(b->name())).second)
      return Status::error(pname + ": output '" + str(b->name()) + "' bound twice");
  }
  std::set<std::string> metricNames;
  for (size_t i = 0; i < len(prog.metrics()); ++i) {
    const plan::Metric *m = prog.metrics()->Get(i);
    // The driver reports metrics by name: two of one name would be one.
    if (!metricNames.insert(str(m->name())).second)
      return Status::error(pname + ": metric '" + str(m->name()) + "' listed twice");
    if (m->tensor() < 0 || m->tensor() >= nt)
      return Status::error(pname + ": metric '" + str(m->name()) + "' points at tensor " +
                           std::to_string(m->tensor()) + ", out of range");
    if (!known(m->reduce()))
      return Status::error(pname + ": metric '" + str(m->name()) + "' has an unknown reduction " +
                           std::to_string(static_cast<int>(m->reduce())));
    if (tensors->Get(m->tensor())->dtype() != plan::DType::F32)
      return Status::error(pname + ": metric '" + str(m->name()) + "' is not an f32 tensor");
  }
  return Status::ok();
}

// How a round step is named in messages and in describePlan.
std::string actionName(plan::ScheduleAction action) {
  switch (action) {
  case plan::ScheduleAction::Run:
    return "run";
  case plan::ScheduleAction::Start:
    return "start";
  case plan::ScheduleAction::Join:
    return "join";
  case plan::ScheduleAction::Inner:
    return "inner";
  }
  return "action " + std::to_string(static_cast<int>(action));
}

// The names of a program's data fields or metrics, in order.
template <class List> std::vector<std::string> namesOf(const List *list) {
  std::vector<std::string> names;
  for (size_t i = 0; i < len(list); ++i)
    names.push_back(str(list->Get(static_cast<flatbuffers::uoffset_t>(i))->name()));
  return names;
}

const plan::Program *programNamed(const plan::Plan &p, const std::string &name) {
  for (size_t i = 0; i < len(p.programs()); ++i)
    if (str(p.programs()->Get(i)->name()) == name)
      return p.programs()->Get(i);
  return nullptr;
}

// The schedule's programs (`programs`: the plan's program names), period and
// round steps. One program at most runs in the background, and only there:
// a Run of it could find it still running. An inner step's substitute reads
// the inner program's data fields and reports its metrics.
Status checkSchedule(const plan::Plan &plan, const plan::Schedule &schedule,
                     const std::set<std::string> &programs) {
  if (schedule.algorithm()->size() == 0)
    return Status::error("schedule: algorithm is empty (it names the schedule in messages)");
  const std::string what = "schedule '" + schedule.algorithm()->str() + "'";
  const std::string inner = schedule.inner()->str();
  if (!programs.count(inner))
    return Status::error(what + ": inner program '" + inner + "' is not a program of the plan");
  const bool timed = schedule.seconds() != 0.0;
  if (timed) {
    if (!(schedule.seconds() > 0 && std::isfinite(schedule.seconds())) || schedule.period() != 0 ||
        schedule.min_steps() < 0)
      return Status::error(what +
                           ": timed rounds need seconds > 0, period 0 and min_steps >= 0, "
                           "got seconds " +
                           std::to_string(schedule.seconds()) + ", period " +
                           std::to_string(schedule.period()) + ", min_steps " +
                           std::to_string(schedule.min_steps()));
    if (!firstReplicated(plan))
      return Status::error(what + ": timed rounds gather step counts over the replica dimension, "
                                  "and no variable has a replica_dim");
  } else if (schedule.period() < 1) {
    return Status::error(what + ": period " + std::to_string(schedule.period()) +
                         " (at least 1 inner step a round)");
  } else if (schedule.min_steps() != 0) {
    return Status::error(what + ": min_steps belongs to timed rounds (seconds > 0)");
  }
  // The background program and the first step that starts it; the first
  // step that runs each program.
  std::string background, substitute;
  size_t startedAt = 0;
  std::map<std::string, size_t> runAt;
  for (size_t i = 0; i < schedule.round()->size(); ++i) {
    const plan::ScheduleStep &step = *schedule.round()->Get(i);
    const std::string at = what + ": round step " + std::to_string(i);
    if (!known(step.action()))
      return Status::error(at + " has an unknown action " +
                           std::to_string(static_cast<int>(step.action())));
    const std::string name = step.program() ? step.program()->str() : "";
    if (step.action() == plan::ScheduleAction::Join) {
      if (!name.empty())
        return Status::error(at + " (join) names program '" + name +
                             "'; a join names none (it waits for the background program)");
      continue;
    }
    if (name.empty())
      return Status::error(at + " (" + actionName(step.action()) + ") names no program");
    if (timed && step.action() != plan::ScheduleAction::Inner)
      return Status::error(at + " (" + actionName(step.action()) + " '" + name +
                           "'): timed rounds synchronise in their first inner step only "
                           "(inner), each replica ending its rounds at its own step");
    const bool run = step.action() == plan::ScheduleAction::Run;
    const char *verb = run                                            ? " runs '"
                       : step.action() == plan::ScheduleAction::Start ? " starts '"
                                                                      : " makes the first step '";
    const std::string named = at + verb + name + "'";
    if (!programs.count(name))
      return Status::error(named + ", which is not a program of the plan");
    if (name == inner)
      return Status::error(named + ", the inner program");
    if (step.action() == plan::ScheduleAction::Inner) {
      const plan::Program *a = programNamed(plan, inner), *b = programNamed(plan, name);
      if (namesOf(a->inputs()) != namesOf(b->inputs()) ||
          namesOf(a->metrics()) != namesOf(b->metrics()))
        return Status::error(named + ", whose data fields or metrics are not those of '" + inner +
                             "'");
      if (!substitute.empty())
        return Status::error(named + ", a second substitute inner step");
      substitute = name;
      continue;
    }
    if (run) {
      runAt.emplace(name, i);
    } else if (background.empty()) {
      background = name;
      startedAt = i;
    } else if (name != background) {
      return Status::error(named + ", a second background program (step " +
                           std::to_string(startedAt) + " starts '" + background +
                           "'; a plan has one)");
    }
  }
  if (auto run = runAt.find(background); run != runAt.end())
    return Status::error(what + ": round step " + std::to_string(run->second) + " runs '" +
                         background + "', which step " + std::to_string(startedAt) +
                         " starts in the background");
  return Status::ok();
}

} // namespace

Status checkPlan(const plan::Plan &p) {
  if (p.version() != kPlanVersion)
    return Status::error("plan version " + std::to_string(p.version()) +
                         " is not supported (this runtime reads version " +
                         std::to_string(kPlanVersion) + ")");
  for (size_t i = 0; i < len(p.placements()); ++i) {
    const plan::Placement *pl = p.placements()->Get(i);
    std::string what = "placement " + std::to_string(i) + " '" + str(pl->name()) + "'";
    if (len(pl->hierarchy()) == 0)
      return Status::error(what + ": empty hierarchy");
    if (!known(pl->device()))
      return Status::error(what + ": unknown device kind " +
                           std::to_string(static_cast<int>(pl->device())));
    int64_t product = 1;
    for (size_t d = 0; d < len(pl->hierarchy()); ++d) {
      if (pl->hierarchy()->Get(d) < 1)
        return Status::error(what + ": hierarchy dimension " + std::to_string(d) + " is " +
                             std::to_string(pl->hierarchy()->Get(d)));
      if (__builtin_mul_overflow(product, static_cast<int64_t>(pl->hierarchy()->Get(d)), &product))
        return Status::error(what + ": hierarchy product overflows");
    }
    if (product != static_cast<int64_t>(len(pl->ranks())))
      return Status::error(what + ": hierarchy product " + std::to_string(product) +
                           " differs from its " + std::to_string(len(pl->ranks())) + " ranks");
    std::set<int> ranks;
    for (size_t r = 0; r < len(pl->ranks()); ++r)
      if (pl->ranks()->Get(r) < 0 || !ranks.insert(pl->ranks()->Get(r)).second)
        return Status::error(what + ": rank " + std::to_string(pl->ranks()->Get(r)) +
                             " negative or repeated");
  }
  for (size_t i = 0; i < len(p.variables()); ++i) {
    const plan::Variable *v = p.variables()->Get(i);
    std::string what = "variable " + std::to_string(i) + " '" + str(v->name()) + "'";
    if (Status s = checkTyped(p, what, v->placement(), v->shape(), v->sbp()); !s)
      return s;
    if (v->dtype() != plan::DType::F32 && v->dtype() != plan::DType::I32)
      return Status::error(what + ": variables must be f32 or i32, not " +
                           std::string(known(v->dtype()) ? plan::EnumNameDType(v->dtype()) : "?"));
    if (!known(v->init()->kind()))
      return Status::error(what + ": unknown init kind");
    const float a = v->init()->a();
    if (v->dtype() == plan::DType::I32 && v->init()->kind() != plan::InitKind::Zeros &&
        (v->init()->kind() != plan::InitKind::Constant ||
         !(a >= -2147483648.0f && a < 2147483648.0f) || a != std::trunc(a)))
      return Status::error(what + ": an i32 variable starts from Zeros or an integral Constant");
    const std::vector<int64_t> hierarchy = toHierarchy(*p.placements()->Get(v->placement()));
    if (v->replica_dim() < -1 || v->replica_dim() >= static_cast<int>(hierarchy.size()))
      return Status::error(what + ": replica_dim " + std::to_string(v->replica_dim()) +
                           " is not a dimension of its placement's hierarchy " +
                           toString(hierarchy) + " (-1: none)");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < len(p.programs()); ++i) {
    const plan::Program *prog = p.programs()->Get(i);
    if (!names.insert(str(prog->name())).second)
      return Status::error("program '" + str(prog->name()) + "' defined twice");
    if (Status s = checkProgram(p, *prog); !s)
      return s;
  }
  if (const plan::Schedule *schedule = p.schedule())
    return checkSchedule(p, *schedule, names);
  return Status::ok();
}

RankMemory rankMemory(const plan::Plan &p, int globalRank) {
  RankMemory m;
  // Saturating: a corrupt plan's arenas may sum past int64.
  for (size_t i = 0; i < len(p.programs()); ++i)
    if (__builtin_add_overflow(m.arenas, p.programs()->Get(i)->arena_bytes(), &m.arenas))
      m.arenas = INT64_MAX / 2;
  for (size_t i = 0; i < len(p.variables()); ++i) {
    const plan::Variable *v = p.variables()->Get(i);
    const plan::Placement &pl = *p.placements()->Get(v->placement());
    const int index = rankIndexIn(pl, globalRank);
    if (index < 0)
      continue;
    const std::vector<int64_t> hierarchy = toHierarchy(pl);
    m.variables += elementCount(localShape(toShape(v->shape()), toNdSbp(v->sbp()), hierarchy,
                                           hierarchyCoord(hierarchy, index))) *
                   static_cast<int64_t>(dtypeSize(v->dtype()));
  }
  return m;
}

Status checkRankFits(const plan::Plan &p, int globalRank, plan::DeviceKind device,
                     int64_t availableBytes) {
  for (size_t i = 0; i < len(p.placements()); ++i) {
    const plan::Placement &pl = *p.placements()->Get(i);
    if (rankIndexIn(pl, globalRank) >= 0 && pl.device() != device)
      return Status::error("placement '" + str(pl.name()) + "' of the plan is on " +
                           plan::EnumNameDeviceKind(pl.device()) + " devices, but this rank runs " +
                           "on a " + plan::EnumNameDeviceKind(device) +
                           " device (compile the model for the device it runs on)");
  }
  if (availableBytes < 0)
    return Status::ok();
  const RankMemory m = rankMemory(p, globalRank);
  if (m.total() > availableBytes)
    return Status::error(
        "the plan needs " + std::to_string(m.total()) + " bytes on this rank (" +
        std::to_string(m.arenas) + " for program arenas, " + std::to_string(m.variables) +
        " for variables) but its " + plan::EnumNameDeviceKind(device) + " device has " +
        std::to_string(availableBytes) +
        " bytes: it does not fit (a smaller batch, or more ranks to split it over)");
  return Status::ok();
}

StatusOr<LoadedPlan> loadPlanBuffer(std::vector<uint8_t> bytes) {
  if (bytes.size() < 8)
    return Status::error("plan buffer too short (" + std::to_string(bytes.size()) +
                         " bytes): not a plan file");
  if (!plan::PlanBufferHasIdentifier(bytes.data()))
    return Status::error(std::string("not a plan: file identifier is not '") +
                         plan::PlanIdentifier() + "'");
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!plan::VerifyPlanBuffer(verifier))
    return Status::error("plan buffer failed flatbuffers verification (truncated or corrupt, " +
                         std::to_string(bytes.size()) + " bytes)");
  LoadedPlan loaded(std::move(bytes));
  if (Status s = checkPlan(*loaded.plan()); !s)
    return s.withContext("invalid plan");
  return loaded;
}

StatusOr<LoadedPlan> loadPlanFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::error("cannot open plan file '" + path + "'");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad())
    return Status::error("cannot read plan file '" + path + "'");
  StatusOr<LoadedPlan> loaded = loadPlanBuffer(std::move(bytes));
  if (!loaded)
    return loaded.status().withContext("plan file '" + path + "'");
  return loaded;
}

namespace {
// The attributes that change what a task does, in the task's line.
void describeAttrs(const plan::Task &task, std::ostream &os) {
  if (auto *m = task.attrs_as_MatMulAttrs()) {
    if (m->transpose_a())
      os << " transpose_a";
    if (m->transpose_b())
      os << " transpose_b";
  } else if (auto *f = task.attrs_as_FillAttrs()) {
    os << " value " << f->value();
  } else if (auto *m = task.attrs_as_MeanAttrs()) {
    os << " count " << m->count();
  } else if (auto *in = task.attrs_as_InputAttrs()) {
    os << " field " << str(in->field());
  } else if (auto *sgd = task.attrs_as_SgdAttrs()) {
    os << " lr " << sgd->lr() << " momentum " << sgd->momentum() << " weight_decay "
       << sgd->weight_decay() << " variable #" << sgd->param();
    if (sgd->momentum_buffer() >= 0)
      os << " buffer #" << sgd->momentum_buffer();
  } else if (auto *c = task.attrs_as_CollectiveAttrs()) {
    os << " dim " << c->hierarchy_dim() << " reduce " << plan::EnumNameReduceOp(c->reduce());
    if (const plan::CodecAttrs *k = c->codec()) {
      os << " codec " << plan::EnumNameCodec(k->kind()) << " density " << k->density() << " bits "
         << k->bits() << " rank " << k->rank() << " momentum " << k->momentum() << " clip "
         << k->clip();
      if (k->beta2() != 0.0f || k->eps() != 0.0f)
        os << " beta2 " << k->beta2() << " eps " << k->eps();
      if (k->chunk() != 0 || k->decay() != 1.0f)
        os << " chunk " << k->chunk() << " decay " << k->decay();
      os << " warmup_steps " << k->warmup_steps() << " epoch_steps " << k->epoch_steps()
         << " bucket " << k->bucket() << " seed " << k->seed() << " state";
      if (k->state())
        for (int v : *k->state())
          os << " #" << v;
      os << " step #" << k->step();
      if (const plan::LgrecoAttrs *lg = k->lgreco()) {
        os << " lgreco candidates";
        for (float v : *lg->candidates())
          os << " " << v;
        os << " default " << lg->default_index() << " layer " << lg->layer() << " of "
           << lg->layers() << " every " << lg->every() << " errors #" << lg->errors() << " choice #"
           << lg->choice() << " previous #" << lg->previous() << " pending #" << lg->pending();
      }
    }
  } else if (auto *a = task.attrs_as_AdamWAttrs()) {
    os << " lr " << a->lr() << " beta1 " << a->beta1() << " beta2 " << a->beta2() << " eps "
       << a->eps() << " weight_decay " << a->weight_decay() << " variable #" << a->param() << " m #"
       << a->m() << " v #" << a->v() << " step #" << a->step();
  } else if (auto *n = task.attrs_as_NormAttrs()) {
    os << " eps " << n->eps();
  } else if (auto *at = task.attrs_as_AttentionAttrs()) {
    os << " heads " << at->heads();
  } else if (auto *d = task.attrs_as_DropoutAttrs()) {
    os << " p " << d->p() << " seed " << d->seed();
  } else if (auto *t = task.attrs_as_TransposeAttrs()) {
    os << " perm [";
    for (size_t k = 0; k < len(t->perm()); ++k)
      os << (k ? "," : "") << t->perm()->Get(k);
    os << "]";
  } else if (auto *n = task.attrs_as_NarrowAttrs()) {
    os << " axis " << n->axis() << " begin " << n->begin();
  } else if (auto *c = task.attrs_as_ConcatAttrs()) {
    os << " axis " << c->axis();
  } else if (auto *c = task.attrs_as_ClipAttrs()) {
    os << " max_norm " << c->max_norm();
  } else if (auto *s = task.attrs_as_ScaleAttrs()) {
    os << " factor " << s->factor();
  } else if (auto *o = task.attrs_as_OuterAttrs()) {
    os << " lr " << o->lr() << " momentum " << o->momentum() << (o->nesterov() ? " nesterov" : "")
       << " replicas " << o->replicas() << " gap_penalty " << o->gap_penalty() << " clip "
       << o->clip() << " variable #" << o->param() << " anchor #" << o->anchor();
    if (o->momentum_buffer() >= 0)
      os << " buffer #" << o->momentum_buffer();
    if (o->keep_anchor())
      os << " keep_anchor";
  } else if (auto *assign = task.attrs_as_AssignAttrs()) {
    os << " variable #" << assign->variable();
  }
}
} // namespace

const plan::Variable *firstReplicated(const plan::Plan &plan) {
  for (const plan::Variable *v : *plan.variables())
    if (v->replica_dim() >= 0)
      return v;
  return nullptr;
}

std::string describePlan(const plan::Plan &p) {
  std::ostringstream os;
  os << "plan version " << p.version();
  if (p.source())
    os << " of '" << p.source()->str() << "'";
  os << "\nplacements:\n";
  for (size_t i = 0; i < len(p.placements()); ++i) {
    const plan::Placement *pl = p.placements()->Get(i);
    os << "  #" << i << " " << str(pl->name()) << " " << plan::EnumNameDeviceKind(pl->device())
       << " hierarchy " << toString(toHierarchy(*pl)) << " ranks [";
    for (size_t r = 0; r < len(pl->ranks()); ++r)
      os << (r ? "," : "") << pl->ranks()->Get(r);
    os << "]\n";
  }
  os << "variables:\n";
  for (size_t i = 0; i < len(p.variables()); ++i) {
    const plan::Variable *v = p.variables()->Get(i);
    os << "  #" << i << " " << str(v->name()) << " " << plan::EnumNameDType(v->dtype())
       << toString(toShape(v->shape())) << " placement " << v->placement() << " "
       << toString(toNdSbp(v->sbp())) << " init " << plan::EnumNameInitKind(v->init()->kind())
       << "(" << v->init()->a() << ", " << v->init()->b() << ", seed " << v->init()->seed() << ")";
    if (v->replica_dim() >= 0)
      os << " per replica of dim " << v->replica_dim();
    os << "\n";
  }
  if (const plan::Schedule *s = p.schedule()) {
    os << "schedule " << str(s->algorithm()) << ": " << str(s->inner());
    if (s->seconds() > 0)
      os << " for " << s->seconds() << " s (at least " << s->min_steps() << " steps in all)";
    else
      os << " x" << s->period();
    os << ", then";
    for (size_t i = 0; i < len(s->round()); ++i) {
      const plan::ScheduleStep *step = s->round()->Get(i);
      os << (i ? ", " : " ") << actionName(step->action());
      if (step->program() && step->program()->size() > 0)
        os << " " << step->program()->str();
    }
    os << "\n";
  }
  for (size_t pi = 0; pi < len(p.programs()); ++pi) {
    const plan::Program *prog = p.programs()->Get(pi);
    os << "program " << str(prog->name()) << " (arena " << prog->arena_bytes() << " bytes)\n";
    os << "  tensors:\n";
    for (size_t i = 0; i < len(prog->tensors()); ++i) {
      const plan::Tensor *t = prog->tensors()->Get(i);
      os << "    %" << i << " " << str(t->name()) << " " << plan::EnumNameDType(t->dtype())
         << toString(toShape(t->shape())) << " placement " << t->placement() << " "
         << toString(toNdSbp(t->sbp()));
      if (t->variable() >= 0)
        os << " = variable #" << t->variable();
      else
        os << " @" << t->offset() << " (" << t->bytes() << " bytes)";
      os << "\n";
    }
    os << "  tasks:\n";
    for (size_t k = 0; k < len(prog->tasks()); ++k) {
      const plan::Task *task = prog->tasks()->Get(k);
      os << "    " << k << " " << str(task->name()) << " " << opName(task->op()) << " (";
      for (size_t j = 0; j < len(task->inputs()); ++j)
        os << (j ? ", " : "") << "%" << task->inputs()->Get(j);
      os << ") -> (";
      for (size_t j = 0; j < len(task->outputs()); ++j)
        os << (j ? ", " : "") << "%" << task->outputs()->Get(j);
      os << ") queue " << (isCollective(task->op()) ? "Comm" : "Compute");
      if (task->collective_seq() >= 0)
        os << " collective #" << task->collective_seq();
      describeAttrs(*task, os);
      os << "\n";
    }
    os << "  registers:\n";
    for (size_t r = 0; r < len(prog->registers()); ++r) {
      const plan::Register *reg = prog->registers()->Get(r);
      os << "    " << r << " task " << reg->producer() << " -> [";
      for (size_t c = 0; c < len(reg->consumers()); ++c)
        os << (c ? "," : "") << reg->consumers()->Get(c);
      os << "] ";
      if (reg->tensor() >= 0)
        os << "%" << reg->tensor();
      else
        os << "control";
      os << " x" << reg->count() << "\n";
    }
    for (size_t i = 0; i < len(prog->inputs()); ++i)
      os << "  input " << str(prog->inputs()->Get(i)->name()) << " -> %"
         << prog->inputs()->Get(i)->tensor() << "\n";
    for (size_t i = 0; i < len(prog->outputs()); ++i)
      os << "  output " << str(prog->outputs()->Get(i)->name()) << " <- %"
         << prog->outputs()->Get(i)->tensor() << "\n";
    for (size_t i = 0; i < len(prog->metrics()); ++i)
      os << "  metric " << str(prog->metrics()->Get(i)->name()) << " <- %"
         << prog->metrics()->Get(i)->tensor() << " ("
         << plan::EnumNameMetricReduce(prog->metrics()->Get(i)->reduce()) << ")\n";
  }
  return os.str();
}

} // namespace sbpflow
