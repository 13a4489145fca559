// openFashionMnist on the real Debian files (checked against an independent
// `gzip -dc` reader) and on small synthetic and broken IDX files.
#include "runtime/Shape.h"
#include "runtime/data/DataSource.h"
#include "tests/TempDir.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace sbpflow {
namespace {

namespace fs = std::filesystem;

const std::string kDir = kDefaultFashionMnistDir;

bool haveRealData() {
  return fs::exists(kDir + "/train-images-idx3-ubyte.gz") &&
         fs::exists(kDir + "/train-labels-idx1-ubyte.gz") &&
         fs::exists(kDir + "/t10k-images-idx3-ubyte.gz") &&
         fs::exists(kDir + "/t10k-labels-idx1-ubyte.gz");
}

#define SKIP_WITHOUT_REAL_DATA()                                                                   \
  if (!haveRealData())                                                                             \
  GTEST_SKIP() << kDir << " is absent (Debian package dataset-fashion-mnist)"

// The decompressed bytes of a .gz file, read by the gzip tool rather than by
// zlib, so the test does not share the reader under test.
std::string gunzipWithTool(const std::string &path) {
  std::string out;
  FILE *p = popen(("gzip -dc '" + path + "'").c_str(), "r");
  if (!p)
    return out;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  pclose(p);
  return out;
}

using sbpflow::test::TempDir;

void putBigEndian(std::string &s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    s.push_back(static_cast<char>((v >> shift) & 0xff));
}

void writeGz(const std::string &path, const std::string &bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(f);
}

// Sample i: every pixel is (i * 7 + p) % 256, label i % 10.
std::string imageFile(uint32_t count, uint32_t magic = 0x803, uint32_t side = 28) {
  std::string s;
  putBigEndian(s, magic);
  putBigEndian(s, count);
  putBigEndian(s, side);
  putBigEndian(s, side);
  for (uint32_t i = 0; i < count; ++i)
    for (uint32_t p = 0; p < side * side; ++p)
      s.push_back(static_cast<char>((i * 7 + p) % 256));
  return s;
}

std::string labelFile(uint32_t count, uint32_t magic = 0x801) {
  std::string s;
  putBigEndian(s, magic);
  putBigEndian(s, count);
  for (uint32_t i = 0; i < count; ++i)
    s.push_back(static_cast<char>(i % 10));
  return s;
}

void writeSynthetic(const std::string &dir, uint32_t images, uint32_t labels) {
  writeGz(dir + "/train-images-idx3-ubyte.gz", imageFile(images));
  writeGz(dir + "/train-labels-idx1-ubyte.gz", labelFile(labels));
}

std::vector<int32_t> labelsOf(DataSource &src, int64_t epoch, int64_t batch, int64_t global,
                              int64_t begin, int64_t count) {
  std::vector<int32_t> out(count, -7);
  Status s = src.fill("label", epoch, batch, global, begin, count, out.data());
  EXPECT_TRUE(s.isOk()) << s.message();
  return out;
}

std::vector<float> imagesOf(DataSource &src, int64_t epoch, int64_t batch, int64_t global,
                            int64_t begin, int64_t count) {
  std::vector<float> out(count * 784, -7.f);
  Status s = src.fill("image", epoch, batch, global, begin, count, out.data());
  EXPECT_TRUE(s.isOk()) << s.message();
  return out;
}

TEST(FashionMnistRealTest, SizesFieldsAndClassBalance) {
  SKIP_WITHOUT_REAL_DATA();
  auto train = openFashionMnist(kDir, true, false, 0);
  ASSERT_TRUE(train.isOk()) << train.status().message();
  auto test = openFashionMnist(kDir, false, false, 0);
  ASSERT_TRUE(test.isOk()) << test.status().message();
  EXPECT_EQ((*train)->size(), 60000);
  EXPECT_EQ((*test)->size(), 10000);
  const auto &fields = (*train)->fields();
  ASSERT_EQ(fields.size(), 2u);
  EXPECT_EQ(fields[0].name, "image");
  EXPECT_EQ(fields[0].sampleShape, std::vector<int64_t>{784});
  EXPECT_EQ(fields[1].name, "label");
  EXPECT_TRUE(fields[1].sampleShape.empty());

  // Fashion-MNIST is balanced by construction: 6000 / 1000 samples per class.
  for (auto [src, perClass] : {std::pair{train->operator->(), 6000}, {test->operator->(), 1000}}) {
    auto labels = labelsOf(*src, 0, 0, src->size(), 0, src->size());
    std::map<int32_t, int> histogram;
    for (int32_t l : labels)
      histogram[l]++;
    ASSERT_EQ(histogram.size(), 10u);
    for (auto [label, n] : histogram) {
      EXPECT_GE(label, 0);
      EXPECT_LT(label, 10);
      EXPECT_EQ(n, perClass) << "class " << label;
    }
  }
}

TEST(FashionMnistRealTest, UnshuffledOrderMatchesIndependentReader) {
  SKIP_WITHOUT_REAL_DATA();
  const std::string labelBytes = gunzipWithTool(kDir + "/t10k-labels-idx1-ubyte.gz");
  const std::string imageBytes = gunzipWithTool(kDir + "/t10k-images-idx3-ubyte.gz");
  ASSERT_EQ(labelBytes.size(), 8u + 10000u) << "gzip -dc failed?";
  ASSERT_EQ(imageBytes.size(), 16u + 10000u * 784u) << "gzip -dc failed?";
  auto src = openFashionMnist(kDir, false, false, 0);
  ASSERT_TRUE(src.isOk()) << src.status().message();
  auto labels = labelsOf(**src, 0, 0, 10000, 0, 10000);
  for (int i = 0; i < 10000; ++i)
    ASSERT_EQ(labels[i], static_cast<unsigned char>(labelBytes[8 + i])) << "sample " << i;
  // Batch 3 of 256, rows [100, 117): samples 868..884.
  auto images = imagesOf(**src, 0, 3, 256, 100, 17);
  for (int r = 0; r < 17; ++r)
    for (int p = 0; p < 784; ++p) {
      const float want = static_cast<unsigned char>(imageBytes[16 + (868 + r) * 784 + p]) / 255.f;
      ASSERT_FLOAT_EQ(images[r * 784 + p], want) << "row " << r << " pixel " << p;
    }
}

TEST(FashionMnistRealTest, RankShardsOfAGlobalBatchFormTheSingleRankBatch) {
  SKIP_WITHOUT_REAL_DATA();
  auto src = openFashionMnist(kDir, true, true, 42);
  ASSERT_TRUE(src.isOk()) << src.status().message();
  const int64_t global = 256, ranks = 3, batch = 17, epoch = 2;
  auto wholeLabels = labelsOf(**src, epoch, batch, global, 0, global);
  auto wholeImages = imagesOf(**src, epoch, batch, global, 0, global);
  std::vector<int32_t> joinedLabels;
  std::vector<float> joinedImages;
  for (int64_t r = 0; r < ranks; ++r) {
    Chunk c = balancedChunk(global, ranks, r);
    EXPECT_EQ(c.size, r == 0 ? 86 : 85);
    auto l = labelsOf(**src, epoch, batch, global, c.begin, c.size);
    auto im = imagesOf(**src, epoch, batch, global, c.begin, c.size);
    joinedLabels.insert(joinedLabels.end(), l.begin(), l.end());
    joinedImages.insert(joinedImages.end(), im.begin(), im.end());
  }
  EXPECT_EQ(joinedLabels, wholeLabels);
  EXPECT_EQ(joinedImages, wholeImages);
  for (float v : wholeImages)
    ASSERT_TRUE(v >= 0.f && v <= 1.f) << v;
}

TEST(FashionMnistSyntheticTest, PixelsAreScaledBytes) {
  TempDir dir;
  writeSynthetic(dir.path(), 5, 5);
  auto src = openFashionMnist(dir.path(), true, false, 0);
  ASSERT_TRUE(src.isOk()) << src.status().message();
  auto images = imagesOf(**src, 0, 0, 5, 0, 5);
  auto labels = labelsOf(**src, 0, 0, 5, 0, 5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(labels[i], i % 10);
    for (int p = 0; p < 784; ++p)
      ASSERT_FLOAT_EQ(images[i * 784 + p], ((i * 7 + p) % 256) / 255.f);
  }
}

TEST(FashionMnistSyntheticTest, SameSeedSameOrderOtherEpochOrSeedOtherOrder) {
  TempDir dir;
  writeSynthetic(dir.path(), 1000, 1000);
  auto a = openFashionMnist(dir.path(), true, true, 7);
  auto b = openFashionMnist(dir.path(), true, true, 7);
  auto c = openFashionMnist(dir.path(), true, true, 8);
  auto plain = openFashionMnist(dir.path(), true, false, 7);
  ASSERT_TRUE(a.isOk() && b.isOk() && c.isOk() && plain.isOk());
  // (pixel 0, label) = (7i mod 256, i mod 10) fixes i mod 1280, so it
  // identifies each of the 1000 samples.
  auto order = [](DataSource &s, int64_t epoch) {
    auto im = imagesOf(s, epoch, 0, 1000, 0, 1000);
    auto l = labelsOf(s, epoch, 0, 1000, 0, 1000);
    std::vector<std::pair<float, int32_t>> out;
    for (int i = 0; i < 1000; ++i)
      out.emplace_back(im[i * 784], l[i]);
    return out;
  };
  auto a0 = order(**a, 0), a1 = order(**a, 1);
  EXPECT_EQ(a0, order(**b, 0));
  EXPECT_EQ(a1, order(**b, 1));
  EXPECT_NE(a0, a1) << "epochs 0 and 1 drew the same order";
  EXPECT_NE(a0, order(**c, 0)) << "seeds 7 and 8 drew the same order";
  EXPECT_NE(a0, order(**plain, 0)) << "shuffled order equals file order";
  // Coming back to an epoch (cache replaced in between) gives the same order.
  EXPECT_EQ(a0, order(**a, 0));
  // Each epoch is a permutation: the multiset of samples is unchanged.
  auto sorted = [](auto v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(sorted(a0), sorted(order(**plain, 0)));
  EXPECT_EQ(sorted(a1), sorted(order(**plain, 0)));
}

TEST(FashionMnistSyntheticTest, PaddingBeyondTheEnd) {
  TempDir dir;
  writeSynthetic(dir.path(), 10, 10);
  auto src = openFashionMnist(dir.path(), true, true, 1);
  ASSERT_TRUE(src.isOk()) << src.status().message();
  EXPECT_EQ((*src)->batchesPerEpoch(4, false), 3);
  EXPECT_EQ((*src)->batchesPerEpoch(4, true), 2);
  // Batch 2 of 4 covers samples 8, 9 and two padding rows.
  auto labels = labelsOf(**src, 0, 2, 4, 0, 4);
  EXPECT_GE(labels[0], 0);
  EXPECT_GE(labels[1], 0);
  EXPECT_EQ(labels[2], -1);
  EXPECT_EQ(labels[3], -1);
  auto images = imagesOf(**src, 0, 2, 4, 1, 3);
  for (int p = 0; p < 2 * 784; ++p)
    ASSERT_EQ(images[784 + p], 0.f) << "padding pixel " << p;
  // A batch wholly past the end is all padding.
  auto past = labelsOf(**src, 0, 9, 4, 0, 4);
  EXPECT_EQ(past, std::vector<int32_t>(4, -1));
}

TEST(FashionMnistSyntheticTest, BadRequestsAreErrors) {
  TempDir dir;
  writeSynthetic(dir.path(), 10, 10);
  auto src = openFashionMnist(dir.path(), true, false, 1);
  ASSERT_TRUE(src.isOk()) << src.status().message();
  std::vector<float> buf(784 * 8);
  Status s = (*src)->fill("pixels", 0, 0, 4, 0, 4, buf.data());
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("no field 'pixels'"), std::string::npos) << s.message();
  s = (*src)->fill("image", 0, 0, 4, 2, 3, buf.data()); // rows past the global batch
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("bad request"), std::string::npos) << s.message();
  s = (*src)->fill("image", 0, 0, 0, 0, 0, buf.data());
  EXPECT_FALSE(s.isOk());
  s = (*src)->fill("label", -1, 0, 4, 0, 4, buf.data());
  EXPECT_FALSE(s.isOk());
  s = (*src)->fill("label", 0, 0, 4, 0, 4, nullptr);
  EXPECT_FALSE(s.isOk());
}

