// NCCL collectives with the Communicator interface's uneven (balanced-chunk)
// counts, built as grouped point-to-point-rooted calls where NCCL's own
// collective needs equal counts; every element type maps to an NCCL type.
#include "runtime/comm/NcclCommunicator.h"

#include "runtime/plan/PlanTypes.h"

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

// A type isCommType accepts.
ncclDataType_t ncclType(plan::DType type) {
  switch (type) {
  case plan::DType::BF16:
    return ncclBfloat16;
  case plan::DType::I32:
    return ncclInt32;
  case plan::DType::U8:
    return ncclUint8;
  default:
    return ncclFloat32;
  }
}

// Element `offset` of a device buffer of `type`.
const void *at(const void *p, int64_t offset, plan::DType type) {
  return static_cast<const char *>(p) + offset * static_cast<int64_t>(dtypeSize(type));
}
void *at(void *p, int64_t offset, plan::DType type) {
  return static_cast<char *>(p) + offset * static_cast<int64_t>(dtypeSize(type));
}

uint64_t bytesOf(int64_t count, plan::DType type) {
  return count > 0 ? static_cast<uint64_t>(count) * dtypeSize(type) : 0;
}

uint64_t totalBytes(const int64_t *counts, int n, plan::DType type) {
  uint64_t total = 0;
  for (int r = 0; r < n; ++r)
    total += bytesOf(counts[r], type);
  return total;
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

Status NcclCommunicator::usable(const char *op, plan::DType type) const {
  if (Status s = usable(op); !s)
    return s;
  if (!isCommType(type))
    return Status::error(name_ + ": NCCL " + op + " of unknown element type " +
                         std::to_string(static_cast<int>(type)));
  return Status::ok();
}

Status NcclCommunicator::checkPeer(const char *op, int peer) const {
  if (peer < 0 || peer >= size_ || peer == rank_)
    return Status::error(name_ + ": NCCL " + op + " peer " + std::to_string(peer) +
                         " on group rank " + std::to_string(rank_) +
                         ": the peer must be another rank of the group of " +
                         std::to_string(size_));
  return Status::ok();
}

Status NcclCommunicator::allReduce(void *buf, int64_t count, plan::DType type, ReduceOp op) {
  if (Status s = usable("all-reduce", type); !s)
    return s;
  const uint64_t n = static_cast<uint64_t>(size_);
  return counted(2 * (n - 1) * bytesOf(count, type) / n,
                 settle("all-reduce", ncclAllReduce(buf, buf, static_cast<size_t>(count),
                                                    ncclType(type), ncclOp(op), comm_, stream_)));
}

Status NcclCommunicator::allGather(const void *send, void *recv, const int64_t *recvCounts,
                                   plan::DType type) {
  if (Status s = usable("all-gather", type); !s)
    return s;
  const ncclDataType_t t = ncclType(type);
  // Even or as one broadcast per rank, the ring forwards every block but
  // that of the next rank in the ring (rank r+1 where the ring is in rank
  // order).
  const uint64_t sent = size_ > 1 ? totalBytes(recvCounts, size_, type) -
                                        bytesOf(recvCounts[(rank_ + 1) % size_], type)
                                  : 0;
  if (allEqual(recvCounts, size_))
    return counted(
        sent, settle("all-gather", ncclAllGather(send, recv, static_cast<size_t>(recvCounts[0]), t,
                                                 comm_, stream_)));
  if (Status s = settle("group start", ncclGroupStart()); !s)
    return s;
  int64_t offset = 0;
  for (int r = 0; r < size_; ++r) {
    // The root's own chunk is copied by the broadcast itself (send -> recv).
    if (Status s = settle("all-gather (broadcast)",
                          ncclBroadcast(r == rank_ ? send : nullptr, at(recv, offset, type),
                                        static_cast<size_t>(recvCounts[r]), t, r, comm_, stream_));
        !s) {
      (void)ncclGroupEnd();
      return s;
    }
    offset += recvCounts[r];
  }
  return counted(sent, settle("all-gather (group end)", ncclGroupEnd()));
}

Status NcclCommunicator::reduceScatter(const void *send, void *recv, const int64_t *recvCounts,
                                       plan::DType type, ReduceOp op) {
  if (Status s = usable("reduce-scatter", type); !s)
    return s;
  const ncclDataType_t t = ncclType(type);
  // The ring's reduce-scatter, or one ring reduce per root (every rank but
  // the root sends its block): every block but this rank's.
  const uint64_t sent =
      size_ > 1 ? totalBytes(recvCounts, size_, type) - bytesOf(recvCounts[rank_], type) : 0;
  if (allEqual(recvCounts, size_))
    return counted(sent, settle("reduce-scatter",
                                ncclReduceScatter(send, recv, static_cast<size_t>(recvCounts[0]), t,
                                                  ncclOp(op), comm_, stream_)));
  if (Status s = settle("group start", ncclGroupStart()); !s)
    return s;
  int64_t offset = 0;
  for (int r = 0; r < size_; ++r) {
    if (Status s = settle("reduce-scatter (reduce)",
                          ncclReduce(at(send, offset, type), r == rank_ ? recv : nullptr,
                                     static_cast<size_t>(recvCounts[r]), t, ncclOp(op), r, comm_,
                                     stream_));
        !s) {
      (void)ncclGroupEnd();
      return s;
    }
    offset += recvCounts[r];
  }
  return counted(sent, settle("reduce-scatter (group end)", ncclGroupEnd()));
}

Status NcclCommunicator::allToAll(const void *send, const int64_t *sendCounts, void *recv,
                                  const int64_t *recvCounts, plan::DType type) {
  if (Status s = usable("all-to-all", type); !s)
    return s;
  const ncclDataType_t t = ncclType(type);
  if (Status s = settle("group start", ncclGroupStart()); !s)
    return s;
  int64_t sendOffset = 0, recvOffset = 0;
  for (int r = 0; r < size_; ++r) {
    Status s = settle("all-to-all (send)",
                      ncclSend(at(send, sendOffset, type), static_cast<size_t>(sendCounts[r]), t, r,
                               comm_, stream_));
    if (s)
      s = settle("all-to-all (recv)",
                 ncclRecv(at(recv, recvOffset, type), static_cast<size_t>(recvCounts[r]), t, r,
                          comm_, stream_));
    if (!s) {
      (void)ncclGroupEnd();
      return s;
    }
    sendOffset += sendCounts[r];
    recvOffset += recvCounts[r];
  }
  // Direct sends: every chunk but this rank's own.
  const uint64_t sent = totalBytes(sendCounts, size_, type) - bytesOf(sendCounts[rank_], type);
  return counted(sent, settle("all-to-all (group end)", ncclGroupEnd()));
}

Status NcclCommunicator::broadcast(void *buf, int64_t count, plan::DType type, int root) {
  if (Status s = usable("broadcast", type); !s)
    return s;
  if (root < 0 || root >= size_)
    return Status::error(name_ + ": NCCL broadcast from root " + std::to_string(root) +
                         ", not a rank of a group of " + std::to_string(size_));
  // The ring from the root: every rank but the ring's last, rank root-1
  // where the ring is in rank order, forwards the buffer.
  const uint64_t sent = size_ > 1 && rank_ != (root + size_ - 1) % size_ ? bytesOf(count, type) : 0;
  return counted(sent, settle("broadcast", ncclBroadcast(buf, buf, static_cast<size_t>(count),
                                                         ncclType(type), root, comm_, stream_)));
}

template <class Call>
Status NcclCommunicator::withPeer(const char *op, const char *toPeer, int peer, plan::DType type,
                                  Call &&call) {
  if (Status s = usable(op, type); !s)
    return s;
  if (Status s = checkPeer(toPeer, peer); !s)
    return s;
  return settle((std::string(toPeer) + " peer " + std::to_string(peer)).c_str(), call());
}

Status NcclCommunicator::send(const void *buf, int64_t count, plan::DType type, int peer) {
  return counted(bytesOf(count, type), withPeer("send", "send to", peer, type, [&] {
                   return ncclSend(buf, static_cast<size_t>(count), ncclType(type), peer, comm_,
                                   stream_);
                 }));
}

Status NcclCommunicator::recv(void *buf, int64_t count, plan::DType type, int peer) {
  return withPeer("recv", "recv from", peer, type, [&] {
    return ncclRecv(buf, static_cast<size_t>(count), ncclType(type), peer, comm_, stream_);
  });
}

} // namespace sbpflow
