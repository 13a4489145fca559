// sbpflow-worker: either a node daemon (--listen HOST:PORT: starts the rank
// processes of one job at a time for a driver that knows the cluster's
// secret) or one rank (--connect HOST:PORT: connects to the driver, receives
// its rank and the plan, and runs what the driver asks). No LLVM/MLIR here.
#include "kernels/cpu/Kernels.h"
#include "runtime/cluster/Auth.h"
#include "runtime/cluster/Node.h"
#include "runtime/cluster/Processes.h"
#include "runtime/cluster/Worker.h"
#include "tools/worker/PlanBackend.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <tuple>
#include <unistd.h>

namespace {

int fail(const std::string &what, const std::string &message) {
  std::fprintf(stderr, "error: %s: %s\n", what.c_str(), message.c_str());
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  using namespace sbpflow::cluster;
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
  CLI::App app{"sbpflow worker: a node daemon (--listen) or one rank of a job (--connect)"};
  std::string connect, listen, secretFile;
  WorkerOptions rank;
  NodeOptions node;
  auto *connectOpt = app.add_option("--connect", connect, "run one rank for the driver HOST:PORT");
  auto *listenOpt = app.add_option("--listen", listen,
                                   "serve as the node daemon on HOST:PORT (drivers connect with "
                                   "sbpflow run --workers)");
  connectOpt->excludes(listenOpt);
  app.add_option("--secret-file", secretFile,
                 "with --listen: the cluster's shared secret (at least 16 bytes); only a driver "
                 "that knows it can start jobs")
      ->needs(listenOpt);
  app.add_option("--ranks", node.maxRanks, "with --listen: rank processes per job at most")
      ->check(CLI::PositiveNumber)
      ->needs(listenOpt);
  app.add_option("--max-jobs", node.maxJobs, "with --listen: exit after N jobs (tests)")
      ->check(CLI::NonNegativeNumber)
      ->needs(listenOpt);
  // Set by the node daemon for the ranks it starts.
  app.add_option("--node", rank.node, "this rank's node index (set by the node daemon)")
      ->needs(connectOpt);
  app.add_option("--local-rank", rank.localRank, "this rank's index on its node")
      ->needs(connectOpt);
  app.add_option("--job-token", rank.jobToken, "the job's token")->needs(connectOpt);
  app.add_option("--bind", rank.bindHost, "the node's address for this rank's sockets")
      ->needs(connectOpt);
  CLI11_PARSE(app, argc, argv);

  if (!listen.empty()) {
    auto where = parseHostPort(listen, /*anyPortOk=*/true);
    if (!where)
      return fail("--listen", where.status().message());
    std::tie(node.host, node.port) = *where;
    if (secretFile.empty())
      return fail("--listen", "needs --secret-file FILE (the cluster's shared secret)");
    auto secret = readSecretFile(secretFile);
    if (!secret)
      return fail("--secret-file", secret.status().message());
    node.secret = *secret;
    node.rankBinary = selfExecutable();
    if (node.rankBinary.empty())
      return fail("--listen", "cannot read /proc/self/exe to start rank processes");
    return runNode(node);
  }
  if (connect.empty())
    return fail("sbpflow-worker", "pass --listen HOST:PORT (node daemon) or --connect HOST:PORT");
  auto where = parseHostPort(connect);
  if (!where)
    return fail("--connect", where.status().message());
  std::tie(rank.driverHost, rank.driverPort) = *where;
  auto backend = makePlanBackend();
  return runWorker(rank, *backend);
}
