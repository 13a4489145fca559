// Plan loading: a good plan loads and describes itself; each class of defect
// (corrupt bytes, wrong identifier, bad indices, order, registers, attrs,
// arena, collective order) is rejected with a message naming the culprit.
#include "runtime/plan/PlanLoader.h"
#include "tests/plan/TestPlans.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
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
  TaskSpec input = inputTask("input", 0, "image");
  TaskSpec param{"param", plan::OpKind::Parameter, {}, {1}};
  TaskSpec mm{"fc.matmul", plan::OpKind::MatMul, {0, 1}, {2}, plan::OpAttrs::MatMulAttrs};
  TaskSpec mean = meanTask("loss", plan::OpKind::Mean, 2, 3, 8);
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

// A defect a test makes in a plan that loads, and (part of) the message the
// loader must refuse the defective plan with.
struct Defect {
  std::function<void(PlanSpec &)> make;
  std::string message;
};

// Makes each of `defects` in a fresh `plan()` and expects the load to fail
// with the defect's message: the loop of the tests of one class of defect.
void expectRefused(PlanSpec (*plan)(), const std::vector<Defect> &defects) {
  for (const Defect &defect : defects) {
    SCOPED_TRACE("expected: " + defect.message);
    PlanSpec s = plan();
    defect.make(s);
    EXPECT_ERROR(s, defect.message);
  }
}

// Task `k` and tensor `t` of a plan's only program.
TaskSpec &task(PlanSpec &s, int k) { return s.programs[0].tasks[k]; }
TensorSpec &tensor(PlanSpec &s, int t) { return s.programs[0].tensors[t]; }

// Offsets, sizes and registers assigned again, for a defect that changed
// tasks or types.
void rewire(PlanSpec &s) {
  ProgramSpec &prog = s.programs[0];
  for (TensorSpec &t : prog.tensors)
    t.offset = t.bytes = -1;
  prog.arenaBytes = -1;
  prog.registers.clear();
  finalize(s);
}

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
  s.version = 1;
  EXPECT_ERROR(s, "plan version 1 is not supported");
}

TEST(PlanLoader, Placements) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.placements[0].hierarchy = {2}; },
       "placement 0 'cpu': hierarchy product 2 differs from its 1 ranks"},
      {[](PlanSpec &s) {
         s.placements[0].hierarchy = {1 << 30, 1 << 30, 1 << 30};
       },
       "placement 0 'cpu': hierarchy product overflows"},
      {[](PlanSpec &s) { s.programs[0].tensors[2].placement = 3; },
       "tensor 2 'y': placement 3 out of range"},
  };
  expectRefused(goodPlan, defects);
}

TEST(PlanLoader, ShapesAndSbp) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) {
         s.programs[0].tensors[2].shape = {4, -2};
       },
       "tensor 2 'y': negative dimension -2"},
      // Sizes that would overflow int64 arithmetic downstream.
      {[](PlanSpec &s) {
         s.programs[0].tensors[2].shape = {int64_t{1} << 40, int64_t{1} << 40};
       },
       "tensor 2 'y': more than 2^48 elements"},
      {[](PlanSpec &s) { s.programs[0].tensors[2].sbp = {S(2)}; },
       "tensor 2 'y': split axis 2 out of range for rank 2"},
      {[](PlanSpec &s) {
         s.variables[0].sbp = {S(0), B()};
       },
       "variable 0 'w': nd-SBP has 2 dimensions but its placement hierarchy has 1"},
      {[](PlanSpec &s) { s.programs[0].tensors[1].variable = 4; },
       "tensor 1 'w': variable 4 out of range"},
  };
  expectRefused(goodPlan, defects);
}

TEST(PlanLoader, IndicesAndOrder) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) {
         s.programs[0].tasks[2].inputs = {0, 9};
       },
       "task 2 'fc.matmul' (MatMul): input 1 is tensor 9, out of range"},
      {[](PlanSpec &s) { std::swap(s.programs[0].tasks[2], s.programs[0].tasks[3]); },
       "task 2 'loss' (Mean): input tensor 'y' is not produced by an earlier task"},
      {[](PlanSpec &s) { s.programs[0].tasks[3].outputs = {2}; },
       "tensor 'y' already produced by task 'fc.matmul'"},
      {[](PlanSpec &s) { s.programs[0].tasks[3].inputs = {}; },
       "task 3 'loss' (Mean): expects 1 inputs, has 0"},
  };
  expectRefused(goodPlan, defects);
}

TEST(PlanLoader, Registers) {
  const std::vector<Defect> defects = {
      // The register from y to loss.
      {[](PlanSpec &s) { s.programs[0].registers.erase(s.programs[0].registers.begin() + 2); },
       "task 3 'loss' (Mean): no register carries input tensor 'y'"},
      {[](PlanSpec &s) { s.programs[0].registers[0].count = 0; },
       "register 0 (from task 'input'): count 0"},
      {[](PlanSpec &s) {
         s.programs[0].registers.push_back({1, -1, {}, 1});
       },
       "register 4 (from task 'param'): no consumers"},
      {[](PlanSpec &s) {
         s.programs[0].registers.push_back({17, -1, {2}, 1});
       },
       "register 4: producer task 17 out of range"},
      {[](PlanSpec &s) {
         s.programs[0].registers.push_back({3, -1, {1}, 1});
       },
       "consumer 'param' does not come after its producer"},
  };
  expectRefused(goodPlan, defects);
}

TEST(PlanLoader, Attrs) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.programs[0].tasks[3].attrs = plan::OpAttrs::NONE; },
       "task 3 'loss' (Mean): missing attrs (MeanAttrs expected)"},
      {[](PlanSpec &s) { s.programs[0].tasks[2].attrs = plan::OpAttrs::FillAttrs; },
       "task 2 'fc.matmul' (MatMul): attrs are FillAttrs, expected MatMulAttrs"},
      {[](PlanSpec &s) { s.programs[0].tasks[4].dim = 1; },
       "task 4 'loss.allreduce' (AllReduce): hierarchy_dim 1 out of range"},
  };
  expectRefused(goodPlan, defects);
}

// The verifier checks no enum: a `byte` enum may hold a negative number,
// which a check of the upper bound alone let through.
TEST(PlanLoader, EnumsOutOfRange) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.programs[0].tensors[2].dtype = static_cast<plan::DType>(-1); },
       "tensor 2 'y': unknown dtype -1"},
      {[](PlanSpec &s) { s.programs[0].tensors[2].dtype = static_cast<plan::DType>(9); },
       "tensor 2 'y': unknown dtype 9"},
      {[](PlanSpec &s) { s.variables[0].init = static_cast<plan::InitKind>(-3); },
       "variable 0 'w': unknown init kind"},
      {[](PlanSpec &s) { s.placements[0].device = static_cast<plan::DeviceKind>(-1); },
       "placement 0 'cpu': unknown device kind -1"},
      {[](PlanSpec &s) { s.programs[0].tasks[4].reduce = static_cast<plan::ReduceOp>(-2); },
       "task 4 'loss.allreduce' (AllReduce): unknown reduction -2"},
  };
  expectRefused(goodPlan, defects);
}

