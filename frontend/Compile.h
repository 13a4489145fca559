// From a DSL model to a plan: lowers the model to MLIR, runs the compiler's
// whole pipeline and emits the plan bytes. Compiler diagnostics come back in
// the error message with the model's source lines.
#pragma once

#include "compiler/Pipeline.h"
#include "frontend/Model.h"
#include "runtime/Status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow {

// When `mlirPath` is not empty, the module before compilation is written
// there; when `planPath` is not empty, the plan.
StatusOr<std::vector<uint8_t>> compileModel(const Model &model, const std::string &mlirPath = "",
                                            const std::string &planPath = "",
                                            const CompileOptions &options = {});

} // namespace sbpflow
