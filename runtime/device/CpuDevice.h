// A CPU rank's device: the plan's allocation in host memory (aligned for
// vector loads), everything run at once on the calling thread.
#pragma once

#include "runtime/device/Device.h"

#include <memory>

namespace sbpflow {

// The machine's physical memory in bytes (what a CPU rank may allocate at
// most).
int64_t hostMemoryBytes();

class CpuDevice final : public Device {
public:
  // Allocates `bytes` (DeviceLayout::total()); an error, not an exception,
  // when the machine cannot.
  static StatusOr<std::unique_ptr<CpuDevice>> open(size_t bytes);

  plan::DeviceKind kind() const override { return plan::DeviceKind::CPU; }
  std::string name() const override { return "CPU"; }
  uint8_t *at(size_t offset) const override { return base_ + offset; }
  bool hostVisible() const override { return true; }
  Stream computeStream() const override { return nullptr; }
  Status order(Stream, Stream) override { return Status::ok(); }
  Status synchronize() const override { return Status::ok(); }
  Status asyncError() const override { return Status::ok(); }
  Status copy(void *dst, const void *src, size_t bytes, Stream) override;
  Status upload(void *dst, const void *host, size_t bytes, Stream) override;
  Status download(void *host, const void *src, size_t bytes) override;
  Status fill(void *dst, plan::DType dtype, float value, int64_t n, Stream) override;
  Status packRegion(const void *src, const Region &from, const Region &part, void *dst,
                    size_t elementBytes, Stream) override;
  Status unpackRegion(const void *src, const Region &part, void *dst, const Region &into,
                      size_t elementBytes, Stream) override;
  Status cast(const void *src, plan::DType from, void *dst, plan::DType to, int64_t n,
              Stream) override;
  Status fetch(const std::vector<Stream> &, const std::vector<Fetch> &what) override;
  Status reserveFetch(size_t) override { return Status::ok(); }

private:
  CpuDevice() = default;
  std::unique_ptr<uint8_t[]> storage_;
  uint8_t *base_ = nullptr;
};

} // namespace sbpflow
