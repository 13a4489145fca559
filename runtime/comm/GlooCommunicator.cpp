// Gloo-backed collectives with uneven (balanced-chunk) counts on every
// element type of Communicator.h, and point-to-point messages over unbound
// buffers. Reduce-scatter is an all-to-all of chunks followed by a local
// reduction: the Debian Gloo has no generic uneven reduce-scatter with the
// unbound-buffer API.
#include "runtime/comm/GlooCommunicator.h"

#include "kernels/cpu/Kernels.h"
#include "runtime/plan/PlanTypes.h"

#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <mutex>
#include <type_traits>

namespace sbpflow {
namespace {

// bfloat16 in its uint16 storage, a type of its own so that the reductions
// below pick their widening overloads.
struct Bf16 {
  uint16_t bits;
};
static_assert(sizeof(Bf16) == 2);

inline float widen(Bf16 x) {
  const uint32_t bits = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

struct AddOp {
  float operator()(float a, float b) const { return a + b; }
  // Wraps (two's complement) where a signed add would overflow, as
  // ncclInt32 does.
  int32_t operator()(int32_t a, int32_t b) const {
    return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
  }
  uint8_t operator()(uint8_t a, uint8_t b) const { return static_cast<uint8_t>(a + b); }
  // Rounds every sum: Gloo's ring calls this once per hop.
  Bf16 operator()(Bf16 a, Bf16 b) const { return {cpu::toBf16(widen(a) + widen(b))}; }
};
// As std::max and std::min, on the values a bf16 holds.
struct MaxOp {
  template <class T> T operator()(T a, T b) const { return std::max(a, b); }
  Bf16 operator()(Bf16 a, Bf16 b) const { return widen(a) < widen(b) ? b : a; }
};
struct MinOp {
  template <class T> T operator()(T a, T b) const { return std::min(a, b); }
  Bf16 operator()(Bf16 a, Bf16 b) const { return widen(b) < widen(a) ? b : a; }
};

// Calls f(T{}) with T the storage type of `type` (a type isCommType accepts).
template <class F> void withElement(plan::DType type, F &&f) {
  switch (type) {
  case plan::DType::BF16:
    f(Bf16{});
    return;
  case plan::DType::I32:
    f(int32_t{});
    return;
  case plan::DType::U8:
    f(uint8_t{});
    return;
  default:
    f(float{});
    return;
  }
}

// Gloo's reduce callback: c = a (op) b, elementwise. Gloo calls it in place
// (c == a): `ivdep` keeps the loop vectorised where GCC's overlap check would
// fall back to scalar code.
template <class T, class Op> void combine(void *c, const void *a, const void *b, size_t n) {
  auto *o = static_cast<T *>(c);
  auto *x = static_cast<const T *>(a);
  auto *y = static_cast<const T *>(b);
  Op op;
#pragma GCC ivdep
  for (size_t i = 0; i < n; ++i)
    o[i] = op(x[i], y[i]);
}

template <class T> gloo::AllreduceOptions::Func reduceFunction(ReduceOp op) {
  switch (op) {
  case ReduceOp::Max:
    return &combine<T, MaxOp>;
  case ReduceOp::Min:
    return &combine<T, MinOp>;
  default:
    return &combine<T, AddOp>;
  }
}

// out = chunk 0 (op) chunk 1 (op) ... (op) chunk n-1, elementwise, over n
// consecutive chunks of `count` elements.
template <class T, class Op> void reduceChunks(const T *chunks, int n, size_t count, T *out) {
  std::memcpy(out, chunks, count * sizeof(T));
  Op op;
  for (int r = 1; r < n; ++r) {
    const T *x = chunks + static_cast<size_t>(r) * count;
#pragma GCC ivdep
    for (size_t i = 0; i < count; ++i)
      out[i] = op(out[i], x[i]);
  }
}

// As reduceChunks; a bf16 sum is taken in f32 (in `acc`) and rounded once.
template <class T>
void reduceChunks(const T *chunks, int n, size_t count, ReduceOp op, T *out,
                  std::vector<float> &acc) {
  if constexpr (std::is_same_v<T, Bf16>) {
    if (op == ReduceOp::Sum) {
      if (acc.size() < count)
        acc.resize(count);
      for (size_t i = 0; i < count; ++i)
        acc[i] = widen(chunks[i]);
      for (int r = 1; r < n; ++r) {
        const Bf16 *x = chunks + static_cast<size_t>(r) * count;
        for (size_t i = 0; i < count; ++i)
          acc[i] += widen(x[i]);
      }
      for (size_t i = 0; i < count; ++i)
        out[i].bits = cpu::toBf16(acc[i]);
      return;
    }
  }
  switch (op) {
  case ReduceOp::Max:
    return reduceChunks<T, MaxOp>(chunks, n, count, out);
  case ReduceOp::Min:
    return reduceChunks<T, MinOp>(chunks, n, count, out);
  default:
    return reduceChunks<T, AddOp>(chunks, n, count, out);
  }
}

// Send/recv: what the two ends of a message exchange before the payload.
struct MessageHeader {
  int64_t count;
  int64_t type;
};

// The Gloo slot of part `part` (0: the sender's header, 1: the receiver's,
// 2: the payload) of message `number` from group rank `from` to `to`.
// Gloo's collectives put 0x01..0x08 in the top byte (gloo/types.h); a
// message puts 0x10 or 0x11 there (the direction), so that the two
// directions of a pair and the collectives never share a slot.
uint64_t messageSlot(int from, int to, uint32_t number, int part) {
  const uint64_t prefix = from < to ? 0x10 : 0x11;
  return prefix << 56 | static_cast<uint64_t>(number) << 8 | static_cast<uint64_t>(part);
}

std::string typeName(int64_t type) {
  const auto t = static_cast<plan::DType>(type);
  return type >= 0 && type <= 127 && isCommType(t) ? plan::EnumNameDType(t)
                                                   : "type " + std::to_string(type);
}

// The bytes rank `rank` of `size` sends in gloo::allreduce's ring
// (gloo/allreduce.cc, the default algorithm) on `bytes` bytes of elements
// of `elementSize`: the buffer is cut into numSegments = size * S segments
// of segmentBytes (the last ones short or empty), chunk c being segments
// [c*S, (c+1)*S). Its reduce-scatter sends every chunk but chunk `rank`,
// its all-gather every chunk but chunk `rank - 1`, one segment per message.
uint64_t ringAllReduceSent(uint64_t bytes, uint64_t elementSize, int rank, int size) {
  const uint64_t n = static_cast<uint64_t>(size);
  const uint64_t maxSegment =
      elementSize *
      std::max<uint64_t>(1, gloo::detail::AllreduceOptionsImpl::kMaxSegmentSize / elementSize);
  auto roundUp = [](uint64_t x, uint64_t m) { return (x + m - 1) / m * m; };
  const uint64_t numSegments = roundUp(std::max((bytes + maxSegment - 1) / maxSegment, 2 * n), n);
  const uint64_t perRank = numSegments / n;
  const uint64_t segmentBytes = roundUp((bytes + numSegments - 1) / numSegments, elementSize);
  auto chunkBytes = [&](uint64_t c) {
    const uint64_t begin = std::min(bytes, c * perRank * segmentBytes);
    const uint64_t end = std::min(bytes, (c + 1) * perRank * segmentBytes);
    return end - begin;
  };
  const uint64_t r = static_cast<uint64_t>(rank);
  return (bytes - chunkBytes(r)) + (bytes - chunkBytes((r + n - 1) % n));
}

// The number of ranks that rank `rank` sends to in gloo::broadcast's
// binomial tree rooted at `root` (gloo/broadcast.cc): virtual rank
// v = rank - root sends to v + 2^i for every 2^i > v with v + 2^i < size.
uint64_t broadcastChildren(int rank, int size, int root) {
  const uint64_t n = static_cast<uint64_t>(size);
  const uint64_t v = (static_cast<uint64_t>(rank) + n - static_cast<uint64_t>(root)) % n;
  uint64_t children = 0;
  for (uint64_t step = 1; step < n; step <<= 1)
    if (step > v && v + step < n)
      ++children;
  return children;
}

} // namespace

GlooCommunicator::GlooCommunicator(std::shared_ptr<gloo::Context> context, std::string name)
    : context_(std::move(context)), name_(std::move(name)), sent_(context_->size, 0),
      received_(context_->size, 0) {}

GlooCommunicator::~GlooCommunicator() = default;

StatusOr<std::unique_ptr<GlooCommunicator>>
GlooCommunicator::connect(gloo::rendezvous::Store &store, int rank, int size,
                          std::chrono::milliseconds timeout, std::string name,
                          const std::string &host) {
  if (size < 1 || rank < 0 || rank >= size)
    return Status::error(name + ": rank " + std::to_string(rank) + " out of range for size " +
                         std::to_string(size));
  // A write to the socket of a peer that died raises SIGPIPE, which ends the
  // process unless ignored; ignored, the write fails with EPIPE and Gloo
  // throws, which is an error naming the peer (a dead peer is an error, not
  // a crash). Once per process, before the first socket exists.
  static std::once_flag ignoreSigpipe;
  std::call_once(ignoreSigpipe, [] { std::signal(SIGPIPE, SIG_IGN); });
  try {
    gloo::transport::tcp::attr attr;
    if (!host.empty())
      attr.hostname = host;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, size);
    context->setTimeout(timeout);
    context->connectFullMesh(store, device);
    return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(context, std::move(name)));
  } catch (const std::exception &e) {
    return Status::error(name + ": gloo rendezvous of rank " + std::to_string(rank) + " of " +
                         std::to_string(size) + " failed: " + e.what());
  }
}

