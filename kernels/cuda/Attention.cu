// Softmax and causal attention kernels (see Attention.h).
//
// Softmax: one warp per row, three passes (max, sum of exponentials, write).
//
// Attention: one block of kAttnThreads per (tile of kB rows, head, batch).
// Tiles of q, k, v, dy are converted to fp32 in shared memory, each row
// padded to kD + 1 floats (kD = 32, 64 or 128, headDim rounded up, the
// padding zero): kD + 1 is odd, so the 32 lanes of a warp reading column d of
// 32 different rows hit 32 different banks. Every step is a small product of
// shared tiles, each thread owning fixed elements of the result:
//   forward, per query tile, over key tiles j0 <= the tile's last row:
//     S = (scale q) kᵀ with the causal mask -> online softmax per row (running
//     max and sum in fp32) -> O = O * alpha + P v; finally y = O / sum and
//     lse = max + log(sum).
//   backward, P = exp(S - lse), dP = dy vᵀ, dS = P (dP - dy . y):
//     per key tile over query tiles i0 >= j0: dv += Pᵀ dy, dk += dSᵀ (scale q);
//     per query tile over key tiles: dq = scale dS k.
// kB = 32 for kD <= 64 and 16 for kD = 128 keeps every kernel under the 48 KiB
// of static shared memory.
#include "kernels/cuda/Attention.h"
#include "kernels/cuda/Launch.cuh"

#include <cmath>
#include <string>
#include <type_traits>

namespace sbpflow::cuda {
namespace {

using namespace detail;

template <class T> __global__ void softmaxKernel(const T *x, T *y, int64_t rows, int64_t cols) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = firstWarpRow(); r < rows; r += warpRowStride()) {
    const T *xr = x + r * cols;
    T *yr = y + r * cols;
    float m = -INFINITY;
    for (int64_t j = lane; j < cols; j += 32)
      m = fmaxf(m, toFloat(xr[j]));
    m = warpMax(m);
    float s = 0.f;
    for (int64_t j = lane; j < cols; j += 32)
      s += expf(toFloat(xr[j]) - m);
    const float inv = 1.f / warpSum(s);
    // Each lane rewrites only the elements it read: y may alias x.
    for (int64_t j = lane; j < cols; j += 32)
      yr[j] = fromFloat<T>(expf(toFloat(xr[j]) - m) * inv);
  }
}

template <class T>
__global__ void softmaxGradKernel(const T *dy, const T *y, T *dx, int64_t rows, int64_t cols) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = firstWarpRow(); r < rows; r += warpRowStride()) {
    const T *dyr = dy + r * cols, *yr = y + r * cols;
    T *dxr = dx + r * cols;
    float s = 0.f;
    for (int64_t j = lane; j < cols; j += 32)
      s += toFloat(dyr[j]) * toFloat(yr[j]);
    s = warpSum(s);
    for (int64_t j = lane; j < cols; j += 32)
      dxr[j] = fromFloat<T>(toFloat(yr[j]) * (toFloat(dyr[j]) - s));
  }
}

constexpr int kAttnThreads = 128;
constexpr int kAttnWarps = kAttnThreads / 32;

// Tile geometry for head dimensions up to kD.
template <int kD> struct AttnTile {
  static_assert(kD % 32 == 0, "a warp covers 32 consecutive columns of one row");
  static constexpr int kB = kD <= 64 ? 32 : 16;             // query rows = keys per tile
  static constexpr int kS = kD + 1;                         // row stride of a [kB, kD] tile (odd)
  static constexpr int kP = kB + 1;                         // row stride of a [kB, kB] tile
  static constexpr int kPerThread = kB * kD / kAttnThreads; // [kB, kD] results per thread
  static_assert(kB * kD % kAttnThreads == 0 && kB <= 32, "tile geometry");
};

// Rows [r0, r0 + kB) of one head of x (rows `stride` apart, `D` wide) into
// dst [kB, kS] as fp32 times `mul`; zero past row seqLen and past column D.
template <int kD, class T>
__device__ __forceinline__ void loadTile(float *dst, const T *x, int64_t r0, int64_t seqLen,
                                         int64_t stride, int D, float mul) {
  using G = AttnTile<kD>;
  for (int e = threadIdx.x; e < G::kB * kD; e += kAttnThreads) {
    const int r = e / kD, d = e % kD;
    const int64_t row = r0 + r;
    dst[r * G::kS + d] = row < seqLen && d < D ? toFloat(x[row * stride + d]) * mul : 0.f;
  }
}

