// The actor executor on hand-built plans: a 1-rank training loop against a
// plain C++ reference, register counts > 1, a 2-rank data-parallel run and
// the boxing collectives against the 1-rank result, kernel errors, and the
// task trace (bounded, on compute and comm lanes, absent when off).
#include "actors/Executor.h"
#include "actors/Messages.h"
#include "actors/Variables.h"
#include "kernels/cpu/Kernels.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/comm/CommGroups.h"
#include "runtime/data/DataSource.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/TempDir.h"
#include "tests/actors/TestActorSystem.h"
#include "tests/plan/TestPlans.h"

#include <caf/all.hpp>
#include <gloo/rendezvous/hash_store.h>
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <thread>

using namespace sbpflow;
using namespace sbpflow::testplan;

namespace {

constexpr int64_t kBatch = 8, kIn = 3;

double sample(int64_t batch, int64_t row, int64_t col) {
  return std::sin(0.7 * batch + 1.3 * row + 0.4 * col + 0.1);
}

// Deterministic in-memory data: "x" f32 [kIn], "label" i32 [] = `label`,
// "a" f32 [5] (row r, col c = 10 r + c).
class MemoryData : public DataSource {
public:
  explicit MemoryData(int32_t label = 1) : label_(label) {
    fields_ = {
        {"x", FieldType::F32, {kIn}}, {"label", FieldType::I32, {}}, {"a", FieldType::F32, {5}}};
  }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1000; }
  Status fill(const std::string &field, int64_t, int64_t batch, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    for (int64_t r = 0; r < rowCount; ++r) {
      if (field == "x")
        for (int64_t c = 0; c < kIn; ++c)
          static_cast<float *>(dst)[r * kIn + c] =
              static_cast<float>(sample(batch, rowBegin + r, c));
      else if (field == "label")
        static_cast<int32_t *>(dst)[r] = label_;
      else
        for (int64_t c = 0; c < 5; ++c)
          static_cast<float *>(dst)[r * 5 + c] = static_cast<float>(10 * (rowBegin + r) + c);
    }
    return Status::ok();
  }

private:
  std::vector<FieldInfo> fields_;
  int32_t label_;
};

using test::ActorSystem;
using test::TwoPhaseSave;

// The plan built from `spec`, loaded into `loaded`. Call it under
// ASSERT_NO_FATAL_FAILURE: it fails the test where the plan does not load.
void loadSpec(const PlanSpec &spec, std::optional<LoadedPlan> &loaded) {
  auto plan = loadPlanBuffer(build(spec));
  ASSERT_TRUE(plan) << plan.status().message();
  loaded = *plan;
}

// The single-rank tests' setup: the plan built from a spec, loaded, and rank
// 0's executor for it on an actor system of its own. Call start under
// ASSERT_NO_FATAL_FAILURE: it fails the test where the plan does not load or
// the executor is refused.
struct OneRank {
  ActorSystem sys;
  std::optional<LoadedPlan> loaded;
  std::unique_ptr<Executor> exec;

  void start(const PlanSpec &spec, const ExecutorOptions &options = {}) {
    ASSERT_NO_FATAL_FAILURE(loadSpec(spec, loaded));
    auto created = Executor::create(sys.system, loaded->plan(), nullptr, options);
    ASSERT_TRUE(created) << created.status().message();
    exec = std::move(*created);
  }
};

// loss = mean(x w); w trained by SGD with momentum and weight decay. With
// `ranks` = 2 the batch is split S(0) and the gradient all-reduced.
PlanSpec linearPlan(int ranks, int count = 1) {
  PlanSpec spec;
  spec.placements = {{"cpu", ranks == 1 ? std::vector<int>{0} : std::vector<int>{0, 1}, {ranks}}};
  spec.variables = {{"w", {kIn, 1}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 5},
                    {"w.velocity", {kIn, 1}, 0, {B()}}};
  Sbp rows = ranks == 1 ? B() : S(0);
  Sbp part = ranks == 1 ? B() : P();
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kBatch, kIn}, {rows}},                // 0
      {"w", {kIn, 1}, {B()}, plan::DType::F32, 0}, // 1
      {"y", {kBatch, 1}, {rows}},                  // 2
      {"loss.partial", {}, {part}},                // 3
      {"one", {}, {B()}},                          // 4
      {"dy", {kBatch, 1}, {rows}},                 // 5
      {"dw.partial", {kIn, 1}, {part}},            // 6
      {"dw", {kIn, 1}, {B()}},                     // 7
      {"loss", {}, {B()}},                         // 8
  };
  TaskSpec input = inputTask("input.x", 0, "x");
  TaskSpec param{"w", plan::OpKind::Parameter, {}, {1}};
  TaskSpec mm{"fc.matmul", plan::OpKind::MatMul, {0, 1}, {2}};
  TaskSpec mean = meanTask("loss.mean", plan::OpKind::Mean, 2, 3, kBatch);
  TaskSpec one = fillTask("loss.seed", 4, 1);
  TaskSpec meanGrad = meanTask("loss.mean.grad", plan::OpKind::MeanGrad, 4, 5, kBatch);
  TaskSpec mmGrad{"fc.matmul.grad", plan::OpKind::MatMul, {0, 5}, {6}, plan::OpAttrs::MatMulAttrs};
  mmGrad.transA = true;
  TaskSpec arW{"dw.allreduce", plan::OpKind::AllReduce, {6}, {7}, plan::OpAttrs::CollectiveAttrs};
  TaskSpec arLoss{
      "loss.allreduce", plan::OpKind::AllReduce, {3}, {8}, plan::OpAttrs::CollectiveAttrs};
  TaskSpec sgd{"sgd.w", plan::OpKind::SgdMomentum, {7}, {}, plan::OpAttrs::SgdAttrs};
  sgd.lr = 0.1f;
  sgd.momentum = 0.9f;
  sgd.weightDecay = 0.01f;
  sgd.param = 0;
  sgd.momentumBuffer = 1;
  prog.tasks = {input, param, mm, mean, one, meanGrad, mmGrad, arW, arLoss, sgd};
  prog.inputs = {{"x", 0}};
  prog.metrics = {{"loss", 8}};
  spec.programs.push_back(prog);
  finalize(spec, count);
  // The update must not start before the forward pass has read w: a
  // control edge from the matmul to sgd.
  spec.programs[0].registers.push_back({2, -1, {9}, count});
  return spec;
}

// The same model as a plain loop in double precision, on batches first, ...
void referenceLinear(int steps, std::vector<double> &w, std::vector<double> &losses,
                     int first = 0) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(plan::CreateInit(fbb, plan::InitKind::Uniform, -1, 1, 5));
  std::vector<float> init =
      initGlobalTensor(*flatbuffers::GetRoot<plan::Init>(fbb.GetBufferPointer()), kIn);
  w.assign(init.begin(), init.end());
  std::vector<double> v(kIn, 0.0);
  for (int s = first; s < first + steps; ++s) {
    double loss = 0;
    std::vector<double> g(kIn, 0.0);
    for (int64_t i = 0; i < kBatch; ++i) {
      double y = 0;
      for (int64_t j = 0; j < kIn; ++j)
        y += sample(s, i, j) * w[j];
      loss += y / kBatch;
      for (int64_t j = 0; j < kIn; ++j)
        g[j] += sample(s, i, j) / kBatch;
    }
    losses.push_back(loss);
    for (int64_t j = 0; j < kIn; ++j) {
      double gj = g[j] + 0.01 * w[j];
      v[j] = 0.9 * v[j] + gj;
      w[j] -= 0.1 * v[j];
    }
  }
}

// Expects the losses of `losses.size() == count` steps within 1e-5 of the
// reference's; `losses[i]` is step `first + i`, and a mismatch is reported
// as `label` followed by the step.
void expectLossesNear(const std::vector<double> &losses, const std::vector<double> &ref,
                      size_t count, const std::string &label, int first = 0) {
  ASSERT_EQ(losses.size(), count);
  for (int i = 0; i < static_cast<int>(count); ++i)
    EXPECT_NEAR(losses[i], ref[first + i], 1e-5) << label << first + i;
}

// Expects the checkpoint in `dir` to hold w [3, 1] of the values `w`; `meta`
// (optional) receives how it was saved.
void expectCheckpointedW(const std::string &dir, const std::vector<double> &w,
                         checkpoint::TensorMeta *meta = nullptr) {
  std::vector<float> got = test::readCheckpointed(dir, "w", meta);
  ASSERT_EQ(got.size(), 3u);
  for (int j = 0; j < kIn; ++j)
    EXPECT_NEAR(got[j], w[j], 1e-5) << "w[" << j << "]";
}

void runLinearOneRank(int count) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1, count)));
  Executor &exec = *solo.exec;
  MemoryData data;
  std::vector<double> losses;
  std::vector<int64_t> batches;
  Status s = exec.run("train", &data, 0, 0, 5, [&](int64_t b, const std::vector<double> &m) {
    batches.push_back(b);
    losses.push_back(m.at(0));
  });
  ASSERT_TRUE(s) << s.message();
  std::vector<double> w, refLosses;
  referenceLinear(5, w, refLosses);
  EXPECT_EQ(batches, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  ASSERT_NO_FATAL_FAILURE(expectLossesNear(losses, refLosses, 5, "step "));
  test::TempDir tmp("sbpflow_actors");
  std::string dir = tmp.path() + "/linear";
  Status saved = exec.saveCheckpoint(dir);
  ASSERT_TRUE(saved) << saved.message();
  checkpoint::TensorMeta meta;
  ASSERT_NO_FATAL_FAILURE(expectCheckpointedW(dir, w, &meta));
  EXPECT_EQ(meta.shape, Shape({3, 1}));
  EXPECT_EQ(toString(meta.sbp), "[B]");
  EXPECT_EQ(meta.hierarchy, std::vector<int64_t>({1}));
  EXPECT_EQ(test::readCheckpointed(dir, "w.velocity").size(), 3u);
}

TEST(Executor, LinearOneRankMatchesReference) { runLinearOneRank(1); }

TEST(Executor, RegisterCountTwoMatchesReference) { runLinearOneRank(2); }

// Trains `exec`, an executor of linearPlan(1), in two runs (2 steps, then
// `more`) and expects the losses of both to be the reference's: the second
// run goes on from the first. A mismatch is reported as `label` and the step.
void expectTwoRunsMatchReference(Executor &exec, int more, const std::string &label) {
  MemoryData data;
  std::vector<double> losses;
  auto cb = [&](int64_t, const std::vector<double> &m) { losses.push_back(m[0]); };
  ASSERT_TRUE(exec.run("train", &data, 0, 0, 2, cb));
  ASSERT_TRUE(exec.run("train", &data, 0, 2, more, cb));
  std::vector<double> w, ref;
  referenceLinear(2 + more, w, ref);
  ASSERT_NO_FATAL_FAILURE(expectLossesNear(losses, ref, 2 + more, label));
}

