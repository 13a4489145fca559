// End-to-end tests of the MLP example: multi-rank training equals one-rank
// training, the model learns Fashion-MNIST, and a resumed run with a
// compressed gradient exchange continues bit for bit.
#include "runtime/checkpoint/Checkpoint.h"
#include "tests/TempDir.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace fs = std::filesystem;

namespace {

using sbpflow::test::TempDir;

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

// Every variable's global tensor, read through the checkpoint API from the
// checkpoint a job wrote (whatever its layout): the f32 ones as f32 (Word
// float), or every one as its elements' stored bits (Word uint32_t: f32 and
// i32 alike).
template <class Word> std::map<std::string, std::vector<Word>> loadCheckpoint(const fs::path &dir) {
  using namespace sbpflow::checkpoint;
  std::map<std::string, std::vector<Word>> result;
  auto reader = CheckpointReader::open(dir.string());
  EXPECT_TRUE(reader) << reader.status().message();
  if (!reader)
    return result;
  for (const TensorMeta &t : reader->tensors()) {
    if (std::is_same_v<Word, float> && t.dtype != DType::F32)
      continue;
    const sbpflow::Region whole = sbpflow::wholeRegion(t.shape);
    std::vector<Word> values(static_cast<size_t>(sbpflow::elementCount(t.shape)));
    const DType as = std::is_same_v<Word, float> ? DType::F32 : t.dtype;
    sbpflow::Status s = reader->read(t.name, t.shape, as, whole, values.data());
    EXPECT_TRUE(s) << t.name << ": " << s.message();
    result[t.name] = std::move(values);
  }
  return result;
}

CommandResult trainSteps(int ranks, int batch, int steps, const fs::path &out,
                         const std::string &resume = "") {
  std::ostringstream cmd;
  cmd << SBPFLOW_BIN_DIR << "/mlp_fashion_mnist --local " << ranks << " --batch " << batch
      << " --max-steps " << steps << " --checkpoint " << out.string();
  if (!resume.empty())
    cmd << " --resume " << resume;
  return runCommand(cmd.str());
}

// Per variable: max |a - b| over max |a|; every variable of `a` is in `b`.
std::map<std::string, double> relativeDiffs(const std::map<std::string, std::vector<float>> &pa,
                                            const std::map<std::string, std::vector<float>> &pb) {
  std::map<std::string, double> diffs;
  EXPECT_FALSE(pa.empty());
  EXPECT_EQ(pa.size(), pb.size());
  for (const auto &[name, va] : pa) {
    auto it = pb.find(name);
    EXPECT_TRUE(it != pb.end()) << name;
    if (it == pb.end() || it->second.size() != va.size()) {
      ADD_FAILURE() << name << " is missing or has another size";
      continue;
    }
    double maxDiff = 0, maxAbs = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      maxDiff = std::max(maxDiff, std::fabs(double(va[i]) - it->second[i]));
      maxAbs = std::max(maxAbs, std::fabs(double(va[i])));
    }
    diffs[name] = maxAbs > 0 ? maxDiff / maxAbs : maxDiff;
  }
  return diffs;
}

void expectSameParams(int ranks, int batch) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir oneDir("sbpflow_e2e"), manyDir("sbpflow_e2e");
  const fs::path one = oneDir.path(), many = manyDir.path();
  CommandResult a = trainSteps(1, batch, 20, one);
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainSteps(ranks, batch, 20, many);
  ASSERT_EQ(b.status, 0) << b.output;
  for (const auto &[name, diff] :
       relativeDiffs(loadCheckpoint<float>(one), loadCheckpoint<float>(many)))
    EXPECT_LE(diff, 1e-5) << name << ": max |1 rank - " << ranks << " ranks| / max |value|";
}

} // namespace

TEST(MlpEndToEnd, FourRanksEqualOneRank) { expectSameParams(4, 256); }

// 250 rows over 4 ranks: balanced uneven shards of 63, 63, 62, 62.
TEST(MlpEndToEnd, FourRanksEqualOneRankUnevenBatch) { expectSameParams(4, 250); }

// A checkpoint written by one rank, resumed on four and on one: the same
// parameters after the same further steps, and not those of a fresh start.
TEST(MlpEndToEnd, ResumeOnFourRanksEqualsResumeOnOneRank) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir startDir("sbpflow_e2e"), oneDir("sbpflow_e2e"), fourDir("sbpflow_e2e");
  const fs::path start = startDir.path(), one = oneDir.path(), four = fourDir.path();
  CommandResult a = trainSteps(1, 250, 10, start);
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainSteps(4, 250, 10, four, start.string());
  ASSERT_EQ(b.status, 0) << b.output;
  CommandResult c = trainSteps(1, 250, 10, one, start.string());
  ASSERT_EQ(c.status, 0) << c.output;
  const auto pStart = loadCheckpoint<float>(start), pOne = loadCheckpoint<float>(one),
             pFour = loadCheckpoint<float>(four);
  for (const auto &[name, diff] : relativeDiffs(pOne, pFour))
    EXPECT_LE(diff, 1e-5) << name << ": resumed on 1 rank vs on 4 ranks";
  // Without the resume, run c would repeat run a exactly.
  double moved = 0;
  for (const auto &[name, diff] : relativeDiffs(pStart, pOne))
    moved = std::max(moved, diff);
  EXPECT_GT(moved, 1e-3) << "resuming changed nothing: the checkpoint was not loaded";
}

TEST(MlpEndToEnd, ResumeFromMissingCheckpointIsAClearError) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir out("sbpflow_e2e");
  CommandResult r = trainSteps(2, 64, 1, out.path(), "/nonexistent/ckpt");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("checkpoint '/nonexistent/ckpt' does not exist"), std::string::npos)
      << r.output;
}

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

