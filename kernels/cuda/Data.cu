// Data-movement kernels (see Data.h): grid-stride loops over the elements of
// the result, each element locating its source from its own index (shapes
// travel by value, at most kMaxRank axes, in loops the compiler unrolls).
#include "kernels/Philox.h"
#include "kernels/cuda/Data.h"
#include "kernels/cuda/Launch.cuh"

#include <cmath>
#include <string>

namespace sbpflow::cuda {
namespace {

using namespace detail;

struct Dims {
  int64_t v[kMaxRank];
};

// The offset, in a layout with `stride`, of the element whose row-major index
// over `size` is i.
__device__ __forceinline__ int64_t offsetOf(int64_t i, const Dims &size, const Dims &stride,
                                            int rank) {
  int64_t off = 0;
#pragma unroll
  for (int a = kMaxRank - 1; a >= 0; --a)
    if (a < rank) {
      const int64_t c = i % size.v[a];
      i /= size.v[a];
      off += c * stride.v[a];
    }
  return off;
}

template <class T>
__global__ void embeddingKernel(const T *table, int64_t tableRows, int64_t rowBegin, int64_t vocab,
                                const int32_t *ids, int64_t n, int64_t dim, T *out,
                                unsigned long long *firstBad) {
  const int64_t total = n * dim;
  for (int64_t i = first(); i < total; i += stride()) {
    const int64_t r = i / dim, j = i - r * dim;
    const int64_t id = ids[r];
    T v = fromFloat<T>(0.f);
    if (id < 0 || id >= vocab) {
      if (j == 0 && firstBad)
        atomicMin(firstBad, static_cast<unsigned long long>(r));
    } else {
      // Rows of another rank's vocabulary slice contribute 0 here: the
      // partial results of the ranks sum to the full lookup.
      const int64_t local = id - rowBegin;
      if (local >= 0 && local < tableRows)
        v = table[local * dim + j];
    }
    out[i] = v;
  }
}

// The bad-id check alone, for rows of no elements (dim == 0).
__global__ void checkIdsKernel(const int32_t *ids, int64_t n, int64_t vocab,
                               unsigned long long *firstBad) {
  for (int64_t r = first(); r < n; r += stride())
    if (ids[r] < 0 || ids[r] >= vocab)
      atomicMin(firstBad, static_cast<unsigned long long>(r));
}

template <class T>
__global__ void embeddingGradKernel(const T *dy, const int32_t *ids, int64_t n, int64_t dim,
                                    float *dtable, int64_t tableRows, int64_t rowBegin) {
  const int64_t total = n * dim;
  for (int64_t i = first(); i < total; i += stride()) {
    const int64_t r = i / dim, j = i - r * dim;
    const int64_t local = static_cast<int64_t>(ids[r]) - rowBegin;
    if (local >= 0 && local < tableRows)
      atomicAdd(dtable + local * dim + j, toFloat(dy[i]));
  }
}

// Element i of the region has global index g0 + offsetOf(i, size, globalStride).
template <class T>
__global__ void dropoutKernel(const T *x, T *y, int64_t n, Dims size, Dims globalStride, int rank,
                              uint64_t g0, uint64_t threshold, float scale, uint32_t k0,
                              uint32_t k1, uint32_t batch, uint32_t epoch) {
  for (int64_t i = first(); i < n; i += stride()) {
    const uint64_t g = g0 + static_cast<uint64_t>(offsetOf(i, size, globalStride, rank));
    const uint32_t r = philox4x32_10(static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32),
                                     batch, epoch, k0, k1)
                           .word[0];
    // One fp32 multiply, as on the CPU: the same bits before rounding to T.
    const float v = toFloat(x[i]) * scale;
    y[i] = fromFloat<T>(r >= threshold ? v : 0.f);
  }
}

// Dense element i of the region <-> element base + offsetOf(i, size,
// fullStride) of the full tensor.
template <class T, bool kIntoRegion>
__global__ void regionKernel(const T *src, T *dst, int64_t n, Dims size, Dims fullStride, int rank,
                             int64_t base) {
  for (int64_t i = first(); i < n; i += stride()) {
    const int64_t full = base + offsetOf(i, size, fullStride, rank);
    if (kIntoRegion)
      dst[full] = src[i];
    else
      dst[i] = src[full];
  }
}

// y[o] = x[offsetOf(o, outShape, srcStride)]: coalesced writes; reads are
// coalesced where the last output axis is the last input axis.
template <class T>
__global__ void transposeKernel(const T *x, T *y, int64_t n, Dims outShape, Dims srcStride,
                                int rank) {
  for (int64_t o = first(); o < n; o += stride())
    y[o] = x[offsetOf(o, outShape, srcStride, rank)];
}

// Tiled transpose of the last two axes of [batch, rows, cols] into [batch,
// cols, rows]: a 32 x 32 tile goes through shared memory so both the reads
// and the writes are coalesced. Block (32, 8); grid (column tiles, row tiles,
// batch slices), each looping over batches with the grid's z stride.
template <class T>
__global__ void transposeLastTwoKernel(const T *x, T *y, int64_t batch, int64_t rows,
                                       int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * 32,
                r0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int64_t b = blockIdx.z; b < batch; b += gridDim.z) {
    const T *xb = x + b * rows * cols;
    T *yb = y + b * rows * cols;
    for (int k = threadIdx.y; k < 32; k += 8) {
      const int64_t r = r0 + k, c = c0 + threadIdx.x;
      if (r < rows && c < cols)
        tile[k][threadIdx.x] = xb[r * cols + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += 8) {
      const int64_t c = c0 + k, r = r0 + threadIdx.x;
      if (r < rows && c < cols)
        yb[c * rows + r] = tile[threadIdx.x][k];
    }
    __syncthreads(); // the tile is reused for the next batch
  }
}

Status clearFlag(int64_t *flag, cudaStream_t stream, const char *what) {
  // All ones: -1 as an int64, and the largest value for atomicMin.
  cudaError_t e = cudaMemsetAsync(flag, 0xff, sizeof(int64_t), stream);
  if (e != cudaSuccess)
    return Status::error(std::string(what) +
                         ": clearing the bad-id flag: " + cudaGetErrorString(e));
  return Status::ok();
}

Status checkRank(int rank, const char *what) {
  if (rank > kMaxRank)
    return Status::error(std::string(what) + ": rank " + std::to_string(rank) +
                         " exceeds the supported " + std::to_string(kMaxRank));
  return Status::ok();
}

// Element count of `size` (rank <= 0: a scalar), or -1 for a negative size.
int64_t countOf(const int64_t *size, int rank) {
  int64_t n = 1;
  for (int a = 0; a < rank; ++a) {
    if (size[a] < 0)
      return -1;
    n *= size[a];
  }
  return n;
}

// Row-major strides of `shape`.
Dims stridesOf(const int64_t *shape, int rank) {
  Dims s{};
  int64_t acc = 1;
  for (int a = rank - 1; a >= 0; --a) {
    s.v[a] = acc;
    acc *= shape[a];
  }
  return s;
}

Dims dimsOf(const int64_t *values, int rank) {
  Dims d{};
  for (int a = 0; a < rank; ++a)
    d.v[a] = values[a];
  return d;
}

template <class T, bool kIntoRegion>
Status regionCopy(const T *src, T *dst, const int64_t *fullShape, const int64_t *begin,
                  const int64_t *size, int rank, cudaStream_t stream, const char *what) {
  if (Status s = checkRank(rank, what); !s)
    return s;
  rank = std::max(rank, 0);
  const int64_t n = countOf(size, rank);
  if (n < 0)
    return Status::error(std::string(what) + ": negative region size");
  if (n == 0)
    return Status::ok();
  const Dims fullStride = stridesOf(fullShape, rank);
  int64_t base = 0;
  for (int a = 0; a < rank; ++a)
    base += begin[a] * fullStride.v[a];
  regionKernel<T, kIntoRegion><<<blocksFor(n), kThreads, 0, stream>>>(
      src, dst, n, dimsOf(size, rank), fullStride, rank, base);
  return launched(what);
}

} // namespace

