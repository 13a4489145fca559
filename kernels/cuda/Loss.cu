// Loss and reduction kernels (see Loss.h). A row is reduced by one warp
// (narrow rows, several per block) or one block (wide rows); every reduction
// is a fixed tree of shuffles, so results do not vary from run to run.
#include "kernels/cuda/Launch.cuh"
#include "kernels/cuda/Loss.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace sbpflow::cuda {
namespace {

using namespace detail;

// Rows up to this wide go to one warp each; wider ones to a block.
constexpr int64_t kWarpRowClasses = 512;
// Row loops stride over the grid; this many blocks is plenty.
constexpr int64_t kMaxRowBlocks = 1 << 20;

// A block all-reduce (blockDim.x a multiple of 32, at most 1024): each warp
// reduces with `warpAll`, then the warps' results (`none` past the last warp)
// again. `scratch` holds 32 values; the leading barrier lets consecutive calls
// share it.
template <class V, class WarpAll>
__device__ __forceinline__ V blockAll(V v, V *scratch, V none, WarpAll warpAll) {
  v = warpAll(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0)
    scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  const unsigned lane = threadIdx.x & 31;
  v = lane < (blockDim.x >> 5) ? scratch[lane] : none;
  return warpAll(v);
}
template <class V> __device__ V blockSum(V v, V *scratch) {
  return blockAll(v, scratch, V(0), [](V x) { return warpSum(x); });
}
__device__ float blockMax(float v, float *scratch) {
  return blockAll(v, scratch, -INFINITY, [](float x) { return warpMax(x); });
}

// An argmax candidate: larger value wins, the smaller index on a tie (the
// first maximum, as torch.argmax and cpu::countCorrect).
struct ArgMax {
  float v;
  int64_t j;
};
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  return (a.v > b.v || (a.v == b.v && a.j < b.j)) ? a : b;
}
__device__ __forceinline__ ArgMax warpArgMax(ArgMax a) {
  for (int o = 16; o > 0; o >>= 1) {
    ArgMax b{__shfl_xor_sync(kFullMask, a.v, o), __shfl_xor_sync(kFullMask, a.j, o)};
    a = better(a, b);
  }
  return a;
}
// Loses to every candidate.
__device__ __forceinline__ ArgMax noArgMax() { return ArgMax{-INFINITY, INT64_MAX}; }
__device__ ArgMax blockArgMax(ArgMax a, ArgMax *scratch) {
  return blockAll(a, scratch, noArgMax(), [](ArgMax x) { return warpArgMax(x); });
}

// The threads that share a row: one warp (kWarpRows) or the whole block. All
// of a team takes the same path through a row, so the block's barriers are
// reached by every thread.
template <bool kWarpRows> struct RowTeam {
  __device__ static int64_t firstRow() {
    return kWarpRows ? firstWarpRow() : static_cast<int64_t>(blockIdx.x);
  }
  __device__ static int64_t rowStride() {
    return kWarpRows ? warpRowStride() : static_cast<int64_t>(gridDim.x);
  }
  __device__ static int rank() { return kWarpRows ? (threadIdx.x & 31) : threadIdx.x; }
  __device__ static int size() { return kWarpRows ? 32 : blockDim.x; }
  __device__ static float sum(float v, float *scratch) {
    if constexpr (kWarpRows)
      return warpSum(v);
    else
      return blockSum(v, scratch);
  }
  __device__ static float max(float v, float *scratch) {
    if constexpr (kWarpRows)
      return warpMax(v);
    else
      return blockMax(v, scratch);
  }
  __device__ static ArgMax argMax(ArgMax a, ArgMax *scratch) {
    if constexpr (kWarpRows)
      return warpArgMax(a);
    else
      return blockArgMax(a, scratch);
  }
};

// log-sum-exp of a row around its maximum (as cpu::softmaxXent: the largest
// term is exactly 1, so the sum never underflows to 0): returns the maximum
// and the sum of exp(x - max).
template <class T, bool kWarpRows>
__device__ void rowExpSum(const T *x, int64_t classes, float *scratch, float &mx, float &sum) {
  using Team = RowTeam<kWarpRows>;
  float m = -INFINITY;
  for (int64_t j = Team::rank(); j < classes; j += Team::size())
    m = fmaxf(m, toFloat(x[j]));
  m = Team::max(m, scratch);
  float s = 0.f;
  for (int64_t j = Team::rank(); j < classes; j += Team::size())
    s += expf(toFloat(x[j]) - m);
  mx = m;
  sum = Team::sum(s, scratch);
}

