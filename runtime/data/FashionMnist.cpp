// Fashion-MNIST read straight from the IDX .gz files (zlib's gzread), held in
// memory as bytes and turned into floats only for the rows a rank asks for.
#include "runtime/data/DataSource.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>

namespace sbpflow {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803; // ubyte, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801; // ubyte, 1 dimension
constexpr int64_t kRows = 28, kCols = 28, kPixels = kRows * kCols, kClasses = 10;

uint32_t bigEndian(const unsigned char *p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

// One IDX .gz file being read; closes on every path out.
class GzFile {
public:
  explicit GzFile(std::string path) : path_(std::move(path)) {}
  ~GzFile() {
    if (file_)
      gzclose(file_);
  }
  GzFile(const GzFile &) = delete;
  GzFile &operator=(const GzFile &) = delete;

  Status open() {
    errno = 0;
    file_ = gzopen(path_.c_str(), "rb");
    if (!file_)
      return Status::error("cannot open " + path_ + ": " +
                           (errno ? std::strerror(errno) : "gzopen failed"));
    return Status::ok();
  }

  // Reads exactly `n` bytes; `what` names the part of the file for the error.
  Status readExactly(void *dst, int64_t n, const std::string &what) {
    auto *out = static_cast<unsigned char *>(dst);
    int64_t done = 0;
    while (done < n) {
      // gzread takes an unsigned int length; read in bounded pieces.
      const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(n - done, 1 << 30));
      const int got = gzread(file_, out + done, chunk);
      if (got < 0)
        return Status::error(path_ + ": reading " + what + ": " + zlibError());
      if (got == 0)
        break;
      consumed(out + done, got);
      done += got;
    }
    if (done < n)
      return Status::error(path_ + ": file is truncated: " + what + " needs " + std::to_string(n) +
                           " bytes, found " + std::to_string(done) + errorSuffix());
    return Status::ok();
  }

  // Like readExactly, into `dst`, which grows only as data arrives: a corrupt
  // header claiming billions of samples must be an error, not a huge allocation.
  Status readAppending(std::vector<unsigned char> &dst, int64_t n, const std::string &what) {
    constexpr int64_t kStep = int64_t(16) << 20;
    dst.clear();
    for (int64_t done = 0; done < n;) {
      const int64_t step = std::min(kStep, n - done);
      dst.resize(static_cast<size_t>(done + step));
      const int got = gzread(file_, dst.data() + done, static_cast<unsigned>(step));
      if (got < 0)
        return Status::error(path_ + ": reading " + what + ": " + zlibError());
      consumed(dst.data() + done, got);
      done += got;
      if (got < step) {
        dst.resize(static_cast<size_t>(done));
        return Status::error(path_ + ": file is truncated: " + what + " needs " +
                             std::to_string(n) + " bytes, found " + std::to_string(done) +
                             errorSuffix());
      }
    }
    return Status::ok();
  }

  // The stream must end here, and its gzip trailer (CRC, length) must be intact.
  Status expectEnd(const std::string &after) {
    unsigned char extra;
    const int got = gzread(file_, &extra, 1);
    if (got < 0)
      return Status::error(path_ + ": corrupt or truncated after " + after + ": " + zlibError());
    if (got > 0)
      return Status::error(path_ + ": unexpected trailing data after " + after);
    int err = Z_OK;
    gzerror(file_, &err);
    if (err != Z_OK && err != Z_STREAM_END)
      return Status::error(path_ + ": corrupt or truncated after " + after + ": " + zlibError());
    return checkTrailer(after);
  }

private:
  void consumed(const unsigned char *data, int64_t n) {
    crc_ = crc32(crc_, data, static_cast<uInt>(n));
    total_ += static_cast<uint64_t>(n);
  }

  // gzread does not notice a missing or cut gzip trailer once inflate has
  // taken in the last input, so the trailer (CRC-32, length mod 2^32) is
  // compared with what was read. This assumes a single gzip member, as every
  // published IDX file is.
  Status checkTrailer(const std::string &after) {
    if (gzdirect(file_))
      return Status::ok(); // an uncompressed IDX file has no trailer
    std::FILE *raw = std::fopen(path_.c_str(), "rb");
    unsigned char t[8];
    const bool got = raw && std::fseek(raw, -8, SEEK_END) == 0 && std::fread(t, 1, 8, raw) == 8;
    if (raw)
      std::fclose(raw);
    if (!got)
      return Status::error(path_ + ": cannot read the gzip trailer after " + after);
    auto little = [&](int i) {
      return uint32_t(t[i]) | (uint32_t(t[i + 1]) << 8) | (uint32_t(t[i + 2]) << 16) |
             (uint32_t(t[i + 3]) << 24);
    };
    if (little(0) != static_cast<uint32_t>(crc_) || little(4) != static_cast<uint32_t>(total_))
      return Status::error(path_ + ": file is truncated or corrupt: its gzip trailer does not " +
                           "match the " + std::to_string(total_) + " bytes read (" + after + ")");
    return Status::ok();
  }

  std::string zlibError() {
    int err = Z_OK;
    const char *msg = gzerror(file_, &err);
    if (err == Z_ERRNO)
      return std::strerror(errno);
    return msg && *msg ? msg : "zlib error " + std::to_string(err);
  }
  std::string errorSuffix() {
    int err = Z_OK;
    gzerror(file_, &err);
    if (gzdirect(file_))
      return " (the file is not gzip-compressed)";
    return err == Z_OK || err == Z_STREAM_END ? "" : " (" + zlibError() + ")";
  }

  std::string path_;
  gzFile file_ = nullptr;
  uLong crc_ = crc32(0L, Z_NULL, 0);
  uint64_t total_ = 0;
};

// Opens an IDX file and reads its header (magic number first).
Status openIdx(GzFile &f, const std::string &path, uint32_t wantMagic, const char *what,
               unsigned char *header, size_t size) {
  if (Status s = f.open(); !s)
    return s;
  if (Status s = f.readExactly(header, size, "the " + std::to_string(size) + "-byte IDX header");
      !s)
    return s;
  const uint32_t magic = bigEndian(header);
  if (magic != wantMagic) {
    char buf[96];
    std::snprintf(buf, sizeof buf, ": bad magic number 0x%08x (IDX %s need 0x%08x)", magic, what,
                  wantMagic);
    return Status::error(path + buf);
  }
  return Status::ok();
}

Status readImages(const std::string &path, std::vector<unsigned char> &images, int64_t &count) {
  GzFile f(path);
  unsigned char header[16];
  if (Status s = openIdx(f, path, kImagesMagic, "images", header, sizeof header); !s)
    return s;
  count = bigEndian(header + 4);
  const uint32_t rows = bigEndian(header + 8), cols = bigEndian(header + 12);
  if (rows != kRows || cols != kCols)
    return Status::error(path + ": images are " + std::to_string(rows) + "x" +
                         std::to_string(cols) + ", Fashion-MNIST images are 28x28");
  if (Status s = f.readAppending(images, count * kPixels,
                                 std::to_string(count) + " images of 28x28 bytes");
      !s)
    return s;
  return f.expectEnd(std::to_string(count) + " images");
}

Status readLabels(const std::string &path, std::vector<int32_t> &labels) {
  GzFile f(path);
  unsigned char header[8];
  if (Status s = openIdx(f, path, kLabelsMagic, "labels", header, sizeof header); !s)
    return s;
  const int64_t count = bigEndian(header + 4);
  std::vector<unsigned char> bytes;
  if (Status s = f.readAppending(bytes, count, std::to_string(count) + " labels"); !s)
    return s;
  if (Status s = f.expectEnd(std::to_string(count) + " labels"); !s)
    return s;
  labels.resize(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] >= kClasses)
      return Status::error(path + ": label " + std::to_string(i) + " is " +
                           std::to_string(bytes[i]) + ", Fashion-MNIST has classes 0..9");
    labels[i] = bytes[i];
  }
  return Status::ok();
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) by rejection: std::uniform_int_distribution's
// algorithm differs between standard libraries, and every rank (and every
// build) must draw the same permutation.
uint64_t uniformBelow(std::mt19937_64 &rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound; // 2^64 mod bound
  uint64_t r;
  do
    r = rng();
  while (r < threshold);
  return r % bound;
}

