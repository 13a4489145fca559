// Plan loading: a good plan loads and describes itself; each class of defect
// (corrupt bytes, wrong identifier, bad indices, order, registers, attrs,
// arena, collective order) is rejected with a message naming the culprit.
#include "runtime/plan/PlanLoader.h"
#include "tests/plan/TestPlans.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

using namespace sbpflow;
using namespace sbpflow::testplan;

namespace {

PlanSpec goodPlan() {
  PlanSpec spec;
  spec.variables.push_back({"w", {3, 2}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 7});
  ProgramSpec prog;
  prog.tensors = {{"x", {4, 3}, {S(0)}},
                  {"w", {3, 2}, {B()}, plan::DType::F32, 0},
                  {"y", {4, 2}, {S(0)}},
                  {"loss", {}, {P()}},
                  {"loss_sum", {}, {B()}}};
  TaskSpec input{"input", plan::OpKind::Input, {}, {0}, plan::OpAttrs::InputAttrs};
  input.field = "image";
  TaskSpec param{"param", plan::OpKind::Parameter, {}, {1}};
  TaskSpec mm{"fc.matmul", plan::OpKind::MatMul, {0, 1}, {2}, plan::OpAttrs::MatMulAttrs};
  TaskSpec mean{"loss", plan::OpKind::Mean, {2}, {3}, plan::OpAttrs::MeanAttrs};
  mean.count = 8;
  TaskSpec ar{"loss.allreduce", plan::OpKind::AllReduce, {3}, {4}, plan::OpAttrs::CollectiveAttrs};
  prog.tasks = {input, param, mm, mean, ar};
  prog.inputs = {{"image", 0}};
  prog.metrics = {{"loss", 4}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

std::string loadError(const PlanSpec &spec) {
  auto loaded = loadPlanBuffer(build(spec));
  if (loaded)
    return "loaded";
  return loaded.status().message();
}

#define EXPECT_ERROR(spec, text)                                                                   \
  do {                                                                                             \
    std::string msg = loadError(spec);                                                             \
    EXPECT_NE(msg.find(text), std::string::npos) << "message: " << msg;                            \
  } while (0)

TEST(PlanLoader, GoodPlanLoadsAndDescribes) {
  auto loaded = loadPlanBuffer(build(goodPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  const plan::Plan *p = loaded->plan();
  ASSERT_EQ(p->programs()->size(), 1u);
  EXPECT_EQ(p->programs()->Get(0)->tasks()->size(), 5u);
  EXPECT_EQ(p->programs()->Get(0)->registers()->size(), 4u);
  std::string text = describePlan(*p);
  EXPECT_NE(text.find("fc.matmul MatMul (%0, %1) -> (%2)"), std::string::npos) << text;
  EXPECT_NE(text.find("collective #0"), std::string::npos) << text;
  EXPECT_NE(text.find("y F32[4,2] placement 0 [S(0)] @"), std::string::npos) << text;
  EXPECT_NE(text.find("metric loss <- %4"), std::string::npos) << text;
}

TEST(PlanLoader, CorruptBytes) {
  std::vector<uint8_t> bytes = build(goodPlan());
  std::vector<uint8_t> truncated(bytes.begin(), bytes.begin() + bytes.size() / 2);
  EXPECT_NE(loadPlanBuffer(truncated).status().message().find("failed flatbuffers verification"),
            std::string::npos);

  std::mt19937 gen(3);
  std::vector<uint8_t> garbage(256);
  for (auto &b : garbage)
    b = static_cast<uint8_t>(gen());
  EXPECT_NE(loadPlanBuffer(garbage).status().message().find("not a plan"), std::string::npos);
  // Garbage behind a correct identifier must still be caught by the verifier.
  std::copy(bytes.begin() + 4, bytes.begin() + 8, garbage.begin() + 4);
  auto g = loadPlanBuffer(garbage);
  EXPECT_FALSE(g);
  EXPECT_NE(g.status().message().find("verification"), std::string::npos) << g.status().message();

  std::vector<uint8_t> wrongId = bytes;
  wrongId[4] = 'X';
  EXPECT_NE(loadPlanBuffer(wrongId).status().message().find("file identifier is not 'SBPP'"),
            std::string::npos);
  EXPECT_NE(loadPlanBuffer(std::vector<uint8_t>{1, 2}).status().message().find("too short"),
            std::string::npos);
}

TEST(PlanLoader, Files) {
  auto missing = loadPlanFile("/nonexistent/model.plan");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("cannot open plan file '/nonexistent/model.plan'"),
            std::string::npos);
  std::string path = ::testing::TempDir() + "plan_loader_test.plan";
  std::vector<uint8_t> bytes = build(goodPlan());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
  auto loaded = loadPlanFile(path);
  EXPECT_TRUE(loaded) << loaded.status().message();
  std::remove(path.c_str());
}

TEST(PlanLoader, Version) {
  PlanSpec s = goodPlan();
  s.version = 2;
  EXPECT_ERROR(s, "plan version 2 is not supported");
}

TEST(PlanLoader, Placements) {
  PlanSpec s = goodPlan();
  s.placements[0].hierarchy = {2};
  EXPECT_ERROR(s, "placement 0 'cpu': hierarchy product 2 differs from its 1 ranks");
  s = goodPlan();
  s.placements[0].hierarchy = {1 << 30, 1 << 30, 1 << 30};
  EXPECT_ERROR(s, "placement 0 'cpu': hierarchy product overflows");
  s = goodPlan();
  s.programs[0].tensors[2].placement = 3;
  EXPECT_ERROR(s, "tensor 2 'y': placement 3 out of range");
}

TEST(PlanLoader, ShapesAndSbp) {
  PlanSpec s = goodPlan();
  s.programs[0].tensors[2].shape = {4, -2};
  EXPECT_ERROR(s, "tensor 2 'y': negative dimension -2");
  // Sizes that would overflow int64 arithmetic downstream.
  s = goodPlan();
  s.programs[0].tensors[2].shape = {int64_t{1} << 40, int64_t{1} << 40};
  EXPECT_ERROR(s, "tensor 2 'y': more than 2^48 elements");
  s = goodPlan();
  s.programs[0].tensors[2].sbp = {S(2)};
  EXPECT_ERROR(s, "tensor 2 'y': split axis 2 out of range for rank 2");
  s = goodPlan();
  s.variables[0].sbp = {S(0), B()};
  EXPECT_ERROR(s, "variable 0 'w': nd-SBP has 2 dimensions but its placement hierarchy has 1");
  s = goodPlan();
  s.programs[0].tensors[1].variable = 4;
  EXPECT_ERROR(s, "tensor 1 'w': variable 4 out of range");
}

TEST(PlanLoader, IndicesAndOrder) {
  PlanSpec s = goodPlan();
  s.programs[0].tasks[2].inputs = {0, 9};
  EXPECT_ERROR(s, "task 2 'fc.matmul' (MatMul): input 1 is tensor 9, out of range");
  s = goodPlan();
  std::swap(s.programs[0].tasks[2], s.programs[0].tasks[3]);
  EXPECT_ERROR(s, "task 2 'loss' (Mean): input tensor 'y' is not produced by an earlier task");
  s = goodPlan();
  s.programs[0].tasks[3].outputs = {2};
  EXPECT_ERROR(s, "tensor 'y' already produced by task 'fc.matmul'");
  s = goodPlan();
  s.programs[0].tasks[3].inputs = {};
  EXPECT_ERROR(s, "task 3 'loss' (Mean): expects 1 inputs, has 0");
}

TEST(PlanLoader, Registers) {
  PlanSpec s = goodPlan();
  s.programs[0].registers.erase(s.programs[0].registers.begin() + 2); // y -> loss
  EXPECT_ERROR(s, "task 3 'loss' (Mean): no register carries input tensor 'y'");
  s = goodPlan();
  s.programs[0].registers[0].count = 0;
  EXPECT_ERROR(s, "register 0 (from task 'input'): count 0");
  s = goodPlan();
  s.programs[0].registers.push_back({1, -1, {}, 1});
  EXPECT_ERROR(s, "register 4 (from task 'param'): no consumers");
  s = goodPlan();
  s.programs[0].registers.push_back({17, -1, {2}, 1});
  EXPECT_ERROR(s, "register 4: producer task 17 out of range");
  s = goodPlan();
  s.programs[0].registers.push_back({3, -1, {1}, 1});
  EXPECT_ERROR(s, "consumer 'param' does not come after its producer");
}

TEST(PlanLoader, Attrs) {
  PlanSpec s = goodPlan();
  s.programs[0].tasks[3].attrs = plan::OpAttrs::NONE;
  EXPECT_ERROR(s, "task 3 'loss' (Mean): missing attrs (MeanAttrs expected)");
  s = goodPlan();
  s.programs[0].tasks[2].attrs = plan::OpAttrs::FillAttrs;
  EXPECT_ERROR(s, "task 2 'fc.matmul' (MatMul): attrs are FillAttrs, expected MatMulAttrs");
  s = goodPlan();
  s.programs[0].tasks[4].dim = 1;
  EXPECT_ERROR(s, "task 4 'loss.allreduce' (AllReduce): hierarchy_dim 1 out of range");
}

TEST(PlanLoader, Arena) {
  PlanSpec s = goodPlan();
  s.programs[0].arenaBytes = 40;
  EXPECT_ERROR(s, "exceeds arena_bytes 40");
  s = goodPlan();
  s.programs[0].tensors[2].bytes = 4;
  EXPECT_ERROR(s, "tensor 2 'y': bytes 4 smaller than its largest local shard (32)");
}

TEST(PlanLoader, CollectiveOrder) {
  PlanSpec s = goodPlan();
  s.programs[0].tasks[4].seq = 1;
  EXPECT_ERROR(s, "collective_seq values are not a permutation of 0..0");
  s = goodPlan();
  s.programs[0].tasks[3].seq = 0;
  EXPECT_ERROR(s, "task 3 'loss' (Mean): collective_seq 0 on a task that is not a collective");
}

TEST(PlanLoader, MetricsAndInputs) {
  PlanSpec s = goodPlan();
  s.programs[0].metrics = {{"acc", 12}};
  EXPECT_ERROR(s, "metric 'acc' points at tensor 12, out of range");
  s = goodPlan();
  s.programs[0].inputs = {{"label", -3}};
  EXPECT_ERROR(s, "input binding 'label' points at tensor -3, out of range");
}

TEST(PlanLoader, InitIsDeterministic) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(plan::CreateInit(fbb, plan::InitKind::Uniform, -1.0f, 1.0f, 42));
  const plan::Init *init = flatbuffers::GetRoot<plan::Init>(fbb.GetBufferPointer());
  std::vector<float> a = initGlobalTensor(*init, 1000);
  std::vector<float> b = initGlobalTensor(*init, 1000);
  EXPECT_EQ(a, b);
  double mean = 0;
  for (float v : a) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
    mean += v;
  }
  EXPECT_NEAR(mean / 1000, 0.0, 0.1);
  // The first draw of mt19937_64(42) fixes the first element exactly.
  std::mt19937_64 gen(42);
  EXPECT_FLOAT_EQ(a[0], static_cast<float>(-1.0 + 2.0 * ((gen() >> 11) * 0x1.0p-53)));

  flatbuffers::FlatBufferBuilder fbb2;
  fbb2.Finish(plan::CreateInit(fbb2, plan::InitKind::Normal, 2.0f, 0.5f, 9));
  std::vector<float> n =
      initGlobalTensor(*flatbuffers::GetRoot<plan::Init>(fbb2.GetBufferPointer()), 20000);
  double m = 0, v = 0;
  for (float x : n)
    m += x;
  m /= n.size();
  for (float x : n)
    v += (x - m) * (x - m);
  v /= n.size();
  EXPECT_NEAR(m, 2.0, 0.02);
  EXPECT_NEAR(std::sqrt(v), 0.5, 0.02);
}

} // namespace
