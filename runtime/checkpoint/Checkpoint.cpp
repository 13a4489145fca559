// Shard files (block CRCs, partial reads), index.json (nlohmann-json), the
// two-phase publish and the region assembly that lets a checkpoint be read
// on any layout.
#include "runtime/checkpoint/Checkpoint.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <fcntl.h>
#include <stdio.h> // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace sbpflow::checkpoint {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Payloads are written and read as raw memory.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checkpoints assume a little-endian host");

// "SBPCKPT" and the shard format's digit.
constexpr char kMagicStem[7] = {'S', 'B', 'P', 'C', 'K', 'P', 'T'};
constexpr char kShardFormatDigit = '2';
constexpr int kShardFormat = 2;
constexpr const char *kIndexFile = "index.json";
constexpr const char *kFormat = "sbpflow-checkpoint";
// The index's own layout version. Shard format 2 added "shard_format",
// "generation" and each shard's "bytes" and "crc"; an index without them is
// refused through "shard_format".
constexpr int kVersion = 1;
// Payload bytes per CRC: a read checks (and so reads) whole blocks.
constexpr uint32_t kBlockBytes = 1 << 16;
// Blocks read with one pread at most (bounds the read buffer: 16 MiB).
constexpr uint64_t kMaxSpanBlocks = 256;
// Bounds on header fields read from a file, so a corrupt header is an error
// rather than a huge allocation.
constexpr uint32_t kMaxNameBytes = 1 << 16;
constexpr uint32_t kMaxRank = 64;
// The first read of a header; a longer one (many blocks) is read in two.
constexpr uint64_t kHeaderProbe = 4096;

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

std::string errnoText() { return std::strerror(errno); }

// A file descriptor, closed when it goes.
class Fd {
public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now, reporting close's error (a write-back error surfaces here).
  bool close() {
    const int fd = fd_;
    fd_ = -1;
    return fd < 0 || ::close(fd) == 0;
  }

private:
  int fd_;
};

bool writeAll(int fd, const void *data, uint64_t bytes) {
  const char *p = static_cast<const char *>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, static_cast<size_t>(std::min<uint64_t>(bytes, 1u << 30)));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    p += n;
    bytes -= static_cast<uint64_t>(n);
  }
  return true;
}

// Reads exactly `bytes` at `offset`; false on an error or an early end.
bool preadAll(int fd, void *dst, uint64_t bytes, uint64_t offset) {
  char *p = static_cast<char *>(dst);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, static_cast<size_t>(std::min<uint64_t>(bytes, 1u << 30)),
                              static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = 0;
      return false;
    }
    p += n;
    bytes -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

Status syncDirectory(const std::string &dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0)
    return Status::error("checkpoint: cannot flush directory '" + dir + "': " + errnoText());
  return Status::ok();
}

// Writes head + payload to `path` through a temporary name: flushed to disk
// before the rename, so the final name never holds a partial file.
Status writeFileAtomically(const std::string &path, const std::string &head, const void *payload,
                           uint64_t payloadBytes) {
  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0)
    return Status::error("cannot create '" + tmp + "': " + errnoText());
  if (!writeAll(fd.get(), head.data(), head.size()) ||
      (payloadBytes > 0 && !writeAll(fd.get(), payload, payloadBytes)) || ::fsync(fd.get()) != 0 ||
      !fd.close()) {
    const std::string why = errnoText();
    ::unlink(tmp.c_str());
    return Status::error("cannot write '" + tmp + "': " + why);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errnoText();
    ::unlink(tmp.c_str());
    return Status::error("cannot rename '" + tmp + "' to '" + path + "': " + why);
  }
  return Status::ok();
}

Status ensureDirectory(const std::string &dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec && !fs::is_directory(dir))
    return Status::error("checkpoint: cannot create directory '" + dir + "': " + ec.message());
  return Status::ok();
}

// `dir` without trailing slashes ("/" stays "/").
std::string withoutTrailingSlash(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/')
    dir.pop_back();
  return dir;
}

// The header of a shard file, as read.
struct ShardHeader {
  uint64_t generation = 0;
  std::string name;
  uint8_t dtype = 0;
  Region region;
  uint64_t payloadBytes = 0;
  uint32_t blockBytes = 0;
  std::vector<uint32_t> blockCrcs;
  uint32_t crc = 0; // of the header bytes before it
  uint64_t headerBytes = 0;
};

