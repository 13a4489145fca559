// compileFileToPlan end to end: a .mlir file becomes a plan that passes the
// flatbuffers verifier; malformed input fails with file:line diagnostics.
#include "compiler/Pipeline.h"
#include "compiler/EmitPlan.h"

#include "runtime/plan/PlanLoader.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace {

std::string writeTemp(const std::string &name, const std::string &text) {
  std::string path = testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

TEST(CompileFileToPlan, DataParallelMlpGivesVerifiedPlan) {
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(mlir::succeeded(mlir::sbp::compileFileToPlan(
      std::string(SBPFLOW_COMPILER_TEST_DIR) + "/inputs/mlp_dp.mlir", bytes)));
  // The runtime's loader: the flatbuffers verifier and every semantic check.
  auto loaded = sbpflow::loadPlanBuffer(bytes);
  ASSERT_TRUE(loaded) << loaded.status().message();
  const sbpflow::plan::Plan *plan = sbpflow::plan::GetPlan(bytes.data());
  ASSERT_EQ(plan->programs()->size(), 1u);
  EXPECT_EQ(plan->placements()->size(), 1u);
  // Four parameters and their four momentum buffers.
  EXPECT_EQ(plan->variables()->size(), 8u);
  const sbpflow::plan::Program *train = plan->programs()->Get(0);
  EXPECT_EQ(train->name()->str(), "train");
  int allReduces = 0, sgds = 0, collectives = 0;
  for (const sbpflow::plan::Task *t : *train->tasks()) {
    allReduces += t->op() == sbpflow::plan::OpKind::AllReduce;
    sgds += t->op() == sbpflow::plan::OpKind::SgdMomentum;
    if (t->collective_seq() >= 0) {
      EXPECT_EQ(t->collective_seq(), collectives++);
    }
  }
  EXPECT_EQ(sgds, 4);
  // All four gradients fit in one 1 MiB bucket.
  EXPECT_EQ(allReduces, 1);
  ASSERT_EQ(train->metrics()->size(), 1u);
  EXPECT_EQ(train->metrics()->Get(0)->reduce(), sbpflow::plan::MetricReduce::Sum);
  // Every activation lies inside the arena.
  for (const sbpflow::plan::Tensor *t : *train->tensors())
    if (t->variable() < 0) {
      EXPECT_GE(t->offset(), 0);
      EXPECT_LE(t->offset() + t->bytes(), train->arena_bytes());
    }
}

TEST(CompileFileToPlan, MalformedFileFailsWithLocation) {
  std::string path = writeTemp("malformed.mlir", "module {\n  sbp.placement @dp cpu ranks [0\n}\n");
  std::vector<uint8_t> bytes;
  testing::internal::CaptureStderr();
  bool ok = mlir::succeeded(mlir::sbp::compileFileToPlan(path, bytes));
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_FALSE(ok);
  EXPECT_TRUE(bytes.empty());
  EXPECT_NE(err.find("malformed.mlir:2:33: error: expected ']'"), std::string::npos) << err;
}

TEST(CompileFileToPlan, MissingFileFails) {
  std::vector<uint8_t> bytes;
  testing::internal::CaptureStderr();
  bool ok = mlir::succeeded(mlir::sbp::compileFileToPlan("/nonexistent/model.mlir", bytes));
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_FALSE(ok);
  EXPECT_NE(err.find("/nonexistent/model.mlir"), std::string::npos) << err;
}

} // namespace
