// Gradient compression codecs on the CPU (see Compression.h).
#include "kernels/cpu/Compression.h"
#include "kernels/cpu/Adam.h"

#include "kernels/Philox.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

namespace sbpflow::cpu {

namespace {

// |x| as selections compare it: NaN above everything (a strict weak order
// needs one, and a NaN gradient should reach the other ranks).
float magnitude(float x) {
  const float m = std::fabs(x);
  return std::isnan(m) ? std::numeric_limits<float>::infinity() : m;
}

// The k of order[0, count) largest in magnitude of x (ties: the lower
// index), moved to order[0, k) in increasing index order.
void largestK(const float *x, int32_t *order, int64_t count, int64_t k) {
  auto before = [&](int32_t a, int32_t b) {
    const float ma = magnitude(x[a]), mb = magnitude(x[b]);
    return ma > mb || (ma == mb && a < b);
  };
  if (k < count)
    std::nth_element(order, order + k, order + count, before);
  std::sort(order, order + std::min(k, count));
}

// The selection key of x: the bits of magnitude(x), which order as int32
// the way the non-negative floats (and +inf, where NaN goes) do.
int32_t selectionKey(float x) {
  const float m = magnitude(x);
  int32_t bits;
  std::memcpy(&bits, &m, sizeof bits);
  return bits;
}

} // namespace

// Where n is large and k small, the selection runs over the keys at or
// above a sampled bound (one pass that also adds the gradient), not over
// all n: the key at rank 2 r + 16 of a strided sample of max(4096, n / 64)
// keys, r being k's share of the sample. Where fewer than k keys reach it
// (a sample that missed the tail), the selection runs over all n: the
// bound saves time, exactness never depends on it.
constexpr int64_t kTopkPrefilterMin = 16384;

void topkEncode(const float *grad, float *residual, int64_t n, int64_t k, int32_t *order,
                int32_t *idx, float *val) {
  // The k-th largest key by a selection over the keys themselves (not over
  // indices compared through the array: that costs a cache miss a
  // comparison), then one pass in index order: every key above it, and the
  // first of those equal to it (ties go to the lower index).
  // Keys are never negative: below every one, the threshold takes all.
  int32_t threshold = std::numeric_limits<int32_t>::min();
  int64_t above = k, count = 0;
  if (k > 0 && k < n && n >= kTopkPrefilterMin && 8 * k < n) {
    const int64_t stride = n / std::max<int64_t>(4096, n / 64);
    int64_t sampled = 0;
    for (int64_t i = 0; i < n; i += stride)
      order[sampled++] = selectionKey(residual[i] + grad[i]);
    const int64_t rank = std::min(sampled - 1, 2 * ((k * sampled + n - 1) / n) + 16);
    std::nth_element(order, order + rank, order + sampled, std::greater<int32_t>());
    const int32_t bound = order[rank];
    for (int64_t i = 0; i < n; ++i) {
      residual[i] += grad[i];
      const int32_t key = selectionKey(residual[i]);
      if (key >= bound)
        order[count++] = key;
    }
    if (count < k)
      count = 0; // too few: all n below
  } else {
    for (int64_t i = 0; i < n; ++i)
      residual[i] += grad[i];
  }
  if (k <= 0)
    return;
  if (k < n) {
    if (count == 0) {
      for (int64_t i = 0; i < n; ++i)
        order[i] = selectionKey(residual[i]);
      count = n;
    }
    std::nth_element(order, order + (k - 1), order + count, std::greater<int32_t>());
    threshold = order[k - 1];
    // Every key above the threshold lies before it.
    above = std::count_if(order, order + (k - 1), [&](int32_t key) { return key > threshold; });
  }
  int64_t ties = k - above;
  for (int64_t i = 0, j = 0; i < n && j < k; ++i) {
    const int32_t key = selectionKey(residual[i]);
    if (key > threshold || (key == threshold && ties-- > 0)) {
      idx[j] = static_cast<int32_t>(i);
      val[j] = residual[i];
      residual[i] = 0.f;
      ++j;
    }
  }
}

void accumulateMomentum(const float *grad, float *u, int64_t n, float momentum) {
  for (int64_t i = 0; i < n; ++i)
    u[i] = momentum * u[i] + grad[i];
}

int64_t dgcEncode(const float *grad, float *u, float *v, int64_t n, int64_t k, float momentum,
                  int32_t *order, int32_t *idx, float *val) {
  if (u) {
    accumulateMomentum(grad, u, n, momentum);
    for (int64_t i = 0; i < n; ++i)
      v[i] += u[i];
  } else {
    for (int64_t i = 0; i < n; ++i)
      v[i] += grad[i];
  }
  if (k <= 0)
    return 0;
  // The threshold: the top of a strided sample of at least 1% of v, as many
  // of the sample as k is of v.
  const int64_t samples = std::max<int64_t>(1, (n + 99) / 100);
  const int64_t stride = std::max<int64_t>(1, n / samples);
  int64_t sampled = 0;
  for (int64_t i = 0; i < n; i += stride)
    order[sampled++] = static_cast<int32_t>(i);
  const int64_t sampleK = std::clamp<int64_t>((k * sampled + n - 1) / n, 1, sampled);
  largestK(v, order, sampled, sampleK);
  float threshold = std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < sampleK; ++j)
    threshold = std::min(threshold, magnitude(v[order[j]]));
  auto passing = [&] {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i)
      if (magnitude(v[i]) >= threshold)
        order[count++] = static_cast<int32_t>(i);
    return count;
  };
  int64_t count = passing();
  // The threshold that let the fewest pass while at least k did (0 passing:
  // none yet).
  float enough = threshold;
  int64_t enoughCount = count >= k ? count : 0;
  for (int adjust = 0; adjust < 10; ++adjust) {
    if (count > k + (3 * k) / 10)
      threshold *= 1.3f;
    else if (count < (8 * k) / 10 && threshold > 0.f)
      threshold *= 0.8f;
    else
      break;
    count = passing();
    if (count >= k && (enoughCount == 0 || count < enoughCount)) {
      enough = threshold;
      enoughCount = count;
    }
  }
  // x1.3 and x0.8 can step over the band (a flat tail of |v|) and end with
  // next to nothing: then that threshold.
  if (count < (8 * k) / 10 && enoughCount > 0) {
    threshold = enough;
    count = passing();
  }
  const int64_t chosen = std::min(count, k);
  largestK(v, order, count, chosen);
  for (int64_t j = 0; j < k; ++j) {
    if (j >= chosen) {
      idx[j] = 0;
      val[j] = 0.f;
      continue;
    }
    const int32_t i = order[j];
    idx[j] = i;
    val[j] = v[i];
    if (u)
      u[i] = 0.f; // factor masking
    v[i] = 0.f;
  }
  return chosen;
}

