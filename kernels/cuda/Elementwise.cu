// Elementwise kernels (see Elementwise.h): grid-stride loops, fp32 arithmetic.
#include "kernels/cuda/Elementwise.h"
#include "kernels/cuda/Launch.cuh"

namespace sbpflow::cuda {
namespace {

using namespace detail;

__device__ __forceinline__ float normalCdf(float x) {
  return 0.5f * erfcf(-x * 0.70710678118654752f);
}

// The one GELU expression of gelu and biasGelu, so that the fused kernel
// gives biasAdd then gelu bit for bit.
__device__ __forceinline__ float geluOf(float x) { return x * normalCdf(x); }

template <class T> __global__ void reluKernel(const T *x, T *y, int64_t n) {
  for (int64_t i = first(); i < n; i += stride()) {
    float v = toFloat(x[i]);
    // `v < 0 ? 0 : v` rather than fmaxf: NaN propagates, as on the CPU.
    y[i] = fromFloat<T>(v < 0.f ? 0.f : v);
  }
}

template <class T> __global__ void reluGradKernel(const T *dy, const T *y, T *dx, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    dx[i] = fromFloat<T>(toFloat(y[i]) > 0.f ? toFloat(dy[i]) : 0.f);
}

template <class T> __global__ void geluKernel(const T *x, T *y, int64_t n) {
  for (int64_t i = first(); i < n; i += stride()) {
    y[i] = fromFloat<T>(geluOf(toFloat(x[i])));
  }
}

template <class T> __global__ void geluGradKernel(const T *dy, const T *x, T *dx, int64_t n) {
  for (int64_t i = first(); i < n; i += stride()) {
    // d/dx [x Phi(x)] = Phi(x) + x phi(x), phi the standard normal density.
    float v = toFloat(x[i]);
    float pdf = 0.39894228040143268f * __expf(-0.5f * v * v);
    dx[i] = fromFloat<T>(toFloat(dy[i]) * (normalCdf(v) + v * pdf));
  }
}

template <class T>
__global__ void biasAddKernel(const T *x, const T *bias, T *y, int64_t rows, int64_t cols) {
  int64_t n = rows * cols;
  for (int64_t i = first(); i < n; i += stride())
    y[i] = fromFloat<T>(toFloat(x[i]) + toFloat(bias[i % cols]));
}

template <class T>
__global__ void biasGeluKernel(const T *x, const T *bias, T *pre, T *y, int64_t rows,
                               int64_t cols) {
  int64_t n = rows * cols;
  for (int64_t i = first(); i < n; i += stride()) {
    T stored = fromFloat<T>(toFloat(x[i]) + toFloat(bias[i % cols]));
    if (pre)
      pre[i] = stored;
    // GELU of the value the backward will read (rounded to T), as the
    // unfused gelu reads what biasAdd stored: forward and backward agree on
    // bf16 too.
    y[i] = fromFloat<T>(geluOf(toFloat(stored)));
  }
}

template <class T> __global__ void addKernel(const T *a, const T *b, T *y, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    y[i] = fromFloat<T>(toFloat(a[i]) + toFloat(b[i]));
}

__global__ void subtractKernel(const float *a, const float *b, float *y, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    y[i] = a[i] - b[i];
}

__global__ void scaleKernel(const float *x, float factor, float *y, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    y[i] = x[i] * factor;
}

template <class T> __global__ void fillKernel(T *y, float value, int64_t n) {
  T v = fromFloat<T>(value);
  for (int64_t i = first(); i < n; i += stride())
    y[i] = v;
}

__global__ void toBf16Kernel(const float *x, bf16 *y, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    y[i] = fromFloat<bf16>(x[i]);
}

__global__ void toFloatKernel(const bf16 *x, float *y, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    y[i] = toFloat(x[i]);
}

} // namespace

// Each wrapper: nothing to launch for an empty tensor (a zero-block grid is
// an error in CUDA), else one grid-stride launch.
#define SBPFLOW_LAUNCH(kernel, n, ...)                                                             \
  do {                                                                                             \
    if ((n) <= 0)                                                                                  \
      return Status::ok();                                                                         \
    kernel<<<blocksFor(n), kThreads, 0, stream>>>(__VA_ARGS__);                                    \
    return launched(#kernel);                                                                      \
  } while (0)

template <class T> Status relu(const T *x, T *y, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(reluKernel<T>, n, x, y, n);
}
template <class T> Status reluGrad(const T *dy, const T *y, T *dx, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(reluGradKernel<T>, n, dy, y, dx, n);
}
template <class T> Status gelu(const T *x, T *y, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(geluKernel<T>, n, x, y, n);
}
template <class T> Status geluGrad(const T *dy, const T *x, T *dx, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(geluGradKernel<T>, n, dy, x, dx, n);
}
template <class T>
Status biasAdd(const T *x, const T *bias, T *y, int64_t rows, int64_t cols, cudaStream_t stream) {
  SBPFLOW_LAUNCH(biasAddKernel<T>, rows * cols, x, bias, y, rows, cols);
}
template <class T>
Status biasGelu(const T *x, const T *bias, T *pre, T *y, int64_t rows, int64_t cols,
                cudaStream_t stream) {
  SBPFLOW_LAUNCH(biasGeluKernel<T>, rows * cols, x, bias, pre, y, rows, cols);
}
template <class T> Status add(const T *a, const T *b, T *y, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(addKernel<T>, n, a, b, y, n);
}
template <class T> Status fill(T *y, float value, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(fillKernel<T>, n, y, value, n);
}
Status subtract(const float *a, const float *b, float *y, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(subtractKernel, n, a, b, y, n);
}
Status scale(const float *x, float factor, float *y, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(scaleKernel, n, x, factor, y, n);
}
Status castToBf16(const float *x, bf16 *y, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(toBf16Kernel, n, x, y, n);
}
Status castToFloat(const bf16 *x, float *y, int64_t n, cudaStream_t stream) {
  SBPFLOW_LAUNCH(toFloatKernel, n, x, y, n);
}

#define SBPFLOW_INSTANTIATE(T)                                                                     \
  template Status relu<T>(const T *, T *, int64_t, cudaStream_t);                                  \
  template Status reluGrad<T>(const T *, const T *, T *, int64_t, cudaStream_t);                   \
  template Status gelu<T>(const T *, T *, int64_t, cudaStream_t);                                  \
  template Status geluGrad<T>(const T *, const T *, T *, int64_t, cudaStream_t);                   \
  template Status biasAdd<T>(const T *, const T *, T *, int64_t, int64_t, cudaStream_t);           \
  template Status biasGelu<T>(const T *, const T *, T *, T *, int64_t, int64_t, cudaStream_t);     \
  template Status add<T>(const T *, const T *, T *, int64_t, cudaStream_t);                        \
  template Status fill<T>(T *, float, int64_t, cudaStream_t);
SBPFLOW_INSTANTIATE(float)
SBPFLOW_INSTANTIATE(bf16)

} // namespace sbpflow::cuda
