// The driver's control loop: registration, plan shipping, rendezvous, epochs
// of train/eval chunks with per-step metric combination, failure handling.
#include "runtime/cluster/Driver.h"

#include "runtime/cluster/Auth.h"
#include "runtime/cluster/CafStore.h"
#include "runtime/cluster/Processes.h"
#include "runtime/cluster/Worker.h"
#include "runtime/data/FortunesText.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <ostream>
#include <thread>

namespace sbpflow::cluster {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct WorkerRecord {
  caf::actor actor;
  int slot = -1; // started by a node: node * ranksPerNode + local rank
  int pid = 0;
  std::string host;
  int port = 0;
  bool alive = true;
  bool ready = false;
  bool chunkDone = false;
  bool shardsWritten = false; // phase 1 of the current checkpoint
  std::vector<ProgramInfo> programs;
  int64_t nextEpoch = 0, nextBatch = 0; // where a resumed checkpoint's data continues
  std::vector<int64_t> nextRankBatches; // and every rank's, under timed rounds
  int64_t maxRssKb = 0;
  int64_t stepsReported = 0;   // in the current chunk
  uint64_t chunkSentBytes = 0; // communicator payload bytes sent in the current chunk
  uint64_t trainSentBytes = 0; // over every train chunk of the job
  int64_t chunkSteps = 0;      // the steps it ran in the current chunk
  int64_t trainSteps = 0;      // over every train chunk of the job
};

// Per-step metric values waiting for the slower ranks.
struct PendingStep {
  int received = 0;
  std::vector<double> sum;
  std::vector<double> first; // rank 0's values
};

class Driver {
public:
  Driver(caf::actor_system &system, const RunOptions &options)
      : system_(system), self_(system), options_(options) {}

  Status run(const std::vector<uint8_t> &planBytes, JobReport *report) {
    Status status = runPhases(planBytes, report);
    if (!status)
      abortAll(status.message());
    else
      shutdownAll();
    self_->send_exit(store_, caf::exit_reason::user_shutdown);
    if (published_)
      system_.middleman().unpublish(caf::actor_cast<caf::actor>(self_), port_);
    return status;
  }

private:
  int world() const {
    if (!options_.nodes.empty())
      return static_cast<int>(options_.nodes.size()) * options_.ranksPerNode;
    return options_.localWorkers > 0 ? options_.localWorkers : options_.expectWorkers;
  }

  // Asks every node daemon to start its ranks: hello (version, nonce), then
  // StartJob signed with the shared secret. Any refusal ends the job.
  Status startNodes() {
    auto secret = readSecretFile(options_.secretFile);
    if (!secret)
      return secret.status().withContext("--secret-file");
    jobToken_ = randomNonce();
    const auto timeout =
        std::chrono::milliseconds(std::min<int64_t>(options_.rendezvousTimeoutMs, 15000));
    for (size_t i = 0; i < options_.nodes.size(); ++i) {
      const std::string &at = options_.nodes[i];
      auto hp = parseHostPort(at);
      if (!hp)
        return hp.status().withContext("--workers");
      auto node = remoteActor(system_, hp->first, hp->second);
      if (!node)
        return Status::error("cannot reach node " + at + ": " + system_.render(node.error()));
      Status status = Status::ok();
      NodeChallenge challenge;
      self_->request(*node, timeout, NodeHello{kProtocolVersion})
          .receive([&](NodeChallenge &c) { challenge = std::move(c); },
                   [&](caf::error &e) {
                     status = Status::error("node " + at +
                                            " did not answer hello: " + system_.render(e));
                   });
      if (!status)
        return status;
      if (challenge.protocolVersion != kProtocolVersion)
        return Status::error("node " + at + " speaks protocol version " +
                             std::to_string(challenge.protocolVersion) + ", this driver " +
                             std::to_string(kProtocolVersion) +
                             ": run the same sbpflow release on every node");
      if (challenge.nonce.empty())
        return Status::error("node " + at + " sent no nonce to sign the job request with");
      if (options_.ranksPerNode > challenge.maxRanks)
        return Status::error("node " + at + " hosts at most " + std::to_string(challenge.maxRanks) +
                             " rank(s), " + std::to_string(options_.ranksPerNode) +
                             " asked (--ranks-per-node)");
      StartJob job;
      job.protocolVersion = kProtocolVersion;
      job.nonce = challenge.nonce;
      job.driverHost = options_.host;
      job.driverPort = port_;
      job.node = static_cast<int32_t>(i);
      job.ranks = options_.ranksPerNode;
      job.jobToken = jobToken_;
      job.mac = hmacHex(*secret, job.signedText());
      NodeReply reply;
      self_->request(*node, timeout, job)
          .receive([&](NodeReply &r) { reply = std::move(r); },
                   [&](caf::error &e) {
                     status = Status::error(
                         "node " + at + " did not answer the job request: " + system_.render(e));
                   });
      if (!status)
        return status;
      if (!reply.ok)
        return Status::error("node " + at + " refused the job: " + reply.message);
      self_->monitor(*node);
      nodes_.push_back({*node, at});
    }
    return Status::ok();
  }