void adamUpdate(const float *grad, float gradScale, float *m, float *s, float *update, int64_t n,
                float beta1, float beta2, float eps, int64_t step, float outScale) {
  const auto [stepSize, bc2Sqrt] = adamFactors(outScale, beta1, beta2, step);
  const float oneMinusBeta1 = 1.f - beta1, oneMinusBeta2 = 1.f - beta2;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = grad[i] * gradScale;
    const float mi = beta1 * m[i] + oneMinusBeta1 * gi;
    const float si = beta2 * s[i] + oneMinusBeta2 * (gi * gi);
    m[i] = mi;
    s[i] = si;
    update[i] = stepSize * (mi / (std::sqrt(si) / bc2Sqrt + eps));
  }
}

double dgcWarmupDensity(int64_t epoch, double density) {
  static constexpr double kWarmup[] = {0.25, 0.0625, 0.015625, 0.004};
  if (epoch < 0 || epoch >= 4)
    return density;
  return std::max(kWarmup[epoch], density);
}

void randomkIndices(int64_t n, int64_t k, uint64_t seed, uint64_t step, int32_t *order,
                    int32_t *idx) {
  for (int64_t i = 0; i < n; ++i)
    order[i] = static_cast<int32_t>(i);
  for (int64_t j = 0; j < k; ++j) {
    // Draw j: a uniform 64-bit word mapped onto [j, n) (Lemire's multiply).
    const PhiloxBlock r =
        philox4x32_10(static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32),
                      static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    const uint64_t word = (static_cast<uint64_t>(r.word[0]) << 32) | r.word[1];
    const uint64_t span = static_cast<uint64_t>(n - j);
    const int64_t pick =
        j + static_cast<int64_t>((static_cast<unsigned __int128>(word) * span) >> 64);
    std::swap(order[j], order[pick]);
  }
  std::sort(order, order + k);
  std::copy(order, order + k, idx);
}

