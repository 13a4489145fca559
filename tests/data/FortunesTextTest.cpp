// openFortunesText on small synthetic directories (exact corpus, vocabulary,
// split and windows known by construction), on the real Debian files, and on
// broken inputs.
#include "runtime/data/FortunesText.h"
#include "runtime/Shape.h"
#include "tests/TempDir.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

namespace sbpflow {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

using sbpflow::test::TempDir;

void writeFile(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// Files that must be skipped (.dat, .u8, symlinks, a subdirectory) beside
// three text files whose byte order ("B" < "a" < "b") differs from a
// case-insensitive order.
void writeMixedDir(const std::string &dir) {
  writeFile(dir + "/b", "hello\n");
  writeFile(dir + "/a", "xyz");
  writeFile(dir + "/B", std::string("\x00\xff", 2));
  writeFile(dir + "/a.dat", "DATA");
  fs::create_symlink(dir + "/a", dir + "/a.u8");
  fs::create_symlink(dir + "/b", dir + "/link");
  fs::create_directory(dir + "/sub");
  writeFile(dir + "/sub/c", "QQQ");
}

std::string decodeOk(const FortunesText &t, const int32_t *ids, int64_t n) {
  auto text = t.decode(std::vector<int32_t>(ids, ids + n));
  EXPECT_TRUE(text) << text.status().message();
  return text ? *text : "";
}

// A directory holding one file of `n` pseudo-random printable bytes.
std::string randomText(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(static_cast<size_t>(n), ' ');
  for (char &c : s)
    c = static_cast<char>(' ' + rng() % 95);
  return s;
}

TEST(FortunesTextTest, CorpusVocabularyAndSplitOfMixedDirectory) {
  TempDir dir;
  writeMixedDir(dir.path());
  // Corpus "\0\xff" + "xyz" + "hello\n": 11 bytes, train floor(11 * 0.9) = 9.
  auto train = openFortunesText(dir.path(), true, 1, 2);
  ASSERT_TRUE(train) << train.status().message();
  auto val = openFortunesText(dir.path(), false, 1, 1);
  ASSERT_TRUE(val) << val.status().message();

  const std::vector<uint8_t> expectVocab = {0x00, '\n', 'e', 'h', 'l', 'o', 'x', 'y', 'z', 0xff};
  EXPECT_EQ((*train)->vocab(), expectVocab);
  EXPECT_EQ((*val)->vocab(), expectVocab);

  const std::vector<int32_t> &tr = (*train)->splitTokens();
  EXPECT_EQ(decodeOk(**train, tr.data(), static_cast<int64_t>(tr.size())),
            std::string("\x00\xffxyzhell", 9));
  const std::vector<int32_t> &va = (*val)->splitTokens();
  EXPECT_EQ(decodeOk(**val, va.data(), static_cast<int64_t>(va.size())), "o\n");
  EXPECT_EQ((*train)->size(), 9 / 2);
  EXPECT_EQ((*val)->size(), 2);
  EXPECT_EQ(tr, std::vector<int32_t>({0, 9, 6, 7, 8, 3, 2, 4, 4}));

  const auto &fields = (*train)->fields();
  ASSERT_EQ(fields.size(), 2u);
  EXPECT_EQ(fields[0].name, "tokens");
  EXPECT_EQ(fields[0].type, FieldType::I32);
  EXPECT_EQ(fields[0].sampleShape, std::vector<int64_t>({2}));
  EXPECT_EQ(fields[1].name, "targets");
  EXPECT_EQ(fields[1].sampleShape, std::vector<int64_t>({2}));
}

TEST(FortunesTextTest, EncodeDecodeRoundTripAndErrors) {
  TempDir dir;
  writeMixedDir(dir.path());
  auto t = openFortunesText(dir.path(), true, 1, 2);
  ASSERT_TRUE(t) << t.status().message();
  auto ids = (*t)->encode("hello");
  ASSERT_TRUE(ids) << ids.status().message();
  EXPECT_EQ(*ids, std::vector<int32_t>({3, 2, 4, 4, 5}));
  auto back = (*t)->decode(*ids);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "hello");

  auto fromBothFiles = (*t)->encode(std::string("xe\xff", 3));
  ASSERT_TRUE(fromBothFiles);
  EXPECT_EQ(*fromBothFiles, std::vector<int32_t>({6, 2, 9}));
  auto missing = (*t)->encode("hQ");
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing.status().message(), HasSubstr("byte 81 at position 1"));
  auto badId = (*t)->decode({0, 10});
  ASSERT_FALSE(badId);
  EXPECT_THAT(badId.status().message(), HasSubstr("id 10 at position 1"));
  EXPECT_FALSE((*t)->decode({-1}));
}

