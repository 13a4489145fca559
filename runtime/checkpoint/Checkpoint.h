// Checkpoints of SBP-sharded tensors: each distinct shard is written once, by
// one rank, and any region of a tensor can be read back from the shards that
// overlap it, reading only the bytes it needs, so a job saved on one layout
// resumes on another (resharding).
//
// A save is two-phase so that a checkpoint appears whole or not at all: every
// rank writes its shards into the staging directory of the save's generation
// (stagingDir), reporting what it wrote (ShardRecord); once every rank has,
// one rank writes index.json there and publishes the staging directory as the
// checkpoint atomically (publish). A failed save leaves an existing checkpoint
// untouched.
//
// On disk: a directory holding index.json and one file per stored shard.
//  index.json  {"format": "sbpflow-checkpoint", "version": 1, "shard_format": 2,
//               "generation": "9c1e03a4b7d2f610",
//               "next": {"epoch": 0, "batch": 5}, "tensors": [
//                 {"name": "w", "dtype": "f32", "shape": [7, 5],
//                  "sbp": "[S(0), B]", "hierarchy": [2, 2],
//                  "shards": [{"file": "w-3a9e0c1d.0+4_0+5.shard",
//                              "region": [[0, 4], [0, 5]],
//                              "bytes": 169, "crc": 2868312307}, ...]}, ...]}
//              ("region": [begin, size] per axis of the global shape;
//               "bytes": the shard file's size; "crc": its header CRC, which
//               covers every block CRC, so it sums up the whole file; "next":
//               where the training data continues, absent = the start)
//  shard file  little-endian header, then the payload:
//                char[8] "SBPCKPT2"; u64 generation; u32 name length; name
//                bytes; u8 dtype (0 f32, 1 i32); u32 rank; rank x (i64 begin,
//                i64 size); u64 payload bytes; u32 block bytes (65536); u32
//                block count; block count x u32 CRC-32 (zlib) of each payload
//                block (the last one may be shorter); u32 CRC-32 of every
//                header byte before it;
//              then the region's elements, row-major, raw little-endian.
//              A read of part of a shard reads (and checks) only the blocks
//              it touches.
// Shard format 1 ("SBPCKPT1", one CRC over the whole payload, no generation)
// is refused with a message saying so.
#pragma once

#include "runtime/Shape.h"
#include "runtime/Status.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
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

// Identifies one save: stamped into every shard file it writes and into its
// index, so that a reader refuses a shard of another save. Random, non-zero.
uint64_t newGeneration();
std::string generationText(uint64_t generation); // 16 hex digits

// One shard file as written: what the index records of it.
struct ShardRecord {
  std::string tensor;
  std::string file; // shardFileName(tensor, region)
  uint64_t bytes = 0;
  uint32_t crc = 0; // the header's CRC-32 (covers every block CRC)
};

// Where the ranks of save `generation` of checkpoint `dir` write their
// shards: a sibling of `dir` (so that publishing is a rename on one file
// system), "<dir>.staging-<generationText>".
std::string stagingDir(const std::string &dir, uint64_t generation);

// Writes `data` (the region's elements, dense row-major) as the shard file of
// `meta` for `region`, stamped with `generation`, creating `dir` when missing.
// Written to a temporary name, flushed to disk and renamed, so a crash leaves
// no half file under the final name. Returns what the index records of it.
StatusOr<ShardRecord> writeShard(const std::string &dir, const TensorMeta &meta,
                                 const Region &region, const void *data, uint64_t generation);

// Where a job's training data continues: the train program's next step runs
// batch `batch` of epoch `epoch`.
struct DataPosition {
  DataPosition() = default;
  DataPosition(int64_t e, int64_t b, std::vector<int64_t> ranks = {})
      : epoch(e), batch(b), rankBatches(std::move(ranks)) {}
  int64_t epoch = 0;
  int64_t batch = 0;
  // Timed rounds (A-EDiT), where each replica reads batches of its own: every
  // rank's next batch of `epoch` (empty: every rank continues at `batch`).
  std::vector<int64_t> rankBatches;
  bool operator==(const DataPosition &o) const {
    return epoch == o.epoch && batch == o.batch && rankBatches == o.rankBatches;
  }
};

// Writes `dir`/index.json listing the distinct shards of every tensor, with
// the size and CRC that `records` (every rank's, in any order) give for each,
// the generation and the data position `next`. A distinct shard without a
// record, a record of another tensor or file, or a second record of one file
// is an error naming the file.
Status writeIndex(const std::string &dir, const std::vector<TensorMeta> &metas,
                  const DataPosition &next, uint64_t generation,
                  const std::vector<ShardRecord> &records);

// Publishes the staging directory `staging` (holding index.json) as the
// checkpoint `dir`: renamed into place when `dir` does not exist; exchanged
// with it atomically (renameat2 RENAME_EXCHANGE) when it holds a checkpoint
// (index.json) or nothing, the previous checkpoint's files then deleted. A
// `dir` holding anything else is refused. Where the file system cannot
// exchange, the previous checkpoint is first renamed to
// "<dir>.previous-<generation>" (where a crash between the two renames
// leaves it).
Status publish(const std::string &staging, const std::string &dir, uint64_t generation);

// "[S(0), B]" (toString(NdSbp)) back to an nd-SBP; "[]" is the empty one.
StatusOr<NdSbp> parseNdSbp(const std::string &text);

class CheckpointReader {
public:
  // Reads and checks `dir`/index.json: well-formed JSON, every field present
  // with its type, regions inside their shape, shards of a tensor disjoint and
  // covering it. Shard files are opened only by checkComplete() and read().
  static StatusOr<CheckpointReader> open(const std::string &dir);

  // Whether every shard the index lists is there with the size the index
  // gives (one stat per file, no reads): an error names the first missing
  // or mis-sized file and its tensor.
  Status checkComplete() const;

  const std::string &dir() const { return dir_; }
  const std::vector<TensorMeta> &tensors() const { return tensors_; }
  // Where the saved job's training data continues ({0, 0} when not recorded).
  const DataPosition &next() const { return next_; }
  const TensorMeta *find(const std::string &name) const;
  uint64_t generation() const { return generation_; }

  // Fills `dst` (dense row-major, `region`'s elements) with that region of
  // tensor `name`, read from every shard that overlaps it. The tensor must
  // have `expectedShape` and `expectedDtype`. Only the payload blocks that
  // hold part of `region` are read. Each shard file read is checked
  // (present, format, generation, name, dtype, region, size and header CRC
  // as in the index, the CRC of every block read); every error names the
  // file and the tensor.
  Status read(const std::string &name, const Shape &expectedShape, DType expectedDtype,
              const Region &region, void *dst) const;

  // Bytes read from shard files so far (headers and payload blocks).
  uint64_t bytesRead() const { return bytesRead_->load(); }

private:
  struct StoredShard {
    std::string file;
    Region region;
    uint64_t bytes = 0;
    uint32_t crc = 0;
  };
  std::string dir_;
  std::vector<TensorMeta> tensors_;
  DataPosition next_;
  uint64_t generation_ = 0;
  std::shared_ptr<std::atomic<uint64_t>> bytesRead_ = std::make_shared<std::atomic<uint64_t>>(0);
  std::vector<std::vector<StoredShard>> shards_; // per tensor
};

} // namespace sbpflow::checkpoint