template <class T, bool kWarpRows>
__global__ void softmaxXentKernel(const T *logits, const int32_t *labels, float *loss, float *lse,
                                  unsigned long long *firstBad, int64_t rows, int64_t classes) {
  using Team = RowTeam<kWarpRows>;
  __shared__ float scratch[32];
  for (int64_t i = Team::firstRow(); i < rows; i += Team::rowStride()) {
    const int32_t label = labels[i]; // the same for the whole team
    if (label < 0 || classes <= 0 || label >= classes) {
      if (Team::rank() == 0) {
        loss[i] = 0.f;
        if (lse)
          lse[i] = 0.f;
        if (label >= 0 && classes > 0 && firstBad)
          atomicMin(firstBad, static_cast<unsigned long long>(i));
      }
      continue;
    }
    const T *x = logits + i * classes;
    float mx, sum;
    rowExpSum<T, kWarpRows>(x, classes, scratch, mx, sum);
    if (Team::rank() == 0) {
      const float logSum = logf(sum);
      loss[i] = logSum - (toFloat(x[label]) - mx);
      if (lse)
        lse[i] = mx + logSum;
    }
  }
}

template <class T, bool kWarpRows>
__global__ void softmaxXentGradKernel(const T *logits, const int32_t *labels, const float *dloss,
                                      const float *lse, T *dlogits, int64_t rows, int64_t classes) {
  using Team = RowTeam<kWarpRows>;
  __shared__ float scratch[32];
  for (int64_t i = Team::firstRow(); i < rows; i += Team::rowStride()) {
    const int32_t label = labels[i];
    T *d = dlogits + i * classes;
    // Out-of-range labels were reported by the forward; here they are
    // padding, so a bad label never writes out of bounds.
    if (label < 0 || label >= classes) {
      for (int64_t j = Team::rank(); j < classes; j += Team::size())
        d[j] = fromFloat<T>(0.f);
      continue;
    }
    const T *x = logits + i * classes;
    const float dl = dloss[i];
    // Every read of the row by the reductions ends before the first write
    // (the reductions' barriers or shuffles), so d may alias x.
    float shift, scale;
    if (lse) {
      shift = lse[i];
      scale = dl;
    } else {
      float sum;
      rowExpSum<T, kWarpRows>(x, classes, scratch, shift, sum);
      scale = dl / sum;
    }
    for (int64_t j = Team::rank(); j < classes; j += Team::size()) {
      float g = expf(toFloat(x[j]) - shift) * scale;
      if (j == label)
        g -= dl;
      d[j] = fromFloat<T>(g);
    }
  }
}

template <class T, bool kWarpRows>
__global__ void countCorrectKernel(const T *logits, const int32_t *labels, float *out, int64_t rows,
                                   int64_t classes) {
  using Team = RowTeam<kWarpRows>;
  __shared__ ArgMax scratch[32];
  for (int64_t i = Team::firstRow(); i < rows; i += Team::rowStride()) {
    const int32_t label = labels[i];
    if (label < 0 || classes <= 0)
      continue;
    const T *x = logits + i * classes;
    ArgMax best = noArgMax();
    for (int64_t j = Team::rank(); j < classes; j += Team::size()) {
      const float v = toFloat(x[j]);
      if (!isnan(v))
        best = better(ArgMax{v, j}, best);
    }
    best = Team::argMax(best, scratch);
    if (Team::rank() == 0) {
      // The CPU's scan never leaves a NaN first element; other NaNs it skips.
      const int64_t argmax = isnan(toFloat(x[0])) ? 0 : best.j;
      if (argmax == label)
        atomicAdd(out, 1.f); // whole numbers: exact in any order below 2^24
    }
  }
}