// The block's [kB, kD] result elements owned by thread `threadIdx.x`, t-th:
// row e / kD, column e % kD of e = threadIdx.x + t kAttnThreads. A warp's 32
// elements are 32 consecutive columns of one row.
__device__ __forceinline__ int ownedIndex(int t) {
  return static_cast<int>(threadIdx.x) + t * kAttnThreads;
}

// Key/value tile j0 into ks, vs, between barriers: the previous tile's
// readers are done before, the whole tile is in place after.
template <int kD, class T>
__device__ __forceinline__ void loadKeyValueTiles(float *ks, float *vs, const T *k, const T *v,
                                                  int64_t j0, int64_t seqLen, int64_t stride,
                                                  int D) {
  __syncthreads();
  loadTile<kD>(ks, k, j0, seqLen, stride, D, 1.f);
  loadTile<kD>(vs, v, j0, seqLen, stride, D, 1.f);
  __syncthreads();
}

// End of the keys that query tile i0 attends to (j <= i for its rows i < seqLen).
template <int kB> __device__ __forceinline__ int64_t causalKeyEnd(int64_t i0, int64_t seqLen) {
  return i0 + kB < seqLen ? i0 + kB : seqLen;
}

// Writes the thread's owned results acc[t] of the [kB, kD] tile of rows from
// r0 to x (rows `stride` apart) as out(acc[t], row in the tile), skipping
// rows past seqLen and columns past D.
template <int kD, class T, int kN, class Out>
__device__ __forceinline__ void storeOwned(T *x, const float (&acc)[kN], int64_t r0, int64_t seqLen,
                                           int64_t stride, int D, Out out) {
#pragma unroll
  for (int t = 0; t < kN; ++t) {
    const int e = ownedIndex(t), r = e / kD, d = e % kD;
    const int64_t row = r0 + r;
    if (row < seqLen && d < D)
      x[row * stride + d] = fromFloat<T>(out(acc[t], r));
  }
}

// Grid (query tiles, heads, batch); `base` is the offset of (b, h, row 0).
template <class T, int kD>
__global__ void __launch_bounds__(kAttnThreads)
    attentionForwardKernel(const T *q, const T *k, const T *v, T *y, float *lse, int64_t seqLen,
                           int heads, int D, float scale) {
  using G = AttnTile<kD>;
  constexpr int kB = G::kB, kS = G::kS, kP = G::kP;
  __shared__ float qs[kB * kS], ks[kB * kS], vs[kB * kS], ps[kB * kP];
  __shared__ float rowMax[kB], rowSum[kB], rowScale[kB];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t C = static_cast<int64_t>(heads) * D;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t base = b * seqLen * C + h * D;
  // The last tiles (the most keys) first, so the short ones fill the tail.
  const int64_t i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kB;

  loadTile<kD>(qs, q + base, i0, seqLen, C, D, scale);
  for (int r = tid; r < kB; r += kAttnThreads) {
    rowMax[r] = -INFINITY;
    rowSum[r] = 0.f;
  }
  float o[G::kPerThread] = {};

  for (int64_t j0 = 0; j0 < causalKeyEnd<kB>(i0, seqLen); j0 += kB) {
    loadKeyValueTiles<kD>(ks, vs, k + base, v + base, j0, seqLen, C, D); // frees ps too
    for (int e = tid; e < kB * kB; e += kAttnThreads) {
      const int r = e / kB, c = e % kB;
      const int64_t i = i0 + r, j = j0 + c;
      float s = -INFINITY;
      if (j <= i && i < seqLen) {
        float acc = 0.f;
#pragma unroll
        for (int d = 0; d < kD; ++d)
          acc += qs[r * kS + d] * ks[c * kS + d];
        s = acc;
      }
      ps[r * kP + c] = s;
    }
    __syncthreads();
    // Online softmax, one warp per row, lane c holding key j0 + c.
    for (int r = warp; r < kB; r += kAttnWarps) {
      const float s = lane < kB ? ps[r * kP + lane] : -INFINITY;
      const float mOld = rowMax[r];
      const float mNew = fmaxf(mOld, warpMax(s));
      // A row's first tile holds key 0 <= i, so mNew is finite for rows
      // i < seqLen; the guards keep rows past seqLen (never written) free of NaN.
      const float p = s == -INFINITY ? 0.f : expf(s - mNew);
      if (lane < kB)
        ps[r * kP + lane] = p;
      const float sum = warpSum(p);
      if (lane == 0) {
        const float alpha = mOld == -INFINITY ? 0.f : expf(mOld - mNew);
        rowScale[r] = alpha;
        rowMax[r] = mNew;
        rowSum[r] = rowSum[r] * alpha + sum;
      }
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < G::kPerThread; ++t) {
      const int e = ownedIndex(t), r = e / kD, d = e % kD;
      float acc = o[t] * rowScale[r];
#pragma unroll 8
      for (int c = 0; c < kB; ++c)
        acc += ps[r * kP + c] * vs[c * kS + d];
      o[t] = acc;
    }
  }
  // rowSum and rowMax were last written before the final tile's barrier.
  storeOwned<kD>(y + base, o, i0, seqLen, C, D, [&](float a, int r) { return a / rowSum[r]; });
  if (lse)
    for (int r = tid; r < kB; r += kAttnThreads) {
      const int64_t i = i0 + r;
      if (i < seqLen)
        lse[(b * heads + h) * seqLen + i] = rowMax[r] + logf(rowSum[r]);
    }
}