TEST(Executor, SecondRunContinuesTraining) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1)));
  Executor &exec = *solo.exec;
  ASSERT_NO_FATAL_FAILURE(expectTwoRunsMatchReference(exec, 2, ""));
  MemoryData data;
  Status missing = exec.run("eval", &data, 0, 0, 1, nullptr);
  EXPECT_NE(missing.message().find("plan has no program 'eval'"), std::string::npos);
}

TEST(Executor, LongRunReportsEveryStepInOrder) {
  // More steps than the coordinator may run ahead of onStep: the metric ring
  // wraps and the caller's acknowledgements let the run go on.
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1)));
  Executor &exec = *solo.exec;
  MemoryData data;
  std::vector<double> losses;
  std::vector<int64_t> batches;
  Status s = exec.run("train", &data, 0, 100, 45, [&](int64_t b, const std::vector<double> &m) {
    if (batches.size() % 7 == 0) // a slow caller now and then
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    batches.push_back(b);
    losses.push_back(m.at(0));
  });
  ASSERT_TRUE(s) << s.message();
  ASSERT_EQ(batches.size(), 45u);
  for (int i = 0; i < 45; ++i)
    EXPECT_EQ(batches[i], 100 + i);
  std::vector<double> w, expected;
  referenceLinear(45, w, expected, 100);
  for (int i = 0; i < 45; ++i)
    EXPECT_NEAR(losses[i], expected[i], 1e-5) << "step " << i;
}

TEST(Executor, ThrowingStepCallbackStopsTheRun) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1)));
  Executor &exec = *solo.exec;
  MemoryData data;
  int calls = 0;
  EXPECT_THROW((void)exec.run("train", &data, 0, 0, 30,
                              [&](int64_t, const std::vector<double> &) {
                                if (++calls == 3)
                                  throw std::runtime_error("callback failed");
                              }),
               std::runtime_error);
  EXPECT_EQ(calls, 3);
  // Later steps were stopped before run() unwound; the executor refuses more.
  Status after = exec.run("train", &data, 0, 0, 1, nullptr);
  EXPECT_NE(after.message().find("a step callback threw"), std::string::npos) << after.message();
}

// The two-rank tests' setup: the plan built from a spec and loaded, and an
// actor system for the ranks' executors. Call load under
// ASSERT_NO_FATAL_FAILURE: it fails the test where the plan does not load.
struct TwoRanks {
  ActorSystem sys;
  std::optional<LoadedPlan> loaded;
  ExecutorOptions options;

  void load(const PlanSpec &spec, const ExecutorOptions &executorOptions = {}) {
    options = executorOptions;
    ASSERT_NO_FATAL_FAILURE(loadSpec(spec, loaded));
  }

  // Runs `body` on an executor per rank, two ranks as threads over one Gloo
  // HashStore; expects no rank to fail (connecting, creating, or in `body`).
  // With `errorsOut`, each rank's error (empty: none) goes there instead.
  void run(const std::function<Status(int, Executor &)> &body,
           std::vector<std::string> *errorsOut = nullptr) {
    std::vector<std::string> errors = test::runRanks(sys.system, loaded->plan(), 2, body, options);
    if (errorsOut) {
      *errorsOut = errors;
      return;
    }
    EXPECT_EQ(errors[0], "");
    EXPECT_EQ(errors[1], "");
  }
};

// Trains linearPlan(2) on two ranks, steps first..first + steps - 1 (after
// `before`, where given, on each rank), saves a checkpoint into `dir`, and
// expects each rank's losses to be the one-rank reference's. `w` receives
// the reference's w after those steps.
void trainLinearOnTwoRanks(int first, int steps, const std::string &dir, std::vector<double> &w,
                           const std::function<Status(Executor &)> &before = nullptr) {
  TwoRanks ranks;
  ASSERT_NO_FATAL_FAILURE(ranks.load(linearPlan(2)));
  std::vector<std::vector<double>> losses(2);
  TwoPhaseSave save(2, dir);
  ranks.run([&](int r, Executor &exec) {
    if (before)
      if (Status s = before(exec); !s)
        return s;
    MemoryData data;
    Status s = exec.run("train", &data, 0, first, steps,
                        [&](int64_t, const std::vector<double> &m) { losses[r].push_back(m[0]); });
    return s ? save.save(r, exec) : s;
  });
  if (::testing::Test::HasFailure())
    return;
  std::vector<double> ref;
  referenceLinear(first + steps, w, ref);
  for (int r = 0; r < 2; ++r) {
    ASSERT_NO_FATAL_FAILURE(
        expectLossesNear(losses[r], ref, steps, "rank " + std::to_string(r) + " step ", first));
  }
}

TEST(Executor, TwoRankDataParallelMatchesOneRank) {
  test::TempDir tmp("sbpflow_actors");
  std::string dir = tmp.path() + "/dp";
  std::vector<double> w;
  trainLinearOnTwoRanks(0, 4, dir, w);
  if (HasFailure())
    return;
  // w is B on both ranks: stored once, by rank 0.
  ASSERT_NO_FATAL_FAILURE(expectCheckpointedW(dir, w));
  int shardFiles = 0;
  for (const auto &entry : std::filesystem::directory_iterator(dir))
    shardFiles += entry.path().extension() == ".shard";
  EXPECT_EQ(shardFiles, 2); // w and w.velocity
}

// Trained 2 steps on one rank, saved, loaded on two ranks (w and its
// momentum; without the load they would restart from the initial values) and
// trained 2 more steps: the 4-step reference.
TEST(Executor, ResumesFromACheckpointOnAnotherLayout) {
  test::TempDir tmp("sbpflow_actors");
  std::string dir = tmp.path() + "/resume";
  {
    OneRank solo;
    ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1)));
    Executor &exec = *solo.exec;
    MemoryData data;
    ASSERT_TRUE(exec.run("train", &data, 0, 0, 2, nullptr));
    Status s = exec.saveCheckpoint(dir);
    ASSERT_TRUE(s) << s.message();
  }
  std::string after = tmp.path() + "/resume_after";
  std::vector<double> w;
  trainLinearOnTwoRanks(2, 2, after, w, [&](Executor &exec) { return exec.loadCheckpoint(dir); });
  if (HasFailure())
    return;
  expectCheckpointedW(after, w);
}

// A plan runs on the devices its placements name: the CPU executor refuses
// a plan compiled for GPUs before building anything.
TEST(Executor, RefusesAPlanForAnotherDevice) {
  PlanSpec spec = linearPlan(1);
  spec.placements[0].device = plan::DeviceKind::CUDA;
  auto loaded = loadPlanBuffer(build(spec));
  ASSERT_TRUE(loaded) << loaded.status().message();
  ActorSystem sys;
  auto exec = Executor::create(sys.system, loaded->plan(), nullptr, ExecutorOptions{});
  ASSERT_FALSE(exec);
  EXPECT_NE(exec.status().message().find("rank 0: placement '" + spec.placements[0].name +
                                         "' of the plan is on CUDA devices, but this rank runs "
                                         "on a CPU device"),
            std::string::npos)
      << exec.status().message();
}

// w [6, 5], S(0) on two ranks, plus w + a each step (SGD with lr -1 on the
// input "a" of MemoryData, row r = 10 r + c): after k steps w = k (10 r + c),
// each rank holding (and saving) three rows.
PlanSpec accumulatePlan() {
  PlanSpec spec;
  spec.placements = {{"cpu", {0, 1}, {2}}};
  spec.variables = {{"w", {6, 5}, 0, {S(0)}}};
  ProgramSpec prog;
  prog.tensors = {{"a", {6, 5}, {S(0)}}};
  TaskSpec input = inputTask("input.a", 0, "a");
  TaskSpec add{"add", plan::OpKind::SgdMomentum, {0}, {}, plan::OpAttrs::SgdAttrs};
  add.lr = -1;
  add.param = 0;
  prog.tasks = {input, add};
  prog.inputs = {{"a", 0}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

std::vector<float> accumulated(int steps) {
  std::vector<float> w(30);
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 5; ++c)
      w[r * 5 + c] = static_cast<float>(steps * (10 * r + c));
  return w;
}

// A save into an existing checkpoint that fails on one rank (its shard cannot
// be written) leaves the previous checkpoint whole: no index and no shard of
// the failed save in it, every value as the previous save wrote it.
TEST(Executor, FailedSaveLeavesThePreviousCheckpointWhole) {
  TwoRanks ranks;
  ASSERT_NO_FATAL_FAILURE(ranks.load(accumulatePlan()));
  test::TempDir tmp("sbpflow_actors");
  const std::string dir = tmp.path() + "/ck";
  TwoPhaseSave first(2, dir);
  const uint64_t failing = checkpoint::newGeneration();
  TwoPhaseSave second(2, dir, failing);
  // Rank 1's shard cannot be created in the failing save's staging directory.
  const std::string blocked = checkpoint::stagingDir(dir, failing) + "/" +
                              checkpoint::shardFileName("w", {Chunk{3, 3}, Chunk{0, 5}}) + ".tmp";
  std::filesystem::create_directories(blocked);
  std::vector<std::string> errors;
  ranks.run(
      [&](int r, Executor &exec) {
        MemoryData data;
        Status s = exec.run("train", &data, 0, 0, 2, nullptr);
        if (s)
          s = first.save(r, exec, {0, 2});
        if (s)
          s = exec.run("train", &data, 0, 2, 1, nullptr);
        return s ? second.save(r, exec, {0, 3}) : s;
      },
      &errors);
  EXPECT_EQ(errors[0], "");
  EXPECT_NE(errors[1].find("rank 1"), std::string::npos) << errors[1];
  EXPECT_NE(errors[1].find(blocked), std::string::npos) << errors[1];
  EXPECT_EQ(test::readCheckpointed(dir, "w"), accumulated(2));
  auto reader = checkpoint::CheckpointReader::open(dir);
  ASSERT_TRUE(reader) << reader.status().message();
  EXPECT_TRUE(reader->checkComplete());
  EXPECT_EQ(reader->next(), (checkpoint::DataPosition{0, 2}));
  EXPECT_NE(reader->generation(), failing);
  // Two ranks resume it.
  TwoPhaseSave again(2, dir);
  ranks.run([&](int r, Executor &exec) {
    checkpoint::DataPosition next;
    if (Status s = exec.loadCheckpoint(dir, &next); !s)
      return s;
    MemoryData data;
    Status s = exec.run("train", &data, 0, next.batch, 1, nullptr);
    return s ? again.save(r, exec) : s;
  });
  EXPECT_EQ(test::readCheckpointed(dir, "w"), accumulated(3));
}

// A checkpoint with a shard missing, or with a shard of another save, is
// refused by every rank that loads it (missing) or that reads that shard
// (another save), naming the file.
TEST(Executor, LoadRefusesMissingShardsAndShardsOfAnotherSave) {
  TwoRanks ranks;
  ASSERT_NO_FATAL_FAILURE(ranks.load(accumulatePlan()));
  test::TempDir tmp("sbpflow_actors");
  const std::string a = tmp.path() + "/a", b = tmp.path() + "/b";
  TwoPhaseSave saveA(2, a), saveB(2, b);
  ranks.run([&](int r, Executor &exec) {
    MemoryData data;
    Status s = exec.run("train", &data, 0, 0, 1, nullptr);
    if (s)
      s = saveA.save(r, exec);
    if (s)
      s = exec.run("train", &data, 0, 1, 1, nullptr);
    return s ? saveB.save(r, exec) : s;
  });
  const std::string shard1 = checkpoint::shardFileName("w", {Chunk{3, 3}, Chunk{0, 5}});
  auto loadOnTwoRanks = [&](const std::string &dir) {
    std::vector<std::string> errors;
    ranks.run([&](int, Executor &exec) { return exec.loadCheckpoint(dir); }, &errors);
    return errors;
  };
  EXPECT_EQ(loadOnTwoRanks(a), std::vector<std::string>({"", ""}));
  // b's second shard in a: same name, size and layout, another save.
  std::filesystem::copy_file(b + "/" + shard1, a + "/" + shard1,
                             std::filesystem::copy_options::overwrite_existing);
  std::vector<std::string> errors = loadOnTwoRanks(a);
  EXPECT_EQ(errors[0], ""); // rank 0 reads rows 0..2 only
  EXPECT_NE(errors[1].find(a + "/" + shard1), std::string::npos) << errors[1];
  EXPECT_NE(errors[1].find("a shard of another save"), std::string::npos) << errors[1];
  std::filesystem::remove(a + "/" + shard1);
  errors = loadOnTwoRanks(a);
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[r].find("rank " + std::to_string(r)), std::string::npos) << errors[r];
    EXPECT_NE(errors[r].find(a + "/" + shard1), std::string::npos) << errors[r];
    EXPECT_NE(errors[r].find("is missing"), std::string::npos) << errors[r];
  }
}

