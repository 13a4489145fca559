// Compressed gradient all-reduces (issue 14): an AllReduce task whose
// CollectiveAttrs carry a codec (runtime/plan/plan.fbs, CodecAttrs) sums its
// f32 gradient over the group by exchanging each rank's fixed-size payload,
// keeping what it did not send in state variables. A PowerSGD task may sum
// several gradients (a bucket): their matrices share its two all-reduces.
// The codecs' arithmetic is kernels/cpu/Compression.h and
// kernels/cpu/Quantize.h.
#pragma once

#include "kernels/Philox.h"
#include "kernels/Registry.h"

#include <string>
#include <vector>

namespace sbpflow::ops {

// Whether `task` is an AllReduce with a codec.
bool hasCodec(const plan::Task &task);

// What the CPU and CUDA kernels share, so that their payloads agree to the
// element: the state variables a codec keeps per gradient (CodecAttrs.state;
// sign keeps its momentum where it took an SGD's, and L-GreCo adds its
// accumulator after them; under AdamW, beta2 > 0, DGC keeps a third and
// top-k two more: the AdamW moments),
// whether it sends (index, value) pairs, k for a density of n elements (at
// least one, at most n), and DGC's density at exchange `count` (its warm-up
// schedule).
int codecStateCount(plan::Codec kind, float momentum, float beta2 = 0.0f);
inline int codecStateCount(const plan::CodecAttrs &c) {
  return codecStateCount(c.kind(), c.momentum(), c.beta2()) + (c.lgreco() ? 1 : 0);
}
bool isSparseCodec(plan::Codec kind);
// DGC and top-k (plain or 2-bit) compress the AdamW update under AdamW.
bool compressesAdamUpdate(plan::Codec kind);
int64_t pairsFor(double density, int64_t n);
double dgcDensity(const plan::CodecAttrs &c, int64_t count);

// SparseLoCo's chunks (CodecAttrs.chunk > 0): n local elements in chunks of
// `size`, the last shorter where size does not divide n; each chunk sends
// pairsFor(density, its length) pairs, chunk after chunk, the indices as u16
// offsets within the chunk.
struct Chunks {
  int64_t n = 0, size = 0;
  int64_t full = 0;      // chunks of `size` elements
  int64_t perFull = 0;   // pairs of each of them
  int64_t lastPairs = 0; // of the shorter last chunk (0 without one)
  Chunks() = default;
  Chunks(double density, int64_t n, int64_t size);
  int64_t count() const { return full + (lastPairs > 0 ? 1 : 0); }
  int64_t pairs() const { return full * perFull + lastPairs; }
  int64_t start(int64_t chunk) const { return chunk * size; }
  int64_t length(int64_t chunk) const { return chunk < full ? size : n - full * size; }
  int64_t firstPair(int64_t chunk) const { return chunk * perFull; }
  int64_t pairsOf(int64_t chunk) const { return chunk < full ? perFull : lastPairs; }
};
// Bytes of an index in a TopK2Bit payload: u16 offsets within chunks, or
// i32 indices.
inline int64_t twoBitIndexBytes(const plan::CodecAttrs &c) { return c.chunk() > 0 ? 2 : 4; }
// The chunk of pair p (Chunks' full and perFull), for the kernels.
SBPFLOW_PHILOX_INLINE int64_t chunkOfPair(int64_t p, int64_t full, int64_t perFull) {
  return p < full * perFull ? p / perFull : full;
}

// QSGD's draws differ by rank: the seed of rank `rank` of the group.
constexpr uint64_t qsgdRankSeed(uint64_t seed, int rank) {
  return seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(rank + 1);
}

// PowerSGD's Q at its first exchange, element i: a uniform draw in [-1, 1)
// from the top 24 bits of Philox4x32-10 at counter {i, i >> 32, stream, 0}
// and key {seed, seed >> 32}, the same on every rank and device.
constexpr uint32_t kPowerSgdStream = 0x50575347u;
SBPFLOW_PHILOX_INLINE float powerSgdStart(uint64_t seed, int64_t i,
                                          uint32_t stream = kPowerSgdStream) {
  const PhiloxBlock b =
      philox4x32_10(static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), stream, 0,
                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return static_cast<float>(b.word[0] >> 8) / 8388608.0f - 1.0f;
}

// A rank's compressed all-reduce of one gradient as both kernels bind it
// when they are built: the codec, the gradient and its output, the group,
// the step counter, this rank's state rows, and the parameters in use
// (buffers are sized for the largest: of DGC's schedule, or of L-GreCo's
// candidates). CodecTask runs it.
struct CodecExchange {
  const plan::CodecAttrs *c = nullptr;
  plan::Codec kind{};
  int64_t n = 0, rows = 0, cols = 0; // local elements, as a [rows, cols] matrix
  int64_t k = 0;                     // payload pairs
  Chunks chunks;                     // topk2bit with a chunk: how the k pairs are chosen
  int bits = 0, levels = 0, rank = 0;
  const float *grad = nullptr;
  // What every codec compresses: grad, or under AdamW the update (the n
  // floats of `update`, in the kernel's scratch; takeUpdateBuffer).
  const float *source = nullptr;
  float *update = nullptr;
  float *out = nullptr;
  float *s0 = nullptr, *s1 = nullptr, *s2 = nullptr; // state rows
  float *acc = nullptr;                              // L-GreCo's accumulator row
  int32_t *step = nullptr;                           // host
  const int32_t *innerSteps = nullptr;               // host; Edit with a step_weight
  std::string counter;                               // the step counter, for errors
  Communicator *group = nullptr;                     // null for a group of one
  int ranks = 1, me = 0;
  std::vector<int64_t> counts; // per rank, set before each gather
  // Wire buffers in the kernel's scratch (device memory on a GPU), fixed
  // when it is built.
  int32_t *sendPairs = nullptr, *recvPairs = nullptr; // [idx k][val k] per rank
  float *work = nullptr;                              // n floats (k for 2-bit)
  float *small = nullptr, *smallAll = nullptr;        // scales / PowerSGD's P
  uint8_t *codes = nullptr, *sendBytes = nullptr, *recvBytes = nullptr;

