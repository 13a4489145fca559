// Gradient compression codecs on the GPU (see Compression.h): a radix select
// and a stable tile compaction for the sparsifiers, elementwise kernels for
// the quantisers, deterministic double sums (a fixed tree) where the CPU sums
// in double. Where a product meets a sum the _rn intrinsics keep the CPU's
// two roundings (they are never contracted into an FMA; the CPU kernels are
// built for baseline x86-64, without FMA).
#include "kernels/Philox.h"
#include "kernels/cpu/Adam.h"
#include "kernels/cpu/Quantize.h"
#include "kernels/cuda/Compression.h"
#include "kernels/cuda/Launch.cuh"

#include <cmath>
#include <limits>
#include <string>

namespace sbpflow::cuda {
namespace {

using namespace detail;

constexpr int kWarps = kThreads / 32;

// ---------------------------------------------------------------- helpers

Status invalid(const char *fn, const std::string &why) {
  return Status::error(std::string("cuda::") + fn + ": " + why);
}

Status checkSize(const char *fn, int64_t n, int64_t k) {
  if (n < 0 || n > std::numeric_limits<int32_t>::max())
    return invalid(fn, "n = " + std::to_string(n) + " is outside [0, 2^31)");
  if (k < 0 || k > n)
    return invalid(fn,
                   "k = " + std::to_string(k) + " is outside [0, n = " + std::to_string(n) + "]");
  return Status::ok();
}

Status memsetAsync(void *p, int value, size_t bytes, cudaStream_t stream, const char *fn) {
  cudaError_t e = cudaMemsetAsync(p, value, bytes, stream);
  if (e != cudaSuccess)
    return invalid(fn, std::string("cudaMemsetAsync: ") + cudaGetErrorString(e));
  return Status::ok();
}

// Carves typed arrays out of the caller's scratch; with a null base it only
// measures (the ...ScratchBytes functions run the same carving).
class Carve {
public:
  explicit Carve(void *base) : base_(static_cast<char *>(base)) {}
  template <class T> T *take(size_t count) {
    used_ = (used_ + 15) / 16 * 16;
    T *p = base_ ? reinterpret_cast<T *>(base_ + used_) : nullptr;
    used_ += count * sizeof(T);
    return p;
  }
  size_t used() const { return used_; }

private:
  char *base_;
  size_t used_ = 0;
};

// Deterministic block sum: every thread gets the same bits (the warps' sums
// are added in warp order by every thread). `shared` holds kWarps doubles.
__device__ double blockSum(double v, double *shared) {
  v = warpSum(v);
  if ((threadIdx.x & 31) == 0)
    shared[threadIdx.x >> 5] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w)
    total += shared[w];
  __syncthreads(); // `shared` may be reused at once
  return total;
}

// Exclusive prefix count of `flag` over the block in thread order (lane order
// within a warp, warp order across); *total gets the block's count. Every
// thread of the block calls it. `shared` holds kWarps words.
__device__ uint32_t blockFlagScan(bool flag, uint32_t *shared, uint32_t *total) {
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned ballot = __ballot_sync(kFullMask, flag);
  const uint32_t inWarp = __popc(ballot & ((1u << lane) - 1u));
  if (lane == 0)
    shared[warp] = __popc(ballot);
  __syncthreads();
  uint32_t before = 0, all = 0;
  for (unsigned w = 0; w < blockDim.x / 32; ++w) {
    before += w < warp ? shared[w] : 0u;
    all += shared[w];
  }
  __syncthreads();
  *total = all;
  return before + inWarp;
}

// Exclusive prefix sum of v over the block in thread order (blockDim.x a
// multiple of 32, at most 1024). `shared` holds 32 words.
__device__ uint32_t blockExclusiveSum(uint32_t v, uint32_t *shared) {
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const uint32_t y = __shfl_up_sync(kFullMask, x, o);
    if (lane >= static_cast<unsigned>(o))
      x += y;
  }
  if (lane == 31)
    shared[warp] = x;
  __syncthreads();
  if (warp == 0) {
    uint32_t w = lane < blockDim.x / 32 ? shared[lane] : 0u;
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t y = __shfl_up_sync(kFullMask, w, o);
      if (lane >= static_cast<unsigned>(o))
        w += y;
    }
    shared[lane] = w; // inclusive sums of the warps
  }
  __syncthreads();
  const uint32_t result = (warp > 0 ? shared[warp - 1] : 0u) + x - v;
  __syncthreads();
  return result;
}

// |x| as the CPU's selections compare it (NaN as infinity), as a float and as
// an order-preserving key (the bits of a non-negative float).
__device__ __forceinline__ float magnitude(float x) {
  const float m = fabsf(x);
  return isnan(m) ? INFINITY : m;
}
__device__ __forceinline__ uint32_t magnitudeKey(float x) {
  const uint32_t b = __float_as_uint(x) & 0x7fffffffu;
  return b > 0x7f800000u ? 0x7f800000u : b;
}

// Deterministic sums over a whole array: a grid that depends on the length
// only writes one partial per block (in a fixed order), one block adds them.
constexpr int kMaxPartials = 1024;
unsigned partialBlocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxPartials));
}

// Sums partials[b * width + j] over b < count into sums[j] for j < width, in
// one block of kThreads.
__device__ void finishSums(const double *partials, int count, int width, double *sums,
                           double *shared) {
  for (int j = 0; j < width; ++j) {
    double acc = 0;
    for (int b = threadIdx.x; b < count; b += blockDim.x)
      acc += partials[static_cast<int64_t>(b) * width + j];
    sums[j] = blockSum(acc, shared);
  }
}

// ---------------------------------------------------------------- radix select
// The k-th largest key over `count` keys (Keys: a functor key(i)), four 8-bit
// digits from the top: after the last pass prefix is that key, `above` counts
// the keys greater than it, and `need` (>= 1) how many keys equal to it are
// among the k largest. need = 0 on entry (k = 0): prefix = ~0, above every key
// (the largest key is 0x7f800000), so nothing is selected.
struct SelectState {
  uint32_t prefix;
  uint32_t need;
  uint32_t above;
  uint32_t pad;
  uint32_t hist[256];
};

constexpr int kDigits = 4;
constexpr int kRadix = 256;

__device__ void selectStart(SelectState *st, uint32_t k) {
  for (int b = threadIdx.x; b < kRadix; b += blockDim.x)
    st->hist[b] = 0;
  if (threadIdx.x == 0) {
    st->prefix = k == 0 ? ~0u : 0u;
    st->need = k;
    st->above = 0;
  }
}

__global__ void selectStartKernel(SelectState *st, uint32_t k) { selectStart(st, k); }

template <class Keys>
__global__ void histogramKernel(Keys keys, int64_t count, SelectState *st, int shift) {
  __shared__ uint32_t hist[kRadix];
  if (st->need == 0) // the same for the whole block
    return;
  for (int b = threadIdx.x; b < kRadix; b += blockDim.x)
    hist[b] = 0;
  __syncthreads();
  const uint32_t high = shift + 8 >= 32 ? 0u : ~0u << (shift + 8);
  const uint32_t prefix = st->prefix & high;
  for (int64_t i = first(); i < count; i += stride()) {
    const uint32_t key = keys(i);
    if ((key & high) == prefix)
      atomicAdd(&hist[(key >> shift) & (kRadix - 1)], 1u);
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kRadix; b += blockDim.x)
    if (hist[b] != 0)
      atomicAdd(&st->hist[b], hist[b]);
}

