// A worker process's control loop: connects to the driver, registers, and
// runs what the driver asks on a work thread (kernels and Gloo calls never
// block the actor that talks to the driver). What the work is comes from a
// RankBackend: the plan executor in sbpflow-worker, a stand-in in tests.
#pragma once

#include "runtime/Status.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/cluster/Messages.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gloo::rendezvous {
class Store;
}

namespace sbpflow::cluster {

class RankBackend {
public:
  virtual ~RankBackend() = default;
  // Verifies the plan, opens the data, connects the communicators through
  // `store`, builds the executor and, with settings.resumeDir, loads that
  // checkpoint; describes the programs the driver may run.
  virtual StatusOr<std::vector<ProgramInfo>> prepare(const std::string &planBytes, int rank,
                                                     int worldSize, gloo::rendezvous::Store &store,
                                                     const WorkerSettings &settings) = 0;
  using StepCallback = std::function<void(int64_t batch, const std::vector<double> &metrics)>;
  virtual Status run(const RunChunk &chunk, const StepCallback &onStep) = 0;
  // The payload bytes this rank's communicators have sent so far
  // (Executor::sentBytes): ChunkDone carries the difference across a run.
  virtual uint64_t sentBytes() const = 0;
  // Phase 1 of a checkpoint (SaveCheckpoint): writes this rank's shards of
  // every variable into the staging directory of save `generation` of `dir`
  // and returns what it wrote.
  virtual StatusOr<std::vector<checkpoint::ShardRecord>>
  writeCheckpointShards(const std::string &dir, uint64_t generation) = 0;
  // Phase 2, on global rank 0 (PublishCheckpoint): writes the index of every
  // rank's `shards`, recording `next` as where the training data continues,
  // and publishes the checkpoint as `dir`.
  virtual Status publishCheckpoint(const std::string &dir, uint64_t generation,
                                   const std::vector<checkpoint::ShardRecord> &shards,
                                   const checkpoint::DataPosition &next) = 0;
  // Where the checkpoint prepare() resumed from left the data ({0, 0}
  // without one).
  virtual checkpoint::DataPosition resumedAt() const = 0;
  // Writes what the runs recorded to the settings' traceDir.
  virtual Status writeTrace() = 0;
};

struct WorkerOptions {
  std::string driverHost;
  uint16_t driverPort = 0;
  // Set when a node daemon started this rank (runtime/cluster/Node.h): the
  // node's index, this rank's index on it, the job's token and the node's
  // address (where this rank's actor and Gloo devices listen).
  int node = -1;
  int localRank = -1;
  std::string jobToken = {};
  std::string bindHost = {};
};

// "host:port" -> (host, port); a clear error for anything else. Port 0 (any
// free port) only with `anyPortOk` (a daemon's --listen).
StatusOr<std::pair<std::string, uint16_t>> parseHostPort(const std::string &text,
                                                         bool anyPortOk = false);

// Runs until the driver says shut down (returns 0) or the job fails (the
// process ends with a non-zero status, even if a collective is blocked).
int runWorker(const WorkerOptions &options, RankBackend &backend);

} // namespace sbpflow::cluster
