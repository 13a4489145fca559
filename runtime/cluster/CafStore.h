// Gloo's rendezvous store over CAF: a key-value actor lives in the driver and
// each worker's CafStore is a client of it (Gloo has no TCP store of its own).
#pragma once

#include <caf/actor.hpp>
#include <gloo/rendezvous/store.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace caf {
class actor_system;
}

namespace sbpflow::cluster {

// Spawns the key-value actor: set, get (answers once the key exists) and
// wait (answers once every key exists). Clients bound the wait themselves. A
// set that would take the store past `maxBytes` (keys + values) is refused.
caf::actor spawnStoreActor(caf::actor_system &system, size_t maxBytes = size_t{16} << 20);

class CafStore : public gloo::rendezvous::Store {
public:
  CafStore(caf::actor_system &system, caf::actor store, std::chrono::milliseconds timeout);

  // Failures (timeout, lost driver) throw gloo::IoException, as Gloo's own
  // stores do, so CommGroups::connect turns them into a Status.
  void set(const std::string &key, const std::vector<char> &data) override;
  std::vector<char> get(const std::string &key) override;
  void wait(const std::vector<std::string> &keys) override;
  void wait(const std::vector<std::string> &keys,
            const std::chrono::milliseconds &timeout) override;

private:
  caf::actor_system &system_;
  caf::actor store_;
  std::chrono::milliseconds timeout_;
};

} // namespace sbpflow::cluster