// A boxing task's output is its input on another SBP, changed on its
// hierarchy dimension as its op changes it, reducing what the input holds.
TEST(PlanLoader, BoxingChangesWhatItsOpChanges) {
  // Fill, slice, zero-others, all-reduce and all-to-all on two ranks, with
  // `change` made to the program before offsets and registers are assigned.
  auto twoRanks = [](const std::function<void(ProgramSpec &)> &change) {
    PlanSpec spec;
    spec.placements[0] = {"dp", {0, 1}, {2}};
    ProgramSpec prog;
    prog.tensors = {{"x", {4, 3}, {B()}},
                    {"x.s", {4, 3}, {S(0)}},
                    {"x.p", {4, 3}, {P()}},
                    {"x.b", {4, 3}, {B()}},
                    {"x.s1", {4, 3}, {S(1)}}};
    prog.tasks = {
        makeTask("x", plan::OpKind::Fill, {}, {0}, plan::OpAttrs::FillAttrs),
        makeTask("slice", plan::OpKind::Slice, {0}, {1}),
        makeTask("zero", plan::OpKind::ZeroOthers, {0}, {2}),
        makeTask("sum", plan::OpKind::AllReduce, {2}, {3}, plan::OpAttrs::CollectiveAttrs),
        makeTask("a2a", plan::OpKind::AllToAll, {1}, {4}, plan::OpAttrs::CollectiveAttrs)};
    change(prog);
    spec.programs.push_back(prog);
    finalize(spec);
    return spec;
  };
  EXPECT_EQ(loadError(twoRanks([](ProgramSpec &) {})), "loaded");
  // An all-reduce of a split tensor: the plan would sum halves as partial sums.
  EXPECT_ERROR(twoRanks([](ProgramSpec &p) { p.tasks[3].inputs = {1}; }),
               "task 3 'sum' (AllReduce): 'x.s' [S(0)] -> 'x.b' [B] is not what AllReduce "
               "with reduce Sum does on hierarchy dim 0 (S(0) -> B)");
  // The reduction must be what the partial SBP says.
  EXPECT_ERROR(twoRanks([](ProgramSpec &p) { p.tasks[3].reduce = plan::ReduceOp::Max; }),
               "is not what AllReduce with reduce Max does on hierarchy dim 0 (P(sum) -> B)");
  // An all-to-all that keeps the split axis moves nothing it should.
  EXPECT_ERROR(twoRanks([](ProgramSpec &p) { p.tensors[4].sbp = {S(0)}; }),
               "task 4 'a2a' (AllToAll): 'x.s' [S(0)] -> 'x.s1' [S(0)] is not what AllToAll");
  // A local step may not stand in for a collective.
  EXPECT_ERROR(twoRanks([](ProgramSpec &p) { p.tensors[1].sbp = {P()}; }),
               "task 1 'slice' (Slice): 'x' [B] -> 'x.s' [P(sum)] is not what Slice");
  // Nor change the shape.
  EXPECT_ERROR(twoRanks([](ProgramSpec &p) {
                 p.tensors[3].shape = {4, 4};
               }),
               "task 3 'sum' (AllReduce): 'x.b' is not 'x.p' on another SBP");
}

// Whether a rank can run a plan: its placements' device, and its memory.
TEST(PlanLoader, RankFitsItsDevice) {
  PlanSpec s = goodPlan();
  auto loaded = loadPlanBuffer(build(s));
  ASSERT_TRUE(loaded) << loaded.status().message();
  const plan::Plan &p = *loaded->plan();
  EXPECT_TRUE(checkRankFits(p, 0, plan::DeviceKind::CPU, 1 << 20));
  Status onGpu = checkRankFits(p, 0, plan::DeviceKind::CUDA, 1 << 20);
  ASSERT_FALSE(onGpu);
  EXPECT_EQ(onGpu.message(), "placement 'cpu' of the plan is on CPU devices, but this "
                             "rank runs on a CUDA device (compile the model for the device it "
                             "runs on)");
  // A rank outside every placement holds no tensor: any device will do.
  EXPECT_TRUE(checkRankFits(p, 5, plan::DeviceKind::CUDA, -1));
  const RankMemory m = rankMemory(p, 0);
  EXPECT_EQ(m.variables, 3 * 2 * 4);
  EXPECT_EQ(m.arenas, p.programs()->Get(0)->arena_bytes());
  EXPECT_TRUE(checkRankFits(p, 0, plan::DeviceKind::CPU, m.total()));
  Status tooSmall = checkRankFits(p, 0, plan::DeviceKind::CPU, m.total() - 1);
  ASSERT_FALSE(tooSmall);
  EXPECT_NE(tooSmall.message().find("the plan needs " + std::to_string(m.total()) +
                                    " bytes on this rank (" + std::to_string(m.arenas) +
                                    " for program arenas, 24 for variables) but its CPU device "
                                    "has " +
                                    std::to_string(m.total() - 1) + " bytes: it does not fit"),
            std::string::npos)
      << tooSmall.message();
  s.placements[0].device = plan::DeviceKind::CUDA;
  auto gpuPlan = loadPlanBuffer(build(s));
  ASSERT_TRUE(gpuPlan) << gpuPlan.status().message();
  Status onCpu = checkRankFits(*gpuPlan->plan(), 0, plan::DeviceKind::CPU, -1);
  ASSERT_FALSE(onCpu);
  EXPECT_NE(onCpu.message().find("placement 'cpu' of the plan is on CUDA devices"),
            std::string::npos)
      << onCpu.message();
}

TEST(PlanLoader, Arena) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.programs[0].arenaBytes = 40; }, "exceeds arena_bytes 40"},
      {[](PlanSpec &s) { s.programs[0].tensors[2].bytes = 4; },
       "tensor 2 'y': bytes 4 smaller than its largest local shard (32)"},
  };
  expectRefused(goodPlan, defects);
}

TEST(PlanLoader, CollectiveOrder) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.programs[0].tasks[4].seq = 1; },
       "collective_seq values are not a permutation of 0..0"},
      {[](PlanSpec &s) { s.programs[0].tasks[3].seq = 0; },
       "task 3 'loss' (Mean): collective_seq 0 on a task that is not a collective"},
  };
  expectRefused(goodPlan, defects);
}

TEST(PlanLoader, MetricsAndInputs) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) {
         s.programs[0].metrics = {{"acc", 12}};
       },
       "metric 'acc' points at tensor 12, out of range"},
      {[](PlanSpec &s) {
         s.programs[0].inputs = {{"label", -3}};
       },
       "input binding 'label' points at tensor -3, out of range"},
  };
  expectRefused(goodPlan, defects);
}

// The driver reports metrics by name: a name may stand for one metric only.
TEST(PlanLoader, MetricNamesAreUnique) {
  PlanSpec spec = goodPlan();
  spec.programs[0].metrics = {{"loss", 4}, {"loss", 4}};
  EXPECT_ERROR(spec, "program 'train': metric 'loss' listed twice");
}

