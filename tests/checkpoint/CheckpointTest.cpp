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

// The generation the tests save with, unless they say otherwise.
constexpr uint64_t kGeneration = 0x5eed0001;

// Every rank of `m`'s layout writes the shards it owns, then "rank 0" the
// index (straight into `dir`: publishing is tested on its own). `records`
// (optional) receives what the shards' writers reported.
template <typename T>
void save(const std::string &dir, const std::vector<TensorMeta> &metas,
          const std::vector<std::vector<T>> &values, std::vector<ShardRecord> *records = nullptr,
          uint64_t generation = kGeneration) {
  std::vector<ShardRecord> written;
  for (size_t t = 0; t < metas.size(); ++t) {
    const TensorMeta &m = metas[t];
    auto shards = distinctShards(m);
    ASSERT_TRUE(shards) << shards.status().message();
    int count = 0;
    for (int64_t rank = 0; rank < ranksOf(m.hierarchy); ++rank) {
      const std::vector<int64_t> coord = hierarchyCoord(m.hierarchy, rank);
      const Region mine = localRegion(m.shape, m.sbp, m.hierarchy, coord);
      for (const ShardOwner &s : *shards)
        if (s.coord == coord) {
          ASSERT_EQ(s.region.size(), mine.size());
          for (size_t a = 0; a < mine.size(); ++a)
            ASSERT_TRUE(s.region[a].begin == mine[a].begin && s.region[a].size == mine[a].size);
          const std::vector<T> local = pack(values[t], m.shape, mine);
          auto st = writeShard(dir, m, mine, local.data(), generation);
          ASSERT_TRUE(st) << st.status().message();
          written.push_back(*st);
          ++count;
        }
    }
    ASSERT_EQ(count, static_cast<int>(shards->size()));
  }
  Status st = writeIndex(dir, metas, {}, generation, written);
  ASSERT_TRUE(st) << st.message();
  if (records)
    *records = written;
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
    save<float>(dir.path(), {m}, {global}, &records);
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
  std::vector<ShardRecord> records;
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
  Status written = writeIndex(dir.path(), {m}, DataPosition{2, 17}, kGeneration, records);
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
  EXPECT_THAT(writeIndex(dir.path(), {m}, DataPosition{0, -1}, kGeneration, records).message(),
              HasSubstr("negative data position"));
}

// Timed rounds (A-EDiT) keep every rank's next batch; a malformed list is
// an error naming it, a negative one is not written.
TEST_F(CheckpointErrorTest, EveryRanksDataPositionRoundTrips) {
  const DataPosition timed{3, 40, {52, 28}};
  Status written = writeIndex(dir.path(), {m}, timed, kGeneration, records);
  ASSERT_TRUE(written) << written.message();
  auto saved = CheckpointReader::open(dir.path());
  ASSERT_TRUE(saved) << saved.status().message();
  EXPECT_EQ(saved->next(), timed);
  const std::string index = dir.path() + "/index.json";
  nlohmann::json j = nlohmann::json::parse(readText(index));
  EXPECT_EQ(j["next"]["rank_batches"], nlohmann::json::array({52, 28}));
  j["next"]["rank_batches"] = nlohmann::json::array({52, "x"});
  writeText(index, j.dump());
  EXPECT_THAT(readError(), HasSubstr("rank_batches holds \"x\", not a non-negative integer"));
  j["next"]["rank_batches"] = 7;
  writeText(index, j.dump());
  EXPECT_THAT(readError(), HasSubstr("rank_batches is not an array"));
  EXPECT_THAT(
      writeIndex(dir.path(), {m}, DataPosition{0, 1, {3, -2}}, kGeneration, records).message(),
      HasSubstr("negative data position"));
}

