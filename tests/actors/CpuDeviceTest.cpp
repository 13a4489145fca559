// The CPU device: the collective queue issues work strictly in sequence
// order whatever the order of submission.
#include "runtime/device/CollectiveQueue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

using namespace sbpflow;

TEST(CollectiveQueue, RunsInSequenceOrder) {
  CollectiveQueue queue;
  std::mutex m;
  std::condition_variable cv;
  std::vector<int> order;
  std::vector<std::function<void()>> work;
  for (int seq = 0; seq < 4; ++seq)
    work.push_back([&, seq] {
      std::lock_guard<std::mutex> lock(m);
      order.push_back(seq);
      cv.notify_all();
    });
  for (int step = 0; step < 2; ++step) {
    queue.reset(4);
    for (int seq : {3, 1, 2, 0})
      queue.submit(seq, &work[seq]);
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return order.size() == static_cast<size_t>(4 * (step + 1)); });
  }
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3}));
}