// One task of every transformer kind, AdamW with clipping, and an output.
PlanSpec transformerPlan() {
  PlanSpec spec;
  spec.variables = {{"wte", {5, 4}},
                    {"ln.g", {4}},
                    {"ln.b", {4}},
                    {"wte.m", {5, 4}},
                    {"wte.v", {5, 4}},
                    {"wte.step", {}, 0, {B()}, plan::InitKind::Zeros, 0, 0, 0, plan::DType::I32}};
  ProgramSpec prog;
  auto f32 = [](std::string name, std::vector<int64_t> shape, int variable = -1) {
    return TensorSpec{std::move(name), std::move(shape), {B()}, plan::DType::F32, variable};
  };
  prog.tensors = {
      {"ids", {2, 3}, {B()}, plan::DType::I32}, // 0
      f32("wte", {5, 4}, 0),                    // 1
      f32("e", {2, 3, 4}),                      // 2
      f32("g", {4}, 1),                         // 3
      f32("b", {4}, 2),                         // 4
      f32("n", {2, 3, 4}),                      // 5
      f32("a", {2, 3, 4}),                      // 6
      f32("h", {2, 3, 4}),                      // 7
      f32("d", {2, 3, 4}),                      // 8
      f32("t", {3, 2, 4}),                      // 9
      f32("r", {6, 4}),                         // 10
      f32("nar", {6, 2}),                       // 11
      f32("narg", {6, 4}),                      // 12
      f32("cat", {12, 4}),                      // 13
      f32("probs", {12, 4}),                    // 14
      f32("dprobs", {12, 4}),                   // 15
      f32("sumsq", {}),                         // 16
      f32("scale", {}),                         // 17
      f32("dwte", {5, 4}),                      // 18
      f32("dx", {2, 3, 4}),                     // 19
      f32("dg", {4}),                           // 20
      f32("db", {4}),                           // 21
      f32("dq", {2, 3, 4}),                     // 22
      f32("dk", {2, 3, 4}),                     // 23
      f32("dv", {2, 3, 4}),                     // 24
      f32("dh", {2, 3, 4}),                     // 25
  };
  using K = plan::OpKind;
  using A = plan::OpAttrs;
  TaskSpec input{"input", K::Input, {}, {0}, A::InputAttrs};
  input.field = "tokens";
  TaskSpec attn{"attn", K::CausalAttention, {5, 5, 5}, {6}, A::AttentionAttrs};
  attn.heads = 2;
  TaskSpec drop{"drop", K::Dropout, {7}, {8}, A::DropoutAttrs};
  drop.p = 0.1f;
  drop.seed = 7;
  TaskSpec transpose{"transpose", K::Transpose, {8}, {9}, A::TransposeAttrs};
  transpose.perm = {1, 0, 2};
  TaskSpec narrow{"narrow", K::Narrow, {10}, {11}, A::NarrowAttrs};
  narrow.axis = 1;
  narrow.begin = 1;
  TaskSpec narrowGrad{"narrow_grad", K::NarrowGrad, {11}, {12}, A::NarrowAttrs};
  narrowGrad.axis = 1;
  narrowGrad.begin = 2;
  TaskSpec concat{"concat", K::Concat, {10, 12}, {13}, A::ConcatAttrs};
  TaskSpec clip{"clip", K::ClipScale, {16}, {17}, A::ClipAttrs};
  clip.maxNorm = 1.0f;
  TaskSpec adam{"adamw", K::AdamW, {18, 17}, {}, A::AdamWAttrs};
  adam.lr = 0.001f;
  adam.weightDecay = 0.1f;
  adam.param = 0;
  adam.m = 3;
  adam.v = 4;
  adam.step = 5;
  TaskSpec attnGrad{
      "attn_grad", K::CausalAttentionGrad, {6, 5, 5, 5}, {22, 23, 24}, A::AttentionAttrs};
  attnGrad.heads = 2;
  prog.tasks = {
      input,                                                                // 0
      {"wte", K::Parameter, {}, {1}},                                       // 1
      {"embedding", K::Embedding, {1, 0}, {2}},                             // 2
      {"g", K::Parameter, {}, {3}},                                         // 3
      {"b", K::Parameter, {}, {4}},                                         // 4
      {"ln", K::LayerNorm, {2, 3, 4}, {5}, A::NormAttrs},                   // 5
      attn,                                                                 // 6
      {"gelu", K::Gelu, {6}, {7}},                                          // 7
      drop,                                                                 // 8
      transpose,                                                            // 9
      {"reshape", K::Reshape, {9}, {10}},                                   // 10
      narrow,                                                               // 11
      narrowGrad,                                                           // 12
      concat,                                                               // 13
      {"softmax", K::Softmax, {13}, {14}},                                  // 14
      {"softmax_grad", K::SoftmaxGrad, {14, 14}, {15}},                     // 15
      {"square_sum", K::SquareSum, {15}, {16}},                             // 16
      clip,                                                                 // 17
      {"embedding_grad", K::EmbeddingGrad, {2, 0}, {18}},                   // 18
      adam,                                                                 // 19
      {"ln_grad", K::LayerNormGrad, {5, 2, 3}, {19, 20, 21}, A::NormAttrs}, // 20
      attnGrad,                                                             // 21
      {"gelu_grad", K::GeluGrad, {7, 6}, {25}},                             // 22
  };
  prog.inputs = {{"tokens", 0}};
  prog.outputs = {{"probs", 14}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

TEST(PlanLoader, TransformerKindsLoadAndDescribe) {
  auto loaded = loadPlanBuffer(build(transformerPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  std::string text = describePlan(*loaded->plan());
  for (const char *want :
       {"attn CausalAttention (%5, %5, %5) -> (%6) queue Compute heads 2",
        "drop Dropout (%7) -> (%8) queue Compute p 0.1 seed 7",
        "transpose Transpose (%8) -> (%9) queue Compute perm [1,0,2]",
        "narrow Narrow (%10) -> (%11) queue Compute axis 1 begin 1",
        "concat Concat (%10, %12) -> (%13) queue Compute axis 0",
        "clip ClipScale (%16) -> (%17) queue Compute max_norm 1",
        "ln LayerNorm (%2, %3, %4) -> (%5) queue Compute eps 1e-05",
        "ln_grad LayerNormGrad (%5, %2, %3) -> (%19, %20, %21)",
        "adamw AdamW (%18, %17) -> () queue Compute lr 0.001 beta1 0.9 beta2 0.999 eps 1e-05 "
        "weight_decay 0.1 variable #0 m #3 v #4 step #5",
        "output probs <- %14"})
    EXPECT_NE(text.find(want), std::string::npos) << "missing '" << want << "' in\n" << text;
}

TEST(PlanLoader, TransformerKindDefects) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.programs[0].tensors[0].dtype = plan::DType::F32; },
       "task 2 'embedding' (Embedding): input 1 'ids' must be I32, is F32"},
      {[](PlanSpec &s) { task(s, 6).heads = 3; },
       "task 6 'attn' (CausalAttention): AttentionAttrs.heads 3 must be positive and "
       "divide the 4 channels"},
      {[](PlanSpec &s) { task(s, 21).heads = 0; },
       "task 21 'attn_grad' (CausalAttentionGrad): AttentionAttrs.heads 0"},
      {[](PlanSpec &s) { task(s, 8).p = 1.0f; },
       "task 8 'drop' (Dropout): DropoutAttrs.p must lie in [0, 1), is 1"},
      {[](PlanSpec &s) { task(s, 8).attrs = plan::OpAttrs::NONE; },
       "task 8 'drop' (Dropout): missing attrs (DropoutAttrs expected)"},
      {[](PlanSpec &s) {
         task(s, 9).perm = {0, 0, 2};
       },
       "task 9 'transpose' (Transpose): TransposeAttrs.perm is not a permutation "
       "taking [2,3,4] to [3,2,4]"},
      // A permutation, but not the one the shapes say.
      {[](PlanSpec &s) {
         task(s, 9).perm = {0, 1, 2};
       },
       "TransposeAttrs.perm is not a permutation taking"},
      {[](PlanSpec &s) {
         task(s, 10).outputs = {11};
         rewire(s);
       },
       "task 10 'reshape' (Reshape): reshape of [3,2,4] into [6,2] changes the "
       "element count"},
      {[](PlanSpec &s) { task(s, 11).begin = 3; },
       "task 11 'narrow' (Narrow): NarrowAttrs (axis 1, begin 3) do not place [6,2] "
       "inside [6,4]"},
      {[](PlanSpec &s) { task(s, 12).axis = 0; },
       "task 12 'narrow_grad' (NarrowGrad): NarrowAttrs (axis 0, begin 2)"},
      {[](PlanSpec &s) { task(s, 13).axis = 2; },
       "task 13 'concat' (Concat): ConcatAttrs.axis 2 out of range for rank 2"},
      {[](PlanSpec &s) { task(s, 13).axis = 1; },
       "task 13 'concat' (Concat): operand 'r' [6,4] does not fit the result [12,4] "
       "off axis 1"},
      {[](PlanSpec &s) {
         task(s, 13).inputs = {10};
         rewire(s);
       },
       "task 13 'concat' (Concat): operands sum to 6 on axis 0, the result has 12"},
      {[](PlanSpec &s) { task(s, 17).maxNorm = 0.0f; },
       "task 17 'clip' (ClipScale): ClipAttrs.max_norm must be positive, is 0"},
      {[](PlanSpec &s) {
         task(s, 20).outputs = {19, 20};
       },
       "task 20 'ln_grad' (LayerNormGrad): expects 3 outputs, has 2"},
      {[](PlanSpec &s) { task(s, 20).eps = 0.0f; },
       "task 20 'ln_grad' (LayerNormGrad): NormAttrs.eps must be positive"},
      {[](PlanSpec &s) { task(s, 19).m = 9; },
       "task 19 'adamw' (AdamW): m variable 9 out of range (plan has 6 variables)"},
      {[](PlanSpec &s) { task(s, 19).v = 1; },
       "task 19 'adamw' (AdamW): v variable 'ln.g' differs in shape from the "
       "parameter 'wte'"},
      {[](PlanSpec &s) { task(s, 19).step = 3; },
       "task 19 'adamw' (AdamW): step variable 'wte.m' must be a scalar"},
      // An f32 counter stops at 2^24.
      {[](PlanSpec &s) { s.variables[5].dtype = plan::DType::F32; },
       "task 19 'adamw' (AdamW): step variable 'wte.step' must be i32"},
      {[](PlanSpec &s) { s.variables[3].dtype = plan::DType::I32; },
       "task 19 'adamw' (AdamW): m variable 'wte.m' must be f32"},
      {[](PlanSpec &s) {
         task(s, 19).inputs = {18, 15};
         rewire(s);
       },
       "task 19 'adamw' (AdamW): gradient scale 'dprobs' must be a scalar"},
      {[](PlanSpec &s) {
         task(s, 19).inputs = {18, 17, 16};
         rewire(s);
       },
       "task 19 'adamw' (AdamW): expects 1 to 2 inputs, has 3"},
      {[](PlanSpec &s) {
         task(s, 19).inputs = {15, 17};
         rewire(s);
       },
       "task 19 'adamw' (AdamW): gradient shape differs from variable 'wte'"},
      {[](PlanSpec &s) {
         s.programs[0].outputs = {{"probs", 14}, {"probs", 15}};
       },
       "program 'train': output 'probs' bound twice"},
      {[](PlanSpec &s) {
         s.programs[0].outputs = {{"probs", 40}};
       },
       "output binding 'probs' points at tensor 40, out of range"},
  };
  expectRefused(transformerPlan, defects);
}

