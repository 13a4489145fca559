// CPU kernels on local (per-rank) row-major fp32 buffers. Each is checked
// against a double-precision reference in tests/kernels/. GEMM goes through
// OpenBLAS; the rest are plain loops the compiler vectorises.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace sbpflow::cpu {

// c[m,n] = op(a) x op(b); op(a) is [m,k], op(b) is [k,n]. a is stored [m,k]
// (or [k,m] when transA), b is stored [k,n] (or [n,k] when transB).
void matmul(const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k, bool transA,
            bool transB);

// y[i,j] = x[i,j] + bias[j]
void biasAdd(const float *x, const float *bias, float *y, int64_t rows, int64_t cols);
void add(const float *a, const float *b, float *y, int64_t n);
// y = a - b (local SGD's pseudo-gradient: the anchor minus the parameters)
void subtract(const float *a, const float *b, float *y, int64_t n);
// y = x * factor
void scale(const float *x, float factor, float *y, int64_t n);
void relu(const float *x, float *y, int64_t n);
// dx = y > 0 ? dy : 0
void reluGrad(const float *dy, const float *y, float *dx, int64_t n);

// loss[i] = -log softmax(logits[i,:])[labels[i]]; 0 where labels[i] < 0
// (padding). A label >= classes is an error: returns the first bad row, or -1.
int64_t softmaxXent(const float *logits, const int32_t *labels, float *loss, int64_t rows,
                    int64_t classes);
// dlogits[i,:] = (softmax(logits[i,:]) - onehot(labels[i])) * dloss[i]; 0 rows
// where labels[i] < 0.
void softmaxXentGrad(const float *logits, const int32_t *labels, const float *dloss, float *dlogits,
                     int64_t rows, int64_t classes);

// *out = sum(x) / count (count is the global element count, so a split input
// yields a partial sum).
void mean(const float *x, float *out, int64_t n, int64_t count);
// y[i] = *dy / count for all i
void meanGrad(const float *dy, float *y, int64_t n, int64_t count);
// y[j] = sum_i x[i,j]
void reduceRows(const float *x, float *y, int64_t rows, int64_t cols);
// *out = number of rows whose argmax equals the label (labels < 0 skipped)
void countCorrect(const float *logits, const int32_t *labels, float *out, int64_t rows,
                  int64_t classes);
void fill(float *y, float value, int64_t n);

// bfloat16 (the top 16 bits of an IEEE f32) stored as uint16_t. toBf16
// rounds to nearest, ties to even, as IEEE rounding does: values past the
// largest bf16 round to +-inf, denormals round like any other value, a NaN
// stays a quiet NaN of the same sign. fromBf16 is exact. x and y must not
// overlap.
void toBf16(const float *x, uint16_t *y, int64_t n);
void fromBf16(const uint16_t *x, float *y, int64_t n);

// toBf16 of one value, inline so that kernels which round a result to bf16
// on the way (biasGelu's pre-activation) round exactly as toBf16 does.
inline uint16_t toBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  // Adding 0x7fff plus the lowest kept bit carries into the kept half
  // exactly when the dropped half is above the tie, or at it with an odd
  // kept half. The carry may run into the exponent: the largest values
  // become inf, as IEEE rounding gives. A NaN is truncated instead (the
  // carry could turn it into inf) with its quiet bit set, so that a NaN
  // whose payload lies in the dropped half stays a NaN.
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quietNan = (bits >> 16) | 0x0040u;
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? quietNan : rounded);
}

// PyTorch's SGD: g' = g * gradScale + wd * w; v = momentum * v + g';
// w -= lr * v (v == nullptr when momentum == 0: w -= lr * g'). gradScale is
// the gradient-clipping factor (1 without clipping).
void sgdMomentum(float *w, float *v, const float *g, int64_t n, float lr, float momentum,
                 float weightDecay, float gradScale = 1.0f);

// The divisor of local SGD's outer step, replicas * gapPenalty rounded to
// f32 once, on the host: cpu::outerStep and cuda::outerStep divide by the
// same bits.
inline float outerDivisor(int replicas, float gapPenalty) {
  return static_cast<float>(static_cast<double>(replicas) * gapPenalty);
}

// Local SGD's outer step (plan.fbs OuterAttrs) on n elements, `sum` the
// replicas' summed pseudo-gradients: d = sum / outerDivisor(replicas,
// gapPenalty); with a momentum buffer m, m = momentum * m + d, clamped to
// [-clip, clip] when clip > 0 (CO2), and the update is d + momentum * m
// (Nesterov) or m; without one (m == nullptr: momentum and clip unused) the
// update is d. anchor -= lr * update; param = anchor; with keepAnchor (CO2's
// exchange, while the anchor is still read) param = anchor - lr * update and
// the anchor stays; m updates either way. Each operation rounds in f32 in
// this order, no FMA (baseline x86-64), as cuda::outerStep does: CPU and GPU
// replicas keep the same bits.
void outerStep(float *param, float *anchor, float *m, const float *sum, int64_t n, float lr,
               float momentum, bool nesterov, int replicas, float gapPenalty, float clip,
               bool keepAnchor);

// Copies the sub-block `region` of a row-major tensor `src` with shape
// `srcShape` into the dense `dst` (B -> S slice), or back (scatter = true,
// for gather-style boxing). rank = number of axes.
void copyRegion(const float *src, const int64_t *srcShape, const int64_t *regionBegin,
                const int64_t *regionSize, int rank, float *dst);
void copyIntoRegion(const float *src, const int64_t *regionBegin, const int64_t *regionSize,
                    float *dst, const int64_t *dstShape, int rank);
// As above, for elements of `elementBytes` bytes (bf16 moves as it is).
void copyRegion(const void *src, const int64_t *srcShape, const int64_t *regionBegin,
                const int64_t *regionSize, int rank, void *dst, size_t elementBytes);
void copyIntoRegion(const void *src, const int64_t *regionBegin, const int64_t *regionSize,
                    void *dst, const int64_t *dstShape, int rank, size_t elementBytes);

// Sets OpenBLAS's thread count for this process.
void setBlasThreads(int threads);

// The OPENBLAS_CORETYPE this process should run with, or "" when OpenBLAS's
// own choice is right or the user chose one. OpenBLAS 0.3.21 (Debian 12) runs
// its Haswell (AVX2) kernels on AMD Zen 4 although the CPU has AVX-512; its
// SkylakeX kernels do our GEMMs about twice as fast there (measured by
// bench/). OpenBLAS reads the variable when it loads, so a process that gets a
// non-empty answer sets it and re-executes itself (sbpflow-worker does).
std::string preferredBlasCoreType();
// The rule, apart from the machine: `detected` is openblas_get_corename(),
// `userChoice` the OPENBLAS_CORETYPE already set (or null).
std::string preferredBlasCoreType(const std::string &detected, bool hasAvx512,
                                  const char *userChoice);

} // namespace sbpflow::cpu
