// The node daemon (`sbpflow-worker --listen HOST:PORT`): a long-running
// process per machine that starts the rank processes of one job at a time
// for a driver that proves it knows the cluster's shared secret. A job that
// fails ends its rank processes, never the daemon.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow::cluster {

struct NodeOptions {
  std::string host; // address to listen on; also the ranks' Gloo address
  uint16_t port = 0;
  std::string secret;     // the cluster's shared secret (readSecretFile)
  int maxRanks = 1;       // rank processes per job at most
  std::string rankBinary; // started as `rankBinary --connect DRIVER ...`
  // Extra arguments for every rank process (tests: a stand-in's options).
  std::vector<std::string> rankArgs;
  // Stop after this many jobs (0: serve forever); for tests.
  int64_t maxJobs = 0;
};

// Serves until killed (or maxJobs jobs ended); returns the exit status.
int runNode(const NodeOptions &options);

} // namespace sbpflow::cluster
