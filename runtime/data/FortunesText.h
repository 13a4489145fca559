// Character-level language-model data from the text files of Debian's
// `fortunes` package: byte vocabulary, 90/10 split, random context windows.
//
// Exact definition (bench/fortunes_batches.py reproduces it; change both):
//  * Corpus: every regular file of `dir` (not a symlink, not a directory) whose
//    name does not end in ".dat" or ".u8", in file-name order compared as
//    bytes, concatenated as raw bytes with nothing in between.
//  * Vocabulary: the distinct byte values of the whole corpus, ascending; the
//    id of a byte is its position in that list. Train and validation share it.
//  * Split: with N corpus bytes, train = bytes [0, floor(N * 9 / 10)),
//    validation = the rest (nanoGPT's first 90% / last 10%).
//  * Windows: with n tokens in the split and context T, a window is a start
//    position s in [0, n - T) (every start whose T + 1 bytes fit: nanoGPT's
//    randint(n - T)). Row r of global batch b in epoch e starts at
//        s = splitmix64(seed ^ (e << 40) ^ (b << 20) ^ r) mod (n - T)
//    in unsigned 64-bit arithmetic (shifts and xor wrap modulo 2^64; plain
//    modulo of the 64-bit hash, no rejection: the bias is below (n - T) / 2^64),
//    where splitmix64(x) is
//        z = x + 0x9e3779b97f4a7c15
//        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
//        z = (z ^ (z >> 27)) * 0x94d049bb133111eb
//        return z ^ (z >> 31)
//    and r is the row's index in the global batch (not in a rank's shard), so
//    a batch is the same whatever ranks fill it. tokens = ids of bytes
//    [s, s + T), targets = ids of bytes [s + 1, s + T + 1).
//  * size() = floor(n / T) windows per epoch. A row at position b * globalBatch
//    + r >= size() (the padded end of a last partial batch) holds tokens 0 and
//    targets -1: -1 tokens would fail the embedding, -1 targets are ignored.
#pragma once

#include "runtime/data/DataSource.h"

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sbpflow {

inline const char *kDefaultFortunesDir = "/usr/share/games/fortunes";

class FortunesText final : public DataSource {
public:
  FortunesText(std::vector<uint8_t> vocab, std::vector<int32_t> tokens, uint64_t seed,
               int64_t context);

  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return static_cast<int64_t>(tokens_.size()) / context_; }
  // Fields "tokens" and "targets", i32 [context] per row.
  Status fill(const std::string &field, int64_t epoch, int64_t batchIndex, int64_t globalBatch,
              int64_t rowBegin, int64_t rowCount, void *dst) override;

  // id -> byte.
  const std::vector<uint8_t> &vocab() const { return vocab_; }
  // Ids of the bytes of `text`; a byte outside the vocabulary is an error.
  StatusOr<std::vector<int32_t>> encode(const std::string &text) const;
  // Bytes of `ids`; an id outside [0, vocab size) is an error.
  StatusOr<std::string> decode(const std::vector<int32_t> &ids) const;

  // This split's token ids, in corpus order.
  const std::vector<int32_t> &splitTokens() const { return tokens_; }
  int64_t context() const { return context_; }
  // The start position of row `row` of global batch `batchIndex` in `epoch`
  // (the formula in the file comment).
  int64_t windowStart(int64_t epoch, int64_t batchIndex, int64_t row) const;

private:
  std::vector<FieldInfo> fields_;
  std::vector<uint8_t> vocab_;
  std::array<int32_t, 256> idOfByte_; // -1: byte not in the corpus
  std::vector<int32_t> tokens_;
  uint64_t seed_;
  int64_t context_;
};

// The split (`train`: first 90%, else last 10%) of the corpus in `dir` with
// windows of `context` tokens. A missing directory, one without text, or a
// split shorter than context + 1 bytes is an error naming `dir`.
StatusOr<std::unique_ptr<FortunesText>> openFortunesText(const std::string &dir, bool train,
                                                         uint64_t seed, int64_t context);

// splitmix64 as written in the file comment.
uint64_t fortunesSplitMix64(uint64_t x);

} // namespace sbpflow
