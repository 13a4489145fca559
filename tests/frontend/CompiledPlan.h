// What the frontend tests check of a model's plan: that it compiles, that the
// runtime's loader accepts it, and the names of its programs.
#pragma once

#include "frontend/Compile.h"
#include "frontend/Model.h"
#include "runtime/plan/PlanLoader.h"

#include <string>
#include <vector>

namespace sbpflow::testfrontend {

// `model` compiled and loaded as the runtime loads it; the error is the
// compiler's or, if it compiled, the loader's.
inline StatusOr<LoadedPlan> compileAndLoad(const Model &model) {
  auto bytes = compileModel(model);
  if (!bytes)
    return bytes.status();
  return loadPlanBuffer(*bytes);
}

// The names of `p`'s programs in plan order (train before eval).
inline std::vector<std::string> programNames(const plan::Plan *p) {
  std::vector<std::string> names;
  for (const plan::Program *program : *p->programs())
    names.push_back(program->name()->str());
  return names;
}

} // namespace sbpflow::testfrontend
