// CPU kernels declared in Transformer.h: row-wise passes over contiguous memory,
// written so GCC vectorises them (fixed-width lane blocks stand in for the
// float reductions it will not reorder by itself).
#include "kernels/cpu/Transformer.h"
#include "kernels/Philox.h"
#include "kernels/cpu/Adam.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Vectorize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace sbpflow::cpu {

#define SBPFLOW_INLINE inline __attribute__((always_inline))

namespace {

// Lanes of the explicit reductions: one AVX-512 register, two AVX ones.
constexpr int kLanes = 16;

int64_t roundUp(int64_t n, int64_t to) { return (n + to - 1) / to * to; }

SBPFLOW_INLINE float reduceLanes(const float *acc) {
  float s = 0.f;
  for (int l = 0; l < kLanes; ++l)
    s += acc[l];
  return s;
}

// Calls f(j, l) for j = 0, 1, ..., n - 1 in order, l = j % kLanes being the
// accumulator lane of j: whole groups of kLanes (which vectorise), then the
// tail.
template <class F> SBPFLOW_INLINE void forLanes(int64_t n, F &&f) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l)
      f(j + l, l);
  for (int l = 0; j + l < n; ++l)
    f(j + l, l);
}

SBPFLOW_INLINE float sum(const float *x, int64_t n) {
  float acc[kLanes] = {};
  forLanes(n, [&](int64_t j, int l) { acc[l] += x[j]; });
  return reduceLanes(acc);
}

SBPFLOW_INLINE float dot(const float *a, const float *b, int64_t n) {
  float acc[kLanes] = {};
  forLanes(n, [&](int64_t j, int l) { acc[l] += a[j] * b[j]; });
  return reduceLanes(acc);
}

// Sum of (x - c)^2: the second pass of a two-pass variance.
SBPFLOW_INLINE float centredSquares(const float *x, float c, int64_t n) {
  float acc[kLanes] = {};
  forLanes(n, [&](int64_t j, int l) {
    const float d = x[j] - c;
    acc[l] += d * d;
  });
  return reduceLanes(acc);
}

SBPFLOW_INLINE float maxOf(const float *x, int64_t n) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; ++l)
    acc[l] = x[0];
  forLanes(n, [&](int64_t j, int l) { acc[l] = x[j] > acc[l] ? x[j] : acc[l]; });
  float m = acc[0];
  for (int l = 1; l < kLanes; ++l)
    m = acc[l] > m ? acc[l] : m;
  return m;
}

template <typename To, typename From> SBPFLOW_INLINE To bitCast(From from) {
  static_assert(sizeof(To) == sizeof(From));
  To to;
  std::memcpy(&to, &from, sizeof(To));
  return to;
}

// exp(x) for x <= 88.3, within about 1 ulp (Cephes' expf): x = n ln2 + r, |r| <=
// ln2 / 2, a degree-6 polynomial for e^r, 2^n built in the exponent bits.
// Branch-free so loops that call it vectorise (libm's expf does not); below
// -88 it flushes to 0, so exp(-inf) = 0 as the masked softmax needs.
SBPFLOW_INLINE float fastExp(float x) {
  constexpr float kShift = 12582912.f; // 1.5 * 2^23: adding it rounds to an integer
  const float xc = x < -88.f ? -88.f : (x > 88.3f ? 88.3f : x);
  const float t = xc * 1.44269504088896341f + kShift;
  const float n = t - kShift;
  const int32_t ni = bitCast<int32_t>(t) - bitCast<int32_t>(kShift);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  // ni + 127 >= 0 here; at -127 (x near -88) the scale is 0 and so is exp.
  const float scale = bitCast<float>(static_cast<int32_t>(static_cast<uint32_t>(ni + 127) << 23));
  const float e = p * scale;
  return x < -88.f ? 0.f : e;
}

