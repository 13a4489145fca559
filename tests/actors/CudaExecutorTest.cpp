// The CUDA executor against the CPU executor: a small MLP (matmul, bias,
// relu, cross-entropy, mean, clipping, SGD with momentum and AdamW) trained
// for a few steps on both must give the same losses and parameters (fp32,
// 1e-5 relative), and a mixed-precision plan (bf16 casts, matmuls, layer
// norm, row sums) the same results (1e-2 relative where bf16), and a
// compressed all-reduce of each codec the same sums and codec state (bit for
// bit where kernels/cuda/Compression.h says so). Without a GPU the
// comparisons skip, saying why, and creating a CUDA executor must be a clear
// error, not a crash.
#include "actors/Executor.h"
#include "actors/Messages.h"
#include "kernels/Codecs.h"
#include "kernels/cpu/Compression.h"
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/data/DataSource.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/TempDir.h"
#include "tests/actors/TestActorSystem.h"
#include "tests/plan/TestPlans.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "tests/kernels_cuda/CudaTest.h"
#endif

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>

using namespace sbpflow;
using namespace sbpflow::testplan;

namespace {

constexpr int64_t kBatch = 8, kIn = 3, kHidden = 4, kClasses = 5;
constexpr int kSteps = 5;

// "x" f32 [kIn] and "label" i32 [] that change with batch and row.
class MemoryData : public DataSource {
public:
  MemoryData() { fields_ = {{"x", FieldType::F32, {kIn}}, {"label", FieldType::I32, {}}}; }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1000; }
  Status fill(const std::string &field, int64_t, int64_t batch, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    for (int64_t r = 0; r < rowCount; ++r) {
      const int64_t row = rowBegin + r;
      if (field == "x")
        for (int64_t c = 0; c < kIn; ++c)
          static_cast<float *>(dst)[r * kIn + c] =
              static_cast<float>(std::sin(0.7 * batch + 1.3 * row + 0.4 * c + 0.1));
      else
        static_cast<int32_t *>(dst)[r] = static_cast<int32_t>((batch * 3 + row) % kClasses);
    }
    return Status::ok();
  }

private:
  std::vector<FieldInfo> fields_;
};

using test::ActorSystem;

// x -> matmul w1 -> + b1 -> relu -> matmul w2 -> cross-entropy -> mean, and
// its backward; w1 by SGD with momentum, b1 by plain SGD, w2 by AdamW with
// its gradient clipped. The loss passes a one-rank all-reduce (a copy).
PlanSpec mlpPlan() {
  PlanSpec spec;
  spec.variables = {
      {"w1", {kIn, kHidden}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 5},
      {"b1", {kHidden}, 0, {B()}, plan::InitKind::Uniform, -0.5f, 0.5f, 6},
      {"w2", {kHidden, kClasses}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 7},
      {"w1.velocity", {kIn, kHidden}, 0, {B()}},
      {"w2.m", {kHidden, kClasses}, 0, {B()}},
      {"w2.v", {kHidden, kClasses}, 0, {B()}},
      {"w2.step", {}, 0, {B()}, plan::InitKind::Zeros, 0, 0, 0, plan::DType::I32},
  };
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kBatch, kIn}},                                    // 0
      {"label", {kBatch}, {B()}, plan::DType::I32},            // 1
      {"w1", {kIn, kHidden}, {B()}, plan::DType::F32, 0},      // 2
      {"b1", {kHidden}, {B()}, plan::DType::F32, 1},           // 3
      {"h", {kBatch, kHidden}},                                // 4
      {"hb", {kBatch, kHidden}},                               // 5
      {"a", {kBatch, kHidden}},                                // 6
      {"w2", {kHidden, kClasses}, {B()}, plan::DType::F32, 2}, // 7
      {"logits", {kBatch, kClasses}},                          // 8
      {"losses", {kBatch}},                                    // 9
      {"loss.local", {}},                                      // 10
      {"one", {}},                                             // 11
      {"dlosses", {kBatch}},                                   // 12
      {"dlogits", {kBatch, kClasses}},                         // 13
      {"dw2", {kHidden, kClasses}},                            // 14
      {"da", {kBatch, kHidden}},                               // 15
      {"dhb", {kBatch, kHidden}},                              // 16
      {"db1", {kHidden}},                                      // 17
      {"dw1", {kIn, kHidden}},                                 // 18
      {"sq", {}},                                              // 19
      {"scale", {}},                                           // 20
      {"loss", {}},                                            // 21
  };
  using K = plan::OpKind;
  using A = plan::OpAttrs;
  TaskSpec inX = inputTask("input.x", 0, "x");
  TaskSpec inLabel = inputTask("input.label", 1, "label");
  TaskSpec w1 = makeTask("w1", K::Parameter, {}, {2}), b1 = makeTask("b1", K::Parameter, {}, {3}),
           w2 = makeTask("w2", K::Parameter, {}, {7});
  TaskSpec mm1 = makeTask("fc1.matmul", K::MatMul, {0, 2}, {4});
  TaskSpec bias = makeTask("fc1.bias", K::BiasAdd, {4, 3}, {5});
  TaskSpec relu = makeTask("fc1.relu", K::Relu, {5}, {6});
  TaskSpec mm2 = makeTask("fc2.matmul", K::MatMul, {6, 7}, {8});
  TaskSpec xent = makeTask("loss.xent", K::SoftmaxXent, {8, 1}, {9});
  TaskSpec mean = makeTask("loss.mean", K::Mean, {9}, {10}, A::MeanAttrs);
  mean.count = kBatch;
  TaskSpec one = makeTask("loss.seed", K::Fill, {}, {11}, A::FillAttrs);
  one.value = 1;
  TaskSpec meanGrad = makeTask("loss.mean.grad", K::MeanGrad, {11}, {12}, A::MeanAttrs);
  meanGrad.count = kBatch;
  TaskSpec xentGrad = makeTask("loss.xent.grad", K::SoftmaxXentGrad, {8, 1, 12}, {13});
  TaskSpec dw2 = makeTask("fc2.matmul.grad_w", K::MatMul, {6, 13}, {14}, A::MatMulAttrs);
  dw2.transA = true;
  TaskSpec da = makeTask("fc2.matmul.grad_x", K::MatMul, {13, 7}, {15}, A::MatMulAttrs);
  da.transB = true;
  TaskSpec reluGrad = makeTask("fc1.relu.grad", K::ReluGrad, {15, 6}, {16});
  TaskSpec db1 = makeTask("fc1.bias.grad", K::ReduceRows, {16}, {17});
  TaskSpec dw1 = makeTask("fc1.matmul.grad_w", K::MatMul, {0, 16}, {18}, A::MatMulAttrs);
  dw1.transA = true;
  TaskSpec sq = makeTask("clip.square_sum", K::SquareSum, {14}, {19});
  TaskSpec clip = makeTask("clip.scale", K::ClipScale, {19}, {20}, A::ClipAttrs);
  clip.maxNorm = 0.5f;
  TaskSpec sgdW1 = makeTask("sgd.w1", K::SgdMomentum, {18}, {}, A::SgdAttrs);
  sgdW1.lr = 0.1f;
  sgdW1.momentum = 0.9f;
  sgdW1.weightDecay = 0.01f;
  sgdW1.param = 0;
  sgdW1.momentumBuffer = 3;
  TaskSpec sgdB1 = makeTask("sgd.b1", K::SgdMomentum, {17}, {}, A::SgdAttrs);
  sgdB1.lr = 0.05f;
  sgdB1.param = 1;
  TaskSpec adam = makeTask("adamw.w2", K::AdamW, {14, 20}, {}, A::AdamWAttrs);
  adam.lr = 0.01f;
  adam.weightDecay = 0.1f;
  adam.eps = 1e-8f;
  adam.param = 2;
  adam.m = 4;
  adam.v = 5;
  adam.step = 6;
  TaskSpec arLoss = makeTask("loss.allreduce", K::AllReduce, {10}, {21}, A::CollectiveAttrs);
  prog.tasks = {inX,  inLabel, w1,   b1,       w2,       mm1,  bias,  relu,     mm2,
                xent, mean,    one,  meanGrad, xentGrad, dw2,  da,    reluGrad, db1,
                dw1,  sq,      clip, sgdW1,    sgdB1,    adam, arLoss};
  prog.inputs = {{"x", 0}, {"label", 1}};
  prog.metrics = {{"loss", 21}};
  prog.outputs = {{"w1", 2}, {"b1", 3}, {"w2", 7}, {"logits", 8}};
  spec.programs.push_back(prog);
  finalize(spec);
  // AdamW must not update w2 before the backward pass has read it (task 15
  // is fc2.matmul.grad_x, task 23 adamw.w2).
  spec.programs[0].registers.push_back({15, -1, {23}, 1});
  return spec;
}

