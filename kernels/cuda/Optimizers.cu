// Optimizer kernels (see Optimizers.h): grid-stride loops with cpu's formulas
// term for term. SGD and local SGD's outer step round every operation as
// cpu::sgdMomentum and cpu::outerStep do (built without FMA contraction): GPU
// and CPU replicas of a weight keep the same bits. AdamW may fuse
// multiply-adds, as the CPU's AVX2 / AVX-512 clones do.
#include "kernels/cpu/Adam.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cuda/Launch.cuh"
#include "kernels/cuda/Optimizers.h"

#include <cmath>

namespace sbpflow::cuda {
namespace {

using namespace detail;

__device__ __forceinline__ float scaleOf(const float *gradScale) {
  return gradScale ? *gradScale : 1.f;
}

__global__ void sgdKernel(float *w, const float *g, int64_t n, float lr, float weightDecay,
                          const float *gradScale) {
  const float s = scaleOf(gradScale);
  // The _rn intrinsics are never contracted into FMAs.
  for (int64_t i = first(); i < n; i += stride()) {
    const float gi = __fadd_rn(__fmul_rn(g[i], s), __fmul_rn(weightDecay, w[i]));
    w[i] = __fsub_rn(w[i], __fmul_rn(lr, gi));
  }
}

__global__ void sgdMomentumKernel(float *w, float *v, const float *g, int64_t n, float lr,
                                  float momentum, float weightDecay, const float *gradScale) {
  const float s = scaleOf(gradScale);
  for (int64_t i = first(); i < n; i += stride()) {
    const float gi = __fadd_rn(__fmul_rn(g[i], s), __fmul_rn(weightDecay, w[i]));
    const float vi = __fadd_rn(__fmul_rn(momentum, v[i]), gi);
    v[i] = vi;
    w[i] = __fsub_rn(w[i], __fmul_rn(lr, vi));
  }
}

__global__ void adamwKernel(float *w, float *m, float *v, const float *g, int64_t n, float beta1,
                            float beta2, float eps, float decay, float stepSize, float bc2Sqrt,
                            const float *gradScale) {
  const float s = scaleOf(gradScale);
  const float oneMinusBeta1 = 1.f - beta1, oneMinusBeta2 = 1.f - beta2;
  for (int64_t i = first(); i < n; i += stride()) {
    const float gi = g[i] * s;
    const float mi = beta1 * m[i] + oneMinusBeta1 * gi;
    const float vi = beta2 * v[i] + oneMinusBeta2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bc2Sqrt + eps;
    w[i] = w[i] * decay - stepSize * (mi / denom);
  }
}

__global__ void outerStepKernel(float *param, float *anchor, float *m, const float *sum, int64_t n,
                                float lr, float momentum, bool nesterov, float divisor, float clip,
                                bool keepAnchor) {
  for (int64_t i = first(); i < n; i += stride()) {
    const float d = __fdiv_rn(sum[i], divisor);
    float update = d;
    if (m) {
      float mi = __fadd_rn(__fmul_rn(momentum, m[i]), d);
      // Comparisons rather than fminf / fmaxf, which drop a NaN: as the CPU.
      if (clip > 0.f)
        mi = mi < -clip ? -clip : (mi > clip ? clip : mi);
      m[i] = mi;
      update = nesterov ? __fadd_rn(d, __fmul_rn(momentum, mi)) : mi;
    }
    const float a = __fsub_rn(anchor[i], __fmul_rn(lr, update));
    if (!keepAnchor)
      anchor[i] = a;
    param[i] = a;
  }
}

} // namespace

Status sgdMomentum(float *w, float *v, const float *g, int64_t n, float lr, float momentum,
                   float weightDecay, const float *gradScale, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  if (v == nullptr || momentum == 0.f) {
    sgdKernel<<<blocksFor(n), kThreads, 0, stream>>>(w, g, n, lr, weightDecay, gradScale);
    return launched("sgdKernel");
  }
  sgdMomentumKernel<<<blocksFor(n), kThreads, 0, stream>>>(w, v, g, n, lr, momentum, weightDecay,
                                                           gradScale);
  return launched("sgdMomentumKernel");
}

Status adamw(float *w, float *m, float *v, const float *g, int64_t n, float lr, float beta1,
             float beta2, float eps, float weightDecay, int64_t step, const float *gradScale,
             cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  // The scalar factors exactly as cpu::adamw computes them.
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weightDecay);
  const auto [stepSize, bc2Sqrt] = cpu::adamFactors(lr, beta1, beta2, step);
  adamwKernel<<<blocksFor(n), kThreads, 0, stream>>>(w, m, v, g, n, beta1, beta2, eps, decay,
                                                     stepSize, bc2Sqrt, gradScale);
  return launched("adamwKernel");
}

Status outerStep(float *param, float *anchor, float *m, const float *sum, int64_t n, float lr,
                 float momentum, bool nesterov, int replicas, float gapPenalty, float clip,
                 bool keepAnchor, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  outerStepKernel<<<blocksFor(n), kThreads, 0, stream>>>(
      param, anchor, m, sum, n, lr, momentum, nesterov, cpu::outerDivisor(replicas, gapPenalty),
      clip, keepAnchor);
  return launched("outerStepKernel");
}

} // namespace sbpflow::cuda