// The header of a shard file for `generation`, `meta` and `region`, with the
// CRC of every payload block; `crc` receives the header's own CRC.
std::string shardHeader(uint64_t generation, const TensorMeta &meta, const Region &region,
                        const void *data, uint64_t payloadBytes, uint32_t &crc) {
  std::string head(kMagicStem, sizeof kMagicStem);
  head.push_back(kShardFormatDigit);
  putU64(head, generation);
  putU32(head, static_cast<uint32_t>(meta.name.size()));
  head += meta.name;
  head.push_back(static_cast<char>(meta.dtype));
  putU32(head, static_cast<uint32_t>(region.size()));
  for (const Chunk &c : region) {
    putU64(head, static_cast<uint64_t>(c.begin));
    putU64(head, static_cast<uint64_t>(c.size));
  }
  putU64(head, payloadBytes);
  putU32(head, kBlockBytes);
  const uint64_t blocks = (payloadBytes + kBlockBytes - 1) / kBlockBytes;
  putU32(head, static_cast<uint32_t>(blocks));
  const char *p = static_cast<const char *>(data);
  for (uint64_t b = 0; b < blocks; ++b) {
    const uint64_t begin = b * kBlockBytes;
    putU32(head, crcOf(p + begin, std::min<uint64_t>(kBlockBytes, payloadBytes - begin)));
  }
  crc = crcOf(head.data(), head.size());
  putU32(head, crc);
  return head;
}

// One shard file opened for reading: its header checked against what the
// index says (`want`), then any part of its region read block by block.
class ShardFile {
public:
  ShardFile(std::string path, const TensorMeta &meta, uint64_t generation, const Region &want,
            uint64_t indexBytes, uint32_t indexCrc, std::atomic<uint64_t> &bytesRead)
      : path_(std::move(path)), meta_(meta), generation_(generation), want_(want),
        indexBytes_(indexBytes), indexCrc_(indexCrc), bytesRead_(bytesRead) {}

  Status open() {
    fd_ = std::make_unique<Fd>(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd_->get() < 0)
      return fail("cannot open: " + errnoText());
    struct stat st;
    if (::fstat(fd_->get(), &st) != 0)
      return fail("cannot stat: " + errnoText());
    fileBytes_ = static_cast<uint64_t>(st.st_size);
    return readHeader();
  }

  // Copies `part` (inside the shard's region and `dstRegion`) into `dst`
  // (dense over dstRegion), reading only the payload blocks that hold it and
  // checking each block's CRC.
  Status readPart(const Region &part, const Region &dstRegion, char *dst);

private:
  Status fail(const std::string &what) const {
    return Status::error("tensor '" + meta_.name + "': shard file '" + path_ + "': " + what);
  }

  bool pread(void *dst, uint64_t bytes, uint64_t offset) {
    bytesRead_ += bytes;
    return preadAll(fd_->get(), dst, bytes, offset);
  }

  Status readHeader();

  std::string path_;
  const TensorMeta &meta_;
  uint64_t generation_;
  const Region &want_;
  uint64_t indexBytes_;
  uint32_t indexCrc_;
  std::atomic<uint64_t> &bytesRead_;
  std::unique_ptr<Fd> fd_;
  uint64_t fileBytes_ = 0;
  ShardHeader header_;
};