// Per row r of the query tile at i0: its lse, and delta = dy_i . y_i (which
// equals sum_j P_ij dP_ij). One warp per row.
template <int kB, class T>
__device__ __forceinline__ void loadRowTerms(float *rowLse, float *rowDelta, const T *dy,
                                             const T *y, const float *lse, int64_t i0,
                                             int64_t seqLen, int64_t C, int D) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = warp; r < kB; r += kAttnWarps) {
    const int64_t i = i0 + r;
    float part = 0.f;
    if (i < seqLen)
      for (int d = lane; d < D; d += 32)
        part += toFloat(dy[i * C + d]) * toFloat(y[i * C + d]);
    part = warpSum(part);
    if (lane == 0) {
      rowDelta[r] = part;
      rowLse[r] = i < seqLen ? lse[i] : 0.f;
    }
  }
}

// P and dS of query tile i0 against key tile j0 into ps (may be null) and
// dss; zero where masked (j > i) or past seqLen.
template <int kD>
__device__ __forceinline__ void
weightsAndScoreGrads(float *ps, float *dss, const float *qs, const float *dys, const float *ks,
                     const float *vs, const float *rowLse, const float *rowDelta, int64_t i0,
                     int64_t j0, int64_t seqLen) {
  using G = AttnTile<kD>;
  constexpr int kB = G::kB, kS = G::kS, kP = G::kP;
  for (int e = threadIdx.x; e < kB * kB; e += kAttnThreads) {
    const int r = e / kB, c = e % kB;
    const int64_t i = i0 + r, j = j0 + c;
    float p = 0.f, ds = 0.f;
    if (j <= i && i < seqLen) {
      float s = 0.f, dp = 0.f;
#pragma unroll
      for (int d = 0; d < kD; ++d) {
        s += qs[r * kS + d] * ks[c * kS + d];
        dp += dys[r * kS + d] * vs[c * kS + d];
      }
      p = expf(s - rowLse[r]);
      ds = p * (dp - rowDelta[r]);
    }
    if (ps)
      ps[r * kP + c] = p;
    dss[r * kP + c] = ds;
  }
}

// dk, dv of key tile j0: grid (key tiles, heads, batch).
template <class T, int kD>
__global__ void __launch_bounds__(kAttnThreads)
    attentionGradKVKernel(const T *dy, const T *q, const T *k, const T *v, const T *y,
                          const float *lse, T *dk, T *dv, int64_t seqLen, int heads, int D,
                          float scale) {
  using G = AttnTile<kD>;
  constexpr int kB = G::kB, kS = G::kS, kP = G::kP;
  __shared__ float ks[kB * kS], vs[kB * kS], qs[kB * kS], dys[kB * kS];
  __shared__ float ps[kB * kP], dss[kB * kP], rowLse[kB], rowDelta[kB];

  const int64_t C = static_cast<int64_t>(heads) * D;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t base = b * seqLen * C + h * D;
  const float *lseHead = lse + (b * heads + h) * seqLen;
  // The first key tiles meet the most query tiles: they start first.
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kB;

  loadTile<kD>(ks, k + base, j0, seqLen, C, D, 1.f);
  loadTile<kD>(vs, v + base, j0, seqLen, C, D, 1.f);
  float dkAcc[G::kPerThread] = {}, dvAcc[G::kPerThread] = {};

  // Query rows i >= j0 only (tiles are aligned, so from the tile at j0).
  for (int64_t i0 = j0; i0 < seqLen; i0 += kB) {
    __syncthreads(); // the previous tile's readers of qs, dys, ps, dss are done
    loadTile<kD>(qs, q + base, i0, seqLen, C, D, scale);
    loadTile<kD>(dys, dy + base, i0, seqLen, C, D, 1.f);
    loadRowTerms<kB>(rowLse, rowDelta, dy + base, y + base, lseHead, i0, seqLen, C, D);
    __syncthreads();
    weightsAndScoreGrads<kD>(ps, dss, qs, dys, ks, vs, rowLse, rowDelta, i0, j0, seqLen);
    __syncthreads();
    // dv[c] += sum_r P[r, c] dy[r]; dk[c] += sum_r dS[r, c] (scale q[r]).
#pragma unroll
    for (int t = 0; t < G::kPerThread; ++t) {
      const int e = ownedIndex(t), c = e / kD, d = e % kD;
      float av = dvAcc[t], ak = dkAcc[t];
#pragma unroll 8
      for (int r = 0; r < kB; ++r) {
        av += ps[r * kP + c] * dys[r * kS + d];
        ak += dss[r * kP + c] * qs[r * kS + d];
      }
      dvAcc[t] = av;
      dkAcc[t] = ak;
    }
  }
  const auto same = [](float a, int) { return a; };
  storeOwned<kD>(dk + base, dkAcc, j0, seqLen, C, D, same);
  storeOwned<kD>(dv + base, dvAcc, j0, seqLen, C, D, same);
}