template <class T>
Status embedding(const T *table, int64_t tableRows, int64_t rowBegin, int64_t vocab,
                 const int32_t *ids, int64_t n, int64_t dim, T *out, int64_t *firstBad,
                 cudaStream_t stream) {
  if (firstBad)
    if (Status s = clearFlag(firstBad, stream, "embedding"); !s)
      return s;
  auto *bad = reinterpret_cast<unsigned long long *>(firstBad);
  if (n <= 0)
    return Status::ok();
  if (dim <= 0) {
    if (!bad)
      return Status::ok();
    checkIdsKernel<<<blocksFor(n), kThreads, 0, stream>>>(ids, n, vocab, bad);
    return launched("checkIdsKernel");
  }
  embeddingKernel<T><<<blocksFor(n * dim), kThreads, 0, stream>>>(table, tableRows, rowBegin, vocab,
                                                                  ids, n, dim, out, bad);
  return launched("embeddingKernel");
}

template <class T>
Status embeddingGrad(const T *dy, const int32_t *ids, int64_t n, int64_t dim, float *dtable,
                     int64_t tableRows, int64_t rowBegin, cudaStream_t stream) {
  if (tableRows <= 0 || dim <= 0)
    return Status::ok();
  cudaError_t e =
      cudaMemsetAsync(dtable, 0, static_cast<size_t>(tableRows * dim) * sizeof(float), stream);
  if (e != cudaSuccess)
    return Status::error(std::string("embeddingGrad: clearing the gradient: ") +
                         cudaGetErrorString(e));
  if (n <= 0)
    return Status::ok();
  embeddingGradKernel<T>
      <<<blocksFor(n * dim), kThreads, 0, stream>>>(dy, ids, n, dim, dtable, tableRows, rowBegin);
  return launched("embeddingGradKernel");
}

