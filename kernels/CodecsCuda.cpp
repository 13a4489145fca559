// The CUDA kernel of compressed gradient all-reduces (kernels/Codecs.h): the
// CPU kernel's encode, exchange and decode (kernels/Codecs.cpp) with the codecs
// of kernels/cuda/Compression.h, everything enqueued on the task's stream.
//
// The wire is the CPU's, byte for byte: the same payloads (packed pairs,
// QSGD codes packed at BITS bits, sign bits, 2-bit codes with their table)
// through the same communicator calls with the same counts, so a CPU and a
// GPU rank of one group agree, and so do their sent-byte counts. The step
// count stays on the host (an i32 variable, OpArgs::hostVariable): each
// step reads it when it is enqueued and passes it by value (the dense
// warm-up, DGC's density, the random-k and QSGD draws, PowerSGD's start), so
// a step waits for nothing on the device.
//
// This file is compiled as CUDA (kernels/CMakeLists.txt): besides the codecs
// of kernels/cuda/Compression.h the exchange needs a few small kernels of
// its own (QSGD's bit packing, DGC's local clipping, PowerSGD's start and
// residual, the 2-bit payload's unpacking), each the CPU loop it replaces
// in Codecs.cpp or cpu/Quantize.cpp.
#include "kernels/Checks.h"
#include "kernels/Codecs.h"
#include "kernels/cpu/Compression.h"
#include "kernels/cpu/Quantize.h"
#include "kernels/cuda/Compression.h"
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Elementwise.h"
#include "kernels/cuda/Gemm.h"
#include "kernels/cuda/Launch.cuh"
#include "runtime/comm/Communicator.h"
#include "runtime/plan/PlanTypes.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace sbpflow::ops {

using plan::Codec;

namespace {

using cuda::detail::blocksFor;
using cuda::detail::first;
using cuda::detail::kThreads;
using cuda::detail::launched;
using cuda::detail::stride;

// ---------------------------------------------------------------- kernels

// cpu::qsgdPackCodes, one thread per packed byte: every field that
// overlaps the byte's 8 bits, shifted into place (a field of at most 8 bits
// overlaps two bytes at most).
__global__ void qsgdPackKernel(const uint8_t *codes, int64_t n, int bits, uint8_t *packed,
                               int64_t bytes) {
  const unsigned levelMask = (1u << (bits - 1)) - 1u;
  for (int64_t b = first(); b < bytes; b += stride()) {
    const int64_t lo = 8 * b;
    unsigned byte = 0;
    for (int64_t i = lo / bits; i < n && i * bits < lo + 8; ++i) {
      const unsigned field = (codes[i] & 0x80 ? 1u << (bits - 1) : 0u) | (codes[i] & levelMask);
      const int64_t shift = i * bits - lo;
      byte |= shift >= 0 ? field << shift : field >> -shift;
    }
    packed[b] = static_cast<uint8_t>(byte);
  }
}

// cpu::qsgdUnpackCodes, one thread per element.
__global__ void qsgdUnpackKernel(const uint8_t *packed, int64_t n, int bits, uint8_t *codes) {
  const unsigned fieldMask = (1u << bits) - 1u, signBit = 1u << (bits - 1);
  for (int64_t i = first(); i < n; i += stride()) {
    const int64_t bit = i * bits;
    unsigned word = packed[bit / 8];
    if ((bit % 8) + bits > 8)
      word |= static_cast<unsigned>(packed[bit / 8 + 1]) << 8;
    const unsigned field = (word >> (bit % 8)) & fieldMask;
    codes[i] = static_cast<uint8_t>((field & signBit ? 0x80u : 0u) | (field & (signBit - 1u)));
  }
}

// DGC's local clipping: the gradient's squares summed in double (in a fixed
// tree order: kClipBlocks partial sums of a grid-stride loop, each block's
// and then the partials' halved pairwise), its norm compared with the
// threshold and the factor rounded to f32 as Codecs.cpp does; 1 where the
// norm is within it (x * 1 is x, so the unclipped gradient is unchanged).
constexpr int kClipBlocks = 256;
static_assert(kClipBlocks == kThreads, "the factor kernel sums one partial per thread");

__device__ void blockSum(double *shared) {
  for (int half = kThreads / 2; half > 0; half /= 2) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < half)
      shared[threadIdx.x] = __dadd_rn(shared[threadIdx.x], shared[threadIdx.x + half]);
  }
  __syncthreads();
}