class FashionMnistSource final : public DataSource {
public:
  FashionMnistSource(std::vector<unsigned char> images, std::vector<int32_t> labels, bool shuffle,
                     uint64_t seed)
      : images_(std::move(images)), labels_(std::move(labels)), shuffle_(shuffle), seed_(seed) {
    fields_ = {{"image", FieldType::F32, {kPixels}}, {"label", FieldType::I32, {}}};
  }

  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }

  Status fill(const std::string &field, int64_t epoch, int64_t batchIndex, int64_t globalBatch,
              int64_t rowBegin, int64_t rowCount, void *dst) override {
    const bool isImage = field == "image";
    if (Status s = checkFillRequest("fashion-mnist", field, {"image", "label"}, epoch, batchIndex,
                                    globalBatch, rowBegin, rowCount, dst);
        !s || rowCount == 0)
      return s;

    std::shared_ptr<const std::vector<int32_t>> order;
    if (shuffle_)
      order = permutation(epoch);
    const int64_t first = batchIndex * globalBatch + rowBegin;
    const int64_t n = size();
    for (int64_t r = 0; r < rowCount; ++r) {
      const int64_t pos = first + r;
      const bool pad = pos >= n;
      const int64_t sample = pad ? -1 : (order ? (*order)[pos] : pos);
      if (isImage) {
        float *out = static_cast<float *>(dst) + r * kPixels;
        if (pad) {
          std::fill(out, out + kPixels, 0.f);
          continue;
        }
        const unsigned char *in = images_.data() + sample * kPixels;
        for (int64_t p = 0; p < kPixels; ++p)
          out[p] = in[p] * (1.f / 255.f);
      } else {
        static_cast<int32_t *>(dst)[r] = pad ? -1 : labels_[sample];
      }
    }
    return Status::ok();
  }