TEST(CheckpointWriteTest, RefusesBadRegionsAndPartialTensors) {
  TempDir dir;
  const TensorMeta m = meta("w", {4, 2}, {S(0)}, {2});
  std::vector<float> data(8);
  Status outside =
      writeShard(dir.path(), m, {Chunk{3, 2}, Chunk{0, 2}}, data.data(), kGeneration).status();
  ASSERT_FALSE(outside);
  EXPECT_THAT(outside.message(), AllOf(HasSubstr("'w'"), HasSubstr("not inside shape [4,2]")));
  Status partial = writeIndex(dir.path(), {meta("g", {4}, {SbpDim{SbpKind::PartialSum, 0}}, {2})},
                              {}, kGeneration, {});
  ASSERT_FALSE(partial);
  EXPECT_THAT(partial.message(), HasSubstr("partial"));
  Status twice = writeIndex(dir.path(), {m, m}, {}, kGeneration, {});
  ASSERT_FALSE(twice);
  EXPECT_THAT(twice.message(), HasSubstr("listed twice"));
  // A file where the directory should be.
  writeText(dir.path() + "/file", "x");
  Status notDir =
      writeShard(dir.path() + "/file/sub", m, {Chunk{0, 2}, Chunk{0, 2}}, data.data(), kGeneration)
          .status();
  ASSERT_FALSE(notDir);
  EXPECT_THAT(notDir.message(), HasSubstr(dir.path() + "/file/sub"));
}

// Reading a few elements of a large shard reads the header and the blocks
// that hold them, not the file.
TEST(CheckpointPartialReadTest, ReadsOnlyTheBlocksARegionTouches) {
  TempDir dir;
  const Shape shape = {1024, 1031}; // 4.03 MiB of f32, 65 blocks of 64 KiB
  const std::vector<float> global = globalValues(shape);
  const TensorMeta m = meta("big", shape, {B}, {1});
  std::vector<ShardRecord> records;
  save<float>(dir.path(), {m}, {global}, &records);
  ASSERT_EQ(records.size(), 1u);
  const uint64_t fileBytes = fs::file_size(dir.path() + "/" + records[0].file);
  EXPECT_EQ(fileBytes, records[0].bytes);
  auto reader = CheckpointReader::open(dir.path());
  ASSERT_TRUE(reader) << reader.status().message();
  // Rows 500..502, columns 100..104: three runs inside one or two blocks.
  const Region small = {Chunk{500, 3}, Chunk{100, 5}};
  std::vector<float> got(15);
  Status s = reader->read("big", shape, DType::F32, small, got.data());
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(got, pack(global, shape, small));
  EXPECT_GT(reader->bytesRead(), 0u);
  EXPECT_LE(reader->bytesRead(), 2u * 65536 + 4096) << "of " << fileBytes;
  // A column of the tensor touches every block: the whole payload is read.
  const uint64_t before = reader->bytesRead();
  const Region column = {Chunk{0, 1024}, Chunk{7, 1}};
  std::vector<float> col(1024);
  ASSERT_TRUE(reader->read("big", shape, DType::F32, column, col.data()));
  EXPECT_EQ(col, pack(global, shape, column));
  EXPECT_GE(reader->bytesRead() - before, fileBytes - 4096);
}

// A flipped byte inside a block a read needs is an error naming the file; one
// in a block it does not need is never read (and so not reported).
TEST(CheckpointPartialReadTest, CorruptionIsFoundInTheBlocksRead) {
  TempDir dir;
  const Shape shape = {1024, 1031};
  const std::vector<float> global = globalValues(shape);
  const TensorMeta m = meta("big", shape, {B}, {1});
  std::vector<ShardRecord> records;
  save<float>(dir.path(), {m}, {global}, &records);
  const std::string file = dir.path() + "/" + records[0].file;
  const std::string pristine = readText(file);
  const uint64_t header = pristine.size() - 4ull * 1024 * 1031;
  const Region small = {Chunk{500, 3}, Chunk{100, 5}};
  const uint64_t inside = header + 4ull * (501 * 1031 + 102); // element (501, 102)
  const uint64_t outside = header + 4ull * (10 * 1031 + 3);   // element (10, 3), block 0
  ASSERT_NE(inside / 65536, outside / 65536);
  auto readSmall = [&]() -> Status {
    auto reader = CheckpointReader::open(dir.path());
    if (!reader)
      return reader.status();
    std::vector<float> got(15);
    Status s = reader->read("big", shape, DType::F32, small, got.data());
    if (s && got != pack(global, shape, small))
      return Status::error("wrong values");
    return s;
  };
  std::string bytes = pristine;
  bytes[outside] ^= 0x01;
  writeText(file, bytes);
  Status s = readSmall();
  EXPECT_TRUE(s) << s.message();
  bytes = pristine;
  bytes[inside] ^= 0x01;
  writeText(file, bytes);
  s = readSmall();
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), AllOf(HasSubstr(file), HasSubstr("tensor 'big'"),
                                 HasSubstr("CRC mismatch in payload block")));
}