// Expects opening `dir` to fail with a message containing every one of `parts`.
void expectOpenError(const std::string &dir, std::vector<std::string> parts) {
  auto src = openFashionMnist(dir, true, false, 0);
  ASSERT_FALSE(src.isOk()) << "opening " << dir << " should fail";
  for (const auto &p : parts)
    EXPECT_NE(src.status().message().find(p), std::string::npos)
        << "'" << src.status().message() << "' lacks '" << p << "'";
}

TEST(FashionMnistErrorTest, MissingDirectory) {
  expectOpenError("/nonexistent/fashion", {"/nonexistent/fashion/train-images-idx3-ubyte.gz",
                                           "cannot open", "No such file"});
}

TEST(FashionMnistErrorTest, TruncatedRealFile) {
  SKIP_WITHOUT_REAL_DATA();
  TempDir dir;
  const std::string name = "/train-images-idx3-ubyte.gz";
  std::ifstream in(kDir + name, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 1000u);
  std::ofstream(dir.path() + name, std::ios::binary).write(bytes.data(), bytes.size() / 2);
  fs::copy_file(kDir + "/train-labels-idx1-ubyte.gz", dir.path() + "/train-labels-idx1-ubyte.gz");
  expectOpenError(dir.path(), {dir.path() + name, "truncated", "60000 images"});
}

