// Variable shards in host memory (see Variables.h).
#include "actors/Variables.h"

#include "kernels/cpu/Kernels.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/plan/PlanLoader.h"

namespace sbpflow {

std::vector<VariableShard> initVariableShards(const plan::Plan &plan, int globalRank) {
  std::vector<VariableShard> shards;
  for (size_t v = 0; v < plan.variables()->size(); ++v) {
    const plan::Variable *var = plan.variables()->Get(v);
    VariableShard storage;
    const plan::Placement &pl = *plan.placements()->Get(var->placement());
    int index = rankIndexIn(pl, globalRank);
    if (index >= 0) {
      Shape global = toShape(var->shape());
      std::vector<int64_t> h = toHierarchy(pl);
      storage.region = localRegion(global, toNdSbp(var->sbp()), h, hierarchyCoord(h, index));
      storage.local = true;
      std::vector<float> whole = initGlobalTensor(*var->init(), elementCount(global));
      storage.data.resize(static_cast<size_t>(regionElements(storage.region)));
      if (global.empty())
        storage.data[0] = whole[0];
      else {
        const RegionBox b = regionBox(wholeRegion(global), storage.region);
        cpu::copyRegion(whole.data(), b.shape, b.begin, b.size, b.rank, storage.data.data());
      }
    }
    shards.push_back(std::move(storage));
  }
  return shards;
}

// A variable as the checkpoint stores it. Variable storage is f32 whatever
// the plan's dtype field says, so it is saved as f32.
namespace {

checkpoint::TensorMeta checkpointMeta(const plan::Plan &plan, const plan::Variable &var) {
  checkpoint::TensorMeta meta;
  meta.name = var.name()->str();
  meta.dtype = checkpoint::DType::F32;
  meta.shape = toShape(var.shape());
  meta.sbp = toNdSbp(var.sbp());
  meta.hierarchy = toHierarchy(*plan.placements()->Get(var.placement()));
  return meta;
}

} // namespace

Status saveVariableShards(const plan::Plan &plan, int globalRank,
                          const std::vector<VariableShard> &shards, const std::string &dir,
                          const checkpoint::DataPosition &next) {
  const std::string rank = "rank " + std::to_string(globalRank);
  std::vector<checkpoint::TensorMeta> metas;
  for (size_t v = 0; v < shards.size(); ++v) {
    const plan::Variable *var = plan.variables()->Get(v);
    checkpoint::TensorMeta meta = checkpointMeta(plan, *var);
    if (shards[v].local) {
      auto owners = checkpoint::distinctShards(meta);
      if (!owners)
        return owners.status().withContext(rank);
      const plan::Placement &pl = *plan.placements()->Get(var->placement());
      const std::vector<int64_t> coord =
          hierarchyCoord(meta.hierarchy, rankIndexIn(pl, globalRank));
      for (const checkpoint::ShardOwner &shard : *owners)
        if (shard.coord == coord)
          if (Status s = checkpoint::writeShard(dir, meta, shards[v].region, shards[v].data.data());
              !s)
            return s.withContext(rank);
    }
    metas.push_back(std::move(meta));
  }
  // Shard file names follow from names and regions: rank 0 lists every
  // rank's files without hearing from them.
  if (globalRank == 0)
    if (Status s = checkpoint::writeIndex(dir, metas, next); !s)
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
    if (Status s = reader->read(want.name, want.shape, want.dtype, shards[v].region,
                                shards[v].data.data());
        !s)
      return s.withContext(rank);
  }
  if (next)
    *next = reader->next();
  return Status::ok();
}

} // namespace sbpflow
