// Multi-process tests of the driver/worker protocol with stand-in workers
// (cluster_test_worker): metric combination, worker errors, a killed worker,
// timeouts. End-to-end runs of real plans are in cluster_e2e tests.
#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/cluster/CafStore.h"
#include "runtime/cluster/Driver.h"
#include "runtime/cluster/Messages.h"
#include "runtime/cluster/Worker.h"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/send.hpp>
#include <gloo/common/error.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

using namespace sbpflow;
using namespace sbpflow::cluster;

namespace {

const std::vector<uint8_t> kFakePlan = {'f', 'a', 'k', 'e', '-', 'p', 'l', 'a', 'n'};

RunOptions fakeOptions(int local, std::vector<std::string> args = {}) {
  RunOptions o;
  o.localWorkers = local;
  o.workerBinary = CLUSTER_TEST_WORKER;
  o.workerArgs = std::move(args);
  o.epochs = 2;
  o.logEvery = 4;
  o.rendezvousTimeoutMs = 20000;
  return o;
}

// Runs a job that must fail and checks that its error holds each of `parts`.
void expectJobFails(const std::vector<uint8_t> &plan, const RunOptions &o,
                    const std::vector<std::string> &parts) {
  JobReport report;
  Status s = runJob(plan, o, &report);
  ASSERT_FALSE(s.isOk());
  for (const std::string &part : parts)
    EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
}

bool processGone(int pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

void expectCombined(int world) {
  std::ostringstream log;
  RunOptions o = fakeOptions(world);
  o.log = &log;
  JobReport report;
  Status s = runJob(kFakePlan, o, &report);
  ASSERT_TRUE(s.isOk()) << s.message();
  // loss is reduced by First: rank 0's value, never another rank's +1000.
  ASSERT_EQ(report.lossHistory.size(), 24u);
  for (int e = 0; e < 2; ++e)
    for (int b = 0; b < 12; ++b)
      EXPECT_DOUBLE_EQ(report.lossHistory[e * 12 + b], 1.0 / (1 + 100 * e + b));
  // correct is a Sum over ranks: each step gives 1 + 2 + ... + world.
  double perStep = world * (world + 1) / 2.0;
  ASSERT_EQ(report.testAccuracy.size(), 2u);
  EXPECT_DOUBLE_EQ(report.testAccuracy[0], 3 * perStep / 20.0);
  // Eval loss is each batch's mean over its whole global batch of 8 (padded
  // rows add 0, as the loss of label -1 is): mean x 8 is the batch's sum over
  // its real rows, and the sums over the 20 samples give the mean.
  ASSERT_EQ(report.evalLoss.size(), 2u);
  EXPECT_DOUBLE_EQ(report.evalLoss[1], (1 * 8 + 2 * 8 + 3 * 8) / 20.0);
  EXPECT_EQ(report.trainSteps, 24);
  ASSERT_EQ(report.peakRssKb.size(), static_cast<size_t>(world));
  for (auto kb : report.peakRssKb)
    EXPECT_GT(kb, 0);
  std::string text = log.str();
  EXPECT_NE(text.find("epoch 1 step 4/12 loss 0.250000 samples/s"), std::string::npos) << text;
  EXPECT_NE(text.find("epoch 2 step 12/12 loss"), std::string::npos) << text;
  char acc[64];
  std::snprintf(acc, sizeof(acc), "epoch 2 test accuracy %.4f", 3 * perStep / 20.0);
  EXPECT_NE(text.find(acc), std::string::npos) << text;
  EXPECT_NE(text.find("epoch 1 eval loss 2.400000"), std::string::npos) << text;
}

} // namespace

TEST(ClusterProtocol, OneWorkerCompletes) { expectCombined(1); }

TEST(ClusterProtocol, ThreeWorkersCombineMetricsPerReduce) { expectCombined(3); }

TEST(ClusterProtocol, WorkerErrorNamesRankAndFailsJob) {
  expectJobFails(kFakePlan, fakeOptions(2, {"--fail-rank", "1", "--fail-step", "3"}),
                 {"worker 1 (pid ", "failed during step 4 of train (epoch 1): rank 1: task "
                                    "fc1.matmul: op MatMul: injected failure"});
}

TEST(ClusterProtocol, KilledWorkerIsReportedAndNothingHangs) {
  // Rank 0 blocks forever at step 5 (as in a collective whose peer died);
  // worker 1 is killed meanwhile. The driver must notice, abort rank 0 and
  // reap every process.
  std::vector<int> pids;
  std::thread killer;
  RunOptions o = fakeOptions(2, {"--step-ms", "40", "--hang-rank", "0", "--hang-step", "5"});
  o.onWorkersRegistered = [&](const std::vector<int> &p) {
    pids = p;
    killer = std::thread([victim = p[1]] {
      std::this_thread::sleep_for(std::chrono::milliseconds(400));
      kill(victim, SIGKILL);
    });
  };
  auto start = std::chrono::steady_clock::now();
  JobReport report;
  Status s = runJob(kFakePlan, o, &report);
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (killer.joinable())
    killer.join();
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("worker 1 (pid " + std::to_string(pids.at(1)) + ", 127.0.0.1:"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("lost during step "), std::string::npos) << s.message();
  EXPECT_LT(seconds, 10.0);
  for (int pid : pids)
    EXPECT_TRUE(processGone(pid)) << "worker pid " << pid << " still exists";
}

// Reads the stand-ins' checkpoint variable whole: empty when it cannot.
std::vector<float> fakeCheckpoint(const std::string &dir, int64_t elements) {
  auto reader = checkpoint::CheckpointReader::open(dir);
  if (!reader || !reader->checkComplete())
    return {};
  std::vector<float> values(static_cast<size_t>(elements));
  if (!reader->read("fake.w", {elements}, checkpoint::DType::F32, {Chunk{0, elements}},
                    values.data()))
    return {};
  return values;
}

// A save whose rank 1 fails (after rank 0 has written its shard) publishes
// nothing: the checkpoint of the job before is still whole, and the driver's
// error names the rank. The driver publishes only once every rank has
// written its shards.
TEST(ClusterProtocol, FailedCheckpointSaveKeepsThePreviousOne) {
  char tmpl[] = "/tmp/sbpflow_cluster_ckptXXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = std::string(tmpl) + "/ck";
  RunOptions first = fakeOptions(2, {"--save-value", "100"});
  first.checkpointDir = dir;
  JobReport report;
  Status s = runJob(kFakePlan, first, &report);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(fakeCheckpoint(dir, 4), std::vector<float>({100, 101, 102, 103}));

  RunOptions second = fakeOptions(2, {"--save-value", "200", "--fail-save-rank", "1"});
  second.checkpointDir = dir;
  s = runJob(kFakePlan, second, &report);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("worker 1 (pid "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("writing the checkpoint's shards"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rank 1: injected failure writing a checkpoint shard"),
            std::string::npos)
      << s.message();
  EXPECT_EQ(fakeCheckpoint(dir, 4), std::vector<float>({100, 101, 102, 103}));

  RunOptions third = fakeOptions(3, {"--save-value", "300"});
  third.checkpointDir = dir;
  s = runJob(kFakePlan, third, &report);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(fakeCheckpoint(dir, 6), std::vector<float>({300, 301, 302, 303, 304, 305}));
  std::filesystem::remove_all(tmpl);
}

TEST(ClusterProtocol, RegistrationTimesOut) {
  RunOptions o;
  o.expectWorkers = 1; // nobody will connect
  o.rendezvousTimeoutMs = 300;
  expectJobFails(kFakePlan, o, {"timed out after 300 ms waiting for registration"});
}

TEST(ClusterProtocol, WorkerExitingBeforeRegistrationIsAnError) {
  expectJobFails(kFakePlan, fakeOptions(2, {"--exit-before-register"}),
                 {"exited with status 7 before registering"});
}

TEST(ClusterProtocol, MissingWorkerBinaryIsAnError) {
  RunOptions o = fakeOptions(1);
  o.workerBinary = "/nonexistent/sbpflow-worker";
  expectJobFails(kFakePlan, o, {"'/nonexistent/sbpflow-worker' not found"});
}

TEST(ClusterProtocol, BadPlanIsReportedByEveryWorker) {
  expectJobFails({'x'}, fakeOptions(1), {"rank 0: not a fake plan"});
}

TEST(ClusterProtocol, ParseHostPort) {
  auto ok = parseHostPort("127.0.0.1:4242");
  ASSERT_TRUE(ok.isOk());
  EXPECT_EQ(ok->first, "127.0.0.1");
  EXPECT_EQ(ok->second, 4242);
  EXPECT_FALSE(parseHostPort("localhost").isOk());
  EXPECT_FALSE(parseHostPort("host:").isOk());
  EXPECT_FALSE(parseHostPort("host:12ab").isOk());
  auto big = parseHostPort("host:70000");
  ASSERT_FALSE(big.isOk());
  EXPECT_NE(big.status().message().find("out of range"), std::string::npos);
}

// The driver's rendezvous store: values round-trip, waits see later sets, and
// a peer cannot grow it past its bound.
TEST(RendezvousStore, RoundTripsAndRefusesPastItsBound) {
  caf::actor_system_config cfg;
  sbpflow::cluster::configureClusterSystem(cfg);
  caf::actor_system system{cfg};
  caf::actor store = sbpflow::cluster::spawnStoreActor(system, 64);
  sbpflow::cluster::CafStore client(system, store, std::chrono::milliseconds(2000));
  client.set("a", std::vector<char>(20, 'x'));
  EXPECT_EQ(client.get("a"), std::vector<char>(20, 'x'));
  client.wait({"a"});
  // Replacing a key counts its new size only.
  client.set("a", std::vector<char>(30, 'y'));
  EXPECT_EQ(client.get("a").size(), 30u);
  try {
    client.set("b", std::vector<char>(40, 'z'));
    FAIL() << "a set past the store's 64-byte bound was accepted";
  } catch (const gloo::IoException &e) {
    EXPECT_NE(std::string(e.what()).find("rendezvous store full: refusing key 'b'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(client.wait({"b"}, std::chrono::milliseconds(100)), gloo::IoException);
  // The system's destructor waits for every actor.
  caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
}
