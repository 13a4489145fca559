// Local SGD's registry entries (kernels/LocalSgd.cpp) over host memory: a
// loaded plan's task reaches its CPU kernel with its operands in order and
// its attributes in place, the outer step and Assign run only where their
// variable is, and a shard of the wrong size is refused when the kernel is
// built.
#include "kernels/Registry.h"
#include "kernels/cpu/Kernels.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/kernels/RandomVector.h"
#include "tests/plan/TestPlans.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace sbpflow {
namespace {

using namespace testplan;
using sbpflow::test::randomVector;
using K = plan::OpKind;

const std::vector<int64_t> kShape = {5, 3};
constexpr int64_t kN = 15;

// w, its anchor and its outer momentum; an empty inner program and the
// round's: the pseudo-gradient, scaled, the outer step, the same with
// keep_anchor (CO2's exchange) and an Assign of w to its anchor.
PlanSpec roundPlan() {
  PlanSpec spec;
  spec.variables = {{"w", kShape}, {"w.anchor", kShape}, {"w.outer_m", kShape}};
  spec.variables[0].replicaDim = 0;
  ProgramSpec prog;
  prog.name = "round";
  prog.tensors = {{"w", kShape, {B()}, plan::DType::F32, 0},
                  {"w.anchor", kShape, {B()}, plan::DType::F32, 1},
                  {"delta", kShape},
                  {"delta.scaled", kShape}};
  TaskSpec scale = makeTask("scale", K::Scale, {2}, {3}, plan::OpAttrs::ScaleAttrs);
  scale.factor = 0.25f;
  TaskSpec outer = makeTask("outer", K::OuterStep, {3}, {}, plan::OpAttrs::OuterAttrs);
  outer.lr = 0.7f;
  outer.momentum = 0.9f;
  outer.nesterov = true;
  outer.replicas = 3;
  outer.gapPenalty = 1.5f;
  outer.clip = 0.02f;
  outer.param = 0;
  outer.anchor = 1;
  outer.momentumBuffer = 2;
  TaskSpec keep = outer;
  keep.name = "outer.keep_anchor";
  keep.keepAnchor = true;
  TaskSpec assign = makeTask("anchor <- w", K::Assign, {0}, {}, plan::OpAttrs::AssignAttrs);
  assign.variable = 1;
  prog.tasks = {makeTask("w", K::Parameter, {}, {0}),
                makeTask("w.anchor", K::Parameter, {}, {1}),
                makeTask("delta", K::PseudoGradient, {1, 0}, {2}),
                scale,
                outer,
                keep,
                assign};
  spec.programs = {ProgramSpec{}, prog};
  spec.schedule = ScheduleSpec{"diloco", "train", 4, {runStep("round")}};
  finalize(spec);
  return spec;
}

// Runs one step of `kernel`, expecting no error.
void run(const Kernel &kernel) {
  Status s = kernel(StepContext{});
  EXPECT_TRUE(s) << s.message();
}

// A host tensor as a task's operand: this rank's `elements` of a global
// tensor of kShape, broadcast on placement 0 as roundPlan's tensors.
TensorView hostView(std::vector<float> &data, const std::string &name, int64_t elements = kN) {
  TensorView v;
  v.data = data.data();
  v.name = name;
  v.global = kShape;
  v.local = {elements};
  v.sbp = {SbpDim{SbpKind::Broadcast, 0}};
  return v;
}

class LocalSgdOps : public ::testing::Test {
protected:
  void SetUp() override {
    auto loaded = loadPlanBuffer(testplan::build(roundPlan()));
    ASSERT_TRUE(loaded) << loaded.status().message();
    plan_ = loaded.take();
  }
  const plan::Plan &plan() const { return *plan_.plan(); }
  const plan::Task &task(int k) const { return *plan().programs()->Get(1)->tasks()->Get(k); }