Status ShardFile::readHeader() {
  std::vector<char> buf(static_cast<size_t>(std::min(fileBytes_, kHeaderProbe)));
  if (!pread(buf.data(), buf.size(), 0))
    return fail("cannot read the header: " + errnoText());
  uint64_t pos = 0;
  auto get = [&](void *dst, uint64_t n) {
    if (pos + n > buf.size())
      return false;
    std::memcpy(dst, buf.data() + pos, static_cast<size_t>(n));
    pos += n;
    return true;
  };
  const std::string truncated =
      "truncated: shorter than its header (" + std::to_string(fileBytes_) + " bytes)";
  char magic[8];
  if (!get(magic, 8))
    return fail(truncated);
  if (std::memcmp(magic, kMagicStem, sizeof kMagicStem) != 0)
    return fail("bad magic (not an sbpflow checkpoint shard, want \"SBPCKPT" +
                std::string(1, kShardFormatDigit) + "\")");
  if (magic[7] != kShardFormatDigit)
    return fail("shard format " + std::string(1, magic[7]) + " (" +
                (magic[7] == '1' ? std::string("written by an older sbpflow, without block CRCs "
                                               "or a generation")
                                 : std::string("unknown")) +
                "); this build reads shard format " + std::to_string(kShardFormat));
  ShardHeader &h = header_;
  uint32_t nameBytes = 0;
  if (!get(&h.generation, 8) || !get(&nameBytes, 4))
    return fail(truncated);
  if (nameBytes > kMaxNameBytes)
    return fail("corrupt header: name length " + std::to_string(nameBytes));
  // A long name may not fit the probe: read on.
  if (pos + nameBytes + 1 + 4 + 16 * kMaxRank + 16 > buf.size() && buf.size() < fileBytes_) {
    const uint64_t more =
        std::min<uint64_t>(fileBytes_, pos + nameBytes + 1 + 4 + 16 * kMaxRank + 16);
    const size_t had = buf.size();
    buf.resize(static_cast<size_t>(more));
    if (!pread(buf.data() + had, buf.size() - had, had))
      return fail("cannot read the header: " + errnoText());
  }
  h.name.assign(nameBytes, '\0');
  uint32_t rank = 0;
  if (!get(h.name.data(), nameBytes) || !get(&h.dtype, 1) || !get(&rank, 4))
    return fail(truncated);
  if (rank > kMaxRank)
    return fail("corrupt header: rank " + std::to_string(rank));
  h.region.resize(rank);
  for (Chunk &c : h.region)
    if (!get(&c.begin, 8) || !get(&c.size, 8))
      return fail(truncated);
  uint32_t blocks = 0;
  if (!get(&h.payloadBytes, 8) || !get(&h.blockBytes, 4) || !get(&blocks, 4))
    return fail(truncated);
  if (h.blockBytes == 0 || h.blockBytes > (1u << 30) ||
      blocks != (h.payloadBytes + h.blockBytes - 1) / h.blockBytes)
    return fail("corrupt header: " + std::to_string(blocks) + " blocks of " +
                std::to_string(h.blockBytes) + " bytes for " + std::to_string(h.payloadBytes) +
                " payload bytes");
  h.headerBytes = pos + 4ull * blocks + 4;
  if (h.headerBytes > fileBytes_)
    return fail(truncated);
  if (h.headerBytes > buf.size()) {
    const size_t had = buf.size();
    buf.resize(static_cast<size_t>(h.headerBytes));
    if (!pread(buf.data() + had, buf.size() - had, had))
      return fail("cannot read the header: " + errnoText());
  }
  h.blockCrcs.resize(blocks);
  if ((blocks > 0 && !get(h.blockCrcs.data(), 4ull * blocks)) || !get(&h.crc, 4))
    return fail(truncated);
  const uint32_t actual = crcOf(buf.data(), h.headerBytes - 4);
  if (actual != h.crc)
    return fail("corrupt header: CRC mismatch (header has CRC-32 " + hex32(actual) + ", it says " +
                hex32(h.crc) + ")");
  if (h.name != meta_.name)
    return fail("holds tensor '" + h.name + "', the index says '" + meta_.name + "'");
  if (h.dtype != static_cast<uint8_t>(meta_.dtype))
    return fail("dtype code " + std::to_string(h.dtype) + " differs from the index's " +
                toString(meta_.dtype));
  if (h.region != want_)
    return fail("holds region " + regionText(h.region) + ", the index says " + regionText(want_));
  if (h.generation != generation_)
    return fail("written by save " + generationText(h.generation) + ", the index is of save " +
                generationText(generation_) +
                ": a shard of another save (a torn checkpoint), refused");
  const uint64_t expected =
      static_cast<uint64_t>(regionElements(want_)) * static_cast<uint64_t>(byteSize(meta_.dtype));
  if (h.payloadBytes != expected)
    return fail("header says " + std::to_string(h.payloadBytes) + " payload bytes, region " +
                regionText(want_) + " of " + toString(meta_.dtype) + " needs " +
                std::to_string(expected));
  if (fileBytes_ != h.headerBytes + h.payloadBytes)
    return fail(
        std::string(fileBytes_ < h.headerBytes + h.payloadBytes ? "truncated" : "too long") + ": " +
        std::to_string(fileBytes_) + " bytes, its header says " + std::to_string(h.headerBytes) +
        " + " + std::to_string(h.payloadBytes) + " payload bytes");
  if (fileBytes_ != indexBytes_ || h.crc != indexCrc_)
    return fail("is not the file the index recorded (" + std::to_string(fileBytes_) +
                " bytes, header CRC-32 " + hex32(h.crc) + "; the index says " +
                std::to_string(indexBytes_) + " bytes, " + hex32(indexCrc_) + ")");
  return Status::ok();
}