// First pass of a deterministic sum: block b of a grid that depends on n only
// writes its share to partials[b].
template <bool kSquares>
__global__ void partialSumKernel(const float *x, int64_t n, double *partials) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int64_t i = first(); i < n; i += stride()) {
    const double v = x[i];
    acc += kSquares ? v * v : v; // a float squared is exact in double
  }
  acc = blockSum(acc, scratch);
  if (threadIdx.x == 0)
    partials[blockIdx.x] = acc;
}

// Second pass, one block: *out = sum(partials) / divisor (divisor 0: plain
// sum; < 0: the result is 0, as cpu::mean with count <= 0).
__global__ void finishSumKernel(const double *partials, int count, int64_t divisor, float *out) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int k = threadIdx.x; k < count; k += blockDim.x)
    acc += partials[k];
  acc = blockSum(acc, scratch);
  if (threadIdx.x == 0)
    *out = divisor < 0
               ? 0.f
               : static_cast<float>(divisor == 0 ? acc : acc / static_cast<double>(divisor));
}

unsigned partialBlocks(int64_t n) {
  return static_cast<unsigned>(
      std::min<int64_t>((n + kThreads - 1) / kThreads, static_cast<int64_t>(kReducePartials)));
}

// A deterministic sum of x (or of its squares) into *out, divided by divisor
// (see finishSumKernel).
template <bool kSquares>
Status deterministicSum(const float *x, int64_t n, int64_t divisor, float *out, double *partials,
                        cudaStream_t stream, const char *name) {
  const unsigned blocks = n > 0 ? partialBlocks(n) : 0;
  if (blocks > 0) {
    partialSumKernel<kSquares><<<blocks, kThreads, 0, stream>>>(x, n, partials);
    if (Status s = launched(name); !s)
      return s;
  }
  finishSumKernel<<<1, kThreads, 0, stream>>>(partials, static_cast<int>(blocks), divisor, out);
  return launched(name);
}

__global__ void meanGradKernel(const float *dy, float *y, int64_t n, int64_t count) {
  const float v = count > 0 ? static_cast<float>(static_cast<double>(*dy) / count) : 0.f;
  for (int64_t i = first(); i < n; i += stride())
    y[i] = v;
}

// Columns of 32 per block, kRowLanes threads down each column; the lanes'
// sums meet in shared memory in a fixed order.
constexpr int kRowLanes = 16;
template <class T, class Y>
__global__ void reduceRowsKernel(const T *x, Y *y, int64_t rows, int64_t cols) {
  __shared__ float part[kRowLanes][33];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.f;
  if (j < cols)
    for (int64_t i = threadIdx.y; i < rows; i += kRowLanes)
      acc += toFloat(x[i * cols + j]);
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    float s = 0.f;
    for (int k = 0; k < kRowLanes; ++k)
      s += part[k][threadIdx.x];
    y[j] = fromFloat<Y>(s);
  }
}

__global__ void clipScaleKernel(const float *squares, int count, float maxNorm, float *scale) {
  float total = squares[0];
  for (int k = 1; k < count; ++k)
    total += squares[k];
  // IEEE sqrt and division (nvcc's defaults): the CPU's bits.
  const float coef = maxNorm / (sqrtf(total) + 1e-6f);
  // Written so a NaN norm propagates (as torch.clamp does) instead of reading as 1.
  *scale = coef > 1.f ? 1.f : coef;
}

// Launches a row kernel in its warp- or block-per-row form.
template <class... Params, class... Args>
void launchRows(void (*warpKernel)(Params...), void (*blockKernel)(Params...), int64_t rows,
                int64_t classes, cudaStream_t stream, Args... args) {
  if (classes <= kWarpRowClasses) {
    const int64_t blocks = std::min<int64_t>((rows + kRowWarps - 1) / kRowWarps, kMaxRowBlocks);
    warpKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args...);
  } else {
    const int64_t blocks = std::min<int64_t>(rows, kMaxRowBlocks);
    blockKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(args...);
  }
}

} // namespace

