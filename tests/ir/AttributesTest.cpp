// Round trips of the sbp attributes through the MLIR parser and printer, the
// encoding helpers, and the op semantics' signatures and shapes.
#include "ir/SbpDialect.h"
#include "ops/Cost.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

namespace {

using namespace mlir;
using namespace mlir::sbp;

class SbpAttributes : public testing::Test {
protected:
  SbpAttributes() { ctx.loadDialect<SbpDialect, func::FuncDialect>(); }
  std::string print(Attribute a) {
    std::string s;
    llvm::raw_string_ostream os(s);
    a.print(os);
    return os.str();
  }
  // Parses `text`, prints it and returns the printed form ("" on error).
  std::string roundTrip(llvm::StringRef text) {
    Attribute a = parseAttribute(text, &ctx);
    return a ? print(a) : "";
  }
  MLIRContext ctx;
};

TEST_F(SbpAttributes, SbpDimensionsRoundTrip) {
  EXPECT_EQ(roundTrip("#sbp.split<0>"), "#sbp.split<0>");
  EXPECT_EQ(roundTrip("#sbp.broadcast"), "#sbp.broadcast");
  EXPECT_EQ(roundTrip("#sbp.partial<sum>"), "#sbp.partial<sum>");
  EXPECT_EQ(roundTrip("#sbp.partial<max>"), "#sbp.partial<max>");
  EXPECT_EQ(roundTrip("#sbp.partial<min>"), "#sbp.partial<min>");
}

TEST_F(SbpAttributes, TensorEncodingUsesShortForm) {
  EXPECT_EQ(roundTrip("#sbp.t<@dp, [S(0)]>"), "#sbp.t<@dp, [S(0)]>");
  EXPECT_EQ(roundTrip("#sbp.t<@mesh, [S(1), B, P(sum), P(max)]>"),
            "#sbp.t<@mesh, [S(1), B, P(sum), P(max)]>");
  // The long form is accepted inside the list too.
  EXPECT_EQ(roundTrip("#sbp.t<@dp, [#sbp.split<2>, #sbp.broadcast]>"), "#sbp.t<@dp, [S(2), B]>");
  Type t = parseType("tensor<256x784xf32, #sbp.t<@dp, [S(0)]>>", &ctx);
  ASSERT_TRUE(t);
  SbpTensorAttr enc = getSbp(t);
  ASSERT_TRUE(enc);
  EXPECT_EQ(enc.getPlacement().getValue(), "dp");
  auto dims = getSbpDims(enc);
  ASSERT_EQ(dims.size(), 1u);
  EXPECT_EQ(dims[0], splitDim(0));
}

TEST_F(SbpAttributes, InitAndSgdRoundTrip) {
  EXPECT_EQ(roundTrip("#sbp.init<uniform, -0.5, 0.25>"),
            "#sbp.init<uniform, -5.000000e-01, 2.500000e-01>");
  EXPECT_EQ(roundTrip("#sbp.init<zeros>"), "#sbp.init<zeros, 0.000000e+00, 0.000000e+00>");
  auto sgd = llvm::dyn_cast_or_null<SgdAttr>(
      parseAttribute("#sbp.sgd<lr = 0.05, momentum = 0.9, weight_decay = 0.001>", &ctx));
  ASSERT_TRUE(sgd);
  EXPECT_DOUBLE_EQ(sgd.getLr().convertToDouble(), 0.05);
  EXPECT_DOUBLE_EQ(sgd.getMomentum().convertToDouble(), 0.9);
  EXPECT_DOUBLE_EQ(sgd.getWeightDecay().convertToDouble(), 0.001);
  EXPECT_EQ(roundTrip(print(sgd)), print(sgd));
}

TEST_F(SbpAttributes, AdamWRoundTripAndDefaults) {
  auto adam = llvm::dyn_cast_or_null<AdamWAttr>(parseAttribute(
      "#sbp.adamw<lr = 0.001, beta1 = 0.8, beta2 = 0.95, eps = 1.0e-6, weight_decay = 0.1>", &ctx));
  ASSERT_TRUE(adam);
  EXPECT_DOUBLE_EQ(adam.getLr().convertToDouble(), 0.001);
  EXPECT_DOUBLE_EQ(adam.getBeta1().convertToDouble(), 0.8);
  EXPECT_DOUBLE_EQ(adam.getBeta2().convertToDouble(), 0.95);
  EXPECT_DOUBLE_EQ(adam.getEps().convertToDouble(), 1e-6);
  EXPECT_DOUBLE_EQ(adam.getWeightDecay().convertToDouble(), 0.1);
  EXPECT_EQ(roundTrip(print(adam)), print(adam));
  // Unnamed fields take torch.optim.AdamW's defaults.
  auto defaults = llvm::dyn_cast_or_null<AdamWAttr>(parseAttribute("#sbp.adamw<lr = 0.5>", &ctx));
  ASSERT_TRUE(defaults);
  EXPECT_DOUBLE_EQ(defaults.getBeta1().convertToDouble(), 0.9);
  EXPECT_DOUBLE_EQ(defaults.getBeta2().convertToDouble(), 0.999);
  EXPECT_DOUBLE_EQ(defaults.getEps().convertToDouble(), 1e-8);
  EXPECT_DOUBLE_EQ(defaults.getWeightDecay().convertToDouble(), 0.01);
}

TEST_F(SbpAttributes, MalformedAttributesAreRejected) {
  ScopedDiagnosticHandler quiet(&ctx, [](Diagnostic &) { return success(); });
  EXPECT_FALSE(parseAttribute("#sbp.t<@dp, [Q(0)]>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.t<@dp, [S(-1)]>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.t<@dp, []>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.partial<avg>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.init<xavier, 0.0, 1.0>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.sgd<momentum = 0.9>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.adamw<beta1 = 0.9>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.adamw<lr = 0.1, beta2 = 1.0>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.adamw<lr = 0.1, eps = 0.0>", &ctx));
  EXPECT_FALSE(parseAttribute("#sbp.adamw<lr = 0.1, momentum = 0.9>", &ctx));
}

TEST_F(SbpAttributes, WithSbpReplacesOnlyTheEncoding) {
  Builder b(&ctx);
  auto plain = RankedTensorType::get({8, 4}, b.getF32Type());
  EXPECT_FALSE(getSbp(plain));
  SbpTensorAttr enc = makeSbpTensorAttr(&ctx, "dp", {splitDim(1), partialSumDim()});
  RankedTensorType placed = withSbp(plain, enc);
  EXPECT_EQ(placed.getShape(), plain.getShape());
  EXPECT_EQ(getSbp(placed), enc);
  EXPECT_EQ(print(enc), "#sbp.t<@dp, [S(1), P(sum)]>");
  EXPECT_EQ(withoutSbp(placed), plain);
}

TEST_F(SbpAttributes, MatmulSignaturesFollowTranspose) {
  const char *text = R"mlir(
    sbp.placement @dp cpu ranks [0, 1] hierarchy [2]
    func.func @f() {
      %a = sbp.input "a" : tensor<4x8xf32>
      %b = sbp.input "b" : tensor<4x3xf32>
      %c = sbp.matmul %a, %b {transpose_a = true} : (tensor<4x8xf32>, tensor<4x3xf32>) -> tensor<8x3xf32>
      return
    })mlir";
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, &ctx);
  ASSERT_TRUE(module);
  MatmulOp mm = *module->lookupSymbol<func::FuncOp>("f").getOps<MatmulOp>().begin();
  auto iface = llvm::cast<SbpOpInterface>(mm.getOperation());
  auto sigs = iface.getSbpSignatures(0);
  std::vector<std::string> text_sigs;
  for (auto &s : sigs)
    text_sigs.push_back(s.str());
  // op(a) = a^T: rows of the product are a's columns, the inner axis its rows.
  EXPECT_EQ(text_sigs[0], "S(1) x B -> S(0)");
  EXPECT_EQ(text_sigs[2], "S(0) x S(0) -> P(sum)");
  llvm::SmallVector<RankedTensorType> types;
  ASSERT_TRUE(succeeded(iface.inferResultTypes(types)));
  ASSERT_EQ(types.size(), 1u);
  EXPECT_EQ(types[0].getShape(), llvm::ArrayRef<int64_t>({8, 3}));
  EXPECT_DOUBLE_EQ(iface.getFlops(), 2.0 * 8 * 4 * 3);
}

TEST(BoxingCost, FollowsAlphaBeta) {
  CostModel m;
  double bytes = 1e6;
  EXPECT_EQ(boxingCost(m, splitDim(0), splitDim(0), bytes, 4), 0.0);
  double allGather = boxingCost(m, splitDim(0), broadcastDim(), bytes, 4);
  double allReduce = boxingCost(m, partialSumDim(), broadcastDim(), bytes, 4);
  EXPECT_NEAR(allGather, m.alpha + bytes * 0.75 / m.bytesPerSecond, 1e-12);
  EXPECT_NEAR(allReduce, m.alpha + 2 * bytes * 0.75 / m.bytesPerSecond, 1e-12);
  EXPECT_LT(boxingCost(m, broadcastDim(), splitDim(1), bytes, 4), allGather);
  EXPECT_TRUE(std::isinf(boxingCost(m, partialSumDim(), {SbpKind::PartialMax, 0}, bytes, 4)));
}

} // namespace
