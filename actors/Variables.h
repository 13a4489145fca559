// Variable shards in host memory, shared by the CPU and CUDA executors: the
// initial values (every rank computes the whole tensor from the plan's init
// and keeps its shard, so any layout starts from the same weights) and
// checkpoint save and load.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"
#include "runtime/checkpoint/Checkpoint.h"

#include <string>
#include <vector>

namespace sbpflow {
namespace plan {
struct Plan;
}

// One variable as this rank holds it: f32 whatever the plan's dtype says.
struct VariableShard {
  std::vector<float> data; // empty when !local
  Region region;           // the shard's place in the global tensor
  bool local = false;      // whether this rank holds a part of it
};

// Every variable of `plan`, initialised, as global rank `globalRank` holds it.
std::vector<VariableShard> initVariableShards(const plan::Plan &plan, int globalRank);

// Writes the shards this rank owns to the checkpoint `dir` (one writer per
// distinct shard); global rank 0 also writes the index, with the data
// position `next`.
Status saveVariableShards(const plan::Plan &plan, int globalRank,
                          const std::vector<VariableShard> &shards, const std::string &dir,
                          const checkpoint::DataPosition &next);

// Fills every local shard from the checkpoint `dir`, whatever layout saved
// it; a variable missing or stored with another shape or dtype is an error.
// `next` (may be null) receives where the saved job's data continues.
Status loadVariableShards(const plan::Plan &plan, int globalRank,
                          std::vector<VariableShard> &shards, const std::string &dir,
                          checkpoint::DataPosition *next);

} // namespace sbpflow
