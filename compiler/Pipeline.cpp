// compileModule / compileFileToPlan: the pass pipeline plus plan emission, and
// registration of the pipeline `sbp-compile` for sbpflow-opt.
#include "compiler/Pipeline.h"
#include "compiler/EmitPlan.h"
#include "compiler/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/SourceMgr.h"

using namespace mlir;
using namespace mlir::sbp;

namespace {
struct PipelineOptions : public PassPipelineOptions<PipelineOptions> {
  Option<bool> bf16{*this, "bf16", llvm::cl::desc("mixed precision (see CompileOptions)"),
                    llvm::cl::init(false)};
  // Defaults are CompileOptions'.
  Option<std::string> compress{*this, "compress",
                               llvm::cl::desc("gradient compression policy (see CompileOptions)"),
                               llvm::cl::init(CompileOptions{}.compress)};
  Option<int64_t> compressWarmupSteps{*this, "compress-warmup-steps",
                                      llvm::cl::desc("dense exchanges first"),
                                      llvm::cl::init(CompileOptions{}.compressWarmupSteps)};
  Option<int64_t> compressEpochSteps{*this, "compress-epoch-steps",
                                     llvm::cl::desc("DGC's warm-up epoch length"),
                                     llvm::cl::init(CompileOptions{}.compressEpochSteps)};
  Option<int64_t> lgrecoEvery{*this, "lgreco-every",
                              llvm::cl::desc("exchanges between L-GreCo's decisions"),
                              llvm::cl::init(CompileOptions{}.lgrecoEvery)};
  Option<std::string> sync{*this, "sync", llvm::cl::desc("local SGD (see CompileOptions)"),
                           llvm::cl::init(CompileOptions{}.sync)};
};
} // namespace

void mlir::sbp::buildCompilePipeline(OpPassManager &pm, const CompileOptions &options) {
  if (options.bf16)
    pm.addPass(createMixedPrecisionPass());
  pm.addPass(createAutodiffPass());
  if (options.bf16)
    pm.addPass(createFoldCastsPass());
  pm.addPass(createFuseBiasGeluPass());
  // Local SGD's replicas may only sum across their dimension (the first),
  // which sbp-local-sgd makes each replica's own estimate.
  pm.addPass(createPropagatePass([&] {
    PropagatePassOptions o;
    o.replicaDim = options.sync == "ddp" ? -1 : 0;
    return o;
  }()));
  pm.addPass(createInsertBoxingPass());
  if (options.sync != "ddp")
    pm.addPass(createLocalSgdPass([&] {
      LocalSgdPassOptions o;
      o.sync = options.sync;
      o.outerLr = options.outerLr;
      o.outerMomentum = options.outerMomentum;
      o.staleness = options.co2Staleness;
      o.gapPenalty = options.gapPenalty;
      o.outerClip = options.outerClip;
      o.sparselocoTopk = options.sparselocoTopk;
      o.sparselocoChunk = options.sparselocoChunk;
      o.errorDecay = options.errorDecay;
      o.sparselocoAverage = options.sparselocoAverage;
      o.editTemperature = options.editTemperature;
      o.pseudoGradClip = options.pseudoGradClip;
      o.aeditMinSteps = options.aeditMinSteps;
      o.aeditStepWeight = options.aeditStepWeight;
      return o;
    }()));
  pm.addPass(createCompressGradientsPass([&] {
    CompressGradientsPassOptions o;
    o.policy = options.compress;
    o.warmupSteps = options.compressWarmupSteps;
    o.epochSteps = options.compressEpochSteps;
    o.lgrecoEvery = options.lgrecoEvery;
    o.linkBytesPerSecond = options.linkBytesPerSecond;
    o.codecCosts = options.codecCosts;
    return o;
  }()));
  pm.addPass(createBucketGradientsPass());
  pm.addPass(createPlanMemoryPass());
}

void mlir::sbp::registerCompilePipeline() {
  PassPipelineRegistration<PipelineOptions>(
      "sbp-compile", "The whole sbpflow pipeline up to (not including) plan emission",
      [](OpPassManager &pm, const PipelineOptions &o) {
        CompileOptions options{o.bf16, o.compress, o.compressWarmupSteps, o.compressEpochSteps,
                               o.lgrecoEvery};
        options.sync = o.sync;
        buildCompilePipeline(pm, options);
      });
}

LogicalResult mlir::sbp::compileModule(ModuleOp module, std::vector<uint8_t> &plan,
                                       const CompileOptions &options) {
  MLIRContext *ctx = module.getContext();
  ctx->getOrLoadDialect<func::FuncDialect>();
  ctx->getOrLoadDialect<SbpDialect>();
  if (options.sync != "ddp" && options.compress != "none")
    return module.emitError("--compress ")
           << options.compress << " with --sync " << options.sync
           << ": the codecs compress data-parallel gradients, which local SGD does not exchange";
  PassManager pm(ctx, ModuleOp::getOperationName());
  buildCompilePipeline(pm, options);
  if (failed(pm.run(module)))
    return failure();
  return emitPlan(module, plan);
}

LogicalResult mlir::sbp::compileFileToPlan(llvm::StringRef path, std::vector<uint8_t> &plan,
                                           const CompileOptions &options) {
  DialectRegistry registry;
  registry.insert<SbpDialect, func::FuncDialect>();
  MLIRContext context(registry);
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(path, sourceMgr, &context);
  if (!module)
    return failure();
  return compileModule(*module, plan, options);
}