void randomkEncode(const float *grad, int64_t n, int64_t k, const int32_t *idx, float *val) {
  const float scale = static_cast<float>(static_cast<double>(n) / static_cast<double>(k));
  for (int64_t j = 0; j < k; ++j)
    val[j] = grad[idx[j]] * scale;
}

void orthogonalizeColumns(float *p, int64_t rows, int64_t cols) {
  for (int64_t c = 0; c < cols; ++c) {
    double norm = 0.0;
    for (int64_t r = 0; r < rows; ++r)
      norm += static_cast<double>(p[r * cols + c]) * p[r * cols + c];
    norm = std::sqrt(norm);
    for (int64_t r = 0; r < rows; ++r)
      p[r * cols + c] = norm > 0.0 ? static_cast<float>(p[r * cols + c] / norm) : 0.f;
    // Take this column's component out of every later one.
    for (int64_t d = c + 1; d < cols; ++d) {
      double dot = 0.0;
      for (int64_t r = 0; r < rows; ++r)
        dot += static_cast<double>(p[r * cols + c]) * p[r * cols + d];
      for (int64_t r = 0; r < rows; ++r)
        p[r * cols + d] = static_cast<float>(p[r * cols + d] - dot * p[r * cols + c]);
    }
  }
}

int64_t scatterAddPairs(const int32_t *idx, const float *val, int64_t count, float scale,
                        float *out, int64_t n) {
  int64_t bad = -1;
  for (int64_t i = 0; i < count; ++i) {
    if (idx[i] < 0 || idx[i] >= n) {
      if (bad < 0)
        bad = i;
      continue;
    }
    out[idx[i]] += scale * val[i];
  }
  return bad;
}

bool lgrecoChoose(const float *table, int64_t layers, int64_t candidates, int64_t defaultIndex,
                  int32_t *choice, double *dp, int8_t *picks) {
  const int64_t C = candidates, width = 2 * C;
  double budget = 0.0;
  for (int64_t l = 0; l < layers; ++l)
    budget += table[l * width + defaultIndex];
  if (!(budget > 0.0) || !std::isfinite(budget))
    return false;
  auto unitsOf = [&](int64_t l, int64_t j) {
    return std::floor(static_cast<double>(table[l * width + j]) / budget * kLgrecoUnits);
  };
  const double inf = std::numeric_limits<double>::infinity();
  double *cur = dp, *next = dp + kLgrecoUnits + 1;
  std::fill(cur, cur + kLgrecoUnits + 1, inf);
  cur[0] = 0.0;
  for (int64_t l = 0; l < layers; ++l) {
    std::fill(next, next + kLgrecoUnits + 1, inf);
    int8_t *pick = picks + l * (kLgrecoUnits + 1);
    for (int64_t j = 0; j < C; ++j) {
      const double units = unitsOf(l, j);
      if (!(units <= kLgrecoUnits))
        continue; // alone over the budget (or NaN)
      const auto u = static_cast<int>(units);
      const double bytes = table[l * width + C + j];
      for (int at = 0; at + u <= kLgrecoUnits; ++at)
        if (cur[at] + bytes < next[at + u]) {
          next[at + u] = cur[at] + bytes;
          pick[at + u] = static_cast<int8_t>(j);
        }
    }
    std::swap(cur, next);
  }
  const int64_t best = std::min_element(cur, cur + kLgrecoUnits + 1) - cur;
  if (!(cur[best] < inf))
    return false;
  for (int64_t l = layers - 1, at = best; l >= 0; --l) {
    const int j = picks[l * (kLgrecoUnits + 1) + at];
    choice[l] = j;
    at -= static_cast<int64_t>(unitsOf(l, j));
  }
  return true;
}

