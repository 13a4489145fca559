// The worker's control loop and its work thread.
#include "runtime/cluster/Worker.h"

#include "runtime/cluster/CafStore.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

namespace sbpflow::cluster {
namespace {

// Runs jobs one after another on its own thread.
class WorkThread {
public:
  WorkThread() : thread_([this] { loop(); }) {}
  ~WorkThread() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
  }

private:
  void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return closed_ || !jobs_.empty(); });
        if (jobs_.empty())
          return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool closed_ = false;
  std::thread thread_;
};

int64_t maxRssKb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

std::string hostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0)
    return "unknown-host";
  return buf;
}

bool isLoopback(const std::string &host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1";
}

// Exceptions from Gloo (a dead peer) or the store become a Status.
template <typename F> auto guarded(int rank, F &&f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception &e) {
    return Status::error(std::string("rank ") + std::to_string(rank) + ": " + e.what());
  }
}

} // namespace

StatusOr<std::pair<std::string, uint16_t>> parseHostPort(const std::string &text, bool anyPortOk) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return Status::error("expected HOST:PORT, got '" + text + "'");
  std::string host = text.substr(0, colon);
  std::string portText = text.substr(colon + 1);
  for (char c : portText)
    if (c < '0' || c > '9')
      return Status::error("port of '" + text + "' is not a number");
  long port = portText.size() > 5 ? 70000 : std::stol(portText);
  if (port < (anyPortOk ? 0 : 1) || port > 65535)
    return Status::error("port of '" + text + "' is out of range (" + (anyPortOk ? "0" : "1") +
                         "..65535)");
  return std::make_pair(host, static_cast<uint16_t>(port));
}

int runWorker(const WorkerOptions &options, RankBackend &backend) {
  caf::actor_system_config cfg;
  configureClusterSystem(cfg);
  caf::actor_system system{cfg};
  std::string where = options.driverHost + ":" + std::to_string(options.driverPort);
  auto driver = remoteActor(system, options.driverHost, options.driverPort);
  if (!driver) {
    std::fprintf(stderr, "error: cannot connect to the driver at %s: %s\n", where.c_str(),
                 system.render(driver.error()).c_str());
    return 1;
  }
  caf::scoped_actor self{system};
  // Published so that the driver can name this worker by host:port.
  // On the node's address when a daemon started this rank, on loopback for a
  // local driver, else on every interface (named by the host name).
  std::string host = options.bindHost;
  if (host.empty() && isLoopback(options.driverHost))
    host = "127.0.0.1";
  const bool everyInterface = host.empty();
  if (everyInterface)
    host = hostName();
  auto port = system.middleman().publish(caf::actor_cast<caf::actor>(self), 0,
                                         everyInterface ? nullptr : host.c_str());
  if (!port) {
    std::fprintf(stderr, "error: worker cannot open a port: %s\n",
                 system.render(port.error()).c_str());
    return 1;
  }
  self->monitor(*driver);
  self->send(*driver,
             RegisterWorker{caf::actor_cast<caf::actor>(self), static_cast<int32_t>(getpid()), host,
                            static_cast<int32_t>(*port), options.node, options.localRank,
                            options.jobToken});

  caf::actor driverActor = *driver;
  int rank = -1;
  std::unique_ptr<CafStore> store;
  auto work = std::make_unique<WorkThread>();
  bool done = false;
  while (!done) {
    self->receive(
        [&](Assignment &a) {
          rank = a.rank;
          if (!options.bindHost.empty())
            a.settings.glooHost = options.bindHost;
          a.settings.localRank = options.localRank;
          store = std::make_unique<CafStore>(
              system, a.store, std::chrono::milliseconds(a.settings.rendezvousTimeoutMs));
          work->post([&, a] {
            auto programs = [&]() -> StatusOr<std::vector<ProgramInfo>> {
              try {
                return backend.prepare(a.plan, a.rank, a.worldSize, *store, a.settings);
              } catch (const std::exception &e) {
                return Status::error(e.what());
              }
            }();
            if (!programs) {
              caf::anon_send(driverActor, WorkerError{a.rank, programs.status().message()});
              return;
            }
            const checkpoint::DataPosition next = backend.resumedAt();
            caf::anon_send(driverActor, WorkerReady{a.rank, *programs, next.epoch, next.batch,
                                                    next.rankBatches});
          });
        },
        [&](RunChunk &c) {
          work->post([&, c] {
            auto start = std::chrono::steady_clock::now();
            const uint64_t sentBefore = backend.sentBytes();
            int64_t steps = 0;
            Status s = guarded(rank, [&] {
              return backend.run(c, [&](int64_t batch, const std::vector<double> &metrics) {
                ++steps;
                caf::anon_send(driverActor, StepMetrics{rank, batch, metrics});
              });
            });
            double secs =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            if (!s)
              caf::anon_send(driverActor, WorkerError{rank, s.message()});
            else
              caf::anon_send(driverActor, ChunkDone{rank, steps, secs, maxRssKb(),
                                                    backend.sentBytes() - sentBefore});
          });
        },
        [&](SaveCheckpoint &p) {
          work->post([&, p] {
            std::vector<checkpoint::ShardRecord> shards;
            Status s = guarded(rank, [&] {
              auto written = backend.writeCheckpointShards(p.dir, p.generation);
              if (!written)
                return written.status();
              shards = written.take();
              return Status::ok();
            });
            if (!s)
              caf::anon_send(driverActor, WorkerError{rank, s.message()});
            else
              caf::anon_send(driverActor, ShardsWritten{rank, p.generation, std::move(shards)});
          });
        },
        [&](PublishCheckpoint &p) {
          work->post([&, p] {
            Status s = guarded(rank, [&] {
              return backend.publishCheckpoint(p.dir, p.generation, p.shards,
                                               {p.nextEpoch, p.nextBatch, p.nextRankBatches});
            });
            if (!s)
              caf::anon_send(driverActor, WorkerError{rank, s.message()});
            else
              caf::anon_send(driverActor, ChunkDone{rank, 0, 0.0, maxRssKb()});
          });
        },
        [&](WriteTrace &) {
          work->post([&] {
            Status s = guarded(rank, [&] { return backend.writeTrace(); });
            if (!s)
              caf::anon_send(driverActor, WorkerError{rank, s.message()});
            else
              caf::anon_send(driverActor, ChunkDone{rank, 0, 0.0, maxRssKb()});
          });
        },
        [&](shutdown_atom) { done = true; },
        [&](Abort &a) {
          // The work thread may sit in a collective that cannot be
          // cancelled: end the process without unwinding it.
          std::fprintf(stderr, "rank %d: aborting: %s\n", rank, a.reason.c_str());
          std::fflush(stderr);
          std::_Exit(2);
        },
        [&](caf::down_msg &dm) {
          if (dm.source != driverActor.address())
            return;
          std::fprintf(stderr, "error: rank %d lost the driver at %s: %s\n", rank, where.c_str(),
                       system.render(dm.reason).c_str());
          std::fflush(stderr);
          std::_Exit(3);
        });
  }
  work.reset();
  self->demonitor(driverActor);
  system.middleman().unpublish(caf::actor_cast<caf::actor>(self), *port);
  return 0;
}

} // namespace sbpflow::cluster