  // Tells every node daemon the job is over (they reap their ranks).
  void endNodes(const std::string &reason) {
    for (auto &n : nodes_)
      self_->send(n.actor, EndJob{reason});
    nodes_.clear();
  }

  void fail(std::string message) {
    if (failure_.empty())
      failure_ = std::move(message);
  }
  bool failed() const { return !failure_.empty(); }

  std::string workerName(int rank) const {
    const auto &w = workers_[rank];
    return "worker " + std::to_string(rank) + " (pid " + std::to_string(w.pid) + ", " + w.host +
           ":" + std::to_string(w.port) + ")";
  }

  // Where the job is, as seen by `rank` (its own next step) when known.
  std::string whereNow(int rank = -1) const {
    if (currentProgram_.empty())
      return phase_;
    int64_t step = rank >= 0 ? workers_[rank].stepsReported : stepsCombined_;
    return "step " + std::to_string(step + 1) + " of " + currentProgram_ + " (epoch " +
           std::to_string(currentEpoch_ + 1) + ")";
  }

  void lostWorker(int rank, const std::string &reason) {
    auto &w = workers_[rank];
    if (!w.alive)
      return;
    w.alive = false;
    fail(workerName(rank) + " lost during " + whereNow(rank) + ": " + reason);
  }

  // Why a peer's actor went down, in words.
  std::string describeDown(const caf::error &reason) const {
    if (reason == caf::exit_reason::remote_link_unreachable)
      return "its connection was lost (a closed socket, or no heartbeat for the connection "
             "timeout: the process is frozen or the network is cut) [" +
             system_.render(reason) + "]";
    return system_.render(reason);
  }

  int rankOf(const caf::actor_addr &addr) const {
    for (size_t i = 0; i < workers_.size(); ++i)
      if (workers_[i].actor.address() == addr)
        return static_cast<int>(i);
    return -1;
  }

  // Receives one message (or times out) and folds it into the job state.
  void pump(milliseconds wait) {
    self_->receive(
        [&](RegisterWorker &r) {
          if (static_cast<int>(workers_.size()) >= world() || registrationClosed_) {
            self_->send(r.worker,
                        Abort{"the job already has " + std::to_string(world()) + " workers"});
            return;
          }
          WorkerRecord w;
          if (!options_.nodes.empty()) {
            // Only the ranks our nodes started, each slot once.
            int slot = r.node * options_.ranksPerNode + r.localRank;
            bool taken = false;
            for (const auto &o : workers_)
              taken |= o.slot == slot;
            if (!sameMac(r.jobToken, jobToken_) || r.node < 0 ||
                r.node >= static_cast<int>(options_.nodes.size()) || r.localRank < 0 ||
                r.localRank >= options_.ranksPerNode || taken) {
              self_->send(r.worker, Abort{"not a rank of this job"});
              return;
            }
            w.slot = slot;
          }
          self_->monitor(r.worker);
          w.actor = r.worker;
          w.pid = r.pid;
          w.host = r.host;
          w.port = r.port;
          workers_.push_back(std::move(w));
        },
        [&](WorkerReady &r) {
          if (r.rank < 0 || r.rank >= static_cast<int>(workers_.size()))
            return;
          workers_[r.rank].ready = true;
          workers_[r.rank].programs = std::move(r.programs);
          workers_[r.rank].nextEpoch = r.nextEpoch;
          workers_[r.rank].nextBatch = r.nextBatch;
          workers_[r.rank].nextRankBatches = std::move(r.nextRankBatches);
        },
        [&](StepMetrics &m) { onStep(m); },
        [&](ShardsWritten &w) {
          if (w.rank < 0 || w.rank >= static_cast<int>(workers_.size()) ||
              w.generation != saveGeneration_ || workers_[w.rank].shardsWritten)
            return;
          workers_[w.rank].shardsWritten = true;
          for (auto &shard : w.shards)
            savedShards_.push_back(std::move(shard));
        },
        [&](ChunkDone &d) {
          if (d.rank < 0 || d.rank >= static_cast<int>(workers_.size()))
            return;
          workers_[d.rank].chunkDone = true;
          workers_[d.rank].maxRssKb = std::max(workers_[d.rank].maxRssKb, d.maxRssKb);
          workers_[d.rank].chunkSentBytes = d.sentBytes;
          workers_[d.rank].chunkSteps = d.steps;
        },
        [&](WorkerError &e) {
          // A rank's error is often the echo of a peer that died (Gloo sees
          // the reset first): hold it briefly so the lost peer, the cause,
          // is what gets reported.
          if (!workerError_.empty())
            return;
          if (e.rank >= 0 && e.rank < static_cast<int>(workers_.size()))
            workerError_ =
                workerName(e.rank) + " failed during " + whereNow(e.rank) + ": " + e.message;
          else
            workerError_ = "worker failed during " + whereNow() + ": " + e.message;
          workerErrorAt_ = Clock::now();
        },
        [&](caf::down_msg &dm) {
          for (const auto &n : nodes_)
            if (n.actor.address() == dm.source && !shuttingDown_)
              fail("node " + n.at + " lost during " + whereNow() + ": " + describeDown(dm.reason));
          int rank = rankOf(dm.source);
          if (rank >= 0 && !shuttingDown_)
            lostWorker(rank, describeDown(dm.reason));
          else if (rank >= 0)
            workers_[rank].alive = false;
        },
        caf::after(wait) >> [] {});
    pollChildren();
    if (!workerError_.empty() && Clock::now() - workerErrorAt_ > kPeerLossGrace)
      fail(workerError_);
  }

