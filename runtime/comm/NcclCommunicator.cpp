// NCCL collectives with the Communicator interface's uneven (balanced-chunk)
// counts, built as grouped point-to-point-rooted calls where NCCL's own
// collective needs equal counts.
#include "runtime/comm/NcclCommunicator.h"

#include <gloo/rendezvous/store.h>
#include <nccl.h>

#include <cstring>
#include <thread>
#include <vector>

namespace sbpflow {
namespace {

using Clock = std::chrono::steady_clock;

ncclRedOp_t ncclOp(ReduceOp op) {
  switch (op) {
  case ReduceOp::Sum:
    return ncclSum;
  case ReduceOp::Max:
    return ncclMax;
  case ReduceOp::Min:
    return ncclMin;
  }
  return ncclSum;
}

bool allEqual(const int64_t *counts, int n) {
  for (int r = 1; r < n; ++r)
    if (counts[r] != counts[0])
      return false;
  return true;
}

} // namespace

NcclCommunicator::NcclCommunicator(ncclComm *comm, int rank, int size, cudaStream_t stream,
                                   std::string name)
    : comm_(comm), rank_(rank), size_(size), stream_(stream), name_(std::move(name)) {}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_)
    return;
  // A communicator still here is finalized (flushing what was issued); an
  // aborted one is gone already. One whose finalize fails is aborted.
  if (ncclCommFinalize(comm_) == ncclSuccess) {
    ncclResult_t state = ncclInProgress;
    while (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress)
      std::this_thread::yield();
    ncclCommDestroy(comm_);
  } else {
    ncclCommAbort(comm_);
  }
}

StatusOr<std::unique_ptr<NcclCommunicator>>
NcclCommunicator::connect(gloo::rendezvous::Store &store, const std::string &key, int rank,
                          int size, int device, cudaStream_t stream,
                          std::chrono::milliseconds timeout, std::string name) {
  auto fail = [&](const std::string &what) {
    return Status::error(name + ": NCCL set-up of rank " + std::to_string(rank) + " of " +
                         std::to_string(size) + " failed: " + what);
  };
  if (size < 1 || rank < 0 || rank >= size)
    return fail("rank out of range");
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess)
    return fail(std::string("cudaSetDevice(") + std::to_string(device) +
                "): " + cudaGetErrorString(e));

  ncclUniqueId id;
  try {
    if (rank == 0) {
      if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
        return fail(std::string("ncclGetUniqueId: ") + ncclGetErrorString(r));
      store.set(key, std::vector<char>(id.internal, id.internal + sizeof(id.internal)));
    } else {
      store.wait({key}, timeout);
      std::vector<char> bytes = store.get(key);
      if (bytes.size() != sizeof(id.internal))
        return fail("the unique id under '" + key + "' has " + std::to_string(bytes.size()) +
                    " bytes, not " + std::to_string(sizeof(id.internal)));
      std::memcpy(id.internal, bytes.data(), sizeof(id.internal));
    }
  } catch (const std::exception &e) {
    return fail(std::string("exchanging the unique id: ") + e.what());
  }

  // Non-blocking, so that a peer that never arrives is a timeout, not a hang.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  auto deadline = Clock::now() + timeout;
  while (r == ncclInProgress || (r == ncclSuccess && comm)) {
    ncclResult_t state = ncclSuccess;
    r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess || state != ncclInProgress) {
      r = r == ncclSuccess ? state : r;
      break;
    }
    if (Clock::now() > deadline) {
      ncclCommAbort(comm);
      return fail("initialisation did not finish within " + std::to_string(timeout.count()) +
                  " ms (a peer missing?)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (r != ncclSuccess) {
    std::string why = std::string(ncclGetErrorString(r)) +
                      (comm ? std::string(": ") + ncclGetLastError(comm) : std::string());
    if (comm)
      ncclCommAbort(comm);
    return fail(why);
  }
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(comm, rank, size, stream, std::move(name)));
}

Status NcclCommunicator::check(const char *op, int result) {
  if (result == ncclSuccess)
    return Status::ok();
  return Status::error(name_ + ": NCCL " + op + " failed on group rank " + std::to_string(rank_) +
                       ": " + ncclGetErrorString(static_cast<ncclResult_t>(result)) + " (" +
                       ncclGetLastError(comm_) + ")");
}

