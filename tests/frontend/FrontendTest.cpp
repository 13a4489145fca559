// The DSL: errors name the user's line, the lowered module has the train and
// eval functions and PyTorch-initialised variables, and it compiles to a plan
// the runtime accepts.
#include "frontend/Compile.h"
#include "frontend/Model.h"
#include "ir/SbpDialect.h"
#include "runtime/plan/PlanLoader.h"
#include "tests/frontend/CompiledPlan.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/IR/Verifier.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

using namespace sbpflow;

namespace {

// The MLP of the README on `ranks` ranks (batch 12, 5 features, 3 classes).
struct SmallMlp {
  Model m;
  Tensor logits, y;
  explicit SmallMlp(int ranks, uint64_t seed = 1) : m("small", seed) {
    auto dp = m.placement("dp", cpu(ranks));
    auto x = m.input("image", {12, 5}, f32, dp, {S(0)});
    y = m.input("label", {12}, i32, dp, {S(0)});
    logits = nn::linear(relu(nn::linear(x, 7, "fc1")), 3, "fc2");
    optim::SGD sgd;
    sgd.lr = 0.1;
    sgd.momentum = 0.9;
    m.minimize(cross_entropy(logits, y), sgd);
    m.evaluate("correct", correct_count(logits, y));
  }
};

std::string thisFileLine(int line) { return std::string(__FILE__) + ":" + std::to_string(line); }

} // namespace

TEST(Frontend, ShapeErrorNamesTheUsersLine) {
  Model m("bad");
  auto dp = m.placement("dp", cpu(2));
  auto x = m.input("x", {4, 3}, f32, dp, {S(0)});
  auto w = m.input("w", {5, 2}, f32, dp, {B});
  int line = __LINE__ + 2;
  try {
    matmul(x, w);
    FAIL() << "matmul of [4, 3] x [5, 2] was accepted";
  } catch (const ModelError &e) {
    std::string what = e.what();
    EXPECT_EQ(what.rfind(thisFileLine(line), 0), 0u) << what;
    EXPECT_NE(what.find("[4, 3] x [5, 2]"), std::string::npos) << what;
  }
}

TEST(Frontend, BadInputsAreRejected) {
  Model m("bad");
  auto dp = m.placement("dp", cpu(2));
  EXPECT_THROW(m.placement("dp", cpu(2)), ModelError);
  EXPECT_THROW(m.input("x", {4, 3}, f32, dp, {S(2)}), ModelError);    // axis out of range
  EXPECT_THROW(m.input("x", {4, 3}, f32, dp, {S(0), B}), ModelError); // 2 dims on a 1-D placement
  auto x = m.input("x", {4, 3}, f32, dp, {S(0)});
  auto fy = m.input("fy", {4}, f32, dp, {S(0)});
  EXPECT_THROW(cross_entropy(x, fy), ModelError); // float labels
  auto y = m.input("y", {4}, i32, dp, {S(0)});
  EXPECT_THROW(m.minimize(x, optim::SGD{}), ModelError); // not a scalar
  optim::SGD negative;
  negative.lr = -1;
  EXPECT_THROW(m.minimize(cross_entropy(x, y), negative), ModelError);
}

// The DSL builds sbp ops, so the op's verifier reports at the user's line:
// an input is split or broadcast, never partial (issue 13).
TEST(Frontend, PartialInputIsRefusedAtTheUsersLine) {
  Model m("bad");
  auto dp = m.placement("dp", cpu(2));
  int line = __LINE__ + 2;
  try {
    m.input("x", {4, 3}, f32, dp, {P});
    FAIL() << "a partial input was accepted";
  } catch (const ModelError &e) {
    std::string what = e.what();
    EXPECT_EQ(what.rfind(thisFileLine(line), 0), 0u) << what;
    EXPECT_NE(what.find("'sbp.input' op input 'x' cannot be partial (P(sum))"), std::string::npos)
        << what;
  }
  // The field is still free: the refused op left nothing behind.
  EXPECT_NO_THROW(m.input("x", {4, 3}, f32, dp, {S(0)}));
  EXPECT_THROW(m.input("y", {4, 3}, f32, dp, {S(-1)}), ModelError); // negative axis
}

TEST(Frontend, InitialisersAreChecked) {
  Model m("bad");
  auto dp = m.placement("dp", cpu(2));
  try {
    m.parameter("w", {4}, Init::uniform(0, INFINITY), dp);
    FAIL() << "an infinite initialiser was accepted";
  } catch (const ModelError &e) {
    EXPECT_NE(std::string(e.what()).find("parameter 'w': initialiser parameters must be finite"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(m.parameter("v", {4}, Init::uniform(1, 1), dp), ModelError);
  EXPECT_NO_THROW(m.parameter("w", {4}, Init::uniform(-1, 1), dp)); // the name is still free
}

TEST(Frontend, LowersToTrainAndEvalWithPyTorchInit) {
  SmallMlp net(2);
  mlir::OwningOpRef<mlir::ModuleOp> module = net.m.toMLIR();
  ASSERT_TRUE(mlir::succeeded(mlir::verify(*module)));
  EXPECT_TRUE(module->lookupSymbol<mlir::func::FuncOp>("train"));
  EXPECT_TRUE(module->lookupSymbol<mlir::func::FuncOp>("eval"));
  auto w = module->lookupSymbol<mlir::sbp::VariableOp>("fc1.weight");
  ASSERT_TRUE(w);
  // nn.Linear's layout [out, in] and bound 1/sqrt(in).
  EXPECT_EQ(w.getTensorType().getShape(), llvm::ArrayRef<int64_t>({7, 5}));
  EXPECT_NEAR(w.getInit().getB().convertToDouble(), 1.0 / std::sqrt(5.0), 1e-12);
  EXPECT_NEAR(w.getInit().getA().convertToDouble(), -1.0 / std::sqrt(5.0), 1e-12);
  // Unannotated parameters are left to the compiler: no SBP encoding.
  EXPECT_FALSE(mlir::sbp::getSbp(w.getType()));
}

TEST(Frontend, SeedsDependOnModelSeedAndName) {
  SmallMlp a(2, 1), b(2, 1), c(2, 2);
  auto ma = a.m.toMLIR(), mb = b.m.toMLIR(), mc = c.m.toMLIR();
  auto seed = [](mlir::ModuleOp m, const char *name) {
    return m.lookupSymbol<mlir::sbp::VariableOp>(name).getSeed();
  };
  EXPECT_EQ(seed(*ma, "fc1.weight"), seed(*mb, "fc1.weight"));
  EXPECT_NE(seed(*ma, "fc1.weight"), seed(*mc, "fc1.weight"));
  EXPECT_NE(seed(*ma, "fc1.weight"), seed(*ma, "fc2.weight"));
}

TEST(Frontend, CompilesToAPlanTheRuntimeAccepts) {
  SmallMlp net(2);
  auto loaded = testfrontend::compileAndLoad(net.m);
  ASSERT_TRUE(loaded) << loaded.status().message();
  const plan::Plan *p = loaded->plan();
  ASSERT_EQ(testfrontend::programNames(p), (std::vector<std::string>{"train", "eval"}));
  // Four parameters, four momentum buffers.
  EXPECT_EQ(p->variables()->size(), 8u);
}
