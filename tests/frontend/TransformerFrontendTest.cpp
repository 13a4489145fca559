// The transformer half of the DSL: tensors of any rank, the GPT ops lowered to
// the spec's op names and attributes (checked on the printed MLIR), dropout
// only in @train, AdamW with gradient clipping, outputs, the eval-only
// sampling model, and shape errors that name the user's line.
#include "frontend/Compile.h"
#include "frontend/Model.h"
#include "ir/SbpDialect.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/frontend/CompiledPlan.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/IR/Verifier.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

using namespace sbpflow;

namespace {

constexpr int64_t kBatch = 4, kT = 8, kC = 16, kVocab = 11, kHeads = 4;

// One GPT block on a [dp, tp] mesh with Megatron annotations on the tp dim,
// an AdamW step with clipping and a "probs" output.
struct TinyGpt {
  Model m;
  explicit TinyGpt(uint64_t seed = 3, double dropoutP = 0.1) : m("tiny_gpt", seed) {
    auto mesh = m.placement("mesh", cpu({2, 2}));
    auto tokens = m.input("tokens", {kBatch, kT}, i32, mesh, {S(0), B});
    auto targets = m.input("targets", {kBatch, kT}, i32, mesh, {S(0), B});
    nn::LinearOptions column, row;
    column.weight_sbp = std::vector<Sbp>{B, S(0)};
    row.weight_sbp = std::vector<Sbp>{B, S(1)};
    Tensor x = nn::embedding(tokens, kVocab, kC, "wte");
    x = add(x, m.parameter("wpe.weight", {kT, kC}, Init::normal(0, 0.02), mesh));
    x = dropout(x, dropoutP);
    Tensor h = nn::layer_norm(x, "ln_1");
    Tensor q = nn::linear(h, kC, "attn.q", column);
    Tensor k = nn::linear(h, kC, "attn.k", column);
    Tensor v = nn::linear(h, kC, "attn.v", column);
    Tensor a = nn::linear(causal_attention(q, k, v, kHeads), kC, "attn.c_proj", row);
    x = add(x, dropout(a, dropoutP));
    Tensor f = gelu(nn::linear(nn::layer_norm(x, "ln_2"), 4 * kC, "mlp.fc", column));
    x = add(x, dropout(nn::linear(f, kC, "mlp.proj", row), dropoutP));
    nn::LinearOptions head;
    head.bias = false;
    Tensor logits = nn::linear(nn::layer_norm(x, "ln_f"), kVocab, "lm_head", head);
    optim::AdamW adamw;
    adamw.lr = 1e-3;
    adamw.beta2 = 0.99;
    m.minimize(cross_entropy(logits, targets), adamw, 1.0);
    m.output("probs", softmax(logits));
  }
};

std::string printModule(const Model &model, bool *verified) {
  mlir::OwningOpRef<mlir::ModuleOp> module = model.toMLIR();
  *verified = mlir::succeeded(mlir::verify(*module));
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  return os.str();
}

// The text of `func.func @name` up to the next function.
std::string functionText(const std::string &module, const std::string &name) {
  size_t begin = module.find("func.func @" + name + "(");
  if (begin == std::string::npos)
    return "";
  size_t end = module.find("func.func @", begin + 1);
  return module.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// Lines of `text` that hold `op` followed by a space (so "sbp.softmax" does
// not match "sbp.softmax_xent").
std::vector<std::string> opLines(const std::string &text, const std::string &op) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(op + " ") != std::string::npos)
      lines.push_back(line);
  return lines;
}

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

// Checks that `text` holds exactly one `op` and that its line holds each of
// `parts` (an attribute, the result type).
void expectOneOp(const std::string &text, const std::string &op,
                 const std::vector<std::string> &parts) {
  auto lines = opLines(text, op);
  ASSERT_EQ(lines.size(), 1u) << text;
  for (const std::string &part : parts)
    EXPECT_TRUE(contains(lines[0], part)) << lines[0];
}

// The text of `model`'s @eval, once the module it lowers to has verified.
std::string verifiedEval(const Model &model) {
  bool verified = false;
  std::string eval = functionText(printModule(model, &verified), "eval");
  EXPECT_TRUE(verified) << eval;
  return eval;
}