__global__ void squaresKernel(const float *x, int64_t n, double *partials) {
  __shared__ double shared[kThreads];
  double sum = 0.0;
  for (int64_t i = first(); i < n; i += stride()) {
    const double v = x[i];
    sum = __dadd_rn(sum, __dmul_rn(v, v));
  }
  shared[threadIdx.x] = sum;
  blockSum(shared);
  if (threadIdx.x == 0)
    partials[blockIdx.x] = shared[0];
}

__global__ void clipFactorKernel(const double *partials, float clip, float *factor) {
  __shared__ double shared[kThreads];
  shared[threadIdx.x] = partials[threadIdx.x];
  blockSum(shared);
  if (threadIdx.x == 0) {
    const double norm = sqrt(shared[0]);
    *factor = norm > static_cast<double>(clip) ? static_cast<float>(clip / norm) : 1.0f;
  }
}

__global__ void scaleKernel(const float *x, const float *factor, int64_t n, float *y) {
  const float f = *factor;
  for (int64_t i = first(); i < n; i += stride())
    y[i] = __fmul_rn(x[i], f);
}

// y = a - b in f32, as Codecs.cpp's PowerSGD residual.
__global__ void subtractKernel(const float *a, const float *b, int64_t n, float *y) {
  for (int64_t i = first(); i < n; i += stride())
    y[i] = __fsub_rn(a[i], b[i]);
}

// PowerSGD's Q at exchange 0: draws start.. of powerSgdStart, as Codecs.cpp.
__global__ void powerSgdStartKernel(float *q, int64_t count, uint64_t seed, int64_t start) {
  for (int64_t i = first(); i < count; i += stride())
    q[i] = powerSgdStart(seed, start + i);
}

// Little-endian, from any byte address (the payloads are byte strings).
template <class T> __device__ T loadWord(const uint8_t *p) {
  const uint32_t w = static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                     static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
  T v;
  memcpy(&v, &w, sizeof v);
  return v;
}

// Every rank's top-k 2-bit payload ([idx k][codes][table]) split into the
// arrays the decoders take: idx [ranks, k], codes [ranks, codeBytes],
// tables [ranks, kTwoBitTableFloats]. Chunked (indexBytes 2), the indices are
// u16 offsets within their chunks (Chunks in Codecs.h: `full` chunks of
// `size` with `perFull` pairs, then the last chunk up to n): each becomes its
// global index, or -1 (a bad pair for the scatter-add) past its chunk's end.
__global__ void splitTwoBitKernel(const uint8_t *payloads, int64_t ranks, int64_t k,
                                  int64_t codeBytes, int64_t indexBytes, int64_t n, int64_t size,
                                  int64_t full, int64_t perFull, int32_t *idx, uint8_t *codes,
                                  float *tables) {
  constexpr int64_t tableFloats = cpu::kTwoBitTableFloats;
  const int64_t payload = indexBytes * k + codeBytes + 4 * tableFloats;
  const int64_t items = k + codeBytes + tableFloats;
  for (int64_t e = first(); e < ranks * items; e += stride()) {
    const int64_t r = e / items, j = e % items;
    const uint8_t *from = payloads + payload * r;
    if (j < k && indexBytes == 4) {
      idx[r * k + j] = loadWord<int32_t>(from + 4 * j);
    } else if (j < k) {
      const int64_t offset = from[2 * j] | (from[2 * j + 1] << 8);
      const int64_t chunk = chunkOfPair(j, full, perFull);
      const int64_t start = chunk * size, length = chunk < full ? size : n - full * size;
      idx[r * k + j] = offset < length ? static_cast<int32_t>(start + offset) : -1;
    } else if (j < k + codeBytes) {
      codes[r * codeBytes + j - k] = from[indexBytes * k + j - k];
    } else {
      tables[r * tableFloats + j - k - codeBytes] =
          loadWord<float>(from + indexBytes * k + codeBytes + 4 * (j - k - codeBytes));
    }
  }
}

