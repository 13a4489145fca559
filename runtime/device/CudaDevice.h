// One rank's GPU: the device, a compute stream and a communication stream,
// ONE device allocation for the whole plan (every program's arena and every
// variable shard live in it at offsets fixed when the executor is built, so a
// step allocates nothing), events that order the two streams without a host
// wait, and completion reported back to the host as a callback the executor
// turns into a message to the task's actor.
#pragma once

#include "runtime/Status.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace sbpflow {

// Offsets in the plan's single allocation, handed out before it exists.
class DeviceLayout {
public:
  // 256 bytes: cudaMalloc's own alignment, and enough for any vector access.
  static constexpr size_t kAlign = 256;
  size_t reserve(size_t bytes) {
    size_t offset = (total_ + kAlign - 1) / kAlign * kAlign;
    total_ = offset + bytes;
    return offset;
  }
  size_t total() const { return total_; }

private:
  size_t total_ = 0;
};

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

class CudaDevice {
public:
  // Selects `device`, creates the streams and events, and allocates `bytes`
  // (layout.total()); errors name the device and what failed.
  static StatusOr<std::unique_ptr<CudaDevice>> open(int device, size_t bytes);
  ~CudaDevice();
  CudaDevice(const CudaDevice &) = delete;
  CudaDevice &operator=(const CudaDevice &) = delete;

  int index() const { return device_; }
  // The allocation; an offset from DeviceLayout::reserve points into it.
  uint8_t *at(size_t offset) const { return base_ + offset; }
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
  Status asyncError() const;
  // Waits for both streams (between runs: checkpoints, outputs).
  Status synchronize() const;

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
};

} // namespace sbpflow