// The bench report's "sent_bytes_per_step" of a job of `ranks` ranks that
// trains `steps` steps: one number per rank.
std::vector<double> sentBytesPerStep(int ranks, int steps, const fs::path &json,
                                     const std::string &args = "") {
  CommandResult r = runCommand(std::string(SBPFLOW_BIN_DIR) + "/mlp_fashion_mnist --local " +
                               std::to_string(ranks) + " --max-steps " + std::to_string(steps) +
                               " --bench-json " + json.string() + " " + args);
  EXPECT_EQ(r.status, 0) << r.output;
  std::ifstream in(json);
  std::string line;
  std::getline(in, line);
  const std::string key = "\"sent_bytes_per_step\":[";
  size_t at = line.find(key);
  EXPECT_NE(at, std::string::npos) << line;
  std::vector<double> values;
  if (at == std::string::npos)
    return values;
  std::istringstream list(line.substr(at + key.size(), line.find(']', at) - at - key.size()));
  for (std::string item; std::getline(list, item, ',');)
    values.push_back(std::atof(item.c_str()));
  return values;
}

// Each train step all-reduces the MLP's gradients, 784x512 + 512 + 512x10 +
// 10 = 407050 f32 = 1628200 bytes (the README's 1.63 MB). On 2 ranks Gloo's
// ring sends, by GlooCommunicator.h's rule, (B - chunk r) + (B - chunk r-1)
// = B per all-reduce from each rank, however the gradients are bucketed; a
// rank alone sends nothing. Eval steps are not counted.
TEST(MlpEndToEnd, SentBytesPerStepIsTheGradientAllReduce) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir dir("sbpflow_e2e");
  const double gradientBytes = (784.0 * 512 + 512 + 512 * 10 + 10) * 4;
  EXPECT_EQ(sentBytesPerStep(2, 5, fs::path(dir.path()) / "two.json"),
            (std::vector<double>{gradientBytes, gradientBytes}));
  EXPECT_EQ(sentBytesPerStep(1, 5, fs::path(dir.path()) / "one.json"), std::vector<double>{0.0});
}

// mlp_fashion_mnist on 2 ranks with `--compress codec`, its batch, its
// further arguments (steps, resume) and a checkpoint written to `out`.
CommandResult trainCompressed(const std::string &codec, int batch, const std::string &args,
                              const fs::path &out) {
  return runCommand(std::string(SBPFLOW_BIN_DIR) + "/mlp_fashion_mnist --local 2 --batch " +
                    std::to_string(batch) + " --compress " + codec + " " + args + " --checkpoint " +
                    out.string());
}

// Whether the variable `name` ends in `tail` (a state's suffix).
bool endsWith(const std::string &name, const std::string &tail) {
  return name.size() > tail.size() &&
         name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
}

// Expects the checkpoints `resumed` and `whole` to hold the same variables
// with the same bits: the parameters, their momenta and the codec's state
// and step counters (at least one `.codec.` variable, whose step counters
// read `steps`).
void expectSameBits(const fs::path &resumed, const fs::path &whole, int64_t steps) {
  const auto a = loadCheckpoint<uint32_t>(resumed), b = loadCheckpoint<uint32_t>(whole);
  ASSERT_FALSE(a.empty());
  int codecVariables = 0, counters = 0;
  for (const auto &[name, words] : b) {
    auto it = a.find(name);
    ASSERT_NE(it, a.end()) << name << " is missing from the resumed run's checkpoint";
    ASSERT_EQ(it->second.size(), words.size()) << name;
    size_t differ = 0, first = words.size();
    for (size_t i = 0; i < words.size(); ++i)
      if (it->second[i] != words[i]) {
        ++differ;
        first = std::min(first, i);
      }
    EXPECT_EQ(differ, 0u) << name << ": " << differ << " of " << words.size()
                          << " elements differ between the resumed run and the whole run, first "
                          << first;
    if (name.find(".codec.") != std::string::npos)
      ++codecVariables;
    if (endsWith(name, ".codec.step")) {
      ++counters;
      EXPECT_EQ(words, std::vector<uint32_t>{static_cast<uint32_t>(steps)}) << name;
    }
  }
  EXPECT_EQ(a.size(), b.size());
  EXPECT_GT(codecVariables, 0) << "the checkpoint holds no codec variable";
  EXPECT_GT(counters, 0) << "the checkpoint holds no codec step counter";
}

// 10 compressed steps, saved, resumed for 10 more (the driver continues at
// batch 10 of epoch 1) equal one run of 20 steps bit for bit: every
// variable, the codec's error feedback and step counters included.
void expectResumeContinuesBitForBit(const std::string &codec) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir firstDir("sbpflow_e2e"), resumedDir("sbpflow_e2e"), wholeDir("sbpflow_e2e");
  const fs::path first = firstDir.path(), resumed = resumedDir.path(), whole = wholeDir.path();
  CommandResult a = trainCompressed(codec, 64, "--max-steps 10", first);
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b =
      trainCompressed(codec, 64, "--max-steps 10 --resume " + first.string(), resumed);
  ASSERT_EQ(b.status, 0) << b.output;
  CommandResult c = trainCompressed(codec, 64, "--max-steps 20", whole);
  ASSERT_EQ(c.status, 0) << c.output;
  ASSERT_NO_FATAL_FAILURE(expectSameBits(resumed, whole, 20));
}

TEST(MlpEndToEnd, ResumeWithTopK2BitContinuesBitForBit) {
  expectResumeContinuesBitForBit("topk2bit:0.01");
}