// An i32 variable is held, saved and loaded as i32 (the checkpoint's dtype),
// starting from its Constant.
TEST(Executor, I32VariablesRoundTripThroughACheckpoint) {
  PlanSpec spec = accumulatePlan();
  VariableSpec count{"count", {3}, 0, {S(0)}, plan::InitKind::Constant, 7};
  count.dtype = plan::DType::I32;
  spec.variables.push_back(count);
  TwoRanks ranks;
  ASSERT_NO_FATAL_FAILURE(ranks.load(spec));
  test::TempDir tmp("sbpflow_actors");
  const std::string dir = tmp.path() + "/i32";
  TwoPhaseSave save(2, dir);
  ranks.run([&](int r, Executor &exec) { return save.save(r, exec); });
  auto reader = checkpoint::CheckpointReader::open(dir);
  ASSERT_TRUE(reader) << reader.status().message();
  std::vector<int32_t> got(3);
  Status s = reader->read("count", {3}, checkpoint::DType::I32, {Chunk{0, 3}}, got.data());
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(got, std::vector<int32_t>({7, 7, 7}));
  // Loaded back on one rank of another plan, where it must be i32 too.
  PlanSpec one = spec;
  one.placements = {{"cpu", {0}, {1}}};
  one.programs.clear();
  auto single = loadPlanBuffer(build(one));
  ASSERT_TRUE(single) << single.status().message();
  auto exec = Executor::create(ranks.sys.system, single->plan(), nullptr, ExecutorOptions{});
  ASSERT_TRUE(exec) << exec.status().message();
  ASSERT_TRUE((*exec)->loadCheckpoint(dir));
  one.variables[1].dtype = plan::DType::F32;
  auto f32 = loadPlanBuffer(build(one));
  ASSERT_TRUE(f32) << f32.status().message();
  auto other = Executor::create(ranks.sys.system, f32->plan(), nullptr, ExecutorOptions{});
  ASSERT_TRUE(other) << other.status().message();
  s = (*other)->loadCheckpoint(dir);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("holds variable 'count' as i32 [3], the plan has f32 [3]"),
            std::string::npos)
      << s.message();
}

// AdamW on w [kBatch, kIn] with the batch of MemoryData's "x" as its
// gradient; its step counter "w.step" is an i32 scalar.
PlanSpec adamPlan() {
  PlanSpec spec;
  spec.variables = {{"w", {kBatch, kIn}},
                    {"w.m", {kBatch, kIn}},
                    {"w.v", {kBatch, kIn}},
                    {"w.step", {}, 0, {B()}, plan::InitKind::Zeros, 0, 0, 0, plan::DType::I32}};
  ProgramSpec prog;
  prog.tensors = {{"x", {kBatch, kIn}}};
  TaskSpec input = inputTask("input.x", 0, "x");
  TaskSpec adam{"adamw.w", plan::OpKind::AdamW, {0}, {}, plan::OpAttrs::AdamWAttrs};
  adam.lr = 0.01f;
  adam.param = 0;
  adam.m = 1;
  adam.v = 2;
  adam.step = 3;
  prog.tasks = {input, adam};
  prog.inputs = {{"x", 0}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

// adamPlan's variables, zero but for the step counter, as a checkpoint.
void writeAdamCheckpoint(const std::string &dir, int32_t step) {
  const SbpDim broadcast{SbpKind::Broadcast, 0};
  std::vector<checkpoint::TensorMeta> metas;
  for (const char *name : {"w", "w.m", "w.v"})
    metas.push_back({name, checkpoint::DType::F32, {kBatch, kIn}, {broadcast}, {1}});
  metas.push_back({"w.step", checkpoint::DType::I32, {}, {broadcast}, {1}});
  std::vector<checkpoint::ShardRecord> records;
  const std::vector<float> zeros(kBatch * kIn, 0.f);
  for (const auto &m : metas) {
    auto record = checkpoint::writeShard(dir, m, wholeRegion(m.shape),
                                         m.shape.empty() ? static_cast<const void *>(&step)
                                                         : static_cast<const void *>(zeros.data()),
                                         7);
    ASSERT_TRUE(record) << record.status().message();
    records.push_back(*record);
  }
  ASSERT_TRUE(checkpoint::writeIndex(dir, metas, {}, 7, records));
}

// An f32 counter stops at 2^24 (2^24 + 1 rounds back to 2^24): the i32 one
// counts on, and AdamW's bias correction sees the count.
TEST(Executor, AdamWStepCounterCountsPast2To24) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(adamPlan()));
  Executor &exec = *solo.exec;
  test::TempDir tmp("sbpflow_actors");
  writeAdamCheckpoint(tmp.path() + "/at", 1 << 24);
  ASSERT_TRUE(exec.loadCheckpoint(tmp.path() + "/at"));
  MemoryData data;
  Status s = exec.run("train", &data, 0, 0, 1, nullptr);
  ASSERT_TRUE(s) << s.message();
  ASSERT_TRUE(exec.saveCheckpoint(tmp.path() + "/after"));
  auto reader = checkpoint::CheckpointReader::open(tmp.path() + "/after");
  ASSERT_TRUE(reader) << reader.status().message();
  int32_t step = 0;
  s = reader->read("w.step", {}, checkpoint::DType::I32, {}, &step);
  ASSERT_TRUE(s) << s.message();
  EXPECT_EQ(step, (1 << 24) + 1);
  // From zero moments m = (1 - b1) g, v = (1 - b2) g^2, and at a step this
  // large the bias corrections are 1: the update is lr m / (sqrt(v) + eps),
  // about 3.16 lr (at step 1 it would be about lr).
  std::vector<float> w = test::readCheckpointed(tmp.path() + "/after", "w");
  ASSERT_EQ(w.size(), static_cast<size_t>(kBatch * kIn));
  for (int64_t i = 0; i < kBatch; ++i)
    for (int64_t j = 0; j < kIn; ++j) {
      const double g = sample(0, i, j);
      const double want = -0.01 * (0.1 * g) / (std::sqrt(0.001 * g * g) + 1e-5);
      EXPECT_NEAR(w[i * kIn + j], want, 1e-6) << i << "," << j;
    }
}

TEST(Executor, AdamWStepCounterRefusesToOverflow) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(adamPlan()));
  Executor &exec = *solo.exec;
  test::TempDir tmp("sbpflow_actors");
  writeAdamCheckpoint(tmp.path() + "/max", std::numeric_limits<int32_t>::max() - 1);
  ASSERT_TRUE(exec.loadCheckpoint(tmp.path() + "/max"));
  MemoryData data;
  ASSERT_TRUE(exec.run("train", &data, 0, 0, 1, nullptr));
  Status s = exec.run("train", &data, 0, 1, 1, nullptr);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("rank 0: task 'adamw.w' (AdamW): step counter 'w.step' is at "
                             "INT32_MAX (2147483647)"),
            std::string::npos)
      << s.message();
}

TEST(Executor, LoadCheckpointRefusesMissingOrMismatchedVariables) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1)));
  Executor &exec = *solo.exec;
  auto save = [](const std::string &dir, const std::vector<checkpoint::TensorMeta> &metas) {
    std::vector<checkpoint::ShardRecord> records;
    for (const auto &m : metas) {
      std::vector<float> zeros(static_cast<size_t>(elementCount(m.shape)));
      const Region whole = wholeRegion(m.shape);
      auto record = checkpoint::writeShard(dir, m, whole, zeros.data(), 1);
      ASSERT_TRUE(record);
      records.push_back(*record);
    }
    ASSERT_TRUE(checkpoint::writeIndex(dir, metas, {}, 1, records));
  };
  const SbpDim broadcast{SbpKind::Broadcast, 0};
  checkpoint::TensorMeta w{"w", checkpoint::DType::F32, {4, 1}, {broadcast}, {1}};
  checkpoint::TensorMeta velocity{"w.velocity", checkpoint::DType::F32, {3, 1}, {broadcast}, {1}};
  test::TempDir tmp("sbpflow_actors");
  std::string wrongShape = tmp.path() + "/wrong_shape";
  save(wrongShape, {w, velocity});
  Status s = exec.loadCheckpoint(wrongShape);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("rank 0: checkpoint '" + wrongShape +
                             "' holds variable 'w' as f32 [4,1], the plan has f32 [3,1]"),
            std::string::npos)
      << s.message();
  std::string missing = tmp.path() + "/missing_var";
  save(missing, {velocity});
  s = exec.loadCheckpoint(missing);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("has no variable 'w'"), std::string::npos) << s.message();
  s = exec.loadCheckpoint(missing + "/nope");
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find(missing + "/nope"), std::string::npos) << s.message();
}