template <class T>
Status dropout(const T *x, T *y, const int64_t *globalShape, const int64_t *regionBegin,
               const int64_t *regionSize, int rank, float p, uint64_t seed, uint32_t batch,
               uint32_t epoch, cudaStream_t stream) {
  if (Status s = checkRank(rank, "dropout"); !s)
    return s;
  rank = std::max(rank, 0);
  const int64_t n = countOf(regionSize, rank);
  if (n < 0)
    return Status::error("dropout: negative region size");
  if (n == 0)
    return Status::ok();
  // As cpu::dropout: keep <=> draw >= ceil(p 2^32) (p 2^32 is exact in
  // double); p >= 1 drops everything.
  const uint64_t threshold =
      p > 0.f ? (p < 1.f ? static_cast<uint64_t>(std::ceil(static_cast<double>(p) * 4294967296.0))
                         : uint64_t{1} << 32)
              : 0;
  const float scale = p >= 1.f ? 0.f : 1.f / (1.f - p);
  const Dims globalStride = stridesOf(globalShape, rank);
  uint64_t g0 = 0;
  for (int a = 0; a < rank; ++a)
    g0 += static_cast<uint64_t>(regionBegin[a]) * static_cast<uint64_t>(globalStride.v[a]);
  dropoutKernel<T><<<blocksFor(n), kThreads, 0, stream>>>(
      x, y, n, dimsOf(regionSize, rank), globalStride, rank, g0, threshold, scale,
      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), batch, epoch);
  return launched("dropoutKernel");
}

template <class T>
Status copyRegion(const T *src, const int64_t *srcShape, const int64_t *regionBegin,
                  const int64_t *regionSize, int rank, T *dst, cudaStream_t stream) {
  return regionCopy<T, false>(src, dst, srcShape, regionBegin, regionSize, rank, stream,
                              "copyRegion");
}

template <class T>
Status copyIntoRegion(const T *src, const int64_t *regionBegin, const int64_t *regionSize, T *dst,
                      const int64_t *dstShape, int rank, cudaStream_t stream) {
  return regionCopy<T, true>(src, dst, dstShape, regionBegin, regionSize, rank, stream,
                             "copyIntoRegion");
}

