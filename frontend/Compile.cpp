// compileModel: DSL -> MLIR -> compiler pipeline -> plan bytes.
#include "frontend/Compile.h"

#include "compiler/Pipeline.h"
#include "ir/SbpDialect.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

namespace sbpflow {

StatusOr<std::vector<uint8_t>> compileModel(const Model &model, const std::string &mlirPath,
                                            const std::string &planPath,
                                            const CompileOptions &options) {
  mlir::OwningOpRef<mlir::ModuleOp> module = model.toMLIR();
  std::string diagnostics;
  llvm::raw_string_ostream os(diagnostics);
  mlir::ScopedDiagnosticHandler handler(module->getContext(), [&](mlir::Diagnostic &d) {
    os << d.getLocation() << ": " << d << "\n";
    for (const mlir::Diagnostic &note : d.getNotes())
      os << "  note: " << note << "\n";
    return mlir::success();
  });
  if (!mlirPath.empty()) {
    std::error_code ec;
    llvm::raw_fd_ostream out(mlirPath, ec);
    if (ec)
      return Status::error("cannot write " + mlirPath + ": " + ec.message());
    module->print(out);
  }
  if (mlir::failed(mlir::verify(*module)))
    return Status::error("model '" + model.name() + "' lowers to invalid MLIR:\n" + os.str());
  std::vector<uint8_t> plan;
  if (mlir::failed(compileModule(*module, plan, options)))
    return Status::error("compiling model '" + model.name() + "' failed:\n" + os.str());
  if (!planPath.empty()) {
    std::error_code ec;
    llvm::raw_fd_ostream out(planPath, ec);
    if (ec)
      return Status::error("cannot write " + planPath + ": " + ec.message());
    out.write(reinterpret_cast<const char *>(plan.data()), plan.size());
    out.close();
    if (out.has_error())
      return Status::error("cannot write " + planPath + ": " + out.error().message());
  }
  return plan;
}

} // namespace sbpflow
