// A rank's comm thread: it issues collectives strictly in the plan's
// collective_seq order so that every rank of a group calls Gloo or NCCL in the
// same order (a mismatch would deadlock). Compute tasks run on the executor's
// CAF scheduler threads.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sbpflow {

// Runs collectives one at a time in sequence order 0, 1, ..., count-1, then
// starts over at 0 (the next step). A collective submitted before its turn
// waits in its slot.
class CollectiveQueue {
public:
  CollectiveQueue();
  ~CollectiveQueue();
  CollectiveQueue(const CollectiveQueue &) = delete;
  CollectiveQueue &operator=(const CollectiveQueue &) = delete;

  // Starts a program with `count` collectives per step; nothing may be
  // pending. Collectives submitted afterwards are numbered from 0.
  void reset(int count);
  // Drops pending collectives (after an error, when peers will never match).
  void abandon();
  // `seq` must lie in [0, count). The queue keeps a pointer: `work` must
  // live until it ran or was abandoned (built once, it is submitted every
  // step without allocating).
  void submit(int seq, const std::function<void()> *work);
  // Blocks until no collective is running (pending ones that cannot run yet
  // are not waited for: abandon() them first).
  void waitIdle();

private:
  void loop();

  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<const std::function<void()> *> slots_; // null: not submitted yet
  std::condition_variable idle_;
  bool busy_ = false;
  int next_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace sbpflow
