// Variable shards in host memory, shared by the CPU and CUDA executors: the
// initial values (counter-based: every rank computes the elements of its own
// shard from the plan's init, and any layout starts from the same weights)
// and checkpoint save (two phases: shards, then index and publish) and load.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"
#include "runtime/checkpoint/Checkpoint.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow {
namespace plan {
struct Init;
struct Plan;
} // namespace plan

// One variable as this rank holds it, in the plan's element type (f32 or
// i32; 4 bytes an element either way).
struct VariableShard {
  checkpoint::DType dtype = checkpoint::DType::F32;
  Region region;                // the shard's place in the global tensor
  bool local = false;           // whether this rank holds a part of it
  std::vector<std::byte> bytes; // the region's elements, row-major; empty when !local

  int64_t elements() const { return static_cast<int64_t>(bytes.size() / 4); }
  void *data() { return bytes.data(); }
  const void *data() const { return bytes.data(); }
  // The elements as f32 / i32: only for a shard of that dtype.
  float *f32() { return reinterpret_cast<float *>(bytes.data()); }
  int32_t *i32() { return reinterpret_cast<int32_t *>(bytes.data()); }
};

// The elements of `region` (global coordinates) of a tensor of global shape
// `shape` initialised by `init`, dense row-major into `dst`: the element with
// global row-major index g is a function of (init.seed, g) alone (plan.fbs:
// Init has the formula), so a rank computes its shard and nothing else.
void initRegion(const plan::Init &init, const Shape &shape, const Region &region, float *dst);

// The whole of a tensor of `elements` elements (any shape has the same
// row-major values): for references in tests.
std::vector<float> initGlobalTensor(const plan::Init &init, int64_t elements);

// Every variable of `plan`, initialised, as global rank `globalRank` holds it.
std::vector<VariableShard> initVariableShards(const plan::Plan &plan, int globalRank);

// Phase 1 of a checkpoint, on every rank: writes the shards this rank owns
// (one writer per distinct shard) into the staging directory of save
// `generation` of `dir` (checkpoint::stagingDir) and returns what it wrote.
StatusOr<std::vector<checkpoint::ShardRecord>>
writeVariableShards(const plan::Plan &plan, int globalRank,
                    const std::vector<VariableShard> &shards, const std::string &dir,
                    uint64_t generation);

// Phase 2, on global rank 0 alone once every rank's phase 1 succeeded:
// writes index.json (every rank's `records`, the data position `next`) into
// the staging directory and publishes it as `dir` (checkpoint::publish).
Status publishVariableCheckpoint(const plan::Plan &plan, int globalRank, const std::string &dir,
                                 uint64_t generation,
                                 const std::vector<checkpoint::ShardRecord> &records,
                                 const checkpoint::DataPosition &next);

// Fills every local shard from the checkpoint `dir`, whatever layout saved
// it, reading only the bytes of this rank's regions. An incomplete
// checkpoint (a listed shard missing, a shard of another save), or a
// variable missing or stored with another shape or dtype, is an error.
// `next` (may be null) receives where the saved job's data continues.
Status loadVariableShards(const plan::Plan &plan, int globalRank,
                          std::vector<VariableShard> &shards, const std::string &dir,
                          checkpoint::DataPosition *next);

} // namespace sbpflow