private:
  // Every rank asks for many batches of one epoch: the permutation of the last
  // epoch asked for is kept.
  std::shared_ptr<const std::vector<int32_t>> permutation(int64_t epoch) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cached_ && cachedEpoch_ == epoch)
      return cached_;
    auto perm = std::make_shared<std::vector<int32_t>>(labels_.size());
    for (size_t i = 0; i < perm->size(); ++i)
      (*perm)[i] = static_cast<int32_t>(i);
    std::mt19937_64 rng(splitmix64(seed_ ^ splitmix64(static_cast<uint64_t>(epoch))));
    for (size_t i = perm->size(); i > 1; --i) {
      const size_t j = static_cast<size_t>(uniformBelow(rng, i));
      std::swap((*perm)[i - 1], (*perm)[j]);
    }
    cached_ = std::move(perm);
    cachedEpoch_ = epoch;
    return cached_;
  }

  std::vector<FieldInfo> fields_;
  std::vector<unsigned char> images_;
  std::vector<int32_t> labels_;
  bool shuffle_;
  uint64_t seed_;
  std::mutex mutex_;
  std::shared_ptr<const std::vector<int32_t>> cached_;
  int64_t cachedEpoch_ = -1;
};

} // namespace

StatusOr<std::unique_ptr<DataSource>> openFashionMnist(const std::string &dir, bool train,
                                                       bool shuffle, uint64_t seed) {
  const std::string prefix = dir + "/" + (train ? "train" : "t10k");
  const std::string imagesPath = prefix + "-images-idx3-ubyte.gz";
  const std::string labelsPath = prefix + "-labels-idx1-ubyte.gz";
  std::vector<unsigned char> images;
  int64_t imageCount = 0;
  if (Status s = readImages(imagesPath, images, imageCount); !s)
    return s.withContext("fashion-mnist");
  std::vector<int32_t> labels;
  if (Status s = readLabels(labelsPath, labels); !s)
    return s.withContext("fashion-mnist");
  if (imageCount != static_cast<int64_t>(labels.size()))
    return Status::error("fashion-mnist: " + imagesPath + " holds " + std::to_string(imageCount) +
                         " images but " + labelsPath + " holds " + std::to_string(labels.size()) +
                         " labels");
  std::unique_ptr<DataSource> source =
      std::make_unique<FashionMnistSource>(std::move(images), std::move(labels), shuffle, seed);
  return source;
}

} // namespace sbpflow
