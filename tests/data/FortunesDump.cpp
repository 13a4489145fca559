// Prints what openFortunesText draws (vocabulary, split checksum, batches) in
// a line format that fortunes_batches_test.py compares with the Python
// reproduction in bench/fortunes_batches.py.
//   fortunes_dump DIR train|val SEED CONTEXT GLOBAL_BATCH EPOCH FIRST_BATCH COUNT
#include "runtime/data/FortunesText.h"

#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace sbpflow;

int main(int argc, char **argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: %s DIR train|val SEED CONTEXT GLOBAL_BATCH EPOCH FIRST COUNT\n",
                 argv[0]);
    return 2;
  }
  const std::string dir = argv[1], split = argv[2];
  if (split != "train" && split != "val") {
    std::fprintf(stderr, "split must be train or val, got '%s'\n", split.c_str());
    return 2;
  }
  const uint64_t seed = std::strtoull(argv[3], nullptr, 10);
  const int64_t context = std::atoll(argv[4]), globalBatch = std::atoll(argv[5]),
                epoch = std::atoll(argv[6]), first = std::atoll(argv[7]),
                count = std::atoll(argv[8]);
  auto text = openFortunesText(dir, split == "train", seed, context);
  if (!text) {
    std::fprintf(stderr, "%s\n", text.status().message().c_str());
    return 1;
  }
  const FortunesText &t = **text;
  std::printf("vocab");
  for (uint8_t b : t.vocab())
    std::printf(" %d", b);
  std::vector<uint8_t> ids(t.splitTokens().begin(), t.splitTokens().end());
  const uLong crc = crc32(crc32(0L, Z_NULL, 0), ids.data(), static_cast<uInt>(ids.size()));
  std::printf("\nsplit %zu %lu\nsize %lld\n", ids.size(), static_cast<unsigned long>(crc),
              static_cast<long long>(t.size()));
  std::vector<int32_t> buf(globalBatch * context);
  for (int64_t b = first; b < first + count; ++b)
    for (const char *field : {"tokens", "targets"}) {
      if (Status s = (*text)->fill(field, epoch, b, globalBatch, 0, globalBatch, buf.data()); !s) {
        std::fprintf(stderr, "%s\n", s.message().c_str());
        return 1;
      }
      for (int64_t r = 0; r < globalBatch; ++r) {
        std::printf("%s %lld %lld", field, static_cast<long long>(b), static_cast<long long>(r));
        for (int64_t i = 0; i < context; ++i)
          std::printf(" %d", buf[r * context + i]);
        std::printf("\n");
      }
    }
  return 0;
}