// Phi(x) = P(N(0,1) <= x) = erfc(-x / sqrt(2)) / 2. For z >= 0,
// erfc(z) = t Q(t) exp(-z^2) with t = 1 / (1 + 0.4 z): Q is smooth on (0, 1]
// and here a degree-8 polynomial fitted to erfc(z) exp(z^2) / t for z in
// [0, 10] (weighted least squares towards minimax relative error, 6e-8 in
// double). Both tails keep their relative accuracy, so GELU of a negative x
// stays accurate where 1 + erf would cancel, and the polynomial (after the
// division) and the exponential (from x alone) evaluate in parallel.
SBPFLOW_INLINE float normalCdf(float x) {
  const float z = (x < 0.f ? -x : x) * 0.70710678118654752f;
  const float t = 1.f / (1.f + 0.4f * z);
  const float t2 = t * t, t4 = t2 * t2;
  // Estrin's scheme: a shorter dependency chain than Horner's.
  const float c01 = 2.256342322e-01f + 2.264430821e-01f * t;
  const float c23 = 2.018878013e-01f + 1.933923662e-01f * t;
  const float c45 = 7.975854725e-02f + 8.796126395e-02f * t;
  const float c67 = 8.399004489e-02f - 1.403205991e-01f * t;
  const float poly = (c01 + c23 * t2) + (c45 + c67 * t2) * t4 + 4.125332460e-02f * (t4 * t4);
  // -z^2 as -(x / 2) x: x / 2 is exact, so the exponent rounds once (with FMA).
  const float halfErfc = 0.5f * t * poly * fastExp(-(0.5f * x) * x);
  return x < 0.f ? halfErfc : 1.f - halfErfc;
}

// The one GELU expression of gelu and biasGelu, so that they agree bit for
// bit. A NaN passes through as it is: x * normalCdf(x) would give it the sign
// of whichever operand the compiled code happens to put first, which differs
// between the vectorised loop and its scalar tail.
SBPFLOW_INLINE float geluOf(float x) {
  const float y = x * normalCdf(x);
  return x == x ? y : x;
}

// x rounded to bf16 as toBf16 rounds it, widened back (exactly) to f32.
SBPFLOW_INLINE float roundedToBf16(float x) {
  return bitCast<float>(static_cast<uint32_t>(toBf16(x)) << 16);
}

template <bool PreBf16>
SBPFLOW_INLINE void biasGeluRows(const float *x, const float *bias, float *pre, float *y,
                                 int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    const float *xr = x + i * cols;
    float *pr = pre + i * cols;
    float *yr = y + i * cols;
    SBPFLOW_ELEMENTWISE
    for (int64_t j = 0; j < cols; ++j) {
      float p = xr[j] + bias[j];
      if constexpr (PreBf16)
        p = roundedToBf16(p);
      pr[j] = p;
      yr[j] = geluOf(p);
    }
  }
}

// Query rows per block of the attention kernels: each loaded row of k or v
// feeds kRows rows of accumulators.
constexpr int kRows = 4;

// out[r * ldo + c] = sum_k a[r * lda + k] * m[k * stride + c] for r < kRows,
// c < W. The kRows x W accumulators stay in registers (8 AVX-512 or 16 AVX
// registers at W = 32) and every m row is loaded once for all kRows rows.
template <int W>
SBPFLOW_INLINE void rowsTimesMatrixBlock(const float *a, int64_t lda, int64_t kdim, const float *m,
                                         int64_t stride, float *out, int64_t ldo) {
  float acc[kRows][W] = {};
  for (int64_t k = 0; k < kdim; ++k) {
    const float *mk = m + k * stride;
    // Unrolled, so GCC vectorises along c (at W = 16 it would otherwise pick
    // the r loop: 4-wide vectors).
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      const float ar = a[r * lda + k];
      for (int c = 0; c < W; ++c)
        acc[r][c] += ar * mk[c];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < W; ++c)
      out[r * ldo + c] = acc[r][c];
}