  virtual ~CodecExchange() = default;
  // The codec family's parameter `value`: k from a density, bits, or rank.
  void setParameter(float value);
  // Binds the fields above for gradient `input` of task `a` (its state
  // variables follow those of the inputs before it); the state rows must
  // hold what the largest parameters need.
  Status bind(const OpArgs &a, int input = 0);
  // The group's sum of `count` f32 in place (a group of one: nothing).
  Status sum(float *buf, int64_t count);
  // QSGD and sign: a rank's codes in bytes (QSGD's at the bits in use) and
  // its f32 scales (QSGD's bucket norms), as both kernels size and gather them.
  int64_t codeBytes() const;
  int64_t scaleCount() const;
  // QSGD's and sign's wire buffers from `a`'s scratch: this rank's codes and
  // scales, every rank's, and QSGD's unpacked codes.
  void takeCodeBuffers(const OpArgs &a);
  // Under AdamW: `update` from `a`'s scratch, and source = update.
  void takeUpdateBuffer(const OpArgs &a);

protected:
  friend struct CodecTask;
  // Before exchange `count` after the warm-up (L-GreCo's choice).
  virtual Status prepare(int64_t) { return Status::ok(); }
  // dst = src, `count` f32 on the kernel's device.
  virtual Status copy(float *dst, const float *src, int64_t count) = 0;
  // Under AdamW, before exchange `count` (warm-up included): the locally
  // clipped gradient into this rank's moments (moments()) and its AdamW
  // update over the group's size into `update` (cpu::adamUpdate).
  virtual Status adamUpdate(int64_t count) = 0;
  // The AdamW moments m and s among the state rows: DGC's s0 and s2, top-k's
  // s1 and s2 (its residual stays s0).
  std::pair<float *, float *> moments() const {
    return kind == plan::Codec::Dgc ? std::pair{s0, s2} : std::pair{s1, s2};
  }
  // Exchange `count` after the warm-up of each codec but PowerSGD, on the
  // kernel's device: encode, exchange, decode the group's sum into out.
  virtual Status topk() = 0;
  virtual Status dgc(int64_t count) = 0;
  virtual Status randomk(int64_t count) = 0;
  virtual Status qsgd(int64_t count) = 0;
  virtual Status sign() = 0;
  virtual Status topk2bit() = 0;
  // EDiT's penalised average of the group's pseudo-gradients (plan.fbs
  // CodecAttrs, Edit; cpu::editAnomalous, cpu::editWeights).
  virtual Status edit() = 0;
  // PowerSGD (Vogels et al. 2019, Algorithm 1 with error feedback) in the
  // three phases between its two all-reduces, which CodecTask issues for
  // all of a task's gradients at once:
  //   P: Q (s1) from powerSgdStart(seed, start + i) at exchange 0 (and where
  //      L-GreCo just changed the rank); M = grad + residual (work);
  //      P (small) = M Q.
  //   Q: with P summed, P orthogonalised; q = M^T P (this rank's);
  //      residual = M - P q^T.
  //   Out: with q summed, Q (s1) = q; out = P Q^T, the sum of every rank's
  //      projection.
  virtual Status powerSgdP(int64_t count, int64_t start) = 0;
  virtual Status powerSgdQ(float *q) = 0;
  virtual Status powerSgdOut(const float *q) = 0;

private:
  Status compressed(int64_t count);
};

// One compressed all-reduce task: one part per gradient (several only under
// PowerSGD), sharing the codec, the group and the step counter. An exchange is
// a dense all-reduce for the first warmup_steps (one over all parts, gathered
// in `dense`; of the AdamW update under AdamW), then the codec (PowerSGD:
// every part's P in one all-reduce of `p`, every part's Q in one of `q`, as
// PyTorch's PowerSGD hook batches a bucket's matrices); the step is counted
// after.
struct CodecTask {
  std::vector<std::shared_ptr<CodecExchange>> parts;
  // Contiguous over the parts, in the kernel's scratch: PowerSGD's P and Q
  // (for the largest ranks), and the parts' work rows (several parts).
  float *p = nullptr, *q = nullptr, *dense = nullptr;