// a [3,5] (B) -> Slice S(1) -> AllToAll S(0) -> AllGather B: must equal a.
// a -> ZeroOthers P -> ReduceScatter S(1) -> AllGather B: must equal a.
// Both results are added into variables (SGD with lr -1) for inspection.
// `reversed`: the placement lists ranks {1, 0}, so global rank 1 is
// coordinate 0 (the one that stores B variables in a checkpoint).
PlanSpec boxingPlan(int ranks, bool reversed = false) {
  PlanSpec spec;
  spec.placements = {{"cpu",
                      ranks == 1 ? std::vector<int>{0}
                                 : (reversed ? std::vector<int>{1, 0} : std::vector<int>{0, 1}),
                      {ranks}}};
  spec.variables = {{"out1", {3, 5}, 0, {B()}}, {"out2", {3, 5}, 0, {B()}}};
  ProgramSpec prog;
  prog.tensors = {{"a", {3, 5}, {B()}},   {"a.s1", {3, 5}, {S(1)}}, {"a.s0", {3, 5}, {S(0)}},
                  {"a.b", {3, 5}, {B()}}, {"a.p", {3, 5}, {P()}},   {"a.rs", {3, 5}, {S(1)}},
                  {"a.b2", {3, 5}, {B()}}};
  TaskSpec input = inputTask("input.a", 0, "a");
  TaskSpec slice{"slice", plan::OpKind::Slice, {0}, {1}};
  TaskSpec a2a{"alltoall", plan::OpKind::AllToAll, {1}, {2}, plan::OpAttrs::CollectiveAttrs};
  TaskSpec ag{"allgather", plan::OpKind::AllGather, {2}, {3}, plan::OpAttrs::CollectiveAttrs};
  TaskSpec zero{"zero_others", plan::OpKind::ZeroOthers, {0}, {4}};
  TaskSpec rs{
      "reduce_scatter", plan::OpKind::ReduceScatter, {4}, {5}, plan::OpAttrs::CollectiveAttrs};
  TaskSpec ag2{"allgather2", plan::OpKind::AllGather, {5}, {6}, plan::OpAttrs::CollectiveAttrs};
  TaskSpec keep1{"keep1", plan::OpKind::SgdMomentum, {3}, {}, plan::OpAttrs::SgdAttrs};
  keep1.lr = -1;
  keep1.param = 0;
  TaskSpec keep2 = keep1;
  keep2.name = "keep2";
  keep2.inputs = {6};
  keep2.param = 1;
  prog.tasks = {input, slice, a2a, ag, zero, rs, ag2, keep1, keep2};
  prog.inputs = {{"a", 0}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

// Each rank's copy of the B results is checked: coordinate 0 stores B
// variables, so the run is repeated with the other rank as coordinate 0.
TEST(Executor, BoxingCollectivesUnevenAxis1) {
  for (bool reversed : {false, true}) {
    TwoRanks ranks;
    ASSERT_NO_FATAL_FAILURE(ranks.load(boxingPlan(2, reversed)));
    test::TempDir tmp("sbpflow_actors");
    std::string dir = tmp.path() + "/boxing";
    TwoPhaseSave save(2, dir);
    ranks.run([&](int r, Executor &exec) {
      MemoryData data;
      Status s = exec.run("train", &data, 0, 0, 2, nullptr);
      return s ? save.save(r, exec) : s;
    });
    if (HasFailure())
      return;
    for (const char *name : {"out1", "out2"}) {
      std::vector<float> got = test::readCheckpointed(dir, name);
      ASSERT_EQ(got.size(), 15u) << name;
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 5; ++j)
          EXPECT_EQ(got[i * 5 + j], 2.0f * (10 * i + j)) // two steps accumulated
              << name << " stored by rank " << (reversed ? 1 : 0) << " at " << i << "," << j;
    }
  }
}

TEST(Executor, KernelErrorNamesTask) {
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {{"x", {kBatch, kIn}, {B()}},
                  {"label", {kBatch}, {B()}, plan::DType::I32},
                  {"loss", {kBatch}, {B()}}};
  TaskSpec x = inputTask("input.x", 0, "x");
  TaskSpec label = inputTask("input.label", 1, "label");
  TaskSpec xent{"head.xent", plan::OpKind::SoftmaxXent, {0, 1}, {2}};
  prog.tasks = {x, label, xent};
  spec.programs.push_back(prog);
  finalize(spec);
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(spec));
  Executor &exec = *solo.exec;
  MemoryData good(2);
  EXPECT_TRUE(exec.run("train", &good, 0, 0, 1, nullptr));
  MemoryData bad(7);
  Status s = exec.run("train", &bad, 0, 0, 3, nullptr);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("rank 0: task 'head.xent' (SoftmaxXent): label 7 at row 0 is out "
                             "of range for 3 classes"),
            std::string::npos)
      << s.message();
  Status after = exec.run("train", &good, 0, 0, 1, nullptr);
  EXPECT_NE(after.message().find("stopped by an earlier error"), std::string::npos);

  Status noData = Status::ok();
  auto exec2 = Executor::create(solo.sys.system, solo.loaded->plan(), nullptr, ExecutorOptions{});
  ASSERT_TRUE(exec2);
  noData = (*exec2)->run("train", nullptr, 0, 0, 1, nullptr);
  EXPECT_NE(noData.message().find("no data source was given"), std::string::npos)
      << noData.message();
}

TEST(Executor, MultiRankPlanWithoutCommsIsAnError) {
  auto loaded = loadPlanBuffer(build(linearPlan(2)));
  ASSERT_TRUE(loaded);
  ActorSystem sys;
  auto exec = Executor::create(sys.system, loaded->plan(), nullptr, ExecutorOptions{});
  ASSERT_FALSE(exec);
  EXPECT_NE(exec.status().message().find(
                "rank 0: task 'dw.allreduce' (AllReduce): no communicator for placement 'cpu'"),
            std::string::npos)
      << exec.status().message();
}

// The events of a trace file, read with the writer's fixed layout (one event
// per line, fields in a fixed order; actors/TaskTrace.cpp).
struct TraceEvent {
  std::string name, cat, lane, program;
  double ts = 0, dur = 0;
  int pid = -1, step = -1, task = -1;
  bool queued = false; // has queued_us
};
struct TraceFile {
  std::vector<TraceEvent> events;
  std::string otherData;
};

TraceFile readTrace(const std::string &path) {
  static const std::regex lane(
      R"re(^\{"name":"thread_name","ph":"M","pid":(\d+),"tid":(\d+),"args":\{"name":"(\w+)"\}\},?$)re");
  static const std::regex complete(
      R"re(^\{"name":"([^"]*)","cat":"([^"]*)","ph":"X","ts":([0-9.]+),"dur":([0-9.]+),"pid":(\d+),)re"
      R"re("tid":(\d+),"args":\{"program":"(\w+)","step":(\d+)(,"epoch":\d+,"batch":\d+)?)re"
      R"re((,"task":(\d+))?(,"queued_us":[0-9.]+)?\}\},?$)re");
  TraceFile file;
  std::map<std::string, std::string> lanes; // tid -> name
  std::ifstream in(path);
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(in, line))
    lines.push_back(line);
  for (const std::string &l : lines) {
    std::smatch m;
    if (std::regex_match(l, m, lane))
      lanes[m[2]] = m[3];
  }
  for (const std::string &l : lines) {
    std::smatch m;
    if (l.rfind("\"otherData\":", 0) == 0)
      file.otherData = l;
    if (!std::regex_match(l, m, complete))
      continue;
    TraceEvent e;
    e.name = m[1];
    e.cat = m[2];
    e.ts = std::stod(m[3]);
    e.dur = std::stod(m[4]);
    e.pid = std::stoi(m[5]);
    e.lane = lanes.count(m[6]) ? lanes[m[6]] : "unnamed tid " + m[6].str();
    e.program = m[7];
    e.step = std::stoi(m[8]);
    e.task = m[11].matched ? std::stoi(m[11]) : -1;
    e.queued = m[12].matched;
    file.events.push_back(e);
  }
  return file;
}

// Every task of `prog` (with `tasks` tasks) appears exactly once in each of
// steps 0..steps-1, inside that step's event; AllReduce tasks are on `commLane`.
void expectEveryTaskOncePerStep(const TraceFile &t, int rank, int tasks, int steps,
                                const std::string &commLane) {
  std::map<int, const TraceEvent *> stepEvents;
  std::map<int, std::multiset<int>> tasksOf;
  for (const TraceEvent &e : t.events) {
    EXPECT_EQ(e.pid, rank);
    EXPECT_EQ(e.program, "train");
    if (e.task < 0) {
      EXPECT_EQ(e.cat, "step");
      EXPECT_EQ(e.lane, "steps");
      EXPECT_TRUE(stepEvents.emplace(e.step, &e).second) << "two events for step " << e.step;
      continue;
    }
    tasksOf[e.step].insert(e.task);
    const bool collective = e.cat == "AllReduce";
    EXPECT_EQ(e.lane, collective ? commLane : "compute") << e.name;
    EXPECT_EQ(e.queued, collective && commLane == "comm") << e.name;
  }
  ASSERT_EQ(static_cast<int>(stepEvents.size()), steps);
  ASSERT_EQ(static_cast<int>(tasksOf.size()), steps);
  std::multiset<int> all;
  for (int k = 0; k < tasks; ++k)
    all.insert(k);
  for (int s = 0; s < steps; ++s) {
    ASSERT_TRUE(stepEvents.count(s)) << s;
    EXPECT_EQ(tasksOf[s], all) << "step " << s;
  }
  for (const TraceEvent &e : t.events) {
    const TraceEvent &step = *stepEvents[e.step];
    EXPECT_GE(e.ts, step.ts) << e.name << " step " << e.step;
    EXPECT_LE(e.ts + e.dur, step.ts + step.dur + 0.002) << e.name << " step " << e.step;
  }
}