// The same for any `width` that is a multiple of kLanes; every m row must be
// readable up to `width`.
SBPFLOW_INLINE void rowsTimesMatrix(const float *a, int64_t lda, int64_t kdim, const float *m,
                                    int64_t stride, int64_t width, float *out, int64_t ldo) {
  int64_t c = 0;
  for (; c + 2 * kLanes <= width; c += 2 * kLanes)
    rowsTimesMatrixBlock<2 * kLanes>(a, lda, kdim, m + c, stride, out + c, ldo);
  if (c < width)
    rowsTimesMatrixBlock<kLanes>(a, lda, kdim, m + c, stride, out + c, ldo);
}

// out[j * ldo + c] += sum_r coef[r * ldc + j] * b[r * ldb + c] for j < n,
// c < W: the rank-kRows update of dk and dv by one block of query rows.
template <int W>
SBPFLOW_INLINE void rankUpdateBlock(const float *coef, int64_t ldc, const float *b, int64_t ldb,
                                    int64_t n, float *out, int64_t ldo) {
  float br[kRows][W];
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < W; ++c)
      br[r][c] = b[r * ldb + c];
  for (int64_t j = 0; j < n; ++j) {
    float *o = out + j * ldo;
    float acc[W];
    for (int c = 0; c < W; ++c)
      acc[c] = o[c];
#pragma GCC unroll 4
    for (int r = 0; r < kRows; ++r) {
      const float cr = coef[r * ldc + j];
      for (int c = 0; c < W; ++c)
        acc[c] += cr * br[r][c];
    }
    for (int c = 0; c < W; ++c)
      o[c] = acc[c];
  }
}

SBPFLOW_INLINE void rankUpdate(const float *coef, int64_t ldc, const float *b, int64_t ldb,
                               int64_t n, int64_t width, float *out, int64_t ldo) {
  int64_t c = 0;
  for (; c + 2 * kLanes <= width; c += 2 * kLanes)
    rankUpdateBlock<2 * kLanes>(coef, ldc, b + c, ldb, n, out + c, ldo);
  if (c < width)
    rankUpdateBlock<kLanes>(coef, ldc, b + c, ldb, n, out + c, ldo);
}

// y = softmax(x) over n > 0 elements (x == y allowed).
SBPFLOW_INLINE void softmaxRow(const float *x, float *y, int64_t n) {
  const float mx = maxOf(x, n);
  SBPFLOW_ELEMENTWISE
  for (int64_t j = 0; j < n; ++j)
    y[j] = fastExp(x[j] - mx);
  const float inv = 1.f / sum(y, n);
  for (int64_t j = 0; j < n; ++j)
    y[j] *= inv;
}

// Row r of a block of attention scores (query row i0 + r, causal prefix
// `len`) becomes its softmax weights; entries [len, width) become 0.
SBPFLOW_INLINE void causalSoftmaxRow(float *p, int64_t len, int64_t width) {
  if (len > 0)
    softmaxRow(p, p, len);
  std::fill(p + std::max<int64_t>(len, 0), p + width, 0.f);
}

// The scratch of one (batch, head) pair. Rows are padded to whole lane blocks
// (zeros in the padding) so every block load stays in bounds.
struct AttentionScratch {
  int64_t tp, dp; // T and D rounded up to kLanes
  float *kT;      // [D, tp]: k transposed, so scores are rows times a matrix
  float *vT;      // [D, tp]: v transposed (grad: dP = dy vᵀ)
  float *rows;    // [T, dp]: v rows (forward), k rows (grad: dq = dS k)
  float *dks;     // [T, dp]: dk of this head, accumulated over query blocks
  float *dvs;     // [T, dp]
  float *qb;      // [kRows, dp]: scale * q of the query block
  float *dyb;     // [kRows, dp]
  float *ob;      // [kRows, dp]: y or dq of the block
  float *p;       // [kRows, tp]: attention weights of the block
  float *ds;      // [kRows, tp]: dP, then dS

