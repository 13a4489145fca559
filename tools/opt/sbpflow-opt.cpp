// sbpflow-opt: MlirOptMain with the sbp and func dialects, the sbpflow passes
// and the `sbp-compile` pipeline, for FileCheck tests and debugging.
#include "compiler/Passes.h"
#include "compiler/Pipeline.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "llvm/Support/CommandLine.h"

#include <memory>

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::sbp::SbpDialect, mlir::func::FuncDialect>();
  mlir::sbp::registerSbpPasses();
  mlir::sbp::registerCompilePipeline();

  // LLVM registers --debug-only only in builds with assertions; provide it
  // otherwise so that `--debug-only=sbp-insert-boxing` works everywhere.
  std::unique_ptr<llvm::cl::list<std::string>> debugOnly;
  if (!llvm::cl::getRegisteredOptions().count("debug-only"))
    debugOnly = std::make_unique<llvm::cl::list<std::string>>(
        "debug-only", llvm::cl::desc("Print sbpflow debug output of these types (comma list)"),
        llvm::cl::CommaSeparated);

  auto [inputFile, outputFile] =
      mlir::registerAndParseCLIOptions(argc, argv, "sbpflow optimizer driver\n", registry);
  if (debugOnly)
    mlir::sbp::setSbpDebugTypes(std::vector<std::string>(debugOnly->begin(), debugOnly->end()));
  return mlir::asMainReturnCode(mlir::MlirOptMain(argc, argv, inputFile, outputFile, registry));
}
