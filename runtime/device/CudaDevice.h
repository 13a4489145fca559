// One rank's GPU: the device, a compute stream and a communication stream,
// ONE device allocation for the whole plan (every program's arena and every
// variable shard live in it at offsets fixed when the executor is built, so a
// step allocates nothing), events that order the two streams without a host
// wait, and completion reported back to the host as a callback the executor
// turns into a message to the task's actor.
#pragma once

#include "runtime/Status.h"
#include "runtime/device/Device.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace sbpflow {

// A host callback run once a stream reaches it. Built once per task and
// reused every step (enqueuing it allocates nothing); `done` runs on a
// thread of the CUDA driver and must not call CUDA.
struct Completion {
  std::function<void()> done;
};

// Selects GPU `device` and creates a non-blocking stream there (it never
// synchronises with the legacy default stream) at the device's highest
// priority for communication, else its lowest; `what` names it in errors.
enum class StreamPriority { Compute, Comm };
StatusOr<cudaStream_t> createStream(int device, StreamPriority priority, const std::string &what);

// The memory GPU `device` has free now, in bytes; errors name the GPU.
StatusOr<int64_t> deviceMemoryBytes(int device);

class CudaDevice final : public Device {
public:
  // Selects `device`, creates the streams and events, and allocates `bytes`
  // (layout.total()); errors name the device and what failed.
  static StatusOr<std::unique_ptr<CudaDevice>> open(int device, size_t bytes);
  ~CudaDevice();
  CudaDevice(const CudaDevice &) = delete;
  CudaDevice &operator=(const CudaDevice &) = delete;

  int index() const { return device_; }
  // The allocation; an offset from DeviceLayout::reserve points into it.
  uint8_t *at(size_t offset) const override { return base_ + offset; }
  size_t bytes() const { return bytes_; }
  cudaStream_t compute() const { return compute_; }
  // Higher priority than compute: a collective waiting for its turn should
  // not queue behind a long GEMM.
  cudaStream_t comm() const { return comm_; }

  // Makes `waiter` wait for everything enqueued on `signaller` so far (an
  // event recorded on one, waited on by the other; no host synchronisation).
  Status order(cudaStream_t signaller, cudaStream_t waiter);
  // Runs c->done once `stream` has finished what was enqueued before.
  Status whenDone(cudaStream_t stream, Completion *c);
  // A kernel fault poisons the context and later callbacks may never run: the
  // executor's watchdog polls this and ends the job with its message.
  Status asyncError() const override;
  // Waits for both streams (between runs: checkpoints, outputs).
  Status synchronize() const override;

  // Device (runtime/device/Device.h): the streams are cudaStream_t.
  plan::DeviceKind kind() const override { return plan::DeviceKind::CUDA; }
  std::string name() const override { return "GPU " + std::to_string(device_); }
  bool hostVisible() const override { return false; }
  Stream computeStream() const override { return compute_; }
  Status order(Stream signaller, Stream waiter) override {
    return order(static_cast<cudaStream_t>(signaller), static_cast<cudaStream_t>(waiter));
  }
  Status copy(void *dst, const void *src, size_t bytes, Stream stream) override;
  Status upload(void *dst, const void *host, size_t bytes, Stream stream) override;
  Status download(void *host, const void *src, size_t bytes) override;
  Status fill(void *dst, plan::DType dtype, float value, int64_t n, Stream stream) override;
  Status packRegion(const void *src, const Region &from, const Region &part, void *dst,
                    size_t elementBytes, Stream stream) override;
  Status unpackRegion(const void *src, const Region &part, void *dst, const Region &into,
                      size_t elementBytes, Stream stream) override;
  Status cast(const void *src, plan::DType from, void *dst, plan::DType to, int64_t n,
              Stream stream) override;
  Status fetch(const std::vector<Stream> &streams, const std::vector<Fetch> &what) override;
  Status reserveFetch(size_t bytes) override;

private:
  CudaDevice() = default;

  int device_ = 0;
  uint8_t *base_ = nullptr;
  size_t bytes_ = 0;
  cudaStream_t compute_ = nullptr, comm_ = nullptr;
  // One event per direction suffices: a wait captures the event's latest
  // record when it is enqueued, so re-recording later does not affect it.
  // The mutex keeps a record and its wait together when actors on several
  // threads order streams at once.
  cudaEvent_t computeDone_ = nullptr, commDone_ = nullptr;
  std::mutex orderMutex_;
  // Pinned host memory fetch() stages step-end values through.
  void *pinned_ = nullptr;
  size_t pinnedBytes_ = 0;
};

} // namespace sbpflow