std::string thisFileLine(int line) { return std::string(__FILE__) + ":" + std::to_string(line); }

} // namespace

TEST(TransformerFrontend, LowersTheGptOpsWithTheirAttributes) {
  TinyGpt net;
  bool verified = false;
  std::string text = printModule(net.m, &verified);
  EXPECT_TRUE(verified) << text;
  std::string train = functionText(text, "train");
  ASSERT_FALSE(train.empty()) << text;

  expectOneOp(train, "sbp.embedding", {"-> tensor<4x8x16xf32>"});

  // The position table is a bias over the trailing [T, C] axes.
  auto biasAdds = opLines(train, "sbp.bias_add");
  ASSERT_FALSE(biasAdds.empty());
  EXPECT_TRUE(contains(biasAdds[0], "tensor<8x16xf32")) << biasAdds[0];

  auto norms = opLines(train, "sbp.layer_norm");
  ASSERT_EQ(norms.size(), 3u) << train;
  for (const std::string &line : norms)
    EXPECT_TRUE(contains(line, "{eps = 9.99999974E-6 : f32}")) << line;

  expectOneOp(train, "sbp.causal_attention", {"{heads = 4 : i64}"});

  // Linear layers on [B, T, C]: x Wᵀ with W [out, in].
  auto matmuls = opLines(train, "sbp.matmul");
  ASSERT_EQ(matmuls.size(), 7u) << train; // q, k, v, c_proj, fc, proj, lm_head
  for (const std::string &line : matmuls)
    EXPECT_TRUE(contains(line, "transpose_b = true")) << line;
  EXPECT_TRUE(contains(train, "tensor<4x8x64xf32>")); // fc's output

  auto dropouts = opLines(train, "sbp.dropout");
  ASSERT_EQ(dropouts.size(), 3u) << train;
  for (const std::string &line : dropouts)
    EXPECT_TRUE(contains(line, "p = 1.000000e-01 : f32")) << line;
  EXPECT_EQ(opLines(train, "sbp.gelu").size(), 1u);
  expectOneOp(train, "sbp.softmax_xent", {"-> tensor<4x8xf32>"});

  expectOneOp(train, "sbp.minimize", {"max_grad_norm = 1.000000e+00 : f32", "#sbp.adamw<"});
  // Only @eval has the sampling output.
  EXPECT_TRUE(opLines(train, "sbp.output").empty());
}

TEST(TransformerFrontend, EvalLeavesDropoutOutAndHasTheOutput) {
  TinyGpt net;
  bool verified = false;
  std::string text = printModule(net.m, &verified);
  std::string eval = functionText(text, "eval");
  ASSERT_FALSE(eval.empty()) << text;
  EXPECT_TRUE(opLines(eval, "sbp.dropout").empty()) << eval;
  EXPECT_EQ(opLines(eval, "sbp.causal_attention").size(), 1u);
  expectOneOp(eval, "sbp.output", {"sbp.output \"probs\"", "tensor<4x8x11xf32>"});
  EXPECT_EQ(opLines(eval, "sbp.softmax").size(), 1u);
  EXPECT_EQ(opLines(eval, "sbp.metric").size(), 1u); // the loss
  EXPECT_TRUE(opLines(eval, "sbp.minimize").empty());
}