TEST(FortunesTextTest, WindowsFollowTheDocumentedFormula) {
  // The first output of the reference SplitMix64 generator seeded with 0.
  EXPECT_EQ(fortunesSplitMix64(0), 0xe220a8397b1dcdafULL);

  TempDir dir;
  const std::string text = randomText(1000, 3);
  writeFile(dir.path() + "/only", text);
  const int64_t T = 7, G = 5;
  const uint64_t seed = 11;
  auto t = openFortunesText(dir.path(), true, seed, T);
  ASSERT_TRUE(t) << t.status().message();
  const int64_t n = 900;
  ASSERT_EQ(static_cast<int64_t>((*t)->splitTokens().size()), n);
  EXPECT_EQ((*t)->size(), n / T);

  for (int64_t epoch : {0, 3})
    for (int64_t b : {0, 1, 17}) {
      std::vector<int32_t> tokens(G * T), targets(G * T);
      ASSERT_TRUE((*t)->fill("tokens", epoch, b, G, 0, G, tokens.data()));
      ASSERT_TRUE((*t)->fill("targets", epoch, b, G, 0, G, targets.data()));
      for (int64_t r = 0; r < G; ++r) {
        const uint64_t key = seed ^ (uint64_t(epoch) << 40) ^ (uint64_t(b) << 20) ^ uint64_t(r);
        const int64_t s = static_cast<int64_t>(fortunesSplitMix64(key) % uint64_t(n - T));
        EXPECT_EQ((*t)->windowStart(epoch, b, r), s);
        EXPECT_EQ(decodeOk(**t, tokens.data() + r * T, T), text.substr(s, T));
        EXPECT_EQ(decodeOk(**t, targets.data() + r * T, T), text.substr(s + 1, T));
        // targets are the tokens shifted by one
        for (int64_t i = 0; i + 1 < T; ++i)
          EXPECT_EQ(targets[r * T + i], tokens[r * T + i + 1]);
      }
    }
}

TEST(FortunesTextTest, WindowsDoNotDependOnHowRanksSplitTheBatch) {
  TempDir dir;
  writeFile(dir.path() + "/only", randomText(5000, 4));
  const int64_t T = 13, G = 11;
  auto t = openFortunesText(dir.path(), true, 5, T);
  ASSERT_TRUE(t) << t.status().message();
  for (const char *field : {"tokens", "targets"}) {
    std::vector<int32_t> whole(G * T);
    ASSERT_TRUE((*t)->fill(field, 2, 9, G, 0, G, whole.data()));
    for (int64_t ranks : {2, 3, 4, 11}) {
      std::vector<int32_t> pieced(G * T, -7);
      for (int64_t k = 0; k < ranks; ++k) {
        const Chunk c = balancedChunk(G, ranks, k);
        ASSERT_TRUE((*t)->fill(field, 2, 9, G, c.begin, c.size, pieced.data() + c.begin * T));
      }
      EXPECT_EQ(pieced, whole) << field << " on " << ranks << " ranks";
    }
  }
  // Another epoch, batch or seed draws other windows.
  std::vector<int32_t> a(G * T), b(G * T), c(G * T), d(G * T);
  ASSERT_TRUE((*t)->fill("tokens", 2, 9, G, 0, G, a.data()));
  ASSERT_TRUE((*t)->fill("tokens", 3, 9, G, 0, G, b.data()));
  ASSERT_TRUE((*t)->fill("tokens", 2, 10, G, 0, G, c.data()));
  auto other = openFortunesText(dir.path(), true, 6, T);
  ASSERT_TRUE(other);
  ASSERT_TRUE((*other)->fill("tokens", 2, 9, G, 0, G, d.data()));
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);
}

TEST(FortunesTextTest, RowsPastTheEndArePadded) {
  TempDir dir;
  writeFile(dir.path() + "/only", randomText(200, 5));
  const int64_t T = 8, G = 8; // train: 180 bytes, size 22: batch 2 rows 6, 7 pad
  auto t = openFortunesText(dir.path(), true, 5, T);
  ASSERT_TRUE(t) << t.status().message();
  ASSERT_EQ((*t)->size(), 22);
  EXPECT_EQ((*t)->batchesPerEpoch(G, false), 3);
  std::vector<int32_t> tokens(G * T), targets(G * T);
  ASSERT_TRUE((*t)->fill("tokens", 0, 2, G, 0, G, tokens.data()));
  ASSERT_TRUE((*t)->fill("targets", 0, 2, G, 0, G, targets.data()));
  for (int64_t r = 0; r < G; ++r)
    for (int64_t i = 0; i < T; ++i) {
      if (r < 6) {
        EXPECT_EQ(tokens[r * T + i], (*t)->splitTokens()[(*t)->windowStart(0, 2, r) + i]);
      } else {
        EXPECT_EQ(tokens[r * T + i], 0) << r;
        EXPECT_EQ(targets[r * T + i], -1) << r;
      }
    }
}

