// sbpflow-worker: one process per node; connects to the driver, receives its
// rank and the plan, and runs what the driver asks. No LLVM/MLIR here.
#include "kernels/cpu/Kernels.h"
#include "runtime/cluster/Worker.h"
#include "tools/worker/PlanBackend.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <unistd.h>

int main(int argc, char **argv) {
  // OpenBLAS picks its kernels when it loads: to get better ones than it
  // detects (see preferredBlasCoreType), set the variable and start again.
  std::string core = sbpflow::cpu::preferredBlasCoreType();
  if (!core.empty()) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    execv("/proc/self/exe", argv);
    std::fprintf(stderr,
                 "warning: could not restart with OPENBLAS_CORETYPE=%s; GEMM runs on "
                 "OpenBLAS's own choice of kernels\n",
                 core.c_str());
  }
  CLI::App app{"sbpflow worker: runs one rank of a job for an sbpflow driver"};
  std::string connect;
  app.add_option("--connect", connect, "the driver's HOST:PORT")->required();
  CLI11_PARSE(app, argc, argv);
  auto where = sbpflow::cluster::parseHostPort(connect);
  if (!where) {
    std::fprintf(stderr, "error: --connect: %s\n", where.status().message().c_str());
    return 1;
  }
  auto backend = sbpflow::cluster::makePlanBackend();
  return sbpflow::cluster::runWorker({where->first, where->second}, *backend);
}