// One block of kRadix threads: the digit of the k-th largest, from the top.
__global__ void selectDigitKernel(SelectState *st, int shift) {
  __shared__ uint32_t hist[kRadix];
  hist[threadIdx.x] = st->hist[threadIdx.x];
  st->hist[threadIdx.x] = 0; // for the next pass
  __syncthreads();
  if (threadIdx.x != 0 || st->need == 0)
    return;
  const uint32_t need = st->need;
  uint32_t above = 0;
  for (int d = kRadix - 1; d >= 0; --d) {
    if (above + hist[d] >= need) {
      st->prefix |= static_cast<uint32_t>(d) << shift;
      st->above += above;
      st->need = need - above;
      return;
    }
    above += hist[d];
  }
}

unsigned histogramBlocks(int64_t count) {
  return static_cast<unsigned>(std::min<int64_t>((count + kThreads - 1) / kThreads, 132 * 8));
}

// Runs the four passes (count >= 1; st started).
template <class Keys>
Status radixSelect(Keys keys, int64_t count, SelectState *st, cudaStream_t stream) {
  for (int pass = 0; pass < kDigits; ++pass) {
    const int shift = 8 * (kDigits - 1 - pass);
    histogramKernel<<<histogramBlocks(count), kThreads, 0, stream>>>(keys, count, st, shift);
    if (Status s = launched("histogramKernel"); !s)
      return s;
    selectDigitKernel<<<1, kRadix, 0, stream>>>(st, shift);
    if (Status s = launched("selectDigitKernel"); !s)
      return s;
  }
  return Status::ok();
}

struct AccKeys {
  const float *x;
  __device__ uint32_t operator()(int64_t i) const { return magnitudeKey(x[i]); }
};
struct StridedKeys {
  const float *x;
  int64_t stride;
  __device__ uint32_t operator()(int64_t j) const { return magnitudeKey(x[j * stride]); }
};

// ---------------------------------------------------------------- compaction
// A stable compaction over n elements in tiles of kTile: each element is of
// class 0 (dropped), 1 (kept) or 2 (kept if among the first `need` of class 2
// in index order). Pass 1 counts each tile's classes 1 and 2, pass 2 (one
// block) turns the counts into each tile's first output position and the
// class-2 elements before it, pass 3 writes each tile in index order.
constexpr int kTileRounds = 8;
constexpr int64_t kTile = static_cast<int64_t>(kThreads) * kTileRounds;
constexpr int kScanThreads = 1024;

int64_t tilesFor(int64_t n) { return (n + kTile - 1) / kTile; }

// Classes by the selected key: above it 1, equal 2.
struct ByKey {
  const float *x;
  const SelectState *st;
  __device__ int operator()(int64_t i) const {
    const uint32_t key = magnitudeKey(x[i]), threshold = st->prefix;
    return key > threshold ? 1 : key == threshold ? 2 : 0;
  }
  __device__ uint32_t need() const { return st->need; }
};

// Class 1 where the bit of i is set.
struct ByBit {
  const uint32_t *bits;
  __device__ int operator()(int64_t i) const { return (bits[i >> 5] >> (i & 31)) & 1u; }
  __device__ uint32_t need() const { return 0; }
};

template <class Classes>
__global__ void tileCountKernel(Classes classes, int64_t n, uint32_t *ones, uint32_t *twos) {
  __shared__ uint32_t shared[kWarps];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * kTile;
  uint32_t count1 = 0, count2 = 0;
  for (int round = 0; round < kTileRounds; ++round) {
    const int64_t i = base + round * kThreads + threadIdx.x;
    const int c = i < n ? classes(i) : 0;
    uint32_t total;
    blockFlagScan(c == 1, shared, &total);
    count1 += total;
    blockFlagScan(c == 2, shared, &total);
    count2 += total;
  }
  if (threadIdx.x == 0) {
    ones[blockIdx.x] = count1;
    twos[blockIdx.x] = count2;
  }
}

// One block of kScanThreads; thread t owns a run of consecutive tiles. On
// return ones[t] = the tile's first output position, twos[t] = the class-2
// elements before the tile.
template <class Classes>
__global__ void tileScanKernel(Classes classes, int64_t tiles, uint32_t *ones, uint32_t *twos) {
  __shared__ uint32_t shared[32];
  const uint32_t need = classes.need();
  const int64_t per = (tiles + blockDim.x - 1) / blockDim.x;
  const int64_t lo = min(tiles, threadIdx.x * per), hi = min(tiles, lo + per);
  uint32_t sum2 = 0;
  for (int64_t t = lo; t < hi; ++t)
    sum2 += twos[t];
  const uint32_t base2 = blockExclusiveSum(sum2, shared);
  auto taken2 = [need](uint32_t before, uint32_t here) {
    return need > before ? min(need - before, here) : 0u;
  };
  uint32_t before2 = base2, kept = 0;
  for (int64_t t = lo; t < hi; ++t) {
    kept += ones[t] + taken2(before2, twos[t]);
    before2 += twos[t];
  }
  uint32_t position = blockExclusiveSum(kept, shared);
  before2 = base2;
  for (int64_t t = lo; t < hi; ++t) {
    const uint32_t one = ones[t], two = twos[t];
    ones[t] = position;
    twos[t] = before2;
    position += one + taken2(before2, two);
    before2 += two;
  }
}

// Emit: a functor emit(position, i) for each kept element.
template <class Classes, class Emit>
__global__ void tileWriteKernel(Classes classes, Emit emit, int64_t n, const uint32_t *positions,
                                const uint32_t *twosBefore) {
  __shared__ uint32_t shared[kWarps];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * kTile;
  const uint32_t need = classes.need();
  uint32_t position = positions[blockIdx.x], before2 = twosBefore[blockIdx.x];
  for (int round = 0; round < kTileRounds; ++round) {
    const int64_t i = base + round * kThreads + threadIdx.x;
    const int c = i < n ? classes(i) : 0;
    uint32_t total2, totalKept;
    const uint32_t rank2 = before2 + blockFlagScan(c == 2, shared, &total2);
    const bool keep = c == 1 || (c == 2 && rank2 < need);
    const uint32_t at = position + blockFlagScan(keep, shared, &totalKept);
    if (keep)
      emit(at, i);
    before2 += total2;
    position += totalKept;
  }
}

struct TileScratch {
  uint32_t *ones, *twos;
};
TileScratch takeTiles(Carve &c, int64_t n) {
  const size_t tiles = static_cast<size_t>(tilesFor(n));
  return {c.take<uint32_t>(tiles), c.take<uint32_t>(tiles)};
}

template <class Classes, class Emit>
Status compact(Classes classes, Emit emit, int64_t n, TileScratch t, cudaStream_t stream) {
  const int64_t tiles = tilesFor(n);
  tileCountKernel<<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(classes, n, t.ones,
                                                                         t.twos);
  if (Status s = launched("tileCountKernel"); !s)
    return s;
  tileScanKernel<<<1, kScanThreads, 0, stream>>>(classes, tiles, t.ones, t.twos);
  if (Status s = launched("tileScanKernel"); !s)
    return s;
  tileWriteKernel<<<static_cast<unsigned>(tiles), kThreads, 0, stream>>>(classes, emit, n, t.ones,
                                                                         t.twos);
  return launched("tileWriteKernel");
}

// ---------------------------------------------------------------- top-k

__global__ void accumulateKernel(const float *grad, float *residual, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    residual[i] += grad[i];
}