  static constexpr milliseconds kPeerLossGrace{1000};

  void pollChildren() {
    while (auto ended = local_.pollExited()) {
      if (shuttingDown_)
        continue;
      int rank = -1;
      for (size_t i = 0; i < workers_.size(); ++i)
        if (workers_[i].pid == ended->first)
          rank = static_cast<int>(i);
      if (rank >= 0)
        lostWorker(rank, "process " + ended->second);
      else
        fail("worker process pid " + std::to_string(ended->first) + " " + ended->second +
             " before registering with the driver");
    }
  }

  // Pumps until `done()` or failure; `deadline` bounds phases that must not
  // wait forever (registration, rendezvous).
  Status pumpUntil(const std::function<bool()> &done, std::optional<Clock::time_point> deadline,
                   const std::string &what) {
    while (!failed() && !done()) {
      if (deadline && Clock::now() >= *deadline)
        fail("timed out after " + std::to_string(options_.rendezvousTimeoutMs) +
             " ms waiting for " + what);
      else
        pump(milliseconds(workerError_.empty() ? 100 : 20));
    }
    return failed() ? Status::error(failure_) : Status::ok();
  }

  Status runPhases(const std::vector<uint8_t> &planBytes, JobReport *report) {
    if (world() <= 0)
      return Status::error("no workers: pass --local N (N >= 1) or expect N >= 1 workers");
    if (planBytes.empty())
      return Status::error("the plan is empty");
    if (options_.slowRank >= world() || (options_.slowStepMs > 0) != (options_.slowRank >= 0))
      return Status::error("--slow-rank " + std::to_string(options_.slowRank) + " --slow-step-ms " +
                           std::to_string(options_.slowStepMs) +
                           ": a straggler needs both, its rank below " + std::to_string(world()));
    store_ = spawnStoreActor(system_);

    auto published = system_.middleman().publish(caf::actor_cast<caf::actor>(self_), options_.port,
                                                 options_.host.c_str(), true);
    if (!published)
      return Status::error("cannot publish the driver on " + options_.host + ":" +
                           std::to_string(options_.port) + ": " +
                           system_.render(published.error()));
    port_ = *published;
    published_ = true;
    if (options_.log && options_.localWorkers <= 0 && options_.nodes.empty())
      *options_.log << "driver listening on " << options_.host << ":" << port_ << ", waiting for "
                    << world() << " workers" << std::endl;

    if (!options_.nodes.empty()) {
      phase_ = "starting the ranks on the nodes";
      if (Status n = startNodes(); !n)
        return n;
    } else if (options_.localWorkers > 0) {
      std::string binary =
          options_.workerBinary.empty() ? siblingWorkerBinary() : options_.workerBinary;
      if (access(binary.c_str(), X_OK) != 0)
        return Status::error("worker executable '" + binary +
                             "' not found or not executable (needed by --local)");
      std::vector<std::string> args = {"--connect", options_.host + ":" + std::to_string(port_)};
      args.insert(args.end(), options_.workerArgs.begin(), options_.workerArgs.end());
      for (int i = 0; i < options_.localWorkers; ++i)
        if (auto pid = local_.spawn(binary, args); !pid)
          return pid.status();
    }

    auto deadline = Clock::now() + milliseconds(options_.rendezvousTimeoutMs);
    phase_ = "registration";
    Status s = pumpUntil([&] { return static_cast<int>(workers_.size()) == world(); }, deadline,
                         std::string("registration"));
    if (!s)
      return s.withContext(std::to_string(workers_.size()) + " of " + std::to_string(world()) +
                           " workers registered");
    registrationClosed_ = true;
    if (!options_.nodes.empty())
      std::sort(workers_.begin(), workers_.end(),
                [](const WorkerRecord &a, const WorkerRecord &b) { return a.slot < b.slot; });
    if (options_.onWorkersRegistered) {
      std::vector<int> pids;
      for (const auto &w : workers_)
        pids.push_back(w.pid);
      options_.onWorkersRegistered(pids);
    }

    // Ranks follow registration order; every worker gets the same plan.
    std::string plan(planBytes.begin(), planBytes.end());
    WorkerSettings settings;
    settings.dataDir = options_.dataDir;
    if (settings.dataDir.empty())
      settings.dataDir =
          options_.data == "fortunes" ? kDefaultFortunesDir : kDefaultFashionMnistDir;
    settings.dataKind = options_.data;
    settings.seed = options_.seed;
    settings.threads = options_.threads;
    settings.device = options_.device;
    settings.rendezvousTimeoutMs = options_.rendezvousTimeoutMs;
    settings.traceDir = options_.traceDir;
    settings.traceSteps = options_.traceDir.empty() ? 0 : options_.traceSteps;
    settings.resumeDir = options_.resumeDir;
    settings.slowRank = options_.slowRank;
    settings.slowStepUs = static_cast<int64_t>(options_.slowStepMs * 1000.0);
    for (int r = 0; r < world(); ++r)
      self_->send(workers_[r].actor, Assignment{r, world(), plan, store_, settings});

    phase_ = "rendezvous";
    s = pumpUntil(
        [&] {
          for (const auto &w : workers_)
            if (!w.ready)
              return false;
          return true;
        },
        deadline, std::string("every worker to connect its communicators (rendezvous)"));
    if (!s)
      return s;
    if (Status c = checkProgramsAgree(); !c)
      return c;

    return train(report);
  }