TEST(TransformerFrontend, VariablesCarryInitAndAnnotations) {
  TinyGpt net;
  mlir::OwningOpRef<mlir::ModuleOp> module = net.m.toMLIR();
  auto var = [&](const char *name) {
    auto v = module->lookupSymbol<mlir::sbp::VariableOp>(name);
    EXPECT_TRUE(v) << name;
    return v;
  };
  auto sbpOf = [](mlir::sbp::VariableOp v) {
    return mlir::sbp::toString(mlir::sbp::getSbpDims(mlir::sbp::getSbp(v.getType())));
  };
  auto wte = var("wte.weight");
  ASSERT_TRUE(wte);
  EXPECT_EQ(wte.getTensorType().getShape(), llvm::ArrayRef<int64_t>({kVocab, kC}));
  EXPECT_EQ(wte.getInit().getKind(), mlir::sbp::InitKind::normal);
  EXPECT_DOUBLE_EQ(wte.getInit().getA().convertToDouble(), 0.0);
  EXPECT_NEAR(wte.getInit().getB().convertToDouble(), 0.02, 1e-9);
  auto gamma = var("ln_1.weight"), beta = var("ln_1.bias");
  ASSERT_TRUE(gamma && beta);
  EXPECT_EQ(gamma.getInit().getKind(), mlir::sbp::InitKind::constant);
  EXPECT_DOUBLE_EQ(gamma.getInit().getA().convertToDouble(), 1.0);
  EXPECT_EQ(beta.getInit().getKind(), mlir::sbp::InitKind::zeros);
  // Megatron annotations on the tp dim stay as the user wrote them.
  auto q = var("attn.q.weight"), proj = var("mlp.proj.weight");
  ASSERT_TRUE(q && proj);
  EXPECT_EQ(q.getTensorType().getShape(), llvm::ArrayRef<int64_t>({kC, kC}));
  EXPECT_EQ(sbpOf(q), "[B, S(0)]");
  EXPECT_EQ(sbpOf(proj), "[B, S(1)]");
  EXPECT_EQ(proj.getTensorType().getShape(), llvm::ArrayRef<int64_t>({kC, 4 * kC}));
  EXPECT_FALSE(module->lookupSymbol<mlir::sbp::VariableOp>("lm_head.bias"));
}

TEST(TransformerFrontend, DropoutSeedsFollowModelSeedAndName) {
  auto seeds = [](uint64_t modelSeed) {
    TinyGpt net(modelSeed);
    bool verified = false;
    std::vector<std::string> seeds;
    for (const std::string &line :
         opLines(functionText(printModule(net.m, &verified), "train"), "sbp.dropout")) {
      size_t at = line.find("seed = ");
      EXPECT_NE(at, std::string::npos) << line;
      seeds.push_back(line.substr(at, line.find(' ', at + 7) - at));
    }
    return seeds;
  };
  std::vector<std::string> a = seeds(3), b = seeds(3), c = seeds(4);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a[0], a[1]);
  EXPECT_NE(a[1], a[2]);
}

TEST(TransformerFrontend, ZeroDropoutAddsNoOp) {
  TinyGpt net(3, 0.0);
  bool verified = false;
  std::string text = printModule(net.m, &verified);
  EXPECT_TRUE(verified);
  EXPECT_TRUE(opLines(text, "sbp.dropout").empty()) << text;
}

TEST(TransformerFrontend, ModelWithoutMinimizeLowersOnlyEval) {
  Model m("sampler");
  auto one = m.placement("one", cpu(1));
  auto tokens = m.input("tokens", {1, kT}, i32, one, {B});
  Tensor x = nn::embedding(tokens, kVocab, kC, "wte");
  x = dropout(x, 0.2); // left out: there is no @train
  m.output("probs", softmax(nn::linear(x, kVocab, "head")));
  bool verified = false;
  std::string text = printModule(m, &verified);
  EXPECT_TRUE(verified) << text;
  EXPECT_TRUE(functionText(text, "train").empty()) << text;
  std::string eval = functionText(text, "eval");
  EXPECT_FALSE(opLines(eval, "sbp.output").empty()) << text;
  EXPECT_TRUE(opLines(text, "sbp.dropout").empty()) << text;
  EXPECT_TRUE(opLines(eval, "sbp.metric").empty());
}

// Without a metric or an output there is nothing to evaluate: no @eval, so
// the driver runs no validation pass (benchmarks).
TEST(TransformerFrontend, TrainingOnlyModelLowersOnlyTrain) {
  Model m("bench");
  auto dp = m.placement("dp", cpu(2));
  auto x = m.input("x", {4, 3, 5}, f32, dp, {S(0)});
  auto y = m.input("y", {4, 3}, i32, dp, {S(0)});
  m.minimize(cross_entropy(nn::linear(x, 7, "fc"), y), optim::SGD{});
  bool verified = false;
  std::string text = printModule(m, &verified);
  EXPECT_TRUE(verified) << text;
  EXPECT_FALSE(functionText(text, "train").empty()) << text;
  EXPECT_TRUE(functionText(text, "eval").empty()) << text;
}

