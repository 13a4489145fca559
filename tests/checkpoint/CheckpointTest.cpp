// Checkpoints saved on one layout and read on another (resharding), with
// uneven balanced chunks and broadcast dimensions, and every broken input the
// reader must name: truncated, corrupt, missing or mismatched shard files,
// missing tensors, wrong shapes and dtypes, malformed indexes.
#include "runtime/checkpoint/Checkpoint.h"
#include "tests/TempDir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sbpflow::checkpoint {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

using sbpflow::test::TempDir;

SbpDim S(int axis) { return SbpDim{SbpKind::Split, axis}; }
const SbpDim B{SbpKind::Broadcast, 0};

TensorMeta meta(const std::string &name, Shape shape, NdSbp sbp, std::vector<int64_t> hierarchy,
                DType dtype = DType::F32) {
  TensorMeta m;
  m.name = name;
  m.dtype = dtype;
  m.shape = std::move(shape);
  m.sbp = std::move(sbp);
  m.hierarchy = std::move(hierarchy);
  return m;
}

// Distinct, exactly representable values: element i is 0.25 * i - 3.
std::vector<float> globalValues(const Shape &shape) {
  std::vector<float> v(static_cast<size_t>(elementCount(shape)));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = 0.25f * static_cast<float>(i) - 3.f;
  return v;
}

// The elements of `region` of a dense row-major global tensor, gathered by
// plain index arithmetic (independent of the library's copy).
template <typename T>
std::vector<T> pack(const std::vector<T> &global, const Shape &shape, const Region &region) {
  int64_t n = 1;
  for (const Chunk &c : region)
    n *= c.size;
  std::vector<T> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, offset = 0, stride = 1;
    for (int64_t a = static_cast<int64_t>(shape.size()) - 1; a >= 0; --a) {
      const int64_t local = rest % region[a].size;
      rest /= region[a].size;
      offset += (region[a].begin + local) * stride;
      stride *= shape[a];
    }
    out[i] = global[offset];
  }
  return out;
}

int64_t ranksOf(const std::vector<int64_t> &hierarchy) {
  int64_t n = 1;
  for (int64_t h : hierarchy)
    n *= h;
  return n;
}

// Every rank of `m`'s layout writes the shards it owns, then "rank 0" the index.
template <typename T>
void save(const std::string &dir, const std::vector<TensorMeta> &metas,
          const std::vector<std::vector<T>> &values) {
  for (size_t t = 0; t < metas.size(); ++t) {
    const TensorMeta &m = metas[t];
    auto shards = distinctShards(m);
    ASSERT_TRUE(shards) << shards.status().message();
    int written = 0;
    for (int64_t rank = 0; rank < ranksOf(m.hierarchy); ++rank) {
      const std::vector<int64_t> coord = hierarchyCoord(m.hierarchy, rank);
      const Region mine = localRegion(m.shape, m.sbp, m.hierarchy, coord);
      for (const ShardOwner &s : *shards)
        if (s.coord == coord) {
          ASSERT_EQ(s.region.size(), mine.size());
          for (size_t a = 0; a < mine.size(); ++a)
            ASSERT_TRUE(s.region[a].begin == mine[a].begin && s.region[a].size == mine[a].size);
          const std::vector<T> local = pack(values[t], m.shape, mine);
          Status st = writeShard(dir, m, mine, local.data());
          ASSERT_TRUE(st) << st.message();
          ++written;
        }
    }
    ASSERT_EQ(written, static_cast<int>(shards->size()));
  }
  Status st = writeIndex(dir, metas);
  ASSERT_TRUE(st) << st.message();
}

// Reads `name` as every rank of layout (`sbp`, `hierarchy`) would and compares
// with the original values.
void expectLoadsAs(const CheckpointReader &reader, const std::string &name, const Shape &shape,
                   const std::vector<float> &global, NdSbp sbp, std::vector<int64_t> hierarchy) {
  for (int64_t rank = 0; rank < ranksOf(hierarchy); ++rank) {
    const Region region = localRegion(shape, sbp, hierarchy, hierarchyCoord(hierarchy, rank));
    const std::vector<float> want = pack(global, shape, region);
    std::vector<float> got(want.size(), -999.f);
    Status st = reader.read(name, shape, DType::F32, region, got.data());
    ASSERT_TRUE(st) << st.message();
    EXPECT_EQ(got, want) << name << " as " << toString(sbp) << " on " << toString(Shape(hierarchy))
                         << ", rank " << rank;
  }
}

