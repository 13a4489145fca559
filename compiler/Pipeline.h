// The whole compiler pipeline: an sbp module (from the frontend or a .mlir
// file) to plan bytes.
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/LogicalResult.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <string>
#include <vector>

namespace mlir::sbp {

struct CompileOptions {
  // Mixed precision: bf16 matmuls and attention, f32 master weights, losses
  // and reductions (sbp-mixed-precision, sbp-fold-casts).
  bool bf16 = false;
  // Gradient compression (sbp-compress-gradients): the policy (none, auto or
  // a codec spec), dense exchanges first, DGC's warm-up epoch length.
  std::string compress = "none";
  int64_t compressWarmupSteps = 0;
  int64_t compressEpochSteps = 0;
  int64_t lgrecoEvery = 100; // compress = lgreco[:FAMILY]: exchanges between decisions
  // compress = auto: the data-parallel link (0: the cost model's) and the
  // codec costs measured on the target (build/bin/codec_costs' JSON; empty:
  // the cost model's).
  double linkBytesPerSecond = 0;
  std::string codecCosts = "";
  // Local SGD (sbp-local-sgd): ddp (synchronous data parallelism),
  // diloco:H, co2:H or sparseloco:H; the outer optimiser's learning rate
  // and momentum (negative: the algorithm's defaults); CO2's staleness
  // (rounds, 0 or 1), gap penalty and outer momentum clipping (0: none);
  // SparseLoCo's values per chunk, chunk and error-feedback decay.
  std::string sync = "ddp";
  double outerLr = -1;
  double outerMomentum = -1;
  int64_t co2Staleness = 1;
  double gapPenalty = 1;
  double outerClip = 0;
  int64_t sparselocoTopk = 32;
  int64_t sparselocoChunk = 4096;
  double errorDecay = 0.95;
  std::string sparselocoAverage = "replicas"; // or "senders"
  // EDiT: the weights' softmax temperature (0: equal) and the averaged
  // pseudo-gradient's clip norm (0: none).
  double editTemperature = 0;
  double pseudoGradClip = 0;
  // A-EDiT: the fewest inner steps over all replicas a round synchronises,
  // and the share of a replica's weight its share of the steps gives.
  int64_t aeditMinSteps = 100;
  double aeditStepWeight = 0;
};

// Adds [mixed-precision] -> autodiff -> [fold-casts] -> fuse-bias-gelu ->
// propagate -> insert-boxing (+ check) -> [local-sgd] -> compress-gradients
// -> bucket-gradients -> plan-memory to `pm` (what `sbp-compile` runs).
void buildCompilePipeline(OpPassManager &pm, const CompileOptions &options = {});

// Registers the pipeline as `sbp-compile{bf16=...}` (sbpflow-opt).
void registerCompilePipeline();

// Runs the pipeline on `module` (in place) and emits the plan. Errors are
// reported through the module's context diagnostics.
LogicalResult compileModule(ModuleOp module, std::vector<uint8_t> &plan,
                            const CompileOptions &options = {});

// Parses a .mlir file (errors carry file:line:col) and compiles it.
LogicalResult compileFileToPlan(llvm::StringRef path, std::vector<uint8_t> &plan,
                                const CompileOptions &options = {});

} // namespace mlir::sbp

namespace sbpflow {
// The frontend calls these unqualified from namespace sbpflow.
using mlir::sbp::compileFileToPlan;
using mlir::sbp::compileModule;
using mlir::sbp::CompileOptions;
} // namespace sbpflow