TEST(TransformerFrontend, LayoutOpsLowerWithTheirAttributes) {
  Model m("layout");
  auto dp = m.placement("dp", cpu(2));
  auto x = m.input("x", {2, 3, 4}, f32, dp, {S(0)});
  m.output("reshaped", reshape(x, {6, -1}));
  m.output("transposed", transpose(x, {0, 2, 1}));
  m.output("sliced", slice(x, -1, 1, 3));
  m.output("joined", concat({x, x, x}, 1));
  std::string eval = verifiedEval(m);
  expectOneOp(eval, "sbp.reshape", {"-> tensor<6x4xf32>"});
  expectOneOp(eval, "sbp.transpose", {"perm = array<i64: 0, 2, 1>", "-> tensor<2x4x3xf32>"});
  expectOneOp(eval, "sbp.narrow", {"axis = 2 : i64", "begin = 1 : i64", "-> tensor<2x3x2xf32>"});
  expectOneOp(eval, "sbp.concat", {"{axis = 1 : i64}", "-> tensor<2x9x4xf32>"});
  EXPECT_EQ(opLines(eval, "sbp.output").size(), 4u);
}

TEST(TransformerFrontend, ShapeErrorsNameTheUsersLine) {
  Model m("bad");
  auto dp = m.placement("dp", cpu(2));
  auto x = m.input("x", {2, 5, 12}, f32, dp, {S(0)});
  auto ids = m.input("ids", {2, 5}, i32, dp, {S(0)});
  auto fids = m.input("fids", {2, 5}, f32, dp, {S(0)});
  auto c = m.input("c", {12}, f32, dp, {B});
  auto d = m.input("d", {7}, f32, dp, {B});
  auto table = m.input("table", {9, 12}, f32, dp, {B});
  auto y = m.input("y", {2, 5, 7}, f32, dp, {S(0)});

  // Each case: the call, the line it is on, and a part of the message.
  struct Case {
    std::function<void()> call;
    int line;
    const char *says;
  };
  // The call and __LINE__ must stay on one line: no clang-format here.
  // clang-format off
  std::vector<Case> cases = {
      {[&] { layer_norm(x, d, c); }, __LINE__, "needs gamma and beta [12]"},
      {[&] { causal_attention(x, x, x, 5); }, __LINE__, "5 heads do not divide the width 12"},
      {[&] { causal_attention(x, x, y, 4); }, __LINE__, "q, k, v of one shape"},
      {[&] { reshape(x, {7, -1}); }, __LINE__, "cannot reshape [2, 5, 12] (120 elements)"},
      {[&] { reshape(x, {-1, -1}); }, __LINE__, "one may be -1"},
      {[&] { transpose(x, {0, 0, 1}); }, __LINE__, "is not a permutation"},
      {[&] { slice(x, 1, 3, 6); }, __LINE__, "need 0 <= begin < end <= 5"},
      {[&] { slice(x, 3, 0, 1); }, __LINE__, "axis 3 out of range"},
      {[&] { concat({x, y}, 1); }, __LINE__, "operand 1 [2, 5, 7] does not match"},
      {[&] { cross_entropy(y, m.input("bad_labels", {2}, i32, dp, {S(0)})); }, __LINE__, "needs logits [..., C] and labels [...]"},
      {[&] { embedding(table, fids); }, __LINE__, "needs i32 ids"},
      {[&] { add(x, d); }, __LINE__, "cannot add shapes [2, 5, 12] and [7]"},
      {[&] { matmul(x, y, false, true); }, __LINE__, "matmul shapes do not agree"},
      {[&] { nn::linear(c, 4, "flat"); }, __LINE__, "needs an input of rank >= 2"},
      {[&] { dropout(x, 1.0); }, __LINE__, "needs 0 <= p < 1"},
      {[&] { m.output("x", x), m.output("x", x); }, __LINE__, "output 'x' declared twice"},
  };
  // clang-format on
  for (const Case &tc : cases) {
    try {
      tc.call();
      ADD_FAILURE() << "line " << tc.line << " was accepted (expected \"" << tc.says << "\")";
    } catch (const ModelError &e) {
      std::string what = e.what();
      EXPECT_EQ(what.rfind(thisFileLine(tc.line), 0), 0u) << what;
      EXPECT_TRUE(contains(what, tc.says)) << what;
    }
  }
  EXPECT_NO_THROW(cross_entropy(x, ids)); // [..., C] logits with [...] labels
}