TEST(PlanLoader, LocalBoxingAttrsAreOptional) {
  PlanSpec spec;
  spec.placements[0] = {"dp", {0, 1}, {2}};
  ProgramSpec prog;
  prog.tensors = {{"x", {4, 3}}, {"x.s", {4, 3}, {S(0)}}, {"x.p", {4, 3}, {P()}}};
  prog.tasks = {{"x", plan::OpKind::Fill, {}, {0}, plan::OpAttrs::FillAttrs},
                {"slice", plan::OpKind::Slice, {0}, {1}},
                {"zero", plan::OpKind::ZeroOthers, {0}, {2}, plan::OpAttrs::CollectiveAttrs}};
  spec.programs.push_back(prog);
  finalize(spec);
  EXPECT_EQ(loadError(spec), "loaded");
  spec.programs[0].tasks[1].attrs = plan::OpAttrs::FillAttrs;
  EXPECT_ERROR(spec, "task 1 'slice' (Slice): attrs are FillAttrs, expected CollectiveAttrs");
  spec.programs[0].tasks[1].attrs = plan::OpAttrs::CollectiveAttrs;
  spec.programs[0].tasks[2].dim = 1;
  EXPECT_ERROR(spec, "task 2 'zero' (ZeroOthers): hierarchy_dim 1 out of range");
}

TEST(PlanLoader, LabelsAreI32) {
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {{"logits", {4, 3}}, {"labels", {4}}, {"loss", {4}}};
  prog.tasks = {makeTask("logits", plan::OpKind::Fill, {}, {0}, plan::OpAttrs::FillAttrs),
                inputTask("labels", 1, "label"),
                makeTask("xent", plan::OpKind::SoftmaxXent, {0, 1}, {2})};
  spec.programs.push_back(prog);
  finalize(spec);
  EXPECT_ERROR(spec, "task 2 'xent' (SoftmaxXent): input 1 'labels' must be I32, is F32");
  spec.programs[0].tensors[1].dtype = plan::DType::I32;
  EXPECT_EQ(loadError(spec), "loaded");
  // Fill writes f32 only.
  spec.programs[0].tasks[1] =
      makeTask("labels", plan::OpKind::Fill, {}, {1}, plan::OpAttrs::FillAttrs);
  EXPECT_ERROR(spec, "task 1 'labels' (Fill): output 0 'labels' must be F32, is I32");
}

// U8 is a communicator payload type: no kernel takes a U8 tensor yet.
TEST(PlanLoader, U8TensorsAreRefused) {
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {{"bytes", {4}, {B()}, plan::DType::U8}, {"copy", {4}, {B()}, plan::DType::U8}};
  prog.tasks = {inputTask("bytes", 0, "bytes"), makeTask("copy", plan::OpKind::Reshape, {0}, {1})};
  spec.programs.push_back(prog);
  finalize(spec);
  EXPECT_ERROR(spec, "tensor 0 'bytes': dtype U8 is not supported by any op yet");
}