// The pair of a sent element; what stays behind is 0 (and `alsoZero`, DGC's
// u, when given).
struct EmitPair {
  float *x, *alsoZero;
  int32_t *idx;
  float *val;
  __device__ void operator()(uint32_t at, int64_t i) const {
    idx[at] = static_cast<int32_t>(i);
    val[at] = x[i];
    x[i] = 0.f;
    if (alsoZero)
      alsoZero[i] = 0.f;
  }
};

struct TopkScratch {
  SelectState *select;
  TileScratch tiles;
};
TopkScratch topkLayout(void *base, int64_t n, size_t *bytes) {
  Carve c(base);
  TopkScratch s{c.take<SelectState>(1), takeTiles(c, n)};
  *bytes = c.used();
  return s;
}

// ---------------------------------------------------------------- DGC

__global__ void momentumOnlyKernel(const float *grad, float *u, int64_t n, float momentum) {
  for (int64_t i = first(); i < n; i += stride())
    u[i] = __fadd_rn(__fmul_rn(momentum, u[i]), grad[i]);
}

__global__ void momentumKernel(const float *grad, float *u, float *v, int64_t n, float momentum) {
  for (int64_t i = first(); i < n; i += stride()) {
    const float ui = u ? __fadd_rn(__fmul_rn(momentum, u[i]), grad[i]) : grad[i];
    if (u)
      u[i] = ui;
    v[i] = __fadd_rn(v[i], ui);
  }
}

// cpu::adamUpdate, in its operation order with no contraction.
__global__ void adamUpdateKernel(const float *grad, const float *gradScale, float *m, float *s,
                                 float *update, int64_t n, float beta1, float beta2, float eps,
                                 float stepSize, float bc2Sqrt) {
  const float scale = gradScale ? *gradScale : 1.0f;
  const float oneMinusBeta1 = __fsub_rn(1.f, beta1), oneMinusBeta2 = __fsub_rn(1.f, beta2);
  for (int64_t i = first(); i < n; i += stride()) {
    const float gi = __fmul_rn(grad[i], scale);
    const float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(oneMinusBeta1, gi));
    const float si = __fadd_rn(__fmul_rn(beta2, s[i]), __fmul_rn(oneMinusBeta2, __fmul_rn(gi, gi)));
    m[i] = mi;
    s[i] = si;
    update[i] =
        __fmul_rn(stepSize, __fdiv_rn(mi, __fadd_rn(__fdiv_rn(__fsqrt_rn(si), bc2Sqrt), eps)));
  }
}

// The threshold's state, as the CPU's locals of the same names.
struct DgcState {
  float threshold, enough;
  unsigned long long count, enoughCount;
  int stopped;   // the adjustment loop has stopped
  int needCount; // the next count kernel counts (else it does nothing)
  unsigned long long chosen;
};

__global__ void dgcStartKernel(DgcState *st, const SelectState *sample) {
  st->threshold = __uint_as_float(sample->prefix); // the least of the sample's top
  st->count = 0;
  st->needCount = 1;
  st->stopped = 0;
}

__global__ void dgcCountKernel(const float *v, int64_t n, DgcState *st) {
  if (!st->needCount) // the same for the whole grid
    return;
  const float threshold = st->threshold;
  unsigned count = 0;
  for (int64_t i = first(); i < n; i += stride())
    count += magnitude(v[i]) >= threshold ? 1u : 0u;
  count = __reduce_add_sync(kFullMask, count);
  if ((threadIdx.x & 31) == 0 && count != 0)
    atomicAdd(&st->count, static_cast<unsigned long long>(count));
}

// Stage 0 follows the first count; stage s in 1..10 follows the count after
// adjustment s - 1 (and makes adjustment s while s < 10), as the CPU's loop.
__global__ void dgcDecideKernel(DgcState *st, long long k, int stage) {
  const long long count = static_cast<long long>(st->count);
  st->needCount = 0;
  if (stage == 0) {
    st->enough = st->threshold;
    st->enoughCount = count >= k ? count : 0;
  } else if (!st->stopped && count >= k &&
             (st->enoughCount == 0 || count < static_cast<long long>(st->enoughCount))) {
    st->enough = st->threshold;
    st->enoughCount = count;
  }
  if (st->stopped)
    return;
  if (stage == 10) {
    st->stopped = 1;
    return;
  }
  if (count > k + (3 * k) / 10)
    st->threshold = __fmul_rn(st->threshold, 1.3f);
  else if (count < (8 * k) / 10 && st->threshold > 0.f)
    st->threshold = __fmul_rn(st->threshold, 0.8f);
  else {
    st->stopped = 1;
    return;
  }
  st->count = 0;
  st->needCount = 1;
}

// The CPU's fall-back after the loop: the threshold that let the fewest pass
// while at least k did, when the loop ended below 0.8 k.
__global__ void dgcFallbackKernel(DgcState *st, long long k) {
  st->needCount = 0;
  if (static_cast<long long>(st->count) < (8 * k) / 10 && st->enoughCount > 0) {
    st->threshold = st->enough;
    st->count = 0;
    st->needCount = 1;
  }
}

// chosen = min(count, k): the top `chosen` of v are exactly the CPU's top k
// of the passing elements (every passing |v| is above every other).
__global__ void dgcChooseKernel(DgcState *st, long long k, SelectState *select, int64_t *chosen) {
  const long long count = static_cast<long long>(st->count);
  const uint32_t c = static_cast<uint32_t>(count < k ? count : k);
  selectStart(select, c);
  if (threadIdx.x == 0) {
    st->chosen = c;
    if (chosen)
      *chosen = c;
  }
}

__global__ void dgcPadKernel(const DgcState *st, int64_t k, int32_t *idx, float *val) {
  const int64_t chosen = static_cast<int64_t>(st->chosen);
  for (int64_t j = first(); j < k; j += stride())
    if (j >= chosen) {
      idx[j] = 0;
      val[j] = 0.f;
    }
}

struct DgcScratch {
  DgcState *state;
  SelectState *select;
  TileScratch tiles;
};
DgcScratch dgcLayout(void *base, int64_t n, size_t *bytes) {
  Carve c(base);
  DgcScratch s{c.take<DgcState>(1), c.take<SelectState>(1), takeTiles(c, n)};
  *bytes = c.used();
  return s;
}

// ---------------------------------------------------------------- random-k

__global__ void iotaKernel(int32_t *x, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    x[i] = static_cast<int32_t>(i);
}

// Draw j of cpu::randomkIndices: a uniform 64-bit word mapped onto [j, n).
__global__ void randomkDrawKernel(int64_t n, int64_t k, uint64_t seed, uint64_t step,
                                  int32_t *picks) {
  for (int64_t j = first(); j < k; j += stride()) {
    const PhiloxBlock r =
        philox4x32_10(static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32),
                      static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const uint64_t word = (static_cast<uint64_t>(r.word[0]) << 32) | r.word[1];
    const uint64_t span = static_cast<uint64_t>(n - j);
    picks[j] = static_cast<int32_t>(j + static_cast<int64_t>(__umul64hi(word, span)));
  }
}

// The swaps, in order, by one thread: each depends on the ones before.
__global__ void randomkShuffleKernel(int32_t *order, const int32_t *picks, int64_t k) {
  for (int64_t j = 0; j < k; ++j) {
    const int32_t p = picks[j];
    const int32_t a = order[j], b = order[p];
    order[p] = a;
    order[j] = b;
  }
}

__global__ void markKernel(const int32_t *order, int64_t k, uint32_t *bits) {
  for (int64_t j = first(); j < k; j += stride()) {
    const int32_t i = order[j];
    atomicOr(&bits[i >> 5], 1u << (i & 31));
  }
}

