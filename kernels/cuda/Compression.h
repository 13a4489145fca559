// Gradient compression codecs on the GPU (issue 14): the CUDA versions of
// kernels/cpu/Compression.h and kernels/cpu/Quantize.h, whose comments define
// the semantics; tests/kernels_cuda/CompressionCudaTest.cpp checks each against
// its CPU version.
//
// Every function enqueues on `stream` and returns the launches' status (or an
// error for a bad argument, before launching anything); none allocates and
// none waits for the device. Device scratch is the caller's: `scratch` holds
// at least the bytes its ...ScratchBytes function gives, 16-byte aligned
// (cudaMalloc's and the arena's are), and calls on one stream may share it.
// Pointers are device pointers, except where a comment says host.
//
// What is identical to the CPU, bit for bit: top-k, DGC, random-k, the
// scatter-add and every decoder (all their arithmetic is f32 or integer,
// rounded operation by operation as the CPU does; no FMA contraction). Sums the
// CPU makes in double in index order are made here in double in a fixed tree
// order (the same bits on every run, not the CPU's): QSGD's bucket norms of
// more than kQsgdSequentialBucket elements, EF-SignSGD's scales of as long buckets, the 2-bit
// quantiser's shift, sigma and bin means, and PowerSGD's column norms and dot
// products. Rounded to f32 they almost always agree with the CPU, and differ
// from it by one ulp in rare cases (a double sum that lands next to an f32
// rounding boundary); the codes that follow from such a scale may then differ
// where a value sits on a code boundary.
#pragma once

#include "runtime/Status.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace sbpflow::cuda {

// ---------------------------------------------------------------- top-k
// cpu::topkEncode: acc = grad + residual; the k largest |acc| (NaN counts as
// infinity, as the CPU's magnitude(): both are the largest, ties to the lower
// index) as (idx, val) pairs in increasing index order; residual = acc with
// those elements zeroed. 0 <= k <= n < 2^31.
//
// A radix select (four 8-bit digits, most significant first) over the bit
// pattern of |acc| finds the key of the k-th largest, then a stable,
// tile-by-tile compaction sends every element above that key and the first
// (k - above) equal to it, in index order. 2 + 8 + 3 launches, no host
// round trip.
size_t topkScratchBytes(int64_t n);
Status topkEncode(const float *grad, float *residual, int64_t n, int64_t k, void *scratch,
                  int32_t *idx, float *val, cudaStream_t stream);

// ---------------------------------------------------------------- scatter-add
// cpu::scatterAddPairs over `ranks` payloads of `perRank` pairs each, laid one
// after the other (count = ranks * perRank): out[idx[i]] += scale * val[i] in
// pair order, giving exactly the CPU's sums. Rank by rank: a payload's
// strictly increasing prefix (the whole payload for top-k and random-k, all
// but DGC's (0, 0.0f) padding for DGC) is added in parallel with plain adds
// (its indices are distinct), the rest of the payload by one thread in order.
// An index outside [0, n) is skipped; *firstBad (a device int64, may be null)
// receives the first such pair's i, else -1. 2 + 2 * ranks launches.
size_t scatterAddPairsScratchBytes(int64_t ranks);
Status scatterAddPairs(const int32_t *idx, const float *val, int64_t ranks, int64_t perRank,
                       float scale, float *out, int64_t n, void *scratch, int64_t *firstBad,
                       cudaStream_t stream);

// ---------------------------------------------------------------- DGC
// cpu::dgcEncode (u may be null: no momentum correction): momentum correction,
// the threshold from the top of a strided sample (a radix select over the
// sample), up to 10 adjustments (x1.3 / x0.8) and the fall-back threshold, the
// exact top-min(count, k) of v (the same elements as the CPU's top k of the
// passing ones), factor masking, padding to k pairs with (0, 0.0f). *chosen (a
// device int64, may be null) receives how many were chosen. The threshold's
// decisions run on the device (a count kernel and a one-thread decision kernel
// per adjustment, which do nothing once the loop has stopped), in the CPU's
// float arithmetic. 0 <= k <= n < 2^31.
size_t dgcScratchBytes(int64_t n);
Status dgcEncode(const float *grad, float *u, float *v, int64_t n, int64_t k, float momentum,
                 void *scratch, int32_t *idx, float *val, int64_t *chosen, cudaStream_t stream);