TEST(FortunesTextTest, BadRequestsAreErrors) {
  TempDir dir;
  writeFile(dir.path() + "/only", randomText(100, 6));
  auto t = openFortunesText(dir.path(), true, 5, 4);
  ASSERT_TRUE(t) << t.status().message();
  std::vector<int32_t> buf(64);
  Status s = (*t)->fill("image", 0, 0, 4, 0, 4, buf.data());
  ASSERT_FALSE(s);
  EXPECT_THAT(s.message(), HasSubstr("no field 'image'"));
  EXPECT_FALSE((*t)->fill("tokens", 0, 0, 4, 2, 3, buf.data()));
  EXPECT_FALSE((*t)->fill("tokens", -1, 0, 4, 0, 4, buf.data()));
  EXPECT_FALSE((*t)->fill("tokens", 0, 0, 4, 0, 4, nullptr));
}

TEST(FortunesTextErrorTest, MissingDirectoryNamesThePath) {
  auto t = openFortunesText("/nonexistent/fortunes-dir", true, 1, 8);
  ASSERT_FALSE(t);
  EXPECT_THAT(t.status().message(), HasSubstr("'/nonexistent/fortunes-dir' does not exist"));
}

TEST(FortunesTextErrorTest, EmptyDirectoryNamesThePath) {
  TempDir dir;
  auto t = openFortunesText(dir.path(), true, 1, 8);
  ASSERT_FALSE(t);
  EXPECT_THAT(t.status().message(), HasSubstr("no text in '" + dir.path() + "'"));
  // Only files that are skipped: still no text.
  writeFile(dir.path() + "/x.dat", "abcdefghijklmnop");
  fs::create_symlink(dir.path() + "/x.dat", dir.path() + "/x");
  auto u = openFortunesText(dir.path(), false, 1, 8);
  ASSERT_FALSE(u);
  EXPECT_THAT(u.status().message(), HasSubstr("no text in '" + dir.path() + "'"));
}

TEST(FortunesTextErrorTest, FileInsteadOfDirectory) {
  TempDir dir;
  writeFile(dir.path() + "/f", "abc");
  auto t = openFortunesText(dir.path() + "/f", true, 1, 8);
  ASSERT_FALSE(t);
  EXPECT_THAT(t.status().message(), HasSubstr("'" + dir.path() + "/f' is not a directory"));
}

TEST(FortunesTextErrorTest, SplitShorterThanTheContext) {
  TempDir dir;
  writeFile(dir.path() + "/only", randomText(100, 7)); // validation: 10 bytes
  EXPECT_TRUE(openFortunesText(dir.path(), false, 1, 9));
  auto t = openFortunesText(dir.path(), false, 1, 10);
  ASSERT_FALSE(t);
  EXPECT_THAT(t.status().message(), HasSubstr("validation split of '" + dir.path() + "' has 10"));
  auto z = openFortunesText(dir.path(), true, 1, 0);
  ASSERT_FALSE(z);
  EXPECT_THAT(z.status().message(), HasSubstr("context must be positive"));
}

// The real corpus: sizes from an independent listing (stat of each regular
// file), a window that decodes to the concatenated bytes.
TEST(FortunesTextRealTest, SplitSizesAndVocabulary) {
  const std::string dir = kDefaultFortunesDir;
  if (!fs::exists(dir + "/fortunes"))
    GTEST_SKIP() << dir << " is absent (Debian package fortunes)";
  int64_t total = 0;
  std::set<std::string> names;
  for (const auto &e : fs::directory_iterator(dir)) {
    struct stat st {};
    const std::string name = e.path().filename().string();
    const std::string ext = e.path().extension().string();
    if (lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ext == ".dat" || ext == ".u8")
      continue;
    total += st.st_size;
    names.insert(name);
  }
  ASSERT_GT(total, 1000000); // the fortunes package holds a few MB of text
  std::string corpus;
  for (const std::string &name : names) { // std::set: sorted by bytes
    std::ifstream in(dir + "/" + name, std::ios::binary);
    corpus.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  ASSERT_EQ(static_cast<int64_t>(corpus.size()), total);

  const int64_t T = 64;
  auto train = openFortunesText(dir, true, 5, T);
  ASSERT_TRUE(train) << train.status().message();
  auto val = openFortunesText(dir, false, 5, T);
  ASSERT_TRUE(val) << val.status().message();
  const int64_t nTrain = total * 9 / 10;
  EXPECT_EQ(static_cast<int64_t>((*train)->splitTokens().size()), nTrain);
  EXPECT_EQ(static_cast<int64_t>((*val)->splitTokens().size()), total - nTrain);
  EXPECT_EQ((*train)->size(), nTrain / T);
  EXPECT_EQ((*val)->size(), (total - nTrain) / T);

  std::set<uint8_t> distinct(corpus.begin(), corpus.end());
  EXPECT_EQ((*train)->vocab(), std::vector<uint8_t>(distinct.begin(), distinct.end()));
  EXPECT_TRUE(distinct.count('\n') && distinct.count('e'));

  std::vector<int32_t> tokens(3 * T);
  ASSERT_TRUE((*val)->fill("tokens", 1, 4, 3, 0, 3, tokens.data()));
  for (int64_t r = 0; r < 3; ++r)
    EXPECT_EQ(decodeOk(**val, tokens.data() + r * T, T),
              corpus.substr(nTrain + (*val)->windowStart(1, 4, r), T));
}

} // namespace
} // namespace sbpflow
