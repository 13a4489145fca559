// Quantising gradient codecs on the CPU (see Quantize.h).
#include "kernels/cpu/Quantize.h"

#include "kernels/Philox.h"
#include "kernels/cpu/Vectorize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace sbpflow::cpu {

namespace {

// Bit 30 of the counter's second word: QSGD's draws never meet dropout's
// (which has the index's high word there, < 2^30 for any real tensor) nor
// initialisation's (bit 31).
constexpr uint32_t kQsgdStream = 0x40000000u;

// QSGD's draws, kDrawChunk (a multiple of 4) at a time: u in [0, 1) from
// the top 24 bits of each word of Philox4x32-10 block c at counter {c, c >>
// 32 | kQsgdStream, step, step >> 32} and key {seed, seed >> 32}, for
// elements 4c to 4c + 3; blocks [block0, block0 + blocks) into u.
constexpr int64_t kDrawChunk = 1024;

SBPFLOW_CLONES
void qsgdDraws(int64_t block0, int64_t blocks, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
               float *u) {
  for (int64_t b = 0; b < blocks; ++b) {
    const auto c = static_cast<uint64_t>(block0 + b);
    const PhiloxBlock d = philox4x32_10(
        static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32) | kQsgdStream, c2, c3, k0, k1);
    for (int w = 0; w < 4; ++w)
      u[4 * b + w] = static_cast<float>(d.word[w] >> 8) * 0x1p-24f;
  }
}

// The 2-bit code of value j in a payload's codes.
int twoBitCode(const uint8_t *codes, int64_t j) { return (codes[j >> 2] >> (2 * (j & 3))) & 3; }

} // namespace

void qsgdEncode(const float *grad, int64_t n, int levels, int64_t bucket, uint64_t seed,
                uint64_t step, uint8_t *codes, float *norms) {
  const float s = static_cast<float>(levels);
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const uint32_t c2 = static_cast<uint32_t>(step), c3 = static_cast<uint32_t>(step >> 32);
  // The draws of elements [drawn, drawn + kDrawChunk), filled a chunk at a
  // time (a loop over Philox blocks that vectorises).
  float u[kDrawChunk];
  int64_t drawn = 0, drawnEnd = 0;
  for (int64_t begin = 0, b = 0; begin < n; begin += bucket, ++b) {
    const int64_t end = std::min(n, begin + bucket);
    double squares = 0.0;
    for (int64_t i = begin; i < end; ++i)
      squares += static_cast<double>(grad[i]) * grad[i];
    // Rounded from double, the norm is >= every |v_i| of its bucket (both
    // roundings are monotone), so r <= s below.
    const float norm = static_cast<float>(std::sqrt(squares));
    norms[b] = norm;
    const bool quantise = norm > 0.f && std::isfinite(norm);
    for (int64_t i = begin; i < end; ++i) {
      const float v = grad[i];
      int level = 0;
      if (quantise) {
        const float r = std::min(std::fabs(v) / norm * s, s);
        const float floor = std::floor(r);
        if (i >= drawnEnd) {
          drawn = i & ~int64_t{3};
          drawnEnd = std::min(drawn + kDrawChunk, (n + 3) & ~int64_t{3});
          qsgdDraws(drawn / 4, (drawnEnd - drawn) / 4, c2, c3, k0, k1, u);
        }
        level = std::min(static_cast<int>(floor) + (u[i - drawn] < r - floor ? 1 : 0), levels);
      }
      codes[i] = static_cast<uint8_t>((v < 0.f ? 0x80 : 0) | level);
    }
  }
}

void qsgdDecode(const uint8_t *codes, const float *norms, int64_t ranks, int64_t n, int levels,
                int64_t bucket, float weight, float *out) {
  const float s = static_cast<float>(levels);
  const int64_t buckets = bucketCount(n, bucket);
  for (int64_t r = 0; r < ranks; ++r) {
    const uint8_t *rankCodes = codes + r * n;
    for (int64_t begin = 0, b = 0; begin < n; begin += bucket, ++b) {
      const int64_t end = std::min(n, begin + bucket);
      const float unit = norms[r * buckets + b] / s;
      for (int64_t i = begin; i < end; ++i) {
        const uint8_t c = rankCodes[i];
        float q = unit * static_cast<float>(c & 0x7f);
        if (c & 0x80)
          q = -q;
        out[i] += weight * q;
      }
    }
  }
}

