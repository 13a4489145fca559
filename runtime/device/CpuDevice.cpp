// The CPU device (see CpuDevice.h): host memory, synchronous work.
#include "runtime/device/CpuDevice.h"

#include "kernels/cpu/Kernels.h"

#include <unistd.h>

#include <cstring>
#include <new>

namespace sbpflow {

int64_t hostMemoryBytes() {
  return static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) *
         static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

StatusOr<std::unique_ptr<CpuDevice>> CpuDevice::open(size_t bytes) {
  std::unique_ptr<CpuDevice> d(new CpuDevice());
  // Zeroed, like a fresh arena; aligned for the widest vector loads.
  d->storage_.reset(new (std::nothrow) uint8_t[bytes + DeviceLayout::kAlign]());
  if (!d->storage_)
    return Status::error("CPU: cannot allocate the plan's " + std::to_string(bytes) + " bytes");
  const auto address = reinterpret_cast<uintptr_t>(d->storage_.get());
  d->base_ = d->storage_.get() +
             (DeviceLayout::kAlign - address % DeviceLayout::kAlign) % DeviceLayout::kAlign;
  return d;
}

Status CpuDevice::copy(void *dst, const void *src, size_t bytes, Stream) {
  if (dst != src && bytes > 0)
    std::memmove(dst, src, bytes);
  return Status::ok();
}

Status CpuDevice::upload(void *dst, const void *host, size_t bytes, Stream stream) {
  return copy(dst, host, bytes, stream);
}

Status CpuDevice::download(void *host, const void *src, size_t bytes) {
  return copy(host, src, bytes, nullptr);
}

Status CpuDevice::fill(void *dst, plan::DType dtype, float value, int64_t n, Stream) {
  if (n <= 0)
    return Status::ok();
  switch (dtype) {
  case plan::DType::F32:
    cpu::fill(static_cast<float *>(dst), value, n);
    return Status::ok();
  case plan::DType::BF16: {
    const uint16_t v = cpu::toBf16(value);
    auto *y = static_cast<uint16_t *>(dst);
    for (int64_t i = 0; i < n; ++i)
      y[i] = v;
    return Status::ok();
  }
  default:
    if (value != 0.0f)
      return Status::error(std::string("CPU: cannot fill ") + plan::EnumNameDType(dtype) +
                           " elements with " + std::to_string(value));
    std::memset(dst, 0, static_cast<size_t>(n) * (dtype == plan::DType::U8 ? 1 : 4));
    return Status::ok();
  }
}

Status CpuDevice::packRegion(const void *src, const Region &from, const Region &part, void *dst,
                             size_t elementBytes, Stream) {
  if (regionElements(part) == 0)
    return Status::ok();
  const RegionBox b = regionBox(from, part);
  cpu::copyRegion(src, b.shape, b.begin, b.size, b.rank, dst, elementBytes);
  return Status::ok();
}

Status CpuDevice::unpackRegion(const void *src, const Region &part, void *dst, const Region &into,
                               size_t elementBytes, Stream) {
  if (regionElements(part) == 0)
    return Status::ok();
  const RegionBox b = regionBox(into, part);
  cpu::copyIntoRegion(src, b.begin, b.size, dst, b.shape, b.rank, elementBytes);
  return Status::ok();
}

Status CpuDevice::cast(const void *src, plan::DType from, void *dst, plan::DType to, int64_t n,
                       Stream) {
  if (n <= 0)
    return Status::ok();
  if (from == plan::DType::F32 && to == plan::DType::BF16)
    cpu::toBf16(static_cast<const float *>(src), static_cast<uint16_t *>(dst), n);
  else if (from == plan::DType::BF16 && to == plan::DType::F32)
    cpu::fromBf16(static_cast<const uint16_t *>(src), static_cast<float *>(dst), n);
  else if (from == to && from != plan::DType::U8)
    return copy(dst, src, static_cast<size_t>(n) * (from == plan::DType::BF16 ? 2 : 4), nullptr);
  else
    return Status::error(std::string("CPU: cannot cast ") + plan::EnumNameDType(from) + " to " +
                         plan::EnumNameDType(to));
  return Status::ok();
}

Status CpuDevice::fetch(const std::vector<Stream> &, const std::vector<Fetch> &what) {
  for (const Fetch &f : what)
    std::memcpy(f.to, f.from, f.bytes);
  return Status::ok();
}

} // namespace sbpflow
