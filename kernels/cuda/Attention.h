// Softmax and fused causal self-attention on the GPU, with the semantics of
// cpu::softmax / softmaxGrad / causalAttention / causalAttentionGrad
// (kernels/cpu/Transformer.h). Tensors are T = float or bf16; scores, weights,
// row statistics and every accumulation are fp32.
#pragma once

#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sbpflow::cuda {

using bf16 = __nv_bfloat16;

// Softmax over each row of `cols` elements. y may alias x.
template <class T>
Status softmax(const T *x, T *y, int64_t rows, int64_t cols, cudaStream_t stream);
// dx = y * (dy - sum(dy * y)) per row. dx may alias dy or y.
template <class T>
Status softmaxGrad(const T *dy, const T *y, T *dx, int64_t rows, int64_t cols, cudaStream_t stream);

// The largest headDim the attention kernels take.
constexpr int64_t kMaxAttentionHeadDim = 128;

// Floats of the forward's row statistics: the log-sum-exp of each query row's
// scaled, masked scores, laid out [batch, heads, seqLen]. The forward writes them,
// the backward reads them; the executor allocates them from the plan's memory
// and keeps them from the forward to the backward.
int64_t causalAttentionLseSize(int64_t batch, int64_t seqLen, int64_t heads);

// Causal multi-head self-attention, flash-attention style: the seqLen x
// seqLen weights are never stored. q, k, v, y are [batch, seqLen, heads *
// headDim]; per head y = softmax(q kᵀ / sqrt(headDim) + causal mask) v.
// `lse` receives the row statistics (may be null when no backward follows).
// headDim <= kMaxAttentionHeadDim; y must not alias q, k or v.
template <class T>
Status causalAttention(const T *q, const T *k, const T *v, T *y, float *lse, int64_t batch,
                       int64_t seqLen, int64_t heads, int64_t headDim, cudaStream_t stream);

// dq, dk, dv (overwritten) of causalAttention. y and lse are the forward's
// outputs for the same q, k, v: the weights are recomputed from q, k and lse,
// and sum_j P_ij dP_ij = dy_i . y_i. Deterministic (no atomics): dk and dv
// are one pass over the query tiles per key tile, dq one over the key tiles
// per query tile. The outputs must not alias the inputs.
template <class T>
Status causalAttentionGrad(const T *dy, const T *q, const T *k, const T *v, const T *y,
                           const float *lse, T *dq, T *dk, T *dv, int64_t batch, int64_t seqLen,
                           int64_t heads, int64_t headDim, cudaStream_t stream);

} // namespace sbpflow::cuda