  Status checkProgramsAgree() {
    const auto &ref = workers_[0].programs;
    for (int r = 1; r < world(); ++r) {
      const auto &p = workers_[r].programs;
      bool same = p.size() == ref.size();
      for (size_t i = 0; same && i < p.size(); ++i)
        same = p[i].name == ref[i].name && p[i].batches == ref[i].batches &&
               p[i].globalBatch == ref[i].globalBatch && p[i].samples == ref[i].samples &&
               p[i].metricNames == ref[i].metricNames && p[i].metricReduce == ref[i].metricReduce;
      if (!same)
        return Status::error("rank " + std::to_string(r) +
                             " disagrees with rank 0 about the plan's programs or data sizes "
                             "(different plan or data on that node?)");
      if (workers_[r].nextEpoch != workers_[0].nextEpoch ||
          workers_[r].nextBatch != workers_[0].nextBatch ||
          workers_[r].nextRankBatches != workers_[0].nextRankBatches)
        return Status::error("rank " + std::to_string(r) +
                             " resumed a checkpoint at another data position than rank 0 "
                             "(different checkpoint directories on the nodes?)");
    }
    return Status::ok();
  }

  const ProgramInfo *program(const std::string &name) const {
    for (const auto &p : workers_[0].programs)
      if (p.name == name)
        return &p;
    return nullptr;
  }

  static int metricIndex(const ProgramInfo &p, const std::string &name) {
    for (size_t i = 0; i < p.metricNames.size(); ++i)
      if (p.metricNames[i] == name)
        return static_cast<int>(i);
    return -1;
  }

