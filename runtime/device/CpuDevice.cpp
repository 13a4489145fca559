// CPU kernel pool and the ordered collective thread.
#include "runtime/device/CpuDevice.h"

#include <cassert>

namespace sbpflow {

CpuKernelPool::CpuKernelPool(int threads) : ring_(64) {
  if (threads < 1)
    threads = 1;
  for (int i = 0; i < threads; ++i)
    workers_.emplace_back([this] { loop(); });
}

CpuKernelPool::~CpuKernelPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto &t : workers_)
    t.join();
}

void CpuKernelPool::submit(std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (size_ == ring_.size()) {
      // Grow by unrolling the ring into a larger one.
      std::vector<std::function<void()>> bigger(ring_.size() * 2);
      for (size_t i = 0; i < size_; ++i)
        bigger[i] = std::move(ring_[(head_ + i) % ring_.size()]);
      ring_ = std::move(bigger);
      head_ = 0;
    }
    ring_[(head_ + size_) % ring_.size()] = std::move(work);
    ++size_;
  }
  ready_.notify_one();
}

void CpuKernelPool::loop() {
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || size_ > 0; });
      if (size_ == 0)
        return; // stopping and drained
      work = std::move(ring_[head_]);
      ring_[head_] = nullptr;
      head_ = (head_ + 1) % ring_.size();
      --size_;
      ++busy_;
    }
    work();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --busy_;
    }
    idle_.notify_all();
  }
}

void CpuKernelPool::waitIdle() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [this] { return size_ == 0 && busy_ == 0; });
}

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
  filled_.assign(static_cast<size_t>(count), false);
  next_ = 0;
}

void CollectiveQueue::abandon() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t i = 0; i < slots_.size(); ++i) {
    slots_[i] = nullptr;
    filled_[i] = false;
  }
  next_ = 0;
}

void CollectiveQueue::submit(int seq, std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    assert(seq >= 0 && seq < static_cast<int>(slots_.size()));
    slots_[seq] = std::move(work);
    filled_[seq] = true;
  }
  ready_.notify_all();
}

void CollectiveQueue::loop() {
  for (;;) {
    std::function<void()> work;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [this] {
        return stopping_ || (next_ < static_cast<int>(filled_.size()) && filled_[next_]);
      });
      if (stopping_)
        return;
      work = std::move(slots_[next_]);
      slots_[next_] = nullptr;
      filled_[next_] = false;
      next_ = next_ + 1 == static_cast<int>(slots_.size()) ? 0 : next_ + 1;
      busy_ = true;
    }
    work();
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