std::string readText(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void writeText(const std::string &path, const std::string &text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

TEST(CheckpointShardsTest, OneWriterPerDistinctShard) {
  auto split = distinctShards(meta("w", {8, 6}, {S(0)}, {2}));
  ASSERT_TRUE(split);
  ASSERT_EQ(split->size(), 2u);
  EXPECT_EQ((*split)[0].coord, std::vector<int64_t>({0}));
  EXPECT_EQ((*split)[1].coord, std::vector<int64_t>({1}));
  EXPECT_EQ((*split)[1].region[0].begin, 4);
  EXPECT_NE((*split)[0].file, (*split)[1].file);

  auto grid = distinctShards(meta("w", {8, 6}, {S(0), S(1)}, {2, 2}));
  ASSERT_TRUE(grid);
  EXPECT_EQ(grid->size(), 4u);

  // B on the first dim: only coordinates (0, j) write.
  auto mixed = distinctShards(meta("w", {7, 5}, {B, S(0)}, {2, 2}));
  ASSERT_TRUE(mixed);
  ASSERT_EQ(mixed->size(), 2u);
  EXPECT_EQ((*mixed)[0].coord, std::vector<int64_t>({0, 0}));
  EXPECT_EQ((*mixed)[1].coord, std::vector<int64_t>({0, 1}));
  EXPECT_EQ((*mixed)[0].region[0].size, 4); // 7 rows: 4 + 3
  EXPECT_EQ((*mixed)[1].region[0].size, 3);

  auto trailing = distinctShards(meta("w", {7, 5}, {S(1), B}, {3, 2}));
  ASSERT_TRUE(trailing);
  ASSERT_EQ(trailing->size(), 3u);
  EXPECT_EQ((*trailing)[2].coord, std::vector<int64_t>({2, 0}));

  auto broadcast = distinctShards(meta("b", {5}, {B, B}, {2, 2}));
  ASSERT_TRUE(broadcast);
  ASSERT_EQ(broadcast->size(), 1u);
  EXPECT_EQ((*broadcast)[0].coord, std::vector<int64_t>({0, 0}));

  // A split finer than the axis leaves empty shards: nothing to store.
  auto thin = distinctShards(meta("t", {1, 3}, {S(0)}, {2}));
  ASSERT_TRUE(thin);
  EXPECT_EQ(thin->size(), 1u);

  auto partial = distinctShards(meta("g", {4}, {SbpDim{SbpKind::PartialSum, 0}}, {2}));
  ASSERT_FALSE(partial);
  EXPECT_THAT(partial.status().message(), AllOf(HasSubstr("'g'"), HasSubstr("partial")));
  EXPECT_FALSE(distinctShards(meta("x", {4}, {S(1)}, {2})));
  EXPECT_FALSE(distinctShards(meta("x", {4}, {S(0)}, {2, 2})));
}

TEST(CheckpointShardsTest, FileNamesAreDeterministicAndKeepNamesApart) {
  const Region r = {Chunk{0, 4}, Chunk{2, 3}};
  EXPECT_EQ(shardFileName("fc1.weight", r), shardFileName("fc1.weight", r));
  EXPECT_NE(shardFileName("a/b", r), shardFileName("a_b", r));
  EXPECT_EQ(shardFileName("a/b", r).find('/'), std::string::npos);
  EXPECT_NE(shardFileName("w", r), shardFileName("w", {Chunk{4, 4}, Chunk{2, 3}}));
}

TEST(CheckpointShardsTest, ParsesTheNdSbpText) {
  for (const NdSbp &sbp : std::vector<NdSbp>{{}, {S(0)}, {B, S(2)}, {S(1), B, S(0)}}) {
    auto back = parseNdSbp(toString(sbp));
    ASSERT_TRUE(back) << back.status().message();
    EXPECT_EQ(*back, sbp);
  }
  auto p = parseNdSbp(" [ P(sum) ,B ] ");
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, NdSbp({SbpDim{SbpKind::PartialSum, 0}, B}));
  for (const char *bad : {"", "S(0)", "[S(x)]", "[S(0)", "[Q]", "[B,]", "[B] x", "[S(-1)]"}) {
    auto r = parseNdSbp(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("bad nd-SBP"));
  }
}

// Saved on each layout, loaded on each other one: every value in its place.
TEST(CheckpointReshardTest, AnySavedLayoutLoadsAsAnyOther) {
  const Shape shape = {7, 5}; // uneven on 2, 3 and 4 parts
  const std::vector<float> global = globalValues(shape);
  struct Layout {
    NdSbp sbp;
    std::vector<int64_t> hierarchy;
  };
  const std::vector<Layout> saved = {{{S(0)}, {2}},       {{S(0), S(1)}, {2, 2}},
                                     {{B, S(0)}, {2, 2}}, {{S(1), B}, {3, 2}},
                                     {{B}, {3}},          {{S(0), S(0)}, {2, 2}}};
  const std::vector<Layout> loaded = {{{B}, {1}},    {{S(1)}, {4}},          {{B, S(0)}, {2, 2}},
                                      {{S(0)}, {3}}, {{S(1), S(0)}, {2, 2}}, {{S(0), S(0)}, {2, 3}},
                                      {{S(0)}, {8}}};
  for (const Layout &from : saved) {
    TempDir dir;
    save<float>(dir.path(), {meta("w", shape, from.sbp, from.hierarchy)}, {global});
    auto reader = CheckpointReader::open(dir.path());
    ASSERT_TRUE(reader) << reader.status().message();
    ASSERT_EQ(reader->tensors().size(), 1u);
    EXPECT_EQ(reader->tensors()[0].sbp, from.sbp);
    EXPECT_EQ(reader->tensors()[0].hierarchy, from.hierarchy);
    for (const Layout &to : loaded)
      expectLoadsAs(*reader, "w", shape, global, to.sbp, to.hierarchy);
    // An arbitrary region straddling every shard boundary.
    const Region odd = {Chunk{2, 4}, Chunk{1, 3}};
    std::vector<float> got(12);
    ASSERT_TRUE(reader->read("w", shape, DType::F32, odd, got.data()));
    EXPECT_EQ(got, pack(global, shape, odd));
  }
}

TEST(CheckpointReshardTest, SeveralTensorsScalarsAndI32) {
  TempDir dir;
  const Shape wShape = {3, 4, 5};
  const std::vector<float> w = globalValues(wShape), step = {42.f};
  const TensorMeta mw = meta("block.0/attn.qkv", wShape, {S(2), S(0)}, {2, 2});
  const TensorMeta ms = meta("adamw.step", {}, {B, B}, {2, 2});
  save<float>(dir.path(), {mw, ms}, {w, step});
  std::vector<int32_t> ids = {5, -1, 7, 1 << 30, 0, 3, 9};
  const TensorMeta mi = meta("ids", {7}, {S(0)}, {3}, DType::I32);
  TempDir other;
  save<int32_t>(other.path(), {mi}, {ids});

  auto reader = CheckpointReader::open(dir.path());
  ASSERT_TRUE(reader) << reader.status().message();
  ASSERT_EQ(reader->tensors().size(), 2u);
  expectLoadsAs(*reader, "block.0/attn.qkv", wShape, w, {S(1)}, {3});
  expectLoadsAs(*reader, "block.0/attn.qkv", wShape, w, {B}, {1});
  float s = 0;
  ASSERT_TRUE(reader->read("adamw.step", {}, DType::F32, {}, &s));
  EXPECT_EQ(s, 42.f);

  auto ri = CheckpointReader::open(other.path());
  ASSERT_TRUE(ri) << ri.status().message();
  std::vector<int32_t> got(7);
  ASSERT_TRUE(ri->read("ids", {7}, DType::I32, {Chunk{0, 7}}, got.data()));
  EXPECT_EQ(got, ids);
  Status wrongType = ri->read("ids", {7}, DType::F32, {Chunk{0, 7}}, got.data());
  ASSERT_FALSE(wrongType);
  EXPECT_THAT(wrongType.message(),
              AllOf(HasSubstr("'ids'"), HasSubstr("has dtype i32, expected f32")));
}

// A region inside one shard reads that shard only.
TEST(CheckpointReshardTest, ReadsOnlyTheShardsItNeeds) {
  TempDir dir;
  const Shape shape = {8, 3};
  const std::vector<float> global = globalValues(shape);
  const TensorMeta m = meta("w", shape, {S(0)}, {2});
  save<float>(dir.path(), {m}, {global});
  auto shards = distinctShards(m);
  ASSERT_TRUE(shards);
  fs::remove(dir.path() + "/" + (*shards)[1].file);
  auto reader = CheckpointReader::open(dir.path());
  ASSERT_TRUE(reader);
  const Region top = {Chunk{1, 3}, Chunk{0, 3}};
  std::vector<float> got(9);
  ASSERT_TRUE(reader->read("w", shape, DType::F32, top, got.data()));
  EXPECT_EQ(got, pack(global, shape, top));
  Status s = reader->read("w", shape, DType::F32, {Chunk{3, 2}, Chunk{0, 3}}, got.data());
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), AllOf(HasSubstr("tensor 'w'"), HasSubstr((*shards)[1].file),
                                 HasSubstr("cannot open")));
}