  void onStep(const StepMetrics &m) {
    if (!chunkProgram_ || m.rank < 0 || m.rank >= world())
      return;
    size_t n = chunkProgram_->metricNames.size();
    if (m.values.size() != n) {
      fail(workerName(m.rank) + " reported " + std::to_string(m.values.size()) + " metrics for " +
           currentProgram_ + ", the plan has " + std::to_string(n));
      return;
    }
    ++workers_[m.rank].stepsReported;
    auto &p = pending_[m.batch];
    if (p.sum.empty()) {
      p.sum.assign(n, 0.0);
      p.first.assign(n, 0.0);
    }
    for (size_t i = 0; i < n; ++i)
      p.sum[i] += m.values[i];
    if (m.rank == 0)
      p.first = m.values;
    if (++p.received < world())
      return;
    std::vector<double> combined(n);
    for (size_t i = 0; i < n; ++i)
      combined[i] = chunkProgram_->metricReduce[i] == static_cast<int32_t>(MetricReduce::First)
                        ? p.first[i]
                        : p.sum[i];
    pending_.erase(m.batch);
    ++stepsCombined_;
    if (onCombined_)
      onCombined_(combined);
  }

  // Runs one chunk on every rank and feeds each combined step to `onCombined`.
  // Under timed rounds `rankFirst` (if not empty) is every rank's first batch.
  Status runChunk(const ProgramInfo &program, int64_t epoch, int64_t firstBatch, int64_t count,
                  std::function<void(const std::vector<double> &)> onCombined,
                  const std::vector<int64_t> &rankFirst = {}) {
    currentProgram_ = program.name;
    currentEpoch_ = epoch;
    stepsCombined_ = 0;
    pending_.clear();
    chunkProgram_ = &program;
    onCombined_ = std::move(onCombined);
    for (size_t r = 0; r < workers_.size(); ++r) {
      WorkerRecord &w = workers_[r];
      w.chunkDone = false;
      w.stepsReported = 0;
      w.chunkSentBytes = 0;
      w.chunkSteps = 0;
      self_->send(w.actor, RunChunk{program.name, epoch,
                                    r < rankFirst.size() ? rankFirst[r] : firstBatch, count});
    }
    // Under timed rounds the replicas' batches differ: the steps every rank
    // reached are combined, the others are not.
    Status s = pumpUntil(
        [&] {
          for (const auto &w : workers_)
            if (!w.chunkDone)
              return false;
          return program.timedRounds || stepsCombined_ >= count;
        },
        std::nullopt, std::string(program.name));
    chunkProgram_ = nullptr;
    onCombined_ = nullptr;
    if (s)
      currentProgram_.clear();
    return s;
  }