TEST(ExecutorTrace, OffWritesNoFile) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1)));
  Executor &exec = *solo.exec;
  MemoryData data;
  ASSERT_TRUE(exec.run("train", &data, 0, 0, 3, nullptr));
  test::TempDir tmp("sbpflow_actors");
  const std::string &dir = tmp.path();
  const std::string path = dir + "/rank0.trace.json";
  Status s = exec.writeTrace(path);
  EXPECT_FALSE(s);
  EXPECT_NE(s.message().find("rank 0: no trace to write to '" + path + "'"), std::string::npos)
      << s.message();
  EXPECT_FALSE(std::ifstream(path).good()) << path << " exists";
}

TEST(ExecutorTrace, KeepsTheFirstStepsOfEveryTask) {
  ExecutorOptions options;
  options.traceSteps = 3;
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(linearPlan(1), options));
  Executor &exec = *solo.exec;
  // Two runs: the trace goes on counting steps across them.
  ASSERT_NO_FATAL_FAILURE(expectTwoRunsMatchReference(exec, 3, "traced training differs at step "));

  test::TempDir tmp("sbpflow_actors");
  const std::string &dir = tmp.path();
  ASSERT_TRUE(exec.writeTrace(dir + "/rank0.trace.json"));
  TraceFile t = readTrace(dir + "/rank0.trace.json");
  const int tasks = static_cast<int>(solo.loaded->plan()->programs()->Get(0)->tasks()->size());
  // One rank: the all-reduces are copies, run inline on the compute lane.
  expectEveryTaskOncePerStep(t, 0, tasks, 3, "compute");
  EXPECT_EQ(t.events.size(), static_cast<size_t>(3 * (tasks + 1)));
  for (const TraceEvent &e : t.events) {
    if (e.task == 2) {
      EXPECT_EQ(e.name, "fc.matmul");
    }
  }
  EXPECT_NE(t.otherData.find("{\"name\":\"train\",\"tasks\":" + std::to_string(tasks) +
                             ",\"max_steps\":3,\"steps_run\":5,\"steps_traced\":3}"),
            std::string::npos)
      << t.otherData;
}

TEST(ExecutorTrace, CollectivesOnTheCommLane) {
  TwoRanks ranks;
  ExecutorOptions traced;
  traced.traceSteps = 10;
  ASSERT_NO_FATAL_FAILURE(ranks.load(linearPlan(2), traced));
  test::TempDir tmp("sbpflow_actors");
  const std::string &dir = tmp.path();
  ranks.run([&](int r, Executor &exec) {
    MemoryData data;
    Status s = exec.run("train", &data, 0, 0, 4, nullptr);
    return s ? exec.writeTrace(dir + "/rank" + std::to_string(r) + ".trace.json") : s;
  });
  if (HasFailure())
    return;
  const int tasks = static_cast<int>(ranks.loaded->plan()->programs()->Get(0)->tasks()->size());
  for (int r = 0; r < 2; ++r) {
    TraceFile t = readTrace(dir + "/rank" + std::to_string(r) + ".trace.json");
    expectEveryTaskOncePerStep(t, r, tasks, 4, "comm");
    int collectives = 0;
    for (const TraceEvent &e : t.events)
      collectives += e.cat == "AllReduce";
    EXPECT_EQ(collectives, 2 * 4) << "rank " << r;
  }
}

// --- Mixed precision: BF16 tensors stored as bf16, each op computing in f32.

// bf16 rounding as the plan's Cast does it (kernels_test checks the kernel
// against a reference).
float roundBf16(float x) {
  uint16_t b;
  cpu::toBf16(&x, &b, 1);
  float y;
  cpu::fromBf16(&b, &y, 1);
  return y;
}

// f32 fields of any sample size. Fields whose name starts with "part" differ
// by rank (partial sums of a P tensor); the rest are the same on every rank.
class SineData : public DataSource {
public:
  SineData(std::vector<std::pair<std::string, int64_t>> fields, int rank = 0) : rank_(rank) {
    for (auto &[name, sample] : fields)
      fields_.push_back({name, FieldType::F32, {sample}});
  }
  static float value(const std::string &field, int rank, int64_t batch, int64_t row, int64_t col) {
    const double shift = field.rfind("part", 0) == 0 ? 0.37 * rank + 0.1 : 0.0;
    return static_cast<float>(3.0 * std::sin(0.7 * batch + 1.3 * row + 0.4 * col + 0.1) +
                              shift * (col + 1));
  }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1000; }
  Status fill(const std::string &field, int64_t, int64_t batch, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    for (const FieldInfo &f : fields_) {
      if (f.name != field)
        continue;
      const int64_t cols = f.sampleShape[0];
      for (int64_t r = 0; r < rowCount; ++r)
        for (int64_t c = 0; c < cols; ++c)
          static_cast<float *>(dst)[r * cols + c] = value(field, rank_, batch, rowBegin + r, c);
      return Status::ok();
    }
    return Status::error("no field '" + field + "'");
  }

private:
  std::vector<FieldInfo> fields_;
  int rank_;
};

// A variable's initial values, as the executor draws them.
std::vector<float> initialValues(plan::InitKind kind, float a, float b, uint64_t seed, int64_t n) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(plan::CreateInit(fbb, kind, a, b, seed));
  return initGlobalTensor(*flatbuffers::GetRoot<plan::Init>(fbb.GetBufferPointer()), n);
}

constexpr int64_t kRows = 13, kK = 7, kCols = 11;
constexpr plan::DType kBf16 = plan::DType::BF16;

// a (input, f32 [13,7]) and w (variable, f32 [7,11]) cast to bf16; c = a w
// stored as bf16, reshaped in place (bf16 [11,13] over c's bytes) and cast
// back to f32; d = a w with an f32 result.
PlanSpec bf16MatMulPlan() {
  PlanSpec spec;
  spec.variables = {{"w", {kK, kCols}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 3}};
  ProgramSpec prog;
  prog.tensors = {
      {"a", {kRows, kK}},                             // 0
      {"a.bf16", {kRows, kK}, {B()}, kBf16},          // 1
      {"w", {kK, kCols}, {B()}, plan::DType::F32, 0}, // 2
      {"w.bf16", {kK, kCols}, {B()}, kBf16},          // 3
      {"c", {kRows, kCols}, {B()}, kBf16},            // 4
      {"c.reshaped", {kCols, kRows}, {B()}, kBf16},   // 5
      {"c.f32", {kCols, kRows}},                      // 6
      {"d", {kRows, kCols}},                          // 7
  };
  using K = plan::OpKind;
  prog.tasks = {inputTask("input.a", 0, "a7"),
                makeTask("w", K::Parameter, {}, {2}),
                makeTask("a.cast", K::Cast, {0}, {1}),
                makeTask("w.cast", K::Cast, {2}, {3}),
                makeTask("c.matmul", K::MatMul, {1, 3}, {4}),
                makeTask("c.reshape", K::Reshape, {4}, {5}),
                makeTask("c.cast", K::Cast, {5}, {6}),
                makeTask("d.matmul", K::MatMul, {1, 3}, {7})};
  prog.outputs = {{"c", 6}, {"d", 7}};
  spec.programs.push_back(prog);
  finalize(spec);
  auto &tensors = spec.programs[0].tensors;
  tensors[5].offset = tensors[4].offset; // the reshape works in place
  return spec;
}

TEST(ExecutorBf16, MatMulStoresBf16AndComputesInF32) {
  PlanSpec spec = bf16MatMulPlan();
  ASSERT_EQ(spec.programs[0].tensors[4].bytes, kRows * kCols * 2);
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(spec));
  Executor &exec = *solo.exec;
  SineData data({{"a7", kK}});
  // Two steps, so that the second one reuses what the first left behind.
  Status s = exec.run("train", &data, 0, 4, 2, nullptr);
  ASSERT_TRUE(s) << s.message();
  std::vector<float> c, d;
  ASSERT_TRUE(exec.readOutput("train", "c", c));
  ASSERT_TRUE(exec.readOutput("train", "d", d));
  ASSERT_EQ(c.size(), static_cast<size_t>(kRows * kCols));
  ASSERT_EQ(d.size(), c.size());

  const std::vector<float> w = initialValues(plan::InitKind::Uniform, -1, 1, 3, kK * kCols);
  int roundedAway = 0;
  for (int64_t i = 0; i < kRows; ++i)
    for (int64_t j = 0; j < kCols; ++j) {
      double ref = 0, scale = 0, unrounded = 0;
      for (int64_t p = 0; p < kK; ++p) {
        const float a = SineData::value("a7", 0, 5, i, p);
        const double term = static_cast<double>(roundBf16(a)) * roundBf16(w[p * kCols + j]);
        ref += term;
        scale += std::abs(term);
        unrounded += static_cast<double>(a) * w[p * kCols + j];
      }
      const size_t at = static_cast<size_t>(i * kCols + j);
      const std::string where = "at " + std::to_string(i) + "," + std::to_string(j);
      EXPECT_NEAR(d[at], ref, 1e-5 * std::abs(ref) + 1e-6 * scale) << where;
      EXPECT_NEAR(c[at], ref, 1e-2 * std::abs(ref) + 1e-6 * scale) << where;
      // The same f32 product, rounded once into c.
      EXPECT_EQ(c[at], roundBf16(d[at])) << where;
      roundedAway += std::abs(unrounded - ref) > 1e-5 * scale;
    }
  // The casts did round the operands.
  EXPECT_GT(roundedAway, kRows * kCols / 2);
}

