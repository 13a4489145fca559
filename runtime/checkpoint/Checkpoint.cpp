// Shard files, index.json (nlohmann-json) and the region assembly that lets a
// checkpoint be read on any layout.
#include "runtime/checkpoint/Checkpoint.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace sbpflow::checkpoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Payloads are written and read as raw memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoints assume a little-endian host");

constexpr char kMagic[8] = {'S', 'B', 'P', 'C', 'K', 'P', 'T', '1'};
constexpr const char *kIndexFile = "index.json";
constexpr const char *kFormat = "sbpflow-checkpoint";
constexpr int kVersion = 1;
// Bounds on header fields read from a file, so a corrupt header is an error
// rather than a huge allocation.
constexpr uint32_t kMaxNameBytes = 1 << 16;
constexpr uint32_t kMaxRank = 64;

std::string regionText(const Region &r) {
  std::string s = "[";
  for (size_t i = 0; i < r.size(); ++i)
    s += (i ? ", " : "") + std::to_string(r[i].begin) + "+" + std::to_string(r[i].size);
  return s + "]";
}

bool insideShape(const Region &r, const Shape &shape) {
  if (r.size() != shape.size())
    return false;
  for (size_t i = 0; i < r.size(); ++i)
    if (r[i].begin < 0 || r[i].size < 0 || r[i].begin > shape[i] - r[i].size)
      return false;
  return true;
}

// Copies `part` (inside both regions) from `src` (dense over srcRegion) to
// `dst` (dense over dstRegion), a contiguous run of the last axis at a time.
void copyPart(const char *src, const Region &srcRegion, char *dst, const Region &dstRegion,
              const Region &part, int64_t elemBytes) {
  const size_t rank = part.size();
  if (regionElements(part) == 0)
    return;
  if (rank == 0) {
    std::memcpy(dst, src, static_cast<size_t>(elemBytes));
    return;
  }
  std::vector<int64_t> idx(rank, 0); // within part; the last axis stays 0
  const int64_t run = part[rank - 1].size * elemBytes;
  while (true) {
    int64_t from = 0, to = 0;
    for (size_t a = 0; a < rank; ++a) {
      const int64_t g = part[a].begin + idx[a];
      from = from * srcRegion[a].size + (g - srcRegion[a].begin);
      to = to * dstRegion[a].size + (g - dstRegion[a].begin);
    }
    std::memcpy(dst + to * elemBytes, src + from * elemBytes, static_cast<size_t>(run));
    int a = static_cast<int>(rank) - 2; // odometer over all axes but the last
    for (; a >= 0; --a) {
      if (++idx[a] < part[a].size)
        break;
      idx[a] = 0;
    }
    if (a < 0)
      return;
  }
}

void putU32(std::string &s, uint32_t v) { s.append(reinterpret_cast<const char *>(&v), 4); }
void putU64(std::string &s, uint64_t v) { s.append(reinterpret_cast<const char *>(&v), 8); }

uint32_t crcOf(const void *data, uint64_t bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto *p = static_cast<const Bytef *>(data);
  while (bytes > 0) { // crc32 takes a uInt length
    const uInt step = static_cast<uInt>(std::min<uint64_t>(bytes, 1u << 30));
    crc = crc32(crc, p, step);
    p += step;
    bytes -= step;
  }
  return static_cast<uint32_t>(crc);
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

Status writeFileAtomically(const std::string &path, const std::string &head, const void *payload,
                           uint64_t payloadBytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      return Status::error("cannot create '" + tmp + "': " + std::strerror(errno));
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
    if (payloadBytes > 0)
      out.write(static_cast<const char *>(payload), static_cast<std::streamsize>(payloadBytes));
    out.close();
    if (!out)
      return Status::error("cannot write '" + tmp + "': " + std::strerror(errno));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec)
    return Status::error("cannot rename '" + tmp + "' to '" + path + "': " + ec.message());
  return Status::ok();
}

Status ensureDirectory(const std::string &dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec && !fs::is_directory(dir))
    return Status::error("checkpoint: cannot create directory '" + dir + "': " + ec.message());
  return Status::ok();
}

// Reads a shard file's header and payload, checking it against what the
// index says (`want`).
class ShardFile {
public:
  ShardFile(std::string path, const TensorMeta &meta, const Region &want)
      : path_(std::move(path)), meta_(meta), want_(want) {}