// Mixed precision, forward only: x and w1 cast to bf16, h = x w1 in bf16, a
// weight-gradient-like xᵀ h kept in fp32, layer norm of the bf16 h with fp32
// gamma and beta, column sums of h into bf16 and into fp32, and every bf16
// result cast back to fp32 to be read.
constexpr int64_t kWide = 24;

PlanSpec bf16Plan() {
  using D = plan::DType;
  PlanSpec spec;
  spec.variables = {
      {"w1", {kIn, kWide}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 5},
      {"gamma", {kWide}, 0, {B()}, plan::InitKind::Uniform, 0.5f, 1.5f, 8},
      {"beta", {kWide}, 0, {B()}, plan::InitKind::Uniform, -0.5f, 0.5f, 9},
  };
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kBatch, kIn}},                        // 0
      {"w1", {kIn, kWide}, {B()}, D::F32, 0},      // 1
      {"gamma", {kWide}, {B()}, D::F32, 1},        // 2
      {"beta", {kWide}, {B()}, D::F32, 2},         // 3
      {"x.bf16", {kBatch, kIn}, {B()}, D::BF16},   // 4
      {"w1.bf16", {kIn, kWide}, {B()}, D::BF16},   // 5
      {"h.bf16", {kBatch, kWide}, {B()}, D::BF16}, // 6
      {"dw", {kIn, kWide}},                        // 7: bf16 x bf16 -> f32
      {"n.bf16", {kBatch, kWide}, {B()}, D::BF16}, // 8
      {"n", {kBatch, kWide}},                      // 9
      {"h", {kBatch, kWide}},                      // 10
      {"colsum.bf16", {kWide}, {B()}, D::BF16},    // 11: bf16 -> bf16
      {"colsum", {kWide}},                         // 12
      {"colsum.f32", {kWide}},                     // 13: bf16 -> f32
  };
  using K = plan::OpKind;
  using A = plan::OpAttrs;
  TaskSpec inX = inputTask("input.x", 0, "x");
  TaskSpec w1 = makeTask("w1", K::Parameter, {}, {1}),
           gamma = makeTask("gamma", K::Parameter, {}, {2}),
           beta = makeTask("beta", K::Parameter, {}, {3});
  TaskSpec castX = makeTask("x.cast", K::Cast, {0}, {4});
  TaskSpec castW = makeTask("w1.cast", K::Cast, {1}, {5});
  TaskSpec mm = makeTask("fc.matmul", K::MatMul, {4, 5}, {6});
  TaskSpec dw = makeTask("fc.matmul.grad_w", K::MatMul, {4, 6}, {7}, A::MatMulAttrs);
  dw.transA = true;
  TaskSpec ln = makeTask("ln", K::LayerNorm, {6, 2, 3}, {8}, A::NormAttrs);
  TaskSpec castN = makeTask("n.cast", K::Cast, {8}, {9});
  TaskSpec castH = makeTask("h.cast", K::Cast, {6}, {10});
  TaskSpec sum16 = makeTask("colsum.bf16", K::ReduceRows, {6}, {11});
  TaskSpec castSum = makeTask("colsum.cast", K::Cast, {11}, {12});
  TaskSpec sum32 = makeTask("colsum.f32", K::ReduceRows, {6}, {13});
  prog.tasks = {inX, w1, gamma, beta,  castX, castW,   mm,
                dw,  ln, castN, castH, sum16, castSum, sum32};
  prog.inputs = {{"x", 0}};
  prog.outputs = {{"dw", 7}, {"n", 9}, {"h", 10}, {"colsum", 12}, {"colsum.f32", 13}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

// The collectives and boxing steps on bf16 tensors, on one rank (a group of
// one: copies, and the f32 staging around them): x read as f32 and cast,
// and read straight into a bf16 tensor, then all-reduced, all-gathered,
// sliced, zeroed-others and cast back.
PlanSpec bf16BoxingPlan() {
  using D = plan::DType;
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kBatch, kIn}},                              // 0
      {"x.bf16", {kBatch, kIn}, {B()}, D::BF16},         // 1
      {"x.direct", {kBatch, kIn}, {B()}, D::BF16},       // 2: a bf16 Input
      {"reduced", {kBatch, kIn}, {B()}, D::BF16},        // 3
      {"gathered", {kBatch, kIn}, {B()}, D::BF16},       // 4
      {"sliced", {kBatch, kIn}, {S(0)}, D::BF16},        // 5
      {"kept", {kBatch, kIn}, {P()}, D::BF16},           // 6
      {"out", {kBatch, kIn}},                            // 7
      {"direct", {kBatch, kIn}},                         // 8
      {"reduced.direct", {kBatch, kIn}, {B()}, D::BF16}, // 9
  };
  using K = plan::OpKind;
  using A = plan::OpAttrs;
  TaskSpec inX = inputTask("input.x", 0, "x");
  TaskSpec inDirect = inputTask("input.x.bf16", 2, "x");
  TaskSpec cast = makeTask("x.cast", K::Cast, {0}, {1});
  TaskSpec ar = makeTask("allreduce", K::AllReduce, {1}, {3}, A::CollectiveAttrs);
  TaskSpec ag = makeTask("allgather", K::AllGather, {3}, {4}, A::CollectiveAttrs);
  TaskSpec slice = makeTask("slice", K::Slice, {4}, {5});
  TaskSpec zero = makeTask("zero_others", K::ZeroOthers, {5}, {6});
  TaskSpec back = makeTask("out.cast", K::Cast, {6}, {7});
  TaskSpec ar2 = makeTask("allreduce.direct", K::AllReduce, {2}, {9}, A::CollectiveAttrs);
  TaskSpec back2 = makeTask("direct.cast", K::Cast, {9}, {8});
  prog.tasks = {inX, inDirect, cast, ar, ag, slice, zero, back, ar2, back2};
  prog.inputs = {{"x", 0}};
  prog.outputs = {{"out", 7}, {"direct", 8}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

// x plus a bias (a variable) then GELU in `dtype` (x and the bias cast to
// it, pre and y cast back to f32 to be read): fused in one BiasGelu task, or
// BiasAdd then Gelu.
PlanSpec biasGeluPlan(bool fused, plan::DType dtype) {
  PlanSpec spec = biasGeluSpec(
      fused, dtype,
      {{kBatch, kIn}, {"b", {kIn}, 0, {B()}, plan::InitKind::Uniform, -1, 1, 10}, "x"});
  spec.programs[0].inputs = {{"x", 0}};
  finalize(spec);
  return spec;
}

// Rows by index: y = gather_rows(x, label), z = scatter_rows(y, label) (the
// labels, in [0, kClasses), pick rows of x and collide), computed in `dtype`
// between casts.
PlanSpec rowsPlan(plan::DType dtype) {
  PlanSpec spec;
  ProgramSpec prog;
  prog.tensors = {
      {"x", {kBatch, kIn}},                       // 0
      {"idx", {kBatch}, {B()}, plan::DType::I32}, // 1
      {"x.t", {kBatch, kIn}, {B()}, dtype},       // 2
      {"y.t", {kBatch, kIn}, {B()}, dtype},       // 3
      {"z.t", {kBatch, kIn}, {B()}, dtype},       // 4
      {"y", {kBatch, kIn}},                       // 5
      {"z", {kBatch, kIn}},                       // 6
  };
  using K = plan::OpKind;
  prog.tasks = {inputTask("input.x", 0, "x"),
                inputTask("input.idx", 1, "label"),
                makeTask("x.cast", K::Cast, {0}, {2}),
                makeTask("msg.gather", K::GatherRows, {2, 1}, {3}),
                makeTask("msg.scatter", K::ScatterRows, {3, 1}, {4}),
                makeTask("y.cast", K::Cast, {3}, {5}),
                makeTask("z.cast", K::Cast, {4}, {6})};
  prog.outputs = {{"y", 5}, {"z", 6}};
  spec.programs.push_back(prog);
  finalize(spec);
  return spec;
}

// `spec` with its placements on CUDA devices: what the GPU runs (a CPU
// plan is refused there).
std::vector<uint8_t> buildForGpu(PlanSpec spec) {
  for (PlacementSpec &p : spec.placements)
    p.device = plan::DeviceKind::CUDA;
  return build(spec);
}

// Options that run the executor on GPU 0 as rank `globalRank`.
ExecutorOptions onGpu(int globalRank = 0) {
  ExecutorOptions options;
  options.globalRank = globalRank;
  options.cudaDevice = 0;
  return options;
}

struct Trained {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> outputs;
};

// `steps` steps of `plan`'s train program, then its outputs `names`; each
// step's first metric (the loss) goes to `losses` where given.
std::map<std::string, std::vector<float>> runSteps(const plan::Plan *plan,
                                                   const ExecutorOptions &options, int64_t steps,
                                                   const std::vector<std::string> &names,
                                                   std::vector<double> *losses = nullptr) {
  std::map<std::string, std::vector<float>> outputs;
  ActorSystem sys;
  auto exec = Executor::create(sys.system, plan, nullptr, options);
  EXPECT_TRUE(exec) << exec.status().message();
  if (!exec)
    return outputs;
  MemoryData data;
  Executor::StepCallback onStep;
  if (losses)
    onStep = [losses](int64_t, const std::vector<double> &m) { losses->push_back(m.at(0)); };
  Status s = (*exec)->run("train", &data, 0, 0, steps, onStep);
  EXPECT_TRUE(s) << s.message();
  for (const std::string &name : names) {
    Status r = (*exec)->readOutput("train", name, outputs[name]);
    EXPECT_TRUE(r) << r.message();
  }
  return outputs;
}

Trained train(const plan::Plan *plan, const ExecutorOptions &options) {
  Trained result;
  result.outputs = runSteps(plan, options, kSteps, {"w1", "b1", "w2", "logits"}, &result.losses);
  return result;
}

} // namespace