// Averaging over senders: how many ranks sent each index (valid ones), then
// each output divided by its count where more than one did.
__global__ void countSendersKernel(const int32_t *idx, int64_t count, int64_t n, int32_t *senders) {
  for (int64_t i = first(); i < count; i += stride())
    if (idx[i] >= 0 && idx[i] < n)
      atomicAdd(senders + idx[i], 1);
}
__global__ void divideBySendersKernel(const int32_t *senders, int64_t n, float *out) {
  for (int64_t i = first(); i < n; i += stride())
    if (senders[i] > 1)
      out[i] /= static_cast<float>(senders[i]);
}

// Chunked top-k's chunk-local indices: each written as a u16 offset into
// `offsets` (little-endian, the payload's order) and made global.
__global__ void chunkOffsetsKernel(int32_t *idx, int64_t k, int64_t size, int64_t full,
                                   int64_t perFull, uint8_t *offsets) {
  for (int64_t i = first(); i < k; i += stride()) {
    const int32_t offset = idx[i];
    offsets[2 * i] = static_cast<uint8_t>(offset & 0xff);
    offsets[2 * i + 1] = static_cast<uint8_t>((offset >> 8) & 0xff);
    idx[i] = static_cast<int32_t>(chunkOfPair(i, full, perFull) * size + offset);
  }
}

Status cudaStatus(cudaError_t e, const char *what) {
  if (e == cudaSuccess)
    return Status::ok();
  return Status::error(std::string(what) + ": " + cudaGetErrorName(e) + " (" +
                       cudaGetErrorString(e) + ")");
}

std::string codecName(Codec kind) {
  const char *name = plan::EnumNameCodec(kind);
  return name && *name ? name : "#" + std::to_string(static_cast<int>(kind));
}

// The codecs this kernel knows; L-GreCo (a parameter chosen at runtime from
// a table decided on the host) runs on CPU ranks only for now.
Status knownCodec(const plan::CodecAttrs &c, const std::string &at) {
  switch (c.kind()) {
  case Codec::TopK:
  case Codec::Dgc:
  case Codec::RandomK:
  case Codec::Qsgd:
  case Codec::Sign:
  case Codec::PowerSgd:
  case Codec::TopK2Bit:
    break;
  default:
    return Status::error(at + ": codec " + codecName(c.kind()) +
                         " has no CUDA kernel (this build's cudaCompressedAllReduce knows "
                         "TopK, Dgc, RandomK, Qsgd, Sign, PowerSgd and TopK2Bit)");
  }
  if (c.lgreco())
    return Status::error(at + ": L-GreCo (--compress lgreco) has no CUDA kernel yet; it runs "
                              "on CPU ranks");
  return Status::ok();
}

// ---------------------------------------------------------------- the exchange

// One rank's compressed all-reduce on the GPU: Codecs.cpp's Exchange with
// device buffers. Every call enqueues on `stream`.
struct CudaExchange : CodecExchange {
  Device *device = nullptr;
  Stream queue = nullptr;
  cudaStream_t stream = nullptr;
  // Device scratch, fixed when the kernel is built.
  void *scratch = nullptr;    // the codec functions'
  double *partials = nullptr; // DGC's clipping
  float *factor = nullptr;
  float *table = nullptr;                           // 2-bit: this rank's table
  int32_t *allIdx = nullptr;                        // 2-bit: [ranks, k]
  uint8_t *allCodes = nullptr;                      // 2-bit: [ranks, codeBytes]
  float *allTables = nullptr, *allValues = nullptr; // 2-bit
  int32_t *senders = nullptr;                       // 2-bit averaged over senders: [n]
  // Bad gathered indices: one flag per rank (top-k, DGC: DGC's k changes
  // with the step, so a rank's payload is decoded by its own call), or one
  // for every rank's pairs at once (2-bit: k is fixed).
  std::vector<int64_t *> badPair;
  std::shared_ptr<cuda::Blas> blas; // PowerSGD's own, the task's parts': see the builder

  Status gather(const void *send, void *recv, int64_t count, plan::DType type) {
    if (!group)
      return device->copy(recv, send, static_cast<size_t>(count) * dtypeSize(type), queue);
    std::fill(counts.begin(), counts.end(), count);
    return group->allGather(send, recv, counts.data(), type);
  }
  Status zeroOut() { return device->fill(out, plan::DType::F32, 0.0f, n, queue); }

