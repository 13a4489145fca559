// End-to-end tests of the MLP example: multi-rank training equals one-rank
// training, and the model learns Fashion-MNIST.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

const char *kDataDir = "/usr/share/datasets/fashion-mnist";

struct CommandResult {
  int status;
  std::string output;
};

CommandResult runCommand(const std::string &cmd) {
  std::string full = cmd + " 2>&1";
  FILE *pipe = popen(full.c_str(), "r");
  CommandResult r{-1, ""};
  if (!pipe)
    return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0)
    r.output.append(buf, n);
  int st = pclose(pipe);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// Reassembles every variable's global tensor from the shards a job saved
// (<name>.<rank>.f32 + <name>.<rank>.region).
std::map<std::string, std::vector<float>> loadParams(const fs::path &dir) {
  struct Shard {
    std::vector<float> data;
    std::vector<std::pair<int64_t, int64_t>> region;
  };
  std::map<std::string, std::vector<Shard>> shards;
  for (const auto &entry : fs::directory_iterator(dir)) {
    std::string file = entry.path().filename().string();
    if (entry.path().extension() != ".f32")
      continue;
    std::string stem = file.substr(0, file.size() - 4);
    std::string name = stem.substr(0, stem.rfind('.'));
    Shard s;
    std::ifstream in(entry.path(), std::ios::binary);
    in.seekg(0, std::ios::end);
    s.data.resize(in.tellg() / sizeof(float));
    in.seekg(0);
    in.read(reinterpret_cast<char *>(s.data.data()), s.data.size() * sizeof(float));
    std::ifstream reg(dir / (stem + ".region"));
    int64_t b, n;
    while (reg >> b >> n)
      s.region.emplace_back(b, n);
    shards[name].push_back(std::move(s));
  }
  std::map<std::string, std::vector<float>> result;
  for (auto &[name, list] : shards) {
    // Global extent: the largest begin + size over the shards, per axis.
    size_t rank = list.front().region.size();
    std::vector<int64_t> global(rank, 0);
    for (const Shard &s : list)
      for (size_t a = 0; a < rank; ++a)
        global[a] = std::max(global[a], s.region[a].first + s.region[a].second);
    int64_t total = 1;
    for (int64_t g : global)
      total *= g;
    std::vector<float> out(total, 0.0f);
    for (const Shard &s : list) {
      // Row-major copy of the shard's block into the global tensor.
      std::vector<int64_t> idx(rank, 0);
      for (size_t i = 0; i < s.data.size(); ++i) {
        int64_t off = 0;
        for (size_t a = 0; a < rank; ++a)
          off = off * global[a] + s.region[a].first + idx[a];
        out[off] = s.data[i];
        for (int64_t a = static_cast<int64_t>(rank) - 1; a >= 0; --a) {
          if (++idx[a] < s.region[a].second)
            break;
          idx[a] = 0;
        }
      }
    }
    result[name] = std::move(out);
  }
  return result;
}

fs::path tempDir(const std::string &name) {
  fs::path p = fs::temp_directory_path() / ("sbpflow_e2e_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

CommandResult trainSteps(int ranks, int batch, int steps, const fs::path &out) {
  std::ostringstream cmd;
  cmd << SBPFLOW_BIN_DIR << "/mlp_fashion_mnist --local " << ranks << " --batch " << batch
      << " --max-steps " << steps << " --save-params " << out.string();
  return runCommand(cmd.str());
}

void expectSameParams(int ranks, int batch) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  fs::path one = tempDir("r1_b" + std::to_string(batch));
  fs::path many = tempDir("r" + std::to_string(ranks) + "_b" + std::to_string(batch));
  CommandResult a = trainSteps(1, batch, 20, one);
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainSteps(ranks, batch, 20, many);
  ASSERT_EQ(b.status, 0) << b.output;
  auto pa = loadParams(one), pb = loadParams(many);
  ASSERT_FALSE(pa.empty());
  ASSERT_EQ(pa.size(), pb.size());
  for (auto &[name, va] : pa) {
    ASSERT_TRUE(pb.count(name)) << name;
    const std::vector<float> &vb = pb[name];
    ASSERT_EQ(va.size(), vb.size()) << name;
    double maxDiff = 0, maxAbs = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      maxDiff = std::max(maxDiff, std::fabs(double(va[i]) - vb[i]));
      maxAbs = std::max(maxAbs, std::fabs(double(va[i])));
    }
    EXPECT_LE(maxDiff, 1e-5 * maxAbs) << name << ": max |1 rank - " << ranks
                                      << " ranks| = " << maxDiff << ", max |value| = " << maxAbs;
  }
  fs::remove_all(one);
  fs::remove_all(many);
}

} // namespace

TEST(MlpEndToEnd, FourRanksEqualOneRank) { expectSameParams(4, 256); }

// 250 rows over 4 ranks: balanced uneven shards of 63, 63, 62, 62.
TEST(MlpEndToEnd, FourRanksEqualOneRankUnevenBatch) { expectSameParams(4, 250); }

TEST(MlpEndToEnd, LearnsFashionMnist) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  CommandResult r = runCommand(std::string(SBPFLOW_BIN_DIR) +
                               "/mlp_fashion_mnist --local 2 --epochs 5 --log-every 1000");
  ASSERT_EQ(r.status, 0) << r.output;
  // The last "test accuracy" line of the run.
  size_t at = r.output.rfind("test accuracy");
  ASSERT_NE(at, std::string::npos) << r.output;
  double accuracy = std::atof(r.output.c_str() + at + std::string("test accuracy").size());
  EXPECT_GE(accuracy, 0.85) << r.output;
}

TEST(MlpEndToEnd, MissingDatasetIsAClearError) {
  CommandResult r =
      runCommand(std::string(SBPFLOW_BIN_DIR) +
                 "/mlp_fashion_mnist --local 2 --max-steps 1 --data-dir /nonexistent/fmnist");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("/nonexistent/fmnist"), std::string::npos) << r.output;
}

// A plan whose input does not match the data: a clear error naming the task,
// the model line, the field and both sizes; no hang.
TEST(MlpEndToEnd, InputShapeMismatchIsAClearError) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  fs::path dir = tempDir("wrong_shape");
  std::string bin = SBPFLOW_BIN_DIR;
  CommandResult c = runCommand(bin + "/sbpflow compile " + SBPFLOW_E2E_INPUTS +
                               "/wrong_input_shape.mlir -o " + (dir / "w.plan").string());
  ASSERT_EQ(c.status, 0) << c.output;
  CommandResult r =
      runCommand("timeout 60 " + bin + "/sbpflow run " + (dir / "w.plan").string() + " --local 2");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.status, 124) << "timed out: " << r.output;
  EXPECT_NE(r.output.find("sbp.input@wrong_input_shape.mlir:6"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("data field 'image' holds f32 samples of 784 elements, but the plan's "
                          "input is f32 [64,100]"),
            std::string::npos)
      << r.output;
  fs::remove_all(dir);
}
