// The actor-system settings every cluster process shares.
#include "runtime/cluster/Messages.h"

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>

#include <chrono>

namespace sbpflow::cluster {

void configureClusterSystem(caf::actor_system_config &cfg) {
  cfg.load<caf::io::middleman>();
  cfg.add_message_types<caf::id_block::sbpflow_cluster>();
  // A dead process closes its sockets and is noticed at once; heartbeats
  // catch a frozen node or a silent network within the connection timeout.
  cfg.set("middleman.heartbeat-interval",
          caf::timespan{std::chrono::duration_cast<caf::timespan>(std::chrono::seconds(1))});
  cfg.set("middleman.connection-timeout",
          caf::timespan{std::chrono::duration_cast<caf::timespan>(std::chrono::seconds(6))});
}

} // namespace sbpflow::cluster