// The plan the GPU is compared on trains on the CPU, so that the comparison
// is of a model that learns (and runs wherever the GPU test skips).
TEST(CudaExecutor, ComparisonPlanTrainsOnTheCpu) {
  auto loaded = loadPlanBuffer(build(mlpPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  Trained cpu = train(loaded->plan(), ExecutorOptions{});
  ASSERT_EQ(cpu.losses.size(), static_cast<size_t>(kSteps));
  for (double loss : cpu.losses)
    EXPECT_TRUE(std::isfinite(loss) && loss > 0) << loss;
  EXPECT_NE(cpu.losses.front(), cpu.losses.back());
  EXPECT_EQ(cpu.outputs["w2"].size(), static_cast<size_t>(kHidden * kClasses));
}

// The mixed-precision plans the GPU runs below pass the loader's element
// type rules (wherever the GPU tests skip, too).
TEST(CudaExecutor, Bf16PlansLoad) {
  for (const PlanSpec &spec : {bf16Plan(), bf16BoxingPlan()}) {
    auto loaded = loadPlanBuffer(build(spec));
    EXPECT_TRUE(loaded) << loaded.status().message();
  }
}

TEST(CudaExecutor, RowsPlansLoad) {
  for (plan::DType dtype : {plan::DType::F32, plan::DType::BF16}) {
    auto loaded = loadPlanBuffer(build(rowsPlan(dtype)));
    EXPECT_TRUE(loaded) << loaded.status().message();
  }
}

TEST(CudaExecutor, BiasGeluPlansLoad) {
  for (bool fused : {false, true})
    for (plan::DType dtype : {plan::DType::F32, plan::DType::BF16}) {
      auto loaded = loadPlanBuffer(build(biasGeluPlan(fused, dtype)));
      EXPECT_TRUE(loaded) << loaded.status().message();
    }
}

// ---------------------------------------------------------------- compressed all-reduces
// One compressed all-reduce (plan.fbs CodecAttrs) per codec, on a group of
// one (one rank, hierarchy [1]): the gradient "g" read from data, its
// all-reduce with the codec into "g.sum", the codec's state and step
// counter as variables (TestPlans.h's CodecSpec on an AllReduce task).
namespace {

constexpr int64_t kGradRows = 9, kGradCols = 7, kGradElements = kGradRows * kGradCols;
constexpr int kCodecSteps = 5;

// "g" f32 [kGradCols]: a gradient of mixed signs and magnitudes that changes
// with the batch, so that every codec has choices to make.
class GradientData : public DataSource {
public:
  GradientData() { fields_ = {{"g", FieldType::F32, {kGradCols}}}; }
  const std::vector<FieldInfo> &fields() const override { return fields_; }
  int64_t size() const override { return 1000; }
  Status fill(const std::string &, int64_t, int64_t batch, int64_t, int64_t rowBegin,
              int64_t rowCount, void *dst) override {
    for (int64_t r = 0; r < rowCount; ++r)
      for (int64_t c = 0; c < kGradCols; ++c) {
        const int64_t i = (rowBegin + r) * kGradCols + c;
        static_cast<float *>(dst)[r * kGradCols + c] =
            static_cast<float>(std::sin(1.1 * batch + 0.37 * i + 0.2) * (1 + i % 5));
      }
    return Status::ok();
  }

private:
  std::vector<FieldInfo> fields_;
};

// Batch `batch` of GradientData's "g": what a dense all-reduce over one rank
// gives.
std::vector<float> gradientOf(int64_t batch) {
  std::vector<float> g(kGradElements);
  GradientData data;
  (void)data.fill("g", 0, batch, kGradRows, 0, kGradRows, g.data());
  return g;
}

struct CodecCase {
  std::string name;
  CodecSpec spec; // state and step: codecPlan's variables
  // The GPU against the CPU: 0 is bit for bit (kernels/cuda/Compression.h
  // says which codecs are); else |gpu - cpu| <= tolerance * max(1, |cpu|).
  double tolerance = 0;
  // 2: PowerSGD over "g" twice in one task (a bucket, as
  // sbp-bucket-gradients fuses them), the second into "h.sum".
  int parts = 1;
};

// Every codec once, with awkward sizes (k of 7 of 63, QSGD's 3-bit fields
// straddling bytes, buckets of 5), one dense warm-up step, DGC's sparsity
// warm-up over epochs of 2 exchanges.
std::vector<CodecCase> codecCases() {
  using C = plan::Codec;
  auto make = [](std::string name, C kind) {
    CodecCase c;
    c.name = std::move(name);
    c.spec.kind = kind;
    c.spec.warmupSteps = 1;
    return c;
  };
  CodecCase topk = make("topk", C::TopK);
  topk.spec.density = 0.1f;
  CodecCase dgc = make("dgc", C::Dgc);
  dgc.spec.density = 0.05f;
  dgc.spec.momentum = 0.9f;
  dgc.spec.epochSteps = 2;
  // Clipping's norm is a double sum in another order on the GPU: its f32
  // factor may differ by one ulp.
  CodecCase clipped = dgc;
  clipped.name = "dgc.clipped";
  clipped.spec.clip = 2.0f;
  clipped.tolerance = 1e-5;
  CodecCase randomk = make("randomk", C::RandomK);
  randomk.spec.density = 0.2f;
  randomk.spec.seed = 7;
  // Buckets of at most kQsgdSequentialBucket elements: the CPU's norms.
  CodecCase qsgd = make("qsgd", C::Qsgd);
  qsgd.spec.bits = 3;
  qsgd.spec.bucket = 5;
  qsgd.spec.seed = 3;
  CodecCase qsgd8 = qsgd;
  qsgd8.name = "qsgd.8bit";
  qsgd8.spec.bits = 8;
  qsgd8.spec.bucket = 64;
  // The scale, PowerSGD's norms and products, and the 2-bit table are sums
  // in another order on the GPU (trees in double, cuBLAS).
  CodecCase sign = make("sign", C::Sign);
  sign.spec.bucket = 1 << 20; // one scale: a tree sum on the GPU
  sign.tolerance = 1e-5;
  // Buckets of at most kQsgdSequentialBucket: the CPU's scales, bit for bit.
  CodecCase signMomentum = make("sign.momentum", C::Sign);
  signMomentum.spec.bucket = 64;
  signMomentum.spec.momentum = 0.9f;
  CodecCase powerSgd = make("powersgd", C::PowerSgd);
  powerSgd.spec.rank = 2;
  powerSgd.spec.seed = 11;
  powerSgd.tolerance = 1e-4;
  CodecCase powerSgdBucket = powerSgd;
  powerSgdBucket.name = "powersgd.bucket";
  powerSgdBucket.parts = 2;
  CodecCase topk2bit = make("topk2bit", C::TopK2Bit);
  topk2bit.spec.density = 0.25f;
  topk2bit.tolerance = 1e-5;
  // Under AdamW (DGC, 2-bit top-k): the moments and the update (bit for
  // bit but for the clipping factor's ulp).
  CodecCase adamw = clipped;
  adamw.name = "dgc.adamw";
  adamw.spec.beta2 = 0.99f;
  adamw.spec.eps = 1e-8f;
  // SparseLoCo's: chunks of 16 (63 = 3 x 16 + 15), 4 of each, the residual
  // decaying.
  CodecCase sparseLoCo = topk2bit;
  sparseLoCo.name = "topk2bit.chunked";
  sparseLoCo.spec.chunk = 16;
  sparseLoCo.spec.decay = 0.9f;
  CodecCase overSenders = sparseLoCo;
  overSenders.name = "topk2bit.chunked.senders";
  overSenders.spec.meanOverSenders = true;
  CodecCase topk2bitAdamw = topk2bit;
  topk2bitAdamw.name = "topk2bit.adamw";
  topk2bitAdamw.spec.momentum = 0.9f;
  topk2bitAdamw.spec.clip = 2.0f;
  topk2bitAdamw.spec.beta2 = 0.99f;
  topk2bitAdamw.spec.eps = 1e-8f;
  return {topk,     dgc,        clipped,      randomk,  qsgd,
          qsgd8,    sign,       signMomentum, powerSgd, powerSgdBucket,
          topk2bit, sparseLoCo, overSenders,  adamw,    topk2bitAdamw};
}

// The plan of `codec` on `device`: variables 0, 1 the state rows [1, 63]
// (as many as the codec keeps), 2 the step, 3, 4 the second part's state,
// 5 AdamW DGC's third row;
// tensors 0 "g" read from data, 1 "g.sum" its compressed all-reduce, an
// output (and 2 "h.sum", the second part's).
std::vector<uint8_t> codecPlan(const CodecCase &codec, plan::DeviceKind device) {
  PlanSpec spec;
  spec.placements = {{"p", {0}, {1}, device}};
  spec.variables = {{"g.state0", {1, kGradElements}, 0, {S(0)}},
                    {"g.state1", {1, kGradElements}, 0, {S(0)}},
                    {"g.step", {}, 0, {B()}, plan::InitKind::Zeros, 0, 0, 0, plan::DType::I32},
                    {"h.state0", {1, kGradElements}, 0, {S(0)}},
                    {"h.state1", {1, kGradElements}, 0, {S(0)}},
                    {"g.state2", {1, kGradElements}, 0, {S(0)}}};
  CodecSpec c = codec.spec;
  c.present = true;
  c.state = {0, 1, 5};
  c.state.resize(static_cast<size_t>(ops::codecStateCount(c.kind, c.momentum, c.beta2)));
  if (codec.parts == 2)
    c.state.insert(c.state.end(), {3, 4});
  c.step = 2;
  ProgramSpec prog;
  prog.tensors = {{"g", {kGradRows, kGradCols}},
                  {"g.sum", {kGradRows, kGradCols}},
                  {"h.sum", {kGradRows, kGradCols}}};
  TaskSpec allReduce = makeTask("g.allreduce", plan::OpKind::AllReduce,
                                std::vector<int>(static_cast<size_t>(codec.parts), 0),
                                codec.parts == 2 ? std::vector<int>{1, 2} : std::vector<int>{1},
                                plan::OpAttrs::CollectiveAttrs);
  allReduce.codec = c;
  prog.tasks = {inputTask("input.g", 0, "g"), allReduce};
  prog.inputs = {{"g", 0}};
  prog.outputs = {{"g.sum", 1}};
  if (codec.parts == 2)
    prog.outputs.push_back({"h.sum", 2});
  spec.programs.push_back(prog);
  finalize(spec);
  return build(spec);
}

// What a run of a codec plan leaves: "g.sum" (and "h.sum") after every
// step, and the variables as a checkpoint saves them.
struct CodecRun {
  std::vector<std::vector<float>> sums, hSums;
  std::vector<float> state0, state1, hState0, hState1;
  int32_t step = -1;
};

CodecRun runCodec(const plan::Plan *plan, const ExecutorOptions &options, int parts) {
  CodecRun result;
  ActorSystem sys;
  auto exec = Executor::create(sys.system, plan, nullptr, options);
  EXPECT_TRUE(exec) << exec.status().message();
  if (!exec)
    return result;
  GradientData data;
  for (int s = 0; s < kCodecSteps; ++s) {
    Status run = (*exec)->run("train", &data, 0, s, 1, nullptr);
    EXPECT_TRUE(run) << "step " << s << ": " << run.message();
    if (!run)
      return result;
    result.sums.emplace_back();
    Status read = (*exec)->readOutput("train", "g.sum", result.sums.back());
    EXPECT_TRUE(read) << read.message();
    if (parts == 2) {
      result.hSums.emplace_back();
      read = (*exec)->readOutput("train", "h.sum", result.hSums.back());
      EXPECT_TRUE(read) << read.message();
    }
  }
  test::TempDir tmp("sbpflow_codec_executor");
  Status saved = (*exec)->saveCheckpoint(tmp.path() + "/ckpt");
  EXPECT_TRUE(saved) << saved.message();
  auto reader = checkpoint::CheckpointReader::open(tmp.path() + "/ckpt");
  EXPECT_TRUE(reader) << reader.status().message();
  if (!saved || !reader)
    return result;
  const Shape stateShape = {1, kGradElements};
  for (auto [name, values] :
       {std::pair{"g.state0", &result.state0}, std::pair{"g.state1", &result.state1},
        std::pair{"h.state0", &result.hState0}, std::pair{"h.state1", &result.hState1}}) {
    values->resize(kGradElements);
    Status r = reader->read(name, stateShape, checkpoint::DType::F32, wholeRegion(stateShape),
                            values->data());
    EXPECT_TRUE(r) << r.message();
  }
  Status r = reader->read("g.step", {}, checkpoint::DType::I32, wholeRegion({}), &result.step);
  EXPECT_TRUE(r) << r.message();
  return result;
}

} // namespace

// The codec plans on the CPU executor, which the GPU is compared with below:
// the warm-up step is the dense sum, later steps are the codec's (as many
// pairs as the density allows, DGC's schedule included), the step counter
// counts every exchange, and where the codec keeps error feedback nothing is
// lost: over a group of one, the sum of the outputs plus the residual is the
// sum of the gradients (Karimireddy et al. 2019's e_t + sum of deltas = sum
// of p_t), up to f32 rounding.
TEST(CudaExecutor, CodecPlansRunOnTheCpu) {
  for (const CodecCase &codec : codecCases()) {
    SCOPED_TRACE(codec.name);
    auto loaded = loadPlanBuffer(codecPlan(codec, plan::DeviceKind::CPU));
    ASSERT_TRUE(loaded) << loaded.status().message();
    const CodecRun run = runCodec(loaded->plan(), ExecutorOptions{}, codec.parts);
    ASSERT_EQ(run.sums.size(), static_cast<size_t>(kCodecSteps));
    EXPECT_EQ(run.step, kCodecSteps);
    if (codec.parts == 2) {
      // The parts share the task's all-reduces but not their Q draws.
      ASSERT_EQ(run.hSums.size(), run.sums.size());
      EXPECT_EQ(run.hSums[0], gradientOf(0));
      EXPECT_NE(run.hSums.back(), run.sums.back());
    }
    const CodecSpec &c = codec.spec;
    if (c.beta2 > 0) {
      // The dense warm-up of AdamW's first update: the gradient's sign
      // (m / sqrt(v) with both bias-corrected, far above eps).
      for (int64_t i = 0; i < kGradElements; ++i) {
        const float g = gradientOf(0)[i];
        EXPECT_NEAR(run.sums[0][i], g > 0 ? 1.0f : g < 0 ? -1.0f : 0.0f, 1e-5) << "element " << i;
      }
    } else {
      EXPECT_EQ(run.sums[0], gradientOf(0)); // the dense warm-up
    }
    const bool sparse = ops::isSparseCodec(c.kind);
    for (int s = c.warmupSteps; s < kCodecSteps; ++s) {
      EXPECT_NE(run.sums[s], gradientOf(s)) << "step " << s << " was not compressed";
      if (!sparse)
        continue;
      const int64_t exchange = s - c.warmupSteps;
      const double density = c.kind == plan::Codec::Dgc
                                 ? cpu::dgcWarmupDensity(exchange / c.epochSteps, c.density)
                                 : c.density;
      const int64_t pairs = c.chunk > 0 ? ops::Chunks(density, kGradElements, c.chunk).pairs()
                                        : ops::pairsFor(density, kGradElements);
      const auto nonzero =
          std::count_if(run.sums[s].begin(), run.sums[s].end(), [](float v) { return v != 0.0f; });
      EXPECT_LE(nonzero, pairs) << "step " << s;
      EXPECT_GT(nonzero, 0) << "step " << s;
    }
    // (With a momentum what is kept and sent is the momentum's sum; a
    // decaying residual forgets part of what it kept.)
    const bool feedback = (c.kind == plan::Codec::TopK || c.kind == plan::Codec::Sign ||
                           c.kind == plan::Codec::PowerSgd || c.kind == plan::Codec::TopK2Bit) &&
                          c.momentum == 0.0f && c.decay == 1.0f;
    if (!feedback)
      continue;
    auto keepsWhatItDidNotSend = [&](const std::vector<std::vector<float>> &sums,
                                     const std::vector<float> &residual, const char *part) {
      for (int64_t i = 0; i < kGradElements; ++i) {
        double sent = residual[i], given = 0;
        for (int s = 0; s < kCodecSteps; ++s) {
          sent += sums[s][i];
          given += gradientOf(s)[i];
        }
        EXPECT_NEAR(sent, given, 1e-4 * std::max(1.0, std::fabs(given)))
            << part << " element " << i;
      }
    };
    keepsWhatItDidNotSend(run.sums, run.state0, "g");
    if (codec.parts == 2)
      keepsWhatItDidNotSend(run.hSums, run.hState0, "h");
    EXPECT_NE(run.state0, std::vector<float>(kGradElements, 0.0f)) << "no error feedback kept";
  }
}

#ifdef SBPFLOW_HAVE_CUDA

namespace {

// |got - want| <= tolerance * max(1, |want|) elementwise.
void expectWithin(const std::vector<float> &got, const std::vector<float> &want, double tolerance,
                  const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tolerance * std::max(1.0f, std::fabs(want[i])))
        << what << "[" << i << "]";
}

// A plan loaded as the CPU runs it and as the GPU runs it (buildForGpu).
struct CpuAndGpuPlans {
  LoadedPlan cpu, gpu;
};

// `spec` loaded for both; the loader's error where either is refused.
StatusOr<CpuAndGpuPlans> loadForBoth(const PlanSpec &spec) {
  auto cpu = loadPlanBuffer(build(spec));
  if (!cpu)
    return cpu.status();
  auto gpu = loadPlanBuffer(buildForGpu(spec));
  if (!gpu)
    return gpu.status();
  return CpuAndGpuPlans{*cpu, *gpu};
}

} // namespace

TEST(CudaExecutor, MlpMatchesTheCpuExecutor) {
  SBPFLOW_REQUIRE_GPU();
  auto plans = loadForBoth(mlpPlan());
  ASSERT_TRUE(plans) << plans.status().message();
  Trained cpu = train(plans->cpu.plan(), ExecutorOptions{});
  Trained cuda = train(plans->gpu.plan(), onGpu());
  ASSERT_EQ(cpu.losses.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(cuda.losses.size(), cpu.losses.size());
  for (int i = 0; i < kSteps; ++i)
    EXPECT_NEAR(cuda.losses[i], cpu.losses[i], 1e-5 * std::max(1.0, std::fabs(cpu.losses[i])))
        << "step " << i;
  // Training moved the loss: the comparison is not of two untouched models.
  EXPECT_NE(cpu.losses.front(), cpu.losses.back());
  for (const auto &[name, values] : cpu.outputs)
    expectWithin(cuda.outputs[name], values, 1e-5, name);
}

// The GPU's bf16 kernels against the CPU executor's (f32 arithmetic on bf16
// values, rounded at the same points): a bf16 result within 1e-2 relative.
// The fp32 results (xᵀ h, the fp32 column sums) are sums of products of the
// same bf16 values, exact in fp32 or nearly: 1e-5, which a result rounded
// to bf16 by mistake (2^-9 relative) would miss.
TEST(CudaExecutor, Bf16PlanMatchesTheCpuExecutor) {
  SBPFLOW_REQUIRE_GPU();
  auto plans = loadForBoth(bf16Plan());
  ASSERT_TRUE(plans) << plans.status().message();
  const std::vector<std::string> names = {"dw", "n", "h", "colsum", "colsum.f32"};
  auto cpu = runSteps(plans->cpu.plan(), ExecutorOptions{}, 1, names);
  auto gpu = runSteps(plans->gpu.plan(), onGpu(), 1, names);
  for (const char *name : {"n", "h", "colsum"})
    expectWithin(gpu[name], cpu[name], 1e-2, name);
  for (const char *name : {"dw", "colsum.f32"})
    expectWithin(gpu[name], cpu[name], 1e-5, name);
  // The values are bf16's: h holds no bits below bf16's 8.
  for (float v : gpu["h"])
    EXPECT_EQ(v, test::roundedToBf16({v})[0]);
  // Layer norm did normalise: each row of n is gamma-scaled around beta,
  // not h again.
  EXPECT_NE(gpu["n"], gpu["h"]);
}

// The fused BiasGelu on the GPU: what the CPU executor gives (1e-5 relative
// in fp32, 1e-2 in bf16: the GPU's GELU uses erfcf, the CPU's its own
// polynomial), and what BiasAdd then Gelu give on the GPU, bit for bit.
TEST(CudaExecutor, FusedBiasGeluMatchesTheCpuAndTheUnfusedPlan) {
  SBPFLOW_REQUIRE_GPU();
  for (plan::DType dtype : {plan::DType::F32, plan::DType::BF16}) {
    SCOPED_TRACE(plan::EnumNameDType(dtype));
    auto fused = loadForBoth(biasGeluPlan(true, dtype));
    auto unfused = loadPlanBuffer(buildForGpu(biasGeluPlan(false, dtype)));
    ASSERT_TRUE(fused) << fused.status().message();
    ASSERT_TRUE(unfused) << unfused.status().message();
    auto cpu = runSteps(fused->cpu.plan(), ExecutorOptions{}, 1, {"pre", "y"});
    auto gpu = runSteps(fused->gpu.plan(), onGpu(), 1, {"pre", "y"});
    auto gpuUnfused = runSteps(unfused->plan(), onGpu(), 1, {"pre", "y"});
    const double tolerance = dtype == plan::DType::F32 ? 1e-5 : 1e-2;
    for (const char *name : {"pre", "y"}) {
      expectWithin(gpu[name], cpu[name], tolerance, name);
      ASSERT_EQ(gpu[name].size(), gpuUnfused[name].size()) << name;
      EXPECT_EQ(0, std::memcmp(gpu[name].data(), gpuUnfused[name].data(),
                               gpu[name].size() * sizeof(float)))
          << name;
    }
    // GELU did act: y is not pre again.
    EXPECT_NE(gpu["y"], gpu["pre"]);
  }
}

// GatherRows and ScatterRows on the GPU against the CPU executor: the
// gathered rows bit for bit (a copy), their sums within 1e-5 relative in
// fp32 (atomics add in another order) and 1e-2 in bf16.
TEST(CudaExecutor, RowOpsMatchTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  for (plan::DType dtype : {plan::DType::F32, plan::DType::BF16}) {
    SCOPED_TRACE(plan::EnumNameDType(dtype));
    auto plans = loadForBoth(rowsPlan(dtype));
    ASSERT_TRUE(plans) << plans.status().message();
    auto cpu = runSteps(plans->cpu.plan(), ExecutorOptions{}, 1, {"y", "z"});
    auto gpu = runSteps(plans->gpu.plan(), onGpu(), 1, {"y", "z"});
    EXPECT_EQ(gpu["y"], cpu["y"]);
    expectWithin(gpu["z"], cpu["z"], dtype == plan::DType::F32 ? 1e-5 : 1e-2, "z");
    // Rows collided: some row of z sums several of y.
    EXPECT_NE(gpu["z"], gpu["y"]);
  }
}

TEST(CudaExecutor, Bf16BoxingKeepsTheValues) {
  SBPFLOW_REQUIRE_GPU();
  auto loaded = loadPlanBuffer(buildForGpu(bf16BoxingPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  auto gpu = runSteps(loaded->plan(), onGpu(), 1, {"out", "direct"});
  // Batch 0 of MemoryData's "x", rounded to bf16 once.
  std::vector<float> x(kBatch * kIn);
  MemoryData data;
  ASSERT_OK(data.fill("x", 0, 0, kBatch, 0, kBatch, x.data()));
  const std::vector<float> want = test::roundedToBf16(x);
  EXPECT_EQ(gpu["out"], want);
  EXPECT_EQ(gpu["direct"], want);
}

TEST(CudaExecutor, CheckpointHoldsTheStepCountAndWeights) {
  SBPFLOW_REQUIRE_GPU();
  auto loaded = loadPlanBuffer(buildForGpu(mlpPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  ActorSystem sys;
  auto exec = Executor::create(sys.system, loaded->plan(), nullptr, onGpu());
  ASSERT_TRUE(exec) << exec.status().message();
  MemoryData data;
  ASSERT_OK((*exec)->run("train", &data, 0, 0, 3, nullptr));
  test::TempDir tmp("sbpflow_cuda_executor");
  const std::string dir = tmp.path() + "/mlp";
  ASSERT_OK((*exec)->saveCheckpoint(dir));
  auto reader = checkpoint::CheckpointReader::open(dir);
  ASSERT_TRUE(reader) << reader.status().message();
  int32_t step = 0;
  ASSERT_OK(reader->read("w2.step", {}, checkpoint::DType::I32, wholeRegion({}), &step));
  EXPECT_EQ(step, 3.0f);
  std::vector<float> w2(kHidden * kClasses);
  ASSERT_OK(reader->read("w2", {kHidden, kClasses}, checkpoint::DType::F32,
                         wholeRegion({kHidden, kClasses}), w2.data()));
  std::vector<float> live;
  ASSERT_OK((*exec)->readOutput("train", "w2", live));
  expectWithin(w2, live, 1e-5, "w2");
  // Loading it back and running on continues from step 3.
  ASSERT_OK((*exec)->loadCheckpoint(dir));
  ASSERT_OK((*exec)->run("train", &data, 0, 3, 1, nullptr));
  ASSERT_OK((*exec)->saveCheckpoint(dir));
  auto again = checkpoint::CheckpointReader::open(dir);
  ASSERT_TRUE(again) << again.status().message();
  ASSERT_OK(again->read("w2.step", {}, checkpoint::DType::I32, wholeRegion({}), &step));
  EXPECT_EQ(step, 4.0f);
  EXPECT_FALSE((*exec)->writeTrace(tmp.path() + "/trace.json"));
}

// The one-rank checkpoint in `from` rewritten to `to` with the step counter
// "w2.step" set to `step` (every other tensor as it was).
void withStepCount(const std::string &from, const std::string &to, int32_t step) {
  auto reader = checkpoint::CheckpointReader::open(from);
  ASSERT_TRUE(reader) << reader.status().message();
  std::vector<checkpoint::ShardRecord> records;
  for (const checkpoint::TensorMeta &m : reader->tensors()) {
    std::vector<char> bytes(static_cast<size_t>(elementCount(m.shape)) * 4);
    ASSERT_OK(reader->read(m.name, m.shape, m.dtype, wholeRegion(m.shape), bytes.data()));
    if (m.name == "w2.step")
      std::memcpy(bytes.data(), &step, 4);
    auto record = checkpoint::writeShard(to, m, wholeRegion(m.shape), bytes.data(), 9);
    ASSERT_TRUE(record) << record.status().message();
    records.push_back(*record);
  }
  ASSERT_OK(checkpoint::writeIndex(to, reader->tensors(), {}, 9, records));
}

// The CUDA executor counts AdamW steps in an int64 host mirror and saves
// them as i32: from 2^24 (where an f32 counter stops) it counts on, and it
// refuses to count past INT32_MAX.
TEST(CudaExecutor, AdamWStepCounterCountsPast2To24AndStopsAtInt32Max) {
  SBPFLOW_REQUIRE_GPU();
  auto loaded = loadPlanBuffer(build(mlpPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  ActorSystem sys;
  test::TempDir tmp("sbpflow_cuda_executor");
  auto cpu = Executor::create(sys.system, loaded->plan(), nullptr, ExecutorOptions{});
  ASSERT_TRUE(cpu) << cpu.status().message();
  ASSERT_OK((*cpu)->saveCheckpoint(tmp.path() + "/initial"));
  withStepCount(tmp.path() + "/initial", tmp.path() + "/at", 1 << 24);
  withStepCount(tmp.path() + "/initial", tmp.path() + "/max",
                std::numeric_limits<int32_t>::max() - 1);
  auto exec = Executor::create(sys.system, loaded->plan(), nullptr, onGpu());
  ASSERT_TRUE(exec) << exec.status().message();
  MemoryData data;
  ASSERT_OK((*exec)->loadCheckpoint(tmp.path() + "/at"));
  ASSERT_OK((*exec)->run("train", &data, 0, 0, 1, nullptr));
  ASSERT_OK((*exec)->saveCheckpoint(tmp.path() + "/after"));
  auto reader = checkpoint::CheckpointReader::open(tmp.path() + "/after");
  ASSERT_TRUE(reader) << reader.status().message();
  int32_t step = 0;
  ASSERT_OK(reader->read("w2.step", {}, checkpoint::DType::I32, wholeRegion({}), &step));
  EXPECT_EQ(step, (1 << 24) + 1);
  ASSERT_OK((*exec)->loadCheckpoint(tmp.path() + "/max"));
  ASSERT_OK((*exec)->run("train", &data, 0, 1, 1, nullptr));
  Status s = (*exec)->run("train", &data, 0, 2, 1, nullptr);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("step counter 'w2.step' is at INT32_MAX (2147483647)"),
            std::string::npos)
      << s.message();
}

TEST(CudaExecutor, NoGpuIsAClearError) {
  if (test::noGpuReason().empty())
    GTEST_SKIP() << "a GPU is present: this test is about machines without one";
  auto loaded = loadPlanBuffer(buildForGpu(mlpPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  ActorSystem sys;
  auto exec = Executor::create(sys.system, loaded->plan(), nullptr, onGpu(3));
  ASSERT_FALSE(exec);
  std::printf("the error: %s\n", exec.status().message().c_str());
  EXPECT_NE(exec.status().message().find("rank 3"), std::string::npos) << exec.status().message();
  EXPECT_NE(exec.status().message().find("GPU 0"), std::string::npos) << exec.status().message();
}

// The compressed all-reduce on the GPU against the CPU executor, codec by
// codec, step by step: the sums and the codec's state bit for bit where
// kernels/cuda/Compression.h says the codec is (top-k, DGC, random-k, QSGD
// over buckets the GPU sums in the CPU's order), within the case's
// tolerance where a sum runs in another order; the step counter alike.
TEST(CudaExecutor, CompressedAllReduceMatchesTheCpu) {
  SBPFLOW_REQUIRE_GPU();
  for (const CodecCase &codec : codecCases()) {
    SCOPED_TRACE(codec.name);
    auto cpuPlan = loadPlanBuffer(codecPlan(codec, plan::DeviceKind::CPU));
    auto gpuPlan = loadPlanBuffer(codecPlan(codec, plan::DeviceKind::CUDA));
    ASSERT_TRUE(cpuPlan) << cpuPlan.status().message();
    ASSERT_TRUE(gpuPlan) << gpuPlan.status().message();
    const CodecRun cpu = runCodec(cpuPlan->plan(), ExecutorOptions{}, codec.parts);
    const CodecRun gpu = runCodec(gpuPlan->plan(), onGpu(), codec.parts);
    ASSERT_EQ(cpu.sums.size(), static_cast<size_t>(kCodecSteps));
    ASSERT_EQ(gpu.sums.size(), cpu.sums.size());
    EXPECT_EQ(gpu.step, cpu.step);
    auto compare = [&](const std::vector<float> &got, const std::vector<float> &want,
                       const std::string &what) {
      if (codec.tolerance == 0)
        EXPECT_EQ(got, want) << what;
      else
        expectWithin(got, want, codec.tolerance, what);
    };
    for (int s = 0; s < kCodecSteps; ++s)
      compare(gpu.sums[s], cpu.sums[s], "g.sum after step " + std::to_string(s));
    compare(gpu.state0, cpu.state0, "g.state0");
    compare(gpu.state1, cpu.state1, "g.state1");
    ASSERT_EQ(gpu.hSums.size(), cpu.hSums.size());
    for (size_t s = 0; s < cpu.hSums.size(); ++s)
      compare(gpu.hSums[s], cpu.hSums[s], "h.sum after step " + std::to_string(s));
    compare(gpu.hState0, cpu.hState0, "h.state0");
    compare(gpu.hState1, cpu.hState1, "h.state1");
  }
}

// Without a GPU the executor still builds every task's kernel once, to
// measure its scratch, before it opens the device: the compressed
// all-reduce's CUDA builder passes that for every codec, and the error is
// the missing device's.
TEST(CudaExecutor, CompressedAllReduceIsMeasuredWithoutAGpu) {
  if (test::noGpuReason().empty())
    GTEST_SKIP() << "a GPU is present: CompressedAllReduceMatchesTheCpu runs instead";
  for (const CodecCase &codec : codecCases()) {
    SCOPED_TRACE(codec.name);
    auto loaded = loadPlanBuffer(codecPlan(codec, plan::DeviceKind::CUDA));
    ASSERT_TRUE(loaded) << loaded.status().message();
    ActorSystem sys;
    auto exec = Executor::create(sys.system, loaded->plan(), nullptr, onGpu());
    ASSERT_FALSE(exec);
    EXPECT_NE(exec.status().message().find("GPU 0"), std::string::npos) << exec.status().message();
    EXPECT_EQ(exec.status().message().find("codec"), std::string::npos) << exec.status().message();
  }
}

#else

TEST(CudaExecutor, BuildWithoutCudaRefusesADevice) {
  auto loaded = loadPlanBuffer(buildForGpu(mlpPlan()));
  ASSERT_TRUE(loaded) << loaded.status().message();
  ActorSystem sys;
  auto exec = Executor::create(sys.system, loaded->plan(), nullptr, onGpu());
  ASSERT_FALSE(exec);
  EXPECT_NE(exec.status().message().find("this build has no CUDA backend"), std::string::npos)
      << exec.status().message();
}

#endif