Status ShardFile::readPart(const Region &part, const Region &dstRegion, char *dst) {
  const ShardHeader &h = header_;
  const size_t rank = part.size();
  const int64_t elemBytes = byteSize(meta_.dtype);
  if (regionElements(part) == 0)
    return Status::ok();
  // Row runs of `part` (contiguous along the last axis), in increasing
  // payload offset: an odometer over every axis but the last.
  const uint64_t run =
      static_cast<uint64_t>(rank == 0 ? 1 : part[rank - 1].size) * static_cast<uint64_t>(elemBytes);
  auto forEachRun = [&](const auto &body) -> Status {
    Status failed = Status::ok();
    forEachRow(part, [&](const std::vector<int64_t> &idx) {
      int64_t from = 0, to = 0;
      for (size_t a = 0; a < rank; ++a) {
        const int64_t g = part[a].begin + idx[a];
        from = from * want_[a].size + (g - want_[a].begin);
        to = to * dstRegion[a].size + (g - dstRegion[a].begin);
      }
      failed = body(static_cast<uint64_t>(from * elemBytes), static_cast<uint64_t>(to * elemBytes));
      return static_cast<bool>(failed);
    });
    return failed;
  };
  // Pass 1: the blocks the runs touch.
  const uint64_t B = h.blockBytes;
  std::vector<bool> touched(h.blockCrcs.size(), false);
  (void)forEachRun([&](uint64_t src, uint64_t) {
    for (uint64_t b = src / B; b <= (src + run - 1) / B; ++b)
      touched[b] = true;
    return Status::ok();
  });
  // Pass 2: load spans of consecutive touched blocks (each block once, in
  // order), check their CRCs and copy the runs out.
  std::vector<char> span;
  uint64_t spanBegin = 0, spanEnd = 0; // payload bytes held in `span`
  auto load = [&](uint64_t offset) -> Status {
    const uint64_t first = offset / B;
    uint64_t last = first;
    while (last + 1 < touched.size() && touched[last + 1] && last + 1 - first < kMaxSpanBlocks)
      ++last;
    spanBegin = first * B;
    spanEnd = std::min(h.payloadBytes, (last + 1) * B);
    span.resize(static_cast<size_t>(spanEnd - spanBegin));
    if (!pread(span.data(), span.size(), h.headerBytes + spanBegin))
      return fail("cannot read payload bytes " + std::to_string(spanBegin) + ".." +
                  std::to_string(spanEnd) + ": " +
                  (errno ? errnoText() : std::string("unexpected end of file")));
    for (uint64_t b = first; b <= last; ++b) {
      const uint64_t begin = b * B - spanBegin;
      const uint64_t n = std::min<uint64_t>(B, h.payloadBytes - b * B);
      const uint32_t actual = crcOf(span.data() + begin, n);
      if (actual != h.blockCrcs[b])
        return fail("CRC mismatch in payload block " + std::to_string(b) + " (bytes " +
                    std::to_string(b * B) + ".." + std::to_string(b * B + n) + "): CRC-32 " +
                    hex32(actual) + ", the header says " + hex32(h.blockCrcs[b]) +
                    " (corrupt file)");
    }
    return Status::ok();
  };
  return forEachRun([&](uint64_t src, uint64_t to) -> Status {
    uint64_t done = 0;
    while (done < run) {
      const uint64_t at = src + done;
      if (at < spanBegin || at >= spanEnd)
        if (Status s = load(at); !s)
          return s;
      const uint64_t n = std::min(run - done, spanEnd - at);
      std::memcpy(dst + to + done, span.data() + (at - spanBegin), static_cast<size_t>(n));
      done += n;
    }
    return Status::ok();
  });
}

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

uint64_t newGeneration() {
  std::random_device device;
  uint64_t g = 0;
  while (g == 0)
    g = (static_cast<uint64_t>(device()) << 32) ^ static_cast<uint64_t>(device());
  return g;
}