// A saved 8x3 S(0) on [2] tensor, to break in each test below.
class CheckpointErrorTest : public ::testing::Test {
protected:
  void SetUp() override {
    save<float>(dir.path(), {m}, {global});
    auto shards = distinctShards(m);
    ASSERT_TRUE(shards);
    file0 = dir.path() + "/" + (*shards)[0].file;
    file1 = dir.path() + "/" + (*shards)[1].file;
  }

  // The error of reading the whole tensor.
  std::string readError() {
    auto reader = CheckpointReader::open(dir.path());
    if (!reader)
      return reader.status().message();
    std::vector<float> got(24);
    Status s = reader->read("w", shape, DType::F32, {Chunk{0, 8}, Chunk{0, 3}}, got.data());
    return s ? "" : s.message();
  }

  std::string openError() {
    auto reader = CheckpointReader::open(dir.path());
    return reader ? "" : reader.status().message();
  }

  TempDir dir;
  const Shape shape = {8, 3};
  const std::vector<float> global = globalValues(shape);
  const TensorMeta m = meta("w", shape, {S(0)}, {2});
  std::string file0, file1;
};

TEST_F(CheckpointErrorTest, IntactCheckpointReads) { EXPECT_EQ(readError(), ""); }

TEST_F(CheckpointErrorTest, TruncatedShard) {
  fs::resize_file(file1, fs::file_size(file1) - 3);
  EXPECT_THAT(readError(),
              AllOf(HasSubstr(file1), HasSubstr("tensor 'w'"), HasSubstr("truncated")));
  fs::resize_file(file1, 10); // inside the header
  EXPECT_THAT(readError(), AllOf(HasSubstr(file1), HasSubstr("truncated")));
}