  Status read(std::vector<char> &payload) {
    std::ifstream in(path_, std::ios::binary | std::ios::ate);
    if (!in)
      return fail(std::string("cannot open: ") + std::strerror(errno));
    const auto fileBytes = static_cast<uint64_t>(in.tellg());
    in.seekg(0);
    uint64_t headerBytes = 0;
    auto get = [&](void *dst, size_t n) {
      in.read(static_cast<char *>(dst), static_cast<std::streamsize>(n));
      headerBytes += n;
      return static_cast<bool>(in);
    };
    char magic[8];
    if (!get(magic, 8))
      return fail("truncated: shorter than its header (" + std::to_string(fileBytes) + " bytes)");
    if (std::memcmp(magic, kMagic, 8) != 0)
      return fail("bad magic (not an sbpflow checkpoint shard, want \"SBPCKPT1\")");
    uint32_t nameBytes = 0;
    if (!get(&nameBytes, 4) || nameBytes > kMaxNameBytes)
      return fail(in ? "corrupt header: name length " + std::to_string(nameBytes)
                     : "truncated header");
    std::string name(nameBytes, '\0');
    uint8_t dtype = 0;
    uint32_t rank = 0;
    if (!get(name.data(), nameBytes) || !get(&dtype, 1) || !get(&rank, 4))
      return fail("truncated header");
    if (name != meta_.name)
      return fail("holds tensor '" + name + "', the index says '" + meta_.name + "'");
    if (dtype != static_cast<uint8_t>(meta_.dtype))
      return fail("dtype code " + std::to_string(dtype) + " differs from the index's " +
                  toString(meta_.dtype));
    if (rank > kMaxRank)
      return fail("corrupt header: rank " + std::to_string(rank));
    Region region(rank);
    for (Chunk &c : region)
      if (!get(&c.begin, 8) || !get(&c.size, 8))
        return fail("truncated header");
    if (region != want_)
      return fail("holds region " + regionText(region) + ", the index says " + regionText(want_));
    uint64_t payloadBytes = 0;
    uint32_t crc = 0;
    if (!get(&payloadBytes, 8) || !get(&crc, 4))
      return fail("truncated header");
    const uint64_t expected =
        static_cast<uint64_t>(regionElements(want_)) * static_cast<uint64_t>(byteSize(meta_.dtype));
    if (payloadBytes != expected)
      return fail("header says " + std::to_string(payloadBytes) + " payload bytes, region " +
                  regionText(want_) + " of " + toString(meta_.dtype) + " needs " +
                  std::to_string(expected));
    if (fileBytes != headerBytes + payloadBytes)
      return fail(std::string(fileBytes < headerBytes + payloadBytes ? "truncated" : "too long") +
                  ": " + std::to_string(fileBytes) + " bytes, its header says " +
                  std::to_string(headerBytes) + " + " + std::to_string(payloadBytes) +
                  " payload bytes");
    payload.resize(static_cast<size_t>(payloadBytes));
    if (payloadBytes > 0 && !in.read(payload.data(), static_cast<std::streamsize>(payload.size())))
      return fail("truncated while reading the payload");
    const uint32_t actual = crcOf(payload.data(), payloadBytes);
    if (actual != crc)
      return fail("CRC mismatch: payload has CRC-32 " + hex32(actual) + ", header says " +
                  hex32(crc) + " (corrupt file)");
    return Status::ok();
  }

private:
  Status fail(const std::string &what) const {
    return Status::error("tensor '" + meta_.name + "': shard file '" + path_ + "': " + what);
  }

  std::string path_;
  const TensorMeta &meta_;
  const Region &want_;
};

// Index parsing: every missing or mistyped field is an error naming it.
class IndexParser {
public:
  explicit IndexParser(std::string path) : path_(std::move(path)) {}

  Status error(const std::string &where, const std::string &what) const {
    return Status::error("checkpoint index '" + path_ + "': " + where + ": " + what);
  }

  // `j[key]` of the given kind, or an error.
  Status field(const json &j, const char *key, json::value_t kind, const char *kindName,
               const std::string &where, const json *&out) const {
    auto it = j.find(key);
    if (it == j.end())
      return error(where, std::string("missing field \"") + key + "\"");
    const bool ok = kind == json::value_t::number_integer
                        ? it->is_number_integer()
                        : (kind == json::value_t::array ? it->is_array() : it->is_string());
    if (!ok)
      return error(where, std::string("field \"") + key + "\" is not " + kindName);
    out = &*it;
    return Status::ok();
  }

