// The op semantics of the transformer ops and the generalised ones: the SBP
// signatures each offers per hierarchy dimension (the head-parallel rule of
// attention included), inferred shapes and flops.
#include "ir/SbpDialect.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

using namespace mlir;
using namespace mlir::sbp;

class GptOpSemantics : public testing::Test {
protected:
  GptOpSemantics() { ctx.loadDialect<SbpDialect, func::FuncDialect>(); }

  // Parses a module whose @f holds the ops under test; fails the test on a
  // parse or verifier error.
  void parse(const std::string &body,
             const std::string &placements = "sbp.placement @dp cpu ranks [0, 1] hierarchy [2]") {
    std::string text = placements + "\nfunc.func @f() {\n" + body + "\n  return\n}\n";
    module = parseSourceString<ModuleOp>(text, &ctx);
    ASSERT_TRUE(module) << text;
  }
  // The `index`-th op named `name` in @f.
  SbpOpInterface op(llvm::StringRef name, int index = 0) {
    for (Operation &o : module->lookupSymbol<func::FuncOp>("f").getBody().front())
      if (o.getName().getStringRef() == name && index-- == 0)
        return llvm::cast<SbpOpInterface>(&o);
    ADD_FAILURE() << "no " << name.str();
    return {};
  }
  static std::vector<std::string> sigs(SbpOpInterface iface, unsigned dim = 0) {
    std::vector<std::string> out;
    for (const SbpSignature &s : iface.getSbpSignatures(dim))
      out.push_back(s.str());
    return out;
  }
  static bool has(const std::vector<std::string> &v, const std::string &s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  }

  MLIRContext ctx;
  OwningOpRef<ModuleOp> module;
};

TEST_F(GptOpSemantics, MatmulOnRank3Operands) {
  parse(R"mlir(
  %x = sbp.input "x" : tensor<2x4x8xf32>
  %w = sbp.input "w" : tensor<6x8xf32>
  %y = sbp.matmul %x, %w {transpose_b = true} : (tensor<2x4x8xf32>, tensor<6x8xf32>) -> tensor<2x4x6xf32>
  %dw = sbp.matmul %y, %x {transpose_a = true} : (tensor<2x4x6xf32>, tensor<2x4x8xf32>) -> tensor<6x8xf32>)mlir");
  // Linear layer: batch and time parallel, column-parallel on W's rows, and
  // partial sums when the contraction is split on both sides.
  EXPECT_EQ(sigs(op("sbp.matmul")),
            (std::vector<std::string>{"S(0) x B -> S(0)", "S(1) x B -> S(1)", "B x S(0) -> S(2)",
                                      "S(2) x S(1) -> P(sum)", "B x B -> B", "P(sum) x B -> P(sum)",
                                      "B x P(sum) -> P(sum)"}));
  EXPECT_DOUBLE_EQ(op("sbp.matmul").getFlops(), 2.0 * 8 * 6 * 8);
  // dW = dy^T x contracts batch and time: either split gives partial sums;
  // dy split on its last axis (column-parallel) gives dW split on rows.
  EXPECT_EQ(
      sigs(op("sbp.matmul", 1)),
      (std::vector<std::string>{"S(2) x B -> S(0)", "B x S(2) -> S(1)", "S(0) x S(0) -> P(sum)",
                                "S(1) x S(1) -> P(sum)", "B x B -> B", "P(sum) x B -> P(sum)",
                                "B x P(sum) -> P(sum)"}));
  EXPECT_DOUBLE_EQ(op("sbp.matmul", 1).getFlops(), 2.0 * 6 * 8 * 8);
}

TEST_F(GptOpSemantics, MatmulContractionSplitNeedsEqualShapes) {
  parse(R"mlir(
  %a = sbp.input "a" : tensor<2x4x6xf32>
  %b = sbp.input "b" : tensor<8x6xf32>
  %c = sbp.matmul %a, %b {transpose_a = true} : (tensor<2x4x6xf32>, tensor<8x6xf32>) -> tensor<6x6xf32>)mlir");
  // K is [2, 4] on a and [8] on b: no split of it lines up on both sides.
  EXPECT_EQ(sigs(op("sbp.matmul")),
            (std::vector<std::string>{"S(2) x B -> S(0)", "B x S(1) -> S(1)", "B x B -> B",
                                      "P(sum) x B -> P(sum)", "B x P(sum) -> P(sum)"}));
}

