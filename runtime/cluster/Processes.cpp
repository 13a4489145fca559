#include "runtime/cluster/Processes.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <thread>

extern char **environ;

namespace sbpflow::cluster {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string describeExit(int status) {
  if (WIFEXITED(status))
    return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return std::string("killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "ended (wait status " + std::to_string(status) + ")";
}

std::string selfExecutable() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

std::string siblingWorkerBinary() {
  std::string self = selfExecutable();
  if (self.empty())
    return "sbpflow-worker";
  auto slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) +
         "/sbpflow-worker";
}

StatusOr<int> ChildProcesses::spawn(const std::string &binary, const std::vector<std::string> &args,
                                    const std::string &outputPath) {
  std::vector<char *> argv;
  argv.push_back(const_cast<char *>(binary.c_str()));
  for (const auto &a : args)
    argv.push_back(const_cast<char *>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  if (!outputPath.empty()) {
    posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, outputPath.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&files, STDOUT_FILENO, STDERR_FILENO);
  }
  pid_t pid = 0;
  int rc = posix_spawn(&pid, binary.c_str(), &files, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  if (rc != 0)
    return Status::error("cannot start worker '" + binary + "': " + strerror(rc));
  live_.push_back(pid);
  return static_cast<int>(pid);
}

std::optional<std::pair<int, std::string>> ChildProcesses::pollExited() {
  for (size_t i = 0; i < live_.size(); ++i) {
    int status = 0;
    pid_t r = waitpid(live_[i], &status, WNOHANG);
    if (r == live_[i]) {
      int pid = live_[i];
      live_.erase(live_.begin() + i);
      ended_[pid] = status;
      return std::make_pair(pid, describeExit(status));
    }
  }
  return std::nullopt;
}

std::string ChildProcesses::killAndReap(milliseconds grace) {
  auto deadline = Clock::now() + grace;
  while (!live_.empty() && Clock::now() < deadline) {
    if (!pollExited())
      std::this_thread::sleep_for(milliseconds(20));
  }
  std::string unclean;
  for (pid_t pid : live_) {
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    ended_[pid] = status;
    if (unclean.empty())
      unclean = "worker process pid " + std::to_string(pid) + " did not end within " +
                std::to_string(grace.count()) + " ms and was killed";
  }
  live_.clear();
  for (auto &[pid, status] : ended_)
    if (unclean.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
      unclean = "worker process pid " + std::to_string(pid) + " " + describeExit(status);
  ended_.clear();
  return unclean;
}

} // namespace sbpflow::cluster