// QSGD's draws are keyed by the step counter, a variable: a resumed run
// that restarted it would draw step 0's numbers again.
TEST(MlpEndToEnd, ResumeWithQsgdContinuesBitForBit) { expectResumeContinuesBitForBit("qsgd:4"); }

// L-GreCo decides every 3 exchanges here, from gradients it accumulates in a
// variable: the save at step 10 falls between decisions, with a sum in
// progress, and the choices, the table and the accumulators travel with it.
TEST(MlpEndToEnd, ResumeWithLgrecoContinuesBitForBit) {
  expectResumeContinuesBitForBit("lgreco --lgreco-every 3");
}

// EF-SignSGD keeps the residual and the momentum it took from the SGD.
TEST(MlpEndToEnd, ResumeWithSignContinuesBitForBit) { expectResumeContinuesBitForBit("sign"); }

// DGC keeps momentum and accumulation (u, v) per rank, and its sparsity
// warm-up reads the step counter: density 0.25 in the first epoch, 0.0625 in
// the second. The example's epoch for that schedule is --max-steps (else
// 60000 / batch), so the runs compared must agree on it: with a batch of
// 6000 an epoch is 10 steps. One epoch, saved, and a second resumed equal
// two epochs in one run.
TEST(MlpEndToEnd, ResumeWithDgcAcrossItsWarmupEpochsContinuesBitForBit) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir firstDir("sbpflow_e2e"), resumedDir("sbpflow_e2e"), wholeDir("sbpflow_e2e");
  const fs::path first = firstDir.path(), resumed = resumedDir.path(), whole = wholeDir.path();
  CommandResult a = trainCompressed("dgc:0.01", 6000, "--epochs 1", first);
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b =
      trainCompressed("dgc:0.01", 6000, "--epochs 1 --resume " + first.string(), resumed);
  ASSERT_EQ(b.status, 0) << b.output;
  CommandResult c = trainCompressed("dgc:0.01", 6000, "--epochs 2", whole);
  ASSERT_EQ(c.status, 0) << c.output;
  ASSERT_NO_FATAL_FAILURE(expectSameBits(resumed, whole, 20));
}

using Names = std::set<std::string>;

// The one-layer char GPT on dp = 2 with `codec`: its codec state travels
// with the checkpoint, so 6 steps, saved, and 6 resumed equal 12 in one
// run, bit for bit; `check` then looks at the checkpoint's variable names.
void expectGptResumeContinuesBitForBit(const std::string &codec,
                                       const std::function<void(const Names &)> &check) {
  if (!fs::exists("/usr/share/games/fortunes"))
    GTEST_SKIP() << "fortunes not installed at /usr/share/games/fortunes";
  TempDir firstDir("sbpflow_e2e"), resumedDir("sbpflow_e2e"), wholeDir("sbpflow_e2e");
  const fs::path first = firstDir.path(), resumed = resumedDir.path(), whole = wholeDir.path();
  auto train = [&](const std::string &args, const fs::path &out) {
    return runCommand(std::string(SBPFLOW_BIN_DIR) +
                      "/gpt_char --dp 2 --n-layer 1 --batch 4 --compress-warmup 2 --compress " +
                      codec + " " + args + " --checkpoint " + out.string());
  };
  CommandResult a = train("--steps 6", first);
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = train("--steps 6 --resume " + first.string(), resumed);
  ASSERT_EQ(b.status, 0) << b.output;
  CommandResult c = train("--steps 12", whole);
  ASSERT_EQ(c.status, 0) << c.output;
  ASSERT_NO_FATAL_FAILURE(expectSameBits(resumed, whole, 12));
  Names names;
  for (const auto &v : loadCheckpoint<uint32_t>(whole))
    names.insert(v.first);
  check(names);
}

long countEnding(const Names &names, const std::string &tail) {
  return static_cast<long>(
      std::count_if(names.begin(), names.end(), [&](const auto &n) { return endsWith(n, tail); }));
}

// sbp-bucket-gradients fuses the matrices' PowerSGD all-reduces into tasks
// of several (one step counter each, the others' gone), whose residuals, Qs
// and L-GreCo accumulators travel with the checkpoint.
void expectFused(const Names &names) {
  EXPECT_GT(countEnding(names, ".codec.q"), countEnding(names, ".codec.step"));
  EXPECT_GT(countEnding(names, ".codec.step"), 0);
}

TEST(GptEndToEnd, ResumeWithPowerSgdBucketsContinuesBitForBit) {
  expectGptResumeContinuesBitForBit("powersgd:2", expectFused);
}

// L-GreCo decides every 3 exchanges (at exchanges 3 and 6 of the 10 after
// the warm-up): the save falls between decisions, the fused task's layers
// measured and chosen in turn.
TEST(GptEndToEnd, ResumeWithLgrecoBucketsContinuesBitForBit) {
  expectGptResumeContinuesBitForBit("lgreco --lgreco-every 3", expectFused);
}

// DGC under AdamW keeps each rank's AdamW moments (m, s) and accumulation
// (v) for each compressed matrix in place of AdamW's slots (which stay for
// the dense 1-D gradients), through its sparsity warm-up (epochs of 3 steps).
TEST(GptEndToEnd, ResumeWithDgcUnderAdamWContinuesBitForBit) {
  expectGptResumeContinuesBitForBit("dgc:0.01 --compress-epoch-steps 3", [](const Names &names) {
    EXPECT_GT(countEnding(names, ".codec.m"), 0);
    EXPECT_GT(countEnding(names, ".adam_m"), 0);
    for (const std::string &n : names) {
      if (!endsWith(n, ".codec.m"))
        continue;
      const std::string param = n.substr(0, n.size() - std::string(".codec.m").size());
      for (const char *slot : {".codec.v", ".codec.s", ".codec.step"})
        EXPECT_TRUE(names.count(param + slot)) << param << slot;
      for (const char *slot : {".adam_m", ".adam_v", ".adam_step"})
        EXPECT_FALSE(names.count(param + slot)) << param << slot << " outlived its AdamW";
    }
  });
}