  Status int64List(const json &arr, const std::string &where, std::vector<int64_t> &out) const {
    out.clear();
    for (const json &v : arr) {
      if (!v.is_number_integer())
        return error(where, "expected a list of integers, found " + v.dump());
      out.push_back(v.get<int64_t>());
    }
    return Status::ok();
  }

private:
  std::string path_;
};

} // namespace

const char *toString(DType dtype) {
  switch (dtype) {
  case DType::F32:
    return "f32";
  case DType::I32:
    return "i32";
  }
  return "?";
}

int64_t byteSize(DType) { return 4; }

StatusOr<NdSbp> parseNdSbp(const std::string &text) {
  auto bad = [&](const std::string &why) {
    return Status::error("bad nd-SBP \"" + text + "\": " + why);
  };
  size_t i = 0;
  auto skipSpace = [&] {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i])))
      ++i;
  };
  auto eat = [&](const std::string &s) {
    skipSpace();
    if (text.compare(i, s.size(), s) != 0)
      return false;
    i += s.size();
    return true;
  };
  NdSbp sbp;
  if (!eat("["))
    return bad("expected '['");
  if (eat("]")) {
    skipSpace();
    return i == text.size() ? StatusOr<NdSbp>(sbp) : bad("text after ']'");
  }
  while (true) {
    SbpDim d;
    if (eat("S(")) {
      skipSpace();
      size_t digits = i;
      while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits])))
        ++digits;
      if (digits == i || digits - i > 6)
        return bad("expected an axis after 'S('");
      d.kind = SbpKind::Split;
      d.axis = std::stoi(text.substr(i, digits - i));
      i = digits;
      if (!eat(")"))
        return bad("expected ')' after the split axis");
    } else if (eat("B")) {
      d.kind = SbpKind::Broadcast;
    } else if (eat("P(sum)")) {
      d.kind = SbpKind::PartialSum;
    } else if (eat("P(max)")) {
      d.kind = SbpKind::PartialMax;
    } else if (eat("P(min)")) {
      d.kind = SbpKind::PartialMin;
    } else {
      return bad("expected S(axis), B or P(sum|max|min) at position " + std::to_string(i));
    }
    sbp.push_back(d);
    if (eat("]"))
      break;
    if (!eat(","))
      return bad("expected ',' or ']' at position " + std::to_string(i));
  }
  skipSpace();
  if (i != text.size())
    return bad("text after ']'");
  return sbp;
}

StatusOr<std::vector<ShardOwner>> distinctShards(const TensorMeta &meta) {
  const std::string what = "checkpoint: tensor '" + meta.name + "' (" + toString(meta.sbp) +
                           " on hierarchy " + toString(Shape(meta.hierarchy)) + ")";
  if (meta.sbp.size() != meta.hierarchy.size())
    return Status::error(what + ": the nd-SBP and the hierarchy differ in length");
  int64_t coords = 1;
  for (size_t d = 0; d < meta.sbp.size(); ++d) {
    const SbpDim &s = meta.sbp[d];
    if (s.kind != SbpKind::Split && s.kind != SbpKind::Broadcast)
      return Status::error(what + ": a partial SBP cannot be stored (a variable is S or B)");
    if (s.kind == SbpKind::Split && (s.axis < 0 || s.axis >= static_cast<int>(meta.shape.size())))
      return Status::error(what + ": split axis " + std::to_string(s.axis) + " of a rank " +
                           std::to_string(meta.shape.size()) + " tensor");
    if (meta.hierarchy[d] <= 0)
      return Status::error(what + ": hierarchy sizes must be positive");
    coords *= meta.hierarchy[d];
  }
  for (int64_t n : meta.shape)
    if (n < 0)
      return Status::error(what + ": negative size in shape " + toString(meta.shape));
  std::vector<ShardOwner> shards;
  for (int64_t index = 0; index < coords; ++index) {
    std::vector<int64_t> coord = hierarchyCoord(meta.hierarchy, index);
    bool writer = true; // coordinate 0 on every B dimension
    for (size_t d = 0; d < coord.size(); ++d)
      writer = writer && (meta.sbp[d].kind != SbpKind::Broadcast || coord[d] == 0);
    if (!writer)
      continue;
    Region region = localRegion(meta.shape, meta.sbp, meta.hierarchy, coord);
    if (regionElements(region) == 0)
      continue; // a split finer than the axis: nothing to store
    ShardOwner owner;
    owner.file = shardFileName(meta.name, region);
    owner.region = std::move(region);
    owner.coord = std::move(coord);
    shards.push_back(std::move(owner));
  }
  return shards;
}