TEST_F(CheckpointErrorTest, TrailingBytes) {
  std::ofstream(file0, std::ios::binary | std::ios::app) << "x";
  EXPECT_THAT(readError(), AllOf(HasSubstr(file0), HasSubstr("too long")));
}

TEST_F(CheckpointErrorTest, FlippedPayloadByte) {
  std::string bytes = readText(file0);
  bytes[bytes.size() - 5] ^= 0x10;
  writeText(file0, bytes);
  EXPECT_THAT(readError(),
              AllOf(HasSubstr(file0), HasSubstr("tensor 'w'"), HasSubstr("CRC mismatch")));
}

TEST_F(CheckpointErrorTest, BadMagic) {
  std::string bytes = readText(file1);
  bytes[3] = 'X';
  writeText(file1, bytes);
  EXPECT_THAT(readError(), AllOf(HasSubstr(file1), HasSubstr("bad magic")));
}

TEST_F(CheckpointErrorTest, MissingShardFile) {
  fs::remove(file0);
  EXPECT_THAT(readError(),
              AllOf(HasSubstr(file0), HasSubstr("tensor 'w'"), HasSubstr("cannot open")));
}

TEST_F(CheckpointErrorTest, FileRegionDiffersFromIndex) {
  // Both shards are 4x3: swapped names keep sizes but not regions.
  const std::string a = readText(file0), b = readText(file1);
  writeText(file0, b);
  writeText(file1, a);
  EXPECT_THAT(readError(), AllOf(HasSubstr(file0), HasSubstr("holds region [4+4, 0+3]"),
                                 HasSubstr("the index says [0+4, 0+3]")));
}