// Mixed precision: f32 variables cast to bf16, bf16 matmuls with a bf16 and
// an f32 result, layer norm of bf16 with f32 weights, an f32 loss.
PlanSpec bf16Plan() {
  const plan::DType bf16 = plan::DType::BF16, f32 = plan::DType::F32;
  PlanSpec spec;
  spec.variables = {{"w", {7, 5}}, {"g", {5}}, {"b", {5}}};
  ProgramSpec prog;
  prog.tensors = {
      {"x", {13, 7}},                   // 0
      {"x.bf16", {13, 7}, {B()}, bf16}, // 1
      {"w", {7, 5}, {B()}, f32, 0},     // 2
      {"w.bf16", {7, 5}, {B()}, bf16},  // 3
      {"h", {13, 5}, {B()}, bf16},      // 4
      {"g", {5}, {B()}, f32, 1},        // 5
      {"b", {5}, {B()}, f32, 2},        // 6
      {"n", {13, 5}, {B()}, bf16},      // 7
      {"n.f32", {13, 5}},               // 8
      {"h2", {13, 5}},                  // 9
      {"loss", {}},                     // 10
  };
  using K = plan::OpKind;
  TaskSpec mean = makeTask("loss", K::Mean, {8}, {10}, plan::OpAttrs::MeanAttrs);
  mean.count = 65;
  prog.tasks = {inputTask("input", 0, "x"),                                             // 0
                makeTask("x.cast", K::Cast, {0}, {1}),                                  // 1
                makeTask("w", K::Parameter, {}, {2}),                                   // 2
                makeTask("w.cast", K::Cast, {2}, {3}),                                  // 3
                makeTask("mm", K::MatMul, {1, 3}, {4}),                                 // 4
                makeTask("g", K::Parameter, {}, {5}),                                   // 5
                makeTask("b", K::Parameter, {}, {6}),                                   // 6
                makeTask("ln", K::LayerNorm, {4, 5, 6}, {7}, plan::OpAttrs::NormAttrs), // 7
                makeTask("n.cast", K::Cast, {7}, {8}),                                  // 8
                makeTask("mm.f32", K::MatMul, {1, 3}, {9}),                             // 9
                mean};                                                                  // 10
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

TEST(PlanLoader, Bf16PlanLoadsWithTwoByteElements) {
  PlanSpec s = bf16Plan();
  EXPECT_EQ(s.programs[0].tensors[1].bytes, 13 * 7 * 2);
  ASSERT_EQ(loadError(s), "loaded");
  auto loaded = loadPlanBuffer(build(s));
  ASSERT_TRUE(loaded);
  std::string text = describePlan(*loaded->plan());
  EXPECT_NE(text.find("x.bf16 BF16[13,7]"), std::string::npos) << text;
  EXPECT_NE(text.find("x.cast Cast (%0) -> (%1)"), std::string::npos) << text;
  s.programs[0].tensors[4].bytes = 13 * 5 * 2 - 1;
  EXPECT_ERROR(s, "tensor 4 'h': bytes 129 smaller than its largest local shard (130)");
}

TEST(PlanLoader, Bf16DtypeDefects) {
  constexpr plan::DType bf16 = plan::DType::BF16, f32 = plan::DType::F32;
  const std::vector<Defect> defects = {
      // Operands of one matmul must agree: f32 x bf16.
      {[](PlanSpec &s) {
         task(s, 4).inputs = {0, 3};
         rewire(s);
       },
       "task 4 'mm' (MatMul): input 1 'w.bf16' must be F32 like the task's other "
       "operands, is BF16"},
      // A bf16 product may land in f32, an f32 one not in bf16.
      {[](PlanSpec &s) {
         task(s, 4).inputs = {0, 2};
         rewire(s);
       },
       "task 4 'mm' (MatMul): output 0 'h' must be F32 like the task's other "
       "operands, is BF16"},
      // Variables and their views are f32.
      {[](PlanSpec &s) { tensor(s, 2).dtype = bf16; },
       "task 2 'w' (Parameter): output 0 'w' must be F32, is BF16"},
      // Reductions to a loss, optimisers and layer norm weights are f32.
      {[](PlanSpec &s) {
         task(s, 10).inputs = {7};
         rewire(s);
       },
       "task 10 'loss' (Mean): input 0 'n' must be F32, is BF16"},
      {[](PlanSpec &s) {
         tensor(s, 10).dtype = bf16;
         rewire(s);
       },
       "task 10 'loss' (Mean): output 0 'loss' must be F32, is BF16"},
      {[](PlanSpec &s) {
         task(s, 7).inputs = {4, 3, 6};
         rewire(s);
       },
       "task 7 'ln' (LayerNorm): input 1 'w.bf16' must be F32, is BF16"},
      {[](PlanSpec &s) {
         tensor(s, 7).dtype = f32;
         rewire(s);
       },
       "task 7 'ln' (LayerNorm): output 0 'n' must be BF16 like the task's other "
       "operands, is F32"},
      // Casts are between floats, of one shape.
      {[](PlanSpec &s) {
         tensor(s, 0).dtype = plan::DType::I32;
         rewire(s);
       },
       "task 1 'x.cast' (Cast): input 0 'x' must be F32 or BF16, is I32"},
      {[](PlanSpec &s) {
         tensor(s, 1).shape = {7, 13};
       },
       "task 1 'x.cast' (Cast): cast of [13,7] into [7,13] changes the shape"},
      // Collectives keep the type.
      {[](PlanSpec &s) {
         s.programs[0].tensors.push_back({"h.sum", {13, 5}, {B()}, f32});
         s.programs[0].tasks.push_back(makeTask("h.allreduce", plan::OpKind::AllReduce, {4}, {11},
                                                plan::OpAttrs::CollectiveAttrs));
         rewire(s);
       },
       "task 11 'h.allreduce' (AllReduce): output 0 'h.sum' must be BF16 like the "
       "task's other tensors, is F32"},
  };
  expectRefused(bf16Plan, defects);
}

// x [4, 2, 3] and a bias [2, 3] cast to bf16, fused bias + GELU into a bf16
// pre-activation and its GELU, the GELU cast back to f32.
PlanSpec biasGeluPlan() {
  const plan::DType bf16 = plan::DType::BF16, f32 = plan::DType::F32;
  PlanSpec spec;
  spec.variables = {{"b", {2, 3}}};
  ProgramSpec prog;
  prog.tensors = {
      {"x", {4, 2, 3}},                   // 0
      {"b", {2, 3}, {B()}, f32, 0},       // 1
      {"x.bf16", {4, 2, 3}, {B()}, bf16}, // 2
      {"b.bf16", {2, 3}, {B()}, bf16},    // 3
      {"pre", {4, 2, 3}, {B()}, bf16},    // 4
      {"y", {4, 2, 3}, {B()}, bf16},      // 5
      {"y.f32", {4, 2, 3}},               // 6
  };
  using K = plan::OpKind;
  prog.tasks = {inputTask("input", 0, "x"),                            // 0
                makeTask("b", K::Parameter, {}, {1}),                  // 1
                makeTask("x.cast", K::Cast, {0}, {2}),                 // 2
                makeTask("b.cast", K::Cast, {1}, {3}),                 // 3
                makeTask("fc.bias_gelu", K::BiasGelu, {2, 3}, {4, 5}), // 4
                makeTask("y.cast", K::Cast, {5}, {6})};                // 5
  prog.outputs = {{"y", 6}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

TEST(PlanLoader, BiasGeluLoadsAndIsChecked) {
  PlanSpec s = biasGeluPlan();
  ASSERT_EQ(loadError(s), "loaded");
  auto loaded = loadPlanBuffer(build(s));
  ASSERT_TRUE(loaded);
  const std::string text = describePlan(*loaded->plan());
  EXPECT_NE(text.find("fc.bias_gelu BiasGelu (%2, %3) -> (%4, %5)"), std::string::npos) << text;
  const std::vector<Defect> defects = {
      // Both outputs are needed: the backward reads pre, the next layer y.
      {[](PlanSpec &s) {
         task(s, 4).outputs = {5};
         s.programs[0].tasks.pop_back(); // y.cast would read a tensor nothing writes
         s.programs[0].outputs.clear();
         rewire(s);
       },
       "task 4 'fc.bias_gelu' (BiasGelu): expects 2 outputs, has 1"},
      {[](PlanSpec &s) {
         task(s, 4).inputs = {2};
         rewire(s);
       },
       "task 4 'fc.bias_gelu' (BiasGelu): expects 2 inputs, has 1"},
      // One element type for x, the bias, pre and y.
      {[](PlanSpec &s) {
         tensor(s, 5).dtype = plan::DType::F32;
         rewire(s);
       },
       "task 4 'fc.bias_gelu' (BiasGelu): output 1 'y' must be BF16 like the task's "
       "other operands, is F32"},
      {[](PlanSpec &s) {
         task(s, 4).inputs = {2, 1};
         rewire(s);
       },
       "task 4 'fc.bias_gelu' (BiasGelu): input 1 'b' must be BF16 like the task's "
       "other operands, is F32"},
      {[](PlanSpec &s) {
         tensor(s, 4).dtype = plan::DType::I32;
         rewire(s);
       },
       "task 4 'fc.bias_gelu' (BiasGelu): output 0 'pre' must be F32 or BF16, is I32"},
  };
  expectRefused(biasGeluPlan, defects);
}

// TestPlans writes every variable as f32, so this plan is built by hand.
TEST(PlanLoader, Bf16VariableIsRefused) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<plan::SbpDim> sbp = {plan::SbpDim(plan::SbpKind::Broadcast, 0)};
  auto placement = plan::CreatePlacement(fbb, fbb.CreateString("cpu"), plan::DeviceKind::CPU,
                                         fbb.CreateVector(std::vector<int>{0}),
                                         fbb.CreateVector(std::vector<int>{1}));
  auto init = plan::CreateInit(fbb, plan::InitKind::Zeros, 0, 0, 0);
  auto variable = plan::CreateVariable(fbb, fbb.CreateString("w"), plan::DType::BF16,
                                       fbb.CreateVector(std::vector<int64_t>{3, 2}), 0,
                                       fbb.CreateVectorOfStructs(sbp), init);
  auto root = plan::CreatePlan(fbb, kPlanVersion,
                               fbb.CreateVector(std::vector<decltype(placement)>{placement}),
                               fbb.CreateVector(std::vector<decltype(variable)>{variable}),
                               fbb.CreateVector(std::vector<flatbuffers::Offset<plan::Program>>{}),
                               fbb.CreateString("test"));
  plan::FinishPlanBuffer(fbb, root);
  auto loaded = loadPlanBuffer(fbb.GetBufferPointer(), fbb.GetSize());
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.status().message().find("variable 0 'w': variables must be f32"),
            std::string::npos)
      << loaded.status().message();
}

// A plan of one [3, 2] variable of `dtype` with `init`, loaded.
StatusOr<LoadedPlan> loadOneVariable(plan::DType dtype, plan::InitKind init, float a) {
  flatbuffers::FlatBufferBuilder fbb;
  std::vector<plan::SbpDim> sbp = {plan::SbpDim(plan::SbpKind::Broadcast, 0)};
  auto placement = plan::CreatePlacement(fbb, fbb.CreateString("cpu"), plan::DeviceKind::CPU,
                                         fbb.CreateVector(std::vector<int>{0}),
                                         fbb.CreateVector(std::vector<int>{1}));
  auto variable = plan::CreateVariable(
      fbb, fbb.CreateString("count"), dtype, fbb.CreateVector(std::vector<int64_t>{3, 2}), 0,
      fbb.CreateVectorOfStructs(sbp), plan::CreateInit(fbb, init, a, 0, 0));
  auto root = plan::CreatePlan(fbb, kPlanVersion,
                               fbb.CreateVector(std::vector<decltype(placement)>{placement}),
                               fbb.CreateVector(std::vector<decltype(variable)>{variable}),
                               fbb.CreateVector(std::vector<flatbuffers::Offset<plan::Program>>{}),
                               fbb.CreateString("test"));
  plan::FinishPlanBuffer(fbb, root);
  return loadPlanBuffer(fbb.GetBufferPointer(), fbb.GetSize());
}

// An i32 variable (a counter) starts from zeros or a whole number.
TEST(PlanLoader, I32VariablesStartFromZerosOrAWholeConstant) {
  EXPECT_TRUE(loadOneVariable(plan::DType::I32, plan::InitKind::Zeros, 0));
  EXPECT_TRUE(loadOneVariable(plan::DType::I32, plan::InitKind::Constant, -7));
  for (auto [init, a] : {std::pair<plan::InitKind, float>{plan::InitKind::Constant, 0.5f},
                         {plan::InitKind::Uniform, 0},
                         {plan::InitKind::Normal, 0}}) {
    auto loaded = loadOneVariable(plan::DType::I32, init, a);
    ASSERT_FALSE(loaded);
    EXPECT_NE(loaded.status().message().find(
                  "variable 0 'count': an i32 variable starts from Zeros or an integral Constant"),
              std::string::npos)
        << loaded.status().message();
  }
}

// Local SGD on two replicas (DiLoCo): the inner program scales a gradient;
// the round's program sums the pseudo-gradients and takes the outer step.
// Variables: the parameter (one value per replica), its anchor and outer
// momentum, and three a defect may point the outer step at.
PlanSpec localSgdPlan() {
  PlanSpec spec;
  spec.placements[0] = {"dp", {0, 1}, {2}};
  const std::vector<int64_t> shape = {4, 3};
  spec.variables = {{"w", shape},
                    {"w.anchor", shape},
                    {"w.outer_m", shape},
                    {"b", {3}},
                    {"w.split", shape, 0, {S(0)}},
                    {"w.count", shape, 0, {B()}, plan::InitKind::Zeros, 0, 0, 0, plan::DType::I32}};
  spec.variables[0].replicaDim = 0;
  using K = plan::OpKind;
  ProgramSpec outer;
  outer.name = "outer";
  outer.tensors = {{"w", shape, {B()}, plan::DType::F32, 0},
                   {"w.anchor", shape, {B()}, plan::DType::F32, 1},
                   {"delta", shape, {P()}},
                   {"delta.sum", shape, {B()}}};
  TaskSpec step = makeTask("outer_step", K::OuterStep, {3}, {}, plan::OpAttrs::OuterAttrs);
  step.lr = 0.7f;
  step.momentum = 0.9f;
  step.nesterov = true;
  step.replicas = 2;
  step.param = 0;
  step.anchor = 1;
  step.momentumBuffer = 2;
  outer.tasks = {
      makeTask("w", K::Parameter, {}, {0}),
      makeTask("w.anchor", K::Parameter, {}, {1}),
      makeTask("delta", K::PseudoGradient, {1, 0}, {2}),
      makeTask("delta.allreduce", K::AllReduce, {2}, {3}, plan::OpAttrs::CollectiveAttrs),
      step,
  };
  ProgramSpec train;
  train.tensors = {{"g", shape}, {"g.own", shape}};
  TaskSpec scale = makeTask("g.own", K::Scale, {0}, {1}, plan::OpAttrs::ScaleAttrs);
  scale.factor = 0.5f;
  train.tasks = {fillTask("g", 0, 1.0f), scale};
  spec.programs = {outer, train};
  spec.schedule = ScheduleSpec{"diloco", "train", 4, {runStep("outer")}};
  finalize(spec);
  return spec;
}

// Offsets, sizes and registers of every program assigned again.
void rewireAll(PlanSpec &s) {
  for (ProgramSpec &prog : s.programs) {
    for (TensorSpec &t : prog.tensors)
      t.offset = t.bytes = -1;
    prog.arenaBytes = -1;
    prog.registers.clear();
  }
  finalize(s);
}

TEST(PlanLoader, LocalSgdLoads) {
  EXPECT_EQ(loadError(localSgdPlan()), "loaded");
  // Plain averaging: no momentum, no buffer.
  PlanSpec plain = localSgdPlan();
  task(plain, 4).momentum = 0.0f;
  task(plain, 4).nesterov = false;
  task(plain, 4).momentumBuffer = -1;
  EXPECT_EQ(loadError(plain), "loaded");
  // CO2: a gap penalty and a clipped outer momentum.
  PlanSpec co2 = localSgdPlan();
  task(co2, 4).gapPenalty = 2.0f;
  task(co2, 4).clip = 0.01f;
  EXPECT_EQ(loadError(co2), "loaded");
  // No schedule: every step runs "train".
  PlanSpec none = localSgdPlan();
  none.schedule.reset();
  EXPECT_EQ(loadError(none), "loaded");
}

TEST(PlanLoader, ReplicaDimAndScheduleDefects) {
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.variables[0].replicaDim = 1; },
       "variable 0 'w': replica_dim 1 is not a dimension of its placement's hierarchy [2] "
       "(-1: none)"},
      {[](PlanSpec &s) { s.variables[0].replicaDim = -2; },
       "variable 0 'w': replica_dim -2 is not a dimension"},
      {[](PlanSpec &s) { s.schedule->algorithm = ""; }, "schedule: algorithm is empty"},
      {[](PlanSpec &s) { s.schedule->inner = "eval"; },
       "schedule 'diloco': inner program 'eval' is not a program of the plan"},
      {[](PlanSpec &s) { s.schedule->period = 0; },
       "schedule 'diloco': period 0 (at least 1 inner step a round)"},
      {[](PlanSpec &s) {
         s.schedule->round = {runStep("outer"), runStep("sync")};
       },
       "schedule 'diloco': round step 1 runs 'sync', which is not a program of the plan"},
      {[](PlanSpec &s) { s.schedule->round = {runStep("train")}; },
       "schedule 'diloco': round step 0 runs 'train', the inner program"},
  };
  expectRefused(localSgdPlan, defects);
}