TEST(CheckpointPartialReadTest, ScalarsAndEmptyRegions) {
  TempDir dir;
  const TensorMeta ms = meta("step", {}, {B}, {2}, DType::I32);
  const TensorMeta mv = meta("v", {5}, {S(0)}, {2}, DType::I32);
  save<int32_t>(dir.path(), {ms, mv}, {{(1 << 24) + 1}, {1, 2, 3, 4, 5}});
  auto reader = CheckpointReader::open(dir.path());
  ASSERT_TRUE(reader) << reader.status().message();
  int32_t v = 0;
  Status s = reader->read("step", {}, DType::I32, {}, &v);
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(v, (1 << 24) + 1);
  const uint64_t before = reader->bytesRead();
  ASSERT_TRUE(reader->read("v", {5}, DType::I32, {Chunk{2, 0}}, nullptr));
  EXPECT_EQ(reader->bytesRead(), before);
  std::vector<int32_t> mid(2);
  ASSERT_TRUE(reader->read("v", {5}, DType::I32, {Chunk{2, 2}}, mid.data()));
  EXPECT_EQ(mid, std::vector<int32_t>({3, 4}));
}

// A save that did not finish, or a shard of another save, is refused,
// naming the file.
class CheckpointTornTest : public CheckpointErrorTest {};

TEST_F(CheckpointTornTest, MissingShardIsNamedBeforeAnyRead) {
  EXPECT_TRUE(CheckpointReader::open(dir.path())->checkComplete());
  fs::remove(file1);
  auto reader = CheckpointReader::open(dir.path());
  ASSERT_TRUE(reader) << reader.status().message();
  Status s = reader->checkComplete();
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(),
              AllOf(HasSubstr(file1), HasSubstr("tensor 'w'"), HasSubstr("is incomplete")));
}

TEST_F(CheckpointTornTest, ShardOfAnotherSaveIsRefused) {
  // The same tensor, layout and sizes saved by another save (other values).
  TempDir other;
  std::vector<float> changed = global;
  for (float &v : changed)
    v += 1.f;
  save<float>(other.path(), {m}, {changed}, nullptr, kGeneration + 1);
  fs::copy_file(other.path() + "/" + fs::path(file1).filename().string(), file1,
                fs::copy_options::overwrite_existing);
  auto reader = CheckpointReader::open(dir.path());
  ASSERT_TRUE(reader);
  EXPECT_TRUE(reader->checkComplete()); // same size: found when read
  std::vector<float> top(12);
  EXPECT_TRUE(reader->read("w", shape, DType::F32, {Chunk{0, 4}, Chunk{0, 3}}, top.data()));
  EXPECT_THAT(readError(), AllOf(HasSubstr(file1), HasSubstr("tensor 'w'"),
                                 HasSubstr("a shard of another save")));
  // The same generation but another file than the index recorded.
  TempDir same;
  save<float>(same.path(), {m}, {changed}, nullptr, kGeneration);
  fs::copy_file(same.path() + "/" + fs::path(file1).filename().string(), file1,
                fs::copy_options::overwrite_existing);
  EXPECT_THAT(readError(),
              AllOf(HasSubstr(file1), HasSubstr("is not the file the index recorded")));
}

TEST_F(CheckpointTornTest, OlderFormatsAreRefusedSaySo) {
  const std::string index = dir.path() + "/index.json";
  nlohmann::json j = nlohmann::json::parse(readText(index));
  EXPECT_EQ(j["generation"], generationText(kGeneration));
  j.erase("shard_format");
  writeText(index, j.dump());
  EXPECT_THAT(openError(), AllOf(HasSubstr(index), HasSubstr("shard format 1")));
  j["shard_format"] = 2;
  j["generation"] = "12x";
  writeText(index, j.dump());
  EXPECT_THAT(openError(), HasSubstr("generation \"12x\" is not 16 hex digits"));
  j["generation"] = generationText(kGeneration);
  writeText(index, j.dump());
  EXPECT_EQ(readError(), "");
  std::string bytes = readText(file0);
  bytes[7] = '1'; // "SBPCKPT1": format 1
  writeText(file0, bytes);
  EXPECT_THAT(readError(),
              AllOf(HasSubstr(file0), HasSubstr("shard format 1"), HasSubstr("older sbpflow")));
}

TEST_F(CheckpointTornTest, CorruptHeaderIsFound) {
  std::string bytes = readText(file0);
  bytes[8] ^= 0x04; // the generation
  writeText(file0, bytes);
  EXPECT_THAT(readError(), AllOf(HasSubstr(file0), HasSubstr("corrupt header")));
}