// x (bf16) normalised with f32 gamma and beta into bf16 y; the gradient of
// y with dy = y: dx bf16, dgamma and dbeta f32.
TEST(ExecutorBf16, LayerNormOfBf16WithF32Weights) {
  PlanSpec spec;
  spec.variables = {{"g", {kK}, 0, {B()}, plan::InitKind::Uniform, 0.5f, 1.5f, 4},
                    {"b", {kK}, 0, {B()}, plan::InitKind::Uniform, -0.5f, 0.5f, 5}};
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kRows, kK}},                      // 0
      {"x.bf16", {kRows, kK}, {B()}, kBf16},   // 1
      {"g", {kK}, {B()}, plan::DType::F32, 0}, // 2
      {"b", {kK}, {B()}, plan::DType::F32, 1}, // 3
      {"y", {kRows, kK}, {B()}, kBf16},        // 4
      {"y.f32", {kRows, kK}},                  // 5
      {"dx", {kRows, kK}, {B()}, kBf16},       // 6
      {"dg", {kK}},                            // 7
      {"db", {kK}},                            // 8
      {"dx.f32", {kRows, kK}},                 // 9
  };
  using K = plan::OpKind;
  using A = plan::OpAttrs;
  prog.tasks = {inputTask("input.x", 0, "a7"),
                makeTask("x.cast", K::Cast, {0}, {1}),
                makeTask("g", K::Parameter, {}, {2}),
                makeTask("b", K::Parameter, {}, {3}),
                makeTask("ln", K::LayerNorm, {1, 2, 3}, {4}, A::NormAttrs),
                makeTask("y.cast", K::Cast, {4}, {5}),
                makeTask("ln.grad", K::LayerNormGrad, {4, 1, 2}, {6, 7, 8}, A::NormAttrs),
                makeTask("dx.cast", K::Cast, {6}, {9})};
  prog.outputs = {{"y", 5}, {"dx", 9}, {"dg", 7}, {"db", 8}};
  spec.programs.push_back(prog);
  finalize(spec);
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(spec));
  Executor &exec = *solo.exec;
  SineData data({{"a7", kK}});
  Status s = exec.run("train", &data, 0, 2, 1, nullptr);
  ASSERT_TRUE(s) << s.message();
  std::vector<float> y, dx, dg, db;
  ASSERT_TRUE(exec.readOutput("train", "y", y));
  ASSERT_TRUE(exec.readOutput("train", "dx", dx));
  ASSERT_TRUE(exec.readOutput("train", "dg", dg));
  ASSERT_TRUE(exec.readOutput("train", "db", db));
  ASSERT_EQ(y.size(), static_cast<size_t>(kRows * kK));
  ASSERT_EQ(dg.size(), static_cast<size_t>(kK));

  const std::vector<float> g = initialValues(plan::InitKind::Uniform, 0.5f, 1.5f, 4, kK);
  const std::vector<float> b = initialValues(plan::InitKind::Uniform, -0.5f, 0.5f, 5, kK);
  const double eps = 1e-5;
  std::vector<double> dgRef(kK, 0.0), dbRef(kK, 0.0);
  for (int64_t i = 0; i < kRows; ++i) {
    std::vector<double> x(kK), xhat(kK), dy(kK);
    double mean = 0, var = 0;
    for (int64_t j = 0; j < kK; ++j) {
      x[j] = roundBf16(SineData::value("a7", 0, 2, i, j));
      mean += x[j] / kK;
    }
    for (int64_t j = 0; j < kK; ++j)
      var += (x[j] - mean) * (x[j] - mean) / kK;
    const double rstd = 1.0 / std::sqrt(var + eps);
    double meanGdy = 0, meanGdyXhat = 0;
    for (int64_t j = 0; j < kK; ++j) {
      xhat[j] = (x[j] - mean) * rstd;
      const double want = xhat[j] * g[j] + b[j];
      const float got = y[i * kK + j];
      EXPECT_NEAR(got, want, 1e-2 * std::abs(want) + 1e-5) << "y at " << i << "," << j;
      EXPECT_EQ(got, roundBf16(got)) << "y is not a bf16 value at " << i << "," << j;
      dy[j] = got; // the gradient reads y as the executor stored it
      meanGdy += g[j] * dy[j] / kK;
      meanGdyXhat += g[j] * dy[j] * xhat[j] / kK;
      dgRef[j] += dy[j] * xhat[j];
      dbRef[j] += dy[j];
    }
    for (int64_t j = 0; j < kK; ++j) {
      const double want = rstd * (g[j] * dy[j] - meanGdy - xhat[j] * meanGdyXhat);
      EXPECT_NEAR(dx[i * kK + j], want, 1e-2 * std::abs(want) + 1e-4) << "dx at " << i << "," << j;
    }
  }
  for (int64_t j = 0; j < kK; ++j) {
    EXPECT_NEAR(dg[j], dgRef[j], 1e-5 * kRows) << "dgamma " << j;
    EXPECT_NEAR(db[j], dbRef[j], 1e-5 * kRows) << "dbeta " << j;
  }
}

// Two ranks, every CPU collective and local boxing copy on BF16 tensors:
// partial sums (different per rank) all-reduced (in a bucket of two, one of
// them in place) and reduce-scattered then gathered; a split tensor
// gathered, re-sliced, exchanged all-to-all, and kept on one rank of a
// partial sum.
PlanSpec bf16CollectivesPlan() {
  PlanSpec spec;
  spec.placements = {{"cpu", {0, 1}, {2}}};
  ProgramSpec prog;
  prog.tensors = {
      {"p", {kRows, kK}, {P()}},              // 0
      {"p.bf16", {kRows, kK}, {P()}, kBf16},  // 1
      {"q", {3, 5}, {P()}},                   // 2
      {"q.bf16", {3, 5}, {P()}, kBf16},       // 3
      {"p.sum", {kRows, kK}, {B()}, kBf16},   // 4
      {"q.sum", {3, 5}, {B()}, kBf16},        // 5 (in place of 3)
      {"p.sum.f32", {kRows, kK}},             // 6
      {"q.sum.f32", {3, 5}},                  // 7
      {"p.rs", {kRows, kK}, {S(1)}, kBf16},   // 8
      {"p.rs.b", {kRows, kK}, {B()}, kBf16},  // 9
      {"p.rs.f32", {kRows, kK}},              // 10
      {"x", {kRows, kK}, {S(0)}},             // 11
      {"x.bf16", {kRows, kK}, {S(0)}, kBf16}, // 12
      {"x.b", {kRows, kK}, {B()}, kBf16},     // 13
      {"x.b.f32", {kRows, kK}},               // 14
      {"x.s1", {kRows, kK}, {S(1)}, kBf16},   // 15
      {"x.s1.b", {kRows, kK}, {B()}, kBf16},  // 16
      {"x.s1.b.f32", {kRows, kK}},            // 17
      {"x.p", {kRows, kK}, {P()}, kBf16},     // 18
      {"x.p.b", {kRows, kK}, {B()}, kBf16},   // 19
      {"x.p.b.f32", {kRows, kK}},             // 20
      {"x.s0", {kRows, kK}, {S(0)}, kBf16},   // 21
      {"x.s0.b", {kRows, kK}, {B()}, kBf16},  // 22
      {"x.s0.b.f32", {kRows, kK}},            // 23
  };
  using K = plan::OpKind;
  using A = plan::OpAttrs;
  auto collective = [](std::string name, K op, std::vector<int> in, std::vector<int> out) {
    return makeTask(std::move(name), op, std::move(in), std::move(out), A::CollectiveAttrs);
  };
  prog.tasks = {
      inputTask("input.p", 0, "part7"),
      makeTask("p.cast", K::Cast, {0}, {1}),
      inputTask("input.q", 2, "part5"),
      makeTask("q.cast", K::Cast, {2}, {3}),
      collective("bucket.allreduce", K::AllReduce, {1, 3}, {4, 5}),
      makeTask("p.sum.cast", K::Cast, {4}, {6}),
      makeTask("q.sum.cast", K::Cast, {5}, {7}),
      collective("p.reduce_scatter", K::ReduceScatter, {1}, {8}),
      collective("p.rs.allgather", K::AllGather, {8}, {9}),
      makeTask("p.rs.cast", K::Cast, {9}, {10}),
      inputTask("input.x", 11, "rows7"),
      makeTask("x.cast", K::Cast, {11}, {12}),
      collective("x.allgather", K::AllGather, {12}, {13}),
      makeTask("x.b.cast", K::Cast, {13}, {14}),
      makeTask("x.slice", K::Slice, {13}, {15}),
      collective("x.s1.allgather", K::AllGather, {15}, {16}),
      makeTask("x.s1.b.cast", K::Cast, {16}, {17}),
      makeTask("x.zero_others", K::ZeroOthers, {13}, {18}),
      collective("x.p.allreduce", K::AllReduce, {18}, {19}),
      makeTask("x.p.b.cast", K::Cast, {19}, {20}),
      collective("x.alltoall", K::AllToAll, {15}, {21}),
      collective("x.s0.allgather", K::AllGather, {21}, {22}),
      makeTask("x.s0.b.cast", K::Cast, {22}, {23}),
  };
  prog.outputs = {{"p.sum", 6},     {"q.sum", 7},   {"p.rs", 10},      {"x.gathered", 14},
                  {"x.sliced", 17}, {"x.kept", 20}, {"x.alltoall", 23}};
  spec.programs.push_back(prog);
  finalize(spec);
  auto &tensors = spec.programs[0].tensors;
  tensors[5].offset = tensors[3].offset; // the bucket's second member is reduced in place
  return spec;
}

TEST(ExecutorBf16, CollectivesReduceInF32AndRoundOnce) {
  TwoRanks ranks;
  ASSERT_NO_FATAL_FAILURE(ranks.load(bf16CollectivesPlan()));
  const int64_t batch = 6;
  std::vector<std::map<std::string, std::vector<float>>> got(2);
  const std::vector<std::string> names = {"p.sum",    "q.sum",  "p.rs",      "x.gathered",
                                          "x.sliced", "x.kept", "x.alltoall"};
  ranks.run([&](int r, Executor &exec) {
    SineData data({{"part7", kK}, {"part5", 5}, {"rows7", kK}}, r);
    if (Status s = exec.run("train", &data, 0, batch, 1, nullptr); !s)
      return s;
    for (const std::string &name : names)
      if (Status s = exec.readOutput("train", name, got[r][name]); !s)
        return s;
    return Status::ok();
  });
  if (HasFailure())
    return;
  // The f32 sum of the two ranks' bf16 partials, rounded once.
  auto summed = [&](const std::string &field, int64_t i, int64_t j) {
    const float a = roundBf16(SineData::value(field, 0, batch, i, j));
    const float b = roundBf16(SineData::value(field, 1, batch, i, j));
    return roundBf16(a + b);
  };
  int roundedSums = 0;
  for (int r = 0; r < 2; ++r) {
    for (const std::string &name : names)
      ASSERT_EQ(got[r][name].size(), static_cast<size_t>(name == "q.sum" ? 15 : kRows * kK))
          << name << " on rank " << r;
    for (int64_t i = 0; i < kRows; ++i)
      for (int64_t j = 0; j < kK; ++j) {
        const size_t at = static_cast<size_t>(i * kK + j);
        const std::string where =
            " at " + std::to_string(i) + "," + std::to_string(j) + " on rank " + std::to_string(r);
        const float sum = summed("part7", i, j);
        EXPECT_EQ(got[r]["p.sum"][at], sum) << "p.sum" << where;
        EXPECT_EQ(got[r]["p.rs"][at], sum) << "p.rs" << where;
        const float x = roundBf16(SineData::value("rows7", 0, batch, i, j));
        for (const char *name : {"x.gathered", "x.sliced", "x.kept", "x.alltoall"})
          EXPECT_EQ(got[r][name][at], x) << name << where;
        const float a = roundBf16(SineData::value("part7", 0, batch, i, j));
        const float b = roundBf16(SineData::value("part7", 1, batch, i, j));
        roundedSums += a + b != sum;
      }
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 5; ++j)
        EXPECT_EQ(got[r]["q.sum"][i * 5 + j], summed("part5", i, j))
            << "q.sum at " << i << "," << j << " on rank " << r;
  }
  // The data makes most sums inexact in bf16: the rounding is tested.
  EXPECT_GT(roundedSums, kRows * kK);
}

