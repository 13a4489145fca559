// Fused layer norm on the GPU, forward and backward, with the semantics of
// cpu::layerNorm / cpu::layerNormGrad (kernels/cpu/Transformer.h). x, y, dy,
// dx are T = float or bf16; statistics and arithmetic are fp32. gamma, beta
// and their gradients are fp32 in every precision: they are parameters whose
// master copy is fp32, read and written directly, so mixed precision needs no
// bf16 copy of them and their row sums never round to bf16.
#pragma once

#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sbpflow::cuda {

using bf16 = __nv_bfloat16;

// y = (x - mean) / sqrt(var + eps) * gamma + beta per row of `cols` elements
// (biased variance, as PyTorch's layer norm). y may alias x.
template <class T>
Status layerNorm(const T *x, const float *gamma, const float *beta, T *y, int64_t rows,
                 int64_t cols, float eps, cudaStream_t stream);

// Floats of scratch layerNormGrad needs: row statistics and per-chunk column
// partial sums (the executor allocates it from the plan's memory).
int64_t layerNormGradScratch(int64_t rows, int64_t cols);

// dx, and dgamma / dbeta summed over the rows (overwritten, not accumulated;
// zero when rows == 0). Mean and variance are recomputed from x. The column
// sums are deterministic: fixed chunks of rows, each summed in a fixed order,
// then the chunks in order; no atomics. dx must not alias dy or x.
template <class T>
Status layerNormGrad(const T *dy, const T *x, const float *gamma, T *dx, float *dgamma,
                     float *dbeta, int64_t rows, int64_t cols, float eps, float *scratch,
                     cudaStream_t stream);

} // namespace sbpflow::cuda