struct EmitIndex {
  int32_t *idx;
  __device__ void operator()(uint32_t at, int64_t i) const { idx[at] = static_cast<int32_t>(i); }
};

struct RandomkScratch {
  int32_t *order, *picks;
  uint32_t *bits;
  TileScratch tiles;
};
int64_t bitWords(int64_t n) { return (n + 31) / 32; }
RandomkScratch randomkLayout(void *base, int64_t n, int64_t k, size_t *bytes) {
  Carve c(base);
  RandomkScratch s{c.take<int32_t>(static_cast<size_t>(n)), c.take<int32_t>(static_cast<size_t>(k)),
                   c.take<uint32_t>(static_cast<size_t>(bitWords(n))), takeTiles(c, n)};
  *bytes = c.used();
  return s;
}

__global__ void gatherScaleKernel(const float *grad, const int32_t *idx, int64_t k, float scale,
                                  float *val) {
  for (int64_t j = first(); j < k; j += stride())
    val[j] = grad[idx[j]] * scale;
}

// ---------------------------------------------------------------- scatter-add

__global__ void fillKernel(unsigned long long *x, int64_t count, unsigned long long value) {
  for (int64_t i = first(); i < count; i += stride())
    x[i] = value;
}

// prefix[r] = the length of payload r's strictly increasing prefix (started
// at perRank, lowered to the first j whose index is not above the one
// before).
__global__ void increasingPrefixKernel(const int32_t *idx, int64_t ranks, int64_t perRank,
                                       unsigned long long *prefix) {
  const int64_t count = ranks * perRank;
  for (int64_t q = first(); q < count; q += stride()) {
    const int64_t j = q % perRank;
    if (j > 0 && idx[q] <= idx[q - 1])
      atomicMin(&prefix[q / perRank], static_cast<unsigned long long>(j));
  }
}

__device__ __forceinline__ void reportBad(unsigned long long *firstBad, int64_t q) {
  if (firstBad)
    atomicMin(firstBad, static_cast<unsigned long long>(q));
}

// Payload r's increasing prefix: distinct indices, so plain adds.
__global__ void addPrefixKernel(const int32_t *idx, const float *val, int64_t r, int64_t perRank,
                                const unsigned long long *prefix, float scale, float *out,
                                int64_t n, unsigned long long *firstBad) {
  const int64_t length = static_cast<int64_t>(prefix[r]);
  for (int64_t j = first(); j < length; j += stride()) {
    const int64_t q = r * perRank + j;
    const int32_t i = idx[q];
    if (i < 0 || i >= n) {
      reportBad(firstBad, q);
      continue;
    }
    out[i] = __fadd_rn(out[i], __fmul_rn(scale, val[q]));
  }
}

// The rest of payload r, in order, by one thread (a run of one index stays in
// a register: the same roundings as storing and reloading).
__global__ void addTailKernel(const int32_t *idx, const float *val, int64_t r, int64_t perRank,
                              const unsigned long long *prefix, float scale, float *out, int64_t n,
                              unsigned long long *firstBad) {
  const int64_t end = (r + 1) * perRank;
  int64_t q = r * perRank + static_cast<int64_t>(prefix[r]);
  while (q < end) {
    const int32_t i = idx[q];
    if (i < 0 || i >= n) {
      reportBad(firstBad, q);
      ++q;
      continue;
    }
    float acc = out[i];
    for (; q < end && idx[q] == i; ++q)
      acc = __fadd_rn(acc, __fmul_rn(scale, val[q]));
    out[i] = acc;
  }
}

// ---------------------------------------------------------------- PowerSGD

__global__ void normalizeColumnKernel(float *p, int64_t rows, int64_t cols, int64_t c) {
  __shared__ double shared[32];
  double squares = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const double x = p[r * cols + c];
    squares += x * x; // exact: a float squared fits a double
  }
  const double norm = sqrt(blockSum(squares, shared));
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x)
    p[r * cols + c] = norm > 0.0 ? static_cast<float>(p[r * cols + c] / norm) : 0.f;
}

// Block b: column d = c + 1 + b loses its component along column c.
__global__ void projectOutKernel(float *p, int64_t rows, int64_t cols, int64_t c) {
  __shared__ double shared[32];
  const int64_t d = c + 1 + blockIdx.x;
  double dot = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x)
    dot += static_cast<double>(p[r * cols + c]) * p[r * cols + d]; // exact product
  dot = blockSum(dot, shared);
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x)
    p[r * cols + d] = static_cast<float>(
        __dsub_rn(static_cast<double>(p[r * cols + d]), __dmul_rn(dot, p[r * cols + c])));
}

// ---------------------------------------------------------------- QSGD

constexpr uint32_t kQsgdStream = 0x40000000u; // as cpu's Quantize.cpp

// A statistic per bucket: QSGD's L2 norm, EF-SignSGD's mean magnitude
// (||x_b||_1 / |b|); summed in double.
enum class BucketStat { L2Norm, L1Mean };

template <BucketStat S> __device__ __forceinline__ double bucketTerm(float x) {
  return S == BucketStat::L2Norm ? static_cast<double>(x) * x : fabs(static_cast<double>(x));
}

template <BucketStat S>
__device__ __forceinline__ float bucketFinish(double sum, int64_t b, int64_t n, int64_t bucket) {
  if (S == BucketStat::L2Norm)
    return static_cast<float>(sqrt(sum));
  const int64_t begin = b * bucket, end = min(n, begin + bucket);
  return static_cast<float>(sum / static_cast<double>(end - begin));
}

// Short buckets: one thread sums a bucket in index order, as the CPU does.
template <BucketStat S>
__global__ void bucketSequentialKernel(const float *x, int64_t n, int64_t bucket, int64_t buckets,
                                       float *stats) {
  for (int64_t b = first(); b < buckets; b += stride()) {
    const int64_t begin = b * bucket, end = min(n, begin + bucket);
    double sum = 0.0;
    for (int64_t i = begin; i < end; ++i)
      sum += bucketTerm<S>(x[i]);
    stats[b] = bucketFinish<S>(sum, b, n, bucket);
  }
}

// Long buckets: block (b, c) sums chunk c of bucket b (kNormChunk elements).
constexpr int64_t kNormChunk = kThreads * 16;

template <BucketStat S>
__global__ void bucketPartialKernel(const float *x, int64_t n, int64_t bucket,
                                    int64_t chunksPerBucket, double *partials) {
  __shared__ double shared[32];
  const int64_t b = blockIdx.x / chunksPerBucket, c = blockIdx.x % chunksPerBucket;
  const int64_t bucketEnd = min(n, (b + 1) * bucket);
  const int64_t begin = b * bucket + c * kNormChunk, end = min(bucketEnd, begin + kNormChunk);
  double sum = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    sum += bucketTerm<S>(x[i]);
  sum = blockSum(sum, shared);
  if (threadIdx.x == 0)
    partials[blockIdx.x] = sum;
}

template <BucketStat S>
__global__ void bucketFinishKernel(const double *partials, int64_t chunksPerBucket, int64_t n,
                                   int64_t bucket, float *stats) {
  __shared__ double shared[32];
  const double *mine = partials + static_cast<int64_t>(blockIdx.x) * chunksPerBucket;
  double sum = 0;
  for (int64_t c = threadIdx.x; c < chunksPerBucket; c += blockDim.x)
    sum += mine[c];
  sum = blockSum(sum, shared);
  if (threadIdx.x == 0)
    stats[blockIdx.x] = bucketFinish<S>(sum, blockIdx.x, n, bucket);
}