// A CO2-like round over localSgdPlan's replicas: join the background
// program, run `adopt` (an Assign of w's anchor from w) and start
// `exchange` (the outer step with keep_anchor, which leaves the anchor to
// the round that reads it). The programs: outer, train, adopt, exchange.
PlanSpec co2Plan() {
  PlanSpec spec = localSgdPlan();
  using K = plan::OpKind;
  ProgramSpec exchange = spec.programs[0];
  exchange.name = "exchange";
  exchange.tasks[4].keepAnchor = true;
  ProgramSpec adopt;
  adopt.name = "adopt";
  adopt.tensors = {{"w", {4, 3}, {B()}, plan::DType::F32, 0}};
  TaskSpec assign = makeTask("w.anchor.assign", K::Assign, {0}, {}, plan::OpAttrs::AssignAttrs);
  assign.variable = 1;
  adopt.tasks = {makeTask("w", K::Parameter, {}, {0}), assign};
  spec.programs.push_back(adopt);
  spec.programs.push_back(exchange);
  spec.schedule =
      ScheduleSpec{"co2", "train", 4, {joinStep(), runStep("adopt"), startStep("exchange")}};
  finalize(spec);
  return spec;
}

TEST(PlanLoader, ScheduleStepsLoadAndDescribe) {
  auto diloco = loadPlanBuffer(build(localSgdPlan()));
  ASSERT_TRUE(diloco) << diloco.status().message();
  std::string text = describePlan(*diloco->plan());
  EXPECT_NE(text.find("\nschedule diloco: train x4, then run outer\n"), std::string::npos) << text;
  EXPECT_NE(text.find("variable #0 anchor #1 buffer #2\n"), std::string::npos) << text;
  auto co2 = loadPlanBuffer(build(co2Plan()));
  ASSERT_TRUE(co2) << co2.status().message();
  text = describePlan(*co2->plan());
  for (const char *want :
       {"\nschedule co2: train x4, then join, run adopt, start exchange\n",
        "w.anchor.assign Assign (%0) -> () queue Compute variable #1\n",
        "outer_step OuterStep (%3) -> () queue Compute lr 0.7 momentum 0.9 nesterov replicas 2 "
        "gap_penalty 1 clip 0 variable #0 anchor #1 buffer #2 keep_anchor\n"})
    EXPECT_NE(text.find(want), std::string::npos) << "missing '" << want << "' in\n" << text;

  // A join may name the empty program; the background program may be
  // started twice, joined in between.
  PlanSpec emptyJoin = co2Plan();
  emptyJoin.schedule->round[0].program = "";
  EXPECT_EQ(loadError(emptyJoin), "loaded");
  PlanSpec twice = co2Plan();
  twice.schedule->round = {startStep("exchange"), joinStep(), runStep("adopt"),
                           startStep("exchange")};
  EXPECT_EQ(loadError(twice), "loaded");
}

