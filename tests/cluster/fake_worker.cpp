// A worker for tests of the cluster protocol alone: it speaks the real
// protocol (runWorker, CafStore) but its "plan" is the text "fake-plan" and
// its steps produce known metric values; failures and hangs can be injected.
// A checkpoint holds one variable, "fake.w" [2 * world] S(0), element i =
// --save-value + i, saved in the real two phases.
#include "runtime/cluster/Worker.h"

#include <CLI/CLI.hpp>
#include <gloo/rendezvous/store.h>

#include <chrono>
#include <cstdio>
#include <thread>

using namespace sbpflow;
using namespace sbpflow::cluster;

namespace {

struct FakeOptions {
  int stepMs = 0;
  int failRank = -1, failStep = -1;
  int hangRank = -1, hangStep = -1;
  float saveValue = 0;
  int failSaveRank = -1; // fails writing its checkpoint shard, after the others
};

class FakeBackend : public RankBackend {
public:
  explicit FakeBackend(FakeOptions o) : o_(o) {}

  StatusOr<std::vector<ProgramInfo>> prepare(const std::string &plan, int rank, int world,
                                             gloo::rendezvous::Store &store,
                                             const WorkerSettings &) override {
    rank_ = rank;
    world_ = world;
    if (plan != "fake-plan")
      return Status::error("rank " + std::to_string(rank) + ": not a fake plan");
    // Exercise the rendezvous store the way Gloo does: publish, wait, read.
    std::string mine = "fake/rank" + std::to_string(rank);
    store.set(mine, std::vector<char>(mine.begin(), mine.end()));
    std::vector<std::string> keys;
    for (int r = 0; r < world; ++r)
      keys.push_back("fake/rank" + std::to_string(r));
    store.wait(keys);
    for (const auto &k : keys) {
      auto v = store.get(k);
      if (std::string(v.begin(), v.end()) != k)
        return Status::error("rank " + std::to_string(rank) + ": store returned a wrong value");
    }
    ProgramInfo train{"train", 12, 8, 100, {"loss", "seen"}, {1, 0}};
    ProgramInfo eval{"eval", 3, 8, 20, {"correct", "loss"}, {0, 1}};
    return std::vector<ProgramInfo>{train, eval};
  }

  Status run(const RunChunk &c, const StepCallback &onStep) override {
    for (int64_t b = c.firstBatch; b < c.firstBatch + c.count; ++b) {
      if (o_.stepMs > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(o_.stepMs));
      if (rank_ == o_.hangRank && b == o_.hangStep)
        for (;;) // stands for a collective whose peer died
          std::this_thread::sleep_for(std::chrono::seconds(1));
      if (rank_ == o_.failRank && b == o_.failStep)
        return Status::error("rank " + std::to_string(rank_) +
                             ": task fc1.matmul: op MatMul: injected failure");
      if (c.program == "train")
        onStep(b, {1.0 / (1 + 100 * c.epoch + b) + (rank_ == 0 ? 0.0 : 1000.0),
                   static_cast<double>(rank_ + 1)});
      else // eval: batch b's loss is b + 1 (rank 0's, as for train)
        onStep(b, {static_cast<double>(rank_ + 1), b + 1.0 + (rank_ == 0 ? 0.0 : 1000.0)});
    }
    return Status::ok();
  }

  StatusOr<std::vector<checkpoint::ShardRecord>>
  writeCheckpointShards(const std::string &dir, uint64_t generation) override {
    if (rank_ == o_.failSaveRank) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      return Status::error("rank " + std::to_string(rank_) +
                           ": injected failure writing a checkpoint shard");
    }
    const checkpoint::TensorMeta m = meta();
    const Region mine = localRegion(m.shape, m.sbp, m.hierarchy, {rank_});
    std::vector<float> values(static_cast<size_t>(regionElements(mine)));
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = o_.saveValue + static_cast<float>(mine[0].begin + static_cast<int64_t>(i));
    auto record = checkpoint::writeShard(checkpoint::stagingDir(dir, generation), m, mine,
                                         values.data(), generation);
    if (!record)
      return record.status();
    return std::vector<checkpoint::ShardRecord>{*record};
  }
  Status publishCheckpoint(const std::string &dir, uint64_t generation,
                           const std::vector<checkpoint::ShardRecord> &shards,
                           const checkpoint::DataPosition &next) override {
    const std::string staging = checkpoint::stagingDir(dir, generation);
    if (Status s = checkpoint::writeIndex(staging, {meta()}, next, generation, shards); !s)
      return s;
    return checkpoint::publish(staging, dir, generation);
  }
  checkpoint::DataPosition resumedAt() const override { return {}; }
  uint64_t sentBytes() const override { return 0; } // no communicators

  Status writeTrace() override {
    return Status::error("rank " + std::to_string(rank_) + ": the fake worker records no trace");
  }

private:
  checkpoint::TensorMeta meta() const {
    return {"fake.w", checkpoint::DType::F32, {2 * world_}, {SbpDim{SbpKind::Split, 0}}, {world_}};
  }

  FakeOptions o_;
  int rank_ = -1;
  int64_t world_ = 0;
};

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"cluster protocol test worker"};
  std::string connect;
  FakeOptions o;
  bool exitBeforeRegister = false;
  app.add_option("--connect", connect, "driver HOST:PORT")->required();
  app.add_option("--step-ms", o.stepMs);
  app.add_option("--fail-rank", o.failRank);
  app.add_option("--fail-step", o.failStep);
  app.add_option("--hang-rank", o.hangRank);
  app.add_option("--hang-step", o.hangStep);
  app.add_option("--save-value", o.saveValue);
  app.add_option("--fail-save-rank", o.failSaveRank);
  app.add_flag("--exit-before-register", exitBeforeRegister);
  CLI11_PARSE(app, argc, argv);
  if (exitBeforeRegister)
    return 7;
  auto hp = parseHostPort(connect);
  if (!hp) {
    std::fprintf(stderr, "error: --connect: %s\n", hp.status().message().c_str());
    return 1;
  }
  FakeBackend backend(o);
  return runWorker({hp->first, hp->second}, backend);
}
