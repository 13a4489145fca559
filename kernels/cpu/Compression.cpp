// Gradient compression codecs on the CPU (see Compression.h).
#include "kernels/cpu/Compression.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sbpflow::cpu {

void topkEncode(const float *grad, float *residual, int64_t n, int64_t k, int32_t *order,
                int32_t *idx, float *val) {
  for (int64_t i = 0; i < n; ++i)
    residual[i] += grad[i];
  if (k <= 0)
    return;
  // Magnitude as the selection sees it: NaN above everything (a strict weak
  // order needs one, and a NaN gradient should reach the other ranks).
  auto magnitude = [&](int32_t i) {
    const float m = std::fabs(residual[i]);
    return std::isnan(m) ? std::numeric_limits<float>::infinity() : m;
  };
  auto before = [&](int32_t a, int32_t b) {
    const float ma = magnitude(a), mb = magnitude(b);
    return ma > mb || (ma == mb && a < b);
  };
  for (int64_t i = 0; i < n; ++i)
    order[i] = static_cast<int32_t>(i);
  if (k < n)
    std::nth_element(order, order + k, order + n, before);
  std::sort(order, order + k);
  for (int64_t j = 0; j < k; ++j) {
    idx[j] = order[j];
    val[j] = residual[order[j]];
    residual[order[j]] = 0.f;
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

} // namespace sbpflow::cpu
