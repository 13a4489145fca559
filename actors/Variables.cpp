// Variable shards in host memory (see Variables.h).
#include "actors/Variables.h"

#include "kernels/cpu/Kernels.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/plan/PlanLoader.h"

#include <algorithm>

namespace sbpflow {

namespace {

checkpoint::DType storageType(plan::DType dtype) {
  return dtype == plan::DType::I32 ? checkpoint::DType::I32 : checkpoint::DType::F32;
}

} // namespace

std::vector<VariableShard> initVariableShards(const plan::Plan &plan, int globalRank) {
  std::vector<VariableShard> shards;
  for (size_t v = 0; v < plan.variables()->size(); ++v) {
    const plan::Variable *var = plan.variables()->Get(v);
    VariableShard storage;
    storage.dtype = storageType(var->dtype());
    const plan::Placement &pl = *plan.placements()->Get(var->placement());
    int index = rankIndexIn(pl, globalRank);
    if (index >= 0) {
      Shape global = toShape(var->shape());
      std::vector<int64_t> h = toHierarchy(pl);
      storage.region = localRegion(global, toNdSbp(var->sbp()), h, hierarchyCoord(h, index));
      storage.local = true;
      storage.bytes.resize(static_cast<size_t>(regionElements(storage.region)) * 4);
      if (storage.dtype == checkpoint::DType::I32) {
        // The plan loader allows an i32 variable only Zeros or an integral
        // Constant.
        const auto value = var->init()->kind() == plan::InitKind::Constant
                               ? static_cast<int32_t>(var->init()->a())
                               : 0;
        std::fill(storage.i32(), storage.i32() + storage.elements(), value);
      } else {
        std::vector<float> whole = initGlobalTensor(*var->init(), elementCount(global));
        if (global.empty())
          storage.f32()[0] = whole[0];
        else {
          const RegionBox b = regionBox(wholeRegion(global), storage.region);
          cpu::copyRegion(whole.data(), b.shape, b.begin, b.size, b.rank, storage.f32());
        }
      }
    }
    shards.push_back(std::move(storage));
  }
  return shards;
}

// A variable as the checkpoint stores it: in its own element type.
namespace {

checkpoint::TensorMeta checkpointMeta(const plan::Plan &plan, const plan::Variable &var) {
  checkpoint::TensorMeta meta;
  meta.name = var.name()->str();
  meta.dtype = storageType(var.dtype());
  meta.shape = toShape(var.shape());
  meta.sbp = toNdSbp(var.sbp());
  meta.hierarchy = toHierarchy(*plan.placements()->Get(var.placement()));
  return meta;
}

} // namespace

StatusOr<std::vector<checkpoint::ShardRecord>>
writeVariableShards(const plan::Plan &plan, int globalRank,
                    const std::vector<VariableShard> &shards, const std::string &dir,
                    uint64_t generation) {
  const std::string rank = "rank " + std::to_string(globalRank);
  const std::string staging = checkpoint::stagingDir(dir, generation);
  std::vector<checkpoint::ShardRecord> records;
  for (size_t v = 0; v < shards.size(); ++v) {
    if (!shards[v].local)
      continue;
    const plan::Variable *var = plan.variables()->Get(v);
    checkpoint::TensorMeta meta = checkpointMeta(plan, *var);
    auto owners = checkpoint::distinctShards(meta);
    if (!owners)
      return owners.status().withContext(rank);
    const plan::Placement &pl = *plan.placements()->Get(var->placement());
    const std::vector<int64_t> coord = hierarchyCoord(meta.hierarchy, rankIndexIn(pl, globalRank));
    for (const checkpoint::ShardOwner &shard : *owners)
      if (shard.coord == coord) {
        auto record =
            checkpoint::writeShard(staging, meta, shards[v].region, shards[v].data(), generation);
        if (!record)
          return record.status().withContext(rank);
        records.push_back(record.take());
      }
  }
  return records;
}

Status publishVariableCheckpoint(const plan::Plan &plan, int globalRank, const std::string &dir,
                                 uint64_t generation,
                                 const std::vector<checkpoint::ShardRecord> &records,
                                 const checkpoint::DataPosition &next) {
  const std::string rank = "rank " + std::to_string(globalRank);
  if (globalRank != 0)
    return Status::error(rank + ": checkpoint '" + dir +
                         "': only global rank 0 publishes a checkpoint");
  std::vector<checkpoint::TensorMeta> metas;
  for (size_t v = 0; v < plan.variables()->size(); ++v)
    metas.push_back(checkpointMeta(plan, *plan.variables()->Get(v)));
  const std::string staging = checkpoint::stagingDir(dir, generation);
  // Shard file names follow from names and regions: the index lists every
  // distinct shard and takes sizes and CRCs from the ranks' records.
  if (Status s = checkpoint::writeIndex(staging, metas, next, generation, records); !s)
    return s.withContext(rank + ": checkpoint '" + dir + "'");
  if (Status s = checkpoint::publish(staging, dir, generation); !s)
    return s.withContext(rank);
  return Status::ok();
}

Status loadVariableShards(const plan::Plan &plan, int globalRank,
                          std::vector<VariableShard> &shards, const std::string &dir,
                          checkpoint::DataPosition *next) {
  const std::string rank = "rank " + std::to_string(globalRank);
  auto reader = checkpoint::CheckpointReader::open(dir);
  if (!reader)
    return reader.status().withContext(rank);
  // Every rank checks that every listed shard is there (one stat each), so
  // that an incomplete checkpoint is refused on every rank, whichever shards
  // it reads.
  if (Status s = reader->checkComplete(); !s)
    return s.withContext(rank);
  // Every variable is checked on every rank, so each rank reports a mismatch
  // whether or not it holds a part of that variable.
  for (size_t v = 0; v < shards.size(); ++v) {
    const checkpoint::TensorMeta want = checkpointMeta(plan, *plan.variables()->Get(v));
    const checkpoint::TensorMeta *got = reader->find(want.name);
    if (!got)
      return Status::error(rank + ": checkpoint '" + dir + "' has no variable '" + want.name + "'");
    if (got->shape != want.shape || got->dtype != want.dtype)
      return Status::error(rank + ": checkpoint '" + dir + "' holds variable '" + want.name +
                           "' as " + checkpoint::toString(got->dtype) + " " + toString(got->shape) +
                           ", the plan has " + checkpoint::toString(want.dtype) + " " +
                           toString(want.shape));
    if (!shards[v].local)
      continue;
    if (Status s =
            reader->read(want.name, want.shape, want.dtype, shards[v].region, shards[v].data());
        !s)
      return s.withContext(rank);
  }
  if (next)
    *next = reader->next();
  return Status::ok();
}

} // namespace sbpflow