// Eight codes fill `bits` whole bytes: packed and unpacked through one
// 64-bit word (little-endian), the tail field by field.
void qsgdPackCodes(const uint8_t *codes, int64_t n, int bits, uint8_t *packed) {
  std::fill(packed, packed + qsgdPackedBytes(n, bits), uint8_t{0});
  const unsigned levelMask = (1u << (bits - 1)) - 1u;
  auto field = [&](int64_t i) {
    return (codes[i] & 0x80 ? 1u << (bits - 1) : 0u) | (codes[i] & levelMask);
  };
  const int64_t groups = n / 8;
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t word = 0;
    for (int j = 0; j < 8; ++j)
      word |= static_cast<uint64_t>(field(8 * g + j)) << (j * bits);
    for (int b = 0; b < bits; ++b)
      packed[g * bits + b] = static_cast<uint8_t>(word >> (8 * b));
  }
  for (int64_t i = 8 * groups; i < n; ++i) {
    const int64_t bit = i * bits;
    const unsigned shifted = field(i) << (bit % 8);
    packed[bit / 8] |= static_cast<uint8_t>(shifted);
    if ((bit % 8) + bits > 8)
      packed[bit / 8 + 1] |= static_cast<uint8_t>(shifted >> 8);
  }
}

void qsgdUnpackCodes(const uint8_t *packed, int64_t n, int bits, uint8_t *codes) {
  const unsigned fieldMask = (1u << bits) - 1u, signBit = 1u << (bits - 1);
  auto code = [&](unsigned field) {
    return static_cast<uint8_t>((field & signBit ? 0x80u : 0u) | (field & (signBit - 1u)));
  };
  const int64_t groups = n / 8;
  for (int64_t g = 0; g < groups; ++g) {
    uint64_t word = 0;
    for (int b = 0; b < bits; ++b)
      word |= static_cast<uint64_t>(packed[g * bits + b]) << (8 * b);
    for (int j = 0; j < 8; ++j)
      codes[8 * g + j] = code(static_cast<unsigned>(word >> (j * bits)) & fieldMask);
  }
  for (int64_t i = 8 * groups; i < n; ++i) {
    const int64_t bit = i * bits;
    unsigned word = packed[bit / 8];
    if ((bit % 8) + bits > 8)
      word |= static_cast<unsigned>(packed[bit / 8 + 1]) << 8;
    codes[i] = code((word >> (bit % 8)) & fieldMask);
  }
}

void signEncode(const float *grad, float *residual, int64_t n, int64_t bucket, uint8_t *codes,
                float *scales) {
  // p = grad + residual and its sign bits, eight elements a byte; then
  // bucket by bucket (no division an element) the scale and the residual
  // p - delta (delta = -scale where p < 0).
  for (int64_t byte = 0; byte < signCodeBytes(n); ++byte) {
    const int64_t first = 8 * byte, end = std::min(n, first + 8);
    unsigned bits = 0;
    for (int64_t i = first; i < end; ++i) {
      residual[i] += grad[i];
      bits |= (residual[i] < 0.f ? 1u : 0u) << (i - first);
    }
    codes[byte] = static_cast<uint8_t>(bits);
  }
  for (int64_t begin = 0, b = 0; begin < n; begin += bucket, ++b) {
    const int64_t end = std::min(n, begin + bucket);
    double l1 = 0.0;
    for (int64_t i = begin; i < end; ++i)
      l1 += std::fabs(static_cast<double>(residual[i]));
    const float sc = static_cast<float>(l1 / static_cast<double>(end - begin));
    scales[b] = sc;
    for (int64_t i = begin; i < end; ++i)
      residual[i] -= residual[i] < 0.f ? -sc : sc;
  }
}

