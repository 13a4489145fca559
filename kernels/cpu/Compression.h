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

// Deep Gradient Compression's local step (Lin et al., "Deep Gradient
// Compression", ICLR 2018; as synxlin/deep-gradient-compression): momentum
// correction u = momentum * u + grad, accumulation v += u, then about the k
// largest |v| chosen by a threshold sampled from every stride-th |v| (at least
// 1% of v), adjusted at most 10 times (x1.3 while more than 1.3 k pass it, x0.8
// while fewer than 0.8 k), the exact top k of what passes where more than k do.
// Unlike the reference code, adjustments that step over the band and end below
// 0.8 k fall back to the threshold that let the fewest pass while at least k
// did (a flat tail of |v| made them send nothing). The chosen (idx, val = v)
// pairs go out in index order and factor masking zeroes u and v there. Fewer
// than k chosen leave the last slots as (0, 0.0f), which decode to nothing: the
// payload is always k pairs. Returns how many were chosen. `order` is scratch
// of n int32. With u null there is no momentum correction (v += grad; under
// AdamW, grad is adamUpdate's update).
int64_t dgcEncode(const float *grad, float *u, float *v, int64_t n, int64_t k, float momentum,
                  int32_t *order, int32_t *idx, float *val);

// An SGD's momentum kept before compression (DGC's momentum correction;
// EF-SignSGD as its reference code, epfml/error-feedback-SGD, applies it):
// u = momentum * u + grad, in f32, rounded operation by operation.
void accumulateMomentum(const float *grad, float *u, int64_t n, float momentum);

// DGC and top-k under AdamW: the update of PyTorch's AdamW (cpu::adamw's arithmetic,
// without the learning rate and the decay) on g' = grad * gradScale, from
// moments m and s that this rank keeps of its own gradient, at step `step`
// (from 1): update = outScale / (1 - beta1^t) * m / (sqrt(s) / sqrt(1 -
// beta2^t) + eps). DGC accumulates it as momentum correction accumulates
// the SGD update: the group's sum of what the ranks send (outScale = 1 /
// ranks) is then applied as w -= lr (sum + weight_decay w).
void adamUpdate(const float *grad, float gradScale, float *m, float *s, float *update, int64_t n,
                float beta1, float beta2, float eps, int64_t step, float outScale);

// DGC's warm-up: the density of epoch `epoch` (from 0), sparsity 75%,
// 93.75%, 98.4375%, 99.6% over the first four epochs, then `density` (never
// below it: a denser final setting is used from the start).
double dgcWarmupDensity(int64_t epoch, double density);

// Random-k with a shared seed (MASHA1's unbiased RandK): the k indices of
// step `step` are the same on every rank that shares `seed` (a partial
// Fisher-Yates shuffle driven by Philox), so only values travel; idx in
// increasing order. `order` is scratch of n int32.
void randomkIndices(int64_t n, int64_t k, uint64_t seed, uint64_t step, int32_t *order,
                    int32_t *idx);
// val[j] = grad[idx[j]] * n / k: unbiased (E[decoded] = grad over the
// indices' draw). Summed over ranks at the shared indices.
void randomkEncode(const float *grad, int64_t n, int64_t k, const int32_t *idx, float *val);

// PowerSGD's orthogonalisation (Vogels, Karimireddy, Jaggi, "PowerSGD:
// Practical Low-Rank Gradient Compression", NeurIPS 2019): the columns of the
// row-major rows x cols matrix p made orthonormal in place by modified
// Gram-Schmidt, as torch's powerSGD_hook (epsilon 0) does; sums in double.
// A column that is (or becomes) zero stays zero. A PowerSGD step is then
// P = M Q, all-reduce P, orthogonalise P, Q = M^T P, all-reduce Q, decoded
// M' = P Q^T, error M - M', with Q kept for the next step (cpu::matmul).
void orthogonalizeColumns(float *p, int64_t rows, int64_t cols);

// Decoding gathered pairs: out[idx[i]] += scale * val[i] for the `count`
// pairs (every rank's, one after another), in pair order. An index outside
// [0, n) is skipped; returns the first such i, or -1.
int64_t scatterAddPairs(const int32_t *idx, const float *val, int64_t count, float scale,
                        float *out, int64_t n);

// L-GreCo's choice (Markov et al., arXiv 2210.17357, as its repository's
// knapsack): `table` holds per layer l a row of 2 C floats, the errors of its
// C candidates then their payload bytes. The budget is the summed error of
// candidate `defaultIndex` in every layer; each error counts
// floor(error / budget * kLgrecoUnits) units (floored, so the uniform default
// always fits); choice[l] becomes the candidate of layer l in the assignment
// of fewest total bytes whose units sum to at most kLgrecoUnits (the first
// such found, candidates tried in order). Returns false, leaving choice as it
// is, where the budget is not positive and finite (a zero gradient, or a
// diverged one). Scratch: dp of 2 (kLgrecoUnits + 1) doubles, picks of
// layers (kLgrecoUnits + 1) bytes; C <= 127.
constexpr int kLgrecoUnits = 10000;
// As the paper's repository (LGrCo/L-GreCo, lgreco_hook.py): each layer's
// errors are measured on the sum of its last kLgrecoAccumulate gradients
// (with error feedback) before a decision, PowerSGD's with
// kLgrecoPowerIterations power iterations from a random start.
constexpr int kLgrecoAccumulate = 10;
constexpr int kLgrecoPowerIterations = 5;
bool lgrecoChoose(const float *table, int64_t layers, int64_t candidates, int64_t defaultIndex,
                  int32_t *choice, double *dp, int8_t *picks);

// EDiT's pseudo-gradient penalty (Cheng et al., arXiv 2412.07210, as the
// reference code, dlrover atorch local_sgd: anomaly_detection.py and
// reduce_methods/base.py; ../shared/research/wave2-algorithms.md).
// Anomaly elimination (OnlineDynamicEWMA): a rank keeps an EWMA (alpha
// 0.02, from a mean of 0) of its pseudo-gradient norms' mean and M2; once it
// has seen kEditWindow synchronisations, a norm whose z-score against them
// exceeds 3 max(1, the standard deviation of its last kEditWindow z-scores)
// is anomalous. Every norm, anomalous or not, then joins the EWMA, and its
// z-score against the updated EWMA (0 during the warm-up) joins the window.
// State row: {count, mean, M2, z-scores seen, the last kEditWindow z-scores
// (a ring)}.
constexpr int kEditWindow = 120;
constexpr int64_t kEditStateFloats = 4 + kEditWindow;
constexpr double kEditEwmaAlpha = 0.02, kEditZFactor = 3.0;
// What an anomalous rank adds to its norm before the weights (so its weight
// vanishes under a temperature).
constexpr float kEditOutlierPenalty = 1e6f;
// Whether `norm` is anomalous for the rank whose `state` row this is; the
// row is updated.
bool editAnomalous(float *state, double norm);
// The replicas' weights: w[r] = softmax(-norms / temperature)[r] (in double,
// the largest logit subtracted), or 1 / ranks at temperature 0.
void editWeights(const float *norms, int ranks, float temperature, float *w);
// A-EDiT's blend (the reference's step_weight_ratio r): w[r] = (1 - ratio)
// w[r] + ratio steps[r] / sum(steps) (equal shares where no replica took a
// step, so that the weights still sum to one).
void editStepWeights(const float *steps, int ranks, float ratio, float *w);
} // namespace sbpflow::cpu