Status NcclCommunicator::settle(const char *op, int result) {
  ncclResult_t r = static_cast<ncclResult_t>(result);
  while (r == ncclInProgress) {
    ncclResult_t state = ncclSuccess;
    if (ncclResult_t q = ncclCommGetAsyncError(comm_, &state); q != ncclSuccess)
      return check(op, q);
    r = state;
    if (r == ncclInProgress)
      std::this_thread::yield();
  }
  return check(op, r);
}

Status NcclCommunicator::asyncError() {
  if (Status s = usable("error query"); !s)
    return s;
  ncclResult_t state = ncclSuccess;
  if (ncclResult_t r = ncclCommGetAsyncError(comm_, &state); r != ncclSuccess)
    return check("error query", r);
  return state == ncclInProgress ? Status::ok() : check("(asynchronous)", state);
}

void NcclCommunicator::abort() {
  if (comm_) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
}

Status NcclCommunicator::usable(const char *op) const {
  if (comm_)
    return Status::ok();
  return Status::error(name_ + ": NCCL " + op + " on an aborted communicator");
}

Status NcclCommunicator::allReduce(float *buf, int64_t count, ReduceOp op) {
  if (Status s = usable("all-reduce"); !s)
    return s;
  return settle("all-reduce", ncclAllReduce(buf, buf, static_cast<size_t>(count), ncclFloat32,
                                            ncclOp(op), comm_, stream_));
}

Status NcclCommunicator::allGather(const float *send, float *recv, const int64_t *recvCounts) {
  if (Status s = usable("all-gather"); !s)
    return s;
  if (allEqual(recvCounts, size_))
    return settle("all-gather", ncclAllGather(send, recv, static_cast<size_t>(recvCounts[0]),
                                              ncclFloat32, comm_, stream_));
  if (Status s = settle("group start", ncclGroupStart()); !s)
    return s;
  int64_t offset = 0;
  for (int r = 0; r < size_; ++r) {
    // The root's own chunk is copied by the broadcast itself (send -> recv).
    if (Status s = settle("all-gather (broadcast)",
                          ncclBroadcast(r == rank_ ? send : nullptr, recv + offset,
                                        static_cast<size_t>(recvCounts[r]), ncclFloat32, r, comm_,
                                        stream_));
        !s) {
      (void)ncclGroupEnd();
      return s;
    }
    offset += recvCounts[r];
  }
  return settle("all-gather (group end)", ncclGroupEnd());
}

Status NcclCommunicator::reduceScatter(const float *send, float *recv, const int64_t *recvCounts,
                                       ReduceOp op) {
  if (Status s = usable("reduce-scatter"); !s)
    return s;
  if (allEqual(recvCounts, size_))
    return settle("reduce-scatter",
                  ncclReduceScatter(send, recv, static_cast<size_t>(recvCounts[0]), ncclFloat32,
                                    ncclOp(op), comm_, stream_));
  if (Status s = settle("group start", ncclGroupStart()); !s)
    return s;
  int64_t offset = 0;
  for (int r = 0; r < size_; ++r) {
    if (Status s = settle("reduce-scatter (reduce)",
                          ncclReduce(send + offset, r == rank_ ? recv : nullptr,
                                     static_cast<size_t>(recvCounts[r]), ncclFloat32, ncclOp(op), r,
                                     comm_, stream_));
        !s) {
      (void)ncclGroupEnd();
      return s;
    }
    offset += recvCounts[r];
  }
  return settle("reduce-scatter (group end)", ncclGroupEnd());
}

Status NcclCommunicator::allToAll(const float *send, const int64_t *sendCounts, float *recv,
                                  const int64_t *recvCounts) {
  if (Status s = usable("all-to-all"); !s)
    return s;
  if (Status s = settle("group start", ncclGroupStart()); !s)
    return s;
  int64_t sendOffset = 0, recvOffset = 0;
  for (int r = 0; r < size_; ++r) {
    Status s =
        settle("all-to-all (send)", ncclSend(send + sendOffset, static_cast<size_t>(sendCounts[r]),
                                             ncclFloat32, r, comm_, stream_));
    if (s)
      s = settle("all-to-all (recv)",
                 ncclRecv(recv + recvOffset, static_cast<size_t>(recvCounts[r]), ncclFloat32, r,
                          comm_, stream_));
    if (!s) {
      (void)ncclGroupEnd();
      return s;
    }
    sendOffset += sendCounts[r];
    recvOffset += recvCounts[r];
  }
  return settle("all-to-all (group end)", ncclGroupEnd());
}

} // namespace sbpflow
