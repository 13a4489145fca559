// Loss, metric and reduction CUDA kernels (softmax cross-entropy, mean,
// bias-gradient row sums, gradient clipping). Logits may be fp32 or bf16 (T);
// per-row losses, the loss gradient, sums and scalars are fp32 (the master
// side of mixed precision). Each function enqueues on `stream` and returns the
// launch's status; results are ready once the stream reaches them.
// References: kernels/cpu/Kernels.h and Transformer.h (tests/kernels_cuda).
#pragma once

#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sbpflow::cuda {

using bf16 = __nv_bfloat16;

// loss[i] = -log softmax(logits[i,:])[labels[i]]; 0 where labels[i] < 0
// (padding) or classes == 0, as cpu::softmaxXent. A label >= classes is an
// error: its loss is 0 and, when `firstBad` is not null, *firstBad (a device
// int64) receives the first such row, else -1. The caller reads *firstBad once
// the stream has passed this call (cudaMemcpyAsync to pinned memory and a
// check at the end of the step: no sync in the hot path) and reports the
// error with the row's label. `lse` (may be null) receives each row's
// log-sum-exp (0 for skipped rows): softmaxXentGrad then needs one pass over
// the logits instead of three.
template <class T>
Status softmaxXent(const T *logits, const int32_t *labels, float *loss, float *lse,
                   int64_t *firstBad, int64_t rows, int64_t classes, cudaStream_t stream);

// dlogits[i,:] = (softmax(logits[i,:]) - onehot(labels[i])) * dloss[i]; zero
// rows where labels[i] < 0 or >= classes, as cpu::softmaxXentGrad. `lse` is
// the forward's (same logits and labels) or null to recompute it. dlogits may
// alias logits.
template <class T>
Status softmaxXentGrad(const T *logits, const int32_t *labels, const float *dloss, const float *lse,
                       T *dlogits, int64_t rows, int64_t classes, cudaStream_t stream);

// *out (device) = number of rows whose first argmax equals the label (labels <
// 0 skipped), as cpu::countCorrect. Exact below 2^24 counted rows (the count
// is summed as a float of whole numbers, so the order of the sum does not
// matter). With NaN logits the CPU's scan order decides; here NaNs are skipped
// unless the row starts with one (then the argmax is 0, as on the CPU).
template <class T>
Status countCorrect(const T *logits, const int32_t *labels, float *out, int64_t rows,
                    int64_t classes, cudaStream_t stream);

// The sums below are deterministic (a fixed two-pass tree in double, the same
// bits on every run) and need `partials`: kReducePartials doubles of device
// scratch. Calls on one stream may share it (the stream orders them).
constexpr int kReducePartials = 1024;

// *out (device) = sum(x) / count, 0 when count <= 0 (count is the global
// element count: a split input yields a partial mean).
Status mean(const float *x, float *out, int64_t n, int64_t count, double *partials,
            cudaStream_t stream);
// y[i] = *dy / count (dy on the device), 0 when count <= 0.
Status meanGrad(const float *dy, float *y, int64_t n, int64_t count, cudaStream_t stream);

// y[j] = sum_i x[i,j], accumulated in fp32 (deterministic: a fixed order)
// and stored as Y, rounded once. Y = float for a bias gradient, which the
// fp32 optimizer reads; Y = bf16 (with T = bf16) where a bf16 backward goes
// on with the sum. Instantiated for (float, float), (bf16, float) and
// (bf16, bf16).
template <class T, class Y>
Status reduceRows(const T *x, Y *y, int64_t rows, int64_t cols, cudaStream_t stream);

// *out (device) = sum(x^2), accumulated in double (as cpu::squareSum). To clip
// several gradients, write each one's sum to its own element of an array and
// hand the array to clipScale.
Status squareSum(const float *x, int64_t n, float *out, double *partials, cudaStream_t stream);

// *scale (device) = cpu::clipScale(total, maxNorm) with total the fp32 sum of
// squares[0..count) in index order (the chain of adds the compiler emits;
// count == 1 is the plan's ClipScale op). Device in, device out: the
// optimizers read *scale as their gradScale, so clipping needs no host sync.
Status clipScale(const float *squares, int count, float maxNorm, float *scale, cudaStream_t stream);

} // namespace sbpflow::cuda