// dq of query tile i0: grid (query tiles, heads, batch).
template <class T, int kD>
__global__ void __launch_bounds__(kAttnThreads)
    attentionGradQKernel(const T *dy, const T *q, const T *k, const T *v, const T *y,
                         const float *lse, T *dq, int64_t seqLen, int heads, int D, float scale) {
  using G = AttnTile<kD>;
  constexpr int kB = G::kB, kS = G::kS, kP = G::kP;
  __shared__ float qs[kB * kS], dys[kB * kS], ks[kB * kS], vs[kB * kS];
  __shared__ float dss[kB * kP], rowLse[kB], rowDelta[kB];

  const int64_t C = static_cast<int64_t>(heads) * D;
  const int64_t b = blockIdx.z, h = blockIdx.y;
  const int64_t base = b * seqLen * C + h * D;
  const int64_t i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kB;

  loadTile<kD>(qs, q + base, i0, seqLen, C, D, scale);
  loadTile<kD>(dys, dy + base, i0, seqLen, C, D, 1.f);
  loadRowTerms<kB>(rowLse, rowDelta, dy + base, y + base, lse + (b * heads + h) * seqLen, i0,
                   seqLen, C, D);
  float dqAcc[G::kPerThread] = {};

  for (int64_t j0 = 0; j0 < causalKeyEnd<kB>(i0, seqLen); j0 += kB) {
    loadKeyValueTiles<kD>(ks, vs, k + base, v + base, j0, seqLen, C, D); // frees dss too
    weightsAndScoreGrads<kD>(nullptr, dss, qs, dys, ks, vs, rowLse, rowDelta, i0, j0, seqLen);
    __syncthreads();
    // dq[r] += sum_c dS[r, c] k[c].
#pragma unroll
    for (int t = 0; t < G::kPerThread; ++t) {
      const int e = ownedIndex(t), r = e / kD, d = e % kD;
      float acc = dqAcc[t];
#pragma unroll 8
      for (int c = 0; c < kB; ++c)
        acc += dss[r * kP + c] * ks[c * kS + d];
      dqAcc[t] = acc;
    }
  }
  storeOwned<kD>(dq + base, dqAcc, i0, seqLen, C, D, [&](float a, int) { return a * scale; });
}

// Calls f(std::integral_constant<int, kD>) with headDim rounded up to a kD.
template <class F> Status withHeadDim(int64_t headDim, F &&f) {
  if (headDim <= 32)
    return f(std::integral_constant<int, 32>{});
  if (headDim <= 64)
    return f(std::integral_constant<int, 64>{});
  return f(std::integral_constant<int, 128>{});
}

// Grid (tiles of kB rows, heads, batch).
template <int kD> dim3 tileGrid(int64_t batch, int64_t seqLen, int64_t heads) {
  constexpr int kB = AttnTile<kD>::kB;
  return dim3(static_cast<unsigned>((seqLen + kB - 1) / kB), static_cast<unsigned>(heads),
              static_cast<unsigned>(batch));
}