// --- I32 collectives: integers reduce as integers. The values exceed 2^24, so
// an f32 sum (or one over the integers' bit patterns read as floats) would
// not give them back exactly.

// "ids" i32 [kIdCols] and "few" i32 [] per row, different on each rank, some
// negative.
class IdData : public DataSource {
public:
  explicit IdData(int rank) : rank_(rank) {
    fields_ = {{"ids", FieldType::I32, {kIdCols}}, {"few", FieldType::I32, {}}};
  }
  static constexpr int64_t kIdCols = 7;
  static int32_t value(const std::string &field, int rank, int64_t row, int64_t col) {
    const int64_t v = (int64_t{1} << 24) + 1 + 1000003 * row + 7919 * col +
                      rank * ((int64_t{1} << 29) + 3) + (field == "few" ? 12345 : 0);
    return static_cast<int32_t>((col + rank) % 3 == 1 ? -v : v);
  }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1000; }
  Status fill(const std::string &field, int64_t, int64_t, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    const int64_t cols = field == "ids" ? kIdCols : 1;
    for (int64_t r = 0; r < rowCount; ++r)
      for (int64_t c = 0; c < cols; ++c)
        static_cast<int32_t *>(dst)[r * cols + c] = value(field, rank_, rowBegin + r, c);
    return Status::ok();
  }

private:
  std::vector<FieldInfo> fields_;
  int rank_;
};

// Two ranks: partial i32 tensors all-reduced (sum, in a bucket of two; max
// of a P(max) copy), and reduce-scattered then gathered.
PlanSpec i32CollectivesPlan() {
  constexpr plan::DType kI32 = plan::DType::I32;
  constexpr int64_t kIdRows = 5;
  PlanSpec spec;
  spec.placements = {{"cpu", {0, 1}, {2}}};
  ProgramSpec prog;
  prog.tensors = {
      {"ids", {kIdRows, IdData::kIdCols}, {P()}, kI32},      // 0
      {"few", {kIdRows}, {P()}, kI32},                       // 1
      {"ids.sum", {kIdRows, IdData::kIdCols}, {B()}, kI32},  // 2
      {"few.sum", {kIdRows}, {B()}, kI32},                   // 3
      {"ids.max", {kIdRows, IdData::kIdCols}, {B()}, kI32},  // 4
      {"ids.rs", {kIdRows, IdData::kIdCols}, {S(1)}, kI32},  // 5
      {"ids.rs.b", {kIdRows, IdData::kIdCols}, {B()}, kI32}, // 6
      {"ids.m", {kIdRows, IdData::kIdCols}, {Pmax()}, kI32}, // 7
  };
  using K = plan::OpKind;
  using A = plan::OpAttrs;
  TaskSpec max = makeTask("ids.max.allreduce", K::AllReduce, {7}, {4}, A::CollectiveAttrs);
  max.reduce = plan::ReduceOp::Max;
  TaskSpec rs = makeTask("ids.reduce_scatter", K::ReduceScatter, {0}, {5}, A::CollectiveAttrs);
  TaskSpec ag = makeTask("ids.rs.allgather", K::AllGather, {5}, {6}, A::CollectiveAttrs);
  prog.tasks = {
      inputTask("input.ids", 0, "ids"),
      inputTask("input.few", 1, "few"),
      makeTask("bucket.allreduce", K::AllReduce, {0, 1}, {2, 3}, A::CollectiveAttrs),
      inputTask("input.ids.max", 7, "ids"),
      max,
      rs,
      ag,
  };
  prog.outputs = {{"ids.sum", 2}, {"few.sum", 3}, {"ids.max", 4}, {"ids.rs.b", 6}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

TEST(ExecutorI32, CollectivesSumIntegersExactly) {
  TwoRanks ranks;
  ASSERT_NO_FATAL_FAILURE(ranks.load(i32CollectivesPlan()));
  const std::vector<std::string> names = {"ids.sum", "few.sum", "ids.max", "ids.rs.b"};
  std::vector<std::map<std::string, std::vector<int32_t>>> got(2);
  ranks.run([&](int r, Executor &exec) {
    IdData data(r);
    if (Status s = exec.run("train", &data, 0, 0, 1, nullptr); !s)
      return s;
    for (const std::string &name : names)
      if (Status s = exec.readOutput("train", name, got[r][name]); !s)
        return s;
    std::vector<float> asFloat;
    Status s = exec.readOutput("train", "ids.sum", asFloat);
    EXPECT_NE(s.message().find("output 'ids.sum' is not an f32 tensor"), std::string::npos)
        << s.message();
    return Status::ok();
  });
  if (HasFailure())
    return;
  auto sum = [](const char *field, int64_t i, int64_t j) {
    return IdData::value(field, 0, i, j) + IdData::value(field, 1, i, j);
  };
  int inexactInF32 = 0;
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(got[r]["few.sum"].size(), 5u) << "rank " << r;
    for (int64_t i = 0; i < 5; ++i) {
      EXPECT_EQ(got[r]["few.sum"][i], sum("few", i, 0)) << "few.sum at " << i << " on rank " << r;
      for (int64_t j = 0; j < IdData::kIdCols; ++j) {
        const size_t at = static_cast<size_t>(i * IdData::kIdCols + j);
        const std::string where =
            " at " + std::to_string(i) + "," + std::to_string(j) + " on rank " + std::to_string(r);
        ASSERT_EQ(got[r]["ids.sum"].size(), static_cast<size_t>(5 * IdData::kIdCols));
        EXPECT_EQ(got[r]["ids.sum"][at], sum("ids", i, j)) << "ids.sum" << where;
        EXPECT_EQ(got[r]["ids.rs.b"][at], sum("ids", i, j)) << "ids.rs.b" << where;
        EXPECT_EQ(got[r]["ids.max"][at],
                  std::max(IdData::value("ids", 0, i, j), IdData::value("ids", 1, i, j)))
            << "ids.max" << where;
        const float a = static_cast<float>(IdData::value("ids", 0, i, j));
        const float b = static_cast<float>(IdData::value("ids", 1, i, j));
        inexactInF32 += static_cast<int64_t>(a + b) != sum("ids", i, j);
      }
    }
  }
  // The data makes most sums inexact in f32: exactness is tested.
  EXPECT_GT(inexactInF32, 5 * IdData::kIdCols);
}

// --- Fused bias + GELU: a BiasGelu task gives what BiasAdd then Gelu give, bit
// for bit, so that fused and unfused plans train identically.

constexpr int64_t kGeluBatch = 5, kGeluC = 3, kGeluD = 7;

// x [5, 3, 7] (an input) plus a bias [3, 7] (a variable) covering its two
// trailing axes, then GELU: in one BiasGelu task (`fused`) or as BiasAdd then
// Gelu. x and the bias are cast to `dtype` and pre and y cast back to F32 to
// be read (copies for F32). The fused plan writes pre over x's bytes, as
// memory planning may where x dies.
PlanSpec biasGeluPlan(bool fused, plan::DType dtype) {
  PlanSpec spec =
      biasGeluSpec(fused, dtype,
                   {{kGeluBatch, kGeluC, kGeluD},
                    {"b", {kGeluC, kGeluD}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 8},
                    "a21"});
  finalize(spec);
  if (fused) {
    auto &tensors = spec.programs[0].tensors;
    tensors[4].offset = tensors[2].offset;
  }
  return spec;
}

// One step of biasGeluPlan: "pre" and "y".
std::map<std::string, std::vector<float>> runBiasGelu(bool fused, plan::DType dtype,
                                                      int64_t batch) {
  std::map<std::string, std::vector<float>> got;
  auto loaded = loadPlanBuffer(build(biasGeluPlan(fused, dtype)));
  EXPECT_TRUE(loaded) << loaded.status().message();
  if (!loaded)
    return got;
  ActorSystem sys;
  auto exec = Executor::create(sys.system, loaded->plan(), nullptr, ExecutorOptions{});
  EXPECT_TRUE(exec) << exec.status().message();
  if (!exec)
    return got;
  SineData data({{"a21", kGeluC * kGeluD}});
  Status s = (*exec)->run("train", &data, 0, batch, 1, nullptr);
  EXPECT_TRUE(s) << s.message();
  for (const char *name : {"pre", "y"}) {
    Status r = (*exec)->readOutput("train", name, got[name]);
    EXPECT_TRUE(r) << r.message();
  }
  return got;
}

std::vector<uint32_t> bitsOf(const std::vector<float> &v) {
  std::vector<uint32_t> bits(v.size());
  std::memcpy(bits.data(), v.data(), v.size() * sizeof(float));
  return bits;
}

void expectFusedIsUnfused(plan::DType dtype) {
  const bool bf16 = dtype == kBf16;
  const int64_t batch = 3, n = kGeluBatch * kGeluC * kGeluD, cols = kGeluC * kGeluD;
  auto fused = runBiasGelu(true, dtype, batch), unfused = runBiasGelu(false, dtype, batch);
  ASSERT_EQ(fused["pre"].size(), static_cast<size_t>(n));
  ASSERT_EQ(fused["y"].size(), static_cast<size_t>(n));
  EXPECT_EQ(bitsOf(fused["pre"]), bitsOf(unfused["pre"]));
  EXPECT_EQ(bitsOf(fused["y"]), bitsOf(unfused["y"]));

  // Both are x + bias and its GELU, stored in dtype.
  auto stored = [&](float v) { return bf16 ? roundBf16(v) : v; };
  const std::vector<float> b = initialValues(plan::InitKind::Uniform, -1, 1, 8, cols);
  int roundedPre = 0;
  for (int64_t i = 0; i < kGeluBatch; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const size_t at = static_cast<size_t>(i * cols + j);
      const std::string where = "at " + std::to_string(i) + "," + std::to_string(j);
      const float sum = stored(SineData::value("a21", 0, batch, i, j)) + stored(b[j]);
      const float pre = fused["pre"][at];
      EXPECT_EQ(pre, stored(sum)) << where;
      roundedPre += pre != sum;
      const double want = 0.5 * pre * std::erfc(-pre / std::sqrt(2.0));
      const float y = fused["y"][at];
      EXPECT_NEAR(y, want, (bf16 ? 4e-3 : 1e-5) * std::abs(want) + 1e-7) << where;
      EXPECT_EQ(y, stored(y)) << where;
    }
  // A BF16 pre is rounded (so y is the GELU of the rounded value).
  if (bf16) {
    EXPECT_GT(roundedPre, n / 2);
  }
}

TEST(ExecutorBiasGelu, FusedIsBiasAddThenGeluF32) { expectFusedIsUnfused(plan::DType::F32); }
TEST(ExecutorBiasGelu, FusedIsBiasAddThenGeluBf16) { expectFusedIsUnfused(kBf16); }

// A BiasGelu whose GELU output differs in shape from its pre-activation is
// refused when the executor is built, naming the task.
TEST(ExecutorBiasGelu, MismatchedOutputsAreAnError) {
  PlanSpec spec = biasGeluPlan(true, plan::DType::F32);
  auto &tensors = spec.programs[0].tensors;
  tensors[5].shape = {kGeluBatch, kGeluC * kGeluD};
  tensors[7].shape = {kGeluBatch, kGeluC * kGeluD};
  // The op's check (kernels/Linear.cpp) runs when the plan loads, not only
  // when the executor is built.
  auto loaded = loadPlanBuffer(build(spec));
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.status().message().find(
                "task 4 'fc.bias_gelu' (BiasGelu): GELU output [5,21] differs in shape from the "
                "pre-activation [5,3,7]"),
            std::string::npos)
      << loaded.status().message();
}

