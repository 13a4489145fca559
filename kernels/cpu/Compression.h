// Gradient compression codecs on the CPU (issue 14): a codec encodes a rank's
// flat f32 gradient into a payload of fixed size (k is fixed by the density,
// so plans stay static) and keeps what it did not send as error feedback;
// the payloads of every rank are gathered and decoded into the gradient.
// Each is checked against a plain reference in tests/kernels/CompressionTest.cpp.
#pragma once

#include <cstdint>

namespace sbpflow::cpu {

// Exact top-k with error feedback. acc = grad + residual (in f32); the k
// elements of acc largest in magnitude (a NaN counts as the largest, so that
// it is sent and seen; ties go to the lower index) are written as (idx, val)
// pairs in increasing index order, and residual becomes acc with those k
// elements set to 0, so residual + decoded pairs = acc exactly. 0 <= k <= n;
// `order` is scratch of n int32 (n < 2^31).
void topkEncode(const float *grad, float *residual, int64_t n, int64_t k, int32_t *order,
                int32_t *idx, float *val);

// Decoding gathered pairs: out[idx[i]] += scale * val[i] for the `count`
// pairs (every rank's, one after another), in pair order. An index outside
// [0, n) is skipped; returns the first such i, or -1.
int64_t scatterAddPairs(const int32_t *idx, const float *val, int64_t count, float scale,
                        float *out, int64_t n);

} // namespace sbpflow::cpu