TEST_F(CheckpointErrorTest, ShapeDtypeAndNameMismatches) {
  auto reader = CheckpointReader::open(dir.path());
  ASSERT_TRUE(reader);
  std::vector<float> got(24);
  Status shapeErr = reader->read("w", {3, 8}, DType::F32, {Chunk{0, 3}, Chunk{0, 8}}, got.data());
  ASSERT_FALSE(shapeErr);
  EXPECT_THAT(shapeErr.message(), AllOf(HasSubstr("tensor 'w' has shape [8,3], expected [3,8]"),
                                        HasSubstr(dir.path())));
  Status dtypeErr = reader->read("w", shape, DType::I32, {Chunk{0, 8}, Chunk{0, 3}}, got.data());
  ASSERT_FALSE(dtypeErr);
  EXPECT_THAT(dtypeErr.message(), HasSubstr("has dtype f32, expected i32"));
  Status missing = reader->read("fc2.bias", {3}, DType::F32, {Chunk{0, 3}}, got.data());
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.message(), AllOf(HasSubstr("no tensor 'fc2.bias'"), HasSubstr("holds 1: w")));
  Status outside = reader->read("w", shape, DType::F32, {Chunk{6, 4}, Chunk{0, 3}}, got.data());
  ASSERT_FALSE(outside);
  EXPECT_THAT(outside.message(), HasSubstr("not inside shape [8,3]"));
}

TEST_F(CheckpointErrorTest, MissingDirectoryOrIndex) {
  auto none = CheckpointReader::open(dir.path() + "/nope");
  ASSERT_FALSE(none);
  EXPECT_THAT(none.status().message(),
              AllOf(HasSubstr(dir.path() + "/nope"), HasSubstr("does not exist")));
  fs::remove(dir.path() + "/index.json");
  EXPECT_THAT(openError(), AllOf(HasSubstr(dir.path() + "/index.json"), HasSubstr("cannot open")));
}

