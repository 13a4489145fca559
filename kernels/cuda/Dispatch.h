// Host-side helpers of the CUDA kernel builders (kernels/<Family>.cpp): a
// task's element type as a template argument, its stream as cudaStream_t, and
// the per-device state of the CUDA libraries.
#pragma once

#include "kernels/Checks.h"
#include "kernels/cuda/Gemm.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <utility>

namespace sbpflow {

// One per GPU executor: the cuBLASLt handle and the scratch the
// deterministic reductions (mean, squareSum) share on the compute stream.
struct CudaResources {
  cuda::Blas blas;
  double *partials = nullptr; // cuda::kReducePartials doubles
};

namespace cuda {

inline cudaStream_t streamOf(Stream s) { return static_cast<cudaStream_t>(s); }

// A kernel's element type as a value, for a generic lambda: `using T =
// typename decltype(e)::type`.
template <class T> struct Elem { using type = T; };

// Calls build(Elem<float>) for F32 and build(Elem<bf16>) for BF16: the one
// place a task's element type T (the dtype of its T operands, Ops.def)
// picks the kernels' instantiation. Other dtypes are an error.
template <class Build>
StatusOr<Kernel> withFloatType(plan::DType dtype, const std::string &at, Build &&build) {
  if (dtype == plan::DType::F32)
    return build(Elem<float>{});
  if (dtype == plan::DType::BF16)
    return build(Elem<bf16>{});
  return Status::error(at + ": expects F32 or BF16 operands, got " + plan::EnumNameDType(dtype));
}

// As withFloatType, for kernels that only move elements: an I32 tensor moves
// as float, 4 bytes each.
template <class Build>
StatusOr<Kernel> withStorageType(plan::DType dtype, const std::string &at, Build &&build) {
  return withFloatType(dtype == plan::DType::I32 ? plan::DType::F32 : dtype, at,
                       std::forward<Build>(build));
}

// The shape of a CUDA builder: `work(a)` checks the task, then `make(e,
// work, stream)` builds its kernel for the element type of its first input
// (`using T = typename decltype(e)::type`).
template <class WorkFn, class Make>
StatusOr<Kernel> typedKernel(const OpArgs &a, WorkFn work, Make make) {
  auto w = work(a);
  if (!w)
    return w.status();
  const cudaStream_t s = streamOf(a.stream);
  return withFloatType(a.in[0]->dtype, a.at,
                       [&](auto e) -> StatusOr<Kernel> { return make(e, *w, s); });
}

// One element of a device i32 tensor, read after the step (only to word an
// error).
inline int32_t readI32(const int32_t *p) {
  int32_t v = 0;
  cudaMemcpy(&v, p, sizeof v, cudaMemcpyDeviceToHost);
  return v;
}

// The error flag (OpArgs::errorFlag) of a kernel that checks the device i32
// tensor `ids`: its first bad position's error names the task, in the words
// of `badId`, the id read back from the device.
inline int64_t *badIdFlag(const OpArgs &a, const int32_t *ids, BadId badId, int64_t count) {
  return a.errorFlag([=, at = a.at](int64_t position) {
    return at + ": " + badId(position, readI32(ids + position), count);
  });
}

} // namespace cuda
} // namespace sbpflow
