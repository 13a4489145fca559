// The GPU device of one rank (see CudaDevice.h).
#include "runtime/device/CudaDevice.h"

#include <string>

namespace sbpflow {
namespace {

Status cudaStatus(cudaError_t e, const std::string &what) {
  if (e == cudaSuccess)
    return Status::ok();
  return Status::error(what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

void CUDART_CB runCompletion(void *data) { static_cast<Completion *>(data)->done(); }

} // namespace

StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::open(int device, size_t bytes) {
  std::unique_ptr<CudaDevice> d(new CudaDevice());
  d->device_ = device;
  const std::string gpu = "GPU " + std::to_string(device);
  if (Status s = cudaStatus(cudaSetDevice(device), gpu + ": cudaSetDevice"); !s)
    return s;
  int least = 0, greatest = 0;
  if (Status s = cudaStatus(cudaDeviceGetStreamPriorityRange(&least, &greatest),
                            gpu + ": stream priorities");
      !s)
    return s;
  // Non-blocking: neither stream synchronises with the legacy default stream.
  if (Status s =
          cudaStatus(cudaStreamCreateWithPriority(&d->compute_, cudaStreamNonBlocking, least),
                     gpu + ": compute stream");
      !s)
    return s;
  if (Status s =
          cudaStatus(cudaStreamCreateWithPriority(&d->comm_, cudaStreamNonBlocking, greatest),
                     gpu + ": communication stream");
      !s)
    return s;
  for (cudaEvent_t *e : {&d->computeDone_, &d->commDone_})
    if (Status s = cudaStatus(cudaEventCreateWithFlags(e, cudaEventDisableTiming), gpu + ": event");
        !s)
      return s;
  if (bytes > 0) {
    void *base = nullptr;
    if (Status s = cudaStatus(cudaMalloc(&base, bytes),
                              gpu + ": allocating the plan's " + std::to_string(bytes) + " bytes");
        !s)
      return s;
    d->base_ = static_cast<uint8_t *>(base);
  }
  d->bytes_ = bytes;
  return d;
}

CudaDevice::~CudaDevice() {
  cudaSetDevice(device_);
  if (compute_)
    cudaStreamSynchronize(compute_);
  if (comm_)
    cudaStreamSynchronize(comm_);
  cudaFree(base_);
  for (cudaEvent_t e : {computeDone_, commDone_})
    if (e)
      cudaEventDestroy(e);
  for (cudaStream_t s : {compute_, comm_})
    if (s)
      cudaStreamDestroy(s);
}

Status CudaDevice::order(cudaStream_t signaller, cudaStream_t waiter) {
  if (signaller == waiter)
    return Status::ok(); // a stream is ordered with itself
  cudaEvent_t event = signaller == compute_ ? computeDone_ : commDone_;
  std::lock_guard<std::mutex> lock(orderMutex_);
  if (Status s = cudaStatus(cudaEventRecord(event, signaller), "ordering streams (record)"); !s)
    return s;
  return cudaStatus(cudaStreamWaitEvent(waiter, event, 0), "ordering streams (wait)");
}

Status CudaDevice::whenDone(cudaStream_t stream, Completion *c) {
  return cudaStatus(cudaLaunchHostFunc(stream, runCompletion, c), "enqueuing a completion");
}

Status CudaDevice::asyncError() const {
  for (cudaStream_t s : {compute_, comm_}) {
    cudaError_t e = cudaStreamQuery(s);
    if (e != cudaSuccess && e != cudaErrorNotReady)
      return cudaStatus(e, "GPU " + std::to_string(device_) + " faulted");
  }
  return Status::ok();
}

Status CudaDevice::synchronize() const {
  const std::string gpu = "GPU " + std::to_string(device_);
  if (Status s = cudaStatus(cudaStreamSynchronize(compute_), gpu + ": compute stream"); !s)
    return s;
  return cudaStatus(cudaStreamSynchronize(comm_), gpu + ": communication stream");
}

} // namespace sbpflow