TEST_F(CheckpointErrorTest, MalformedIndex) {
  const std::string index = dir.path() + "/index.json";
  const std::string good = readText(index);
  auto replaced = [&](const std::string &from, const std::string &to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos)
      s.replace(at, from.size(), to);
    return s;
  };
  struct Case {
    std::string text;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {good.substr(0, good.size() / 2), "malformed JSON"},
      {"[1, 2]", "not a JSON object"},
      {replaced("\"shards\"", "\"pieces\""), "tensor 'w': missing field \"shards\""},
      {replaced("\"dtype\": \"f32\"", "\"dtype\": \"f16\""), "unknown dtype \"f16\""},
      {replaced("\"dtype\": \"f32\"", "\"dtype\": 4"), "field \"dtype\" is not a string"},
      {replaced("\"name\": \"w\"", "\"nom\": \"w\""), "tensor #0: missing field \"name\""},
      {replaced("\"sbp\": \"[S(0)]\"", "\"sbp\": \"[S(0), B]\""), "differ in length"},
      {replaced("\"sbp\": \"[S(0)]\"", "\"sbp\": \"S0\""), "bad nd-SBP \"S0\""},
      {replaced("\"format\": \"sbpflow-checkpoint\"", "\"format\": \"other\""), "format is"},
      {replaced("\"version\": 1", "\"version\": 7"), "version 7"},
      {replaced("\"tensors\"", "\"tensor\""), "missing field \"tensors\""},
      {replaced(".shard\"", "/../x.shard\""), "is not a plain file name"},
      {replaced("\"batch\": 0", "\"batch\": -1"), "next: negative epoch or batch"},
      {replaced("\"epoch\": 0", "\"epoch\": \"x\""), "field \"epoch\" is not an integer"},
      {replaced("\"batch\": 0", "\"bach\": 0"), "next: missing field \"batch\""},
  };
  for (const Case &c : cases) {
    writeText(index, c.text);
    EXPECT_THAT(openError(), AllOf(HasSubstr(index), HasSubstr(c.expect))) << c.text;
  }
  // Regions that leave a hole, overlap or stick out: the shards must tile the tensor.
  auto withRegion = [&](int64_t begin, int64_t size) {
    nlohmann::json j = nlohmann::json::parse(good);
    j["tensors"][0]["shards"][1]["region"][0] = {begin, size};
    return j.dump();
  };
  writeText(index, withRegion(5, 3));
  EXPECT_THAT(openError(), HasSubstr("tensor 'w': the shards hold 21 of its 24 elements"));
  writeText(index, withRegion(3, 5));
  EXPECT_THAT(openError(), HasSubstr("overlaps"));
  writeText(index, withRegion(4, 9));
  EXPECT_THAT(openError(), HasSubstr("is not inside shape [8,3]"));
}

// The data position travels in the index; an index without one (an older
// checkpoint) resumes at the start.
TEST_F(CheckpointErrorTest, DataPositionRoundTrips) {
  auto fresh = CheckpointReader::open(dir.path());
  ASSERT_TRUE(fresh) << fresh.status().message();
  EXPECT_EQ(fresh->next(), (DataPosition{0, 0}));
  Status written = writeIndex(dir.path(), {m}, DataPosition{2, 17});
  ASSERT_TRUE(written) << written.message();
  auto saved = CheckpointReader::open(dir.path());
  ASSERT_TRUE(saved) << saved.status().message();
  EXPECT_EQ(saved->next(), (DataPosition{2, 17}));
  EXPECT_EQ(readError(), "");
  nlohmann::json j = nlohmann::json::parse(readText(dir.path() + "/index.json"));
  j.erase("next");
  writeText(dir.path() + "/index.json", j.dump());
  auto old = CheckpointReader::open(dir.path());
  ASSERT_TRUE(old) << old.status().message();
  EXPECT_EQ(old->next(), (DataPosition{0, 0}));
  EXPECT_THAT(writeIndex(dir.path(), {m}, DataPosition{0, -1}).message(),
              HasSubstr("negative data position"));
}

TEST(CheckpointWriteTest, RefusesBadRegionsAndPartialTensors) {
  TempDir dir;
  const TensorMeta m = meta("w", {4, 2}, {S(0)}, {2});
  std::vector<float> data(8);
  Status outside = writeShard(dir.path(), m, {Chunk{3, 2}, Chunk{0, 2}}, data.data());
  ASSERT_FALSE(outside);
  EXPECT_THAT(outside.message(), AllOf(HasSubstr("'w'"), HasSubstr("not inside shape [4,2]")));
  Status partial = writeIndex(dir.path(), {meta("g", {4}, {SbpDim{SbpKind::PartialSum, 0}}, {2})});
  ASSERT_FALSE(partial);
  EXPECT_THAT(partial.message(), HasSubstr("partial"));
  Status twice = writeIndex(dir.path(), {m, m});
  ASSERT_FALSE(twice);
  EXPECT_THAT(twice.message(), HasSubstr("listed twice"));
  // A file where the directory should be.
  writeText(dir.path() + "/file", "x");
  Status notDir = writeShard(dir.path() + "/file/sub", m, {Chunk{0, 2}, Chunk{0, 2}}, data.data());
  ASSERT_FALSE(notDir);
  EXPECT_THAT(notDir.message(), HasSubstr(dir.path() + "/file/sub"));
}

} // namespace
} // namespace sbpflow::checkpoint