std::string generationText(uint64_t generation) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(generation));
  return buf;
}

std::string stagingDir(const std::string &dir, uint64_t generation) {
  return withoutTrailingSlash(dir) + ".staging-" + generationText(generation);
}

StatusOr<ShardRecord> writeShard(const std::string &dir, const TensorMeta &meta,
                                 const Region &region, const void *data, uint64_t generation) {
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
  if ((payloadBytes + kBlockBytes - 1) / kBlockBytes > std::numeric_limits<uint32_t>::max())
    return Status::error(what + ": region " + regionText(region) + " is too large for one shard");
  ShardRecord record;
  record.tensor = meta.name;
  record.file = shardFileName(meta.name, region);
  const std::string head = shardHeader(generation, meta, region, data, payloadBytes, record.crc);
  record.bytes = head.size() + payloadBytes;
  if (Status s = writeFileAtomically(dir + "/" + record.file, head, data, payloadBytes); !s)
    return s.withContext(what);
  return record;
}

Status writeIndex(const std::string &dir, const std::vector<TensorMeta> &metas,
                  const DataPosition &next, uint64_t generation,
                  const std::vector<ShardRecord> &records) {
  std::map<std::string, const ShardRecord *> byFile;
  for (const ShardRecord &r : records)
    if (!byFile.emplace(r.file, &r).second)
      return Status::error("checkpoint: shard file '" + r.file + "' of tensor '" + r.tensor +
                           "' reported written twice");
  std::set<std::string> names;
  for (const TensorMeta &meta : metas)
    if (!names.insert(meta.name).second)
      return Status::error("checkpoint: tensor '" + meta.name + "' listed twice");
  json tensors = json::array();
  std::set<std::string> used;
  for (const TensorMeta &meta : metas) {
    auto shards = distinctShards(meta);
    if (!shards)
      return shards.status();
    json list = json::array();
    for (const ShardOwner &s : *shards) {
      auto it = byFile.find(s.file);
      if (it == byFile.end() || it->second->tensor != meta.name)
        return Status::error("checkpoint: tensor '" + meta.name + "': shard file '" + s.file +
                             "' (region " + regionText(s.region) + ", written by coordinate " +
                             toString(Shape(s.coord)) + " of its placement) was not " +
                             (it == byFile.end()
                                  ? "reported written"
                                  : "reported for this tensor (for '" + it->second->tensor + "')"));
      used.insert(s.file);
      json region = json::array();
      for (const Chunk &c : s.region)
        region.push_back({c.begin, c.size});
      list.push_back({{"file", s.file},
                      {"region", region},
                      {"bytes", it->second->bytes},
                      {"crc", it->second->crc}});
    }
    tensors.push_back({{"name", meta.name},
                       {"dtype", toString(meta.dtype)},
                       {"shape", meta.shape},
                       {"sbp", toString(meta.sbp)},
                       {"hierarchy", meta.hierarchy},
                       {"shards", list}});
  }
  for (const ShardRecord &r : records)
    if (!used.count(r.file)) {
      bool listed = false;
      for (const TensorMeta &meta : metas)
        listed |= meta.name == r.tensor;
      if (!listed)
        return Status::error("checkpoint: shard file '" + r.file + "' was written for tensor '" +
                             r.tensor + "', which the checkpoint does not hold");
      return Status::error("checkpoint: shard file '" + r.file + "' of tensor '" + r.tensor +
                           "' is not one of its distinct shards");
    }
  if (next.epoch < 0 || next.batch < 0 ||
      std::any_of(next.rankBatches.begin(), next.rankBatches.end(),
                  [](int64_t b) { return b < 0; }))
    return Status::error("checkpoint: negative data position (epoch " + std::to_string(next.epoch) +
                         ", batch " + std::to_string(next.batch) + ", or a rank's batch)");
  json position = {{"epoch", next.epoch}, {"batch", next.batch}};
  if (!next.rankBatches.empty())
    position["rank_batches"] = next.rankBatches;
  json index = {{"format", kFormat},
                {"version", kVersion},
                {"shard_format", kShardFormat},
                {"generation", generationText(generation)},
                {"next", position},
                {"tensors", tensors}};
  if (Status s = ensureDirectory(dir); !s)
    return s;
  const std::string text = index.dump(1) + "\n";
  if (Status s = writeFileAtomically(dir + "/" + kIndexFile, text, nullptr, 0); !s)
    return s.withContext("checkpoint: index");
  return syncDirectory(dir);
}