template <class T>
Status transpose(const T *x, T *y, const int64_t *shape, const int *perm, int rank,
                 cudaStream_t stream) {
  if (Status s = checkRank(rank, "transpose"); !s)
    return s;
  rank = std::max(rank, 0);
  bool seen[kMaxRank] = {};
  for (int i = 0; i < rank; ++i) {
    if (perm[i] < 0 || perm[i] >= rank || seen[perm[i]])
      return Status::error("transpose: perm is not a permutation of " + std::to_string(rank) +
                           " axes");
    seen[perm[i]] = true;
  }
  const int64_t n = countOf(shape, rank);
  if (n < 0)
    return Status::error("transpose: negative axis size");
  if (n == 0)
    return Status::ok();
  bool identity = true;
  for (int i = 0; i < rank; ++i)
    identity = identity && perm[i] == i;
  if (identity) {
    if (x == y)
      return Status::ok();
    cudaError_t e =
        cudaMemcpyAsync(y, x, static_cast<size_t>(n) * sizeof(T), cudaMemcpyDeviceToDevice, stream);
    return e == cudaSuccess
               ? Status::ok()
               : Status::error(std::string("transpose: copy: ") + cudaGetErrorString(e));
  }
  // Swapping the last two axes (the leading ones in order): tiles.
  bool lastTwo = rank >= 2 && perm[rank - 2] == rank - 1 && perm[rank - 1] == rank - 2;
  for (int i = 0; i + 2 < rank; ++i)
    lastTwo = lastTwo && perm[i] == i;
  if (lastTwo) {
    const int64_t rows = shape[rank - 2], cols = shape[rank - 1], batch = n / (rows * cols);
    const int64_t tilesX = (cols + 31) / 32, tilesY = (rows + 31) / 32;
    if (tilesX <= INT32_MAX && tilesY <= 65535) {
      const unsigned z = static_cast<unsigned>(std::min<int64_t>(batch, 65535));
      transposeLastTwoKernel<T>
          <<<dim3(static_cast<unsigned>(tilesX), static_cast<unsigned>(tilesY), z), dim3(32, 8), 0,
             stream>>>(x, y, batch, rows, cols);
      return launched("transposeLastTwoKernel");
    }
  }
  const Dims inStride = stridesOf(shape, rank);
  Dims outShape{}, srcStride{};
  for (int i = 0; i < rank; ++i) {
    outShape.v[i] = shape[perm[i]];
    srcStride.v[i] = inStride.v[perm[i]];
  }
  transposeKernel<T><<<blocksFor(n), kThreads, 0, stream>>>(x, y, n, outShape, srcStride, rank);
  return launched("transposeKernel");
}

#define SBPFLOW_INSTANTIATE(T)                                                                     \
  template Status embedding<T>(const T *, int64_t, int64_t, int64_t, const int32_t *, int64_t,     \
                               int64_t, T *, int64_t *, cudaStream_t);                             \
  template Status embeddingGrad<T>(const T *, const int32_t *, int64_t, int64_t, float *, int64_t, \
                                   int64_t, cudaStream_t);                                         \
  template Status dropout<T>(const T *, T *, const int64_t *, const int64_t *, const int64_t *,    \
                             int, float, uint64_t, uint32_t, uint32_t, cudaStream_t);              \
  template Status copyRegion<T>(const T *, const int64_t *, const int64_t *, const int64_t *, int, \
                                T *, cudaStream_t);                                                \
  template Status copyIntoRegion<T>(const T *, const int64_t *, const int64_t *, T *,              \
                                    const int64_t *, int, cudaStream_t);                           \
  template Status transpose<T>(const T *, T *, const int64_t *, const int *, int, cudaStream_t);
SBPFLOW_INSTANTIATE(float)
SBPFLOW_INSTANTIATE(bf16)

} // namespace sbpflow::cuda
