// Child processes of the cluster: the driver's `--local` workers and a node
// daemon's rank processes. Spawned, polled for early exits, reaped at the end
// and killed when the job fails.
#pragma once

#include "runtime/Status.h"

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sbpflow::cluster {

// "exited with status 3", "killed by signal 9 (Killed)".
std::string describeExit(int waitStatus);

// This process's executable (/proc/self/exe resolved); empty if unreadable.
std::string selfExecutable();

// `sbpflow-worker` in the directory of selfExecutable().
std::string siblingWorkerBinary();

class ChildProcesses {
public:
  ~ChildProcesses() { killAndReap(std::chrono::milliseconds(0)); }

  // Starts `binary args...`; the pid on success. With `outputPath`, the
  // child's stdout and stderr go to that file (created or truncated).
  StatusOr<int> spawn(const std::string &binary, const std::vector<std::string> &args,
                      const std::string &outputPath = "");

  // A child that ended since the last poll: (pid, how it ended).
  std::optional<std::pair<int, std::string>> pollExited();

  // Waits up to `grace` for every child to end by itself, then kills the
  // rest. Returns "" when every child ended by itself with status 0, else
  // how the first other one ended.
  std::string killAndReap(std::chrono::milliseconds grace);

  bool empty() const { return live_.empty(); }

private:
  std::vector<int> live_;
  std::map<int, int> ended_; // pid -> wait status
};

} // namespace sbpflow::cluster