// 2-bit top-k under AdamW: its residual and the AdamW moments it keeps.
TEST(GptEndToEnd, ResumeWithTopK2BitUnderAdamWContinuesBitForBit) {
  expectGptResumeContinuesBitForBit("topk2bit:0.05", [](const Names &names) {
    EXPECT_GT(countEnding(names, ".codec.residual"), 0);
    EXPECT_EQ(countEnding(names, ".codec.m"), countEnding(names, ".codec.residual"));
    EXPECT_EQ(countEnding(names, ".codec.s"), countEnding(names, ".codec.residual"));
  });
}

// What follows `"key":` on the one-line --bench-json report at `json` (empty
// where the key is not).
std::string benchField(const fs::path &json, const std::string &key) {
  std::ifstream in(json);
  std::string line;
  std::getline(in, line);
  const std::string quoted = "\"" + key + "\":";
  const size_t at = line.find(quoted);
  return at == std::string::npos ? "" : line.substr(at + quoted.size());
}

// Local SGD (--sync diloco:H) on 2 replicas of the MLP: a run with
// `args` for `steps` steps, checkpointed to `out`.
CommandResult trainLocalSgd(const std::string &sync, const std::string &args, int steps,
                            const fs::path &out) {
  std::ostringstream cmd;
  cmd << SBPFLOW_BIN_DIR << "/mlp_fashion_mnist --local 2 --batch 64 --max-steps " << steps
      << " --sync " << sync << " " << args << " --checkpoint " << out.string();
  return runCommand(cmd.str());
}

// Replica `r` of `replicas` of a per-replica variable's checkpoint tensor
// (stored [replicas, ...]).
std::vector<float> replicaRow(const std::vector<float> &stored, int replicas, int r) {
  const size_t n = stored.size() / static_cast<size_t>(replicas);
  return std::vector<float>(stored.begin() + static_cast<std::ptrdiff_t>(r * n),
                            stored.begin() + static_cast<std::ptrdiff_t>((r + 1) * n));
}

// DiLoCo with H = 1, outer lr 1 and no outer momentum averages the replicas'
// parameters after every step: with SGD (momentum included, which is linear)
// that is synchronous data parallelism, every replica equal to its result.
TEST(MlpEndToEnd, DilocoWithOneInnerStepEqualsDataParallelism) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir ddpDir("sbpflow_e2e"), dilocoDir("sbpflow_e2e");
  CommandResult a = trainLocalSgd("ddp", "", 20, ddpDir.path());
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b =
      trainLocalSgd("diloco:1", "--outer-lr 1 --outer-momentum 0", 20, dilocoDir.path());
  ASSERT_EQ(b.status, 0) << b.output;
  const auto ddp = loadCheckpoint<float>(ddpDir.path()),
             diloco = loadCheckpoint<float>(dilocoDir.path());
  int compared = 0;
  for (const std::string name : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}) {
    ASSERT_TRUE(ddp.count(name) && diloco.count(name)) << name;
    ASSERT_EQ(diloco.at(name).size(), 2 * ddp.at(name).size())
        << name << " is not stored once per replica";
    for (int r = 0; r < 2; ++r) {
      const std::map<std::string, std::vector<float>> one{{name, ddp.at(name)}},
          rep{{name, replicaRow(diloco.at(name), 2, r)}};
      EXPECT_LE(relativeDiffs(one, rep).at(name), 1e-5)
          << name << ": replica " << r << " of DiLoCo (H = 1) vs data parallelism";
    }
    const std::map<std::string, std::vector<float>> anchor{
        {name, diloco.at(name + ".outer_anchor")}},
        rep{{name, replicaRow(diloco.at(name), 2, 0)}};
    EXPECT_EQ(relativeDiffs(anchor, rep).at(name), 0.0) << name << ": the anchor after a round";
    ++compared;
  }
  EXPECT_EQ(compared, 4);
}

// H = 5: the replicas train alone within a round (after 22 steps they
// differ) and are equal once a round ends (after 20 steps).
TEST(MlpEndToEnd, DilocoReplicasDivergeWithinARoundAndAgreeAfterIt) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir roundDir("sbpflow_e2e"), midDir("sbpflow_e2e");
  CommandResult a = trainLocalSgd("diloco:5", "", 20, roundDir.path());
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainLocalSgd("diloco:5", "", 22, midDir.path());
  ASSERT_EQ(b.status, 0) << b.output;
  const auto atRound = loadCheckpoint<float>(roundDir.path()),
             mid = loadCheckpoint<float>(midDir.path());
  const std::string name = "fc1.weight";
  ASSERT_TRUE(atRound.count(name) && mid.count(name));
  EXPECT_EQ(replicaRow(atRound.at(name), 2, 0), replicaRow(atRound.at(name), 2, 1))
      << "the replicas differ right after an outer step";
  EXPECT_NE(replicaRow(mid.at(name), 2, 0), replicaRow(mid.at(name), 2, 1))
      << "the replicas did not train alone within a round";
  // The replicas' SGD momenta are their own all along.
  EXPECT_NE(replicaRow(atRound.at(name + ".momentum"), 2, 0),
            replicaRow(atRound.at(name + ".momentum"), 2, 1));
}

