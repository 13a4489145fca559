// The control-plane protocol between the driver and its workers (CAF remote
// messages). Tensors never travel here: only plans, ranks, rendezvous keys,
// step commands and per-step metrics.
#pragma once

#include "runtime/checkpoint/Checkpoint.h"

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/expected.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow::cluster {

// Atoms are at most 10 characters in CAF 0.17; the "sc" prefix keeps them
// apart from the executor's atoms (actors/Messages.h).
using store_set_atom = caf::atom_constant<caf::atom("scstoreset")>;
using store_get_atom = caf::atom_constant<caf::atom("scstoreget")>;
using store_wait_atom = caf::atom_constant<caf::atom("scstorewt")>;
using shutdown_atom = caf::atom_constant<caf::atom("scshutdown")>;

// The version of this protocol: a driver and a node daemon that disagree
// refuse each other with a message naming both versions.
constexpr int32_t kProtocolVersion = 6;

// Worker -> driver, first message: who and where this worker is.
struct RegisterWorker {
  caf::actor worker;
  int32_t pid = 0;
  std::string host;
  int32_t port = 0; // where the worker's actor is published
  // Started by a node daemon: its index in the driver's --workers list, the
  // rank's index on that node and the job's token; -1 / empty otherwise.
  int32_t node = -1;
  int32_t localRank = -1;
  std::string jobToken;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector &f, RegisterWorker &x) {
  return f(caf::meta::type_name("sbpflow.RegisterWorker"), x.worker, x.pid, x.host, x.port, x.node,
           x.localRank, x.jobToken);
}

// Driver -> node daemon, first: the driver's protocol version.
struct NodeHello {
  int32_t protocolVersion = 0;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, NodeHello &x) {
  return f(caf::meta::type_name("sbpflow.NodeHello"), x.protocolVersion);
}

// Node -> driver: the node's version, a fresh single-use nonce for this
// driver's StartJob, and how many ranks the node hosts at most.
struct NodeChallenge {
  int32_t protocolVersion = 0;
  std::string nonce;
  int32_t maxRanks = 0;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, NodeChallenge &x) {
  return f(caf::meta::type_name("sbpflow.NodeChallenge"), x.protocolVersion, x.nonce, x.maxRanks);
}

// Driver -> node: start `ranks` rank processes that connect back to the
// driver at driverHost:driverPort. `mac` = HMAC-SHA256(secret, signedText()).
struct StartJob {
  int32_t protocolVersion = 0;
  std::string nonce;
  std::string driverHost;
  int32_t driverPort = 0;
  int32_t node = 0; // this node's index in the driver's --workers list
  int32_t ranks = 0;
  std::string jobToken;
  std::string mac;
  std::string signedText() const {
    return "sbpflow-start-job/" + std::to_string(protocolVersion) + "/" + nonce + "/" + driverHost +
           "/" + std::to_string(driverPort) + "/" + std::to_string(node) + "/" +
           std::to_string(ranks) + "/" + jobToken;
  }
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StartJob &x) {
  return f(caf::meta::type_name("sbpflow.StartJob"), x.protocolVersion, x.nonce, x.driverHost,
           x.driverPort, x.node, x.ranks, x.jobToken, x.mac);
}

// Node -> driver: the answer to StartJob: the rank processes' pids, or why
// the node refused.
struct NodeReply {
  bool ok = false;
  std::string message;
  std::vector<int32_t> pids;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, NodeReply &x) {
  return f(caf::meta::type_name("sbpflow.NodeReply"), x.ok, x.message, x.pids);
}

// Driver -> node: the job is over (or failed): the node reaps its rank
// processes, killing those that do not end within a grace period.
struct EndJob {
  std::string reason;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, EndJob &x) {
  return f(caf::meta::type_name("sbpflow.EndJob"), x.reason);
}

// How a worker opens its data and runs its kernels; the same for every rank.
struct WorkerSettings {
  std::string dataDir;
  std::string dataKind = "fashion-mnist"; // or "fortunes", "synthetic" (cluster tests only)
  uint64_t seed = 0;
  int32_t threads = 1;
  int64_t rendezvousTimeoutMs = 60000;
  std::string traceDir; // empty: no tracing
  int64_t traceSteps = 0;
  std::string resumeDir; // non-empty: load this checkpoint once the executor is built
  // The address this rank's Gloo device listens on. The driver leaves it
  // empty; a rank started by a node daemon fills in the node's address
  // (empty: the host name's address).
  std::string glooHost;
  // "cpu", or "cuda": one GPU per rank, NCCL for its collectives.
  std::string device = "cpu";
  // The rank's index on its machine, which picks its GPU: a rank started by
  // a node daemon fills it in; -1 (the driver's value) means the global rank
  // (right for --local, where every rank is on one machine).
  int32_t localRank = -1;
  // The test harness's straggler: rank `slowRank` sleeps `slowStepUs`
  // microseconds after each train step (-1, 0: none).
  int32_t slowRank = -1;
  int64_t slowStepUs = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector &f, WorkerSettings &x) {
  return f(caf::meta::type_name("sbpflow.WorkerSettings"), x.dataDir, x.dataKind, x.seed, x.threads,
           x.rendezvousTimeoutMs, x.traceDir, x.traceSteps, x.resumeDir, x.glooHost, x.device,
           x.localRank, x.slowRank, x.slowStepUs);
}

// Driver -> worker: the rank, the plan and the rendezvous store.
struct Assignment {
  int32_t rank = 0;
  int32_t worldSize = 0;
  std::string plan; // the plan file's bytes
  caf::actor store;
  WorkerSettings settings;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, Assignment &x) {
  return f(caf::meta::type_name("sbpflow.Assignment"), x.rank, x.worldSize, x.plan, x.store,
           x.settings);
}

enum class MetricReduce : int32_t { Sum = 0, First = 1 };

// What a worker learnt from the plan and its data about one program.
struct ProgramInfo {
  std::string name;
  int64_t batches = 0;     // per epoch
  int64_t globalBatch = 0; // samples per step over all ranks
  int64_t samples = 0;     // size of the program's data set
  std::vector<std::string> metricNames;
  std::vector<int32_t> metricReduce; // MetricReduce values
  // Labels per sample that a "correct" metric counts (a character model
  // counts T per window): accuracy = correct / (samples * labelsPerSample).
  int64_t labelsPerSample = 1;
  // The schedule's inner program under timed rounds (A-EDiT): each replica
  // takes steps of its own, so a chunk's ranks report different batches.
  bool timedRounds = false;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, ProgramInfo &x) {
  return f(caf::meta::type_name("sbpflow.ProgramInfo"), x.name, x.batches, x.globalBatch, x.samples,
           x.metricNames, x.metricReduce, x.labelsPerSample, x.timedRounds);
}

// Worker -> driver: plan verified, data open, communicators and executor built;
// with a resumed checkpoint, where its training data continues (else 0, 0).
struct WorkerReady {
  int32_t rank = 0;
  std::vector<ProgramInfo> programs;
  int64_t nextEpoch = 0;
  int64_t nextBatch = 0;
  std::vector<int64_t> nextRankBatches; // timed rounds: every rank's (DataPosition)
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, WorkerReady &x) {
  return f(caf::meta::type_name("sbpflow.WorkerReady"), x.rank, x.programs, x.nextEpoch,
           x.nextBatch, x.nextRankBatches);
}

// Driver -> worker: run batches [firstBatch, firstBatch + count) of `program`.
struct RunChunk {
  std::string program;
  int64_t epoch = 0;
  int64_t firstBatch = 0;
  int64_t count = 0;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, RunChunk &x) {
  return f(caf::meta::type_name("sbpflow.RunChunk"), x.program, x.epoch, x.firstBatch, x.count);
}

// Worker -> driver after every step: this rank's local metric values.
struct StepMetrics {
  int32_t rank = 0;
  int64_t batch = 0;
  std::vector<double> values;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StepMetrics &x) {
  return f(caf::meta::type_name("sbpflow.StepMetrics"), x.rank, x.batch, x.values);
}

// Worker -> driver: a chunk (or a save) finished.
struct ChunkDone {
  int32_t rank = 0;
  int64_t steps = 0;
  double seconds = 0;
  int64_t maxRssKb = 0;   // getrusage(RUSAGE_SELF).ru_maxrss
  uint64_t sentBytes = 0; // payload bytes this rank's communicators sent in the chunk
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, ChunkDone &x) {
  return f(caf::meta::type_name("sbpflow.ChunkDone"), x.rank, x.steps, x.seconds, x.maxRssKb,
           x.sentBytes);
}

// Worker -> driver: anything failed; the message names rank, task and op.
struct WorkerError {
  int32_t rank = 0;
  std::string message;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, WorkerError &x) {
  return f(caf::meta::type_name("sbpflow.WorkerError"), x.rank, x.message);
}

// A checkpoint is saved in two phases, so that it appears whole or not at
// all (runtime/checkpoint/Checkpoint.h). Phase 1, driver -> every worker:
// write the variable shards this rank owns into the staging directory of
// save `generation` of `dir`; answered with ShardsWritten (or WorkerError,
// and the save goes no further).
struct SaveCheckpoint {
  std::string dir;
  uint64_t generation = 0;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector &f, SaveCheckpoint &x) {
  return f(caf::meta::type_name("sbpflow.SaveCheckpoint"), x.dir, x.generation);
}

// Worker -> driver: the shard files this rank wrote for SaveCheckpoint.
struct ShardsWritten {
  int32_t rank = 0;
  uint64_t generation = 0;
  std::vector<checkpoint::ShardRecord> shards;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, ShardsWritten &x) {
  return f(caf::meta::type_name("sbpflow.ShardsWritten"), x.rank, x.generation, x.shards);
}

// Phase 2, driver -> global rank 0 alone, once every rank answered
// ShardsWritten: write index.json listing every rank's `shards`, recording
// that the training data continues at batch `nextBatch` of epoch
// `nextEpoch`, and publish the staging directory as `dir` (atomically
// replacing a previous checkpoint there); answered with ChunkDone.
struct PublishCheckpoint {
  std::string dir;
  uint64_t generation = 0;
  int64_t nextEpoch = 0;
  int64_t nextBatch = 0;
  std::vector<checkpoint::ShardRecord> shards;
  std::vector<int64_t> nextRankBatches; // timed rounds: every rank's (DataPosition)
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector &f, PublishCheckpoint &x) {
  return f(caf::meta::type_name("sbpflow.PublishCheckpoint"), x.dir, x.generation, x.nextEpoch,
           x.nextBatch, x.shards, x.nextRankBatches);
}

// Driver -> worker, when a traced job ended: write this rank's trace to
// WorkerSettings::traceDir; answered with ChunkDone.
struct WriteTrace {};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, WriteTrace &) {
  return f(caf::meta::type_name("sbpflow.WriteTrace"));
}