TEST(CheckpointWriteTest, IndexNeedsEveryShardReportedOnce) {
  TempDir dir;
  const TensorMeta m = meta("w", {4, 2}, {S(0)}, {2});
  const std::vector<float> data(4);
  auto r0 = writeShard(dir.path(), m, {Chunk{0, 2}, Chunk{0, 2}}, data.data(), kGeneration);
  auto r1 = writeShard(dir.path(), m, {Chunk{2, 2}, Chunk{0, 2}}, data.data(), kGeneration);
  ASSERT_TRUE(r0 && r1);
  Status missing = writeIndex(dir.path(), {m}, {}, kGeneration, {*r0});
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.message(), AllOf(HasSubstr(r1->file), HasSubstr("coordinate [1]"),
                                       HasSubstr("not reported written")));
  Status twice = writeIndex(dir.path(), {m}, {}, kGeneration, {*r0, *r1, *r1});
  ASSERT_FALSE(twice);
  EXPECT_THAT(twice.message(), AllOf(HasSubstr(r1->file), HasSubstr("twice")));
  ShardRecord stray = *r1;
  stray.tensor = "v";
  stray.file = "v-00000000.0+1.shard";
  Status extra = writeIndex(dir.path(), {m}, {}, kGeneration, {*r0, *r1, stray});
  ASSERT_FALSE(extra);
  EXPECT_THAT(extra.message(), AllOf(HasSubstr(stray.file), HasSubstr("'v'")));
  EXPECT_TRUE(writeIndex(dir.path(), {m}, {}, kGeneration, {*r1, *r0}));
}

// Publishing: a fresh directory is renamed into place; an existing
// checkpoint is swapped out whole and its files deleted; anything else is
// left alone.
TEST(CheckpointPublishTest, ReplacesACheckpointWholeOrNotAtAll) {
  TempDir root;
  const std::string dir = root.path() + "/ck";
  const TensorMeta m = meta("w", {6, 2}, {S(0)}, {3});
  auto saveAs = [&](float value, uint64_t generation) {
    const std::string staging = stagingDir(dir + "/", generation);
    EXPECT_EQ(staging, dir + ".staging-" + generationText(generation));
    save<float>(staging, {m}, {std::vector<float>(12, value)}, nullptr, generation);
    return staging;
  };
  auto values = [&]() -> std::vector<float> {
    auto reader = CheckpointReader::open(dir);
    if (!reader || !reader->checkComplete())
      return {};
    std::vector<float> got(12);
    if (!reader->read("w", {6, 2}, DType::F32, {Chunk{0, 6}, Chunk{0, 2}}, got.data()))
      return {};
    return got;
  };
  Status s = publish(saveAs(1.f, 11), dir, 11);
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(values(), std::vector<float>(12, 1.f));
  EXPECT_FALSE(fs::exists(stagingDir(dir, 11)));
  s = publish(saveAs(2.f, 12), dir, 12);
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(values(), std::vector<float>(12, 2.f));
  EXPECT_EQ(CheckpointReader::open(dir)->generation(), 12u);
  for (const auto &entry : fs::directory_iterator(root.path()))
    EXPECT_EQ(entry.path().string(), dir) << "left behind";
  // A file of the user's inside the old checkpoint survives, in the old
  // directory renamed aside.
  writeText(dir + "/notes.txt", "mine");
  s = publish(saveAs(3.f, 13), dir, 13);
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(values(), std::vector<float>(12, 3.f));
  EXPECT_EQ(readText(dir + ".previous-" + generationText(13) + "/notes.txt"), "mine");
  // Not a checkpoint: refused, untouched.
  const std::string other = root.path() + "/data";
  fs::create_directories(other);
  writeText(other + "/a.txt", "x");
  Status refused = publish(saveAs(4.f, 14), other, 14);
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused.message(), AllOf(HasSubstr(other), HasSubstr("not an sbpflow checkpoint")));
  EXPECT_EQ(readText(other + "/a.txt"), "x");
  // Nothing staged: nothing published.
  Status empty = publish(root.path() + "/nothing", dir, 15);
  ASSERT_FALSE(empty);
  EXPECT_THAT(empty.message(), HasSubstr("holds no index.json"));
  EXPECT_EQ(values(), std::vector<float>(12, 3.f));
}

} // namespace
} // namespace sbpflow::checkpoint
