// The fortunes corpus read whole into memory (a few MB), encoded once to ids;
// fill() copies windows whose starts follow the formula in FortunesText.h.
#include "runtime/data/FortunesText.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace sbpflow {
namespace {

namespace fs = std::filesystem;

bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The text files of `dir` in byte order of their names (see FortunesText.h).
Status listTextFiles(const std::string &dir, std::vector<std::string> &names) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec || !fs::exists(st))
    return Status::error("fortunes: directory '" + dir + "' does not exist");
  if (!fs::is_directory(st))
    return Status::error("fortunes: '" + dir + "' is not a directory");
  fs::directory_iterator it(dir, ec), end;
  if (ec)
    return Status::error("fortunes: cannot list '" + dir + "': " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec)
      return Status::error("fortunes: cannot list '" + dir + "': " + ec.message());
    const std::string name = it->path().filename().string();
    // symlink_status: the .u8 links (and any other link) would read a file twice.
    const fs::file_status ls = it->symlink_status(ec);
    if (ec || !fs::is_regular_file(ls) || endsWith(name, ".dat") || endsWith(name, ".u8"))
      continue;
    names.push_back(name);
  }
  // std::string compares as unsigned bytes (char_traits<char>), like Python's
  // sorted() on os.fsencode(name).
  std::sort(names.begin(), names.end());
  return Status::ok();
}

Status readCorpus(const std::string &dir, std::vector<uint8_t> &bytes) {
  std::vector<std::string> names;
  if (Status s = listTextFiles(dir, names); !s)
    return s;
  for (const std::string &name : names) {
    const std::string path = dir + "/" + name;
    std::ifstream in(path, std::ios::binary);
    if (!in)
      return Status::error("fortunes: cannot open '" + path + "': " + std::strerror(errno));
    bytes.insert(bytes.end(), std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad())
      return Status::error("fortunes: cannot read '" + path + "'");
  }
  if (bytes.empty())
    return Status::error("fortunes: no text in '" + dir + "' (" + std::to_string(names.size()) +
                         " text files, none ending in .dat or .u8, all empty or absent)");
  return Status::ok();
}

} // namespace

uint64_t fortunesSplitMix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

FortunesText::FortunesText(std::vector<uint8_t> vocab, std::vector<int32_t> tokens, uint64_t seed,
                           int64_t context)
    : vocab_(std::move(vocab)), tokens_(std::move(tokens)), seed_(seed), context_(context) {
  fields_ = {{"tokens", FieldType::I32, {context}}, {"targets", FieldType::I32, {context}}};
  idOfByte_.fill(-1);
  for (size_t i = 0; i < vocab_.size(); ++i)
    idOfByte_[vocab_[i]] = static_cast<int32_t>(i);
}

int64_t FortunesText::windowStart(int64_t epoch, int64_t batchIndex, int64_t row) const {
  const uint64_t starts = static_cast<uint64_t>(tokens_.size()) - static_cast<uint64_t>(context_);
  const uint64_t key = seed_ ^ (static_cast<uint64_t>(epoch) << 40) ^
                       (static_cast<uint64_t>(batchIndex) << 20) ^ static_cast<uint64_t>(row);
  return static_cast<int64_t>(fortunesSplitMix64(key) % starts);
}

Status FortunesText::fill(const std::string &field, int64_t epoch, int64_t batchIndex,
                          int64_t globalBatch, int64_t rowBegin, int64_t rowCount, void *dst) {
  const bool isTargets = field == "targets";
  if (Status s = checkFillRequest("fortunes", field, {"tokens", "targets"}, epoch, batchIndex,
                                  globalBatch, rowBegin, rowCount, dst);
      !s || rowCount == 0)
    return s;

  auto *out = static_cast<int32_t *>(dst);
  const int64_t T = context_, shift = isTargets ? 1 : 0;
  for (int64_t i = 0; i < rowCount; ++i) {
    const int64_t row = rowBegin + i;
    int32_t *o = out + i * T;
    if (batchIndex * globalBatch + row >= size()) {
      std::fill(o, o + T, isTargets ? -1 : 0);
      continue;
    }
    const int64_t s = windowStart(epoch, batchIndex, row) + shift;
    std::copy(tokens_.begin() + s, tokens_.begin() + s + T, o);
  }
  return Status::ok();
}

StatusOr<std::vector<int32_t>> FortunesText::encode(const std::string &text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<uint8_t>(text[i]);
    if (idOfByte_[byte] < 0)
      return Status::error("fortunes: byte " + std::to_string(byte) + " at position " +
                           std::to_string(i) + " is not in the vocabulary (" +
                           std::to_string(vocab_.size()) + " bytes)");
    ids[i] = idOfByte_[byte];
  }
  return ids;
}

StatusOr<std::string> FortunesText::decode(const std::vector<int32_t> &ids) const {
  std::string text(ids.size(), '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= static_cast<int32_t>(vocab_.size()))
      return Status::error("fortunes: id " + std::to_string(ids[i]) + " at position " +
                           std::to_string(i) + " is outside the vocabulary [0, " +
                           std::to_string(vocab_.size()) + ")");
    text[i] = static_cast<char>(vocab_[ids[i]]);
  }
  return text;
}

StatusOr<std::unique_ptr<FortunesText>> openFortunesText(const std::string &dir, bool train,
                                                         uint64_t seed, int64_t context) {
  if (context <= 0)
    return Status::error("fortunes: context must be positive, got " + std::to_string(context));
  std::vector<uint8_t> bytes;
  if (Status s = readCorpus(dir, bytes); !s)
    return s;

  std::array<bool, 256> present{};
  for (uint8_t b : bytes)
    present[b] = true;
  std::vector<uint8_t> vocab;
  std::array<int32_t, 256> idOfByte{};
  for (int b = 0; b < 256; ++b)
    if (present[b]) {
      idOfByte[b] = static_cast<int32_t>(vocab.size());
      vocab.push_back(static_cast<uint8_t>(b));
    }

  const size_t trainBytes = bytes.size() * 9 / 10;
  const size_t begin = train ? 0 : trainBytes, end = train ? trainBytes : bytes.size();
  if (static_cast<int64_t>(end - begin) < context + 1)
    return Status::error("fortunes: the " + std::string(train ? "train" : "validation") +
                         " split of '" + dir + "' has " + std::to_string(end - begin) +
                         " bytes, fewer than context + 1 = " + std::to_string(context + 1));
  std::vector<int32_t> tokens(end - begin);
  for (size_t i = begin; i < end; ++i)
    tokens[i - begin] = idOfByte[bytes[i]];
  return std::make_unique<FortunesText>(std::move(vocab), std::move(tokens), seed, context);
}

} // namespace sbpflow