  Status train(JobReport *report) {
    const ProgramInfo *trainProg = program("train");
    if (!trainProg)
      return Status::error("the plan has no \"train\" program");
    const ProgramInfo *evalProg = program("eval");
    int lossIdx = metricIndex(*trainProg, "loss");
    int correctIdx = evalProg ? metricIndex(*evalProg, "correct") : -1;
    int evalLossIdx = evalProg ? metricIndex(*evalProg, "loss") : -1;
    const int64_t batches = trainProg->batches;
    if (batches <= 0)
      return Status::error(
          "the train program has no batches: " + std::to_string(trainProg->samples) +
          " samples, global batch " + std::to_string(trainProg->globalBatch));
    // A resumed job continues the data where its checkpoint left it (the
    // next batch of that epoch); --epochs and --max-steps count from there.
    // Under timed rounds every rank continues at its own batch.
    next_ = {workers_[0].nextEpoch, workers_[0].nextBatch, workers_[0].nextRankBatches};
    auto pastTheEpoch = [&](const checkpoint::DataPosition &at) {
      return at.batch >= batches || std::any_of(at.rankBatches.begin(), at.rankBatches.end(),
                                                [&](int64_t b) { return b >= batches; });
    };
    if (pastTheEpoch(next_))
      next_ = {next_.epoch + 1, 0, {}};
    if (!next_.rankBatches.empty() &&
        (!trainProg->timedRounds || next_.rankBatches.size() != workers_.size()))
      return Status::error("the checkpoint gives " + std::to_string(next_.rankBatches.size()) +
                           " ranks their own data positions (timed rounds), this job has " +
                           std::to_string(workers_.size()) + " ranks" +
                           (trainProg->timedRounds ? "" : " and no timed rounds"));
    const int64_t firstEpoch = next_.epoch;
    auto stepsFrom = [&](int64_t first) {
      int64_t n = batches - first;
      return options_.maxSteps >= 0 ? std::min(n, options_.maxSteps) : n;
    };
    const int64_t steps = stepsFrom(next_.batch);
    std::ostream *log = options_.log;
    double trainSeconds = 0;
    int64_t trainSteps = 0;
    // Steady-state step time: first epoch, after a warm-up that pays for page
    // faults and connection set-up (the same rule as bench/mlp_torch.py).
    const int64_t warmup = std::min<int64_t>(10, steps / 5);
    Clock::time_point warmEnd, lastStep;

    for (int64_t epoch = firstEpoch; epoch < firstEpoch + options_.epochs; ++epoch) {
      auto epochStart = Clock::now();
      auto lastPrint = epochStart;
      int64_t lastPrintedStep = 0;
      const int64_t first = epoch == firstEpoch ? next_.batch : 0;
      const int64_t count = stepsFrom(first);
      if (count <= 0)
        return Status::error("no train steps to run from batch " + std::to_string(first) +
                             " of epoch " + std::to_string(epoch + 1));
      const std::vector<int64_t> rankFirst =
          epoch == firstEpoch ? next_.rankBatches : std::vector<int64_t>{};
      Status s = runChunk(
          *trainProg, epoch, first, count,
          [&](const std::vector<double> &metrics) {
            double loss = lossIdx >= 0 ? metrics[lossIdx] : 0.0;
            if (report)
              report->lossHistory.push_back(loss);
            int64_t step = stepsCombined_;
            lastStep = Clock::now();
            if (epoch == firstEpoch && step == warmup)
              warmEnd = lastStep;
            if (log && (step % std::max(1, options_.logEvery) == 0 || step == count)) {
              auto now = Clock::now();
              double secs = std::chrono::duration<double>(now - lastPrint).count();
              double rate = secs > 0 ? (step - lastPrintedStep) * trainProg->globalBatch / secs : 0;
              char line[256];
              std::snprintf(line, sizeof(line),
                            "epoch %lld step %lld/%lld loss %.6f samples/s %.1f",
                            static_cast<long long>(epoch + 1), static_cast<long long>(first + step),
                            static_cast<long long>(first + count), loss, rate);
              *log << line << std::endl;
              lastPrint = now;
              lastPrintedStep = step;
            }
          },
          rankFirst);
      if (!s)
        return s;
      const auto chunkEnd = Clock::now();
      trainSeconds += std::chrono::duration<double>(chunkEnd - epochStart).count();
      trainSteps += count;
      for (auto &w : workers_) {
        w.trainSentBytes += w.chunkSentBytes;
        w.trainSteps += w.chunkSteps;
      }
      if (trainProg->timedRounds) {
        // Steps are the group's budget; the last combined step is not the end.
        lastStep = chunkEnd;
        if (log) {
          *log << "epoch " << epoch + 1 << " timed rounds: steps per rank";
          for (const auto &w : workers_)
            *log << " " << w.chunkSteps;
          *log << " (" << stepsCombined_ << " reached by every rank)" << std::endl;
        }
      }
      next_ = first + count >= batches ? checkpoint::DataPosition{epoch + 1, 0, {}}
                                       : checkpoint::DataPosition{epoch, first + count, {}};
      // Timed rounds: each rank continues after the batches it read.
      if (trainProg->timedRounds && next_.epoch == epoch) {
        for (size_t r = 0; r < workers_.size(); ++r)
          next_.rankBatches.push_back((r < rankFirst.size() ? rankFirst[r] : first) +
                                      workers_[r].chunkSteps);
        if (pastTheEpoch(next_))
          next_ = {epoch + 1, 0, {}};
      }
      if (epoch == firstEpoch && report && count > warmup && warmup > 0)
        report->steadyStepSeconds =
            std::chrono::duration<double>(lastStep - warmEnd).count() / (count - warmup);

      if (evalProg && evalProg->batches > 0) {
        // "loss" is a per-batch mean over the whole (global) batch, whose
        // padded rows (label -1) add 0: times the global batch it is the
        // batch's sum over its real rows, so the split's sum over its
        // samples gives the mean over them (the last batch may be padded).
        double correct = 0, lossSum = 0;
        s = runChunk(
            *evalProg, epoch, 0, evalProg->batches, [&](const std::vector<double> &metrics) {
              if (correctIdx >= 0)
                correct += metrics[correctIdx];
              if (evalLossIdx >= 0)
                lossSum += metrics[evalLossIdx] * static_cast<double>(evalProg->globalBatch);
            });
        if (!s)
          return s;
        // "epoch E <what>" on the log; `format` prints the value.
        auto logEpoch = [&](const char *format, double value) {
          if (!log)
            return;
          char line[128];
          std::snprintf(line, sizeof(line), format, value);
          *log << "epoch " << epoch + 1 << " " << line << std::endl;
        };
        if (evalProg->samples > 0 && evalLossIdx >= 0) {
          double loss = lossSum / static_cast<double>(evalProg->samples);
          if (report) {
            report->evalLoss.push_back(loss);
            report->evalAtSeconds.push_back(trainSeconds);
          }
          logEpoch("eval loss %.6f", loss);
        }
        if (correctIdx >= 0 && evalProg->samples > 0) {
          double accuracy = correct / (static_cast<double>(evalProg->samples) *
                                       static_cast<double>(evalProg->labelsPerSample));
          if (report)
            report->testAccuracy.push_back(accuracy);
          logEpoch("test accuracy %.4f", accuracy);
        }
      }
    }

    if (!options_.checkpointDir.empty()) {
      if (Status s = saveCheckpoint(options_.checkpointDir); !s)
        return s;
      if (log)
        *log << "wrote checkpoint " << options_.checkpointDir << std::endl;
    }
    if (!options_.traceDir.empty()) {
      phase_ = "writing traces";
      if (Status s = onEveryWorker(WriteTrace{}, "traces"); !s)
        return s;
      if (log)
        *log << "wrote traces of the first " << options_.traceSteps << " steps of each program to "
             << options_.traceDir << "/rank<R>.trace.json" << std::endl;
    }

    if (report) {
      report->trainSteps = trainSteps;
      report->meanStepSeconds = trainSteps > 0 ? trainSeconds / trainSteps : 0;
      report->peakRssKb.clear();
      report->sentBytesPerStep.clear();
      report->rankTrainSteps.clear();
      for (const auto &w : workers_) {
        report->peakRssKb.push_back(w.maxRssKb);
        report->sentBytesPerStep.push_back(
            trainSteps > 0 ? static_cast<double>(w.trainSentBytes) / trainSteps : 0.0);
        report->rankTrainSteps.push_back(w.trainSteps);
      }
    }
    return Status::ok();
  }

