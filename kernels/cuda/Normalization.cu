// Layer norm kernels (see Normalization.h). One warp per row for the row
// statistics (rows of a transformer are a few hundred to a few thousand
// wide: a warp streams them at full width and reduces with shuffles alone);
// the backward's column sums go through a per-chunk partial pass and a final
// pass in fixed order, so they are the same bits on every run.
#include "kernels/cuda/Launch.cuh"
#include "kernels/cuda/Normalization.h"

namespace sbpflow::cuda {
namespace {

using namespace detail;

// Rows of one column partial sum (at least; see chunkRowsFor).
constexpr int64_t kChunkRows = 128;
// threadIdx.y extent of the column kernel: 32 columns x 8 row lanes.
constexpr int kColumnLanes = 8;

// Chunks stay within gridDim.y's 65535 for any number of rows. A function of
// `rows` alone, so the summation order never depends on the device.
int64_t chunkRowsFor(int64_t rows) { return std::max(kChunkRows, (rows + 65534) / 65535); }
int64_t chunksFor(int64_t rows) {
  const int64_t c = chunkRowsFor(rows);
  return (rows + c - 1) / c;
}

// Mean and 1 / sqrt(var + eps) of a row, in every lane. Two passes, as on the
// CPU: E[x^2] - mean^2 cancels badly for rows far from 0.
template <class T>
__device__ __forceinline__ void rowStats(const T *xr, int64_t cols, float eps, int lane,
                                         float &mean, float &rstd) {
  const float invCols = 1.f / static_cast<float>(cols);
  float s = 0.f;
  for (int64_t j = lane; j < cols; j += 32)
    s += toFloat(xr[j]);
  mean = warpSum(s) * invCols;
  float ss = 0.f;
  for (int64_t j = lane; j < cols; j += 32) {
    const float d = toFloat(xr[j]) - mean;
    ss += d * d;
  }
  rstd = 1.f / sqrtf(warpSum(ss) * invCols + eps);
}

template <class T>
__global__ void layerNormKernel(const T *x, const float *gamma, const float *beta, T *y,
                                int64_t rows, int64_t cols, float eps) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = firstWarpRow(); r < rows; r += warpRowStride()) {
    const T *xr = x + r * cols;
    T *yr = y + r * cols;
    float mean, rstd;
    rowStats(xr, cols, eps, lane, mean, rstd);
    // Each lane reads and writes its own elements only: y may alias x.
    for (int64_t j = lane; j < cols; j += 32)
      yr[j] = fromFloat<T>((toFloat(xr[j]) - mean) * rstd * gamma[j] + beta[j]);
  }
}

// dx per row; the row's mean and rstd go to `meanOut` / `rstdOut` for the
// column kernel.
template <class T>
__global__ void layerNormGradRowsKernel(const T *dy, const T *x, const float *gamma, T *dx,
                                        float *meanOut, float *rstdOut, int64_t rows, int64_t cols,
                                        float eps) {
  const int lane = threadIdx.x & 31;
  const float invCols = 1.f / static_cast<float>(cols);
  for (int64_t r = firstWarpRow(); r < rows; r += warpRowStride()) {
    const T *xr = x + r * cols, *dyr = dy + r * cols;
    T *dxr = dx + r * cols;
    float mean, rstd;
    rowStats(xr, cols, eps, lane, mean, rstd);
    if (lane == 0) {
      meanOut[r] = mean;
      rstdOut[r] = rstd;
    }
    // With xhat = (x - mean) rstd and g = dy gamma:
    // dx = rstd (g - mean(g) - xhat mean(g xhat)).
    float accG = 0.f, accGX = 0.f;
    for (int64_t j = lane; j < cols; j += 32) {
      const float xhat = (toFloat(xr[j]) - mean) * rstd;
      const float g = toFloat(dyr[j]) * gamma[j];
      accG += g;
      accGX += g * xhat;
    }
    const float meanG = warpSum(accG) * invCols;
    const float meanGX = warpSum(accGX) * invCols;
    for (int64_t j = lane; j < cols; j += 32) {
      const float xhat = (toFloat(xr[j]) - mean) * rstd;
      dxr[j] = fromFloat<T>(rstd * (toFloat(dyr[j]) * gamma[j] - meanG - xhat * meanGX));
    }
  }
}