int GlooCommunicator::rank() const { return context_->rank; }
int GlooCommunicator::size() const { return context_->size; }

template <class Call> Status GlooCommunicator::collective(const char *op, Call &&call) {
  try {
    call(tag_++);
  } catch (const std::exception &e) {
    return failed(op, e);
  }
  return Status::ok();
}

Status GlooCommunicator::failed(const std::string &op, const std::exception &e) {
  broken_ = true;
  return Status::error(name_ + ": gloo " + op + " failed on group rank " +
                       std::to_string(context_->rank) + ": " + e.what());
}

Status GlooCommunicator::usable(const char *op, plan::DType type) const {
  if (broken_)
    return Status::error(name_ + ": " + op + " on a communicator broken by an earlier error");
  if (!isCommType(type))
    return Status::error(name_ + ": " + op + " of unknown element type " +
                         std::to_string(static_cast<int>(type)));
  return Status::ok();
}

Status GlooCommunicator::allReduce(void *buf, int64_t count, plan::DType type, ReduceOp op) {
  if (Status s = usable("allReduce", type); !s)
    return s;
  if (context_->size == 1 || count <= 0)
    return Status::ok();
  return collective("allReduce", [&](uint32_t tag) {
    gloo::AllreduceOptions opts(context_);
    withElement(type, [&](auto e) {
      using T = decltype(e);
      opts.setOutput(static_cast<T *>(buf), static_cast<size_t>(count));
      opts.setReduceFunction(reduceFunction<T>(op));
    });
    opts.setTag(tag);
    gloo::allreduce(opts);
    countSent(ringAllReduceSent(static_cast<uint64_t>(count) * dtypeSize(type), dtypeSize(type),
                                context_->rank, context_->size));
  });
}

