// The CAF actor system the executor tests run on: configured as the runtime
// configures it (configureExecutorSystem), with two scheduler threads; a
// checkpoint saved by ranks on threads as the driver saves one; and ranks
// run as threads over one Gloo store.
#pragma once

#include "actors/Executor.h"
#include "actors/Messages.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/comm/CommGroups.h"

#include <caf/all.hpp>
#include <gloo/rendezvous/hash_store.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

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

// A checkpoint saved by ranks on threads the way the driver saves one: every
// rank writes its shards; once all have, and only if all succeeded, rank 0
// publishes with every rank's records. One object per save.
class TwoPhaseSave {
public:
  TwoPhaseSave(int ranks, std::string dir, uint64_t generation = checkpoint::newGeneration())
      : ranks_(ranks), dir_(std::move(dir)), generation_(generation) {}

  Status save(int rank, const Executor &exec, const checkpoint::DataPosition &next = {}) {
    auto written = exec.writeCheckpointShards(dir_, generation_);
    std::unique_lock<std::mutex> lock(mutex_);
    if (written)
      records_.insert(records_.end(), written->begin(), written->end());
    failed_ |= !written;
    ++arrived_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return arrived_ == ranks_; });
    if (!written)
      return written.status();
    if (rank != 0 || failed_)
      return Status::ok();
    return exec.publishCheckpoint(dir_, generation_, records_, next);
  }

private:
  const int ranks_;
  const std::string dir_;
  const uint64_t generation_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int arrived_ = 0;
  bool failed_ = false;
  std::vector<checkpoint::ShardRecord> records_;
};

// Runs `body` on an executor per rank of `plan`, `ranks` threads over one
// Gloo HashStore; returns each rank's error (empty: none).
inline std::vector<std::string> runRanks(caf::actor_system &system, const plan::Plan *plan,
                                         int ranks,
                                         const std::function<Status(int, Executor &)> &body,
                                         ExecutorOptions options = {}) {
  gloo::rendezvous::HashStore store;
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r, options]() mutable {
      auto groups = CommGroups::connect(*plan, r, store, std::chrono::seconds(20));
      if (!groups) {
        errors[r] = groups.status().message();
        return;
      }
      options.globalRank = r;
      auto exec = Executor::create(system, plan, groups->get(), options);
      if (!exec) {
        errors[r] = exec.status().message();
        return;
      }
      if (Status s = body(r, **exec); !s)
        errors[r] = s.message();
    });
  for (auto &t : threads)
    t.join();
  return errors;
}

// The whole of variable `name` (of element type T: float or int32_t) from
// the checkpoint in `dir`, read through the checkpoint API; `meta`
// (optional) receives how it was saved.
template <class T = float>
std::vector<T> readCheckpointed(const std::string &dir, const std::string &name,
                                checkpoint::TensorMeta *meta = nullptr) {
  auto reader = checkpoint::CheckpointReader::open(dir);
  EXPECT_TRUE(reader) << reader.status().message();
  if (!reader)
    return {};
  const checkpoint::TensorMeta *found = reader->find(name);
  EXPECT_NE(found, nullptr) << "no tensor '" << name << "' in " << dir;
  if (!found)
    return {};
  if (meta)
    *meta = *found;
  std::vector<T> out(static_cast<size_t>(elementCount(found->shape)));
  const auto dtype = std::is_same_v<T, float> ? checkpoint::DType::F32 : checkpoint::DType::I32;
  Status s = reader->read(name, found->shape, dtype, wholeRegion(found->shape), out.data());
  EXPECT_TRUE(s) << s.message();
  return out;
}

} // namespace sbpflow::test