std::string shardFileName(const std::string &tensorName, const Region &region) {
  // Readable stem; the CRC of the full name keeps two names that sanitize
  // alike ("a/b", "a_b") apart.
  std::string stem;
  for (char c : tensorName.substr(0, 80))
    stem +=
        std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ? c : '_';
  std::string name = stem + "-" + hex32(crcOf(tensorName.data(), tensorName.size())) + ".";
  if (region.empty())
    name += "scalar";
  for (size_t i = 0; i < region.size(); ++i)
    name += (i ? "_" : "") + std::to_string(region[i].begin) + "+" + std::to_string(region[i].size);
  return name + ".shard";
}

Status writeShard(const std::string &dir, const TensorMeta &meta, const Region &region,
                  const void *data) {
  const std::string what = "checkpoint: tensor '" + meta.name + "'";
  if (!insideShape(region, meta.shape))
    return Status::error(what + ": region " + regionText(region) + " is not inside shape " +
                         toString(meta.shape));
  if (meta.name.size() > kMaxNameBytes)
    return Status::error(what + ": name longer than " + std::to_string(kMaxNameBytes) + " bytes");
  if (Status s = ensureDirectory(dir); !s)
    return s;
  const uint64_t payloadBytes =
      static_cast<uint64_t>(regionElements(region)) * static_cast<uint64_t>(byteSize(meta.dtype));
  if (payloadBytes > 0 && data == nullptr)
    return Status::error(what + ": no data for region " + regionText(region));
  std::string head(kMagic, sizeof kMagic);
  putU32(head, static_cast<uint32_t>(meta.name.size()));
  head += meta.name;
  head.push_back(static_cast<char>(meta.dtype));
  putU32(head, static_cast<uint32_t>(region.size()));
  for (const Chunk &c : region) {
    putU64(head, static_cast<uint64_t>(c.begin));
    putU64(head, static_cast<uint64_t>(c.size));
  }
  putU64(head, payloadBytes);
  putU32(head, crcOf(data, payloadBytes));
  const std::string path = dir + "/" + shardFileName(meta.name, region);
  if (Status s = writeFileAtomically(path, head, data, payloadBytes); !s)
    return s.withContext(what);
  return Status::ok();
}

Status writeIndex(const std::string &dir, const std::vector<TensorMeta> &metas,
                  const DataPosition &next) {
  json tensors = json::array();
  std::set<std::string> names;
  for (const TensorMeta &meta : metas) {
    if (!names.insert(meta.name).second)
      return Status::error("checkpoint: tensor '" + meta.name + "' listed twice");
    auto shards = distinctShards(meta);
    if (!shards)
      return shards.status();
    json list = json::array();
    for (const ShardOwner &s : *shards) {
      json region = json::array();
      for (const Chunk &c : s.region)
        region.push_back({c.begin, c.size});
      list.push_back({{"file", s.file}, {"region", region}});
    }
    tensors.push_back({{"name", meta.name},
                       {"dtype", toString(meta.dtype)},
                       {"shape", meta.shape},
                       {"sbp", toString(meta.sbp)},
                       {"hierarchy", meta.hierarchy},
                       {"shards", list}});
  }
  if (next.epoch < 0 || next.batch < 0)
    return Status::error("checkpoint: negative data position (epoch " + std::to_string(next.epoch) +
                         ", batch " + std::to_string(next.batch) + ")");
  json index = {{"format", kFormat},
                {"version", kVersion},
                {"next", {{"epoch", next.epoch}, {"batch", next.batch}}},
                {"tensors", tensors}};
  if (Status s = ensureDirectory(dir); !s)
    return s;
  const std::string text = index.dump(1) + "\n";
  return writeFileAtomically(dir + "/" + kIndexFile, text, nullptr, 0)
      .withContext("checkpoint: index");
}