// 12 steps of `sync` (H = 5: a round in progress), saved, resumed for 8
// more equal one run of 20 steps bit for bit, every variable; returns how
// many of the whole run's variable names contain `part`.
int expectLocalSgdResumeIsBitForBit(const std::string &sync, const std::string &part) {
  TempDir firstDir("sbpflow_e2e"), resumedDir("sbpflow_e2e"), wholeDir("sbpflow_e2e");
  CommandResult a = trainLocalSgd(sync, "", 12, firstDir.path());
  EXPECT_EQ(a.status, 0) << a.output;
  CommandResult b = trainLocalSgd(sync, "--resume " + firstDir.path(), 8, resumedDir.path());
  EXPECT_EQ(b.status, 0) << b.output;
  CommandResult c = trainLocalSgd(sync, "", 20, wholeDir.path());
  EXPECT_EQ(c.status, 0) << c.output;
  const auto resumed = loadCheckpoint<uint32_t>(resumedDir.path()),
             whole = loadCheckpoint<uint32_t>(wholeDir.path());
  EXPECT_EQ(resumed.size(), whole.size());
  int named = 0;
  for (const auto &[name, words] : whole) {
    EXPECT_TRUE(resumed.count(name)) << name;
    if (resumed.count(name)) {
      EXPECT_EQ(resumed.at(name), words) << name << " differs after the resume";
    }
    named += name.find(part) != std::string::npos;
  }
  return named;
}

// DiLoCo: every replica's parameters and momenta, the anchors and the outer
// momenta.
TEST(MlpEndToEnd, ResumeWithDilocoContinuesBitForBit) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  EXPECT_EQ(expectLocalSgdResumeIsBitForBit("diloco:5", ".outer_"), 8)
      << "anchors and outer momenta of the 4 parameters";
}

// CO2 with staleness 0 joins its background exchange at once: DiLoCo with
// CO2's outer step, equal to DiLoCo without momentum (where Nesterov and
// heavy ball agree) to the bit.
TEST(MlpEndToEnd, Co2WithoutStalenessEqualsDiloco) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir dilocoDir("sbpflow_e2e"), co2Dir("sbpflow_e2e");
  const std::string outer = "--outer-lr 0.7 --outer-momentum 0";
  CommandResult a = trainLocalSgd("diloco:5", outer, 20, dilocoDir.path());
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainLocalSgd("co2:5", outer + " --co2-staleness 0", 20, co2Dir.path());
  ASSERT_EQ(b.status, 0) << b.output;
  const auto diloco = loadCheckpoint<uint32_t>(dilocoDir.path()),
             co2 = loadCheckpoint<uint32_t>(co2Dir.path());
  int compared = 0;
  for (const auto &[name, words] : diloco) {
    ASSERT_TRUE(co2.count(name)) << name << " is missing from CO2's checkpoint";
    EXPECT_EQ(co2.at(name), words) << name << ": CO2 (staleness 0) vs DiLoCo";
    ++compared;
  }
  EXPECT_EQ(compared, 12) << "4 parameters, their momenta and anchors";
}

// CO2 with staleness 1: round t's exchange runs during round t + 1 and is
// adopted at its end. After the first round nothing is adopted yet (the
// anchor is the initial weights, the replicas keep their progress) while
// the exchange has computed the next anchor from round 0; at the end of
// round 1 that is the anchor, and each replica's pseudo-gradient is taken
// against it.
TEST(MlpEndToEnd, Co2AdoptsEachRoundsExchangeOneRoundLate) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir firstDir("sbpflow_e2e"), secondDir("sbpflow_e2e"), initialDir("sbpflow_e2e");
  CommandResult a = trainLocalSgd("co2:5", "", 5, firstDir.path());
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainLocalSgd("co2:5", "", 10, secondDir.path());
  ASSERT_EQ(b.status, 0) << b.output;
  CommandResult c = trainLocalSgd("co2:5", "", 4, initialDir.path());
  ASSERT_EQ(c.status, 0) << c.output;
  const auto first = loadCheckpoint<float>(firstDir.path()),
             second = loadCheckpoint<float>(secondDir.path()),
             initial = loadCheckpoint<float>(initialDir.path());
  for (const std::string name : {"fc1.weight", "fc2.bias"}) {
    ASSERT_TRUE(first.count(name + ".outer_next")) << name;
    const std::vector<float> &anchor = first.at(name + ".outer_anchor");
    EXPECT_EQ(anchor, initial.at(name + ".outer_anchor"))
        << name << ": the anchor moved in the first round";
    EXPECT_NE(first.at(name + ".outer_next"), anchor)
        << name << ": round 0's exchange changed nothing";
    EXPECT_NE(replicaRow(first.at(name), 2, 0), replicaRow(first.at(name), 2, 1))
        << name << ": the replicas lost their progress at the first round's end";
    EXPECT_EQ(second.at(name + ".outer_anchor"), first.at(name + ".outer_next"))
        << name << ": the anchor after round 1 is not round 0's exchange";
    // Each replica's pseudo-gradient is taken against the adopted anchor.
    const std::vector<float> &adopted = second.at(name + ".outer_anchor");
    for (int r = 0; r < 2; ++r) {
      const std::vector<float> p = replicaRow(second.at(name), 2, r),
                               d = replicaRow(second.at(name + ".outer_delta"), 2, r);
      ASSERT_EQ(p.size(), adopted.size());
      for (size_t i = 0; i < p.size(); ++i)
        ASSERT_EQ(d[i], adopted[i] - p[i]) << name << " replica " << r << " element " << i;
    }
  }
}