  // A checkpoint in two phases: every rank writes its shards into the save's
  // staging directory; only once all have does global rank 0 write the index
  // and publish it. A failure in between ends the job with a checkpoint
  // already at `dir` untouched.
  Status saveCheckpoint(const std::string &dir) {
    saveGeneration_ = checkpoint::newGeneration();
    savedShards_.clear();
    phase_ = "writing the checkpoint's shards (save " +
             checkpoint::generationText(saveGeneration_) + ")";
    for (auto &w : workers_) {
      w.shardsWritten = false;
      self_->send(w.actor, SaveCheckpoint{dir, saveGeneration_});
    }
    Status s = pumpUntil(
        [&] {
          for (const auto &w : workers_)
            if (!w.shardsWritten)
              return false;
          return true;
        },
        std::nullopt, "every rank's checkpoint shards");
    if (!s)
      return s;
    phase_ = "publishing the checkpoint (save " + checkpoint::generationText(saveGeneration_) + ")";
    workers_[0].chunkDone = false;
    self_->send(workers_[0].actor, PublishCheckpoint{dir, saveGeneration_, next_.epoch, next_.batch,
                                                     savedShards_, next_.rankBatches});
    return pumpUntil([&] { return workers_[0].chunkDone; }, std::nullopt,
                     "rank 0 to publish the checkpoint");
  }

  // Sends `message` to every worker and waits until each answered ChunkDone.
  template <typename Message>
  Status onEveryWorker(const Message &message, const std::string &what) {
    for (auto &w : workers_) {
      w.chunkDone = false;
      self_->send(w.actor, message);
    }
    return pumpUntil(
        [&] {
          for (const auto &w : workers_)
            if (!w.chunkDone)
              return false;
          return true;
        },
        std::nullopt, what);
  }

  // Waits (bounded) until every live worker's connection is gone.
  void awaitWorkersGone(milliseconds grace) {
    auto deadline = Clock::now() + grace;
    auto anyAlive = [&] {
      for (const auto &w : workers_)
        if (w.alive)
          return true;
      return false;
    };
    while (anyAlive() && Clock::now() < deadline)
      pump(milliseconds(50));
  }

  void abortAll(const std::string &reason) {
    shuttingDown_ = true;
    for (auto &w : workers_)
      if (w.alive)
        self_->send(w.actor, Abort{reason});
    awaitWorkersGone(milliseconds(3000));
    endNodes(reason);
    local_.killAndReap(milliseconds(2000));
  }

