// Compressed gradient all-reduces (issue 14): an AllReduce task whose
// CollectiveAttrs carry a codec (runtime/plan/plan.fbs, CodecAttrs) sums its
// one f32 gradient over the group by exchanging each rank's fixed-size
// payload, keeping what it did not send in state variables. The codecs'
// arithmetic is kernels/cpu/Compression.h and kernels/cpu/Quantize.h.
#pragma once

#include "kernels/Registry.h"

namespace sbpflow::ops {

// Whether `task` is an AllReduce with a codec.
bool hasCodec(const plan::Task &task);

// What the CPU and CUDA kernels share, so that their payloads agree to the
// element: the state variables a codec keeps (CodecAttrs.state), whether it
// sends (index, value) pairs, k for a density of n elements (at least one, at
// most n), and DGC's density at exchange `count` (its warm-up schedule).
int codecStateCount(plan::Codec kind);
bool isSparseCodec(plan::Codec kind);
int64_t pairsFor(double density, int64_t n);
double dgcDensity(const plan::CodecAttrs &c, int64_t count);

// The plan's side (the loader's check on global tensors): one f32 input
// reduced by sum, the codec's parameters in range, its state and step
// variables present and shaped as CodecAttrs says.
Status checkCodec(const OpArgs &a);

// The CPU kernel: encode, exchange through the group's communicator (Gloo),
// decode into the output, count the step.
StatusOr<Kernel> cpuCompressedAllReduce(const OpArgs &a);

#ifdef SBPFLOW_HAVE_CUDA
// The CUDA kernel (kernels/CodecsCuda.cpp): the same payloads on the
// communicator's stream (NCCL); L-GreCo is refused there for now.
StatusOr<Kernel> cudaCompressedAllReduce(const OpArgs &a);
#endif

} // namespace sbpflow::ops