// CO2 resumed mid-round (12 + 8 steps) equals 20 steps to the bit: the
// checkpoint waits for the background exchange, and carries the
// pseudo-gradients, next anchors and outer momenta.
TEST(MlpEndToEnd, ResumeWithCo2ContinuesBitForBit) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  EXPECT_EQ(expectLocalSgdResumeIsBitForBit("co2:5", ".outer_delta"), 4);
}

// SparseLoCo (H = 5) on 2 replicas: after 4 steps no round has ended (the
// anchors are the initial parameters); after 5, each anchor moved by the
// mean of the replicas' chunked top-k (32 of every 4096, 2-bit values), so
// in every chunk of fc1.weight at most 2 x 32 elements changed; the
// replicas continue from the anchor; each keeps what it did not send as its
// residual (the error feedback).
TEST(MlpEndToEnd, SparseLocoMovesTheAnchorByTheChunkedTopKOfEachReplica) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir beforeDir("sbpflow_e2e"), afterDir("sbpflow_e2e");
  CommandResult a = trainLocalSgd("sparseloco:5", "", 4, beforeDir.path());
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainLocalSgd("sparseloco:5", "", 5, afterDir.path());
  ASSERT_EQ(b.status, 0) << b.output;
  const auto before = loadCheckpoint<float>(beforeDir.path()),
             after = loadCheckpoint<float>(afterDir.path());
  const std::string name = "fc1.weight", anchor = name + ".outer_anchor";
  ASSERT_TRUE(before.count(anchor) && after.count(anchor) && after.count(name));
  const std::vector<float> &a0 = before.at(anchor), &a1 = after.at(anchor);
  ASSERT_EQ(a0.size(), 401408u);
  int64_t changed = 0, fullest = 0;
  for (size_t start = 0; start < a0.size(); start += 4096) {
    int64_t inChunk = 0;
    for (size_t i = start; i < std::min(a0.size(), start + 4096); ++i)
      inChunk += a0[i] != a1[i];
    fullest = std::max(fullest, inChunk);
    changed += inChunk;
  }
  EXPECT_LE(fullest, 64) << "a chunk of 4096 changed in more places than 2 replicas x 32 sent";
  EXPECT_GT(changed, 98 * 32) << "fewer changes than one replica's top-k";
  EXPECT_EQ(replicaRow(after.at(name), 2, 0), a1) << "replica 0 after the round";
  EXPECT_EQ(replicaRow(after.at(name), 2, 1), a1) << "replica 1 after the round";
  // Each replica's residual: its pseudo-gradient less what it sent, non-zero
  // and its own.
  const std::vector<float> &residual = after.at(name + ".codec.residual");
  ASSERT_EQ(residual.size(), 2 * a0.size());
  const std::vector<float> r0 = replicaRow(residual, 2, 0), r1 = replicaRow(residual, 2, 1);
  EXPECT_NE(r0, r1);
  EXPECT_GT(std::count_if(r0.begin(), r0.end(), [](float v) { return v != 0.0f; }), 300000);
}

// Its exchange is small: per round each rank sends the other its payload of
// every parameter (u16 offsets, 2-bit codes, a 5-float table), with 32 pairs
// per 4096 elements and at least one per chunk: fc1.weight 98 chunks (3136
// pairs), fc1.bias one of 512 (4), fc2.weight 4096 + 1024 (40), fc2.bias
// one of 10 (1). DiLoCo sends the dense 1628200 bytes a round.
TEST(MlpEndToEnd, SparseLocoSendsItsPayloadsOnceARound) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir tmp("sbpflow_e2e");
  auto payload = [](int64_t k) { return 2 * k + (k + 3) / 4 + 20; };
  const double round = static_cast<double>(payload(3136) + payload(4) + payload(40) + payload(1));
  const std::vector<double> sparse =
      sentBytesPerStep(2, 20, fs::path(tmp.path()) / "sparse.json", "--sync sparseloco:5");
  const std::vector<double> diloco =
      sentBytesPerStep(2, 20, fs::path(tmp.path()) / "diloco.json", "--sync diloco:5");
  ASSERT_EQ(sparse.size(), 2u);
  ASSERT_EQ(diloco.size(), 2u);
  for (int r = 0; r < 2; ++r) {
    EXPECT_DOUBLE_EQ(sparse[r], 4 * round / 20) << "rank " << r;
    EXPECT_DOUBLE_EQ(diloco[r], 4 * 1628200.0 / 20) << "rank " << r;
  }
}

// 12 steps of SparseLoCo (H = 5), resumed for 8 more, equal 20 steps to the
// bit: the residuals and codec step counters are checkpointed with the rest.
TEST(MlpEndToEnd, ResumeWithSparseLocoContinuesBitForBit) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  EXPECT_EQ(expectLocalSgdResumeIsBitForBit("sparseloco:5", ".codec.residual"), 4);
}

// EDiT: the resumed job's step 12 is not a round's first; its step 15 is,
// and synchronises with the anomaly detectors' rows restored.
TEST(MlpEndToEnd, ResumeWithEditContinuesBitForBit) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  EXPECT_EQ(expectLocalSgdResumeIsBitForBit("edit:5", ".codec.anomaly"), 4);
}

