// CPU kernels of the transformer ops (embedding, layer norm, GELU, softmax,
// causal attention, dropout, transpose, AdamW, gradient clipping) on local
// row-major fp32 buffers. Each is checked against a double-precision
// reference in tests/kernels/TransformerKernelsTest.cpp. "rows" is the product
// of the leading axes; the op acts on the last axis of `cols` elements.
#pragma once

#include <array>
#include <cstdint>

namespace sbpflow::cpu {

// out[r,:] = table[ids[r] - rowBegin, :] when rowBegin <= ids[r] < rowBegin +
// tableRows (this rank's rows of a vocabulary-split table), else 0. An id
// outside [0, vocab) is an error: returns the first bad r, or -1.
int64_t embedding(const float *table, int64_t tableRows, int64_t rowBegin, int64_t vocab,
                  const int32_t *ids, int64_t n, int64_t dim, float *out);
// dtable = 0; dtable[ids[r] - rowBegin, :] += dy[r, :] for ids in this rank's
// rows. Ids were range-checked by the forward.
void embeddingGrad(const float *dy, const int32_t *ids, int64_t n, int64_t dim, float *dtable,
                   int64_t tableRows, int64_t rowBegin);

// y = (x - mean) / sqrt(var + eps) * gamma + beta per row (biased variance,
// as PyTorch's layer norm).
void layerNorm(const float *x, const float *gamma, const float *beta, float *y, int64_t rows,
               int64_t cols, float eps);
// dx, and dgamma / dbeta summed over this rank's rows (overwritten, not
// accumulated). Mean and variance are recomputed from x.
void layerNormGrad(const float *dy, const float *x, const float *gamma, float *dx, float *dgamma,
                   float *dbeta, int64_t rows, int64_t cols, float eps);

// Exact GELU, x * Phi(x) (torch.nn.GELU's default).
void gelu(const float *x, float *y, int64_t n);
void geluGrad(const float *dy, const float *x, float *dx, int64_t n);
// pre[i,j] = x[i,j] + bias[j], y = gelu(pre), in one pass: bit for bit
// biasAdd then gelu (the pre-activation is kept for geluGrad, not read back).
// With preBf16 pre is rounded to bf16 (as toBf16, held in f32) before gelu
// reads it, as a BF16 plan stores it between the two unfused ops. pre or y
// may be x itself.
void biasGelu(const float *x, const float *bias, float *pre, float *y, int64_t rows, int64_t cols,
              bool preBf16 = false);

// Softmax over each row of `cols` elements.
void softmax(const float *x, float *y, int64_t rows, int64_t cols);
// dx = y * (dy - sum(dy * y)) per row.
void softmaxGrad(const float *dy, const float *y, float *dx, int64_t rows, int64_t cols);

// Causal multi-head self-attention. q, k, v, y are [batch, T, heads * headDim]
// (the heads this rank holds); per head y = softmax(q kᵀ / sqrt(headDim) +
// causal mask) v. `scratch` holds causalAttentionScratch(T, headDim) floats.
int64_t causalAttentionScratch(int64_t T, int64_t headDim);
void causalAttention(const float *q, const float *k, const float *v, float *y, int64_t batch,
                     int64_t T, int64_t heads, int64_t headDim, float *scratch);
// dq, dk, dv (overwritten); the attention weights are recomputed.
void causalAttentionGrad(const float *dy, const float *q, const float *k, const float *v, float *dq,
                         float *dk, float *dv, int64_t batch, int64_t T, int64_t heads,
                         int64_t headDim, float *scratch);

// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as
// easy as 1, 2, 3", SC'11), the counter-based generator of cuRAND and JAX.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);
// y = x * keep / (1 - p) over the local block `regionBegin`/`regionSize` of a
// tensor of `globalShape` (rank axes; x and y hold the block densely). The
// keep decision of the element with global row-major index g is
// philox4x32_10({g, g >> 32, batch, epoch}, {seed, seed >> 32})[0] >= p * 2^32,
// so the mask depends on the element, not on how the tensor is split. The
// gradient is the same call on dy.
void dropout(const float *x, float *y, const int64_t *globalShape, const int64_t *regionBegin,
             const int64_t *regionSize, int rank, float p, uint64_t seed, uint32_t batch,
             uint32_t epoch);

// y = x with axes permuted: y.shape[i] = shape[perm[i]].
void transpose(const float *x, float *y, const int64_t *shape, const int *perm, int rank);

// sum(x^2), accumulated in double.
float squareSum(const float *x, int64_t n);
// torch.nn.utils.clip_grad_norm_'s factor: min(1, maxNorm / (sqrt(total) + 1e-6)).
float clipScale(float totalSquares, float maxNorm);

// PyTorch 1.13's AdamW on g' = g * gradScale: w -= lr * weightDecay * w;
// m = beta1 m + (1 - beta1) g'; v = beta2 v + (1 - beta2) g'^2;
// w -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps).
// `step` counts from 1.
void adamw(float *w, float *m, float *v, const float *g, int64_t n, float lr, float beta1,
           float beta2, float eps, float weightDecay, int64_t step, float gradScale);

} // namespace sbpflow::cpu