  AttentionScratch(float *s, int64_t T, int64_t D)
      : tp(roundUp(T, kLanes)), dp(roundUp(D, kLanes)) {
    kT = s;
    vT = kT + D * tp;
    rows = vT + D * tp;
    dks = rows + T * dp;
    dvs = dks + T * dp;
    qb = dvs + T * dp;
    dyb = qb + kRows * dp;
    ob = dyb + kRows * dp;
    p = ob + kRows * dp;
    ds = p + kRows * tp;
  }
  static int64_t floats(int64_t T, int64_t D) {
    const int64_t tp = roundUp(T, kLanes), dp = roundUp(D, kLanes);
    return 2 * D * tp + 3 * T * dp + 3 * kRows * dp + 2 * kRows * tp;
  }
};

// Copies rows [T, D] with row stride `ld` into dst[T, dp], zero padded.
SBPFLOW_INLINE void packRows(const float *src, int64_t ld, int64_t T, int64_t D, int64_t dp,
                             float *dst) {
  for (int64_t j = 0; j < T; ++j) {
    std::memcpy(dst + j * dp, src + j * ld, static_cast<size_t>(D) * sizeof(float));
    std::fill(dst + j * dp + D, dst + (j + 1) * dp, 0.f);
  }
}

// Copies rows [T, D] with row stride `ld` into dst[D, tp] (transposed), zero padded.
SBPFLOW_INLINE void packTransposed(const float *src, int64_t ld, int64_t T, int64_t D, int64_t tp,
                                   float *dst) {
  for (int64_t d = 0; d < D; ++d) {
    float *row = dst + d * tp;
    for (int64_t j = 0; j < T; ++j)
      row[j] = src[j * ld + d];
    std::fill(row + T, row + tp, 0.f);
  }
}

// Copies `nr` rows of D values (row stride `ld`) times `scale` into the block
// dst[kRows, dp]; the rest of the block is 0.
SBPFLOW_INLINE void packBlock(const float *src, int64_t ld, int64_t nr, int64_t D, int64_t dp,
                              float scale, float *dst) {
  std::fill(dst, dst + kRows * dp, 0.f);
  for (int64_t r = 0; r < nr; ++r)
    for (int64_t d = 0; d < D; ++d)
      dst[r * dp + d] = src[r * ld + d] * scale;
}

SBPFLOW_CLONES
void dropoutRow(const float *x, float *y, int64_t n, uint64_t g0, uint64_t threshold, float scale,
                uint64_t seed, uint32_t batch, uint32_t epoch) {
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  SBPFLOW_ELEMENTWISE
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t g = g0 + static_cast<uint64_t>(j);
    const uint32_t r = sbpflow::philox4x32_10(static_cast<uint32_t>(g),
                                              static_cast<uint32_t>(g >> 32), batch, epoch, k0, k1)
                           .word[0];
    const float v = x[j] * scale;
    y[j] = r >= threshold ? v : 0.f;
  }
}

} // namespace

int64_t embedding(const float *table, int64_t tableRows, int64_t rowBegin, int64_t vocab,
                  const int32_t *ids, int64_t n, int64_t dim, float *out) {
  int64_t firstBad = -1;
  const size_t rowBytes = static_cast<size_t>(dim) * sizeof(float);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t id = ids[r];
    float *o = out + r * dim;
    if (id < 0 || id >= vocab) {
      if (firstBad < 0)
        firstBad = r;
      std::memset(o, 0, rowBytes);
      continue;
    }
    const int64_t local = id - rowBegin;
    // Rows of another rank's vocabulary slice contribute 0 here: the partial
    // results of the ranks sum to the full lookup.
    if (local >= 0 && local < tableRows)
      std::memcpy(o, table + local * dim, rowBytes);
    else
      std::memset(o, 0, rowBytes);
  }
  return firstBad;
}

