// What every CUDA kernel file shares: launch geometry, the status of a
// launch, and float <-> storage conversions (fp32 and bf16 tensors; the
// arithmetic is always fp32).
#pragma once

#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace sbpflow::cuda::detail {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements: enough to fill an H100
// (132 SMs x 2048 threads) several times over, never more than needed.
inline unsigned blocksFor(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, 132 * 32));
}

// The launch's error, named after the kernel (a launch is asynchronous: a
// fault inside the kernel shows up at the stream's next synchronisation).
inline Status launched(const char *kernel) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess)
    return Status::ok();
  return Status::error(std::string("CUDA kernel ") + kernel + ": " + cudaGetErrorName(e) + " (" +
                       cudaGetErrorString(e) + ")");
}

template <class T> __device__ __forceinline__ float toFloat(T x);
template <> __device__ __forceinline__ float toFloat<float>(float x) { return x; }
template <> __device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <class T> __device__ __forceinline__ T fromFloat(float x);
template <> __device__ __forceinline__ float fromFloat<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Butterfly all-reduces over a warp: every lane ends with the same bits
// (a + b == b + a exactly, so both lanes of each exchange compute the same
// value).
constexpr unsigned kFullMask = 0xffffffffu;
template <class V> __device__ __forceinline__ V warpSum(V v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Grid-stride loop index range: for (i = first(); i < n; i += stride()).
__device__ __forceinline__ int64_t first() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Row loops with one warp per row, kRowWarps rows per block of kThreads:
// for (r = firstWarpRow(); r < rows; r += warpRowStride()). r is the same in
// every lane of a warp, so shuffles inside the loop see whole warps.
constexpr int kRowWarps = kThreads / 32;
inline unsigned rowBlocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>((rows + kRowWarps - 1) / kRowWarps, 132 * 64));
}
__device__ __forceinline__ int64_t firstWarpRow() {
  return static_cast<int64_t>(blockIdx.x) * kRowWarps + (threadIdx.x >> 5);
}
__device__ __forceinline__ int64_t warpRowStride() {
  return static_cast<int64_t>(gridDim.x) * kRowWarps;
}

} // namespace sbpflow::cuda::detail
