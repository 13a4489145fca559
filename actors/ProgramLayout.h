// How a plan's programs look from one rank: every tensor and variable as
// this rank holds it, which tasks run here, which collectives talk to other
// ranks and through which communicator, the order of collectives, and a
// program's metrics and outputs. Device-independent.
#pragma once

#include "kernels/Registry.h"
#include "runtime/comm/Communicator.h"

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace sbpflow {

class CommGroups;

// Every tensor of `prog` as rank `globalRank` sees it; `dataOf` gives the
// address of a tensor this rank holds a shard of.
std::vector<TensorView> programViews(const plan::Plan &plan, const plan::Program &prog,
                                     int globalRank,
                                     const std::function<void *(const plan::Tensor &)> &dataOf);

// Every variable of `plan` as rank `globalRank` sees it; `dataOf(v)` gives
// the address of variable v's shard (null where the rank holds none).
std::vector<TensorView> variableViews(const plan::Plan &plan, int globalRank,
                                      const std::function<void *(int v)> &dataOf);

// A task's inputs and outputs among `views`.
void taskOperands(const plan::Task &task, const std::vector<TensorView> &views, Operands &in,
                  Operands &out);

// Whether `task` has work on this rank: its output (else its first input),
// or for an optimiser the variable it updates, lives here. An error when it
// reads an input held elsewhere.
StatusOr<bool> runsOnRank(const plan::Task &task, const Operands &in, const Operands &out,
                          const std::vector<TensorView> &variables, const std::string &at);

// Whether `task` is a collective over more than one rank (one over a group
// of one is a copy).
bool callsCommunicator(const plan::Task &task, const std::vector<TensorView> &views);

// The communicator of hierarchy dim `dim` of t's placement; null for a
// group of one.
StatusOr<Communicator *> groupCommunicator(const plan::Plan &plan, CommGroups *comms,
                                           const TensorView &t, int dim, const std::string &at);

// The tasks of (collective_seq, task) pairs in collective order: the comm
// thread numbers them densely, so that one not on this rank leaves no hole.
std::vector<int> collectiveOrder(std::vector<std::pair<int, int>> collectives);

// A program's metric tensors (null where this rank holds no shard) and its
// named outputs.
Status bindMetricsAndOutputs(const plan::Program &prog, const std::vector<TensorView> &views,
                             std::vector<const float *> &metrics,
                             std::vector<std::pair<std::string, TensorView>> &outputs);

} // namespace sbpflow