// Data movement goes through Gloo as bytes: any element type moves as it is.
Status GlooCommunicator::allGather(const void *send, void *recv, const int64_t *recvCounts,
                                   plan::DType type) {
  if (Status s = usable("allGather", type); !s)
    return s;
  const int n = context_->size, me = context_->rank;
  const size_t bytes = dtypeSize(type);
  if (n == 1) {
    if (recv != send && recvCounts[0] > 0)
      std::memmove(recv, send, recvCounts[0] * bytes);
    return Status::ok();
  }
  std::vector<size_t> counts(n);
  for (int r = 0; r < n; ++r)
    counts[r] = static_cast<size_t>(recvCounts[r]) * bytes;
  return collective("allGather", [&](uint32_t tag) {
    gloo::AllgathervOptions opts(context_);
    // Gloo only reads the input; its API takes a non-const pointer.
    opts.setInput(const_cast<uint8_t *>(static_cast<const uint8_t *>(send)), counts[me]);
    opts.setOutput(static_cast<uint8_t *>(recv), counts);
    opts.setTag(tag);
    gloo::allgatherv(opts);
    // A ring: this rank forwards every block but the next rank's.
    uint64_t total = 0;
    for (size_t c : counts)
      total += c;
    countSent(total - counts[(me + 1) % n]);
  });
}