// Block (32, kColumnLanes) sums columns [32 bx, 32 bx + 32) over the rows of
// chunk by: lane (tx, ty) takes rows ty, ty + kColumnLanes, ... of the chunk
// (a warp reads 32 consecutive columns of one row), then lanes ty = 0..7 are
// added in order.
template <class T>
__global__ void layerNormGradColumnsKernel(const T *dy, const T *x, const float *mean,
                                           const float *rstd, float *partGamma, float *partBeta,
                                           int64_t rows, int64_t cols, int64_t chunkRows) {
  __shared__ float sg[kColumnLanes][32], sb[kColumnLanes][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * 32 + tx;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * chunkRows;
  const int64_t r1 = r0 + chunkRows < rows ? r0 + chunkRows : rows;
  float g = 0.f, b = 0.f;
  if (j < cols)
    for (int64_t r = r0 + ty; r < r1; r += kColumnLanes) {
      const float d = toFloat(dy[r * cols + j]);
      g += d * ((toFloat(x[r * cols + j]) - mean[r]) * rstd[r]);
      b += d;
    }
  sg[ty][tx] = g;
  sb[ty][tx] = b;
  __syncthreads();
  if (ty == 0 && j < cols) {
    float G = 0.f, B = 0.f;
    for (int t = 0; t < kColumnLanes; ++t) {
      G += sg[t][tx];
      B += sb[t][tx];
    }
    partGamma[blockIdx.y * cols + j] = G;
    partBeta[blockIdx.y * cols + j] = B;
  }
}

// dgamma[j] = sum over chunks c = 0, 1, ... of part[c, j] (0 with no chunks).
__global__ void layerNormGradFinishKernel(const float *partGamma, const float *partBeta,
                                          float *dgamma, float *dbeta, int64_t chunks,
                                          int64_t cols) {
  for (int64_t j = first(); j < cols; j += stride()) {
    float g = 0.f, b = 0.f;
    for (int64_t c = 0; c < chunks; ++c) {
      g += partGamma[c * cols + j];
      b += partBeta[c * cols + j];
    }
    dgamma[j] = g;
    dbeta[j] = b;
  }
}

} // namespace

template <class T>
Status layerNorm(const T *x, const float *gamma, const float *beta, T *y, int64_t rows,
                 int64_t cols, float eps, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0)
    return Status::ok();
  layerNormKernel<T><<<rowBlocks(rows), kThreads, 0, stream>>>(x, gamma, beta, y, rows, cols, eps);
  return launched("layerNormKernel");
}

int64_t layerNormGradScratch(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0)
    return 0;
  return 2 * rows + 2 * chunksFor(rows) * cols;
}

template <class T>
Status layerNormGrad(const T *dy, const T *x, const float *gamma, T *dx, float *dgamma,
                     float *dbeta, int64_t rows, int64_t cols, float eps, float *scratch,
                     cudaStream_t stream) {
  if (cols <= 0)
    return Status::ok();
  const int64_t chunks = rows > 0 ? chunksFor(rows) : 0;
  // scratch: mean [rows], rstd [rows], partGamma [chunks, cols], partBeta [chunks, cols].
  float *mean = scratch, *rstd = scratch + std::max<int64_t>(rows, 0);
  float *partGamma = rstd + std::max<int64_t>(rows, 0), *partBeta = partGamma + chunks * cols;
  if (rows > 0) {
    layerNormGradRowsKernel<T>
        <<<rowBlocks(rows), kThreads, 0, stream>>>(dy, x, gamma, dx, mean, rstd, rows, cols, eps);
    if (Status s = launched("layerNormGradRowsKernel"); !s)
      return s;
    const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(chunks));
    layerNormGradColumnsKernel<T><<<grid, dim3(32, kColumnLanes), 0, stream>>>(
        dy, x, mean, rstd, partGamma, partBeta, rows, cols, chunkRowsFor(rows));
    if (Status s = launched("layerNormGradColumnsKernel"); !s)
      return s;
  }
  layerNormGradFinishKernel<<<blocksFor(cols), kThreads, 0, stream>>>(partGamma, partBeta, dgamma,
                                                                      dbeta, chunks, cols);
  return launched("layerNormGradFinishKernel");
}

#define SBPFLOW_INSTANTIATE(T)                                                                     \
  template Status layerNorm<T>(const T *, const float *, const float *, T *, int64_t, int64_t,     \
                               float, cudaStream_t);                                               \
  template Status layerNormGrad<T>(const T *, const T *, const float *, T *, float *, float *,     \
                                   int64_t, int64_t, float, float *, cudaStream_t);
SBPFLOW_INSTANTIATE(float)
SBPFLOW_INSTANTIATE(bf16)

} // namespace sbpflow::cuda
