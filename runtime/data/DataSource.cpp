// Checks shared by every data source (DataSource.h).
#include "runtime/data/DataSource.h"

#include <limits>

namespace sbpflow {

Status DataSource::checkFillRequest(const char *source, const std::string &field,
                                    std::initializer_list<const char *> known, int64_t epoch,
                                    int64_t batchIndex, int64_t globalBatch, int64_t rowBegin,
                                    int64_t rowCount, const void *dst) {
  bool isKnown = false;
  for (const char *k : known)
    isKnown |= field == k;
  if (!isKnown) {
    std::string list;
    for (const char *k : known)
      list += (list.empty() ? "" : ", ") + std::string(k);
    return Status::error(std::string(source) + ": no field '" + field + "' (fields: " + list + ")");
  }
  if (epoch < 0 || batchIndex < 0 || globalBatch <= 0 || rowBegin < 0 || rowCount < 0 ||
      rowBegin > globalBatch - rowCount)
    return Status::error(std::string(source) + ": bad request for '" + field + "': epoch " +
                         std::to_string(epoch) + ", batch " + std::to_string(batchIndex) +
                         ", global batch " + std::to_string(globalBatch) + ", rows [" +
                         std::to_string(rowBegin) + ", " + std::to_string(rowBegin) + "+" +
                         std::to_string(rowCount) + ")");
  if (rowCount == 0)
    return Status::ok();
  if (dst == nullptr)
    return Status::error(std::string(source) + ": null destination for '" + field + "'");
  if (batchIndex > (std::numeric_limits<int64_t>::max() - globalBatch) / globalBatch)
    return Status::error(std::string(source) + ": batch index " + std::to_string(batchIndex) +
                         " overflows");
  return Status::ok();
}

} // namespace sbpflow
