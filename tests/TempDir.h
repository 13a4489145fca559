// A fresh directory under the system's temporary directory, removed with
// everything in it when the object goes away. For tests that write files.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace sbpflow::test {

class TempDir {
public:
  explicit TempDir(const std::string &prefix = "sbpflow_test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    if (!mkdtemp(tmpl.data()))
      throw std::runtime_error("cannot create a temporary directory " + tmpl + ": " +
                               std::strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir &) = delete;
  TempDir &operator=(const TempDir &) = delete;
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

} // namespace sbpflow::test