namespace {

// Deletes the files of the checkpoint directory `old` (index.json, shard
// files and their temporaries), then the directory; anything else found
// there is kept, and so is the directory, renamed to `keepAs`.
Status removeOldCheckpoint(const std::string &old, const std::string &keepAs) {
  std::error_code ec;
  bool foreign = false;
  for (const auto &entry : fs::directory_iterator(old, ec)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kIndexFile || name == std::string(kIndexFile) + ".tmp" ||
                      (name.size() > 6 && name.compare(name.size() - 6, 6, ".shard") == 0) ||
                      (name.size() > 10 && name.compare(name.size() - 10, 10, ".shard.tmp") == 0);
    if (!ours || !entry.is_regular_file()) {
      foreign = true;
      continue;
    }
    if (::unlink(entry.path().c_str()) != 0)
      return Status::error("checkpoint: cannot delete '" + entry.path().string() +
                           "' of the previous checkpoint: " + errnoText());
  }
  if (ec)
    return Status::error("checkpoint: cannot list the previous checkpoint at '" + old +
                         "': " + ec.message());
  if (foreign) {
    if (old != keepAs && ::rename(old.c_str(), keepAs.c_str()) != 0)
      return Status::error("checkpoint: cannot rename '" + old + "' to '" + keepAs +
                           "': " + errnoText());
    return Status::ok();
  }
  if (::rmdir(old.c_str()) != 0)
    return Status::error("checkpoint: cannot remove the previous checkpoint's directory '" + old +
                         "': " + errnoText());
  return Status::ok();
}

} // namespace

Status publish(const std::string &stagingIn, const std::string &dirIn, uint64_t generation) {
  const std::string staging = withoutTrailingSlash(stagingIn), dir = withoutTrailingSlash(dirIn);
  const std::string what = "checkpoint '" + dir + "'";
  std::error_code ec;
  if (!fs::is_regular_file(staging + "/" + kIndexFile, ec))
    return Status::error(what + ": staging directory '" + staging +
                         "' holds no index.json: nothing to publish");
  const std::string previous = dir + ".previous-" + generationText(generation);
  const fs::path parent = fs::path(dir).has_parent_path() ? fs::path(dir).parent_path() : ".";
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT)
      return Status::error(what + ": cannot stat it: " + errnoText());
    if (::rename(staging.c_str(), dir.c_str()) != 0)
      return Status::error(what + ": cannot rename '" + staging + "' to it: " + errnoText());
    return syncDirectory(parent.string());
  }
  if (!S_ISDIR(st.st_mode))
    return Status::error(what + " exists and is not a directory: refusing to replace it");
  if (!fs::exists(dir + "/" + kIndexFile, ec) && !fs::is_empty(dir, ec))
    return Status::error(what + " exists and is not an sbpflow checkpoint (no index.json): "
                                "refusing to replace it");
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    if (Status s = syncDirectory(parent.string()); !s)
      return s;
    // `staging` now holds the previous checkpoint.
    return removeOldCheckpoint(staging, previous);
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    return Status::error(what + ": cannot exchange it with '" + staging + "': " + errnoText());
  // No atomic exchange on this file system: two renames.
  if (::rename(dir.c_str(), previous.c_str()) != 0)
    return Status::error(what + ": cannot rename it to '" + previous + "': " + errnoText());
  if (::rename(staging.c_str(), dir.c_str()) != 0) {
    const std::string why = errnoText();
    ::rename(previous.c_str(), dir.c_str());
    return Status::error(what + ": cannot rename '" + staging + "' to it: " + why);
  }
  if (Status s = syncDirectory(parent.string()); !s)
    return s;
  return removeOldCheckpoint(previous, previous);
}

