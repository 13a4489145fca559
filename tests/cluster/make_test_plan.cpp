// Writes a small data-parallel softmax-regression plan (train + eval) for N
// CPU ranks, so the cluster tests run real jobs without the compiler. Its
// inputs are "image" f32 [20] and "label" i32 [] in 10 classes: what
// `--data synthetic` provides.
#include "runtime/plan/PlanLoader.h"
#include "tests/plan/TestPlans.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>

using namespace sbpflow;
using namespace sbpflow::testplan;

namespace {

constexpr int64_t kIn = 20, kClasses = 10;

PlanSpec softmaxRegression(int ranks, int64_t kBatch) {
  PlanSpec spec;
  std::vector<int> all;
  for (int r = 0; r < ranks; ++r)
    all.push_back(r);
  spec.placements = {{"dp", all, {ranks}}};
  spec.variables = {
      {"fc.weight", {kIn, kClasses}, 0, {B()}, plan::InitKind::Uniform, -0.1f, 0.1f, 7},
      {"fc.bias", {kClasses}, 0, {B()}},
      {"fc.weight.velocity", {kIn, kClasses}, 0, {B()}},
      {"fc.bias.velocity", {kClasses}, 0, {B()}}};
  // One rank holds whole tensors; several split the batch and sum gradients.
  bool dp = ranks > 1;
  Sbp rows = dp ? S(0) : B();
  Sbp part = dp ? P() : B();

  ProgramSpec train;
  train.name = "train";
  train.tensors = {
      {"image", {kBatch, kIn}, {rows}},                           // 0
      {"label", {kBatch}, {rows}, plan::DType::I32},              // 1
      {"fc.weight", {kIn, kClasses}, {B()}, plan::DType::F32, 0}, // 2
      {"fc.bias", {kClasses}, {B()}, plan::DType::F32, 1},        // 3
      {"xw", {kBatch, kClasses}, {rows}},                         // 4
      {"logits", {kBatch, kClasses}, {rows}},                     // 5
      {"nll", {kBatch}, {rows}},                                  // 6
      {"loss", {}, {part}},                                       // 7
      {"one", {}, {B()}},                                         // 8
      {"dnll", {kBatch}, {rows}},                                 // 9
      {"dlogits", {kBatch, kClasses}, {rows}},                    // 10
      {"dw.partial", {kIn, kClasses}, {part}},                    // 11
      {"db.partial", {kClasses}, {part}},                         // 12
      {"dw", {kIn, kClasses}, {B()}},                             // 13
      {"db", {kClasses}, {B()}},                                  // 14
  };
  TaskSpec image = inputTask("input.image", 0, "image");
  TaskSpec label = inputTask("input.label", 1, "label");
  TaskSpec w{"fc.weight", plan::OpKind::Parameter, {}, {2}};
  TaskSpec b{"fc.bias", plan::OpKind::Parameter, {}, {3}};
  TaskSpec mm{"fc.matmul", plan::OpKind::MatMul, {0, 2}, {4}, plan::OpAttrs::MatMulAttrs};
  TaskSpec bias{"fc.bias_add", plan::OpKind::BiasAdd, {4, 3}, {5}};
  TaskSpec xent{"loss.xent", plan::OpKind::SoftmaxXent, {5, 1}, {6}};
  TaskSpec mean = meanTask("loss.mean", plan::OpKind::Mean, 6, 7, kBatch);
  TaskSpec one = fillTask("loss.seed", 8, 1);
  TaskSpec meanGrad = meanTask("loss.mean.grad", plan::OpKind::MeanGrad, 8, 9, kBatch);
  TaskSpec xentGrad{"loss.xent.grad", plan::OpKind::SoftmaxXentGrad, {5, 1, 9}, {10}};
  TaskSpec mmGrad{
      "fc.matmul.grad", plan::OpKind::MatMul, {0, 10}, {11}, plan::OpAttrs::MatMulAttrs};
  mmGrad.transA = true;
  TaskSpec biasGrad{"fc.bias_add.grad", plan::OpKind::ReduceRows, {10}, {12}};
  train.tasks = {image, label, w,        b,        mm,     bias,    xent,
                 mean,  one,   meanGrad, xentGrad, mmGrad, biasGrad};
  int dwTensor = 11, dbTensor = 12;
  if (dp) {
    TaskSpec arW{"fc.weight.grad.allreduce",
                 plan::OpKind::AllReduce,
                 {11},
                 {13},
                 plan::OpAttrs::CollectiveAttrs};
    TaskSpec arB{"fc.bias.grad.allreduce",
                 plan::OpKind::AllReduce,
                 {12},
                 {14},
                 plan::OpAttrs::CollectiveAttrs};
    train.tasks.push_back(arW);
    train.tasks.push_back(arB);
    dwTensor = 13;
    dbTensor = 14;
  } else {
    train.tensors.resize(13);
  }
  TaskSpec sgdW{
      "sgd.fc.weight", plan::OpKind::SgdMomentum, {dwTensor}, {}, plan::OpAttrs::SgdAttrs};
  sgdW.lr = 0.1f;
  sgdW.momentum = 0.9f;
  sgdW.param = 0;
  sgdW.momentumBuffer = 2;
  TaskSpec sgdB = sgdW;
  sgdB.name = "sgd.fc.bias";
  sgdB.inputs = {dbTensor};
  sgdB.param = 1;
  sgdB.momentumBuffer = 3;
  int sgdWTask = static_cast<int>(train.tasks.size());
  train.tasks.push_back(sgdW);
  train.tasks.push_back(sgdB);
  train.inputs = {{"image", 0}, {"label", 1}};
  // Sum over ranks of each rank's partial mean: the global mean loss.
  train.metrics = {{"loss", 7}};

  ProgramSpec eval;
  eval.name = "eval";
  // The forward tensors 0..5 as in train, then the count.
  eval.tensors.assign(train.tensors.begin(), train.tensors.begin() + 6);
  eval.tensors.push_back({"correct", {}, {part}}); // 6
  TaskSpec count{"eval.correct", plan::OpKind::CountCorrect, {5, 1}, {6}};
  eval.tasks = {image, label, w, b, mm, bias, count};
  eval.inputs = {{"image", 0}, {"label", 1}};
  eval.metrics = {{"correct", 6}};

  spec.programs = {train, eval};
  finalize(spec);
  // Updates wait until the forward pass has read the parameters.
  spec.programs[0].registers.push_back({4, -1, {sgdWTask}, 1});
  spec.programs[0].registers.push_back({5, -1, {sgdWTask + 1}, 1});
  return spec;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"write the cluster tests' softmax-regression plan"};
  int ranks = 1;
  int64_t batch = 32;
  std::string out, device = "cpu";
  app.add_option("--ranks", ranks, "data-parallel ranks")->check(CLI::PositiveNumber);
  app.add_option("--device", device, "the ranks' devices: cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--batch", batch, "global batch size")->check(CLI::PositiveNumber);
  app.add_option("-o,--output", out, "plan file to write")->required();
  CLI11_PARSE(app, argc, argv);
  PlanSpec spec = softmaxRegression(ranks, batch);
  for (PlacementSpec &p : spec.placements)
    p.device = device == "cuda" ? plan::DeviceKind::CUDA : plan::DeviceKind::CPU;
  std::vector<uint8_t> bytes = build(spec);
  auto loaded = loadPlanBuffer(bytes);
  if (!loaded) {
    std::fprintf(stderr, "error: the test plan does not verify: %s\n",
                 loaded.status().message().c_str());
    return 1;
  }
  std::ofstream file(out, std::ios::binary);
  file.write(reinterpret_cast<const char *>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  if (!file) {
    std::fprintf(stderr, "error: cannot write %s\n", out.c_str());
    return 1;
  }
  return 0;
}
