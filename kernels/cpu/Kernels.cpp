// CPU kernels declared in Kernels.h: GEMM through OpenBLAS, the rest as flat
// loops over contiguous memory so the compiler can vectorise them.
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Vectorize.h"

#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>

// Declared here as well because a netlib cblas.h (another Debian alternative)
// lacks it; linking against libopenblas provides it either way.
extern "C" void openblas_set_num_threads(int num_threads);
extern "C" char *openblas_get_corename(void);

namespace sbpflow::cpu {

void matmul(const float *a, const float *b, float *c, int64_t m, int64_t n, int64_t k, bool transA,
            bool transB) {
  if (m <= 0 || n <= 0)
    return;
  if (k <= 0) {
    // BLAS rejects a zero leading dimension; an empty sum is zero.
    fill(c, 0.f, m * n);
    return;
  }
  const int64_t lda = transA ? m : k;
  const int64_t ldb = transB ? k : n;
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.f, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), 0.f, c, static_cast<int>(n));
}

void biasAdd(const float *x, const float *bias, float *y, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    const float *xr = x + i * cols;
    float *yr = y + i * cols;
    SBPFLOW_ELEMENTWISE
    for (int64_t j = 0; j < cols; ++j)
      yr[j] = xr[j] + bias[j];
  }
}

void add(const float *a, const float *b, float *y, int64_t n) {
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i)
    y[i] = a[i] + b[i];
}

void subtract(const float *a, const float *b, float *y, int64_t n) {
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i)
    y[i] = a[i] - b[i];
}

void scale(const float *x, float factor, float *y, int64_t n) {
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i)
    y[i] = x[i] * factor;
}

void relu(const float *x, float *y, int64_t n) {
  // `x < 0 ? 0 : x` rather than max(): NaN propagates, as in PyTorch.
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i)
    y[i] = x[i] < 0.f ? 0.f : x[i];
}

void reluGrad(const float *dy, const float *y, float *dx, int64_t n) {
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i) {
    // Load unconditionally: a conditional load keeps GCC from vectorising.
    const float g = dy[i];
    dx[i] = y[i] > 0.f ? g : 0.f;
  }
}

namespace {

float rowMax(const float *x, int64_t n) {
  float m = x[0];
  for (int64_t j = 1; j < n; ++j)
    m = x[j] > m ? x[j] : m;
  return m;
}

} // namespace

int64_t softmaxXent(const float *logits, const int32_t *labels, float *loss, int64_t rows,
                    int64_t classes) {
  int64_t firstBad = -1;
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t label = labels[i];
    if (label < 0 || classes <= 0) {
      loss[i] = 0.f;
      continue;
    }
    if (label >= classes) {
      loss[i] = 0.f;
      if (firstBad < 0)
        firstBad = i;
      continue;
    }
    const float *x = logits + i * classes;
    // log-sum-exp around the row maximum: exp never overflows and the largest
    // term is exactly 1, so the sum never underflows to 0.
    const float mx = rowMax(x, classes);
    float sum = 0.f;
    for (int64_t j = 0; j < classes; ++j)
      sum += std::exp(x[j] - mx);
    loss[i] = std::log(sum) - (x[label] - mx);
  }
  return firstBad;
}

void softmaxXentGrad(const float *logits, const int32_t *labels, const float *dloss, float *dlogits,
                     int64_t rows, int64_t classes) {
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t label = labels[i];
    float *d = dlogits + i * classes;
    // Out-of-range labels are reported by the forward kernel; here they are
    // treated like padding so a bad label can never write out of bounds.
    if (label < 0 || label >= classes) {
      fill(d, 0.f, classes);
      continue;
    }
    const float *x = logits + i * classes;
    const float mx = rowMax(x, classes);
    float sum = 0.f;
    for (int64_t j = 0; j < classes; ++j) {
      d[j] = std::exp(x[j] - mx);
      sum += d[j];
    }
    const float scale = dloss[i] / sum;
    for (int64_t j = 0; j < classes; ++j)
      d[j] *= scale;
    d[label] -= dloss[i];
  }
}

void mean(const float *x, float *out, int64_t n, int64_t count) {
  // Four independent double accumulators: exact enough for millions of
  // elements and free of the serial dependency of a single running sum.
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    acc[0] += x[i];
    acc[1] += x[i + 1];
    acc[2] += x[i + 2];
    acc[3] += x[i + 3];
  }
  for (; i < n; ++i)
    acc[0] += x[i];
  const double sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  *out = count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.f;
}

void meanGrad(const float *dy, float *y, int64_t n, int64_t count) {
  const float v = count > 0 ? static_cast<float>(static_cast<double>(*dy) / count) : 0.f;
  fill(y, v, n);
}

void reduceRows(const float *x, float *y, int64_t rows, int64_t cols) {
  fill(y, 0.f, cols);
  // Row by row so the inner loop runs over contiguous columns.
  for (int64_t i = 0; i < rows; ++i) {
    const float *xr = x + i * cols;
    for (int64_t j = 0; j < cols; ++j)
      y[j] += xr[j];
  }
}

void countCorrect(const float *logits, const int32_t *labels, float *out, int64_t rows,
                  int64_t classes) {
  int64_t correct = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (labels[i] < 0 || classes <= 0)
      continue;
    const float *x = logits + i * classes;
    // First maximum wins ties, as torch.argmax does.
    int64_t best = 0;
    for (int64_t j = 1; j < classes; ++j)
      if (x[j] > x[best])
        best = j;
    correct += best == labels[i];
  }
  *out = static_cast<float>(correct);
}

void fill(float *y, float value, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    y[i] = value;
}