// EDiT synchronises each round at the start of the next round's first
// step, layer by layer inside its forward. With H = 1, equal weights (2
// replicas: 1/2, exact), outer lr 1 and no momentum, the anchor after 20
// steps is the replicas' average after 19, as DiLoCo (H = 1) has it after
// 19 steps, to the bit; the replicas have trained one more step since, each
// alone.
TEST(MlpEndToEnd, EditSynchronisesInTheNextForwardAsDilocoDidAfterTheStep) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir editDir("sbpflow_e2e"), dilocoDir("sbpflow_e2e");
  const std::string outer = "--outer-lr 1 --outer-momentum 0";
  CommandResult a = trainLocalSgd("edit:1", outer, 20, editDir.path());
  ASSERT_EQ(a.status, 0) << a.output;
  CommandResult b = trainLocalSgd("diloco:1", outer, 19, dilocoDir.path());
  ASSERT_EQ(b.status, 0) << b.output;
  const auto edit = loadCheckpoint<float>(editDir.path()),
             diloco = loadCheckpoint<float>(dilocoDir.path());
  for (const std::string name : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}) {
    const std::string anchor = name + ".outer_anchor";
    ASSERT_TRUE(edit.count(anchor) && diloco.count(anchor)) << anchor;
    EXPECT_EQ(edit.at(anchor), diloco.at(anchor)) << anchor << ": EDiT (20 steps) vs DiLoCo (19)";
    EXPECT_NE(replicaRow(edit.at(name), 2, 0), replicaRow(edit.at(name), 2, 1))
        << name << ": the replicas' last step is their own";
    EXPECT_EQ(edit.count(name + ".codec.anomaly"), 1u) << name;
  }
}

// A-EDiT's rounds are timed: with rounds longer than a chunk, each chunk is
// one round of every replica's share of its steps, and the next chunk opens
// with the synchronisation. Over 2 epochs of 10 steps (a batch of 60: 1000
// batches an epoch, so EDiT's rounds of 10 end with the chunks too) that is
// EDiT with H = 10, to the bit, every variable.
TEST(MlpEndToEnd, AEditWithRoundsLongerThanAChunkIsEditWithHTheChunk) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir aeditDir("sbpflow_e2e"), editDir("sbpflow_e2e");
  auto train = [](const std::string &sync, const fs::path &out) {
    return runCommand(std::string(SBPFLOW_BIN_DIR) +
                      "/mlp_fashion_mnist --local 2 --batch 60 --max-steps 10 --epochs 2 --sync " +
                      sync + " --checkpoint " + out.string());
  };
  CommandResult a = train("aedit:1000 --aedit-min-steps 1", aeditDir.path());
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_NE(a.output.find("epoch 2 timed rounds: steps per rank 10 10 (10 reached by every rank)"),
            std::string::npos)
      << a.output;
  CommandResult e = train("edit:10", editDir.path());
  ASSERT_EQ(e.status, 0) << e.output;
  // Every variable's bits, the step counters' too.
  const auto aedit = loadCheckpoint<uint32_t>(aeditDir.path()),
             edit = loadCheckpoint<uint32_t>(editDir.path());
  ASSERT_EQ(aedit.size(), edit.size());
  for (const auto &[name, values] : edit) {
    ASSERT_TRUE(aedit.count(name)) << name;
    EXPECT_EQ(aedit.at(name), values) << name;
  }
  const std::vector<uint32_t> &w = edit.at("fc1.weight");
  EXPECT_NE(std::vector<uint32_t>(w.begin(), w.begin() + w.size() / 2),
            std::vector<uint32_t>(w.begin() + w.size() / 2, w.end()))
      << "the replicas' steps since the synchronisation are their own";
}

// Under A-EDiT a replica slowed by 40 ms a step takes fewer steps in each
// round than the other (rounds of 0.3 s), the group's budget (2 x 40
// steps) is kept, and the rounds synchronise (each sync counts an exchange
// in the codec's step counter).
TEST(MlpEndToEnd, AEditLetsTheFasterReplicaTakeMoreSteps) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir tmp("sbpflow_e2e");
  const fs::path json = fs::path(tmp.path()) / "aedit.json";
  CommandResult r = trainLocalSgd("aedit:0.3",
                                  "--aedit-min-steps 1 --slow-rank 1 --slow-step-ms 40 "
                                  "--bench-json " +
                                      json.string(),
                                  40, fs::path(tmp.path()) / "ckpt");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string steps = benchField(json, "steps_per_rank");
  ASSERT_EQ(steps.rfind('[', 0), 0u) << steps;
  char *end = nullptr;
  const long fast = std::strtol(steps.c_str() + 1, &end, 10),
             slow = std::strtol(end + 1, nullptr, 10);
  EXPECT_EQ(fast + slow, 80) << steps;
  EXPECT_GT(fast, slow) << steps;
  const auto ckpt = loadCheckpoint<uint32_t>(fs::path(tmp.path()) / "ckpt");
  ASSERT_TRUE(ckpt.count("fc1.weight.codec.step"));
  EXPECT_GE(ckpt.at("fc1.weight.codec.step").at(0), 1u) << "no round synchronised";
}