TEST(FashionMnistErrorTest, TruncatedGzipTrailer) {
  // All the data decompresses but the CRC/length trailer is cut short; zlib's
  // gzread alone does not notice some of these cuts.
  for (int cut : {1, 3, 4, 8}) {
    TempDir dir;
    writeSynthetic(dir.path(), 300, 300);
    const std::string path = dir.path() + "/train-images-idx3-ubyte.gz";
    fs::resize_file(path, fs::file_size(path) - cut);
    SCOPED_TRACE("cut " + std::to_string(cut) + " bytes");
    expectOpenError(dir.path(), {path, "truncated"});
  }
}

TEST(FashionMnistErrorTest, RealFileMissingItsLastByte) {
  SKIP_WITHOUT_REAL_DATA();
  TempDir dir;
  const std::string name = "/t10k-labels-idx1-ubyte.gz";
  fs::copy_file(kDir + name, dir.path() + name);
  fs::copy_file(kDir + "/t10k-images-idx3-ubyte.gz", dir.path() + "/t10k-images-idx3-ubyte.gz");
  fs::resize_file(dir.path() + name, fs::file_size(dir.path() + name) - 1);
  auto src = openFashionMnist(dir.path(), false, false, 0);
  ASSERT_FALSE(src.isOk());
  EXPECT_NE(src.status().message().find(dir.path() + name), std::string::npos)
      << src.status().message();
  EXPECT_NE(src.status().message().find("truncated"), std::string::npos) << src.status().message();
}