StatusOr<CheckpointReader> CheckpointReader::open(const std::string &dir) {
  const std::string path = dir + "/" + kIndexFile;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      return Status::error("checkpoint '" + dir + "' does not exist (no such directory)");
    return Status::error("checkpoint '" + dir + "': cannot open '" + path +
                         "': " + std::strerror(errno));
  }
  std::stringstream text;
  text << in.rdbuf();
  IndexParser p(path);
  json index;
  try {
    index = json::parse(text.str());
  } catch (const json::parse_error &e) {
    return Status::error("checkpoint index '" + path + "': malformed JSON: " + e.what());
  }
  if (!index.is_object())
    return p.error("top level", "not a JSON object");
  const json *format = nullptr, *version = nullptr, *tensors = nullptr;
  if (Status s = p.field(index, "format", json::value_t::string, "a string", "top level", format);
      !s)
    return s;
  if (format->get<std::string>() != kFormat)
    return p.error("top level",
                   "format is \"" + format->get<std::string>() + "\", not \"" + kFormat + "\"");
  if (Status s = p.field(index, "version", json::value_t::number_integer, "an integer", "top level",
                         version);
      !s)
    return s;
  if (version->get<int64_t>() != kVersion)
    return p.error("top level", "version " + version->dump() + " (this build reads version " +
                                    std::to_string(kVersion) + ")");
  if (Status s = p.field(index, "tensors", json::value_t::array, "a list", "top level", tensors);
      !s)
    return s;

  CheckpointReader reader;
  reader.dir_ = dir;
  if (index.contains("next")) {
    const json &jn = index["next"];
    const json *epoch = nullptr, *batch = nullptr;
    if (!jn.is_object())
      return p.error("next", "not a JSON object");
    if (Status s = p.field(jn, "epoch", json::value_t::number_integer, "an integer", "next", epoch);
        !s)
      return s;
    if (Status s = p.field(jn, "batch", json::value_t::number_integer, "an integer", "next", batch);
        !s)
      return s;
    reader.next_ = {epoch->get<int64_t>(), batch->get<int64_t>()};
    if (reader.next_.epoch < 0 || reader.next_.batch < 0)
      return p.error("next", "negative epoch or batch");
  }
  std::set<std::string> seen;
  for (size_t t = 0; t < tensors->size(); ++t) {
    const json &jt = (*tensors)[t];
    std::string where = "tensor #" + std::to_string(t);
    if (!jt.is_object())
      return p.error(where, "not a JSON object");
    const json *name = nullptr, *dtype = nullptr, *shape = nullptr, *sbp = nullptr,
               *hierarchy = nullptr, *shards = nullptr;
    if (Status s = p.field(jt, "name", json::value_t::string, "a string", where, name); !s)
      return s;
    TensorMeta meta;
    meta.name = name->get<std::string>();
    where = "tensor '" + meta.name + "'";
    if (!seen.insert(meta.name).second)
      return p.error(where, "listed twice");
    if (Status s = p.field(jt, "dtype", json::value_t::string, "a string", where, dtype); !s)
      return s;
    if (*dtype == "f32")
      meta.dtype = DType::F32;
    else if (*dtype == "i32")
      meta.dtype = DType::I32;
    else
      return p.error(where, "unknown dtype " + dtype->dump() + " (f32 or i32)");
    if (Status s = p.field(jt, "shape", json::value_t::array, "a list", where, shape); !s)
      return s;
    if (Status s = p.int64List(*shape, where + ": shape", meta.shape); !s)
      return s;
    for (int64_t n : meta.shape)
      if (n < 0)
        return p.error(where, "negative size in shape " + shape->dump());
    if (Status s = p.field(jt, "sbp", json::value_t::string, "a string", where, sbp); !s)
      return s;
    auto parsed = parseNdSbp(sbp->get<std::string>());
    if (!parsed)
      return parsed.status().withContext("checkpoint index '" + path + "': " + where);
    meta.sbp = parsed.take();
    if (Status s = p.field(jt, "hierarchy", json::value_t::array, "a list", where, hierarchy); !s)
      return s;
    if (Status s = p.int64List(*hierarchy, where + ": hierarchy", meta.hierarchy); !s)
      return s;
    if (meta.hierarchy.size() != meta.sbp.size())
      return p.error(where, "sbp " + toString(meta.sbp) + " and hierarchy " + hierarchy->dump() +
                                " differ in length");
    if (Status s = p.field(jt, "shards", json::value_t::array, "a list", where, shards); !s)
      return s;

    std::vector<StoredShard> stored;
    std::set<std::string> files;
    int64_t covered = 0;
    for (size_t k = 0; k < shards->size(); ++k) {
      const json &js = (*shards)[k];
      const std::string sw = where + ": shard #" + std::to_string(k);
      if (!js.is_object())
        return p.error(sw, "not a JSON object");
      const json *file = nullptr, *region = nullptr;
      if (Status s = p.field(js, "file", json::value_t::string, "a string", sw, file); !s)
        return s;
      StoredShard shard;
      shard.file = file->get<std::string>();
      // A bare file name: an index cannot point outside its directory.
      if (shard.file.empty() || shard.file.find('/') != std::string::npos || shard.file == "." ||
          shard.file == "..")
        return p.error(sw, "file \"" + shard.file + "\" is not a plain file name");
      if (!files.insert(shard.file).second)
        return p.error(sw, "file \"" + shard.file + "\" listed twice");
      if (Status s = p.field(js, "region", json::value_t::array, "a list", sw, region); !s)
        return s;
      for (const json &axis : *region) {
        if (!axis.is_array() || axis.size() != 2 || !axis[0].is_number_integer() ||
            !axis[1].is_number_integer())
          return p.error(sw, "region axis " + axis.dump() + " is not [begin, size]");
        shard.region.push_back(Chunk{axis[0].get<int64_t>(), axis[1].get<int64_t>()});
      }
      if (!insideShape(shard.region, meta.shape))
        return p.error(sw,
                       "region " + region->dump() + " is not inside shape " + toString(meta.shape));
      for (const StoredShard &other : stored)
        if (regionElements(intersect(other.region, shard.region)) > 0)
          return p.error(sw,
                         "region " + regionText(shard.region) + " overlaps that of " + other.file);
      covered += regionElements(shard.region);
      stored.push_back(std::move(shard));
    }
    if (covered != elementCount(meta.shape))
      return p.error(where, "the shards hold " + std::to_string(covered) + " of its " +
                                std::to_string(elementCount(meta.shape)) + " elements");
    reader.tensors_.push_back(std::move(meta));
    reader.shards_.push_back(std::move(stored));
  }
  return reader;
}