// Shape checks shared by forward and backward; `launch` is false when there
// is nothing to compute.
Status checkAttention(const char *op, int64_t batch, int64_t seqLen, int64_t heads, int64_t headDim,
                      bool &launch) {
  launch = batch > 0 && seqLen > 0 && heads > 0 && headDim > 0;
  if (!launch)
    return Status::ok();
  if (headDim > kMaxAttentionHeadDim)
    return Status::error(std::string(op) + ": headDim " + std::to_string(headDim) +
                         " exceeds the kernels' " + std::to_string(kMaxAttentionHeadDim));
  if (heads > 65535 || batch > 65535)
    return Status::error(std::string(op) + ": heads " + std::to_string(heads) + " and batch " +
                         std::to_string(batch) + " must each be at most 65535 (grid limits)");
  return Status::ok();
}

} // namespace

template <class T>
Status softmax(const T *x, T *y, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0)
    return Status::ok();
  softmaxKernel<T><<<rowBlocks(rows), kThreads, 0, stream>>>(x, y, rows, cols);
  return launched("softmaxKernel");
}

template <class T>
Status softmaxGrad(const T *dy, const T *y, T *dx, int64_t rows, int64_t cols,
                   cudaStream_t stream) {
  if (rows <= 0 || cols <= 0)
    return Status::ok();
  softmaxGradKernel<T><<<rowBlocks(rows), kThreads, 0, stream>>>(dy, y, dx, rows, cols);
  return launched("softmaxGradKernel");
}

int64_t causalAttentionLseSize(int64_t batch, int64_t seqLen, int64_t heads) {
  return batch > 0 && seqLen > 0 && heads > 0 ? batch * heads * seqLen : 0;
}

template <class T>
Status causalAttention(const T *q, const T *k, const T *v, T *y, float *lse, int64_t batch,
                       int64_t seqLen, int64_t heads, int64_t headDim, cudaStream_t stream) {
  bool launch = false;
  if (Status s = checkAttention("causalAttention", batch, seqLen, heads, headDim, launch);
      !s || !launch)
    return s;
  const float scale = 1.f / std::sqrt(static_cast<float>(headDim));
  return withHeadDim(headDim, [&](auto tag) {
    constexpr int kD = decltype(tag)::value;
    const dim3 grid = tileGrid<kD>(batch, seqLen, heads);
    attentionForwardKernel<T, kD><<<grid, kAttnThreads, 0, stream>>>(
        q, k, v, y, lse, seqLen, static_cast<int>(heads), static_cast<int>(headDim), scale);
    return launched("attentionForwardKernel");
  });
}

template <class T>
Status causalAttentionGrad(const T *dy, const T *q, const T *k, const T *v, const T *y,
                           const float *lse, T *dq, T *dk, T *dv, int64_t batch, int64_t seqLen,
                           int64_t heads, int64_t headDim, cudaStream_t stream) {
  bool launch = false;
  if (Status s = checkAttention("causalAttentionGrad", batch, seqLen, heads, headDim, launch);
      !s || !launch)
    return s;
  if (!y || !lse)
    return Status::error("causalAttentionGrad: needs the forward's y and lse");
  const float scale = 1.f / std::sqrt(static_cast<float>(headDim));
  return withHeadDim(headDim, [&](auto tag) {
    constexpr int kD = decltype(tag)::value;
    const dim3 grid = tileGrid<kD>(batch, seqLen, heads);
    attentionGradKVKernel<T, kD><<<grid, kAttnThreads, 0, stream>>>(
        dy, q, k, v, y, lse, dk, dv, seqLen, static_cast<int>(heads), static_cast<int>(headDim),
        scale);
    if (Status s = launched("attentionGradKVKernel"); !s)
      return s;
    attentionGradQKernel<T, kD><<<grid, kAttnThreads, 0, stream>>>(
        dy, q, k, v, y, lse, dq, seqLen, static_cast<int>(heads), static_cast<int>(headDim), scale);
    return launched("attentionGradQKernel");
  });
}

#define SBPFLOW_INSTANTIATE(T)                                                                     \
  template Status softmax<T>(const T *, T *, int64_t, int64_t, cudaStream_t);                      \
  template Status softmaxGrad<T>(const T *, const T *, T *, int64_t, int64_t, cudaStream_t);       \
  template Status causalAttention<T>(const T *, const T *, const T *, T *, float *, int64_t,       \
                                     int64_t, int64_t, int64_t, cudaStream_t);                     \
  template Status causalAttentionGrad<T>(const T *, const T *, const T *, const T *, const T *,    \
                                         const float *, T *, T *, T *, int64_t, int64_t, int64_t,  \
                                         int64_t, cudaStream_t);
SBPFLOW_INSTANTIATE(float)
SBPFLOW_INSTANTIATE(bf16)

} // namespace sbpflow::cuda