TEST(FashionMnistErrorTest, NotGzipCompressed) {
  TempDir dir;
  std::ofstream(dir.path() + "/train-images-idx3-ubyte.gz") << "garbage\n";
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labelFile(3));
  expectOpenError(dir.path(), {"train-images-idx3-ubyte.gz", "not gzip-compressed"});
}

TEST(FashionMnistErrorTest, FewerSamplesThanTheHeaderSays) {
  TempDir dir;
  std::string images = imageFile(4);
  images.replace(4, 4, std::string("\0\0\0\x05", 4)); // header claims 5
  writeGz(dir.path() + "/train-images-idx3-ubyte.gz", images);
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labelFile(5));
  expectOpenError(dir.path(), {"train-images-idx3-ubyte.gz", "truncated", "5 images"});
}

TEST(FashionMnistErrorTest, HugeCountInHeaderIsTruncationNotACrash) {
  TempDir dir;
  std::string labels = labelFile(4);
  labels.replace(4, 4, std::string("\xff\xff\xff\xff", 4));
  writeGz(dir.path() + "/train-images-idx3-ubyte.gz", imageFile(4));
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labels);
  expectOpenError(dir.path(), {"train-labels-idx1-ubyte.gz", "truncated"});
}

TEST(FashionMnistErrorTest, WrongMagicNumbers) {
  TempDir dir;
  writeGz(dir.path() + "/train-images-idx3-ubyte.gz", imageFile(3, 0x801));
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labelFile(3));
  expectOpenError(dir.path(), {"train-images-idx3-ubyte.gz", "magic", "0x00000801"});

  writeGz(dir.path() + "/train-images-idx3-ubyte.gz", imageFile(3));
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labelFile(3, 0x803));
  expectOpenError(dir.path(), {"train-labels-idx1-ubyte.gz", "magic", "0x00000803"});
}

TEST(FashionMnistErrorTest, WrongImageSize) {
  TempDir dir;
  writeGz(dir.path() + "/train-images-idx3-ubyte.gz", imageFile(3, 0x803, 27));
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labelFile(3));
  expectOpenError(dir.path(), {"27x27", "28x28"});
}

TEST(FashionMnistErrorTest, CountsDisagree) {
  TempDir dir;
  writeSynthetic(dir.path(), 4, 5);
  expectOpenError(dir.path(), {"4 images", "5 labels"});
}

TEST(FashionMnistErrorTest, TrailingData) {
  TempDir dir;
  writeGz(dir.path() + "/train-images-idx3-ubyte.gz", imageFile(3));
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labelFile(3) + "x");
  expectOpenError(dir.path(), {"train-labels-idx1-ubyte.gz", "trailing data"});
}

TEST(FashionMnistErrorTest, LabelOutOfRange) {
  TempDir dir;
  std::string labels = labelFile(3);
  labels[8 + 2] = 12;
  writeGz(dir.path() + "/train-images-idx3-ubyte.gz", imageFile(3));
  writeGz(dir.path() + "/train-labels-idx1-ubyte.gz", labels);
  expectOpenError(dir.path(), {"label 2 is 12"});
}

} // namespace
} // namespace sbpflow
