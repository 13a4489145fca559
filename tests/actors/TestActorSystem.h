// The CAF actor system the executor tests run on: configured as the runtime
// configures it (configureExecutorSystem), with two scheduler threads.
#pragma once

#include "actors/Messages.h"

#include <caf/all.hpp>

namespace sbpflow::test {

struct ActorSystem {
  ActorSystem() : system(config()) {}
  static caf::actor_system_config &config() {
    static caf::actor_system_config cfg;
    static bool once = [] {
      configureExecutorSystem(cfg, 1);
      cfg.set("scheduler.max-threads", 2);
      return true;
    }();
    (void)once;
    return cfg;
  }
  caf::actor_system system;
};

} // namespace sbpflow::test
