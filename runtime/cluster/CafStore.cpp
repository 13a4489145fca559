// The rendezvous key-value actor and its Gloo Store client.
#include "runtime/cluster/CafStore.h"

#include "runtime/cluster/Messages.h"

#include <caf/all.hpp>
#include <gloo/common/error.h>

#include <map>

namespace sbpflow::cluster {
namespace {

struct StoreState {
  std::map<std::string, std::string> values;
  // Gets and waits whose keys are not all there yet.
  struct Pending {
    std::vector<std::string> keys;
    bool wantsValue; // get: answer with the value of keys[0]; wait: ok
    caf::response_promise promise;
  };
  std::vector<Pending> pending;
  size_t bytes = 0; // keys + values held
  static constexpr const char *name = "sbpflow-rendezvous-store";
};

bool allPresent(const StoreState &st, const std::vector<std::string> &keys) {
  for (const auto &k : keys)
    if (!st.values.count(k))
      return false;
  return true;
}

caf::behavior storeActor(caf::stateful_actor<StoreState> *self, size_t maxBytes) {
  return {
      [=](store_set_atom, const std::string &key,
          const StoreValue &value) -> caf::result<caf::ok_atom> {
        auto &st = self->state;
        // Rendezvous data is small (addresses, ids): a peer that sends more
        // is refused rather than allowed to exhaust the driver's memory.
        auto old = st.values.find(key);
        size_t held = st.bytes - (old == st.values.end() ? 0 : key.size() + old->second.size());
        if (held + key.size() + value.bytes.size() > maxBytes)
          return caf::make_error(caf::sec::invalid_argument,
                                 "rendezvous store full: refusing key '" + key + "'");
        st.bytes = held + key.size() + value.bytes.size();
        st.values[key] = value.bytes;
        std::vector<StoreState::Pending> still;
        for (auto &p : st.pending) {
          if (!allPresent(st, p.keys)) {
            still.push_back(std::move(p));
            continue;
          }
          if (p.wantsValue)
            p.promise.deliver(StoreValue{st.values[p.keys[0]]});
          else
            p.promise.deliver(caf::ok_atom::value);
        }
        st.pending = std::move(still);
        return caf::ok_atom::value;
      },
      [=](store_get_atom, const std::string &key) -> caf::result<StoreValue> {
        auto &st = self->state;
        auto it = st.values.find(key);
        if (it != st.values.end())
          return StoreValue{it->second};
        auto rp = self->make_response_promise();
        st.pending.push_back({{key}, true, rp});
        return caf::delegated<StoreValue>();
      },
      [=](store_wait_atom, const StoreKeys &keys) -> caf::result<caf::ok_atom> {
        auto &st = self->state;
        if (allPresent(st, keys.keys))
          return caf::ok_atom::value;
        auto rp = self->make_response_promise();
        st.pending.push_back({keys.keys, false, rp});
        return caf::delegated<caf::ok_atom>();
      },
  };
}

} // namespace

caf::actor spawnStoreActor(caf::actor_system &system, size_t maxBytes) {
  return system.spawn(storeActor, maxBytes);
}

CafStore::CafStore(caf::actor_system &system, caf::actor store, std::chrono::milliseconds timeout)
    : system_(system), store_(std::move(store)), timeout_(timeout) {}

void CafStore::set(const std::string &key, const std::vector<char> &data) {
  caf::scoped_actor self{system_};
  std::string failure;
  self->request(store_, timeout_, store_set_atom::value, key,
                StoreValue{std::string(data.begin(), data.end())})
      .receive([](caf::ok_atom) {}, [&](const caf::error &err) { failure = system_.render(err); });
  if (!failure.empty())
    throw gloo::IoException("rendezvous store: set '" + key + "' failed: " + failure);
}

std::vector<char> CafStore::get(const std::string &key) {
  caf::scoped_actor self{system_};
  std::string failure;
  std::vector<char> out;
  self->request(store_, timeout_, store_get_atom::value, key)
      .receive([&](const StoreValue &v) { out.assign(v.bytes.begin(), v.bytes.end()); },
               [&](const caf::error &err) { failure = system_.render(err); });
  if (!failure.empty())
    throw gloo::IoException("rendezvous store: get '" + key + "' failed after " +
                            std::to_string(timeout_.count()) + " ms: " + failure);
  return out;
}

void CafStore::wait(const std::vector<std::string> &keys) { wait(keys, timeout_); }

void CafStore::wait(const std::vector<std::string> &keys,
                    const std::chrono::milliseconds &timeout) {
  caf::scoped_actor self{system_};
  std::string failure;
  self->request(store_, timeout, store_wait_atom::value, StoreKeys{keys})
      .receive([](caf::ok_atom) {}, [&](const caf::error &err) { failure = system_.render(err); });
  if (!failure.empty()) {
    std::string names;
    for (const auto &k : keys)
      names += (names.empty() ? "" : ", ") + k;
    throw gloo::IoException("rendezvous store: wait for [" + names + "] failed after " +
                            std::to_string(timeout.count()) + " ms: " + failure);
  }
}

} // namespace sbpflow::cluster
