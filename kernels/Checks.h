// What the op families' checks share: a tensor read as rows of its last
// axis, and operands that must hold as many elements as each other.
#pragma once

#include "kernels/Registry.h"

#include <initializer_list>

namespace sbpflow {

// `t` as rows of its last axis.
inline Status rowsOf(const TensorView *t, int64_t &rows, int64_t &cols, const std::string &at) {
  if (t->local.empty())
    return Status::error(at + ": expects a tensor with at least one axis, got a scalar");
  cols = t->local.back();
  rows = cols ? elementCount(t->local) / cols : 0;
  return Status::ok();
}

inline Status sameSize(std::initializer_list<const TensorView *> ts, const std::string &at) {
  for (const TensorView *t : ts)
    if (elements(t) != elements(*ts.begin()))
      return Status::error(at + ": operands differ in local size (" +
                           toString((*ts.begin())->local) + " and " + toString(t->local) + ")");
  return Status::ok();
}

// A check whose work is not needed: its status.
template <class Work> Status statusOf(const StatusOr<Work> &w) {
  return w ? Status::ok() : w.status();
}

} // namespace sbpflow