TEST(PlanLoader, ScheduleStepDefects) {
  const std::string co2 = "schedule 'co2': ";
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.schedule->round[1].action = static_cast<plan::ScheduleAction>(7); },
       co2 + "round step 1 has an unknown action 7"},
      {[](PlanSpec &s) { s.schedule->round[0].program = "adopt"; },
       co2 + "round step 0 (join) names program 'adopt'; a join names none (it waits for the "
             "background program)"},
      {[](PlanSpec &s) { s.schedule->round[1].program.reset(); },
       co2 + "round step 1 (run) names no program"},
      {[](PlanSpec &s) { s.schedule->round[2].program = ""; },
       co2 + "round step 2 (start) names no program"},
      {[](PlanSpec &s) { s.schedule->round[2].program = "sync"; },
       co2 + "round step 2 starts 'sync', which is not a program of the plan"},
      {[](PlanSpec &s) { s.schedule->round[2].program = "train"; },
       co2 + "round step 2 starts 'train', the inner program"},
      {[](PlanSpec &s) { s.schedule->round.push_back(startStep("outer")); },
       co2 + "round step 3 starts 'outer', a second background program (step 2 starts "
             "'exchange'; a plan has one)"},
      {[](PlanSpec &s) { s.schedule->round.push_back(runStep("exchange")); },
       co2 + "round step 3 runs 'exchange', which step 2 starts in the background"},
      {[](PlanSpec &s) {
         s.schedule->round.insert(s.schedule->round.begin(), runStep("exchange"));
       },
       co2 + "round step 0 runs 'exchange', which step 3 starts in the background"},
  };
  expectRefused(co2Plan, defects);
}

// EDiT's schedule: the inner program's substitute first step must read the
// same data fields and report the same metrics (here one, "g"); one at
// most.
TEST(PlanLoader, InnerSubstituteLoadsAndIsChecked) {
  auto editPlan = [] {
    PlanSpec spec = localSgdPlan();
    spec.schedule = ScheduleSpec{"edit", "train", 4, {innerStep("outer")}};
    spec.programs[1].metrics = {{"g", 0}};
    spec.programs[0].metrics = {{"g", 2}};
    return spec;
  };
  auto loaded = loadPlanBuffer(build(editPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  const std::string text = describePlan(*loaded->plan());
  EXPECT_NE(text.find("\nschedule edit: train x4, then inner outer\n"), std::string::npos) << text;
  const std::string edit = "schedule 'edit': ";
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.programs[0].metrics[0].first = "delta"; },
       edit + "round step 0 makes the first step 'outer', whose data fields or metrics are not "
              "those of 'train'"},
      {[](PlanSpec &s) { s.schedule->round.push_back(innerStep("outer")); },
       edit + "round step 1 makes the first step 'outer', a second substitute inner step"},
  };
  expectRefused(editPlan, defects);
}

