// The set of --debug-only types enabled for sbpflow's own debug output.
#include "compiler/Passes.h"

#include <mutex>
#include <set>
#include <string>

namespace mlir::sbp {
namespace {
// Set once by the tool's command line before any pass runs.
std::set<std::string> &debugTypes() {
  static std::set<std::string> types;
  return types;
}
std::mutex debugMutex;
} // namespace

void setSbpDebugTypes(llvm::ArrayRef<std::string> types) {
  std::lock_guard<std::mutex> lock(debugMutex);
  debugTypes().clear();
  for (const std::string &t : types) {
    llvm::SmallVector<llvm::StringRef> parts;
    llvm::StringRef(t).split(parts, ',');
    for (llvm::StringRef p : parts)
      debugTypes().insert(p.trim().str());
  }
}

bool isSbpDebugEnabled(llvm::StringRef type) {
  std::lock_guard<std::mutex> lock(debugMutex);
  return debugTypes().count(type.str()) > 0;
}

} // namespace mlir::sbp