// ---------------------------------------------------------------- random-k
// cpu::randomkIndices: the same k indices (the same Philox-driven partial
// Fisher-Yates shuffle), in increasing order. The draws are made in parallel,
// but the swaps are sequential by nature and run in ONE thread, each a
// dependent pair of global-memory accesses (not measured: no GPU where this
// was written; expect a fraction of a microsecond per index), so a large k is
// slow; k == n needs no shuffle (idx = 0..n-1). The chosen indices are then
// marked in a bitmap and compacted in index order. 0 <= k <= n < 2^31.
size_t randomkScratchBytes(int64_t n, int64_t k);
Status randomkIndices(int64_t n, int64_t k, uint64_t seed, uint64_t step, void *scratch,
                      int32_t *idx, cudaStream_t stream);
// cpu::randomkEncode: val[j] = grad[idx[j]] * (n / k) (the factor rounded
// once from double on the host). idx as randomkIndices makes it (in [0, n)).
Status randomkEncode(const float *grad, int64_t n, int64_t k, const int32_t *idx, float *val,
                     cudaStream_t stream);

// ---------------------------------------------------------------- PowerSGD
// cpu::orthogonalizeColumns: modified Gram-Schmidt over the columns of the
// row-major rows x cols matrix p, one column at a time (its norm, then its
// component out of every later column, those in parallel), sums in double in
// a fixed tree order (see above). 2 launches per column, no scratch.
Status orthogonalizeColumns(float *p, int64_t rows, int64_t cols, cudaStream_t stream);

// ---------------------------------------------------------------- QSGD
// cpu::qsgdEncode: the same codes for the same norms (the same Philox draw of
// element i). A bucket of at most kQsgdSequentialBucket elements is summed by
// one thread in index order, as on the CPU (the same norm, so the same codes);
// a longer one in a fixed tree order (see above). codes: n bytes; norms:
// cpu::bucketCount(n, bucket) floats. 1 <= levels <= cpu::kQsgdMaxLevels,
// bucket >= 1.
constexpr int64_t kQsgdSequentialBucket = 512;
size_t qsgdEncodeScratchBytes(int64_t n, int64_t bucket);
Status qsgdEncode(const float *grad, int64_t n, int levels, int64_t bucket, uint64_t seed,
                  uint64_t step, void *scratch, uint8_t *codes, float *norms, cudaStream_t stream);
// cpu::qsgdDecode, bit for bit (each element adds the ranks in rank order).
Status qsgdDecode(const uint8_t *codes, const float *norms, int64_t ranks, int64_t n, int levels,
                  int64_t bucket, float weight, float *out, cudaStream_t stream);

// ---------------------------------------------------------------- EF-SignSGD
// cpu::signEncode: the codes are the CPU's for the same scales (they depend
// on the signs only); scales: cpu::bucketCount(n, bucket) device floats, each
// summed as QSGD's norms are (one thread in index order for a bucket of at
// most kQsgdSequentialBucket elements, the CPU's value; a fixed tree order
// above); the residual follows from them as on the CPU. codes:
// cpu::signCodeBytes(n) bytes. n >= 1, bucket >= 1.
size_t signEncodeScratchBytes(int64_t n, int64_t bucket);
Status signEncode(const float *grad, float *residual, int64_t n, int64_t bucket, void *scratch,
                  uint8_t *codes, float *scales, cudaStream_t stream);
// cpu::signDecode, bit for bit.
Status signDecode(const uint8_t *codes, const float *scales, int64_t ranks, int64_t n,
                  int64_t bucket, float weight, float *out, cudaStream_t stream);
// cpu::adamUpdate, bit for bit, on the gradient times *gradScale (a device
// f32; null: 1). step >= 1.
Status adamUpdate(const float *grad, const float *gradScale, float *m, float *s, float *update,
                  int64_t n, float beta1, float beta2, float eps, int64_t step, float outScale,
                  cudaStream_t stream);
// cpu::accumulateMomentum, bit for bit.
Status accumulateMomentum(const float *grad, float *u, int64_t n, float momentum,
                          cudaStream_t stream);

// ---------------------------------------------------------------- 2-bit values
// cpu::twoBitEncode: shift, sigma and the bin means in a fixed tree order (see
// above); codes and unsent follow from them as on the CPU. codes:
// cpu::twoBitCodeBytes(k) bytes; table: cpu::kTwoBitTableFloats floats;
// unsent: k floats or null. k >= 1.
size_t twoBitEncodeScratchBytes(int64_t k);
Status twoBitEncode(const float *val, int64_t k, float rangeInSigmas, void *scratch, uint8_t *codes,
                    float *table, float *unsent, cudaStream_t stream);
// cpu::twoBitDecode, bit for bit.
Status twoBitDecode(const uint8_t *codes, const float *tables, int64_t ranks, int64_t k, float *val,
                    cudaStream_t stream);

} // namespace sbpflow::cuda