  void shutdownAll() {
    shuttingDown_ = true;
    for (auto &w : workers_)
      if (w.alive)
        self_->send(w.actor, shutdown_atom::value);
    awaitWorkersGone(milliseconds(10000));
    endNodes("the job finished");
    if (std::string unclean = local_.killAndReap(milliseconds(5000)); !unclean.empty())
      fail("after the job: " + unclean);
  }

  caf::actor_system &system_;
  caf::scoped_actor self_;
  const RunOptions &options_;
  caf::actor store_;
  uint16_t port_ = 0;
  bool published_ = false;
  bool registrationClosed_ = false;
  bool shuttingDown_ = false;
  ChildProcesses local_;
  struct NodeRecord {
    caf::actor actor;
    std::string at; // HOST:PORT as given
  };
  std::vector<NodeRecord> nodes_;
  std::string jobToken_; // random per job; ranks present it when registering
  std::vector<WorkerRecord> workers_;
  std::string failure_;
  std::string workerError_; // held for kPeerLossGrace, see the WorkerError handler
  Clock::time_point workerErrorAt_;
  std::string phase_ = "startup";
  std::string currentProgram_;
  int64_t currentEpoch_ = 0;
  checkpoint::DataPosition next_; // where the train data continues (saved with a checkpoint)
  uint64_t saveGeneration_ = 0;   // of the checkpoint being saved
  std::vector<checkpoint::ShardRecord> savedShards_; // its shards, as the ranks report them
  int64_t stepsCombined_ = 0;
  const ProgramInfo *chunkProgram_ = nullptr;
  std::map<int64_t, PendingStep> pending_;
  std::function<void(const std::vector<double> &)> onCombined_;

public:
  // shutdownAll can turn a finished job into a failure (unclean worker exit).
  Status finalStatus(Status s) const { return s && failed() ? Status::error(failure_) : s; }
};

} // namespace

std::ostream *RunOptions::defaultLog() { return &std::cout; }

namespace {
// The report as one JSON line; the field names are those bench/mlp_torch.py
// and bench/gpt_torch.py write for PyTorch, so the two compare field by field.
Status writeBenchJson(const std::string &path, const RunOptions &options, const JobReport &r) {
  std::ofstream out(path);
  auto list = [&out](const auto &values, double scale) {
    out << '[';
    for (size_t i = 0; i < values.size(); ++i)
      out << (i ? "," : "") << static_cast<double>(values[i]) * scale;
    out << ']';
  };
  out << std::setprecision(9); // losses are compared with PyTorch's to ~1e-6
  out << "{\"framework\":\"sbpflow\",\"ranks\":" << r.peakRssKb.size()
      << ",\"threads\":" << options.threads << ",\"steps\":" << r.trainSteps
      << ",\"step_ms\":" << r.steadyStepSeconds * 1e3
      << ",\"mean_step_ms\":" << r.meanStepSeconds * 1e3 << ",\"losses\":";
  list(r.lossHistory, 1.0);
  out << ",\"final_loss\":" << (r.lossHistory.empty() ? 0.0 : r.lossHistory.back())
      << ",\"eval_loss\":";
  list(r.evalLoss, 1.0);
  out << ",\"test_accuracy\":";
  list(r.testAccuracy, 1.0);
  out << ",\"peak_rss_mb_per_rank\":";
  list(r.peakRssKb, 1.0 / 1024);
  out << ",\"eval_at_s\":";
  list(r.evalAtSeconds, 1.0);
  out << ",\"steps_per_rank\":";
  list(r.rankTrainSteps, 1.0);
  out << ",\"sent_bytes_per_step\":" << std::setprecision(15); // whole bytes, to 1e15
  list(r.sentBytesPerStep, 1.0);
  out << "}\n";
  out.close();
  if (!out)
    return Status::error("cannot write the report to " + path + " (--bench-json)");
  return Status::ok();
}
} // namespace

Status runJob(const std::vector<uint8_t> &planBytes, const RunOptions &options, JobReport *report) {
  JobReport own;
  if (!report)
    report = &own;
  caf::actor_system_config cfg;
  configureClusterSystem(cfg);
  caf::actor_system system{cfg};
  Driver driver(system, options);
  Status s = driver.finalStatus(driver.run(planBytes, report));
  if (s && !options.benchJson.empty())
    s = writeBenchJson(options.benchJson, options, *report);
  return s;
}

} // namespace sbpflow::cluster
