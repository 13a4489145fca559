// A synthetic DataSource for tests of the cluster protocol ONLY (`--data
// synthetic`): deterministic samples, no files. Never a fallback for a
// missing dataset.
#pragma once

#include "runtime/data/DataSource.h"

#include <memory>
#include <vector>

namespace sbpflow::cluster {

// `fields` as the plan's Input tasks need them. F32 element j of sample i is
// a hash of (seed, i, j) in [0, 0.5) plus 1 where j % classes == label(i);
// I32 fields hold label(i) = hash(seed, i) % classes. Order is the identity
// in every epoch (no shuffling), so any rank count sees the same batches.
std::unique_ptr<DataSource> makeSyntheticDataForTests(std::vector<FieldInfo> fields,
                                                      int64_t samples, uint64_t seed,
                                                      int classes = 10);

} // namespace sbpflow::cluster
