// Where Input tasks get their data: each rank fills its own shard (its S(0)
// rows) of every global batch. Sources are deterministic in (seed, epoch,
// step), so every rank agrees on which samples form a global batch.
#pragma once

#include "runtime/Status.h"

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace sbpflow {

enum class FieldType { F32, I32 };

struct FieldInfo {
  std::string name; // e.g. "image", "label"
  FieldType type;
  std::vector<int64_t> sampleShape; // shape of one sample, e.g. {784} or {}
};

class DataSource {
public:
  virtual ~DataSource() = default;
  virtual const std::vector<FieldInfo> &fields() const = 0;
  virtual int64_t size() const = 0; // samples
  // Samples [rowBegin, rowBegin + rowCount) of global batch `batchIndex`
  // (batches of `globalBatch` samples in the epoch's order) into `dst`, a
  // dense buffer of rowCount * prod(sampleShape) elements. For a field of type
  // I32 dst is int32_t*. A batch past the end of the data is padded: label
  // fields (what losses and metrics read) with -1, which they ignore; input
  // fields with zeros (token ids with 0, a valid id, so embeddings accept them).
  virtual Status fill(const std::string &field, int64_t epoch, int64_t batchIndex,
                      int64_t globalBatch, int64_t rowBegin, int64_t rowCount, void *dst) = 0;
  // The argument checks every fill() makes, in one place: field `field` of
  // this source named `source` must be one of `known`, the rows must lie in
  // the batch and the batch index must not overflow. OK with rowCount == 0
  // and dst == null (nothing to fill).
  static Status checkFillRequest(const char *source, const std::string &field,
                                 std::initializer_list<const char *> known, int64_t epoch,
                                 int64_t batchIndex, int64_t globalBatch, int64_t rowBegin,
                                 int64_t rowCount, const void *dst);
  // Number of batches in an epoch: floor(size / globalBatch) when dropLast,
  // else ceil.
  int64_t batchesPerEpoch(int64_t globalBatch, bool dropLast) const {
    return dropLast ? size() / globalBatch : (size() + globalBatch - 1) / globalBatch;
  }
};

// Fashion-MNIST from the IDX files of Debian's dataset-fashion-mnist
// (`dir` holds {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz). Fields:
// "image" f32 [784] scaled to [0,1], "label" i32 []. When `shuffle`, the order
// of each epoch is a permutation drawn from (seed, epoch).
StatusOr<std::unique_ptr<DataSource>> openFashionMnist(const std::string &dir, bool train,
                                                       bool shuffle, uint64_t seed);

inline const char *kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

} // namespace sbpflow
