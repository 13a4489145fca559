// The actor-system settings every cluster process shares.
#include "runtime/cluster/Messages.h"

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>

#include <chrono>

namespace sbpflow::cluster {

void configureQuietScheduler(caf::actor_system_config &cfg) {
  // Actors here only dispatch: kernels run on the kernel pool and collectives
  // on the comm thread. CAF's default work-stealing scheduler polls
  // aggressively on every core, which steals those cores from the kernels; a
  // single sharing thread sleeps on a condition variable instead.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", size_t{1});
}

namespace {
// How long a silent peer is given: by the heartbeats, and by remoteActor
// for a handshake.
constexpr auto kConnectionTimeout = std::chrono::seconds(6);
} // namespace

void configureClusterSystem(caf::actor_system_config &cfg) {
  configureQuietScheduler(cfg);
  cfg.load<caf::io::middleman>();
  cfg.add_message_types<caf::id_block::sbpflow_cluster>();
  // A dead process closes its sockets and is noticed at once; heartbeats
  // catch a frozen node or a silent network within the connection timeout.
  cfg.set("middleman.heartbeat-interval",
          caf::timespan{std::chrono::duration_cast<caf::timespan>(std::chrono::seconds(1))});
  cfg.set("middleman.connection-timeout",
          caf::timespan{std::chrono::duration_cast<caf::timespan>(kConnectionTimeout)});
}

caf::expected<caf::actor> remoteActor(caf::actor_system &system, const std::string &host,
                                      uint16_t port) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    auto found = system.middleman().remote_actor(host, port);
    if (found || found.error() != caf::sec::connection_timeout ||
        std::chrono::steady_clock::now() - start >= kConnectionTimeout)
      return found;
  }
}

} // namespace sbpflow::cluster
