// Global and local shapes under SBP: the one place that decides which slice of
// a global tensor a rank holds (balanced chunks: the first `size % n` shards
// get one more element). Compiler, runtime, kernels and tests all use it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sbpflow {

// The most axes a tensor may have: lets the executor and the kernels keep
// per-tensor region arithmetic in fixed arrays (a step allocates nothing).
constexpr size_t kMaxTensorRank = 8;

enum class SbpKind : int8_t { Split, Broadcast, PartialSum, PartialMax, PartialMin };

struct SbpDim {
  SbpKind kind = SbpKind::Broadcast;
  int axis = 0; // Split only
  bool operator==(const SbpDim &o) const {
    return kind == o.kind && (kind != SbpKind::Split || axis == o.axis);
  }
  bool operator!=(const SbpDim &o) const { return !(*this == o); }
};

using Shape = std::vector<int64_t>;
using NdSbp = std::vector<SbpDim>;

// The short form every message, dump and test uses: S(0), B, P(sum);
// [S(0), B] for an nd-SBP.
std::string toString(const SbpDim &d);
std::string toString(const NdSbp &sbp);
// [64,100]
std::string toString(const Shape &shape);

// Chunk [begin, begin + size) of `total` elements held by part `index` of `parts`.
struct Chunk {
  int64_t begin = 0;
  int64_t size = 0;
  bool operator==(const Chunk &o) const { return begin == o.begin && size == o.size; }
  bool operator!=(const Chunk &o) const { return !(*this == o); }
};
// A block of a global tensor: one chunk per axis.
using Region = std::vector<Chunk>;
// The whole of a tensor of shape `global`.
Region wholeRegion(const Shape &global);
// The block both hold (empty chunks where they do not meet).
Region intersect(const Region &a, const Region &b);
int64_t regionElements(const Region &r);
// `part` (global coordinates) of a tensor holding `holder`, as the arrays the
// region copy kernels take: the holder's shape, where the part begins in it
// and its size, per axis.
struct RegionBox {
  int64_t shape[kMaxTensorRank], begin[kMaxTensorRank], size[kMaxTensorRank];
  int rank = 0;
};
RegionBox regionBox(const Region &holder, const Region &part);
// Walks the rows of `region` (every axis but the last) in row-major order:
// `row(idx)` gets the row's offsets inside the region, one per axis (the last
// 0), and returns whether to go on. A rank-0 region has one row; an empty one
// none. Returns false when `row` stopped the walk.
template <class Row> bool forEachRow(const Region &region, Row &&row) {
  if (regionElements(region) == 0)
    return true;
  std::vector<int64_t> idx(region.size(), 0);
  while (true) {
    if (!row(static_cast<const std::vector<int64_t> &>(idx)))
      return false;
    int a = static_cast<int>(region.size()) - 2;
    for (; a >= 0; --a) {
      if (++idx[a] < region[a].size)
        break;
      idx[a] = 0;
    }
    if (a < 0)
      return true;
  }
}
Chunk balancedChunk(int64_t total, int64_t parts, int64_t index);

// Coordinate of `rankIndex` (position in the placement's rank list) in a
// row-major `hierarchy`.
std::vector<int64_t> hierarchyCoord(const std::vector<int64_t> &hierarchy, int64_t rankIndex);

// The region of the global tensor held by the rank at `coord`: per axis,
// [begin, begin + size). Splits of the same axis on several hierarchy
// dimensions nest in hierarchy order.
std::vector<Chunk> localRegion(const Shape &global, const NdSbp &sbp,
                               const std::vector<int64_t> &hierarchy,
                               const std::vector<int64_t> &coord);

Shape localShape(const Shape &global, const NdSbp &sbp, const std::vector<int64_t> &hierarchy,
                 const std::vector<int64_t> &coord);

// The largest local element count over all coordinates (memory planning).
int64_t maxLocalElements(const Shape &global, const NdSbp &sbp,
                         const std::vector<int64_t> &hierarchy);

int64_t elementCount(const Shape &shape);

} // namespace sbpflow
