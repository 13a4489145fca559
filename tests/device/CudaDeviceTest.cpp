// CudaDevice: the plan's single allocation, the two streams ordered by
// events, and host completions.
#include "runtime/device/CudaDevice.h"
#include "kernels/cuda/Elementwise.h"
#include "tests/kernels_cuda/CudaTest.h"

#include <condition_variable>
#include <mutex>

namespace sbpflow::test {
namespace {

TEST(DeviceLayout, AlignsEveryReservation) {
  DeviceLayout layout;
  EXPECT_EQ(layout.reserve(10), 0u);
  EXPECT_EQ(layout.reserve(1), 256u);
  EXPECT_EQ(layout.reserve(0), 512u);
  EXPECT_EQ(layout.reserve(300), 512u); // an empty reservation takes no room
  EXPECT_EQ(layout.total(), 812u);
}

TEST(CudaDevice, BadDeviceIsAnErrorNamingIt) {
  auto d = CudaDevice::open(999, 1024);
  ASSERT_FALSE(d.isOk());
  EXPECT_EQ(d.status().message().rfind("GPU 999: ", 0), 0u) << d.status().message();
}

TEST(CudaDevice, StreamsOrderedByEventsAndCompletions) {
  SBPFLOW_REQUIRE_GPU();
  const int64_t n = 1 << 20;
  DeviceLayout layout;
  size_t a = layout.reserve(n * sizeof(float)), b = layout.reserve(n * sizeof(float));
  auto opened = CudaDevice::open(0, layout.total());
  ASSERT_TRUE(opened.isOk()) << opened.status().message();
  CudaDevice &d = **opened;
  auto *pa = reinterpret_cast<float *>(d.at(a));
  auto *pb = reinterpret_cast<float *>(d.at(b));

  std::mutex mutex;
  std::condition_variable cv;
  int completions = 0;
  Completion done{[&] {
    std::lock_guard<std::mutex> lock(mutex);
    ++completions;
    cv.notify_all();
  }};
  // Several rounds through the same events and completion: each round's copy
  // on the comm stream must see that round's fill on the compute stream.
  for (int round = 1; round <= 3; ++round) {
    ASSERT_OK(cuda::fill(pa, static_cast<float>(round), n, d.compute()));
    ASSERT_OK(d.order(d.compute(), d.comm()));
    ASSERT_CUDA(cudaMemcpyAsync(pb, pa, n * sizeof(float), cudaMemcpyDeviceToDevice, d.comm()));
    ASSERT_OK(d.whenDone(d.comm(), &done));
    {
      std::unique_lock<std::mutex> lock(mutex);
      ASSERT_TRUE(
          cv.wait_for(lock, std::chrono::seconds(10), [&] { return completions == round; }));
    }
    std::vector<float> host(n);
    ASSERT_CUDA(cudaMemcpy(host.data(), pb, n * sizeof(float), cudaMemcpyDeviceToHost));
    EXPECT_EQ(host, std::vector<float>(n, static_cast<float>(round)));
  }
  ASSERT_OK(d.asyncError());
  ASSERT_OK(d.synchronize());
}

TEST(CudaDevice, AllocationTooLargeIsAnError) {
  SBPFLOW_REQUIRE_GPU();
  auto d = CudaDevice::open(0, size_t{1} << 50); // a petabyte
  ASSERT_FALSE(d.isOk());
  EXPECT_NE(d.status().message().find("allocating the plan's"), std::string::npos)
      << d.status().message();
}

} // namespace
} // namespace sbpflow::test
