// Data-movement CUDA kernels: embedding lookup and its gradient, dropout with
// the CPU's counter-based mask, region copies (boxing, narrow, concat) and
// transpose, for fp32 and bf16 tensors (T). Shapes, regions and permutations
// are host arrays of `rank` entries; the kernels get them by value. Each
// function enqueues on `stream` and returns the launch's status (or an error
// for a bad argument, before launching anything). References: kernels/cpu.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sbpflow::cuda {

using bf16 = __nv_bfloat16;

// The most axes these kernels take (as an int, for loops over axes).
constexpr int kMaxRank = static_cast<int>(kMaxTensorRank);

// out[r,:] = table[ids[r] - rowBegin, :] when rowBegin <= ids[r] < rowBegin +
// tableRows (this rank's slice of a vocabulary-split table), else 0, as
// cpu::embedding. An id outside [0, vocab) is an error: its row is 0 and, when
// `firstBad` is not null, *firstBad (a device int64) receives the first such
// r, else -1; the caller reads it once the stream has passed this call.
template <class T>
Status embedding(const T *table, int64_t tableRows, int64_t rowBegin, int64_t vocab,
                 const int32_t *ids, int64_t n, int64_t dim, T *out, int64_t *firstBad,
                 cudaStream_t stream);

// dtable = 0; dtable[ids[r] - rowBegin, :] += dy[r, :] for the ids in this
// rank's rows, as cpu::embeddingGrad. dtable is fp32 (the master side) for
// either T. Repeated ids are summed with atomicAdd: the order of that sum
// varies from run to run, so the low bits of such rows may too.
template <class T>
Status embeddingGrad(const T *dy, const int32_t *ids, int64_t n, int64_t dim, float *dtable,
                     int64_t tableRows, int64_t rowBegin, cudaStream_t stream);

// y = x * keep / (1 - p) over the local block regionBegin / regionSize of a
// tensor of globalShape, with the keep mask of cpu::dropout bit for bit (the
// same Philox4x32-10 draw per global element index), so CPU and GPU ranks may
// share a split tensor. The gradient is the same call on dy. x == y allowed.
template <class T>
Status dropout(const T *x, T *y, const int64_t *globalShape, const int64_t *regionBegin,
               const int64_t *regionSize, int rank, float p, uint64_t seed, uint32_t batch,
               uint32_t epoch, cudaStream_t stream);

// The block `region` of a row-major tensor `src` of shape srcShape into the
// dense dst, and back (copyIntoRegion leaves the rest of dst as it was), as
// cpu::copyRegion / copyIntoRegion. rank 0 copies the one element.
template <class T>
Status copyRegion(const T *src, const int64_t *srcShape, const int64_t *regionBegin,
                  const int64_t *regionSize, int rank, T *dst, cudaStream_t stream);
template <class T>
Status copyIntoRegion(const T *src, const int64_t *regionBegin, const int64_t *regionSize, T *dst,
                      const int64_t *dstShape, int rank, cudaStream_t stream);

// y = x with axes permuted: y.shape[i] = shape[perm[i]], as cpu::transpose.
// x and y must not overlap unless perm is the identity.
template <class T>
Status transpose(const T *x, T *y, const int64_t *shape, const int *perm, int rank,
                 cudaStream_t stream);

} // namespace sbpflow::cuda
