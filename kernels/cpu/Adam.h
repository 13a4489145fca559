// AdamW's scalar factors, shared by every AdamW kernel: cpu::adamw and
// cpu::adamUpdate, and their CUDA twins (host code), so that all of them
// round alike.
#pragma once

#include <cmath>
#include <cstdint>

namespace sbpflow::cpu {

// AdamW's scalar factors at `step` (from 1), in double as PyTorch computes
// them in Python floats, then f32: scale / (1 - beta1^step) (scale: the
// learning rate, or adamUpdate's outScale) and sqrt(1 - beta2^step).
struct AdamFactors {
  float stepSize, bc2Sqrt;
};
inline AdamFactors adamFactors(double scale, float beta1, float beta2, int64_t step) {
  const double t = static_cast<double>(step);
  return {static_cast<float>(scale / (1.0 - std::pow(static_cast<double>(beta1), t))),
          static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2), t)))};
}

} // namespace sbpflow::cpu
