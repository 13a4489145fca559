// Optimizer updates on fp32 master weights, fp32 state and fp32 gradients,
// each one kernel over the parameter (one read and one write of every array).
// The clipping factor is a device scalar (clipScale's output) so that a step
// needs no host sync. Enqueued on `stream`; references: kernels/cpu.
#pragma once

#include "runtime/Status.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sbpflow::cuda {

// PyTorch's SGD, as cpu::sgdMomentum: g' = g * gradScale + wd * w;
// v = momentum * v + g'; w -= lr * v (v == nullptr or momentum == 0:
// w -= lr * g', v untouched). gradScale points at a device float, or is null
// for 1.
Status sgdMomentum(float *w, float *v, const float *g, int64_t n, float lr, float momentum,
                   float weightDecay, const float *gradScale, cudaStream_t stream);

// PyTorch 1.13's AdamW, as cpu::adamw (same scalar factors, computed in double
// on the host from `step`, which counts from 1). `step` is a host value: the
// step count is the same on every rank and known to the executor before the
// launch; a device copy for checkpoints can be written alongside.
// gradScale as for sgdMomentum.
Status adamw(float *w, float *m, float *v, const float *g, int64_t n, float lr, float beta1,
             float beta2, float eps, float weightDecay, int64_t step, const float *gradScale,
             cudaStream_t stream);

// Local SGD's outer step, as cpu::outerStep, bit for bit (the same divisor,
// every operation rounded in the same order): `sum` is the replicas' summed
// pseudo-gradients; m is null where the step has no momentum buffer; with
// keepAnchor the anchor stays.
Status outerStep(float *param, float *anchor, float *m, const float *sum, int64_t n, float lr,
                 float momentum, bool nesterov, int replicas, float gapPenalty, float clip,
                 bool keepAnchor, cudaStream_t stream);

} // namespace sbpflow::cuda
