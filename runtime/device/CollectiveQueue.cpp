// The ordered collective thread (see CollectiveQueue.h).
#include "runtime/device/CollectiveQueue.h"

#include <algorithm>
#include <cassert>

namespace sbpflow {

CollectiveQueue::CollectiveQueue() : thread_([this] { loop(); }) {}

CollectiveQueue::~CollectiveQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  thread_.join();
}

void CollectiveQueue::reset(int count) {
  std::lock_guard<std::mutex> lock(mutex_);
  slots_.assign(static_cast<size_t>(count), nullptr);
  next_ = 0;
}

void CollectiveQueue::abandon() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::fill(slots_.begin(), slots_.end(), nullptr);
  next_ = 0;
}

void CollectiveQueue::submit(int seq, const std::function<void()> *work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    assert(seq >= 0 && seq < static_cast<int>(slots_.size()) && work);
    slots_[seq] = work;
  }
  ready_.notify_all();
}

void CollectiveQueue::loop() {
  for (;;) {
    const std::function<void()> *work = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] {
        return stopping_ || (next_ < static_cast<int>(slots_.size()) && slots_[next_]);
      });
      if (stopping_)
        return;
      work = slots_[next_];
      slots_[next_] = nullptr;
      next_ = next_ + 1 == static_cast<int>(slots_.size()) ? 0 : next_ + 1;
      busy_ = true;
    }
    (*work)();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
    }
    idle_.notify_all();
  }
}

void CollectiveQueue::waitIdle() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return !busy_; });
}

} // namespace sbpflow
