// A rank's device as the executor and the kernels see it: the plan's one
// allocation, the copies, fills, region packs and casts that collectives,
// optimisers and bf16 staging are written with, and streams with their order.
// On the CPU everything runs at once on the calling thread and the stream
// arguments are ignored; on a GPU work is enqueued on the stream given.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"
#include "runtime/plan/plan_generated.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow {

// A queue of device work: cudaStream_t on a GPU, null on the CPU.
using Stream = void *;

// Offsets in the plan's single allocation, handed out before it exists: the
// executor lays out variables, arenas and every kernel's scratch, then opens
// the device with the total.
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

// A value the host reads once a step's work has run: `bytes` from device
// address `from` to host address `to`.
struct Fetch {
  const void *from;
  void *to;
  size_t bytes;
};

class Device {
public:
  virtual ~Device() = default;
  virtual plan::DeviceKind kind() const = 0;
  // "CPU", "GPU 0": for errors.
  virtual std::string name() const = 0;

  // The plan's allocation; an offset from DeviceLayout::reserve points into it.
  virtual uint8_t *at(size_t offset) const = 0;
  // Whether the host reads and writes device memory in place (the CPU).
  virtual bool hostVisible() const = 0;

  // Where compute kernels are enqueued (null on the CPU).
  virtual Stream computeStream() const = 0;
  // Makes `waiter` wait for everything enqueued on `signaller` so far,
  // without a host wait; a no-op on the CPU.
  virtual Status order(Stream signaller, Stream waiter) = 0;
  // Waits for every stream (between runs: checkpoints, outputs).
  virtual Status synchronize() const = 0;
  // A fault of earlier asynchronous work (ok on the CPU).
  virtual Status asyncError() const = 0;

  // Work on `stream`; `bytes` and element counts may be 0. Region copies
  // move elements of `elementBytes` bytes (runtime/Shape.h regions in global
  // coordinates: `part` of a tensor holding `from`, densely into dst; and a
  // dense block holding `part` back into a tensor holding `into`).
  virtual Status copy(void *dst, const void *src, size_t bytes, Stream stream) = 0;
  // Host to device; the host buffer may be reused once this returns.
  virtual Status upload(void *dst, const void *host, size_t bytes, Stream stream) = 0;
  // Device to host, waiting for the device.
  virtual Status download(void *host, const void *src, size_t bytes) = 0;
  // n elements of `dtype` (F32, BF16; I32 only with value 0) set to value.
  virtual Status fill(void *dst, plan::DType dtype, float value, int64_t n, Stream stream) = 0;
  virtual Status packRegion(const void *src, const Region &from, const Region &part, void *dst,
                            size_t elementBytes, Stream stream) = 0;
  virtual Status unpackRegion(const void *src, const Region &part, void *dst, const Region &into,
                              size_t elementBytes, Stream stream) = 0;
  // F32 <-> BF16 (round to nearest even); the same type copies.
  virtual Status cast(const void *src, plan::DType from, void *dst, plan::DType to, int64_t n,
                      Stream stream) = 0;
  // The end of a step: once every stream in `streams` and the compute stream
  // have run what was enqueued, copies each Fetch to the host and checks for
  // faults.
  virtual Status fetch(const std::vector<Stream> &streams, const std::vector<Fetch> &what) = 0;
  // Makes room for fetches of `bytes` in all, so that a step allocates
  // nothing (call it while building).
  virtual Status reserveFetch(size_t bytes) = 0;
};

} // namespace sbpflow
