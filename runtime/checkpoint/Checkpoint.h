// Checkpoints of SBP-sharded tensors: each distinct shard is written once, by
// one rank, and any region of a tensor can be read back from the shards that
// overlap it, so a job saved on one layout resumes on another (resharding).
//
// On disk: a directory holding index.json and one file per stored shard.
//  index.json  {"format": "sbpflow-checkpoint", "version": 1,
//               "next": {"epoch": 0, "batch": 5}, "tensors": [
//                 {"name": "w", "dtype": "f32", "shape": [7, 5],
//                  "sbp": "[S(0), B]", "hierarchy": [2, 2],
//                  "shards": [{"file": "w-3a9e0c1d.0+4_0+5.shard",
//                              "region": [[0, 4], [0, 5]]}, ...]}, ...]}
//              ("region": [begin, size] per axis of the global shape; "next":
//               where the training data continues, absent = the start)
//  shard file  little-endian header, then the payload:
//                char[8] "SBPCKPT1"; u32 name length; name bytes; u8 dtype
//                (0 f32, 1 i32); u32 rank; rank x (i64 begin, i64 size);
//                u64 payload bytes; u32 CRC-32 (zlib) of the payload;
//              then the region's elements, row-major, raw little-endian.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sbpflow::checkpoint {

enum class DType : uint8_t { F32 = 0, I32 = 1 };
using ::sbpflow::toString;         // the Shape / NdSbp overloads beside this one
const char *toString(DType dtype); // "f32", "i32"
int64_t byteSize(DType dtype);

struct TensorMeta {
  std::string name;
  DType dtype = DType::F32;
  Shape shape; // global
  NdSbp sbp;
  std::vector<int64_t> hierarchy; // of the placement, one entry per sbp dim
};

struct ShardOwner {
  Region region;
  std::vector<int64_t> coord; // the hierarchy coordinate that writes it
  std::string file;           // shardFileName(name, region)
};

// The distinct non-empty shards of `meta`, each with the one coordinate that
// writes it: coordinate 0 on every hierarchy dimension whose SBP is B. A
// partial (P) SBP is an error: a stored tensor must hold its value.
StatusOr<std::vector<ShardOwner>> distinctShards(const TensorMeta &meta);

// The file name of a shard, from the tensor name and the region only (no
// communication needed for rank 0 to list every rank's files).
std::string shardFileName(const std::string &tensorName, const Region &region);

// Writes `data` (the region's elements, dense row-major) as the shard file of
// `meta` for `region`, creating `dir` when missing. Written to a temporary
// name and renamed, so a crash leaves no half file under the final name.
Status writeShard(const std::string &dir, const TensorMeta &meta, const Region &region,
                  const void *data);

// Where a job's training data continues: the train program's next step runs
// batch `batch` of epoch `epoch`.
struct DataPosition {
  int64_t epoch = 0;
  int64_t batch = 0;
  bool operator==(const DataPosition &o) const { return epoch == o.epoch && batch == o.batch; }
};

// Writes `dir`/index.json listing the distinct shards of every tensor and the
// data position `next` (by global rank 0 once every rank has written its
// shards).
Status writeIndex(const std::string &dir, const std::vector<TensorMeta> &metas,
                  const DataPosition &next = {});

// "[S(0), B]" (toString(NdSbp)) back to an nd-SBP; "[]" is the empty one.
StatusOr<NdSbp> parseNdSbp(const std::string &text);

class CheckpointReader {
public:
  // Reads and checks `dir`/index.json: well-formed JSON, every field present
  // with its type, regions inside their shape, shards of a tensor disjoint and
  // covering it. Shard files are opened only by read().
  static StatusOr<CheckpointReader> open(const std::string &dir);

  const std::string &dir() const { return dir_; }
  const std::vector<TensorMeta> &tensors() const { return tensors_; }
  // Where the saved job's training data continues ({0, 0} when not recorded).
  const DataPosition &next() const { return next_; }
  const TensorMeta *find(const std::string &name) const;

  // Fills `dst` (dense row-major, `region`'s elements) with that region of
  // tensor `name`, read from every shard that overlaps it. The tensor must
  // have `expectedShape` and `expectedDtype`. Each shard file read is checked
  // (present, magic, name, dtype, region as in the index, size, CRC); every
  // error names the file and the tensor.
  Status read(const std::string &name, const Shape &expectedShape, DType expectedDtype,
              const Region &region, void *dst) const;

private:
  struct StoredShard {
    std::string file;
    Region region;
  };
  std::string dir_;
  std::vector<TensorMeta> tensors_;
  DataPosition next_;
  std::vector<std::vector<StoredShard>> shards_; // per tensor
};

} // namespace sbpflow::checkpoint
