// Elementwise CUDA kernels for fp32 and bf16 tensors (T = float or
// __nv_bfloat16; arithmetic in fp32). Each enqueues on `stream` and returns
// the launch's status; results are ready once the stream reaches them.
// References: kernels/cpu (tests/kernels_cuda compares them).
#pragma once

#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sbpflow::cuda {

using bf16 = __nv_bfloat16;

template <class T> Status relu(const T *x, T *y, int64_t n, cudaStream_t stream);
template <class T> Status reluGrad(const T *dy, const T *y, T *dx, int64_t n, cudaStream_t stream);
// Exact GELU, x * Phi(x) (torch.nn.GELU's default).
template <class T> Status gelu(const T *x, T *y, int64_t n, cudaStream_t stream);
template <class T> Status geluGrad(const T *dy, const T *x, T *dx, int64_t n, cudaStream_t stream);
// y[i, j] = x[i, j] + bias[j]
template <class T>
Status biasAdd(const T *x, const T *bias, T *y, int64_t rows, int64_t cols, cudaStream_t stream);
// Fused y = gelu(x + bias) in one pass; `pre` (may be null) receives x + bias,
// which the backward (geluGrad) reads.
template <class T>
Status biasGelu(const T *x, const T *bias, T *pre, T *y, int64_t rows, int64_t cols,
                cudaStream_t stream);
template <class T> Status add(const T *a, const T *b, T *y, int64_t n, cudaStream_t stream);
template <class T> Status fill(T *y, float value, int64_t n, cudaStream_t stream);
// Local SGD's f32 ops, as cpu::subtract and cpu::scale (the same bits):
// y = a - b, y = x * factor.
Status subtract(const float *a, const float *b, float *y, int64_t n, cudaStream_t stream);
Status scale(const float *x, float factor, float *y, int64_t n, cudaStream_t stream);
// Mixed precision: bf16 compute copies of fp32 master tensors, and back.
Status castToBf16(const float *x, bf16 *y, int64_t n, cudaStream_t stream);
Status castToFloat(const bf16 *x, float *y, int64_t n, cudaStream_t stream);

} // namespace sbpflow::cuda