TEST_F(GptOpSemantics, BiasAddAndReduceRowsOnTrailingAxes) {
  parse(R"mlir(
  %x = sbp.input "x" : tensor<2x4x8xf32>
  %p = sbp.input "p" : tensor<4x8xf32>
  %y = sbp.bias_add %x, %p : (tensor<2x4x8xf32>, tensor<4x8xf32>) -> tensor<2x4x8xf32>
  %r = sbp.reduce_rows %x : (tensor<2x4x8xf32>) -> tensor<4x8xf32>)mlir");
  EXPECT_EQ(sigs(op("sbp.bias_add")),
            (std::vector<std::string>{"S(0) x B -> S(0)", "S(1) x S(0) -> S(1)",
                                      "S(2) x S(1) -> S(2)", "B x B -> B"}));
  EXPECT_EQ(sigs(op("sbp.reduce_rows")),
            (std::vector<std::string>{"S(0) -> P(sum)", "S(1) -> S(0)", "S(2) -> S(1)", "B -> B",
                                      "P(sum) -> P(sum)"}));
}

TEST_F(GptOpSemantics, LossOpsSplitOnLeadingAxes) {
  parse(R"mlir(
  %l = sbp.input "l" : tensor<2x4x11xf32>
  %y = sbp.input "y" : tensor<2x4xi32>
  %x = sbp.softmax_xent %l, %y : (tensor<2x4x11xf32>, tensor<2x4xi32>) -> tensor<2x4xf32>
  %c = sbp.count_correct %l, %y : (tensor<2x4x11xf32>, tensor<2x4xi32>) -> tensor<f32>)mlir");
  EXPECT_EQ(sigs(op("sbp.softmax_xent")),
            (std::vector<std::string>{"S(0) x S(0) -> S(0)", "S(1) x S(1) -> S(1)", "B x B -> B"}));
  EXPECT_EQ(
      sigs(op("sbp.count_correct")),
      (std::vector<std::string>{"S(0) x S(0) -> P(sum)", "S(1) x S(1) -> P(sum)", "B x B -> B"}));
}

TEST_F(GptOpSemantics, EmbeddingAndItsGradient) {
  parse(R"mlir(
  %t = sbp.input "t" : tensor<11x8xf32>
  %ids = sbp.input "ids" : tensor<2x4xi32>
  %e = sbp.embedding %t, %ids : (tensor<11x8xf32>, tensor<2x4xi32>) -> tensor<2x4x8xf32>
  %g = sbp.embedding_grad %e, %ids : (tensor<2x4x8xf32>, tensor<2x4xi32>) -> tensor<11x8xf32>)mlir");
  EXPECT_EQ(sigs(op("sbp.embedding")),
            (std::vector<std::string>{"B x S(0) -> S(0)", "B x S(1) -> S(1)", "S(1) x B -> S(2)",
                                      "S(0) x B -> P(sum)", "B x B -> B"}));
  EXPECT_EQ(sigs(op("sbp.embedding_grad")),
            (std::vector<std::string>{"S(0) x S(0) -> P(sum)", "S(1) x S(1) -> P(sum)",
                                      "S(2) x B -> S(1)", "B x B -> S(0)", "B x B -> B",
                                      "P(sum) x B -> P(sum)"}));
}

TEST_F(GptOpSemantics, NormsActivationsAndTheirGradients) {
  parse(R"mlir(
  %x = sbp.input "x" : tensor<2x4x8xf32>
  %g = sbp.input "g" : tensor<8xf32>
  %n = sbp.layer_norm %x, %g, %g {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
  %dx, %dg, %db = sbp.layer_norm_grad %x, %x, %g {eps = 1.0e-5 : f32} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<8xf32>) -> (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>)
  %s = sbp.softmax %x : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %sg = sbp.softmax_grad %x, %s : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %h = sbp.gelu %x : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %hg = sbp.gelu_grad %x, %x : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
  %d = sbp.dropout %x {p = 0.1 : f32, seed = 1 : i64} : (tensor<2x4x8xf32>) -> tensor<2x4x8xf32>)mlir");
  EXPECT_EQ(
      sigs(op("sbp.layer_norm")),
      (std::vector<std::string>{"S(0) x B x B -> S(0)", "S(1) x B x B -> S(1)", "B x B x B -> B"}));
  EXPECT_EQ(
      sigs(op("sbp.layer_norm_grad")),
      (std::vector<std::string>{"S(0) x S(0) x B -> S(0), P(sum), P(sum)",
                                "S(1) x S(1) x B -> S(1), P(sum), P(sum)", "B x B x B -> B, B, B",
                                "P(sum) x B x B -> P(sum), P(sum), P(sum)"}));
  llvm::SmallVector<RankedTensorType> types;
  ASSERT_TRUE(succeeded(op("sbp.layer_norm_grad").inferResultTypes(types)));
  ASSERT_EQ(types.size(), 3u);
  EXPECT_EQ(types[1].getShape(), llvm::ArrayRef<int64_t>({8}));
  // Softmax works on the last axis: never split there.
  EXPECT_FALSE(has(sigs(op("sbp.softmax")), "S(2) -> S(2)"));
  EXPECT_TRUE(has(sigs(op("sbp.softmax")), "S(1) -> S(1)"));
  EXPECT_TRUE(has(sigs(op("sbp.softmax_grad")), "P(sum) x B -> P(sum)"));
  EXPECT_FALSE(has(sigs(op("sbp.softmax_grad")), "B x P(sum) -> P(sum)"));
  // GELU is elementwise but not linear; its gradient is linear in dy.
  EXPECT_TRUE(has(sigs(op("sbp.gelu")), "S(2) -> S(2)"));
  EXPECT_FALSE(has(sigs(op("sbp.gelu")), "P(sum) -> P(sum)"));
  EXPECT_TRUE(has(sigs(op("sbp.gelu_grad")), "P(sum) x B -> P(sum)"));
  // Dropout is linear: partial values stay partial.
  EXPECT_EQ(sigs(op("sbp.dropout")),
            (std::vector<std::string>{"S(0) -> S(0)", "S(1) -> S(1)", "S(2) -> S(2)", "B -> B",
                                      "P(sum) -> P(sum)"}));
}