bool editAnomalous(float *state, double norm) {
  float &count = state[0], &mean = state[1], &m2 = state[2], &seen = state[3];
  float *zs = state + 4;
  // The z-score against the EWMA as it stands: 0 during the warm-up or
  // without variance (the reference's get_z_score).
  auto zScore = [&](double v) {
    const double sd = count >= 2.0f ? std::sqrt(static_cast<double>(m2)) : 0.0;
    return sd == 0.0 || count < kEditWindow ? 0.0 : (v - mean) / sd;
  };
  bool anomalous = false;
  if (count >= kEditWindow) {
    const int64_t m = std::min<int64_t>(static_cast<int64_t>(seen), kEditWindow);
    double zMean = 0, zSquares = 0;
    for (int64_t i = 0; i < m; ++i)
      zMean += zs[i];
    zMean /= static_cast<double>(std::max<int64_t>(m, 1));
    for (int64_t i = 0; i < m; ++i)
      zSquares += (zs[i] - zMean) * (zs[i] - zMean);
    const double zSigma = m > 1 ? std::sqrt(zSquares / static_cast<double>(m - 1)) : 0.0;
    anomalous = zScore(norm) > kEditZFactor * std::max(1.0, zSigma);
  }
  // Every norm, anomalous or not, joins the EWMA (the reference's update,
  // from a mean of 0), then its z-score against it joins the window.
  count += 1.0f;
  const double delta = norm - mean;
  mean = static_cast<float>(mean + kEditEwmaAlpha * delta);
  const double delta2 = norm - mean;
  m2 = static_cast<float>((1 - kEditEwmaAlpha) * (m2 + kEditEwmaAlpha * delta * delta2));
  zs[static_cast<int64_t>(seen) % kEditWindow] = static_cast<float>(zScore(norm));
  seen += 1.0f;
  return anomalous;
}

void editWeights(const float *norms, int ranks, float temperature, float *w) {
  if (temperature <= 0.0f) {
    for (int r = 0; r < ranks; ++r)
      w[r] = 1.0f / static_cast<float>(ranks);
    return;
  }
  double top = -std::numeric_limits<double>::infinity();
  for (int r = 0; r < ranks; ++r)
    top = std::max(top, -static_cast<double>(norms[r]) / temperature);
  double total = 0;
  for (int r = 0; r < ranks; ++r)
    total += std::exp(-static_cast<double>(norms[r]) / temperature - top);
  for (int r = 0; r < ranks; ++r)
    w[r] = static_cast<float>(std::exp(-static_cast<double>(norms[r]) / temperature - top) / total);
}

void editStepWeights(const float *steps, int ranks, float ratio, float *w) {
  double total = 0;
  for (int r = 0; r < ranks; ++r)
    total += steps[r];
  for (int r = 0; r < ranks; ++r)
    w[r] = static_cast<float>((1.0 - ratio) * w[r] +
                              ratio * (total > 0 ? static_cast<double>(steps[r]) / total
                                                 : 1.0 / static_cast<double>(ranks)));
}

} // namespace sbpflow::cpu