  // Every rank's kk pairs in recvPairs added into out, rank by rank.
  Status exchangePairs(int64_t kk) {
    if (Status s = gather(sendPairs, recvPairs, 2 * kk, plan::DType::I32); !s)
      return s;
    if (Status s = zeroOut(); !s)
      return s;
    for (int r = 0; r < ranks; ++r) {
      const int32_t *idx = recvPairs + 2 * kk * r;
      const auto *val = reinterpret_cast<const float *>(idx + kk);
      if (Status s =
              cuda::scatterAddPairs(idx, val, 1, kk, 1.0f, out, n, scratch, badPair[r], stream);
          !s)
        return s;
    }
    return Status::ok();
  }

  Status copy(float *dst, const float *src, int64_t count) override {
    return dst == src ? Status::ok()
                      : device->copy(dst, src, static_cast<size_t>(count) * sizeof(float), queue);
  }

  Status topk() override {
    if (Status s = cuda::topkEncode(source, s0, n, k, scratch, sendPairs,
                                    reinterpret_cast<float *>(sendPairs + k), stream);
        !s)
      return s;
    return exchangePairs(k);
  }

  // DGC's local clipping: the factor into `factor` (the CPU's clipFactor).
  Status clipFactor() {
    squaresKernel<<<kClipBlocks, kThreads, 0, stream>>>(grad, n, partials);
    if (Status s = launched("squaresKernel"); !s)
      return s;
    clipFactorKernel<<<1, kThreads, 0, stream>>>(partials, c->clip(), factor);
    return launched("clipFactorKernel");
  }

  Status adamUpdate(int64_t count) override {
    if (c->clip() > 0.0f)
      if (Status s = clipFactor(); !s)
        return s;
    auto [m, s] = moments();
    return cuda::adamUpdate(grad, c->clip() > 0.0f ? factor : nullptr, m, s, update, n,
                            c->momentum(), c->beta2(), c->eps(), count + 1,
                            1.0f / static_cast<float>(ranks), stream);
  }

  // DGC's k for this exchange is known here from the count: the payload's
  // size is the CPU's for every step, with no read of the device.
  Status dgc(int64_t count) override {
    const int64_t kk = pairsFor(dgcDensity(*c, count), n);
    auto *val = reinterpret_cast<float *>(sendPairs + kk);
    if (c->beta2() > 0.0f) {
      // Under AdamW the update is accumulated as it is (adamUpdate).
      if (Status s = cuda::dgcEncode(source, nullptr, s1, n, kk, 0.0f, scratch, sendPairs, val,
                                     nullptr, stream);
          !s)
        return s;
      return exchangePairs(kk);
    }
    const float *g = grad;
    if (c->clip() > 0.0f) {
      if (Status s = clipFactor(); !s)
        return s;
      scaleKernel<<<blocksFor(n), kThreads, 0, stream>>>(grad, factor, n, work);
      if (Status s = launched("scaleKernel"); !s)
        return s;
      g = work;
    }
    if (Status s = cuda::dgcEncode(g, s0, s1, n, kk, c->momentum(), scratch, sendPairs, val,
                                   nullptr, stream);
        !s)
      return s;
    return exchangePairs(kk);
  }

  Status randomk(int64_t count) override {
    int32_t *idx = sendPairs;
    float *val = reinterpret_cast<float *>(sendPairs + k);
    if (Status s = cuda::randomkIndices(n, k, c->seed(), static_cast<uint64_t>(count), scratch, idx,
                                        stream);
        !s)
      return s;
    if (Status s = cuda::randomkEncode(source, n, k, idx, val, stream); !s)
      return s;
    if (Status s = sum(val, k); !s)
      return s;
    if (Status s = zeroOut(); !s)
      return s;
    // The indices are this rank's own draw (every rank's, by the shared
    // seed): in range, unchecked as on the CPU.
    return cuda::scatterAddPairs(idx, val, 1, k, 1.0f, out, n, scratch, nullptr, stream);
  }