const TensorMeta *CheckpointReader::find(const std::string &name) const {
  for (const TensorMeta &t : tensors_)
    if (t.name == name)
      return &t;
  return nullptr;
}

Status CheckpointReader::read(const std::string &name, const Shape &expectedShape,
                              DType expectedDtype, const Region &region, void *dst) const {
  const std::string what = "checkpoint '" + dir_ + "': tensor '" + name + "'";
  const TensorMeta *meta = find(name);
  if (!meta) {
    std::string names;
    for (size_t i = 0; i < tensors_.size() && i < 20; ++i)
      names += (i ? ", " : "") + tensors_[i].name;
    if (tensors_.size() > 20)
      names += ", ...";
    return Status::error("checkpoint '" + dir_ + "' has no tensor '" + name + "' (it holds " +
                         std::to_string(tensors_.size()) + ": " + names + ")");
  }
  if (meta->shape != expectedShape)
    return Status::error(what + " has shape " + toString(meta->shape) + ", expected " +
                         toString(expectedShape));
  if (meta->dtype != expectedDtype)
    return Status::error(what + " has dtype " + toString(meta->dtype) + ", expected " +
                         toString(expectedDtype));
  if (!insideShape(region, meta->shape))
    return Status::error(what + ": region " + regionText(region) + " is not inside shape " +
                         toString(meta->shape));
  const int64_t elemBytes = byteSize(meta->dtype);
  const std::vector<StoredShard> &shards = shards_[meta - tensors_.data()];
  std::vector<char> payload;
  for (const StoredShard &shard : shards) {
    const Region part = intersect(shard.region, region);
    if (regionElements(part) == 0)
      continue;
    ShardFile file(dir_ + "/" + shard.file, *meta, shard.region);
    if (Status s = file.read(payload); !s)
      return s.withContext("checkpoint '" + dir_ + "'");
    copyPart(payload.data(), shard.region, static_cast<char *>(dst), region, part, elemBytes);
  }
  return Status::ok();
}

} // namespace sbpflow::checkpoint