// Thread g codes elements 4g .. 4g + 3 from one Philox block.
__global__ void qsgdCodeKernel(const float *grad, int64_t n, int levels, int64_t bucket,
                               uint64_t seed, uint64_t step, const float *norms, uint8_t *codes) {
  const float s = static_cast<float>(levels);
  const int64_t groups = (n + 3) / 4;
  for (int64_t g = first(); g < groups; g += stride()) {
    const uint64_t c = static_cast<uint64_t>(g);
    const PhiloxBlock draw =
        philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32) | kQsgdStream,
                      static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    for (int w = 0; w < 4; ++w) {
      const int64_t i = 4 * g + w;
      if (i >= n)
        break;
      const float v = grad[i], norm = norms[i / bucket];
      int level = 0;
      if (norm > 0.f && isfinite(norm)) {
        const float a = fabsf(v) / norm * s;
        const float r = s < a ? s : a; // std::min(a, s)
        const float lower = floorf(r);
        const float u = static_cast<float>(draw.word[w] >> 8) * 0x1p-24f;
        level = min(static_cast<int>(lower) + (u < r - lower ? 1 : 0), levels);
      }
      codes[i] = static_cast<uint8_t>((v < 0.f ? 0x80 : 0) | level);
    }
  }
}

__global__ void qsgdDecodeKernel(const uint8_t *codes, const float *norms, int64_t ranks, int64_t n,
                                 int levels, int64_t bucket, float weight, float *out) {
  const float s = static_cast<float>(levels);
  const int64_t buckets = (n + bucket - 1) / bucket;
  for (int64_t i = first(); i < n; i += stride()) {
    const int64_t b = i / bucket;
    float acc = out[i];
    for (int64_t r = 0; r < ranks; ++r) {
      const uint8_t c = codes[r * n + i];
      const float unit = norms[r * buckets + b] / s;
      float q = __fmul_rn(unit, static_cast<float>(c & 0x7f));
      if (c & 0x80)
        q = -q;
      acc = __fadd_rn(acc, __fmul_rn(weight, q));
    }
    out[i] = acc;
  }
}

// The partial sums of buckets longer than kQsgdSequentialBucket.
struct BucketScratch {
  double *partials;
};
int64_t chunksPerBucket(int64_t bucket) { return (bucket + kNormChunk - 1) / kNormChunk; }
BucketScratch bucketLayout(void *base, int64_t n, int64_t bucket, size_t *bytes) {
  Carve c(base);
  BucketScratch s{nullptr};
  if (bucket > kQsgdSequentialBucket && n > 0)
    s.partials =
        c.take<double>(static_cast<size_t>(cpu::bucketCount(n, bucket) * chunksPerBucket(bucket)));
  *bytes = c.used();
  return s;
}

// ---------------------------------------------------------------- EF-SignSGD

// p = grad + e in place.
__global__ void signAccumulateKernel(const float *grad, float *residual, int64_t n) {
  for (int64_t i = first(); i < n; i += stride())
    residual[i] = __fadd_rn(residual[i], grad[i]);
}

// Thread per code byte: its 8 signs, and p - delta.
__global__ void signCodeKernel(float *residual, int64_t n, int64_t bucket, const float *scales,
                               uint8_t *codes) {
  const int64_t bytes = (n + 7) / 8; // cpu::signCodeBytes, host-only
  for (int64_t byte = first(); byte < bytes; byte += stride()) {
    uint8_t bits = 0;
    const int64_t end = min(n, 8 * byte + 8);
    for (int64_t i = 8 * byte; i < end; ++i) {
      const float p = residual[i], sc = scales[i / bucket];
      if (p < 0.f) {
        bits |= static_cast<uint8_t>(1u << (i - 8 * byte));
        residual[i] = __fadd_rn(p, sc);
      } else {
        residual[i] = __fsub_rn(p, sc);
      }
    }
    codes[byte] = bits;
  }
}

__global__ void signDecodeKernel(const uint8_t *codes, const float *scales, int64_t ranks,
                                 int64_t n, int64_t bucket, float weight, float *out) {
  const int64_t bytes = (n + 7) / 8; // cpu::signCodeBytes, host-only
  const int64_t buckets = (n + bucket - 1) / bucket;
  for (int64_t i = first(); i < n; i += stride()) {
    float acc = out[i];
    for (int64_t r = 0; r < ranks; ++r) {
      const bool negative = (codes[r * bytes + (i >> 3)] >> (i & 7)) & 1;
      const float sc = scales[r * buckets + i / bucket];
      acc = __fadd_rn(acc, __fmul_rn(weight, negative ? -sc : sc));
    }
    out[i] = acc;
  }
}

// ---------------------------------------------------------------- 2-bit values

constexpr int kBins = cpu::kTwoBitBins;

struct TwoBitState {
  float shift, step;
};

__global__ void twoBitSumKernel(const float *val, int64_t k, double *partials) {
  __shared__ double shared[32];
  double sum = 0;
  for (int64_t j = first(); j < k; j += stride())
    sum += val[j];
  sum = blockSum(sum, shared);
  if (threadIdx.x == 0)
    partials[blockIdx.x] = sum;
}

__global__ void twoBitShiftKernel(const double *partials, int count, int64_t k, TwoBitState *st,
                                  float *table) {
  __shared__ double shared[32];
  double sum;
  finishSums(partials, count, 1, &sum, shared);
  if (threadIdx.x == 0) {
    const float shift = static_cast<float>(sum / static_cast<double>(k));
    st->shift = shift;
    table[0] = shift;
  }
}

__global__ void twoBitSquaresKernel(const float *val, int64_t k, const TwoBitState *st,
                                    double *partials) {
  __shared__ double shared[32];
  const float shift = st->shift;
  double squares = 0;
  for (int64_t j = first(); j < k; j += stride()) {
    const double c = val[j] - shift;
    squares += c * c; // exact: c is a float
  }
  squares = blockSum(squares, shared);
  if (threadIdx.x == 0)
    partials[blockIdx.x] = squares;
}

__global__ void twoBitStepKernel(const double *partials, int count, int64_t k, float rangeInSigmas,
                                 TwoBitState *st) {
  __shared__ double shared[32];
  double squares;
  finishSums(partials, count, 1, &squares, shared);
  if (threadIdx.x == 0) {
    const double sigma = k > 1 ? sqrt(squares / static_cast<double>(k - 1)) : 0.0;
    float step = static_cast<float>(rangeInSigmas * sigma / kBins);
    if (!(step > 0.f) || !isfinite(step))
      step = 1.f;
    st->step = step;
  }
}

__device__ __forceinline__ int twoBitCodeOf(float v, float shift, float step) {
  const float x = rintf((v - shift) / step + kBins / 2); // half to even, as nearbyint
  // A NaN compares false: code 0 (its decoded value is NaN through shift).
  return x >= kBins - 1 ? kBins - 1 : x >= 1.f ? static_cast<int>(x) : 0;
}

