// Variable shards in host memory (see Variables.h).
#include "actors/Variables.h"

#include "kernels/Philox.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/plan/PlanLoader.h"

#include <algorithm>
#include <cmath>

namespace sbpflow {

namespace {

checkpoint::DType storageType(plan::DType dtype) {
  return dtype == plan::DType::I32 ? checkpoint::DType::I32 : checkpoint::DType::F32;
}

// The 53-bit uniform in [0, 1) of two Philox words, `hi` the high one.
double unit53(uint32_t lo, uint32_t hi) {
  return static_cast<double>(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * 0x1.0p-53;
}

// Elements [g0, g0 + n) of the global row-major order, as plan.fbs's Init
// defines them.
void initRun(const plan::Init &init, uint64_t g0, int64_t n, float *dst) {
  const double a = init.a(), b = init.b();
  const uint32_t k0 = static_cast<uint32_t>(init.seed()),
                 k1 = static_cast<uint32_t>(init.seed() >> 32);
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t g = g0 + static_cast<uint64_t>(j);
    switch (init.kind()) {
    case plan::InitKind::Zeros:
      dst[j] = 0.f;
      continue;
    case plan::InitKind::Constant:
      dst[j] = static_cast<float>(a);
      continue;
    default:
      break;
    }
    // The top bit of the second counter word keeps these draws apart from
    // dropout's (whose element indices stay below 2^63).
    const PhiloxBlock r = philox4x32_10(static_cast<uint32_t>(g),
                                        static_cast<uint32_t>(g >> 32) | 0x80000000u, 0, 0, k0, k1);
    if (init.kind() == plan::InitKind::Uniform) {
      dst[j] = static_cast<float>(a + (b - a) * unit53(r.word[0], r.word[1]));
    } else {
      const double u1 = unit53(r.word[0], r.word[1]), u2 = unit53(r.word[2], r.word[3]);
      dst[j] =
          static_cast<float>(a + b * std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(kTwoPi * u2));
    }
  }
}

} // namespace

void initRegion(const plan::Init &init, const Shape &shape, const Region &region, float *dst) {
  const size_t rank = shape.size();
  if (regionElements(region) == 0)
    return;
  if (rank == 0) {
    initRun(init, 0, 1, dst);
    return;
  }
  // Row runs along the last axis, in row-major order of the region.
  const int64_t run = region[rank - 1].size;
  int64_t out = 0;
  forEachRow(region, [&](const std::vector<int64_t> &idx) {
    int64_t g = 0;
    for (size_t a = 0; a < rank; ++a)
      g = g * shape[a] + region[a].begin + idx[a];
    initRun(init, static_cast<uint64_t>(g), run, dst + out);
    out += run;
    return true;
  });
}

std::vector<float> initGlobalTensor(const plan::Init &init, int64_t elements) {
  std::vector<float> out(static_cast<size_t>(elements));
  initRegion(init, {elements}, {Chunk{0, elements}}, out.data());
  return out;
}

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
        initRegion(*var->init(), global, storage.region, storage.f32());
      }
    }
    shards.push_back(std::move(storage));
  }
  return shards;
}

// A variable as the checkpoint stores it: in its own element type.
namespace {

// A per-replica variable (local SGD, Variable.replica_dim) is stored with a
// leading axis of the replicas, split on its replica dimension: each
// replica's copy is its own row, so a checkpoint keeps every replica's
// parameters and optimiser state, and a job with another number of
// replicas is refused by shape.
checkpoint::TensorMeta checkpointMeta(const plan::Plan &plan, const plan::Variable &var) {
  checkpoint::TensorMeta meta;
  meta.name = var.name()->str();
  meta.dtype = storageType(var.dtype());
  meta.shape = toShape(var.shape());
  meta.sbp = toNdSbp(var.sbp());
  meta.hierarchy = toHierarchy(*plan.placements()->Get(var.placement()));
  if (const int d = var.replica_dim(); d >= 0) {
    meta.shape.insert(meta.shape.begin(), meta.hierarchy[d]);
    for (SbpDim &dim : meta.sbp)
      if (dim.kind == SbpKind::Split)
        ++dim.axis;
    meta.sbp[d] = SbpDim{SbpKind::Split, 0};
  }
  return meta;
}

// Where `shard` (held by global rank `globalRank`) lies in the stored tensor
// of checkpointMeta: its region, in its replica's row for a per-replica
// variable.
Region storedRegion(const plan::Plan &plan, const plan::Variable &var, int globalRank,
                    const VariableShard &shard) {
  const int d = var.replica_dim();
  if (d < 0)
    return shard.region;
  const plan::Placement &pl = *plan.placements()->Get(var.placement());
  const std::vector<int64_t> coord = hierarchyCoord(toHierarchy(pl), rankIndexIn(pl, globalRank));
  Region region{Chunk{coord[d], 1}};
  region.insert(region.end(), shard.region.begin(), shard.region.end());
  return region;
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
            checkpoint::writeShard(staging, meta, storedRegion(plan, *var, globalRank, shards[v]),
                                   shards[v].data(), generation);
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
    const Region region = storedRegion(plan, *plan.variables()->Get(v), globalRank, shards[v]);
    if (Status s = reader->read(want.name, want.shape, want.dtype, region, shards[v].data()); !s)
      return s.withContext(rank);
  }
  if (next)
    *next = reader->next();
  return Status::ok();
}

} // namespace sbpflow