StatusOr<CheckpointReader> CheckpointReader::open(const std::string &dir) {
  const std::string path = dir + "/" + kIndexFile;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      return Status::error("checkpoint '" + dir + "' does not exist (no such directory)");
    return Status::error("checkpoint '" + dir + "': cannot open '" + path +
                         "': " + std::strerror(errno) +
                         " (an index is written last: a save that did not finish?)");
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
  if (!index.contains("shard_format"))
    return p.error("top level", "no \"shard_format\": written by an older sbpflow in shard format "
                                "1, which this build does not read (it reads shard format " +
                                    std::to_string(kShardFormat) + ")");
  const json *shardFormat = nullptr, *generation = nullptr;
  if (Status s = p.field(index, "shard_format", json::value_t::number_integer, "an integer",
                         "top level", shardFormat);
      !s)
    return s;
  if (shardFormat->get<int64_t>() != kShardFormat)
    return p.error("top level", "shard format " + shardFormat->dump() +
                                    " (this build reads shard format " +
                                    std::to_string(kShardFormat) + ")");
  if (Status s =
          p.field(index, "generation", json::value_t::string, "a string", "top level", generation);
      !s)
    return s;
  if (Status s = p.field(index, "tensors", json::value_t::array, "a list", "top level", tensors);
      !s)
    return s;

  CheckpointReader reader;
  reader.dir_ = dir;
  {
    const std::string g = generation->get<std::string>();
    char *end = nullptr;
    errno = 0;
    reader.generation_ = std::strtoull(g.c_str(), &end, 16);
    if (g.size() != 16 || errno != 0 || end != g.c_str() + g.size() ||
        !std::all_of(g.begin(), g.end(), [](char c) { return std::isxdigit(c) != 0; }))
      return p.error("top level", "generation \"" + g + "\" is not 16 hex digits");
  }
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
    reader.next_ = {epoch->get<int64_t>(), batch->get<int64_t>(), {}};
    if (reader.next_.epoch < 0 || reader.next_.batch < 0)
      return p.error("next", "negative epoch or batch");
    if (jn.contains("rank_batches")) {
      const json &ranks = jn["rank_batches"];
      if (!ranks.is_array())
        return p.error("next", "rank_batches is not an array");
      for (const json &b : ranks) {
        if (!b.is_number_integer() || b.get<int64_t>() < 0)
          return p.error("next", "rank_batches holds " + b.dump() + ", not a non-negative integer");
        reader.next_.rankBatches.push_back(b.get<int64_t>());
      }
    }
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
      const json *bytes = nullptr, *crc = nullptr;
      if (Status s = p.field(js, "bytes", json::value_t::number_integer, "an integer", sw, bytes);
          !s)
        return s;
      if (Status s = p.field(js, "crc", json::value_t::number_integer, "an integer", sw, crc); !s)
        return s;
      if (bytes->get<int64_t>() < 0 || crc->get<int64_t>() < 0 ||
          crc->get<int64_t>() > std::numeric_limits<uint32_t>::max())
        return p.error(sw, "bytes " + bytes->dump() + " or crc " + crc->dump() + " out of range");
      shard.bytes = bytes->get<uint64_t>();
      shard.crc = static_cast<uint32_t>(crc->get<int64_t>());
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

Status CheckpointReader::checkComplete() const {
  for (size_t t = 0; t < tensors_.size(); ++t)
    for (const StoredShard &shard : shards_[t]) {
      const std::string path = dir_ + "/" + shard.file;
      struct stat st;
      if (::stat(path.c_str(), &st) != 0)
        return Status::error("checkpoint '" + dir_ + "' is incomplete: shard file '" + path +
                             "' of tensor '" + tensors_[t].name + "' is missing (" + errnoText() +
                             ")");
      if (static_cast<uint64_t>(st.st_size) != shard.bytes)
        return Status::error("checkpoint '" + dir_ + "': shard file '" + path + "' of tensor '" +
                             tensors_[t].name + "' is " + std::to_string(st.st_size) +
                             " bytes, the index says " + std::to_string(shard.bytes) +
                             " (a shard of another save, or a damaged one)");
    }
  return Status::ok();
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
  const std::vector<StoredShard> &shards = shards_[meta - tensors_.data()];
  for (const StoredShard &shard : shards) {
    const Region part = intersect(shard.region, region);
    if (regionElements(part) == 0)
      continue;
    ShardFile file(dir_ + "/" + shard.file, *meta, generation_, shard.region, shard.bytes,
                   shard.crc, *bytesRead_);
    Status s = file.open();
    if (s)
      s = file.readPart(part, region, static_cast<char *>(dst));
    if (!s)
      return s.withContext("checkpoint '" + dir_ + "'");
  }
  return Status::ok();
}

} // namespace sbpflow::checkpoint