void signDecode(const uint8_t *codes, const float *scales, int64_t ranks, int64_t n, int64_t bucket,
                float weight, float *out) {
  const int64_t bytes = signCodeBytes(n), buckets = bucketCount(n, bucket);
  for (int64_t r = 0; r < ranks; ++r) {
    const uint8_t *rankCodes = codes + r * bytes;
    for (int64_t begin = 0, b = 0; begin < n; begin += bucket, ++b) {
      const int64_t end = std::min(n, begin + bucket);
      // weight * (negative ? -sc : sc): the product taken once a bucket,
      // negated by its sign bit (exactly: -(w sc) = w (-sc), NaN and inf too).
      const float plus = weight * scales[r * buckets + b];
      uint32_t plusBits;
      std::memcpy(&plusBits, &plus, sizeof plusBits);
      auto add = [&](int64_t i, uint32_t negative) {
        const uint32_t bits = plusBits ^ (negative << 31);
        float term;
        std::memcpy(&term, &bits, sizeof term);
        out[i] += term;
      };
      int64_t i = begin;
      for (; i < end && (i & 7) != 0; ++i)
        add(i, (rankCodes[i >> 3] >> (i & 7)) & 1u);
      for (; i + 8 <= end; i += 8) { // a whole code byte
        const uint32_t c = rankCodes[i >> 3];
        for (int j = 0; j < 8; ++j)
          add(i + j, (c >> j) & 1u);
      }
      for (; i < end; ++i)
        add(i, (rankCodes[i >> 3] >> (i & 7)) & 1u);
    }
  }
}

void twoBitEncode(const float *val, int64_t k, uint8_t *codes, float *table, float *unsent,
                  float rangeInSigmas) {
  double sum = 0.0;
  for (int64_t j = 0; j < k; ++j)
    sum += val[j];
  const float shift = static_cast<float>(sum / static_cast<double>(k));
  double squares = 0.0;
  for (int64_t j = 0; j < k; ++j) {
    const double c = val[j] - shift;
    squares += c * c;
  }
  const double sigma = k > 1 ? std::sqrt(squares / static_cast<double>(k - 1)) : 0.0;
  float step = static_cast<float>(rangeInSigmas * sigma / kTwoBitBins);
  if (!(step > 0.f) || !std::isfinite(step))
    step = 1.f;

  auto codeOf = [&](int64_t j) {
    const float x = std::nearbyint((val[j] - shift) / step + kTwoBitBins / 2);
    // A NaN compares false: code 0 (its decoded value is NaN through shift).
    return x >= kTwoBitBins - 1 ? kTwoBitBins - 1 : x >= 1.f ? static_cast<int>(x) : 0;
  };
  double binSum[kTwoBitBins] = {}, binCount[kTwoBitBins] = {};
  for (int64_t byte = 0; byte < twoBitCodeBytes(k); ++byte) {
    uint8_t bits = 0;
    const int64_t end = std::min(k, 4 * byte + 4);
    for (int64_t j = 4 * byte; j < end; ++j) {
      const int code = codeOf(j);
      bits |= static_cast<uint8_t>(code << (2 * (j - 4 * byte)));
      binSum[code] += val[j] - shift;
      binCount[code] += 1.0;
    }
    codes[byte] = bits;
  }
  table[0] = shift;
  for (int b = 0; b < kTwoBitBins; ++b)
    table[1 + b] = binCount[b] > 0 ? static_cast<float>(binSum[b] / binCount[b]) : 0.f;

  if (unsent)
    for (int64_t j = 0; j < k; ++j)
      unsent[j] = val[j] - (table[1 + twoBitCode(codes, j)] + shift);
}

void twoBitDecode(const uint8_t *codes, const float *tables, int64_t ranks, int64_t k, float *val) {
  const int64_t bytes = twoBitCodeBytes(k);
  for (int64_t r = 0; r < ranks; ++r) {
    const uint8_t *rankCodes = codes + r * bytes;
    const float *table = tables + r * kTwoBitTableFloats;
    for (int64_t j = 0; j < k; ++j)
      val[r * k + j] = table[1 + twoBitCode(rankCodes, j)] + table[0];
  }
}

} // namespace sbpflow::cpu