SBPFLOW_CLONES
void embeddingGrad(const float *dy, const int32_t *ids, int64_t n, int64_t dim, float *dtable,
                   int64_t tableRows, int64_t rowBegin) {
  std::fill(dtable, dtable + tableRows * dim, 0.f);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t local = static_cast<int64_t>(ids[r]) - rowBegin;
    if (local < 0 || local >= tableRows)
      continue;
    float *d = dtable + local * dim;
    const float *g = dy + r * dim;
    for (int64_t j = 0; j < dim; ++j)
      d[j] += g[j];
  }
}

SBPFLOW_CLONES
void layerNorm(const float *x, const float *gamma, const float *beta, float *y, int64_t rows,
               int64_t cols, float eps) {
  if (cols <= 0)
    return;
  const float invCols = 1.f / static_cast<float>(cols);
  for (int64_t i = 0; i < rows; ++i) {
    const float *xr = x + i * cols;
    float *yr = y + i * cols;
    const float mean = sum(xr, cols) * invCols;
    // Two passes: E[x^2] - mean^2 cancels badly for rows far from 0.
    const float var = centredSquares(xr, mean, cols) * invCols;
    const float rstd = 1.f / std::sqrt(var + eps);
    SBPFLOW_ELEMENTWISE
    for (int64_t j = 0; j < cols; ++j)
      yr[j] = (xr[j] - mean) * rstd * gamma[j] + beta[j];
  }
}

SBPFLOW_CLONES
void layerNormGrad(const float *dy, const float *x, const float *gamma, float *dx, float *dgamma,
                   float *dbeta, int64_t rows, int64_t cols, float eps) {
  std::fill(dgamma, dgamma + cols, 0.f);
  std::fill(dbeta, dbeta + cols, 0.f);
  if (cols <= 0)
    return;
  const float invCols = 1.f / static_cast<float>(cols);
  for (int64_t i = 0; i < rows; ++i) {
    const float *xr = x + i * cols, *dyr = dy + i * cols;
    float *dxr = dx + i * cols;
    const float mean = sum(xr, cols) * invCols;
    const float rstd = 1.f / std::sqrt(centredSquares(xr, mean, cols) * invCols + eps);
    // With xhat = (x - mean) rstd and g = dy gamma:
    // dx = rstd (g - mean(g) - xhat mean(g xhat)).
    float accG[kLanes] = {}, accGX[kLanes] = {};
    forLanes(cols, [&](int64_t j, int l) {
      const float xhat = (xr[j] - mean) * rstd;
      const float g = dyr[j] * gamma[j];
      accG[l] += g;
      accGX[l] += g * xhat;
      dgamma[j] += dyr[j] * xhat;
      dbeta[j] += dyr[j];
    });
    const float meanG = reduceLanes(accG) * invCols;
    const float meanGX = reduceLanes(accGX) * invCols;
    SBPFLOW_ELEMENTWISE
    for (int64_t j = 0; j < cols; ++j) {
      const float xhat = (xr[j] - mean) * rstd;
      dxr[j] = rstd * (dyr[j] * gamma[j] - meanG - xhat * meanGX);
    }
  }
}

SBPFLOW_CLONES
void gelu(const float *x, float *y, int64_t n) {
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i)
    y[i] = geluOf(x[i]);
}

SBPFLOW_CLONES
void biasGelu(const float *x, const float *bias, float *pre, float *y, int64_t rows, int64_t cols,
              bool preBf16) {
  if (preBf16)
    biasGeluRows<true>(x, bias, pre, y, rows, cols);
  else
    biasGeluRows<false>(x, bias, pre, y, rows, cols);
}

SBPFLOW_CLONES
void geluGrad(const float *dy, const float *x, float *dx, int64_t n) {
  // d/dx [x Phi(x)] = Phi(x) + x phi(x), phi the standard normal density.
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    const float pdf = 0.39894228040143268f * fastExp(-0.5f * xi * xi);
    dx[i] = dy[i] * (normalCdf(xi) + xi * pdf);
  }
}

