// sbpflow-worker: one process per node; connects to the driver, receives its
// rank and the plan, and runs what the driver asks. No LLVM/MLIR here.
#include "runtime/cluster/Worker.h"
#include "tools/worker/PlanBackend.h"

#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char **argv) {
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
