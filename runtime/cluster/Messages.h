// The control-plane protocol between the driver and its workers (CAF remote
// messages). Tensors never travel here: only plans, ranks, rendezvous keys,
// step commands and per-step metrics.
#pragma once

#include <caf/actor.hpp>
#include <caf/atom.hpp>
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

// Worker -> driver, first message: who and where this worker is.
struct RegisterWorker {
  caf::actor worker;
  int32_t pid = 0;
  std::string host;
  int32_t port = 0; // where the worker's actor is published
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector &f, RegisterWorker &x) {
  return f(caf::meta::type_name("sbpflow.RegisterWorker"), x.worker, x.pid, x.host, x.port);
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
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector &f, WorkerSettings &x) {
  return f(caf::meta::type_name("sbpflow.WorkerSettings"), x.dataDir, x.dataKind, x.seed, x.threads,
           x.rendezvousTimeoutMs, x.traceDir, x.traceSteps, x.resumeDir);
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
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, ProgramInfo &x) {
  return f(caf::meta::type_name("sbpflow.ProgramInfo"), x.name, x.batches, x.globalBatch, x.samples,
           x.metricNames, x.metricReduce, x.labelsPerSample);
}

// Worker -> driver: plan verified, data open, communicators and executor built.
struct WorkerReady {
  int32_t rank = 0;
  std::vector<ProgramInfo> programs;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, WorkerReady &x) {
  return f(caf::meta::type_name("sbpflow.WorkerReady"), x.rank, x.programs);
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
  int64_t maxRssKb = 0; // getrusage(RUSAGE_SELF).ru_maxrss
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, ChunkDone &x) {
  return f(caf::meta::type_name("sbpflow.ChunkDone"), x.rank, x.steps, x.seconds, x.maxRssKb);
}

// Worker -> driver: anything failed; the message names rank, task and op.
struct WorkerError {
  int32_t rank = 0;
  std::string message;
};
template <class Inspector> typename Inspector::result_type inspect(Inspector &f, WorkerError &x) {
  return f(caf::meta::type_name("sbpflow.WorkerError"), x.rank, x.message);
}

// Driver -> worker: write the variable shards this rank owns (and, on rank
// 0, the index) to the checkpoint `dir`; answered with ChunkDone.
struct SaveCheckpoint {
  std::string dir;
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector &f, SaveCheckpoint &x) {
  return f(caf::meta::type_name("sbpflow.SaveCheckpoint"), x.dir);
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
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::Abort))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::StoreValue))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::StoreKeys))
CAF_ADD_TYPE_ID(sbpflow_cluster, (sbpflow::cluster::WriteTrace))
CAF_END_TYPE_ID_BLOCK(sbpflow_cluster)

namespace caf {
class actor_system_config;
}

namespace sbpflow::cluster {
// Loads the middleman, registers this protocol's types and turns on
// heartbeats (off by default in CAF 0.17: a frozen peer would go unnoticed).
void configureClusterSystem(caf::actor_system_config &cfg);
// One sleeping scheduler thread: for processes whose actors only dispatch.
void configureQuietScheduler(caf::actor_system_config &cfg);
} // namespace sbpflow::cluster