Status GlooCommunicator::allToAll(const void *send, const int64_t *sendCounts, void *recv,
                                  const int64_t *recvCounts, plan::DType type) {
  if (Status s = usable("allToAll", type); !s)
    return s;
  const int n = context_->size;
  const int64_t bytes = static_cast<int64_t>(dtypeSize(type));
  if (n == 1) {
    if (recv != send && sendCounts[0] > 0)
      std::memmove(recv, send, sendCounts[0] * bytes);
    return Status::ok();
  }
  std::vector<int64_t> in(n), out(n);
  int64_t inTotal = 0, outTotal = 0;
  for (int i = 0; i < n; ++i) {
    in[i] = sendCounts[i] * bytes;
    out[i] = recvCounts[i] * bytes;
    inTotal += in[i];
    outTotal += out[i];
  }
  // Gloo rejects zero-sized buffers; a dummy byte keeps the exchange valid.
  uint8_t dummyIn = 0, dummyOut = 0;
  return collective("allToAll", [&](uint32_t tag) {
    gloo::AlltoallvOptions opts(context_);
    opts.setInput(inTotal ? const_cast<uint8_t *>(static_cast<const uint8_t *>(send)) : &dummyIn,
                  in);
    opts.setOutput(outTotal ? static_cast<uint8_t *>(recv) : &dummyOut, out);
    opts.setTag(tag);
    gloo::alltoallv(opts);
    countSent(static_cast<uint64_t>(inTotal - in[context_->rank]));
  });
}

Status GlooCommunicator::reduceScatter(const void *send, void *recv, const int64_t *recvCounts,
                                       plan::DType type, ReduceOp op) {
  if (Status s = usable("reduceScatter", type); !s)
    return s;
  const int n = context_->size, me = context_->rank;
  const int64_t mine = recvCounts[me];
  const size_t bytes = dtypeSize(type);
  if (n == 1) {
    if (recv != send && mine > 0)
      std::memmove(recv, send, mine * bytes);
    return Status::ok();
  }
  std::vector<int64_t> recvFrom(n, mine);
  if (scratch_.size() < static_cast<size_t>(mine * n) * bytes)
    scratch_.resize(static_cast<size_t>(mine * n) * bytes);
  Status s = allToAll(send, recvCounts, scratch_.data(), recvFrom.data(), type);
  if (!s)
    return Status::error(name_ + ": gloo reduceScatter failed: " + s.message());
  withElement(type, [&](auto e) {
    using T = decltype(e);
    reduceChunks(reinterpret_cast<const T *>(scratch_.data()), n, static_cast<size_t>(mine), op,
                 static_cast<T *>(recv), scratchF32_);
  });
  return Status::ok();
}

Status GlooCommunicator::broadcast(void *buf, int64_t count, plan::DType type, int root) {
  if (Status s = usable("broadcast", type); !s)
    return s;
  if (root < 0 || root >= context_->size)
    return Status::error(name_ + ": broadcast from root " + std::to_string(root) +
                         ", not a rank of a group of " + std::to_string(context_->size));
  if (context_->size == 1 || count <= 0)
    return Status::ok();
  return collective("broadcast", [&](uint32_t tag) {
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(static_cast<uint8_t *>(buf), static_cast<size_t>(count) * dtypeSize(type));
    opts.setRoot(root);
    opts.setTag(tag);
    gloo::broadcast(opts);
    countSent(broadcastChildren(context_->rank, context_->size, root) *
              static_cast<uint64_t>(count) * dtypeSize(type));
  });
}