SBPFLOW_CLONES
void softmax(const float *x, float *y, int64_t rows, int64_t cols) {
  if (cols <= 0)
    return;
  for (int64_t i = 0; i < rows; ++i)
    softmaxRow(x + i * cols, y + i * cols, cols);
}

SBPFLOW_CLONES
void softmaxGrad(const float *dy, const float *y, float *dx, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    const float *dyr = dy + i * cols, *yr = y + i * cols;
    float *dxr = dx + i * cols;
    const float s = dot(dyr, yr, cols);
    SBPFLOW_ELEMENTWISE
    for (int64_t j = 0; j < cols; ++j)
      dxr[j] = yr[j] * (dyr[j] - s);
  }
}

int64_t causalAttentionScratch(int64_t T, int64_t headDim) {
  return AttentionScratch::floats(T, headDim);
}

// Per (batch, head), query rows go in blocks of kRows; a block computes only
// the causal prefix of its last row (j < i0 + kRows): scores as the block of
// scaled q rows times the packed kᵀ, softmax per row, then weights times the
// packed v. Everything stays in L1 for T = 64, D = 32.
SBPFLOW_CLONES
void causalAttention(const float *q, const float *k, const float *v, float *y, int64_t batch,
                     int64_t T, int64_t heads, int64_t headDim, float *scratch) {
  const int64_t D = headDim, C = heads * headDim;
  if (T <= 0 || D <= 0)
    return;
  AttentionScratch s(scratch, T, D);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t off = b * T * C + h * D;
      packTransposed(k + off, C, T, D, s.tp, s.kT);
      packRows(v + off, C, T, D, s.dp, s.rows);
      for (int64_t i0 = 0; i0 < T; i0 += kRows) {
        const int64_t nr = std::min<int64_t>(kRows, T - i0), kmax = i0 + nr;
        const int64_t width = roundUp(kmax, kLanes);
        packBlock(q + off + i0 * C, C, nr, D, s.dp, scale, s.qb);
        rowsTimesMatrix(s.qb, s.dp, D, s.kT, s.tp, width, s.p, s.tp);
        for (int64_t r = 0; r < kRows; ++r)
          causalSoftmaxRow(s.p + r * s.tp, r < nr ? i0 + r + 1 : 0, kmax);
        rowsTimesMatrix(s.p, s.tp, kmax, s.rows, s.dp, s.dp, s.ob, s.dp);
        for (int64_t r = 0; r < nr; ++r)
          std::memcpy(y + off + (i0 + r) * C, s.ob + r * s.dp,
                      static_cast<size_t>(D) * sizeof(float));
      }
    }
}