  Status qsgd(int64_t count) override {
    const int64_t buckets = scaleCount(), packed = codeBytes();
    // Ranks draw independently, steps by count.
    if (Status s = cuda::qsgdEncode(source, n, levels, c->bucket(), qsgdRankSeed(c->seed(), me),
                                    static_cast<uint64_t>(count), scratch, codes, small, stream);
        !s)
      return s;
    qsgdPackKernel<<<blocksFor(packed), kThreads, 0, stream>>>(codes, n, bits, sendBytes, packed);
    if (Status s = launched("qsgdPackKernel"); !s)
      return s;
    if (Status s = gather(sendBytes, recvBytes, packed, plan::DType::U8); !s)
      return s;
    if (Status s = gather(small, smallAll, buckets, plan::DType::F32); !s)
      return s;
    if (Status s = zeroOut(); !s)
      return s;
    for (int r = 0; r < ranks; ++r) {
      qsgdUnpackKernel<<<blocksFor(n), kThreads, 0, stream>>>(recvBytes + packed * r, n, bits,
                                                              codes);
      if (Status s = launched("qsgdUnpackKernel"); !s)
        return s;
      if (Status s = cuda::qsgdDecode(codes, smallAll + buckets * r, 1, n, levels, c->bucket(),
                                      1.0f, out, stream);
          !s)
        return s;
    }
    return Status::ok();
  }

  Status sign() override {
    const float *g = source;
    if (c->momentum() > 0.0f) {
      if (Status s = cuda::accumulateMomentum(source, s1, n, c->momentum(), stream); !s)
        return s;
      g = s1;
    }
    if (Status s = cuda::signEncode(g, s0, n, c->bucket(), scratch, sendBytes, small, stream); !s)
      return s;
    if (Status s = gather(sendBytes, recvBytes, codeBytes(), plan::DType::U8); !s)
      return s;
    if (Status s = gather(small, smallAll, scaleCount(), plan::DType::F32); !s)
      return s;
    if (Status s = zeroOut(); !s)
      return s;
    return cuda::signDecode(recvBytes, smallAll, ranks, n, c->bucket(), 1.0f, out, stream);
  }

  // PowerSGD's phases (Codecs.h), step for step as Codecs.cpp's.
  Status powerSgdP(int64_t count, int64_t start) override {
    if (count == 0) {
      powerSgdStartKernel<<<blocksFor(cols * rank), kThreads, 0, stream>>>(s1, cols * rank,
                                                                           c->seed(), start);
      if (Status s = launched("powerSgdStartKernel"); !s)
        return s;
    }
    if (Status s = cuda::add<float>(source, s0, work, n, stream); !s)
      return s;
    return cuda::matmul<float>(*blas, work, s1, small, rows, rank, cols, false, false, stream);
  }

  Status powerSgdQ(float *q) override {
    if (Status s = cuda::orthogonalizeColumns(small, rows, rank, stream); !s)
      return s;
    if (Status s =
            cuda::matmul<float>(*blas, work, small, q, cols, rank, rows, true, false, stream);
        !s)
      return s;
    if (Status s = cuda::matmul<float>(*blas, small, q, out, rows, cols, rank, false, true, stream);
        !s)
      return s;
    subtractKernel<<<blocksFor(n), kThreads, 0, stream>>>(work, out, n, s0);
    return launched("subtractKernel");
  }

  Status powerSgdOut(const float *q) override {
    if (Status s = copy(s1, q, cols * rank); !s)
      return s;
    return cuda::matmul<float>(*blas, small, s1, out, rows, cols, rank, false, true, stream);
  }

  // knownCodec refuses Edit before a CudaExchange exists.
  Status edit() override { return Status::error("EDiT's Edit codec has no CUDA kernel"); }

