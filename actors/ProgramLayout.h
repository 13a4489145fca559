// What the CPU and CUDA executors share between a plan and their kernels:
// the tensors of a program as this rank sees them, which tasks run here,
// the checks of optimiser and collective tasks, the order of collectives
// and a program's metrics and outputs. Device-independent (no CUDA headers).
#pragma once

#include "actors/ComputeKernels.h"
#include "actors/Variables.h"
#include "runtime/comm/Communicator.h"

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace sbpflow {

class CommGroups;
using Operands = std::vector<const TensorView *>;

// Every tensor of `prog` as rank `globalRank` sees it; `dataOf` gives the
// address of a tensor this rank holds a shard of.
std::vector<TensorView> programViews(const plan::Plan &plan, const plan::Program &prog,
                                     int globalRank,
                                     const std::function<void *(const plan::Tensor &)> &dataOf);

// A task's inputs and outputs among `views`.
void taskOperands(const plan::Task &task, const std::vector<TensorView> &views, Operands &in,
                  Operands &out);

// Whether `task` has work on this rank: its output (else its first input),
// or for an optimiser its parameter, lives here. An error when it names no
// parameter or reads an input held elsewhere.
StatusOr<bool> runsOnRank(const plan::Task &task, const Operands &in, const Operands &out,
                          const std::vector<VariableShard> &variables, const std::string &at);

// SgdMomentum and AdamW: the variables they update, checked against the
// parameter. A slot index is -1 where the optimiser has none.
struct OptimizerWork {
  bool adam = false;
  int param = -1, momentum = -1, m = -1, v = -1, step = -1;
  int64_t n = 0;       // parameter elements
  bool scaled = false; // a second input holds the gradient-clipping factor
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weightDecay = 0, momentumFactor = 0;
};
StatusOr<OptimizerWork> checkOptimizer(const plan::Task &task, const Operands &in,
                                       const std::vector<VariableShard> &variables,
                                       const std::string &at);

// AllReduce of in[i] into out[i], counts[i] elements each.
struct AllReduceWork {
  std::vector<int64_t> counts;
  int64_t total = 0;
};
StatusOr<AllReduceWork> checkAllReduce(const Operands &in, const Operands &out,
                                       const std::string &at);

// AllGather, ReduceScatter, AllToAll over `n` members of hierarchy dim
// `dim`: send[r] is the part of my input member r needs, recv[r] what r
// sends me, in global coordinates.
struct ExchangeWork {
  int dim = 0;
  int64_t n = 0;
  bool copyOnly = false; // a group of one: the output is the input
  std::vector<Region> sendParts, recvParts;
  std::vector<int64_t> sendCounts, recvCounts;
  int64_t sendTotal = 0, recvTotal = 0; // packing buffer sizes
};
StatusOr<ExchangeWork> checkExchange(const plan::Task &task, const Operands &in,
                                     const Operands &out, const std::string &at);

// Slice: copies `part` out of a tensor holding `from`.
struct SliceWork {
  Region from, part;
};
StatusOr<SliceWork> checkSlice(const Operands &in, const Operands &out, const std::string &at);

// ZeroOthers: copies count elements, or zeroes them where another member of
// a partial-sum group keeps the value.
struct ZeroOthersWork {
  bool keep = true;
  int64_t count = 0;
};
StatusOr<ZeroOthersWork> checkZeroOthers(const Operands &in, const Operands &out,
                                         const std::string &at);

// Whether `task` is a collective over more than one rank (one over a group
// of one is a copy).
bool callsCommunicator(const plan::Task &task, const std::vector<TensorView> &views);

// The communicator of hierarchy dim `dim` of t's placement; null for a
// group of one.
StatusOr<Communicator *> groupCommunicator(const plan::Plan &plan, CommGroups *comms,
                                           const TensorView &t, int dim, const std::string &at);

ReduceOp toReduce(plan::ReduceOp op);

// The tasks of (collective_seq, task) pairs in collective order: the comm
// thread numbers them densely, so that one not on this rank leaves no hole.
std::vector<int> collectiveOrder(std::vector<std::pair<int, int>> collectives);

// A program's metric tensors (null where this rank holds no shard) and its
// named outputs.
Status bindMetricsAndOutputs(const plan::Program &prog, const std::vector<TensorView> &views,
                             std::vector<const float *> &metrics,
                             std::vector<std::pair<std::string, TensorView>> &outputs);

// `part` (global coordinates) of a tensor holding `holder`, as the arrays
// the region copy kernels take.
struct RegionBox {
  int64_t shape[kMaxTensorRank], begin[kMaxTensorRank], size[kMaxTensorRank];
  int rank = 0;
};
RegionBox regionBox(const Region &holder, const Region &part);

} // namespace sbpflow
