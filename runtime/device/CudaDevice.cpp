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

StatusOr<cudaStream_t> createStream(int device, StreamPriority priority, const std::string &what) {
  const std::string gpu = "GPU " + std::to_string(device);
  if (Status s = cudaStatus(cudaSetDevice(device), gpu + ": cudaSetDevice"); !s)
    return s;
  int least = 0, greatest = 0;
  if (Status s = cudaStatus(cudaDeviceGetStreamPriorityRange(&least, &greatest),
                            gpu + ": stream priorities");
      !s)
    return s;
  cudaStream_t stream = nullptr;
  if (Status s = cudaStatus(
          cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking,
                                       priority == StreamPriority::Comm ? greatest : least),
          gpu + ": " + what);
      !s)
    return s;
  return stream;
}

StatusOr<int64_t> deviceMemoryBytes(int device) {
  const std::string gpu = "GPU " + std::to_string(device);
  if (Status s = cudaStatus(cudaSetDevice(device), gpu + ": cudaSetDevice"); !s)
    return s;
  size_t free = 0, total = 0;
  if (Status s = cudaStatus(cudaMemGetInfo(&free, &total), gpu + ": cudaMemGetInfo"); !s)
    return s;
  return static_cast<int64_t>(free);
}

StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::open(int device, size_t bytes) {
  std::unique_ptr<CudaDevice> d(new CudaDevice());
  d->device_ = device;
  const std::string gpu = "GPU " + std::to_string(device);
  auto compute = createStream(device, StreamPriority::Compute, "compute stream");
  if (!compute)
    return compute.status();
  d->compute_ = *compute;
  auto comm = createStream(device, StreamPriority::Comm, "communication stream");
  if (!comm)
    return comm.status();
  d->comm_ = *comm;
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