  // Top-k whose values travel as 2-bit codes: Codecs.cpp's payload [k
  // indices][codes][5-float table], assembled in place (the table lands at
  // any byte offset: copied, not stored as floats). Chunked, the residual
  // decays first and each chunk's top-k is its own selection (a few launches
  // a chunk, once a local-SGD round).
  Status topk2bit() override {
    const bool chunked = c->chunk() > 0;
    const int64_t indexBytes = twoBitIndexBytes(*c);
    const int64_t codeBytes = cpu::twoBitCodeBytes(k);
    const int64_t payload = cpu::topkTwoBitPayloadBytes(k, indexBytes);
    int32_t *idx = sendPairs;
    float *val = reinterpret_cast<float *>(sendPairs + k);
    if (c->decay() != 1.0f)
      if (Status s = cuda::scale(s0, c->decay(), s0, n, stream); !s)
        return s;
    if (!chunked) {
      if (Status s = cuda::topkEncode(source, s0, n, k, scratch, idx, val, stream); !s)
        return s;
    } else {
      for (int64_t j = 0; j < chunks.count(); ++j) {
        const int64_t at = chunks.start(j), p = chunks.firstPair(j);
        if (Status s = cuda::topkEncode(source + at, s0 + at, chunks.length(j), chunks.pairsOf(j),
                                        scratch, idx + p, val + p, stream);
            !s)
          return s;
      }
      chunkOffsetsKernel<<<blocksFor(k), kThreads, 0, stream>>>(idx, k, chunks.size, chunks.full,
                                                                chunks.perFull, sendBytes);
      if (Status s = launched("chunkOffsetsKernel"); !s)
        return s;
    }
    if (Status s = cuda::twoBitEncode(val, k, cpu::kTwoBitRangeInSigmas, scratch,
                                      sendBytes + indexBytes * k, table, work, stream);
        !s)
      return s;
    if (Status s = cuda::scatterAddPairs(idx, work, 1, k, 1.0f, s0, n, scratch, nullptr, stream);
        !s)
      return s;
    if (!chunked)
      if (Status s = device->copy(sendBytes, idx, 4 * static_cast<size_t>(k), queue); !s)
        return s;
    if (Status s = device->copy(sendBytes + indexBytes * k + codeBytes, table,
                                sizeof(float) * cpu::kTwoBitTableFloats, queue);
        !s)
      return s;
    if (Status s = gather(sendBytes, recvBytes, payload, plan::DType::U8); !s)
      return s;
    splitTwoBitKernel<<<blocksFor(ranks * (k + codeBytes + cpu::kTwoBitTableFloats)), kThreads, 0,
                        stream>>>(recvBytes, ranks, k, codeBytes, indexBytes, n, chunks.size,
                                  chunks.full, chunks.perFull, allIdx, allCodes, allTables);
    if (Status s = launched("splitTwoBitKernel"); !s)
      return s;
    if (Status s = cuda::twoBitDecode(allCodes, allTables, ranks, k, allValues, stream); !s)
      return s;
    if (Status s = zeroOut(); !s)
      return s;
    if (Status s = cuda::scatterAddPairs(allIdx, allValues, ranks, k, 1.0f, out, n, scratch,
                                         badPair[0], stream);
        !s || !c->mean_over_senders())
      return s;
    if (Status s = device->fill(senders, plan::DType::I32, 0.0f, n, queue); !s)
      return s;
    countSendersKernel<<<blocksFor(ranks * k), kThreads, 0, stream>>>(allIdx, ranks * k, n,
                                                                      senders);
    if (Status s = launched("countSendersKernel"); !s)
      return s;
    divideBySendersKernel<<<blocksFor(n), kThreads, 0, stream>>>(senders, n, out);
    return launched("divideBySendersKernel");
  }
};

} // namespace

