// PlanBackend: load + verify the plan, open the data, connect CommGroups over
// the driver's store, build the Executor on its own actor system.
#include "tools/worker/PlanBackend.h"

#include "actors/Executor.h"
#include "actors/Messages.h"
#include "runtime/cluster/SyntheticData.h"
#include "runtime/comm/CommGroups.h"
#ifdef SBPFLOW_HAVE_CUDA
#include "runtime/comm/NcclCommunicator.h"
#include "runtime/device/CudaDevice.h"

#include <cuda_runtime_api.h>
#endif
#include "runtime/data/DataSource.h"
#include "runtime/data/FortunesText.h"
#include "runtime/device/CpuDevice.h"
#include "runtime/plan/PlanLoader.h"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace sbpflow::cluster {
namespace {

// Synthetic test sets: a train set and an eval set whose size is no
// multiple of common batch sizes, so padding is exercised.
constexpr int64_t kSyntheticTrainSamples = 256;
constexpr int64_t kSyntheticTestSamples = 100;

bool isDirectory(const std::string &path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The fields a program's Input tasks read, with the global batch size.
Status inputFields(const plan::Program &program, std::vector<FieldInfo> &fields,
                   int64_t &globalBatch) {
  globalBatch = 0;
  for (const auto *task : *program.tasks()) {
    if (task->op() != plan::OpKind::Input)
      continue;
    const auto *attrs = task->attrs_as_InputAttrs();
    if (!attrs || !task->outputs() || task->outputs()->size() != 1)
      return Status::error("program " + program.name()->str() + ": input task " +
                           task->name()->str() + " has no field or output");
    const auto *tensor = program.tensors()->Get(task->outputs()->Get(0));
    const auto *shape = tensor->shape();
    if (shape->size() < 1)
      return Status::error("program " + program.name()->str() + ": input " + attrs->field()->str() +
                           " has no batch dimension");
    if (globalBatch != 0 && globalBatch != shape->Get(0))
      return Status::error("program " + program.name()->str() +
                           ": inputs disagree on the global batch size");
    globalBatch = shape->Get(0);
    FieldInfo info;
    info.name = attrs->field()->str();
    info.type = tensor->dtype() == plan::DType::I32 ? FieldType::I32 : FieldType::F32;
    info.sampleShape.assign(shape->begin() + 1, shape->end());
    fields.push_back(std::move(info));
  }
  return Status::ok();
}

int planWorldSize(const plan::Plan &plan) {
  int maxRank = -1;
  for (const auto *p : *plan.placements())
    for (int r : *p->ranks())
      maxRank = std::max(maxRank, r);
  return maxRank + 1;
}

// Labels per sample that the count-correct task behind metric tensor `t`
// counts (through any collectives that reduce its count): elements of its
// label input per row. 1 when no such task produces `t`.
int64_t labelsCounted(const plan::Program &program, int32_t t) {
  for (int hops = 0; hops < 8; ++hops) {
    const plan::Task *producer = nullptr;
    for (const plan::Task *task : *program.tasks())
      if (task->outputs() &&
          std::find(task->outputs()->begin(), task->outputs()->end(), t) != task->outputs()->end())
        producer = task;
    if (!producer || !producer->inputs() || producer->inputs()->size() == 0)
      return 1;
    if (producer->op() == plan::OpKind::CountCorrect && producer->inputs()->size() == 2) {
      const auto *shape = program.tensors()->Get(producer->inputs()->Get(1))->shape();
      int64_t rows = shape->size() > 0 ? shape->Get(0) : 1, n = 1;
      for (int64_t d : *shape)
        n *= d;
      return rows > 0 ? std::max<int64_t>(1, n / rows) : 1;
    }
    t = producer->inputs()->Get(0); // a collective: look at what it reduces
  }
  return 1;
}

class PlanBackend : public RankBackend {
public:
  ~PlanBackend() override {
    executor_.reset(); // before the actor system it runs on
#ifdef SBPFLOW_HAVE_CUDA
    comms_.reset(); // before the stream its NCCL communicators issue on
    if (ncclStream_)
      cudaStreamDestroy(ncclStream_);
#endif
  }

  StatusOr<std::vector<ProgramInfo>> prepare(const std::string &bytes, int rank, int world,
                                             gloo::rendezvous::Store &store,
                                             const WorkerSettings &settings) override {
    Status s = prepareImpl(bytes, rank, world, store, settings);
    if (!s)
      return s.withContext("rank " + std::to_string(rank));
    return programs_;
  }

  Status run(const RunChunk &chunk, const StepCallback &onStep) override {
    DataSource *data = chunk.program == "eval" ? test_.get() : train_.get();
    int64_t batches = 0;
    for (const ProgramInfo &p : programs_)
      if (p.name == chunk.program)
        batches = p.batches;
    const bool straggler = rank_ == slowRank_ && chunk.program != "eval";
    return runScheduled(*executor_, *plan_.plan(), chunk.program, data, chunk.epoch,
                        chunk.firstBatch, chunk.count, batches, onStep,
                        std::chrono::microseconds(straggler ? slowStepUs_ : 0));
  }
  uint64_t sentBytes() const override { return executor_ ? executor_->sentBytes() : 0; }

  StatusOr<std::vector<checkpoint::ShardRecord>>
  writeCheckpointShards(const std::string &dir, uint64_t generation) override {
    return executor_->writeCheckpointShards(dir, generation);
  }
  Status publishCheckpoint(const std::string &dir, uint64_t generation,
                           const std::vector<checkpoint::ShardRecord> &shards,
                           const checkpoint::DataPosition &next) override {
    return executor_->publishCheckpoint(dir, generation, shards, next);
  }
  checkpoint::DataPosition resumedAt() const override { return resumedAt_; }

  Status writeTrace() override {
    if (traceDir_.empty())
      return Status::error("rank " + std::to_string(rank_) +
                           ": asked for a trace, but the job has no trace directory");
    return executor_->writeTrace(traceDir_ + "/rank" + std::to_string(rank_) + ".trace.json");
  }

private:
  Status prepareImpl(const std::string &bytes, int rank, int world, gloo::rendezvous::Store &store,
                     const WorkerSettings &settings) {
    rank_ = rank;
    auto loaded = loadPlanBuffer(std::vector<uint8_t>(bytes.begin(), bytes.end()));
    if (!loaded)
      return loaded.status().withContext("plan");
    plan_ = loaded.take();
    const plan::Plan &plan = *plan_.plan();
    int needed = planWorldSize(plan);
    if (needed != world)
      return Status::error("the plan's placements use " + std::to_string(needed) +
                           " ranks but the job has " + std::to_string(world) + " workers");
    // One GPU per rank: its index on its machine.
    const int gpu =
        settings.device == "cuda" ? (settings.localRank >= 0 ? settings.localRank : rank) : -1;
    // Whether the plan is for this device and fits it, before the rendezvous
    // makes every rank wait for this one.
    if (gpu < 0) {
      if (Status s = checkRankFits(plan, rank, plan::DeviceKind::CPU, hostMemoryBytes()); !s)
        return s;
    } else {
#ifdef SBPFLOW_HAVE_CUDA
      auto available = deviceMemoryBytes(gpu);
      if (!available)
        return available.status();
      if (Status s = checkRankFits(plan, rank, plan::DeviceKind::CUDA, *available); !s)
        return s.withContext("GPU " + std::to_string(gpu));
#else
      return Status::error("--device cuda: this sbpflow-worker was built without the CUDA backend "
                           "(configure with the CUDA toolkit installed)");
#endif
    }

    // Data: the train set for every program but "eval", the test set for it.
    std::vector<FieldInfo> trainFields, evalFields;
    for (const auto *program : *plan.programs()) {
      int64_t gb = 0;
      std::vector<FieldInfo> fields;
      if (Status f = inputFields(*program, fields, gb); !f)
        return f;
      // Programs that read no data (local SGD's outer step) say nothing.
      if (!fields.empty())
        (program->name()->str() == "eval" ? evalFields : trainFields) = fields;
    }
    if (settings.dataKind == "synthetic") {
      train_ = makeSyntheticDataForTests(trainFields, kSyntheticTrainSamples, settings.seed);
      test_ = makeSyntheticDataForTests(evalFields.empty() ? trainFields : evalFields,
                                        kSyntheticTestSamples, settings.seed + 1);
    } else if (settings.dataKind == "fashion-mnist") {
      if (!isDirectory(settings.dataDir))
        return Status::error("data directory '" + settings.dataDir + "' does not exist");
      auto train = openFashionMnist(settings.dataDir, true, true, settings.seed);
      if (!train)
        return train.status().withContext("training data in '" + settings.dataDir + "'");
      auto test = openFashionMnist(settings.dataDir, false, false, settings.seed);
      if (!test)
        return test.status().withContext("test data in '" + settings.dataDir + "'");
      train_ = train.take();
      test_ = test.take();
    } else if (settings.dataKind == "fortunes") {
      // The context length is the plan's: the "tokens" input is [batch, T].
      auto open = [&](const std::vector<FieldInfo> &fields, bool train,
                      std::unique_ptr<DataSource> &out) -> Status {
        const std::string split = train ? "train" : "validation";
        auto tokens = std::find_if(fields.begin(), fields.end(),
                                   [](const FieldInfo &f) { return f.name == "tokens"; });
        if (tokens == fields.end() || tokens->sampleShape.size() != 1)
          return Status::error(
              "fortunes data needs a \"tokens\" input of shape [batch, T] in the plan's " +
              std::string(train ? "train" : "eval") + " program");
        auto text =
            openFortunesText(settings.dataDir, train, settings.seed, tokens->sampleShape[0]);
        if (!text)
          return text.status().withContext(split + " data");
        out = text.take();
        return Status::ok();
      };
      if (Status f = open(trainFields, true, train_); !f)
        return f;
      if (Status f = open(evalFields.empty() ? trainFields : evalFields, false, test_); !f)
        return f;
    } else {
      return Status::error("unknown data source '" + settings.dataKind + "'");
    }

    // The trace is written when the job ends: a directory that cannot take
    // it is an error now, not after training.
    slowRank_ = settings.slowRank;
    slowStepUs_ = settings.slowStepUs;
    traceDir_ = settings.traceDir;
    if (!traceDir_.empty()) {
      if (settings.traceSteps <= 0)
        return Status::error("trace directory '" + traceDir_ + "' given with " +
                             std::to_string(settings.traceSteps) + " steps to trace");
      std::error_code ec;
      std::filesystem::create_directories(traceDir_, ec);
      if (ec)
        return Status::error("cannot create trace directory '" + traceDir_ + "': " + ec.message());
      if (access(traceDir_.c_str(), W_OK) != 0)
        return Status::error("cannot write to trace directory '" + traceDir_ +
                             "': " + std::strerror(errno));
    }

    programs_.clear();
    for (const auto *program : *plan.programs()) {
      ProgramInfo info;
      info.name = program->name()->str();
      std::vector<FieldInfo> fields;
      if (Status f = inputFields(*program, fields, info.globalBatch); !f)
        return f;
      DataSource *data = info.name == "eval" ? test_.get() : train_.get();
      info.samples = data->size();
      // Training drops the last partial batch; evaluation pads it (labels -1).
      info.batches =
          info.globalBatch > 0 ? data->batchesPerEpoch(info.globalBatch, info.name != "eval") : 0;
      if (program->metrics())
        for (const auto *m : *program->metrics()) {
          info.metricNames.push_back(m->name()->str());
          if (m->name()->str() == "correct")
            info.labelsPerSample = labelsCounted(*program, m->tensor());
          info.metricReduce.push_back(m->reduce() == plan::MetricReduce::First
                                          ? static_cast<int32_t>(MetricReduce::First)
                                          : static_cast<int32_t>(MetricReduce::Sum));
        }
      const plan::Schedule *schedule = plan.schedule();
      info.timedRounds =
          schedule && schedule->seconds() > 0 && schedule->inner()->str() == info.name;
      programs_.push_back(std::move(info));
    }

    const std::chrono::milliseconds timeout(settings.rendezvousTimeoutMs);
    StatusOr<std::unique_ptr<CommGroups>> comms = Status::error("no communicators");
    if (gpu < 0) {
      comms = CommGroups::connect(plan, rank, store, timeout, settings.glooHost);
    } else {
#ifdef SBPFLOW_HAVE_CUDA
      // Every NCCL group of this rank issues on one communication stream,
      // which the executor orders against its compute stream with events.
      auto stream = createStream(gpu, StreamPriority::Comm, "NCCL stream");
      if (!stream)
        return stream.status();
      ncclStream_ = *stream;
      comms = CommGroups::connect(
          plan, rank, store,
          [&](gloo::rendezvous::Store &groupStore, int groupRank, int size,
              const std::string &name) -> StatusOr<std::unique_ptr<Communicator>> {
            auto comm = NcclCommunicator::connect(groupStore, "nccl-id", groupRank, size, gpu,
                                                  ncclStream_, timeout, name);
            if (!comm)
              return comm.status();
            return std::unique_ptr<Communicator>(comm.take());
          });
#else
      return Status::error("--device cuda: this sbpflow-worker was built without the CUDA backend "
                           "(configure with the CUDA toolkit installed)");
#endif
    }
    if (!comms)
      return comms.status().withContext("communicators");
    comms_ = comms.take();

    // CAF 0.17's actor_system keeps a reference to its config: both live
    // as long as the executor.
    config_ = std::make_unique<caf::actor_system_config>();
    configureExecutorSystem(*config_, settings.threads, !backgroundProgram(plan).empty());
    system_ = std::make_unique<caf::actor_system>(*config_);
    ExecutorOptions options;
    options.globalRank = rank;
    options.kernelThreads = settings.threads;
    options.traceSteps = traceDir_.empty() ? 0 : settings.traceSteps;
    options.cudaDevice = gpu;
    auto executor = Executor::create(*system_, plan_.plan(), comms_.get(), options);
    if (!executor)
      return executor.status().withContext("executor");
    executor_ = executor.take();
    if (!settings.resumeDir.empty())
      if (Status r = executor_->loadCheckpoint(settings.resumeDir, &resumedAt_); !r)
        return r.withContext("resuming");
    return Status::ok();
  }

  int rank_ = -1;
  int slowRank_ = -1;      // the harness's straggler
  int64_t slowStepUs_ = 0; // its sleep after each train step
  std::string traceDir_;   // empty: no tracing
  checkpoint::DataPosition resumedAt_;
  LoadedPlan plan_;
  std::unique_ptr<DataSource> train_, test_;
  std::unique_ptr<CommGroups> comms_;
  std::unique_ptr<caf::actor_system_config> config_;
  std::unique_ptr<caf::actor_system> system_;
  std::unique_ptr<Executor> executor_;
  std::vector<ProgramInfo> programs_;
#ifdef SBPFLOW_HAVE_CUDA
  cudaStream_t ncclStream_ = nullptr; // outlives comms_ and executor_
#endif
};

} // namespace

std::unique_ptr<RankBackend> makePlanBackend() { return std::make_unique<PlanBackend>(); }

} // namespace sbpflow::cluster
