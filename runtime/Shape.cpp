// Balanced-chunk arithmetic for SBP splits.
#include "runtime/Shape.h"

#include <algorithm>
#include <cassert>

namespace sbpflow {

std::string toString(const SbpDim &d) {
  switch (d.kind) {
  case SbpKind::Split:
    return "S(" + std::to_string(d.axis) + ")";
  case SbpKind::Broadcast:
    return "B";
  case SbpKind::PartialSum:
    return "P(sum)";
  case SbpKind::PartialMax:
    return "P(max)";
  case SbpKind::PartialMin:
    return "P(min)";
  }
  return "?";
}

std::string toString(const Shape &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string toString(const NdSbp &sbp) {
  std::string s = "[";
  for (size_t i = 0; i < sbp.size(); ++i)
    s += (i ? ", " : "") + toString(sbp[i]);
  return s + "]";
}

Chunk balancedChunk(int64_t total, int64_t parts, int64_t index) {
  assert(parts > 0 && index >= 0 && index < parts);
  int64_t base = total / parts;
  int64_t extra = total % parts;
  Chunk c;
  c.size = base + (index < extra ? 1 : 0);
  c.begin = index * base + std::min(index, extra);
  return c;
}

std::vector<int64_t> hierarchyCoord(const std::vector<int64_t> &hierarchy, int64_t rankIndex) {
  std::vector<int64_t> coord(hierarchy.size());
  for (int64_t d = static_cast<int64_t>(hierarchy.size()) - 1; d >= 0; --d) {
    coord[d] = rankIndex % hierarchy[d];
    rankIndex /= hierarchy[d];
  }
  return coord;
}

std::vector<Chunk> localRegion(const Shape &global, const NdSbp &sbp,
                               const std::vector<int64_t> &hierarchy,
                               const std::vector<int64_t> &coord) {
  Region region = wholeRegion(global);
  for (size_t d = 0; d < sbp.size(); ++d) {
    if (sbp[d].kind != SbpKind::Split)
      continue;
    Chunk &c = region[sbp[d].axis];
    Chunk sub = balancedChunk(c.size, hierarchy[d], coord[d]);
    c.begin += sub.begin;
    c.size = sub.size;
  }
  return region;
}

Shape localShape(const Shape &global, const NdSbp &sbp, const std::vector<int64_t> &hierarchy,
                 const std::vector<int64_t> &coord) {
  Shape s;
  for (const Chunk &c : localRegion(global, sbp, hierarchy, coord))
    s.push_back(c.size);
  return s;
}

int64_t elementCount(const Shape &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

int64_t maxLocalElements(const Shape &global, const NdSbp &sbp,
                         const std::vector<int64_t> &hierarchy) {
  // Coordinate 0 on every dimension holds the largest balanced chunk.
  std::vector<int64_t> first(hierarchy.size(), 0);
  return elementCount(localShape(global, sbp, hierarchy, first));
}

Region wholeRegion(const Shape &global) {
  Region region(global.size());
  for (size_t a = 0; a < global.size(); ++a)
    region[a] = Chunk{0, global[a]};
  return region;
}

Region intersect(const Region &a, const Region &b) {
  Region out(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const int64_t lo = std::max(a[i].begin, b[i].begin);
    const int64_t hi = std::min(a[i].begin + a[i].size, b[i].begin + b[i].size);
    out[i] = Chunk{lo, std::max<int64_t>(0, hi - lo)};
  }
  return out;
}

int64_t regionElements(const Region &r) {
  int64_t n = 1;
  for (const Chunk &c : r)
    n *= c.size;
  return n;
}

RegionBox regionBox(const Region &holder, const Region &part) {
  RegionBox b;
  b.rank = static_cast<int>(holder.size());
  for (size_t i = 0; i < holder.size(); ++i) {
    b.shape[i] = holder[i].size;
    b.begin[i] = part[i].begin - holder[i].begin;
    b.size[i] = part[i].size;
  }
  return b;
}

} // namespace sbpflow