// A-EDiT's timed rounds: seconds instead of a period, only a substitute
// first step, replicas to gather the step counts over.
TEST(PlanLoader, TimedRoundsLoadAndAreChecked) {
  auto aeditPlan = [] {
    PlanSpec spec = localSgdPlan();
    spec.schedule = ScheduleSpec{"aedit", "train", 0, {innerStep("outer")}, 2.5, 10};
    spec.programs[1].metrics = {{"g", 0}};
    spec.programs[0].metrics = {{"g", 2}};
    return spec;
  };
  auto loaded = loadPlanBuffer(build(aeditPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  const std::string text = describePlan(*loaded->plan());
  EXPECT_NE(text.find("\nschedule aedit: train for 2.5 s (at least 10 steps in all), then inner "
                      "outer\n"),
            std::string::npos)
      << text;
  const std::string aedit = "schedule 'aedit': ";
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.schedule->period = 4; },
       aedit + "timed rounds need seconds > 0, period 0 and min_steps >= 0, got seconds 2.500000, "
               "period 4, min_steps 10"},
      {[](PlanSpec &s) { s.schedule->seconds = -1; }, aedit + "timed rounds need seconds > 0"},
      {[](PlanSpec &s) { s.schedule->minSteps = -1; },
       aedit + "timed rounds need seconds > 0, period 0 and min_steps >= 0"},
      {[](PlanSpec &s) { s.schedule->round.push_back(runStep("outer")); },
       aedit + "round step 1 (run 'outer'): timed rounds synchronise in their first inner step "
               "only (inner)"},
      {[](PlanSpec &s) {
         for (VariableSpec &v : s.variables)
           v.replicaDim = -1;
       },
       aedit + "timed rounds gather step counts over the replica dimension, and no variable has a "
               "replica_dim"},
      {[](PlanSpec &s) {
         s.schedule->seconds = 0;
         s.schedule->period = 4;
       },
       aedit + "min_steps belongs to timed rounds (seconds > 0)"},
  };
  expectRefused(aeditPlan, defects);
}

// The registry's check of Assign (kernels/LocalSgd.cpp).
TEST(PlanLoader, AssignDefects) {
  const std::string assign = "program 'adopt': task 1 'w.anchor.assign' (Assign): ";
  auto variable = [](PlanSpec &s) -> int & { return s.programs[2].tasks[1].variable; };
  const std::vector<Defect> defects = {
      {[&](PlanSpec &s) { variable(s) = 6; },
       assign + "AssignAttrs.variable 6 out of range (plan has 6 variables)"},
      {[&](PlanSpec &s) { variable(s) = -1; },
       assign + "AssignAttrs.variable -1 out of range (plan has 6 variables)"},
      {[&](PlanSpec &s) { variable(s) = 3; },
       assign + "input 'w' [4,3] differs in element count from variable 'b' [3]"},
      {[&](PlanSpec &s) { variable(s) = 4; },
       assign + "input 'w' differs in placement or nd-SBP from variable 'w.split'"},
      {[&](PlanSpec &s) { variable(s) = 5; }, assign + "variable 'w.count' must be f32"},
  };
  expectRefused(co2Plan, defects);
}

// The registry's checks of Scale, PseudoGradient and OuterStep (kernels/
// LocalSgd.cpp), which the loader runs.
TEST(PlanLoader, LocalSgdKindDefects) {
  const std::string scale = "program 'train': task 1 'g.own' (Scale): ";
  const std::string step = "program 'outer': task 4 'outer_step' (OuterStep): ";
  const std::vector<Defect> defects = {
      {[](PlanSpec &s) { s.programs[1].tasks[1].factor = INFINITY; },
       scale + "ScaleAttrs.factor must be finite, is inf"},
      {[](PlanSpec &s) {
         s.programs[1].tensors[1].shape = {4, 4};
         rewireAll(s);
       },
       scale + "operands differ in local size ([4,3] and [4,4])"},
      {[](PlanSpec &s) {
         tensor(s, 2).shape = {4, 4};
         rewireAll(s);
       },
       "program 'outer': task 2 'delta' (PseudoGradient): operands differ in local size ([4,3] "
       "and [4,4])"},
      {[](PlanSpec &s) { task(s, 4).param = 9; },
       step + "param variable 9 out of range (plan has 6 variables)"},
      {[](PlanSpec &s) { task(s, 4).param = 3; },
       step + "pseudo-gradient shape differs from variable 'b'"},
      {[](PlanSpec &s) { task(s, 4).anchor = -1; },
       step + "anchor variable -1 out of range (plan has 6 variables)"},
      {[](PlanSpec &s) { task(s, 4).anchor = 3; },
       step + "anchor variable 'b' differs in shape from the parameter 'w'"},
      {[](PlanSpec &s) { task(s, 4).anchor = 0; },
       step + "anchor variable 'w' is the parameter itself"},
      {[](PlanSpec &s) {
         task(s, 4).keepAnchor = true;
         task(s, 4).anchor = 0;
       },
       step + "anchor variable 'w' is the parameter itself"},
      {[](PlanSpec &s) { task(s, 4).momentumBuffer = 7; },
       step + "momentum_buffer variable 7 out of range (plan has 6 variables)"},
      {[](PlanSpec &s) { task(s, 4).momentumBuffer = 1; },
       step + "momentum_buffer variable 'w.anchor' is the anchor"},
      {[](PlanSpec &s) { task(s, 4).momentumBuffer = 4; },
       step + "momentum_buffer variable 'w.split' differs in placement or nd-SBP from the "
              "parameter 'w'"},
      {[](PlanSpec &s) { task(s, 4).momentumBuffer = 5; },
       step + "momentum_buffer variable 'w.count' must be f32"},
      {[](PlanSpec &s) { task(s, 4).momentumBuffer = -1; },
       step + "OuterAttrs.momentum 0.900000 without a momentum_buffer"},
      {[](PlanSpec &s) {
         task(s, 4).momentum = 0.0f;
         task(s, 4).momentumBuffer = -1;
         task(s, 4).clip = 0.01f;
       },
       step + "OuterAttrs.clip 0.010000 without a momentum_buffer (clip bounds the outer "
              "momentum)"},
      {[](PlanSpec &s) { task(s, 4).replicas = 0; },
       step + "OuterAttrs.replicas must be at least 1, is 0"},
      {[](PlanSpec &s) { task(s, 4).gapPenalty = 0.5f; },
       step + "OuterAttrs.gap_penalty must be finite and at least 1, is 0.5"},
      {[](PlanSpec &s) { task(s, 4).gapPenalty = INFINITY; },
       step + "OuterAttrs.gap_penalty must be finite and at least 1, is inf"},
      {[](PlanSpec &s) { task(s, 4).momentum = 1.0f; },
       step + "OuterAttrs.momentum must lie in [0, 1), is 1"},
      {[](PlanSpec &s) { task(s, 4).momentum = -0.5f; },
       step + "OuterAttrs.momentum must lie in [0, 1), is -0.5"},
      {[](PlanSpec &s) { task(s, 4).lr = NAN; }, step + "OuterAttrs.lr must be finite"},
      {[](PlanSpec &s) { task(s, 4).clip = -1.0f; },
       step + "OuterAttrs.clip must be finite and at least 0, is -1"},
  };
  expectRefused(localSgdPlan, defects);
}

} // namespace