StatusOr<Kernel> cudaCompressedAllReduce(const OpArgs &a) {
  const plan::CodecAttrs &c = *a.task.attrs_as_CollectiveAttrs()->codec();
  if (Status s = knownCodec(c, a.at); !s)
    return s;
  auto task = std::make_shared<CodecTask>();
  if (Status s = task->bind<CudaExchange>(a); !s)
    return s;
  for (const auto &part : task->parts) {
    auto *p = static_cast<CudaExchange *>(part.get());
    p->device = a.device;
    p->queue = a.stream;
    p->stream = cuda::streamOf(a.stream);
  }
  if (task->elements() == 0)
    return launch(a, [task] { return task->countOnly(); });
  if (c.kind() == Codec::PowerSgd)
    task->takePowerSgdBuffers(a);
  auto *x = static_cast<CudaExchange *>(task->parts.front().get());

  // Scratch: the same requests in the executor's measuring pass and its
  // building pass (no device then: nothing is enqueued or created).
  auto floats = [&](int64_t count) { return static_cast<float *>(a.scratch(4 * count)); };
  auto bytes = [&](int64_t count) { return static_cast<uint8_t *>(a.scratch(count)); };
  auto ints = [&](int64_t count) { return static_cast<int32_t *>(a.scratch(4 * count)); };
  const int64_t n = x->n, k = x->k, R = x->ranks;
  size_t codecScratch = 0;
  switch (c.kind()) {
  case Codec::TopK:
  case Codec::Dgc:
    codecScratch = c.kind() == Codec::TopK ? cuda::topkScratchBytes(n) : cuda::dgcScratchBytes(n);
    codecScratch = std::max(codecScratch, cuda::scatterAddPairsScratchBytes(1));
    x->sendPairs = ints(2 * k);
    x->recvPairs = ints(2 * k * R);
    if (c.kind() == Codec::Dgc && c.clip() > 0.0f)
      x->work = floats(n);
    for (int r = 0; r < R; ++r)
      x->badPair.push_back(a.errorFlag([at = a.at, r, n](int64_t pair) {
        return at + ": rank " + std::to_string(r) + " of the group sent an index outside [0, " +
               std::to_string(n) + ") in pair " + std::to_string(pair) + " of its payload";
      }));
    break;
  case Codec::RandomK:
    codecScratch = std::max(cuda::randomkScratchBytes(n, k), cuda::scatterAddPairsScratchBytes(1));
    x->sendPairs = ints(2 * k);
    break;
  case Codec::Qsgd:
  case Codec::Sign:
    codecScratch = c.kind() == Codec::Qsgd ? cuda::qsgdEncodeScratchBytes(n, c.bucket())
                                           : cuda::signEncodeScratchBytes(n, c.bucket());
    x->takeCodeBuffers(a);
    break;
  case Codec::PowerSgd:
    break; // takePowerSgdBuffers
  case Codec::TopK2Bit: {
    const int64_t codeBytes = cpu::twoBitCodeBytes(k);
    const int64_t payload = cpu::topkTwoBitPayloadBytes(k, twoBitIndexBytes(c));
    codecScratch = std::max({cuda::topkScratchBytes(n), cuda::twoBitEncodeScratchBytes(k),
                             cuda::scatterAddPairsScratchBytes(R)});
    x->sendPairs = ints(2 * k);
    x->work = floats(k);
    x->table = floats(cpu::kTwoBitTableFloats);
    x->sendBytes = bytes(payload);
    x->recvBytes = bytes(payload * R);
    x->allIdx = ints(k * R);
    x->allCodes = bytes(codeBytes * R);
    x->allTables = floats(cpu::kTwoBitTableFloats * R);
    x->allValues = floats(k * R);
    if (c.mean_over_senders())
      x->senders = ints(n);
    x->badPair.push_back(a.errorFlag([at = a.at, k, n](int64_t i) {
      return at + ": rank " + std::to_string(i / k) + " of the group sent an index outside [0, " +
             std::to_string(n) + ") in pair " + std::to_string(i % k) + " of its payload";
    }));
    break;
  }
  default:
    break;
  }
  // Local clipping (DGC's, and top-k's under AdamW) and the AdamW update.
  if (c.clip() > 0.0f) {
    x->partials = static_cast<double *>(a.scratch(sizeof(double) * kClipBlocks));
    x->factor = floats(1);
  }
  for (const auto &part : task->parts)
    part->takeUpdateBuffer(a);
  if (codecScratch > 0)
    x->scratch = a.scratch(codecScratch);
  if (!a.device)
    return launch(a, [task] { return task->run(); }); // measured: dropped

  // Until a compressed exchange writes them (after the warm-up), the flags
  // say "no bad index".
  for (int64_t *flag : x->badPair)
    if (Status s = cudaStatus(cudaMemsetAsync(flag, 0xff, sizeof(int64_t), x->stream),
                              "cudaMemsetAsync (error flag)");
        !s)
      return s.withContext(a.at);
  if (c.kind() == Codec::PowerSgd) {
    // PowerSGD's own cuBLASLt handle, without a workspace: a collective's
    // kernel runs on the communicator's stream and thread, concurrently with
    // the compute stream's matmuls, which share the executor's workspace.
    // One handle for all of the task's matrices.
    auto blas = cuda::Blas::create(0);
    if (!blas)
      return blas.status().withContext(a.at);
    auto shared = std::make_shared<cuda::Blas>(blas.take());
    for (const auto &part : task->parts)
      static_cast<CudaExchange *>(part.get())->blas = shared;
  }
  return launch(a, [task] { return task->run(); });
}

} // namespace sbpflow::ops
