// Matrix products on the GPU through cuBLASLt, with cpu::matmul's row-major
// semantics (kernels/cpu/Kernels.h). fp32 computes in true fp32 (no TF32);
// bf16 stores A, B in bf16, accumulates in fp32 and stores C in bf16, or in
// fp32 for a result that must not round (a weight gradient).
#pragma once

#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace sbpflow::cuda {

using bf16 = __nv_bfloat16;

enum class GemmType { F32, Bf16 };

// One per device (rank): a cuBLASLt handle, a workspace allocated once by
// create(), and a plan (descriptors and the heuristic's algorithm) per shape
// seen, so a training step allocates nothing and queries no heuristic after
// its first iteration. The workspace is shared by every call: calls through
// one Blas must be ordered (one stream, or streams joined by events).
class Blas {
public:
  // 32 MiB: what cuBLAS recommends for Hopper.
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;
  // On the current device.
  static StatusOr<Blas> create(size_t workspaceBytes = kDefaultWorkspaceBytes);

  Blas(Blas &&) noexcept;
  Blas &operator=(Blas &&) noexcept;
  ~Blas();

  // What matmul calls: a and b hold elements of `type`, c of `result`
  // (F32 x F32 -> F32, Bf16 x Bf16 -> Bf16 or F32; anything else is an
  // error).
  Status run(GemmType type, GemmType result, const void *a, const void *b, void *c, int64_t m,
             int64_t n, int64_t k, bool transA, bool transB, cudaStream_t stream);
  // a, b and c all of `type`.
  Status run(GemmType type, const void *a, const void *b, void *c, int64_t m, int64_t n, int64_t k,
             bool transA, bool transB, cudaStream_t stream) {
    return run(type, type, a, b, c, m, n, k, transA, transB, stream);
  }

  struct Impl;

private:
  explicit Blas(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// c[m,n] = op(a) x op(b); op(a) is [m,k], op(b) is [k,n]. a is stored [m,k]
// (or [k,m] when transA), b is stored [k,n] (or [n,k] when transB), all
// row-major and dense. c is overwritten (zero when k == 0). T = float or bf16.
template <class T>
Status matmul(Blas &blas, const T *a, const T *b, T *c, int64_t m, int64_t n, int64_t k,
              bool transA, bool transB, cudaStream_t stream);

// Mixed precision: bf16 operands, the fp32 accumulator stored as it is (never
// rounded to bf16): a weight gradient of a bf16 backward, which the fp32
// optimiser reads. Otherwise as matmul<T>.
Status matmul(Blas &blas, const bf16 *a, const bf16 *b, float *c, int64_t m, int64_t n, int64_t k,
              bool transA, bool transB, cudaStream_t stream);

} // namespace sbpflow::cuda