Status GlooCommunicator::checkPeer(const char *op, int peer) const {
  if (peer < 0 || peer >= context_->size || peer == context_->rank)
    return Status::error(name_ + ": " + op + " peer " + std::to_string(peer) + " on group rank " +
                         std::to_string(context_->rank) + ": the peer must be another rank of " +
                         "the group of " + std::to_string(context_->size));
  return Status::ok();
}

Status GlooCommunicator::send(const void *buf, int64_t count, plan::DType type, int peer) {
  if (Status s = usable("send", type); !s)
    return s;
  if (Status s = checkPeer("send to", peer); !s)
    return s;
  return transfer(true, const_cast<void *>(buf), count, type, peer);
}

Status GlooCommunicator::recv(void *buf, int64_t count, plan::DType type, int peer) {
  if (Status s = usable("recv", type); !s)
    return s;
  if (Status s = checkPeer("recv from", peer); !s)
    return s;
  return transfer(false, buf, count, type, peer);
}

// Both ends first exchange headers (sender's and receiver's counts and
// types), each checking the other's; only then does the receiver post the
// payload's receive, so that a longer message never meets a shorter buffer
// (Gloo would fail an assertion on its device thread). Gloo sends a payload
// once the receiver has posted its receive.
Status GlooCommunicator::transfer(bool outgoing, void *buf, int64_t count, plan::DType type,
                                  int peer) {
  const int me = context_->rank;
  const std::string what =
      std::string(outgoing ? "send to" : "recv from") + " peer " + std::to_string(peer);
  if (count < 0)
    return Status::error(name_ + ": " + what + " on group rank " + std::to_string(me) +
                         ": negative count " + std::to_string(count));
  const int from = outgoing ? me : peer, to = outgoing ? peer : me;
  const uint32_t number = outgoing ? sent_[peer]++ : received_[peer]++;
  const std::chrono::milliseconds timeout = context_->getTimeout();
  MessageHeader mine{count, static_cast<int64_t>(type)}, theirs{-1, -1};
  try {
    auto out = context_->createUnboundBuffer(&mine, sizeof mine);
    auto in = context_->createUnboundBuffer(&theirs, sizeof theirs);
    out->send(peer, messageSlot(from, to, number, outgoing ? 0 : 1));
    in->recv(peer, messageSlot(from, to, number, outgoing ? 1 : 0));
    if (!in->waitRecv(timeout) || !out->waitSend(timeout))
      throw std::runtime_error("the header exchange was aborted");
    if (theirs.count != count || theirs.type != mine.type)
      return Status::error(name_ + ": " + what + " on group rank " + std::to_string(me) +
                           ": the peer " + (outgoing ? "expects " : "sends ") +
                           std::to_string(theirs.count) + " elements of " + typeName(theirs.type) +
                           ", this rank " + (outgoing ? "sends " : "expects ") +
                           std::to_string(count) + " of " + typeName(mine.type));
    if (count == 0)
      return Status::ok();
    auto payload = context_->createUnboundBuffer(buf, static_cast<size_t>(count) * dtypeSize(type));
    const uint64_t slot = messageSlot(from, to, number, 2);
    if (outgoing) {
      payload->send(peer, slot);
      if (!payload->waitSend(timeout))
        throw std::runtime_error("the send was aborted");
      countSent(static_cast<uint64_t>(count) * dtypeSize(type));
    } else {
      payload->recv(peer, slot);
      if (!payload->waitRecv(timeout))
        throw std::runtime_error("the receive was aborted");
    }
  } catch (const std::exception &e) {
    return failed(what, e);
  }
  return Status::ok();
}

} // namespace sbpflow