// Thread per code byte (4 values); per block the partial sums and counts of
// each bin, 2 * kBins doubles.
__global__ void twoBitCodeKernel(const float *val, int64_t k, const TwoBitState *st, uint8_t *codes,
                                 double *partials) {
  __shared__ double shared[32];
  const float shift = st->shift, step = st->step;
  double sums[kBins] = {}, counts[kBins] = {};
  const int64_t bytes = (k + 3) / 4; // cpu::twoBitCodeBytes, host-only
  for (int64_t byte = first(); byte < bytes; byte += stride()) {
    uint8_t bits = 0;
    const int64_t end = min(k, 4 * byte + 4);
    for (int64_t j = 4 * byte; j < end; ++j) {
      const int code = twoBitCodeOf(val[j], shift, step);
      bits |= static_cast<uint8_t>(code << (2 * (j - 4 * byte)));
      const double c = val[j] - shift;
      for (int b = 0; b < kBins; ++b) { // registers, not a local array indexed by code
        sums[b] += b == code ? c : 0.0;
        counts[b] += b == code ? 1.0 : 0.0;
      }
    }
    codes[byte] = bits;
  }
  for (int b = 0; b < kBins; ++b) {
    const double s = blockSum(sums[b], shared), c = blockSum(counts[b], shared);
    if (threadIdx.x == 0) {
      partials[blockIdx.x * 2 * kBins + b] = s;
      partials[blockIdx.x * 2 * kBins + kBins + b] = c;
    }
  }
}

__global__ void twoBitTableKernel(const double *partials, int count, float *table) {
  __shared__ double shared[32];
  double sums[2 * kBins];
  finishSums(partials, count, 2 * kBins, sums, shared);
  if (threadIdx.x == 0)
    for (int b = 0; b < kBins; ++b)
      table[1 + b] = sums[kBins + b] > 0 ? static_cast<float>(sums[b] / sums[kBins + b]) : 0.f;
}

__device__ __forceinline__ int twoBitCode(const uint8_t *codes, int64_t j) {
  return (codes[j >> 2] >> (2 * (j & 3))) & 3;
}

__global__ void twoBitUnsentKernel(const float *val, int64_t k, const uint8_t *codes,
                                   const float *table, float *unsent) {
  const float shift = table[0];
  for (int64_t j = first(); j < k; j += stride())
    unsent[j] = val[j] - (table[1 + twoBitCode(codes, j)] + shift);
}

__global__ void twoBitDecodeKernel(const uint8_t *codes, const float *tables, int64_t ranks,
                                   int64_t k, float *val) {
  const int64_t bytes = (k + 3) / 4; // cpu::twoBitCodeBytes, host-only
  for (int64_t q = first(); q < ranks * k; q += stride()) {
    const int64_t r = q / k, j = q - r * k;
    const float *table = tables + r * cpu::kTwoBitTableFloats;
    val[q] = table[1 + twoBitCode(codes + r * bytes, j)] + table[0];
  }
}

struct TwoBitScratch {
  TwoBitState *state;
  double *sums; // kMaxPartials
  double *bins; // kMaxPartials * 2 * kBins
};
TwoBitScratch twoBitLayout(void *base, size_t *bytes) {
  Carve c(base);
  TwoBitScratch s{c.take<TwoBitState>(1), c.take<double>(kMaxPartials),
                  c.take<double>(kMaxPartials * 2 * kBins)};
  *bytes = c.used();
  return s;
}

Status checkQsgd(const char *fn, int64_t n, int levels, int64_t bucket) {
  if (n < 0)
    return invalid(fn, "n = " + std::to_string(n) + " is negative");
  if (levels < 1 || levels > cpu::kQsgdMaxLevels)
    return invalid(fn, "levels = " + std::to_string(levels) + " is outside [1, " +
                           std::to_string(cpu::kQsgdMaxLevels) + "]");
  if (bucket < 1)
    return invalid(fn, "bucket = " + std::to_string(bucket) + " is below 1");
  return Status::ok();
}

} // namespace

// ================================================================ entry points

size_t topkScratchBytes(int64_t n) {
  size_t bytes;
  topkLayout(nullptr, std::max<int64_t>(n, 0), &bytes);
  return bytes;
}

Status topkEncode(const float *grad, float *residual, int64_t n, int64_t k, void *scratch,
                  int32_t *idx, float *val, cudaStream_t stream) {
  if (Status s = checkSize("topkEncode", n, k); !s)
    return s;
  if (n == 0)
    return Status::ok();
  if (k > 0 && !scratch)
    return invalid("topkEncode", "no scratch");
  accumulateKernel<<<blocksFor(n), kThreads, 0, stream>>>(grad, residual, n);
  if (Status s = launched("accumulateKernel"); !s)
    return s;
  if (k == 0)
    return Status::ok();
  size_t bytes;
  const TopkScratch sc = topkLayout(scratch, n, &bytes);
  selectStartKernel<<<1, kRadix, 0, stream>>>(sc.select, static_cast<uint32_t>(k));
  if (Status s = launched("selectStartKernel"); !s)
    return s;
  if (Status s = radixSelect(AccKeys{residual}, n, sc.select, stream); !s)
    return s;
  return compact(ByKey{residual, sc.select}, EmitPair{residual, nullptr, idx, val}, n, sc.tiles,
                 stream);
}

size_t scatterAddPairsScratchBytes(int64_t ranks) {
  return static_cast<size_t>(std::max<int64_t>(ranks, 0)) * sizeof(unsigned long long);
}

Status scatterAddPairs(const int32_t *idx, const float *val, int64_t ranks, int64_t perRank,
                       float scale, float *out, int64_t n, void *scratch, int64_t *firstBad,
                       cudaStream_t stream) {
  if (ranks < 0 || perRank < 0)
    return invalid("scatterAddPairs", "ranks = " + std::to_string(ranks) +
                                          ", perRank = " + std::to_string(perRank) + ": negative");
  if (firstBad)
    if (Status s = memsetAsync(firstBad, 0xff, sizeof(int64_t), stream, "scatterAddPairs"); !s)
      return s; // all ones: -1, and the largest value for atomicMin
  if (ranks == 0 || perRank == 0)
    return Status::ok();
  if (!scratch)
    return invalid("scatterAddPairs", "no scratch");
  auto *prefix = static_cast<unsigned long long *>(scratch);
  auto *bad = reinterpret_cast<unsigned long long *>(firstBad);
  const int64_t count = ranks * perRank;
  fillKernel<<<blocksFor(ranks), kThreads, 0, stream>>>(prefix, ranks,
                                                        static_cast<unsigned long long>(perRank));
  if (Status s = launched("fillKernel"); !s)
    return s;
  increasingPrefixKernel<<<blocksFor(count), kThreads, 0, stream>>>(idx, ranks, perRank, prefix);
  if (Status s = launched("increasingPrefixKernel"); !s)
    return s;
  for (int64_t r = 0; r < ranks; ++r) {
    addPrefixKernel<<<blocksFor(perRank), kThreads, 0, stream>>>(idx, val, r, perRank, prefix,
                                                                 scale, out, n, bad);
    if (Status s = launched("addPrefixKernel"); !s)
      return s;
    addTailKernel<<<1, 1, 0, stream>>>(idx, val, r, perRank, prefix, scale, out, n, bad);
    if (Status s = launched("addTailKernel"); !s)
      return s;
  }
  return Status::ok();
}

size_t dgcScratchBytes(int64_t n) {
  size_t bytes;
  dgcLayout(nullptr, std::max<int64_t>(n, 0), &bytes);
  return bytes;
}

