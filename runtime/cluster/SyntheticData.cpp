// The synthetic test data source (see SyntheticData.h).
#include "runtime/cluster/SyntheticData.h"

#include <cstring>

namespace sbpflow::cluster {
namespace {

uint64_t mix(uint64_t x) {
  // splitmix64 finaliser: cheap, deterministic, well spread.
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class SyntheticDataForTests : public DataSource {
public:
  SyntheticDataForTests(std::vector<FieldInfo> fields, int64_t samples, uint64_t seed, int classes)
      : fields_(std::move(fields)), samples_(samples), seed_(seed), classes_(classes) {}

  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return samples_; }

  Status fill(const std::string &field, int64_t epoch, int64_t batchIndex, int64_t globalBatch,
              int64_t rowBegin, int64_t rowCount, void *dst) override {
    const FieldInfo *info = nullptr;
    for (const auto &f : fields_)
      if (f.name == field)
        info = &f;
    if (!info)
      return Status::error("synthetic test data has no field '" + field + "'");
    int64_t width = 1;
    for (int64_t d : info->sampleShape)
      width *= d;
    for (int64_t r = 0; r < rowCount; ++r) {
      int64_t sample = batchIndex * globalBatch + rowBegin + r;
      bool pad = sample < 0 || sample >= samples_;
      int label = static_cast<int>(mix(seed_ ^ mix(sample)) % classes_);
      if (info->type == FieldType::I32) {
        auto *out = static_cast<int32_t *>(dst) + r * width;
        for (int64_t j = 0; j < width; ++j)
          out[j] = pad ? -1 : label;
      } else {
        auto *out = static_cast<float *>(dst) + r * width;
        for (int64_t j = 0; j < width; ++j) {
          if (pad) {
            out[j] = 0.0f;
            continue;
          }
          double noise = (mix(seed_ ^ mix(sample * 1000003 + j)) >> 11) * 0x1.0p-53 * 0.5;
          out[j] = static_cast<float>(noise + (j % classes_ == label ? 1.0 : 0.0));
        }
      }
    }
    return Status::ok();
  }

private:
  std::vector<FieldInfo> fields_;
  int64_t samples_;
  uint64_t seed_;
  int classes_;
};

} // namespace

std::unique_ptr<DataSource> makeSyntheticDataForTests(std::vector<FieldInfo> fields,
                                                      int64_t samples, uint64_t seed, int classes) {
  return std::make_unique<SyntheticDataForTests>(std::move(fields), samples, seed,
                                                 classes > 0 ? classes : 1);
}

} // namespace sbpflow::cluster