template <class T>
Status softmaxXent(const T *logits, const int32_t *labels, float *loss, float *lse,
                   int64_t *firstBad, int64_t rows, int64_t classes, cudaStream_t stream) {
  // All ones is -1 as an int64 and the largest value for atomicMin.
  if (firstBad) {
    cudaError_t e = cudaMemsetAsync(firstBad, 0xff, sizeof(int64_t), stream);
    if (e != cudaSuccess)
      return Status::error(std::string("softmaxXent: clearing the bad-row flag: ") +
                           cudaGetErrorString(e));
  }
  if (rows <= 0)
    return Status::ok();
  auto *bad = reinterpret_cast<unsigned long long *>(firstBad);
  launchRows(softmaxXentKernel<T, true>, softmaxXentKernel<T, false>, rows, classes, stream, logits,
             labels, loss, lse, bad, rows, classes);
  return launched("softmaxXentKernel");
}

template <class T>
Status softmaxXentGrad(const T *logits, const int32_t *labels, const float *dloss, const float *lse,
                       T *dlogits, int64_t rows, int64_t classes, cudaStream_t stream) {
  if (rows <= 0 || classes <= 0)
    return Status::ok();
  launchRows(softmaxXentGradKernel<T, true>, softmaxXentGradKernel<T, false>, rows, classes, stream,
             logits, labels, dloss, lse, dlogits, rows, classes);
  return launched("softmaxXentGradKernel");
}

template <class T>
Status countCorrect(const T *logits, const int32_t *labels, float *out, int64_t rows,
                    int64_t classes, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(out, 0, sizeof(float), stream);
  if (e != cudaSuccess)
    return Status::error(std::string("countCorrect: clearing the count: ") + cudaGetErrorString(e));
  if (rows <= 0 || classes <= 0)
    return Status::ok();
  launchRows(countCorrectKernel<T, true>, countCorrectKernel<T, false>, rows, classes, stream,
             logits, labels, out, rows, classes);
  return launched("countCorrectKernel");
}

Status mean(const float *x, float *out, int64_t n, int64_t count, double *partials,
            cudaStream_t stream) {
  return deterministicSum<false>(x, n, count > 0 ? count : -1, out, partials, stream, "mean");
}

Status meanGrad(const float *dy, float *y, int64_t n, int64_t count, cudaStream_t stream) {
  if (n <= 0)
    return Status::ok();
  meanGradKernel<<<blocksFor(n), kThreads, 0, stream>>>(dy, y, n, count);
  return launched("meanGradKernel");
}

template <class T, class Y>
Status reduceRows(const T *x, Y *y, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (cols <= 0)
    return Status::ok();
  // rows <= 0 still launches: y becomes 0, as on the CPU.
  const int64_t blocks = (cols + 31) / 32;
  if (blocks > INT32_MAX)
    return Status::error("reduceRows: " + std::to_string(cols) + " columns are too many");
  reduceRowsKernel<T, Y><<<static_cast<unsigned>(blocks), dim3(32, kRowLanes), 0, stream>>>(
      x, y, std::max<int64_t>(rows, 0), cols);
  return launched("reduceRowsKernel");
}

Status squareSum(const float *x, int64_t n, float *out, double *partials, cudaStream_t stream) {
  return deterministicSum<true>(x, n, 0, out, partials, stream, "squareSum");
}

Status clipScale(const float *squares, int count, float maxNorm, float *scale,
                 cudaStream_t stream) {
  if (count <= 0)
    return Status::error("clipScale: needs at least one sum of squares");
  clipScaleKernel<<<1, 1, 0, stream>>>(squares, count, maxNorm, scale);
  return launched("clipScaleKernel");
}

#define SBPFLOW_INSTANTIATE(T)                                                                     \
  template Status softmaxXent<T>(const T *, const int32_t *, float *, float *, int64_t *, int64_t, \
                                 int64_t, cudaStream_t);                                           \
  template Status softmaxXentGrad<T>(const T *, const int32_t *, const float *, const float *,     \
                                     T *, int64_t, int64_t, cudaStream_t);                         \
  template Status countCorrect<T>(const T *, const int32_t *, float *, int64_t, int64_t,           \
                                  cudaStream_t);                                                   \
  template Status reduceRows<T, float>(const T *, float *, int64_t, int64_t, cudaStream_t);
SBPFLOW_INSTANTIATE(float)
SBPFLOW_INSTANTIATE(bf16)
template Status reduceRows<bf16, bf16>(const bf16 *, bf16 *, int64_t, int64_t, cudaStream_t);

} // namespace sbpflow::cuda