// Driver -> worker: the job failed elsewhere; end this process (a rank may
// be blocked inside a collective that cannot be cancelled).
struct Abort {
  std::string reason;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, Abort &x) {
  return f(caf::meta::type_name("sbpflow.Abort"), x.reason);
}

// Rendezvous store payloads (Gloo's keys and values).
struct StoreValue {
  std::string bytes;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StoreValue &x) {
  return f(caf::meta::type_name("sbpflow.StoreValue"), x.bytes);
}
struct StoreKeys {
  std::vector<std::string> keys;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, StoreKeys &x) {
  return f(caf::meta::type_name("sbpflow.StoreKeys"), x.keys);
}

} // namespace sbpflow::cluster

namespace sbpflow::checkpoint {
// A shard file as ShardsWritten and PublishCheckpoint carry it.
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, ShardRecord &x) {
  return f(caf::meta::type_name("sbpflow.ShardRecord"), x.tensor, x.file, x.bytes, x.crc);
}
} // namespace sbpflow::checkpoint

// The executor's own messages (actors/Messages.h) start at first_custom_type_id.
CAF_BEGIN_TYPE_ID_BLOCK(sbpflow_cluster, caf::first_custom_type_id + 200)
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::RegisterWorker))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::WorkerSettings))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::Assignment))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::ProgramInfo))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::WorkerReady))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::RunChunk))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::StepMetrics))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::ChunkDone))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::WorkerError))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::SaveCheckpoint))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::checkpoint::ShardRecord))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::ShardsWritten))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::PublishCheckpoint))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::Abort))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::StoreValue))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::StoreKeys))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::WriteTrace))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::NodeHello))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::NodeChallenge))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::StartJob))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::NodeReply))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::EndJob))
CAF_END_TYPE_ID_BLOCK(sbpflow_cluster)

namespace caf {
class actor_system;
class actor_system_config;
} // namespace caf

namespace sbpflow::cluster {
// Loads the middleman, registers this protocol's types and turns on
// heartbeats (off by default in CAF 0.17: a frozen peer would go unnoticed).
void configureClusterSystem(caf::actor_system_config &cfg);

// The actor published at host:port, as the middleman's remote_actor finds
// it, tried again where the connection was closed as timed out before the
// server's handshake arrived, until the connection timeout (6 s) has passed.
// CAF 0.17.6's BASP broker leaves a client connection's last-seen time at
// the clock's epoch until the server's first bytes arrive, so a heartbeat
// tick in between (one a second, configureClusterSystem) closes it with
// sec::connection_timeout: a server busy for a moment (a node daemon that
// was sent a header announcing a payload of gigabytes allocates it before
// it reads on), a slow link, a loaded machine.
caf::expected<caf::actor> remoteActor(caf::actor_system &system, const std::string &host,
                                      uint16_t port);
// One sleeping scheduler thread: for processes whose actors only dispatch.
void configureQuietScheduler(caf::actor_system_config &cfg);
} // namespace sbpflow::cluster