SBPFLOW_CLONES
void causalAttentionGrad(const float *dy, const float *q, const float *k, const float *v, float *dq,
                         float *dk, float *dv, int64_t batch, int64_t T, int64_t heads,
                         int64_t headDim, float *scratch) {
  const int64_t D = headDim, C = heads * headDim;
  if (T <= 0 || D <= 0)
    return;
  AttentionScratch s(scratch, T, D);
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  float *ks = s.rows; // k rows, for dq = dS k
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t off = b * T * C + h * D;
      packTransposed(k + off, C, T, D, s.tp, s.kT);
      packTransposed(v + off, C, T, D, s.tp, s.vT);
      packRows(k + off, C, T, D, s.dp, ks);
      std::fill(s.dks, s.dks + T * s.dp, 0.f);
      std::fill(s.dvs, s.dvs + T * s.dp, 0.f);
      for (int64_t i0 = 0; i0 < T; i0 += kRows) {
        const int64_t nr = std::min<int64_t>(kRows, T - i0), kmax = i0 + nr;
        const int64_t width = roundUp(kmax, kLanes);
        packBlock(q + off + i0 * C, C, nr, D, s.dp, scale, s.qb);
        packBlock(dy + off + i0 * C, C, nr, D, s.dp, 1.f, s.dyb);
        // Recompute the weights P of the block.
        rowsTimesMatrix(s.qb, s.dp, D, s.kT, s.tp, width, s.p, s.tp);
        for (int64_t r = 0; r < kRows; ++r)
          causalSoftmaxRow(s.p + r * s.tp, r < nr ? i0 + r + 1 : 0, kmax);
        // dP = dy vᵀ; dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij').
        rowsTimesMatrix(s.dyb, s.dp, D, s.vT, s.tp, width, s.ds, s.tp);
        for (int64_t r = 0; r < kRows; ++r) {
          float *pr = s.p + r * s.tp, *dsr = s.ds + r * s.tp;
          const int64_t len = r < nr ? i0 + r + 1 : 0;
          const float delta = dot(pr, dsr, len);
          SBPFLOW_ELEMENTWISE
          for (int64_t j = 0; j < len; ++j)
            dsr[j] = pr[j] * (dsr[j] - delta);
          std::fill(dsr + len, dsr + kmax, 0.f);
        }
        // dq = scale dS k; dk += dSᵀ (scale q); dv += Pᵀ dy.
        rowsTimesMatrix(s.ds, s.tp, kmax, ks, s.dp, s.dp, s.ob, s.dp);
        for (int64_t r = 0; r < nr; ++r) {
          float *dqr = dq + off + (i0 + r) * C;
          const float *o = s.ob + r * s.dp;
          for (int64_t d = 0; d < D; ++d)
            dqr[d] = o[d] * scale;
        }
        rankUpdate(s.ds, s.tp, s.qb, s.dp, kmax, s.dp, s.dks, s.dp);
        rankUpdate(s.p, s.tp, s.dyb, s.dp, kmax, s.dp, s.dvs, s.dp);
      }
      // Written after every read of this (batch, head): outputs may alias inputs.
      for (int64_t j = 0; j < T; ++j) {
        std::memcpy(dk + off + j * C, s.dks + j * s.dp, static_cast<size_t>(D) * sizeof(float));
        std::memcpy(dv + off + j * C, s.dvs + j * s.dp, static_cast<size_t>(D) * sizeof(float));
      }
    }
}

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter,
                                      std::array<uint32_t, 2> key) {
  PhiloxBlock b =
      sbpflow::philox4x32_10(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
  return {b.word[0], b.word[1], b.word[2], b.word[3]};
}

void dropout(const float *x, float *y, const int64_t *globalShape, const int64_t *regionBegin,
             const int64_t *regionSize, int rank, float p, uint64_t seed, uint32_t batch,
             uint32_t epoch) {
  // keep <=> draw >= p 2^32; the draw is an integer, so draw >= ceil(p 2^32).
  // p 2^32 is exact in double; p >= 1 drops everything (threshold 2^32).
  const uint64_t threshold =
      p > 0.f ? (p < 1.f ? static_cast<uint64_t>(std::ceil(static_cast<double>(p) * 4294967296.0))
                         : uint64_t{1} << 32)
              : 0;
  const float scale = p >= 1.f ? 0.f : 1.f / (1.f - p);
  if (rank <= 0) {
    dropoutRow(x, y, 1, 0, threshold, scale, seed, batch, epoch);
    return;
  }
  int64_t n = 1;
  for (int a = 0; a < rank; ++a)
    n *= regionSize[a];
  if (n <= 0)
    return;
  // Global row-major strides; an odometer walks the region's rows (all axes
  // but the last), each row a contiguous run of global indices.
  std::vector<int64_t> stride(rank, 1), idx(rank, 0);
  for (int a = rank - 2; a >= 0; --a)
    stride[a] = stride[a + 1] * globalShape[a + 1];
  const int64_t len = regionSize[rank - 1];
  for (int64_t done = 0; done < n; done += len) {
    int64_t g0 = regionBegin[rank - 1];
    for (int a = 0; a + 1 < rank; ++a)
      g0 += (regionBegin[a] + idx[a]) * stride[a];
    dropoutRow(x + done, y + done, len, static_cast<uint64_t>(g0), threshold, scale, seed, batch,
               epoch);
    for (int a = rank - 2; a >= 0; --a) {
      if (++idx[a] < regionSize[a])
        break;
      idx[a] = 0;
    }
  }
}

void transpose(const float *x, float *y, const int64_t *shape, const int *perm, int rank) {
  int64_t n = 1;
  for (int a = 0; a < rank; ++a)
    n *= shape[a];
  if (n <= 0)
    return;
  if (rank <= 1) {
    if (x != y)
      std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  std::vector<int64_t> inStride(rank, 1);
  for (int a = rank - 2; a >= 0; --a)
    inStride[a] = inStride[a + 1] * shape[a + 1];
  // Output axis i walks x with stride inStride[perm[i]].
  std::vector<int64_t> outShape(rank), srcStride(rank), idx(rank, 0);
  for (int i = 0; i < rank; ++i) {
    outShape[i] = shape[perm[i]];
    srcStride[i] = inStride[perm[i]];
  }
  // The last two output axes are copied in square tiles, so neither the reads
  // nor the writes stride through more cache lines than a tile holds.
  constexpr int64_t kTile = 32;
  const int64_t rowsA = outShape[rank - 2], colsB = outShape[rank - 1];
  const int64_t sa = srcStride[rank - 2], sb = srcStride[rank - 1];
  const int64_t plane = rowsA * colsB;
  for (int64_t done = 0; done < n; done += plane) {
    int64_t src = 0;
    for (int i = 0; i + 2 < rank; ++i)
      src += idx[i] * srcStride[i];
    const float *xs = x + src;
    float *yp = y + done;
    for (int64_t a0 = 0; a0 < rowsA; a0 += kTile)
      for (int64_t b0 = 0; b0 < colsB; b0 += kTile) {
        const int64_t a1 = std::min(rowsA, a0 + kTile), b1 = std::min(colsB, b0 + kTile);
        for (int64_t a = a0; a < a1; ++a)
          for (int64_t b = b0; b < b1; ++b)
            yp[a * colsB + b] = xs[a * sa + b * sb];
      }
    for (int i = rank - 3; i >= 0; --i) {
      if (++idx[i] < outShape[i])
        break;
      idx[i] = 0;
    }
  }
}

SBPFLOW_CLONES
float squareSum(const float *x, int64_t n) {
  constexpr int kDoubleLanes = 8;
  double acc[kDoubleLanes] = {};
  int64_t i = 0;
  for (; i + kDoubleLanes <= n; i += kDoubleLanes)
    for (int l = 0; l < kDoubleLanes; ++l) {
      const double v = x[i + l];
      acc[l] += v * v;
    }
  for (int l = 0; i + l < n; ++l) {
    const double v = x[i + l];
    acc[l] += v * v;
  }
  double total = 0;
  for (int l = 0; l < kDoubleLanes; ++l)
    total += acc[l];
  return static_cast<float>(total);
}

float clipScale(float totalSquares, float maxNorm) {
  const float coef = maxNorm / (std::sqrt(totalSquares) + 1e-6f);
  // Written so a NaN norm propagates (as torch.clamp does) instead of reading as 1.
  return coef > 1.f ? 1.f : coef;
}

SBPFLOW_CLONES
void adamw(float *w, float *m, float *v, const float *g, int64_t n, float lr, float beta1,
           float beta2, float eps, float weightDecay, int64_t step, float gradScale) {
  // The decay in double, as PyTorch computes it in Python floats.
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weightDecay);
  const auto [stepSize, bc2Sqrt] = adamFactors(lr, beta1, beta2, step);
  const float oneMinusBeta1 = 1.f - beta1, oneMinusBeta2 = 1.f - beta2;
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * gradScale;
    const float mi = beta1 * m[i] + oneMinusBeta1 * gi;
    const float vi = beta2 * v[i] + oneMinusBeta2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bc2Sqrt + eps;
    w[i] = w[i] * decay - stepSize * (mi / denom);
  }
}

} // namespace sbpflow::cpu