  // Binds a part of type `Part` (the kernel's CodecExchange) to each input
  // of task `a`.
  template <class Part> Status bind(const OpArgs &a) {
    for (int j = 0; j < static_cast<int>(a.in.size()); ++j) {
      auto x = std::make_shared<Part>();
      if (Status s = x->bind(a, j); !s)
        return s;
      parts.push_back(std::move(x));
    }
    return Status::ok();
  }
  // The local elements of all parts.
  int64_t elements() const;
  // PowerSGD's p, q and dense from `a`'s scratch, each part's work a slice
  // of dense.
  void takePowerSgdBuffers(const OpArgs &a);
  Status run();
  // Counts the step only (a task of no elements).
  Status countOnly();

private:
  Status warmup();
  Status powerSgd(int64_t count);
  // phase(part, its P's offset in p, its Q's in q) for each part with
  // elements, in order, at the ranks in use (a phase may set them: L-GreCo);
  // pn and qn become the totals.
  template <class Phase> Status eachPart(int64_t &pn, int64_t &qn, Phase phase) {
    pn = qn = 0;
    for (const auto &x : parts) {
      if (x->n == 0)
        continue;
      if (Status s = phase(*x, pn, qn); !s)
        return s;
      pn += x->rows * x->rank;
      qn += x->cols * x->rank;
    }
    return Status::ok();
  }
};

// The plan's side (the loader's check on global tensors): f32 inputs (one,
// or several under PowerSGD) reduced by sum, the codec's parameters in
// range, its state (each input's in turn) and step variables present and
// shaped as CodecAttrs says.
Status checkCodec(const OpArgs &a);

// The CPU kernel: encode, exchange through the group's communicator (Gloo),
// decode into the output, count the step.
StatusOr<Kernel> cpuCompressedAllReduce(const OpArgs &a);

#ifdef SBPFLOW_HAVE_CUDA
// The CUDA kernel (kernels/CodecsCuda.cpp): the same payloads on the
// communicator's stream (NCCL); L-GreCo is refused there for now.
StatusOr<Kernel> cudaCompressedAllReduce(const OpArgs &a);
#endif

} // namespace sbpflow::ops
