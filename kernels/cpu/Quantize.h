// Quantising gradient codecs on the CPU (issue 14): QSGD, EF-SignSGD and the
// 2-bit quantiser of SparseLoCo's top-k values. Each payload is of fixed size
// (u8 codes plus f32 scales), so plans stay static; the payloads of every rank
// are gathered and decoded. Checked against plain references in
// tests/kernels/QuantizeTest.cpp.
#pragma once

#include <cstdint>

namespace sbpflow::cpu {

// ---------------------------------------------------------------- QSGD
// Alistarh et al. 2017, "QSGD: Communication-Efficient SGD via Gradient
// Quantization and Encoding", Section 3.1, applied per bucket of `bucket`
// elements (the last bucket may be short): the bucket's L2 norm ||v|| is sent
// as an f32, and element v_i as sign(v_i) and a level l in {0..s}, where
// with r = |v_i| s / ||v|| and l0 = floor(r), l = l0 + 1 with probability
// r - l0 and l0 otherwise, so E[Q(v_i)] = v_i (Lemma 3.1 (i)) and
// E||Q(v) - v||^2 <= min(d / s^2, sqrt(d) / s) ||v||^2 per bucket of d
// elements (Lemma 3.1 (ii)).
//
// Codes are one byte per element, sign in bit 7 (set for v_i < 0), level in
// bits 0-6, so 1 <= s <= 127. Not yet bit-packed nor Elias-coded as in the
// paper: the wire holds n bytes plus 4 per bucket.
//
// The uniform draw of element i is Philox4x32-10 (kernels/Philox.h) of counter
// {i / 4, (i / 4) >> 32 | 0x40000000, step, step >> 32} and key {seed,
// seed >> 32}, word i % 4, top 24 bits: reproducible, independent of the
// bucket size, and distinct from dropout's and initialisation's streams for
// the same seed (bit 30 of the second word); ranks differ by seed. `i` is the
// index in the gradient, which each rank holds whole in a P -> B exchange.
//
// A bucket of zeros sends norm 0 and level 0. A bucket holding a NaN or an
// infinity sends its norm (NaN or inf) as is and decodes to NaN, so that a
// diverged rank is seen by all.
constexpr int kQsgdMaxLevels = 127;

// Buckets of `bucket` elements over n (the last may be short): QSGD's norms,
// EF-SignSGD's scales.
constexpr int64_t bucketCount(int64_t n, int64_t bucket) { return (n + bucket - 1) / bucket; }

// codes: n bytes; norms: bucketCount(n, bucket) floats.
// 1 <= levels <= kQsgdMaxLevels, bucket >= 1.
void qsgdEncode(const float *grad, int64_t n, int levels, int64_t bucket, uint64_t seed,
                uint64_t step, uint8_t *codes, float *norms);

// out[i] += weight * q_r(i) for each of `ranks` payloads laid one after the
// other (codes: ranks * n bytes, norms: ranks * bucketCount floats), in
// rank order, where q(i) = +-(norm_b / s) * l in f32.
void qsgdDecode(const uint8_t *codes, const float *norms, int64_t ranks, int64_t n, int levels,
                int64_t bucket, float weight, float *out);

// The wire form of QSGD's codes at `bits` bits per element (2 <= bits <= 8,
// levels s <= 2^(bits-1) - 1): element i's field holds its sign in bit
// bits-1 and its level below it, fields packed from bit 0 of byte 0 upwards
// (a field may straddle two bytes), unused high bits of the last byte 0.
// unpack(pack(codes)) == codes for codes whose levels fit.
constexpr int64_t qsgdPackedBytes(int64_t n, int bits) { return (n * bits + 7) / 8; }
void qsgdPackCodes(const uint8_t *codes, int64_t n, int bits, uint8_t *packed);
void qsgdUnpackCodes(const uint8_t *packed, int64_t n, int bits, uint8_t *codes);

// ---------------------------------------------------------------- EF-SignSGD
// Karimireddy et al. 2019, "Error Feedback Fixes SignSGD and other Gradient
// Compression Schemes", Algorithm 1 (the learning rate gamma is the caller's,
// folded into grad): p = grad + e; delta = (||p||_1 / d) sign(p);
// e <- p - delta, with the scale ||p||_1 / d taken per bucket of d = `bucket`
// elements (the last may be short; bucket >= n is the paper's one scale per
// tensor). All in f32 except each bucket's ||p||_1 / d, summed in double in
// index order and rounded once. sign(0) = +1 (one bit cannot say 0).
//
// The residual after encoding is fl(p - delta) per element: e + delta = p
// exactly where the subtraction is exact (Sterbenz: delta/2 <= |p| <= 2 delta),
// and otherwise within half an ulp of e.
//
// Payload: one bit per element, element i in byte i / 8, bit i % 8 (set for
// p_i < 0), unused high bits of the last byte 0; plus bucketCount(n, bucket)
// f32 scales. A NaN in a bucket of p makes its scale NaN, and every element
// of that bucket decodes to NaN.
constexpr int64_t signCodeBytes(int64_t n) { return (n + 7) / 8; }

// residual: e on entry, p - delta on return (n floats); codes:
// signCodeBytes(n) bytes; scales: bucketCount(n, bucket) floats. n >= 1,
// bucket >= 1.
void signEncode(const float *grad, float *residual, int64_t n, int64_t bucket, uint8_t *codes,
                float *scales);

// out[i] += weight * (+-scale_r,b(i)) for each of `ranks` payloads (codes:
// ranks * signCodeBytes(n) bytes, scales: ranks * bucketCount(n, bucket)
// floats), in rank order.
void signDecode(const uint8_t *codes, const float *scales, int64_t ranks, int64_t n, int64_t bucket,
                float weight, float *out);

// ---------------------------------------------------------------- 2-bit values
// The quantiser of SparseLoCo's (arXiv 2508.15706) top-k values, as in its
// reference code (tplr-y/CCLoco, TopKCompressor._quantize with 4 bins; the
// research notes do not state the scheme): deterministic, statistical.
//   shift = mean(v); c = v - shift; sigma = ||c||_2 / sqrt(k - 1) (0 if k = 1);
//   step = rangeInSigmas * sigma / 4 (1 if that is 0 or not finite);
//   code = clamp(round_half_even(c / step + 2), 0, 3);
//   table[b] = mean of the c with code b (0 for an empty bin);
//   decoded = table[code] + shift.
// Each bin decodes to its members' mean, so the decoded values sum to the sum
// of the values (up to rounding), and every value decodes within the range of
// its bin's members; interior bins (codes 1, 2) are one step wide. Mean, norm
// and bin means are summed in double in index order and rounded once.
//
// Payload: codes 4 per byte (value j in byte j / 4, bits 2 (j % 4) and up,
// unused bits 0) and kTwoBitTableFloats f32: {shift, table[0..3]}. A NaN among
// the values makes shift NaN and every decoded value NaN.
//
// SparseLoCo's error feedback keeps what was not sent: `unsent` (optional,
// k floats) gets v_j - decoded_j in f32; scatter-add it (cpu::scatterAddPairs)
// into the residual that cpu::topkEncode zeroed at the sent indices.
constexpr int kTwoBitBins = 4;
constexpr int kTwoBitTableFloats = 1 + kTwoBitBins;
// CCLoco's quantization_range.
constexpr float kTwoBitRangeInSigmas = 6.f;

constexpr int64_t twoBitCodeBytes(int64_t k) { return (k + 3) / 4; }
// The payload of top-k with 2-bit values (kernels/Codecs.cpp): k indices
// (i32, or u16 offsets within their chunks: indexBytes 2), then the codes,
// then the table.
constexpr int64_t topkTwoBitPayloadBytes(int64_t k, int64_t indexBytes = 4) {
  return indexBytes * k + twoBitCodeBytes(k) + 4 * kTwoBitTableFloats;
}

// codes: twoBitCodeBytes(k) bytes; table: kTwoBitTableFloats floats; k >= 1.
void twoBitEncode(const float *val, int64_t k, uint8_t *codes, float *table, float *unsent,
                  float rangeInSigmas = kTwoBitRangeInSigmas);

// Decodes `ranks` payloads laid one after the other (codes: ranks *
// twoBitCodeBytes(k) bytes, tables: ranks * kTwoBitTableFloats floats) into
// val[ranks * k], for a following scatter-add of the gathered indices.
void twoBitDecode(const uint8_t *codes, const float *tables, int64_t ranks, int64_t k, float *val);

} // namespace sbpflow::cpu