// --- Rows by index (GatherRows and its gradient ScatterRows, kernels/
// Embedding.cpp) against a double reference: on one rank, and on two with
// the indices split (each rank's scatter a partial sum, then all-reduced).

constexpr int64_t kNodes = 6, kEdges = 10, kChannels = 3;

// "x" f32 [kChannels] (row n: node n's features), "idx" i32 [] (row e: edge
// e's node, every node but one hit, some twice; `badEdge`'s is `badValue`).
class GraphData : public DataSource {
public:
  explicit GraphData(int64_t badEdge = -1, int32_t badValue = 0)
      : badEdge_(badEdge), badValue_(badValue) {
    fields_ = {{"x", FieldType::F32, {kChannels}}, {"idx", FieldType::I32, {}}};
  }
  static float x(int64_t n, int64_t c) { return static_cast<float>(std::sin(1.1 * n + 0.3 * c)); }
  static int32_t idx(int64_t e) { return static_cast<int32_t>((3 * e + 1) % (kNodes - 1)); }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1000; }
  Status fill(const std::string &field, int64_t, int64_t, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    for (int64_t r = 0; r < rowCount; ++r) {
      const int64_t row = rowBegin + r;
      if (field == "x")
        for (int64_t c = 0; c < kChannels; ++c)
          static_cast<float *>(dst)[r * kChannels + c] = x(row, c);
      else
        static_cast<int32_t *>(dst)[r] = row == badEdge_ ? badValue_ : idx(row);
    }
    return Status::ok();
  }

private:
  std::vector<FieldInfo> fields_;
  int64_t badEdge_;
  int32_t badValue_;
};

// y = gather_rows(x, idx), z = scatter_rows(y, idx): z[n] = x[n] times the
// number of edges at n. On two ranks idx and y are split and z all-reduced.
// Without `gather`, z = scatter_rows(x, idx) for kNodes indices; `yCols`
// other than kChannels makes y a shape the gather cannot write.
PlanSpec rowsPlan(int ranks, bool gather = true, int64_t yCols = kChannels) {
  PlanSpec spec;
  const Sbp edges = ranks == 1 ? B() : S(0);
  if (ranks == 2)
    spec.placements = {{"cpu", {0, 1}, {2}}};
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kNodes, kChannels}, {B()}},                              // 0
      {"idx", {gather ? kEdges : kNodes}, {edges}, plan::DType::I32}, // 1
      {"y", {kEdges, yCols}, {edges}},                                // 2
      {"z", {kNodes, kChannels}, {ranks == 1 ? B() : P()}},           // 3
      {"z.sum", {kNodes, kChannels}, {B()}},                          // 4
  };
  using K = plan::OpKind;
  prog.tasks = {inputTask("input.x", 0, "x"), inputTask("input.idx", 1, "idx")};
  if (gather)
    prog.tasks.push_back(makeTask("msg.gather", K::GatherRows, {0, 1}, {2}));
  prog.tasks.push_back(makeTask("msg.scatter", K::ScatterRows, {gather ? 2 : 0, 1}, {3}));
  if (ranks == 2)
    prog.tasks.push_back(
        makeTask("z.allreduce", K::AllReduce, {3}, {4}, plan::OpAttrs::CollectiveAttrs));
  prog.outputs = {{"z", ranks == 1 ? 3 : 4}};
  if (gather)
    prog.outputs.push_back({"y", 2});
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

// y = gather_rows(x, idx) against the data: row e is x's row idx(e).
void expectGatheredRows(const std::vector<float> &y, const std::string &where) {
  ASSERT_EQ(y.size(), static_cast<size_t>(kEdges * kChannels)) << where;
  for (int64_t e = 0; e < kEdges; ++e)
    for (int64_t c = 0; c < kChannels; ++c)
      EXPECT_EQ(y[e * kChannels + c], GraphData::x(GraphData::idx(e), c))
          << "y at " << e << "," << c << where;
}

// z = scatter_rows(y, idx) against a double reference: row n is x's row n
// times the number of edges at n.
void expectScatteredRows(const std::vector<float> &z, const std::string &where) {
  ASSERT_EQ(z.size(), static_cast<size_t>(kNodes * kChannels)) << where;
  std::vector<double> want(kNodes * kChannels, 0.0);
  for (int64_t e = 0; e < kEdges; ++e)
    for (int64_t c = 0; c < kChannels; ++c)
      want[GraphData::idx(e) * kChannels + c] += GraphData::x(GraphData::idx(e), c);
  for (int64_t i = 0; i < kNodes * kChannels; ++i)
    EXPECT_NEAR(z[i], want[i], 1e-6) << "z at " << i << where;
  // The data leaves node kNodes - 1 without edges: its row is zero.
  EXPECT_EQ(z[(kNodes - 1) * kChannels], 0.0f) << where;
}

TEST(ExecutorRows, GatherAndScatterMatchTheReference) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(rowsPlan(1)));
  Executor &exec = *solo.exec;
  GraphData data;
  ASSERT_TRUE(exec.run("train", &data, 0, 0, 1, nullptr));
  std::vector<float> y, z;
  ASSERT_TRUE(exec.readOutput("train", "y", y));
  ASSERT_TRUE(exec.readOutput("train", "z", z));
  expectGatheredRows(y, " on one rank");
  expectScatteredRows(z, " on one rank");
}

// y is split on two ranks (no rank reads it whole): z, all-reduced, is the
// check.
TEST(ExecutorRows, SplitEdgesScatterPartialSums) {
  TwoRanks ranks;
  ASSERT_NO_FATAL_FAILURE(ranks.load(rowsPlan(2)));
  std::vector<std::vector<float>> z(2);
  ranks.run([&](int r, Executor &exec) {
    GraphData data;
    if (Status s = exec.run("train", &data, 0, 0, 1, nullptr); !s)
      return s;
    return exec.readOutput("train", "z", z[r]);
  });
  if (HasFailure())
    return;
  for (int r = 0; r < 2; ++r)
    expectScatteredRows(z[r], " on rank " + std::to_string(r) + " of two");
}

// `s` is an error whose message holds `part`.
void expectFailure(const Status &s, const std::string &part) {
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
}

TEST(ExecutorRows, AnIndexOutsideTheRowsNamesTaskAndIndex) {
  OneRank solo;
  ASSERT_NO_FATAL_FAILURE(solo.start(rowsPlan(1)));
  Executor &exec = *solo.exec;
  GraphData bad(7, kNodes);
  expectFailure(exec.run("train", &bad, 0, 0, 1, nullptr),
                "task 'msg.gather' (GatherRows): index 6 of row 7 is outside the 6 rows");

  // The scatter checks its own indices: here they come straight from the
  // data, with nothing before it to check them.
  auto scatterOnly = loadPlanBuffer(build(rowsPlan(1, false)));
  ASSERT_TRUE(scatterOnly) << scatterOnly.status().message();
  auto exec2 = Executor::create(solo.sys.system, scatterOnly->plan(), nullptr, ExecutorOptions{});
  ASSERT_TRUE(exec2) << exec2.status().message();
  GraphData negative(2, -3);
  expectFailure((*exec2)->run("train", &negative, 0, 0, 1, nullptr),
                "task 'msg.scatter' (ScatterRows): index -3 of row 2 is outside the 6 rows");
}

// The loader refuses shapes that do not fit together, naming the task.
TEST(ExecutorRows, MismatchedShapesAreRefusedAtLoad) {
  expectFailure(loadPlanBuffer(build(rowsPlan(1, true, kChannels + 1))).status(),
                "'msg.gather' (GatherRows): 10 indices and rows of 3 do not make [10,4]");
}

} // namespace

namespace sbpflow {
namespace {

// A-EDiT's last round of a chunk: one step each, the rest in proportion to
// the replicas' last counts by largest remainder; always the whole budget.
TEST(ShareRound, SharesTheBudgetInProportionToTheLastRound) {
  EXPECT_EQ(shareRound(30, {20, 10}), (std::vector<int64_t>{20, 10}));
  EXPECT_EQ(shareRound(10, {20, 10}), (std::vector<int64_t>{7, 3}));
  EXPECT_EQ(shareRound(7, {1, 1, 1}), (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(shareRound(4, {9, 0, 1, 0}), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(shareRound(5, {9, 0, 1, 0}), (std::vector<int64_t>{2, 1, 1, 1}));
  for (int64_t remaining : {2, 3, 17, 101}) {
    const std::vector<int64_t> q = shareRound(remaining, {13, 7});
    EXPECT_EQ(q[0] + q[1], remaining) << remaining;
    EXPECT_GE(q[0], q[1]) << remaining;
  }
}

} // namespace
} // namespace sbpflow