void toBf16(const float *x, uint16_t *y, int64_t n) {
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i)
    y[i] = toBf16(x[i]);
}

void fromBf16(const uint16_t *x, float *y, int64_t n) {
  SBPFLOW_ELEMENTWISE
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(x[i]) << 16;
    std::memcpy(&y[i], &bits, sizeof bits);
  }
}

void sgdMomentum(float *w, float *v, const float *g, int64_t n, float lr, float momentum,
                 float weightDecay, float gradScale) {
  if (v == nullptr || momentum == 0.f) {
    for (int64_t i = 0; i < n; ++i)
      w[i] -= lr * (g[i] * gradScale + weightDecay * w[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * gradScale + weightDecay * w[i];
    v[i] = momentum * v[i] + gi;
    w[i] -= lr * v[i];
  }
}

void outerStep(float *param, float *anchor, float *m, const float *sum, int64_t n, float lr,
               float momentum, bool nesterov, int replicas, float gapPenalty, float clip,
               bool keepAnchor) {
  const float divisor = outerDivisor(replicas, gapPenalty);
  for (int64_t i = 0; i < n; ++i) {
    const float d = sum[i] / divisor;
    float update = d;
    if (m) {
      float mi = momentum * m[i] + d;
      // Comparisons rather than min / max: NaN propagates, as on the GPU.
      if (clip > 0.f)
        mi = mi < -clip ? -clip : (mi > clip ? clip : mi);
      m[i] = mi;
      update = nesterov ? d + momentum * mi : mi;
    }
    const float a = anchor[i] - lr * update;
    if (!keepAnchor)
      anchor[i] = a;
    param[i] = a;
  }
}

namespace {

int64_t product(const int64_t *dims, int count) {
  int64_t p = 1;
  for (int a = 0; a < count; ++a)
    p *= dims[a];
  return p;
}

// Walks the region one axis at a time; the innermost axis is one contiguous
// memcpy. `toRegion` picks the direction (full tensor -> dense region or back).
// Offsets count elements of `bytes` bytes.
void copyAxis(const uint8_t *src, uint8_t *dst, const int64_t *fullShape, const int64_t *begin,
              const int64_t *size, int rank, int axis, bool toRegion, size_t bytes) {
  if (axis == rank - 1) {
    const int64_t n = size[axis];
    if (n <= 0)
      return;
    if (toRegion)
      std::memcpy(dst, src + begin[axis] * bytes, static_cast<size_t>(n) * bytes);
    else
      std::memcpy(dst + begin[axis] * bytes, src, static_cast<size_t>(n) * bytes);
    return;
  }
  const int64_t fullStride = product(fullShape + axis + 1, rank - axis - 1);
  const int64_t regionStride = product(size + axis + 1, rank - axis - 1);
  for (int64_t i = 0; i < size[axis]; ++i) {
    const size_t full = static_cast<size_t>((begin[axis] + i) * fullStride) * bytes;
    const size_t region = static_cast<size_t>(i * regionStride) * bytes;
    if (toRegion)
      copyAxis(src + full, dst + region, fullShape, begin, size, rank, axis + 1, true, bytes);
    else
      copyAxis(src + region, dst + full, fullShape, begin, size, rank, axis + 1, false, bytes);
  }
}

} // namespace

void copyRegion(const float *src, const int64_t *srcShape, const int64_t *regionBegin,
                const int64_t *regionSize, int rank, float *dst) {
  copyRegion(static_cast<const void *>(src), srcShape, regionBegin, regionSize, rank,
             static_cast<void *>(dst), sizeof(float));
}

void copyIntoRegion(const float *src, const int64_t *regionBegin, const int64_t *regionSize,
                    float *dst, const int64_t *dstShape, int rank) {
  copyIntoRegion(static_cast<const void *>(src), regionBegin, regionSize, static_cast<void *>(dst),
                 dstShape, rank, sizeof(float));
}

void copyRegion(const void *src, const int64_t *srcShape, const int64_t *regionBegin,
                const int64_t *regionSize, int rank, void *dst, size_t elementBytes) {
  if (rank <= 0) {
    std::memcpy(dst, src, elementBytes); // a scalar is its own region
    return;
  }
  copyAxis(static_cast<const uint8_t *>(src), static_cast<uint8_t *>(dst), srcShape, regionBegin,
           regionSize, rank, 0, true, elementBytes);
}

void copyIntoRegion(const void *src, const int64_t *regionBegin, const int64_t *regionSize,
                    void *dst, const int64_t *dstShape, int rank, size_t elementBytes) {
  if (rank <= 0) {
    std::memcpy(dst, src, elementBytes);
    return;
  }
  copyAxis(static_cast<const uint8_t *>(src), static_cast<uint8_t *>(dst), dstShape, regionBegin,
           regionSize, rank, 0, false, elementBytes);
}

void setBlasThreads(int threads) { openblas_set_num_threads(threads < 1 ? 1 : threads); }

std::string preferredBlasCoreType(const std::string &detected, bool hasAvx512,
                                  const char *userChoice) {
  if (userChoice != nullptr || !hasAvx512)
    return "";
  std::string core = detected;
  std::transform(core.begin(), core.end(), core.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // AVX2-only kernels chosen for a CPU that has AVX-512 (F, BW, DQ, VL: what
  // the SkylakeX kernels use).
  if (core == "haswell" || core == "zen")
    return "SkylakeX";
  return "";
}

std::string preferredBlasCoreType() {
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const char *name = openblas_get_corename();
  return preferredBlasCoreType(name ? name : "", avx512, std::getenv("OPENBLAS_CORETYPE"));
}

} // namespace sbpflow::cpu
