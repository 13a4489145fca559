// The GPU device of one rank (see CudaDevice.h).
#include "runtime/device/CudaDevice.h"

#include "kernels/cuda/Data.h"
#include "kernels/cuda/Elementwise.h"

#include <cstring>
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
  if (pinned_)
    cudaFreeHost(pinned_);
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

namespace {
cudaStream_t cudaOf(Stream s) { return static_cast<cudaStream_t>(s); }

// Region copies move whole elements: 4-byte ones as float, 2-byte ones as
// bf16 (never arithmetic, so any 2-byte payload moves unchanged).
template <class Copy>
Status byElementSize(size_t elementBytes, const std::string &gpu, Copy &&copy) {
  if (elementBytes == 4)
    return copy(float{});
  if (elementBytes == 2)
    return copy(cuda::bf16{});
  return Status::error(gpu + ": no region copy for " + std::to_string(elementBytes) +
                       "-byte elements");
}

// A region copy of `part` of a tensor holding `holder`: `copy(T{}, box)` with
// the element type and the part's box in the holder; nothing for an empty part.
template <class Copy>
Status regionCopy(const Region &holder, const Region &part, size_t elementBytes,
                  const std::string &gpu, Copy &&copy) {
  if (regionElements(part) == 0)
    return Status::ok();
  const RegionBox box = regionBox(holder, part);
  return byElementSize(elementBytes, gpu, [&](auto e) { return copy(e, box); });
}
} // namespace

Status CudaDevice::copy(void *dst, const void *src, size_t bytes, Stream stream) {
  if (dst == src || bytes == 0)
    return Status::ok();
  return cudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cudaOf(stream)),
                    name() + ": device copy");
}

Status CudaDevice::upload(void *dst, const void *host, size_t bytes, Stream stream) {
  if (bytes == 0)
    return Status::ok();
  // From pageable memory cudaMemcpyAsync returns once the source has been
  // staged (CUDA runtime API, "API synchronization behavior"): the host
  // buffer may be refilled at once.
  return cudaStatus(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, cudaOf(stream)),
                    name() + ": copy to the GPU");
}

Status CudaDevice::download(void *host, const void *src, size_t bytes) {
  if (bytes == 0)
    return Status::ok();
  cudaSetDevice(device_);
  return cudaStatus(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost),
                    name() + ": copy to the host");
}

Status CudaDevice::fill(void *dst, plan::DType dtype, float value, int64_t n, Stream stream) {
  if (n <= 0)
    return Status::ok();
  switch (dtype) {
  case plan::DType::F32:
    return cuda::fill<float>(static_cast<float *>(dst), value, n, cudaOf(stream));
  case plan::DType::BF16:
    return cuda::fill<cuda::bf16>(static_cast<cuda::bf16 *>(dst), value, n, cudaOf(stream));
  default:
    if (value != 0.0f)
      return Status::error(name() + ": cannot fill " + plan::EnumNameDType(dtype) +
                           " elements with " + std::to_string(value));
    return cudaStatus(cudaMemsetAsync(dst, 0,
                                      static_cast<size_t>(n) * (dtype == plan::DType::U8 ? 1 : 4),
                                      cudaOf(stream)),
                      name() + ": zero fill");
  }
}

Status CudaDevice::packRegion(const void *src, const Region &from, const Region &part, void *dst,
                              size_t elementBytes, Stream stream) {
  return regionCopy(from, part, elementBytes, name(), [&](auto e, const RegionBox &b) {
    using T = decltype(e);
    return cuda::copyRegion<T>(static_cast<const T *>(src), b.shape, b.begin, b.size, b.rank,
                               static_cast<T *>(dst), cudaOf(stream));
  });
}

Status CudaDevice::unpackRegion(const void *src, const Region &part, void *dst, const Region &into,
                                size_t elementBytes, Stream stream) {
  return regionCopy(into, part, elementBytes, name(), [&](auto e, const RegionBox &b) {
    using T = decltype(e);
    return cuda::copyIntoRegion<T>(static_cast<const T *>(src), b.begin, b.size,
                                   static_cast<T *>(dst), b.shape, b.rank, cudaOf(stream));
  });
}

Status CudaDevice::cast(const void *src, plan::DType from, void *dst, plan::DType to, int64_t n,
                        Stream stream) {
  if (n <= 0)
    return Status::ok();
  if (from == plan::DType::F32 && to == plan::DType::BF16)
    return cuda::castToBf16(static_cast<const float *>(src), static_cast<cuda::bf16 *>(dst), n,
                            cudaOf(stream));
  if (from == plan::DType::BF16 && to == plan::DType::F32)
    return cuda::castToFloat(static_cast<const cuda::bf16 *>(src), static_cast<float *>(dst), n,
                             cudaOf(stream));
  if (from == to && from != plan::DType::U8)
    return copy(dst, src, static_cast<size_t>(n) * (from == plan::DType::BF16 ? 2 : 4), stream);
  return Status::error(name() + ": cannot cast " + plan::EnumNameDType(from) + " to " +
                       plan::EnumNameDType(to));
}

Status CudaDevice::reserveFetch(size_t bytes) {
  if (bytes <= pinnedBytes_)
    return Status::ok();
  if (pinned_)
    cudaFreeHost(pinned_);
  pinned_ = nullptr;
  pinnedBytes_ = 0;
  if (Status s = cudaStatus(cudaMallocHost(&pinned_, bytes), name() + ": pinned host memory"); !s)
    return s;
  pinnedBytes_ = bytes;
  return Status::ok();
}

Status CudaDevice::fetch(const std::vector<Stream> &streams, const std::vector<Fetch> &what) {
  cudaSetDevice(device_);
  for (Stream s : streams)
    if (Status st = order(cudaOf(s), compute_); !st)
      return st;
  size_t total = 0;
  for (const Fetch &f : what)
    total += (f.bytes + 7) / 8 * 8;
  if (Status s = reserveFetch(total); !s)
    return s;
  auto *staging = static_cast<uint8_t *>(pinned_);
  size_t offset = 0;
  for (const Fetch &f : what) {
    if (Status s = cudaStatus(
            cudaMemcpyAsync(staging + offset, f.from, f.bytes, cudaMemcpyDeviceToHost, compute_),
            name() + ": reading a step's results");
        !s)
      return s;
    offset += (f.bytes + 7) / 8 * 8;
  }
  if (Status s = cudaStatus(cudaStreamSynchronize(compute_), name() + ": waiting for the step"); !s)
    return s;
  if (Status s = asyncError(); !s)
    return s;
  offset = 0;
  for (const Fetch &f : what) {
    std::memcpy(f.to, staging + offset, f.bytes);
    offset += (f.bytes + 7) / 8 * 8;
  }
  return Status::ok();
}

} // namespace sbpflow