  // The kernel task `k`'s CPU builder makes over `in` and `out`.
  StatusOr<Kernel> kernelOf(int k, Operands in, Operands out,
                            const std::vector<TensorView> *variables = nullptr) {
    OpArgs a(plan(), task(k), "task '" + task(k).name()->str() + "'");
    a.in = std::move(in);
    a.out = std::move(out);
    a.variables = variables;
    return opEntry(task(k).op()).cpu(a);
  }

  LoadedPlan plan_;
};

TEST_F(LocalSgdOps, PseudoGradientIsTheAnchorMinusTheParameter) {
  auto anchor = randomVector(kN, 1), param = randomVector(kN, 2);
  std::vector<float> delta(kN);
  TensorView a = hostView(anchor, "w.anchor"), w = hostView(param, "w"),
             d = hostView(delta, "delta");
  auto kernel = kernelOf(2, {&a, &w}, {&d});
  ASSERT_TRUE(kernel) << kernel.status().message();
  run(*kernel);
  for (int64_t i = 0; i < kN; ++i)
    EXPECT_EQ(delta[i], anchor[i] - param[i]) << "at " << i;
}

TEST_F(LocalSgdOps, ScaleMultipliesByItsFactor) {
  auto x = randomVector(kN, 3);
  std::vector<float> y(kN);
  TensorView in = hostView(x, "delta"), out = hostView(y, "delta.scaled");
  auto kernel = kernelOf(3, {&in}, {&out});
  ASSERT_TRUE(kernel) << kernel.status().message();
  run(*kernel);
  for (int64_t i = 0; i < kN; ++i)
    EXPECT_EQ(y[i], x[i] * 0.25f) << "at " << i;
}

// The builder's kernel gives cpu::outerStep's bits with the task's
// attributes, over two rounds in which the clip binds on some elements
// (a momentum buffer, clip or factor left out or swapped would differ).
TEST_F(LocalSgdOps, OuterStepRunsWithItsAttributesAndVariables) {
  std::vector<float> param(kN, 0.f), anchor = randomVector(kN, 4), m(kN, 0.f);
  std::vector<TensorView> vars = {hostView(param, "w"), hostView(anchor, "w.anchor"),
                                  hostView(m, "w.outer_m")};
  std::vector<float> wantParam = param, wantAnchor = anchor, wantM = m, sum(kN);
  TensorView in = hostView(sum, "delta.scaled");
  auto kernel = kernelOf(4, {&in}, {}, &vars);
  ASSERT_TRUE(kernel) << kernel.status().message();
  ASSERT_TRUE(*kernel) << "the rank holds the parameter: the step must run here";
  EXPECT_EQ(updatedVariable(task(4)), 0);
  for (int round = 0; round < 2; ++round) {
    const auto next = randomVector(kN, 5 + round, -0.2f, 0.2f);
    std::copy(next.begin(), next.end(), sum.begin()); // where the kernel reads
    run(*kernel);
    cpu::outerStep(wantParam.data(), wantAnchor.data(), wantM.data(), sum.data(), kN, 0.7f, 0.9f,
                   true, 3, 1.5f, 0.02f, false);
    EXPECT_EQ(param, wantParam) << "round " << round;
    EXPECT_EQ(anchor, wantAnchor) << "round " << round;
    EXPECT_EQ(m, wantM) << "round " << round;
  }
  EXPECT_NE(std::count(m.begin(), m.end(), 0.02f) + std::count(m.begin(), m.end(), -0.02f), 0)
      << "no element was clipped";
}

TEST_F(LocalSgdOps, OuterStepRunsOnlyWhereItsParameterIs) {
  std::vector<TensorView> vars(3); // no data: this rank holds none of w
  std::vector<float> sum(kN);
  TensorView in = hostView(sum, "delta.scaled");
  auto kernel = kernelOf(4, {&in}, {}, &vars);
  ASSERT_TRUE(kernel) << kernel.status().message();
  EXPECT_FALSE(*kernel);
}

TEST_F(LocalSgdOps, OuterStepRefusesAShardOfAnotherSize) {
  std::vector<float> param(kN), anchor(kN), m(kN), sum(kN - 1), small(kN - 1);
  std::vector<TensorView> vars = {hostView(param, "w"), hostView(anchor, "w.anchor"),
                                  hostView(m, "w.outer_m")};
  TensorView in = hostView(sum, "delta.scaled", kN - 1);
  auto kernel = kernelOf(4, {&in}, {}, &vars);
  ASSERT_FALSE(kernel);
  EXPECT_EQ(kernel.status().message(),
            "task 'outer': pseudo-gradient holds 14 local elements, parameter 15");
  vars[2] = hostView(small, "w.outer_m", kN - 1);
  kernel = kernelOf(4, {&in}, {}, &vars);
  ASSERT_FALSE(kernel);
  EXPECT_EQ(kernel.status().message(),
            "task 'outer': variable 'w.outer_m' holds 14 local elements, parameter 15");
}

// keep_anchor reaches the kernel: the anchor stays, the parameters and the
// buffer move as cpu::outerStep with keep_anchor moves them.
TEST_F(LocalSgdOps, OuterStepKeepsTheAnchorWithKeepAnchor) {
  std::vector<float> param(kN, 0.f), anchor = randomVector(kN, 6), m(kN, 0.f);
  const std::vector<float> anchor0 = anchor;
  std::vector<TensorView> vars = {hostView(param, "w"), hostView(anchor, "w.anchor"),
                                  hostView(m, "w.outer_m")};
  std::vector<float> wantParam = param, wantAnchor = anchor, wantM = m;
  auto sum = randomVector(kN, 7, -0.2f, 0.2f);
  TensorView in = hostView(sum, "delta.scaled");
  auto kernel = kernelOf(5, {&in}, {}, &vars);
  ASSERT_TRUE(kernel) << kernel.status().message();
  ASSERT_TRUE(*kernel);
  run(*kernel);
  cpu::outerStep(wantParam.data(), wantAnchor.data(), wantM.data(), sum.data(), kN, 0.7f, 0.9f,
                 true, 3, 1.5f, 0.02f, true);
  EXPECT_EQ(anchor, anchor0);
  EXPECT_EQ(param, wantParam);
  EXPECT_EQ(m, wantM);
  EXPECT_NE(param, anchor0) << "the step moved nothing";
}

// Assign copies this rank's shard, however many of the global elements
// that is, and nothing past it.
TEST_F(LocalSgdOps, AssignCopiesTheRanksShard) {
  EXPECT_EQ(updatedVariable(task(6)), 1);
  constexpr int64_t kShard = 7;
  std::vector<float> param = randomVector(kN, 8), anchor = randomVector(kN, 9), m(kN);
  const std::vector<float> anchor0 = anchor;
  std::vector<TensorView> vars = {hostView(param, "w", kShard),
                                  hostView(anchor, "w.anchor", kShard),
                                  hostView(m, "w.outer_m", kShard)};
  TensorView in = hostView(param, "w", kShard);
  auto kernel = kernelOf(6, {&in}, {}, &vars);
  ASSERT_TRUE(kernel) << kernel.status().message();
  ASSERT_TRUE(*kernel) << "the rank holds the variable: the copy must run here";
  run(*kernel);
  for (int64_t i = 0; i < kN; ++i)
    EXPECT_EQ(anchor[i], i < kShard ? param[i] : anchor0[i]) << "at " << i;
}

TEST_F(LocalSgdOps, AssignRunsOnlyWhereItsVariableIs) {
  std::vector<TensorView> vars(3); // no data: this rank holds none of w.anchor
  std::vector<float> param(kN);
  TensorView in = hostView(param, "w");
  auto kernel = kernelOf(6, {&in}, {}, &vars);
  ASSERT_TRUE(kernel) << kernel.status().message();
  EXPECT_FALSE(*kernel);
}

TEST_F(LocalSgdOps, AssignRefusesAShardOfAnotherSize) {
  std::vector<float> param(kN), anchor(kN), m(kN);
  std::vector<TensorView> vars = {hostView(param, "w"), hostView(anchor, "w.anchor"),
                                  hostView(m, "w.outer_m")};
  TensorView in = hostView(param, "w", kN - 1);
  auto kernel = kernelOf(6, {&in}, {}, &vars);
  ASSERT_FALSE(kernel);
  EXPECT_EQ(kernel.status().message(),
            "task 'anchor <- w': input holds 14 local elements, variable 'w.anchor' 15");
}

// The builder checks the task as the loader does (a plan that did not come
// through the loader): a variable out of range or of another size.
TEST_F(LocalSgdOps, AssignRefusesAVariableItCannotHold) {
  for (auto [variable, want] : std::vector<std::pair<int, std::string>>{
           {4, "task 'anchor <- w': AssignAttrs.variable 4 out of range (plan has 4 variables)"},
           {-1, "task 'anchor <- w': AssignAttrs.variable -1 out of range (plan has 4 variables)"},
           {3, "task 'anchor <- w': input 'w' [5,3] differs in element count from variable 'b' "
               "[4]"}}) {
    SCOPED_TRACE(want);
    PlanSpec spec = roundPlan();
    spec.variables.push_back({"b", {4}});
    spec.programs[1].tasks[6].variable = variable;
    const std::vector<uint8_t> buffer = testplan::build(spec);
    const plan::Plan &unchecked = *plan::GetPlan(buffer.data());
    const plan::Task &assign = *unchecked.programs()->Get(1)->tasks()->Get(6);
    std::vector<float> param(kN), anchor(kN), m(kN), b(4);
    std::vector<TensorView> vars = {hostView(param, "w"), hostView(anchor, "w.anchor"),
                                    hostView(m, "w.outer_m"), hostView(b, "b", 4)};
    TensorView in = hostView(param, "w");
    OpArgs a(unchecked, assign, "task 'anchor <- w'");
    a.in = {&in};
    a.variables = &vars;
    auto kernel = opEntry(assign.op()).cpu(a);
    ASSERT_FALSE(kernel);
    EXPECT_EQ(kernel.status().message(), want);
  }
}

// A per-replica variable takes a value partial on its replica dimension
// (CO2 keeps each replica's own term of the pseudo-gradients' sum); any
// other variable refuses it.
TEST_F(LocalSgdOps, AssignTakesAPartialValueOnlyIntoAPerReplicaVariable) {
  for (auto [variable, accepted] : std::vector<std::pair<int, bool>>{{0, true}, {1, false}}) {
    SCOPED_TRACE("variable " + std::to_string(variable));
    PlanSpec spec = roundPlan();
    spec.programs[1].tasks[6].variable = variable;
    const std::vector<uint8_t> buffer = testplan::build(spec);
    const plan::Plan &unchecked = *plan::GetPlan(buffer.data());
    const plan::Task &assign = *unchecked.programs()->Get(1)->tasks()->Get(6);
    std::vector<float> param(kN), anchor(kN), m(kN), value = randomVector(kN, 10);
    std::vector<TensorView> vars = {hostView(param, "w"), hostView(anchor, "w.anchor"),
                                    hostView(m, "w.outer_m")};
    TensorView in = hostView(value, "delta");
    in.sbp = {SbpDim{SbpKind::PartialSum, 0}};
    OpArgs a(unchecked, assign, "task 'assign'");
    a.in = {&in};
    a.variables = &vars;
    auto kernel = opEntry(assign.op()).cpu(a);
    if (!accepted) {
      ASSERT_FALSE(kernel);
      EXPECT_EQ(kernel.status().message(),
                "task 'assign': input 'delta' differs in placement or nd-SBP from variable "
                "'w.anchor'");
      continue;
    }
    ASSERT_TRUE(kernel) << kernel.status().message();
    run(*kernel);
    EXPECT_EQ(param, value);
  }
}

} // namespace
} // namespace sbpflow
