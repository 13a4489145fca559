// sbpflow: the command-line front door. `run` drives a job over CAF workers,
// `inspect` prints a plan; `compile` (MLIR -> plan) is there when the
// compiler is built.
#include "runtime/cluster/Driver.h"
#include "runtime/plan/PlanLoader.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#ifdef SBPFLOW_HAVE_COMPILER
#include "compiler/CompileFlags.h"
#endif

#include <fstream>

using namespace sbpflow;

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  return 1;
}

struct CompileArgs {
  std::string source;
  std::string output;
#ifdef SBPFLOW_HAVE_COMPILER
  CompileOptions options; // --bf16, --compress, ...
#endif
};

CLI::App *addCompileCommand(CLI::App &app, CompileArgs &args) {
#ifdef SBPFLOW_HAVE_COMPILER
  auto *cmd = app.add_subcommand("compile", "compile an sbp MLIR module into a plan");
  cmd->add_option("SOURCE", args.source, "MLIR file (sbp dialect)")->required();
  cmd->add_option("-o,--output", args.output, "plan file to write")->required();
  addCompileFlags(*cmd, args.options);
  return cmd;
#else
  return nullptr;
#endif
}

int runCompile(const CompileArgs &args) {
#ifdef SBPFLOW_HAVE_COMPILER
  std::vector<uint8_t> bytes;
  // Diagnostics (file:line:col) are printed by the compiler as it goes.
  if (mlir::failed(compileFileToPlan(args.source, bytes, args.options)))
    return fail("compile: " + args.source + " did not compile");
  std::ofstream out(args.output, std::ios::binary);
  if (!out.write(reinterpret_cast<const char *>(bytes.data()), bytes.size()))
    return fail("compile: cannot write " + args.output);
  return 0;
#else
  return fail("compile: this sbpflow was built without the compiler");
#endif
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"sbpflow: distributed deep learning from SBP plans"};
  app.require_subcommand(1);

  std::string inspectPath;
  auto *inspect =
      app.add_subcommand("inspect", "print a plan's placements, variables and programs");
  inspect->add_option("PLAN", inspectPath, "plan file")->required();

  std::string runPath;
  RunOptions run;
  auto *runCmd = app.add_subcommand("run", "train a plan on CPU workers");
  runCmd->add_option("PLAN", runPath, "plan file")->required();
  auto *localOpt =
      runCmd->add_option("--local", run.localWorkers, "start N worker processes on this machine")
          ->check(CLI::PositiveNumber);
  auto *expectOpt =
      runCmd
          ->add_option("--expect", run.expectWorkers,
                       "wait for N workers started elsewhere (sbpflow-worker --connect)")
          ->check(CLI::PositiveNumber);
  auto *workersOpt =
      runCmd
          ->add_option("--workers", run.nodes,
                       "node daemons HOST:PORT,... (sbpflow-worker --listen) that start the ranks")
          ->delimiter(',');
  runCmd->add_option("--secret-file", run.secretFile, "with --workers: the cluster's shared secret")
      ->needs(workersOpt);
  runCmd
      ->add_option("--ranks-per-node", run.ranksPerNode,
                   "with --workers: rank processes on each node (global rank = node index x "
                   "this + local rank)")
      ->check(CLI::PositiveNumber)
      ->needs(workersOpt);
  localOpt->excludes(expectOpt);
  workersOpt->excludes(localOpt)->excludes(expectOpt);
  runCmd->add_option("--host", run.host, "interface the driver listens on");
  runCmd->add_option("--port", run.port, "port the driver listens on (0: any free port)");
  runCmd->add_option("--seed", run.seed, "shuffling seed");
  runCmd->add_option("--worker-binary", run.workerBinary,
                     "worker executable for --local (default: sbpflow-worker beside sbpflow)");
  addRunOptions(*runCmd, run);

  CompileArgs compileArgs;
  CLI::App *compileCmd = addCompileCommand(app, compileArgs);
  CLI11_PARSE(app, argc, argv);

  if (compileCmd && compileCmd->parsed())
    return runCompile(compileArgs);

  if (inspect->parsed()) {
    auto plan = loadPlanFile(inspectPath);
    if (!plan)
      return fail(plan.status().message());
    std::cout << describePlan(*plan->plan());
    return 0;
  }

  if (runCmd->parsed()) {
    if (run.localWorkers <= 0 && run.expectWorkers <= 0 && run.nodes.empty())
      return fail("run: pass --local N to start workers here, --workers HOST:PORT,... for node "
                  "daemons, or --expect N for workers started by hand");
    if (!run.nodes.empty() && run.secretFile.empty())
      return fail("run: --workers needs --secret-file FILE (the cluster's shared secret)");
    auto plan = loadPlanFile(runPath);
    if (!plan)
      return fail(plan.status().message());
    if (run.planOnly) {
      std::cout << "plan " << runPath << " verified" << std::endl;
      return 0;
    }
    JobReport report;
    Status s = runJob(plan->bytes(), run, &report);
    if (!s)
      return fail(s.message());
    return 0;
  }
  return 0;
}
