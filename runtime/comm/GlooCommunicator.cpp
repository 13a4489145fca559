// Gloo-backed collectives with uneven (balanced-chunk) counts. Reduce-scatter
// is an all-to-all of chunks followed by a local reduction: the Debian Gloo has
// no generic uneven reduce-scatter with the unbound-buffer API.
#include "runtime/comm/GlooCommunicator.h"

#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <cstring>
#include <functional>

namespace sbpflow {
namespace {

void reduceInto(float *acc, const float *x, size_t n, ReduceOp op) {
  switch (op) {
  case ReduceOp::Sum:
    for (size_t i = 0; i < n; ++i)
      acc[i] += x[i];
    break;
  case ReduceOp::Max:
    for (size_t i = 0; i < n; ++i)
      acc[i] = std::max(acc[i], x[i]);
    break;
  case ReduceOp::Min:
    for (size_t i = 0; i < n; ++i)
      acc[i] = std::min(acc[i], x[i]);
    break;
  }
}

} // namespace

GlooCommunicator::GlooCommunicator(std::shared_ptr<gloo::Context> context, std::string name)
    : context_(std::move(context)), name_(std::move(name)) {}

GlooCommunicator::~GlooCommunicator() = default;

StatusOr<std::unique_ptr<GlooCommunicator>>
GlooCommunicator::connect(gloo::rendezvous::Store &store, int rank, int size,
                          std::chrono::milliseconds timeout, std::string name,
                          const std::string &host) {
  if (size < 1 || rank < 0 || rank >= size)
    return Status::error(name + ": rank " + std::to_string(rank) + " out of range for size " +
                         std::to_string(size));
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

Status GlooCommunicator::failed(const char *op, const std::exception &e) {
  broken_ = true;
  return Status::error(name_ + ": gloo " + op + " failed on group rank " +
                       std::to_string(context_->rank) + ": " + e.what());
}

namespace {
// Gloo's reduce callback: c = a (op) b, elementwise. Gloo calls it in place
// (c == a): `ivdep` keeps the loop vectorised where GCC's overlap check would
// fall back to scalar code.
template <typename Op> void combine(void *c, const void *a, const void *b, size_t n) {
  auto *o = static_cast<float *>(c);
  auto *x = static_cast<const float *>(a);
  auto *y = static_cast<const float *>(b);
  Op op;
#pragma GCC ivdep
  for (size_t i = 0; i < n; ++i)
    o[i] = op(x[i], y[i]);
}
struct Max {
  float operator()(float a, float b) const { return std::max(a, b); }
};
struct Min {
  float operator()(float a, float b) const { return std::min(a, b); }
};
} // namespace

Status GlooCommunicator::allReduce(float *buf, int64_t count, ReduceOp op) {
  if (broken_)
    return Status::error(name_ + ": allReduce on a communicator broken by an earlier error");
  if (context_->size == 1 || count == 0)
    return Status::ok();
  try {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(buf, static_cast<size_t>(count));
    opts.setTag(tag_++);
    switch (op) {
    case ReduceOp::Sum:
      opts.setReduceFunction(&combine<std::plus<float>>);
      break;
    case ReduceOp::Max:
      opts.setReduceFunction(&combine<Max>);
      break;
    case ReduceOp::Min:
      opts.setReduceFunction(&combine<Min>);
      break;
    }
    gloo::allreduce(opts);
  } catch (const std::exception &e) {
    return failed("allReduce", e);
  }
  return Status::ok();
}

Status GlooCommunicator::allGather(const float *send, float *recv, const int64_t *recvCounts) {
  if (broken_)
    return Status::error(name_ + ": allGather on a communicator broken by an earlier error");
  const int n = context_->size, me = context_->rank;
  if (n == 1) {
    if (recv != send && recvCounts[0] > 0)
      std::memmove(recv, send, recvCounts[0] * sizeof(float));
    return Status::ok();
  }
  std::vector<size_t> counts(recvCounts, recvCounts + n);
  try {
    gloo::AllgathervOptions opts(context_);
    // Gloo only reads the input; its API takes a non-const pointer.
    opts.setInput(const_cast<float *>(send), counts[me]);
    opts.setOutput(recv, counts);
    opts.setTag(tag_++);
    gloo::allgatherv(opts);
  } catch (const std::exception &e) {
    return failed("allGather", e);
  }
  return Status::ok();
}

Status GlooCommunicator::allToAll(const float *send, const int64_t *sendCounts, float *recv,
                                  const int64_t *recvCounts) {
  if (broken_)
    return Status::error(name_ + ": allToAll on a communicator broken by an earlier error");
  const int n = context_->size;
  if (n == 1) {
    if (recv != send && sendCounts[0] > 0)
      std::memmove(recv, send, sendCounts[0] * sizeof(float));
    return Status::ok();
  }
  std::vector<int64_t> in(sendCounts, sendCounts + n), out(recvCounts, recvCounts + n);
  int64_t inTotal = 0, outTotal = 0;
  for (int i = 0; i < n; ++i) {
    inTotal += in[i];
    outTotal += out[i];
  }
  // Gloo rejects zero-sized buffers; a dummy element keeps the exchange valid.
  float dummyIn = 0, dummyOut = 0;
  try {
    gloo::AlltoallvOptions opts(context_);
    opts.setInput(inTotal ? const_cast<float *>(send) : &dummyIn, in);
    opts.setOutput(outTotal ? recv : &dummyOut, out);
    opts.setTag(tag_++);
    gloo::alltoallv(opts);
  } catch (const std::exception &e) {
    return failed("allToAll", e);
  }
  return Status::ok();
}

Status GlooCommunicator::reduceScatter(const float *send, float *recv, const int64_t *recvCounts,
                                       ReduceOp op) {
  if (broken_)
    return Status::error(name_ + ": reduceScatter on a communicator broken by an earlier error");
  const int n = context_->size, me = context_->rank;
  const int64_t mine = recvCounts[me];
  if (n == 1) {
    if (recv != send && mine > 0)
      std::memmove(recv, send, mine * sizeof(float));
    return Status::ok();
  }
  std::vector<int64_t> recvFrom(n, mine);
  if (scratch_.size() < static_cast<size_t>(mine * n))
    scratch_.resize(static_cast<size_t>(mine * n));
  Status s = allToAll(send, recvCounts, scratch_.data(), recvFrom.data());
  if (!s)
    return Status::error(name_ + ": gloo reduceScatter failed: " + s.message());
  std::memcpy(recv, scratch_.data(), mine * sizeof(float));
  for (int r = 1; r < n; ++r)
    reduceInto(recv, scratch_.data() + r * mine, static_cast<size_t>(mine), op);
  return Status::ok();
}

} // namespace sbpflow