TEST(TransformerFrontend, OptimiserSettingsAreChecked) {
  Model m("bad");
  auto dp = m.placement("dp", cpu(1));
  auto x = m.input("x", {3, 4}, f32, dp, {B});
  auto y = m.input("y", {3}, i32, dp, {B});
  Tensor loss = cross_entropy(nn::linear(x, 2, "fc"), y);
  optim::AdamW badBeta;
  badBeta.beta2 = 1.0;
  EXPECT_THROW(m.minimize(loss, badBeta), ModelError);
  EXPECT_THROW(m.minimize(loss, optim::AdamW{}, 0.0), ModelError); // max_grad_norm 0
  EXPECT_THROW(m.parameter("p", {2, 0}, Init::zeros(), dp), ModelError);
  EXPECT_THROW(m.parameter("fc.weight", {2, 4}, Init::zeros(), dp), ModelError); // twice
  EXPECT_THROW(m.parameter("q", {2}, Init::normal(0, -1), dp), ModelError);
  m.minimize(loss, optim::AdamW{}, 1.0);
  EXPECT_THROW(m.minimize(loss, optim::AdamW{}), ModelError); // twice
}

// The whole pipeline on the tiny GPT on the [2, 2] mesh: autodiff of every
// new op, propagation, boxing, bucketing and plan emission, with and without
// dropout (the PyTorch comparison runs at dropout 0).
class TinyGptCompiles : public ::testing::TestWithParam<double> {};

INSTANTIATE_TEST_SUITE_P(Dropout, TinyGptCompiles, ::testing::Values(0.1, 0.0));

TEST_P(TinyGptCompiles, ToAPlanWithTheOutput) {
  TinyGpt net(3, GetParam());
  auto loaded = testfrontend::compileAndLoad(net.m);
  ASSERT_TRUE(loaded) << loaded.status().message();
  const plan::Plan *p = loaded->plan();
  ASSERT_EQ(testfrontend::programNames(p), (std::vector<std::string>{"train", "eval"}));
  const plan::Program *eval = p->programs()->Get(1);
  ASSERT_TRUE(eval->outputs());
  ASSERT_EQ(eval->outputs()->size(), 1u);
  EXPECT_EQ(eval->outputs()->Get(0)->name()->str(), "probs");
  // 21 parameters, each with AdamW's m, v and step.
  EXPECT_EQ(p->variables()->size(), 4u * 21u);
}

// Rows by index (a graph layer's message passing): gather_rows and
// scatter_rows lower to their ops with the shapes they infer, and their
// shape errors name the user's line.
TEST(TransformerFrontend, RowOpsLowerAndCheckTheirShapes) {
  Model m("rows");
  auto dp = m.placement("dp", cpu(2));
  auto x = m.input("x", {6, 3}, f32, dp, {B});
  auto idx = m.input("idx", {10}, i32, dp, {S(0)});
  auto fidx = m.input("fidx", {10}, f32, dp, {S(0)});
  Tensor msgs = gather_rows(x, idx);
  EXPECT_EQ(msgs.shape(), (std::vector<int64_t>{10, 3}));
  m.output("sum", scatter_rows(msgs, idx, 6));
  std::string eval = verifiedEval(m);
  expectOneOp(eval, "sbp.gather_rows", {"-> tensor<10x3xf32>"});
  expectOneOp(eval, "sbp.scatter_rows", {"-> tensor<6x3xf32>"});

  // clang-format off
  const int fLine = __LINE__; try { gather_rows(x, fidx); ADD_FAILURE() << "f32 indices accepted"; }
  catch (const ModelError &e) {
    EXPECT_EQ(std::string(e.what()).rfind(thisFileLine(fLine), 0), 0u) << e.what();
    EXPECT_TRUE(contains(e.what(), "idx must have element type i32")) << e.what();
  }
  const int rLine = __LINE__; try { scatter_rows(msgs, idx, -1); ADD_FAILURE() << "rows -1 accepted"; }
  catch (const ModelError &e) {
    EXPECT_EQ(std::string(e.what()).rfind(thisFileLine(rLine), 0), 0u) << e.what();
    EXPECT_TRUE(contains(e.what(), "needs rows >= 0")) << e.what();
  }
  // clang-format on
}