Status dgcEncode(const float *grad, float *u, float *v, int64_t n, int64_t k, float momentum,
                 void *scratch, int32_t *idx, float *val, int64_t *chosen, cudaStream_t stream) {
  if (Status s = checkSize("dgcEncode", n, k); !s)
    return s;
  if (k > 0 && !scratch)
    return invalid("dgcEncode", "no scratch");
  if (n > 0) {
    momentumKernel<<<blocksFor(n), kThreads, 0, stream>>>(grad, u, v, n, momentum);
    if (Status s = launched("momentumKernel"); !s)
      return s;
  }
  if (k == 0)
    return chosen ? memsetAsync(chosen, 0, sizeof(int64_t), stream, "dgcEncode") : Status::ok();

  size_t bytes;
  const DgcScratch sc = dgcLayout(scratch, n, &bytes);
  // The threshold: the least of the sample's top sampleK (as the CPU).
  const int64_t samples = std::max<int64_t>(1, (n + 99) / 100);
  const int64_t stride = std::max<int64_t>(1, n / samples);
  const int64_t sampled = (n - 1) / stride + 1;
  const int64_t sampleK = std::clamp<int64_t>((k * sampled + n - 1) / n, 1, sampled);
  selectStartKernel<<<1, kRadix, 0, stream>>>(sc.select, static_cast<uint32_t>(sampleK));
  if (Status s = launched("selectStartKernel"); !s)
    return s;
  if (Status s = radixSelect(StridedKeys{v, stride}, sampled, sc.select, stream); !s)
    return s;
  dgcStartKernel<<<1, 1, 0, stream>>>(sc.state, sc.select);
  if (Status s = launched("dgcStartKernel"); !s)
    return s;

  // count, decide(0), count, decide(1), ..., count, decide(10): the CPU's
  // first count and loop; once stopped, the kernels do nothing.
  for (int stage = 0; stage <= 10; ++stage) {
    dgcCountKernel<<<blocksFor(n), kThreads, 0, stream>>>(v, n, sc.state);
    if (Status s = launched("dgcCountKernel"); !s)
      return s;
    dgcDecideKernel<<<1, 1, 0, stream>>>(sc.state, k, stage);
    if (Status s = launched("dgcDecideKernel"); !s)
      return s;
  }
  dgcFallbackKernel<<<1, 1, 0, stream>>>(sc.state, k);
  if (Status s = launched("dgcFallbackKernel"); !s)
    return s;
  dgcCountKernel<<<blocksFor(n), kThreads, 0, stream>>>(v, n, sc.state);
  if (Status s = launched("dgcCountKernel"); !s)
    return s;

  dgcChooseKernel<<<1, kRadix, 0, stream>>>(sc.state, k, sc.select, chosen);
  if (Status s = launched("dgcChooseKernel"); !s)
    return s;
  if (Status s = radixSelect(AccKeys{v}, n, sc.select, stream); !s)
    return s;
  if (Status s = compact(ByKey{v, sc.select}, EmitPair{v, u, idx, val}, n, sc.tiles, stream); !s)
    return s;
  dgcPadKernel<<<blocksFor(k), kThreads, 0, stream>>>(sc.state, k, idx, val);
  return launched("dgcPadKernel");
}

size_t randomkScratchBytes(int64_t n, int64_t k) {
  size_t bytes;
  randomkLayout(nullptr, std::max<int64_t>(n, 0), std::max<int64_t>(k, 0), &bytes);
  return bytes;
}

Status randomkIndices(int64_t n, int64_t k, uint64_t seed, uint64_t step, void *scratch,
                      int32_t *idx, cudaStream_t stream) {
  if (Status s = checkSize("randomkIndices", n, k); !s)
    return s;
  if (k == 0)
    return Status::ok();
  if (k == n) { // every index, in order: no shuffle needed
    iotaKernel<<<blocksFor(n), kThreads, 0, stream>>>(idx, n);
    return launched("iotaKernel");
  }
  if (!scratch)
    return invalid("randomkIndices", "no scratch");
  size_t bytes;
  const RandomkScratch sc = randomkLayout(scratch, n, k, &bytes);
  iotaKernel<<<blocksFor(n), kThreads, 0, stream>>>(sc.order, n);
  if (Status s = launched("iotaKernel"); !s)
    return s;
  randomkDrawKernel<<<blocksFor(k), kThreads, 0, stream>>>(n, k, seed, step, sc.picks);
  if (Status s = launched("randomkDrawKernel"); !s)
    return s;
  randomkShuffleKernel<<<1, 1, 0, stream>>>(sc.order, sc.picks, k);
  if (Status s = launched("randomkShuffleKernel"); !s)
    return s;
  if (Status s = memsetAsync(sc.bits, 0, static_cast<size_t>(bitWords(n)) * sizeof(uint32_t),
                             stream, "randomkIndices");
      !s)
    return s;
  markKernel<<<blocksFor(k), kThreads, 0, stream>>>(sc.order, k, sc.bits);
  if (Status s = launched("markKernel"); !s)
    return s;
  return compact(ByBit{sc.bits}, EmitIndex{idx}, n, sc.tiles, stream);
}

Status randomkEncode(const float *grad, int64_t n, int64_t k, const int32_t *idx, float *val,
                     cudaStream_t stream) {
  if (Status s = checkSize("randomkEncode", n, k); !s)
    return s;
  if (k == 0)
    return Status::ok();
  const float scale = static_cast<float>(static_cast<double>(n) / static_cast<double>(k));
  gatherScaleKernel<<<blocksFor(k), kThreads, 0, stream>>>(grad, idx, k, scale, val);
  return launched("gatherScaleKernel");
}

Status orthogonalizeColumns(float *p, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows < 0 || cols < 0)
    return invalid("orthogonalizeColumns",
                   "negative shape " + std::to_string(rows) + " x " + std::to_string(cols));
  if (rows == 0 || cols == 0)
    return Status::ok();
  for (int64_t c = 0; c < cols; ++c) {
    normalizeColumnKernel<<<1, kThreads, 0, stream>>>(p, rows, cols, c);
    if (Status s = launched("normalizeColumnKernel"); !s)
      return s;
    if (c + 1 < cols) {
      projectOutKernel<<<static_cast<unsigned>(cols - c - 1), kThreads, 0, stream>>>(p, rows, cols,
                                                                                     c);
      if (Status s = launched("projectOutKernel"); !s)
        return s;
    }
  }
  return Status::ok();
}

size_t qsgdEncodeScratchBytes(int64_t n, int64_t bucket) {
  size_t bytes;
  bucketLayout(nullptr, std::max<int64_t>(n, 0), std::max<int64_t>(bucket, 1), &bytes);
  return bytes;
}

// stats[b] = statistic S of bucket b of x: one thread per short bucket (the
// CPU's order), a fixed tree of partial sums over longer ones.
template <BucketStat S>
Status bucketStats(const char *what, const float *x, int64_t n, int64_t bucket, void *scratch,
                   float *stats, cudaStream_t stream) {
  const int64_t buckets = cpu::bucketCount(n, bucket);
  if (bucket <= kQsgdSequentialBucket) {
    bucketSequentialKernel<S>
        <<<blocksFor(buckets), kThreads, 0, stream>>>(x, n, bucket, buckets, stats);
    return launched("bucketSequentialKernel");
  }
  if (!scratch)
    return invalid(what, "no scratch");
  size_t bytes;
  const BucketScratch sc = bucketLayout(scratch, n, bucket, &bytes);
  const int64_t chunks = chunksPerBucket(bucket);
  bucketPartialKernel<S><<<static_cast<unsigned>(buckets * chunks), kThreads, 0, stream>>>(
      x, n, bucket, chunks, sc.partials);
  if (Status s = launched("bucketPartialKernel"); !s)
    return s;
  bucketFinishKernel<S><<<static_cast<unsigned>(buckets), kThreads, 0, stream>>>(
      sc.partials, chunks, n, bucket, stats);
  return launched("bucketFinishKernel");
}