TEST_F(GptOpSemantics, AttentionIsHeadParallelOnlyOnWholeHeads) {
  const char *body = R"mlir(
  %q = sbp.input "q" : tensor<2x4x12xf32, #sbp.t<@mesh, [B, B]>>
  %a = sbp.causal_attention %q, %q, %q {heads = 6 : i64} : (tensor<2x4x12xf32, #sbp.t<@mesh, [B, B]>>, tensor<2x4x12xf32, #sbp.t<@mesh, [B, B]>>, tensor<2x4x12xf32, #sbp.t<@mesh, [B, B]>>) -> tensor<2x4x12xf32>
  %dq, %dk, %dv = sbp.causal_attention_grad %a, %q, %q, %q {heads = 6 : i64} : (tensor<2x4x12xf32>, tensor<2x4x12xf32, #sbp.t<@mesh, [B, B]>>, tensor<2x4x12xf32, #sbp.t<@mesh, [B, B]>>, tensor<2x4x12xf32, #sbp.t<@mesh, [B, B]>>) -> (tensor<2x4x12xf32>, tensor<2x4x12xf32>, tensor<2x4x12xf32>))mlir";
  // 6 heads: whole heads on 2 or 3 ranks, not on 4.
  parse(body, "sbp.placement @mesh cpu ranks [0, 1, 2, 3, 4, 5, 6, 7] hierarchy [2, 4]");
  std::vector<std::string> dim0 = sigs(op("sbp.causal_attention"), 0),
                           dim1 = sigs(op("sbp.causal_attention"), 1);
  EXPECT_EQ(dim0, (std::vector<std::string>{"S(0) x S(0) x S(0) -> S(0)",
                                            "S(2) x S(2) x S(2) -> S(2)", "B x B x B -> B"}));
  EXPECT_EQ(dim1, (std::vector<std::string>{"S(0) x S(0) x S(0) -> S(0)", "B x B x B -> B"}));
  EXPECT_TRUE(has(sigs(op("sbp.causal_attention_grad"), 0),
                  "S(2) x S(2) x S(2) x S(2) -> S(2), S(2), S(2)"));
  EXPECT_FALSE(has(sigs(op("sbp.causal_attention_grad"), 1),
                   "S(2) x S(2) x S(2) x S(2) -> S(2), S(2), S(2)"));
  EXPECT_TRUE(has(sigs(op("sbp.causal_attention_grad"), 1),
                  "P(sum) x B x B x B -> P(sum), P(sum), P(sum)"));
  EXPECT_DOUBLE_EQ(op("sbp.causal_attention").getFlops(), 2.0 * 2 * 4 * 4 * 12);

  parse(body, "sbp.placement @mesh cpu ranks [0, 1, 2, 3, 4, 5] hierarchy [3, 2]");
  EXPECT_TRUE(has(sigs(op("sbp.causal_attention"), 0), "S(2) x S(2) x S(2) -> S(2)"));
  EXPECT_TRUE(has(sigs(op("sbp.causal_attention"), 1), "S(2) x S(2) x S(2) -> S(2)"));
}

TEST_F(GptOpSemantics, LayoutOpsMapSplitAxes) {
  parse(R"mlir(
  %x = sbp.input "x" : tensor<2x3x4xf32>
  %r = sbp.reshape %x : (tensor<2x3x4xf32>) -> tensor<6x4xf32>
  %r2 = sbp.reshape %x : (tensor<2x3x4xf32>) -> tensor<2x12xf32>
  %t = sbp.transpose %x {perm = array<i64: 2, 0, 1>} : (tensor<2x3x4xf32>) -> tensor<4x2x3xf32>
  %n = sbp.narrow %x {axis = 1 : i64, begin = 1 : i64} : (tensor<2x3x4xf32>) -> tensor<2x2x4xf32>
  %ng = sbp.narrow_grad %n {axis = 1 : i64, begin = 1 : i64} : (tensor<2x2x4xf32>) -> tensor<2x3x4xf32>
  %c = sbp.concat %x, %n {axis = 1 : i64} : (tensor<2x3x4xf32>, tensor<2x2x4xf32>) -> tensor<2x5x4xf32>)mlir");
  // [2, 3, 4] -> [6, 4] keeps a split of the last axis (6 elements before it
  // in both shapes); [2, 3, 4] -> [2, 12] keeps a split of the first.
  EXPECT_EQ(sigs(op("sbp.reshape")),
            (std::vector<std::string>{"S(2) -> S(1)", "B -> B", "P(sum) -> P(sum)"}));
  EXPECT_EQ(sigs(op("sbp.reshape", 1)),
            (std::vector<std::string>{"S(0) -> S(0)", "B -> B", "P(sum) -> P(sum)"}));
  EXPECT_EQ(sigs(op("sbp.transpose")),
            (std::vector<std::string>{"S(2) -> S(0)", "S(0) -> S(1)", "S(1) -> S(2)", "B -> B",
                                      "P(sum) -> P(sum)"}));
  EXPECT_EQ(sigs(op("sbp.narrow")), (std::vector<std::string>{"S(0) -> S(0)", "S(2) -> S(2)",
                                                              "B -> B", "P(sum) -> P(sum)"}));
  EXPECT_EQ(sigs(op("sbp.narrow_grad")), sigs(op("sbp.narrow")));
  EXPECT_EQ(sigs(op("sbp.concat")),
            (std::vector<std::string>{"S(0) x S(0) -> S(0)", "S(2) x S(2) -> S(2)", "B x B -> B",
                                      "P(sum) x P(sum) -> P(sum)"}));
}

TEST_F(GptOpSemantics, ClippingAndOptimiserSignatures) {
  parse(R"mlir(
  %g = sbp.input "g" : tensor<4x3xf32>
  %s = sbp.square_sum %g : (tensor<4x3xf32>) -> tensor<f32>
  %k = sbp.clip_scale %s {max_norm = 1.0 : f32} : (tensor<f32>) -> tensor<f32>
  sbp.adamw %g, %k {variable = @w, m = @w.m, v = @w.m, step = @w.step, lr = 0.1 : f32, beta1 = 0.9 : f32, beta2 = 0.99 : f32, eps = 1.0e-8 : f32, weight_decay = 0.0 : f32} : tensor<4x3xf32>, tensor<f32>
  sbp.sgd %g {variable = @w, lr = 0.1 : f32, momentum = 0.0 : f32, weight_decay = 0.0 : f32} : tensor<4x3xf32>
  sbp.output "g" %g : tensor<4x3xf32>)mlir",
        R"mlir(sbp.placement @mesh cpu ranks [0, 1, 2, 3] hierarchy [2, 2]
  sbp.variable @w : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<zeros> seed 1
  sbp.variable @w.m : tensor<4x3xf32, #sbp.t<@mesh, [B, S(1)]>> init #sbp.init<zeros> seed 1
  sbp.variable @w.step : tensor<i32, #sbp.t<@mesh, [B, B]>> init #sbp.init<zeros> seed 1)mlir");
  // The square of a partial sum is not partial: no P input.
  EXPECT_EQ(sigs(op("sbp.square_sum")),
            (std::vector<std::string>{"S(0) -> P(sum)", "S(1) -> P(sum)", "B -> B"}));
  EXPECT_EQ(sigs(op("sbp.clip_scale")), (std::vector<std::string>{"B -> B"}));
  // The gradient is laid out like the variable, the scale broadcast.
  EXPECT_EQ(sigs(op("sbp.adamw"), 0), (std::vector<std::string>{"B x B -> ()"}));
  EXPECT_EQ(sigs(op("sbp.adamw"), 1), (std::vector<std::string>{"S(1) x B -> ()"}));
  EXPECT_EQ(sigs(op("sbp.sgd"), 1), (std::vector<std::string>{"S(1) -> ()"}));
  EXPECT_EQ(sigs(op("sbp.output")), (std::vector<std::string>{"B -> ()"}));
}

} // namespace