// A-EDiT's checkpoint keeps every rank's next batch (the faster replica has
// read further); a resumed job starts each rank there and keeps counting
// from it, and a job without timed rounds refuses such a checkpoint.
TEST(MlpEndToEnd, AEditCheckpointsEveryRanksDataPosition) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir tmp("sbpflow_e2e");
  const fs::path first = fs::path(tmp.path()) / "first", resumed = fs::path(tmp.path()) / "resumed";
  const std::string slow = "--aedit-min-steps 1 --slow-rank 1 --slow-step-ms 40";
  CommandResult a = trainLocalSgd("aedit:0.3", slow, 30, first);
  ASSERT_EQ(a.status, 0) << a.output;
  auto reader = sbpflow::checkpoint::CheckpointReader::open(first.string());
  ASSERT_TRUE(reader) << reader.status().message();
  const sbpflow::checkpoint::DataPosition at = reader->next();
  EXPECT_EQ(at.epoch, 0);
  EXPECT_EQ(at.batch, 30);
  ASSERT_EQ(at.rankBatches.size(), 2u) << a.output;
  EXPECT_EQ(at.rankBatches[0] + at.rankBatches[1], 60);
  EXPECT_GT(at.rankBatches[0], at.rankBatches[1]) << a.output;

  CommandResult b = trainLocalSgd("aedit:0.3", slow + " --resume " + first.string(), 10, resumed);
  ASSERT_EQ(b.status, 0) << b.output;
  auto again = sbpflow::checkpoint::CheckpointReader::open(resumed.string());
  ASSERT_TRUE(again) << again.status().message();
  const sbpflow::checkpoint::DataPosition then = again->next();
  EXPECT_EQ(then.batch, 40);
  ASSERT_EQ(then.rankBatches.size(), 2u) << b.output;
  EXPECT_EQ(then.rankBatches[0] + then.rankBatches[1], 80) << b.output;
  for (int r = 0; r < 2; ++r)
    EXPECT_GT(then.rankBatches[r], at.rankBatches[r]) << "rank " << r << " restarted elsewhere";

  CommandResult c =
      trainLocalSgd("edit:5", "--resume " + first.string(), 10, fs::path(tmp.path()) / "edit");
  EXPECT_NE(c.status, 0);
  EXPECT_NE(c.output.find("the checkpoint gives 2 ranks their own data positions (timed rounds), "
                          "this job has 2 ranks and no timed rounds"),
            std::string::npos)
      << c.output;
}

// A-EDiT on a [replica, tp] mesh (the GPT, dp = 2 x tp = 2): a replica's
// two ranks run the same steps (they end each round together, whichever is
// due), the replica holding the slowed rank 2 fewer than the other, the
// budget (2 x 16 steps) kept; step weights on (AdamW counts the steps).
TEST(GptEndToEnd, AEditOnAReplicaAndTensorMeshEndsEachRoundTogether) {
  if (!fs::exists("/usr/share/games/fortunes"))
    GTEST_SKIP() << "fortunes not installed at /usr/share/games/fortunes";
  TempDir tmp("sbpflow_e2e");
  const fs::path json = fs::path(tmp.path()) / "aedit.json";
  CommandResult r = runCommand(std::string(SBPFLOW_BIN_DIR) +
                               "/gpt_char --dp 2 --tp 2 --n-layer 1 --batch 4 --steps 16 --sync "
                               "aedit:0.4 --aedit-min-steps 1 --aedit-step-weight 0.5 "
                               "--slow-rank 2 --slow-step-ms 120 --bench-json " +
                               json.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string steps = benchField(json, "steps_per_rank");
  ASSERT_EQ(steps.rfind('[', 0), 0u) << steps;
  long s[4] = {};
  const char *p = steps.c_str();
  for (long &v : s) {
    char *end = nullptr;
    v = std::strtol(p + 1, &end, 10);
    p = end;
  }
  EXPECT_EQ(s[0], s[1]) << steps;
  EXPECT_EQ(s[2], s[3]) << steps;
  EXPECT_EQ(s[0] + s[2], 32) << steps;
  EXPECT_GT(s[0], s[2]) << steps;
}

// The straggler harness: under synchronous data parallelism every step
// waits for rank 1, which sleeps 100 ms after each of its steps, so the
// job's mean step takes at least that (a lower bound the sleep guarantees,
// not a timing of the kernels). A straggler outside the job, or without a
// delay, is a clear error.
TEST(MlpEndToEnd, ASlowedRankSlowsEverySynchronousStep) {
  if (!fs::exists(kDataDir))
    GTEST_SKIP() << "Fashion-MNIST not installed at " << kDataDir;
  TempDir tmp("sbpflow_e2e");
  const fs::path json = fs::path(tmp.path()) / "slow.json";
  CommandResult r = runCommand(std::string(SBPFLOW_BIN_DIR) +
                               "/mlp_fashion_mnist --local 2 --max-steps 10 --slow-rank 1 "
                               "--slow-step-ms 100 --bench-json " +
                               json.string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string mean = benchField(json, "mean_step_ms");
  ASSERT_FALSE(mean.empty()) << r.output;
  EXPECT_GE(std::atof(mean.c_str()), 100.0) << mean;

  for (const char *flags : {"--slow-rank 2 --slow-step-ms 10", "--slow-rank 1"}) {
    CommandResult bad = runCommand(std::string(SBPFLOW_BIN_DIR) +
                                   "/mlp_fashion_mnist --local 2 --max-steps 1 " + flags);
    EXPECT_NE(bad.status, 0) << flags;
    EXPECT_NE(bad.output.find("a straggler needs both, its rank below 2"), std::string::npos)
        << bad.output;
  }
}

TEST(MlpEndToEnd, DilocoWithCompressionIsAClearError) {
  CommandResult r = runCommand(std::string(SBPFLOW_BIN_DIR) +
                               "/mlp_fashion_mnist --local 2 --max-steps 1 --sync diloco:5 "
                               "--compress topk:0.01");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("local SGD does not exchange"), std::string::npos) << r.output;
}

TEST(MlpEndToEnd, UnknownCompressionIsAClearError) {
  CommandResult r = runCommand(std::string(SBPFLOW_BIN_DIR) +
                               "/mlp_fashion_mnist --local 2 --max-steps 1 --compress zip");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("bad compression spec 'zip'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("unknown codec 'zip'"), std::string::npos) << r.output;
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
  TempDir tmp("sbpflow_e2e");
  const fs::path dir = tmp.path();
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
}