Status qsgdEncode(const float *grad, int64_t n, int levels, int64_t bucket, uint64_t seed,
                  uint64_t step, void *scratch, uint8_t *codes, float *norms, cudaStream_t stream) {
  if (Status s = checkQsgd("qsgdEncode", n, levels, bucket); !s)
    return s;
  if (n == 0)
    return Status::ok();
  if (Status s =
          bucketStats<BucketStat::L2Norm>("qsgdEncode", grad, n, bucket, scratch, norms, stream);
      !s)
    return s;
  qsgdCodeKernel<<<blocksFor((n + 3) / 4), kThreads, 0, stream>>>(grad, n, levels, bucket, seed,
                                                                  step, norms, codes);
  return launched("qsgdCodeKernel");
}

Status qsgdDecode(const uint8_t *codes, const float *norms, int64_t ranks, int64_t n, int levels,
                  int64_t bucket, float weight, float *out, cudaStream_t stream) {
  if (Status s = checkQsgd("qsgdDecode", n, levels, bucket); !s)
    return s;
  if (ranks < 0)
    return invalid("qsgdDecode", "ranks = " + std::to_string(ranks) + " is negative");
  if (n == 0 || ranks == 0)
    return Status::ok();
  qsgdDecodeKernel<<<blocksFor(n), kThreads, 0, stream>>>(codes, norms, ranks, n, levels, bucket,
                                                          weight, out);
  return launched("qsgdDecodeKernel");
}

size_t signEncodeScratchBytes(int64_t n, int64_t bucket) {
  size_t bytes;
  bucketLayout(nullptr, std::max<int64_t>(n, 0), std::max<int64_t>(bucket, 1), &bytes);
  return bytes;
}

Status accumulateMomentum(const float *grad, float *u, int64_t n, float momentum,
                          cudaStream_t stream) {
  if (n < 0)
    return invalid("accumulateMomentum", "n = " + std::to_string(n) + " is negative");
  if (n == 0)
    return Status::ok();
  momentumOnlyKernel<<<blocksFor(n), kThreads, 0, stream>>>(grad, u, n, momentum);
  return launched("momentumOnlyKernel");
}

Status adamUpdate(const float *grad, const float *gradScale, float *m, float *s, float *update,
                  int64_t n, float beta1, float beta2, float eps, int64_t step, float outScale,
                  cudaStream_t stream) {
  if (n < 0 || step < 1)
    return invalid("adamUpdate", "n = " + std::to_string(n) + ", step = " + std::to_string(step) +
                                     ": need n >= 0 and step >= 1");
  if (n == 0)
    return Status::ok();
  const auto [stepSize, bc2Sqrt] = cpu::adamFactors(outScale, beta1, beta2, step);
  adamUpdateKernel<<<blocksFor(n), kThreads, 0, stream>>>(grad, gradScale, m, s, update, n, beta1,
                                                          beta2, eps, stepSize, bc2Sqrt);
  return launched("adamUpdateKernel");
}

Status signEncode(const float *grad, float *residual, int64_t n, int64_t bucket, void *scratch,
                  uint8_t *codes, float *scales, cudaStream_t stream) {
  if (n < 1 || bucket < 1)
    return invalid("signEncode", "n = " + std::to_string(n) + ", bucket = " +
                                     std::to_string(bucket) + ": both must be at least 1");
  signAccumulateKernel<<<blocksFor(n), kThreads, 0, stream>>>(grad, residual, n);
  if (Status s = launched("signAccumulateKernel"); !s)
    return s;
  if (Status s = bucketStats<BucketStat::L1Mean>("signEncode", residual, n, bucket, scratch, scales,
                                                 stream);
      !s)
    return s;
  signCodeKernel<<<blocksFor(cpu::signCodeBytes(n)), kThreads, 0, stream>>>(residual, n, bucket,
                                                                            scales, codes);
  return launched("signCodeKernel");
}

Status signDecode(const uint8_t *codes, const float *scales, int64_t ranks, int64_t n,
                  int64_t bucket, float weight, float *out, cudaStream_t stream) {
  if (ranks < 0 || n < 0 || bucket < 1)
    return invalid("signDecode", "ranks = " + std::to_string(ranks) + ", n = " + std::to_string(n) +
                                     ", bucket = " + std::to_string(bucket));
  if (ranks == 0 || n == 0)
    return Status::ok();
  signDecodeKernel<<<blocksFor(n), kThreads, 0, stream>>>(codes, scales, ranks, n, bucket, weight,
                                                          out);
  return launched("signDecodeKernel");
}

size_t twoBitEncodeScratchBytes(int64_t k) {
  size_t bytes;
  twoBitLayout(nullptr, &bytes);
  return bytes;
}

Status twoBitEncode(const float *val, int64_t k, float rangeInSigmas, void *scratch, uint8_t *codes,
                    float *table, float *unsent, cudaStream_t stream) {
  if (k < 1)
    return invalid("twoBitEncode", "k = " + std::to_string(k) + " is below 1");
  if (!scratch)
    return invalid("twoBitEncode", "no scratch");
  size_t bytes;
  const TwoBitScratch sc = twoBitLayout(scratch, &bytes);
  const unsigned blocks = partialBlocks(k);
  twoBitSumKernel<<<blocks, kThreads, 0, stream>>>(val, k, sc.sums);
  if (Status s = launched("twoBitSumKernel"); !s)
    return s;
  twoBitShiftKernel<<<1, kThreads, 0, stream>>>(sc.sums, static_cast<int>(blocks), k, sc.state,
                                                table);
  if (Status s = launched("twoBitShiftKernel"); !s)
    return s;
  twoBitSquaresKernel<<<blocks, kThreads, 0, stream>>>(val, k, sc.state, sc.sums);
  if (Status s = launched("twoBitSquaresKernel"); !s)
    return s;
  twoBitStepKernel<<<1, kThreads, 0, stream>>>(sc.sums, static_cast<int>(blocks), k, rangeInSigmas,
                                               sc.state);
  if (Status s = launched("twoBitStepKernel"); !s)
    return s;
  const unsigned codeBlocks = partialBlocks(cpu::twoBitCodeBytes(k));
  twoBitCodeKernel<<<codeBlocks, kThreads, 0, stream>>>(val, k, sc.state, codes, sc.bins);
  if (Status s = launched("twoBitCodeKernel"); !s)
    return s;
  twoBitTableKernel<<<1, kThreads, 0, stream>>>(sc.bins, static_cast<int>(codeBlocks), table);
  if (Status s = launched("twoBitTableKernel"); !s)
    return s;
  if (!unsent)
    return Status::ok();
  twoBitUnsentKernel<<<blocksFor(k), kThreads, 0, stream>>>(val, k, codes, table, unsent);
  return launched("twoBitUnsentKernel");
}

Status twoBitDecode(const uint8_t *codes, const float *tables, int64_t ranks, int64_t k, float *val,
                    cudaStream_t stream) {
  if (ranks < 0 || k < 0)
    return invalid("twoBitDecode", "ranks = " + std::to_string(ranks) +
                                       ", k = " + std::to_string(k) + ": negative");
  if (ranks == 0 || k == 0)
    return Status::ok();
  twoBitDecodeKernel<<<blocksFor(ranks * k), kThreads, 0, stream>>>(codes, tables, ranks, k, val);
  return launched("twoBitDecodeKernel");
}

} // namespace sbpflow::cuda
