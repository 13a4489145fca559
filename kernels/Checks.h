// What the op families' checks share: a tensor read as rows of its last
// axis, operands that must hold as many elements as each other, the error of
// an i32 id out of range, a step counter, and the shapes of a builder.
#pragma once

#include "kernels/Registry.h"

#include <initializer_list>
#include <limits>
#include <string>

namespace sbpflow {

// `t` as rows of its last axis.
inline Status rowsOf(const TensorView *t, int64_t &rows, int64_t &cols, const std::string &at) {
  if (t->local.empty())
    return Status::error(at + ": expects a tensor with at least one axis, got a scalar");
  cols = t->local.back();
  rows = cols ? elementCount(t->local) / cols : 0;
  return Status::ok();
}

// Variable `index` of the task's plan, or an error naming it as `what`
// (the plan loader runs the registry's checks before the index is trusted).
inline StatusOr<const plan::Variable *> planVariable(const OpArgs &a, int index,
                                                     const std::string &what) {
  const int nv = static_cast<int>(a.plan.variables()->size());
  if (index < 0 || index >= nv)
    return Status::error(a.at + ": " + what + " variable " + std::to_string(index) +
                         " out of range (plan has " + std::to_string(nv) + " variables)");
  return a.plan.variables()->Get(index);
}

inline Status sameSize(std::initializer_list<const TensorView *> ts, const std::string &at) {
  for (const TensorView *t : ts)
    if (elements(t) != elements(*ts.begin()))
      return Status::error(at + ": operands differ in local size (" +
                           toString((*ts.begin())->local) + " and " + toString(t->local) + ")");
  return Status::ok();
}

// The words of an i32 id outside [0, count) (a token id, a label, a row
// index) at `position` of its tensor; whoever returns it names the task.
using BadId = std::string (*)(int64_t position, int32_t id, int64_t count);

// The status of a CPU kernel that gives the position of the first bad id in
// `ids`, or -1 where all were good.
inline Status idStatus(int64_t bad, const int32_t *ids, BadId badId, int64_t count) {
  return bad < 0 ? Status::ok() : Status::error(badId(bad, ids[bad], count));
}

// A check whose work is not needed: its status.
template <class Work> Status statusOf(const StatusOr<Work> &w) {
  return w ? Status::ok() : w.status();
}

// A kernel running `fn()` (which returns a Status) every step, its failure
// naming the task.
template <class Fn> Kernel launch(const OpArgs &a, Fn fn) {
  return [fn, at = a.at](const StepContext &) { return named(at, fn()); };
}
// A kernel running `fn()` (which cannot fail) every step.
template <class Fn> Kernel always(Fn fn) {
  return [fn](const StepContext &) {
    fn();
    return Status::ok();
  };
}

// A step count in an i32 variable, counted on the host (AdamW's bias
// corrections, a codec's schedule): one more, unless it is full.
inline Status countStep(int32_t *step, const std::string &counter) {
  if (*step == std::numeric_limits<int32_t>::max())
    return Status::error(counter + " is at INT32_MAX (" + std::to_string(*step) +
                         "): it cannot count another step");
  ++*step;
  return Status::ok();
}

// The shape of a builder: `work(a)` checks the task and gives what its
// kernel needs, `make(a, work)` builds the kernel.
template <class WorkFn, class Make>
StatusOr<Kernel> checked(const OpArgs &a, WorkFn work, Make make) {
  auto w = work(a);
  if (!w)
    return w.status();
  return make(a, *w);
}
// The same over f32 views of the task's tensors (withF32): the CPU's math
// kernels.
template <class WorkFn, class Make>
StatusOr<Kernel> checkedF32(const OpArgs &args, WorkFn work, Make make) {
  return withF32(
      args, [work, make](const OpArgs &a) -> StatusOr<Kernel> { return checked(a, work, make); });
}

} // namespace sbpflow
