// What the plan says of each op kind (runtime/plan/Ops.def, one row per op):
// category, arity, element-type rule, attributes. The plan loader, the op
// registry and the compiler's plan emission read it; nothing else lists ops.
#pragma once

#include "runtime/plan/plan_generated.h"

namespace sbpflow {

enum class OpCategory { Source, View, Compute, Optimizer, Collective, LocalBoxing };

struct OpInfo {
  plan::OpKind kind;
  const char *name;
  OpCategory category;
  int minIn, maxIn, minOut, maxOut; // max -1: no bound
  // One letter per input / output, the last repeating (Ops.def: T F I A W C).
  const char *inTypes, *outTypes;
  plan::OpAttrs attrs; // NONE: the op takes no attributes
  bool attrsRequired;
  const char *doc;
};

// The row of `kind`, or null for a value Ops.def does not list.
const OpInfo *opInfo(plan::OpKind kind);

// Every row, in Ops.def order.
const OpInfo *opInfos(size_t &count);

} // namespace sbpflow
