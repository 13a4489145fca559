// Builds plan buffers for tests from plain structs (the flatbuffers builder
// behind a small description), so each test states only what it is about.
#pragma once

#include "runtime/Shape.h"
#include "runtime/plan/plan_generated.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sbpflow::testplan {

struct Sbp {
  plan::SbpKind kind = plan::SbpKind::Broadcast;
  int axis = 0;
};
inline Sbp S(int axis) { return {plan::SbpKind::Split, axis}; }
inline Sbp B() { return {plan::SbpKind::Broadcast, 0}; }
inline Sbp P() { return {plan::SbpKind::PartialSum, 0}; }
inline Sbp Pmax() { return {plan::SbpKind::PartialMax, 0}; }

struct PlacementSpec {
  std::string name = "cpu";
  std::vector<int> ranks = {0};
  std::vector<int> hierarchy = {1};
  plan::DeviceKind device = plan::DeviceKind::CPU;
};

struct VariableSpec {
  std::string name;
  std::vector<int64_t> shape;
  int placement = 0;
  std::vector<Sbp> sbp = {B()};
  plan::InitKind init = plan::InitKind::Zeros;
  float a = 0, b = 0;
  uint64_t seed = 0;
  plan::DType dtype = plan::DType::F32; // F32 or I32
  int replicaDim = -1;                  // local SGD: one value per replica along it
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<Sbp> sbp = {B()};
  plan::DType dtype = plan::DType::F32;
  int variable = -1;
  int64_t offset = -1; // -1: assigned by finalize()
  int64_t bytes = -1;  // -1: assigned by finalize()
  int placement = 0;
};

// L-GreCo over a codec family (plan.fbs LgrecoAttrs); variables by index.
struct LgrecoSpec {
  std::vector<float> candidates;
  int defaultIndex = 0, layer = 0, layers = 1, every = 1;
  int errors = -1, choice = -1, previous = -1, pending = -1;
};

// A compressed all-reduce's codec (plan.fbs CodecAttrs), carried by an
// AllReduce task whose `codec.present` is set.
struct CodecSpec {
  bool present = false;
  plan::Codec kind = plan::Codec::TopK;
  float density = 0;
  int bits = 0, rank = 0;
  float momentum = 0, clip = 0;
  float beta2 = 0, eps = 0; // Dgc under AdamW
  int warmupSteps = 0;
  int64_t epochSteps = 0;
  int bucket = 0;
  uint64_t seed = 0;
  std::vector<int> state; // variable indices
  int step = -1;          // variable index
  std::optional<LgrecoSpec> lgreco;
  int chunk = 0;                // TopK2Bit: top-k per chunk (SparseLoCo)
  float decay = 1.0f;           // TopK2Bit: the residual's decay
  float temperature = 0;        // Edit
  bool meanOverSenders = false; // TopK2Bit
  float stepWeight = 0;         // Edit (A-EDiT)
  int innerSteps = -1;          // Edit with a step weight: variable index
};

struct TaskSpec {
  std::string name;
  plan::OpKind op = plan::OpKind::Fill;
  std::vector<int> inputs, outputs;
  plan::OpAttrs attrs = plan::OpAttrs::NONE;
  bool transA = false, transB = false;
  float value = 0;                                 // Fill
  int64_t count = 1;                               // Mean, MeanGrad
  std::string field = "";                          // Input
  float lr = 0, momentum = 0, weightDecay = 0;     // SgdMomentum
  int param = 0, momentumBuffer = -1;              // SgdMomentum
  int dim = 0;                                     // collectives
  plan::ReduceOp reduce = plan::ReduceOp::Sum;     // collectives
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-5f; // AdamW (lr, weightDecay, param above); Norm
  int m = -1, v = -1, step = -1;                   // AdamW slot variables
  int heads = 1;                                   // CausalAttention(Grad)
  float p = 0;                                     // Dropout
  uint64_t seed = 0;                               // Dropout
  std::vector<int> perm = {};                      // Transpose
  int axis = 0;                                    // Narrow(Grad), Concat
  int64_t begin = 0;                               // Narrow(Grad)
  float maxNorm = 1;                               // ClipScale
  CodecSpec codec{};                               // AllReduce
  float factor = 1;                                // Scale
  bool nesterov = false;                           // OuterStep (lr, momentum above)
  int replicas = 1, anchor = -1;                   // OuterStep (param, momentumBuffer above)
  float gapPenalty = 1, clip = 0;                  // OuterStep
  bool keepAnchor = false;                         // OuterStep
  int variable = -1;                               // Assign
  int seq = -1;
};

struct RegisterSpec {
  int producer = 0;
  int tensor = -1;
  std::vector<int> consumers;
  int count = 1;
};

struct ProgramSpec {
  std::string name = "train";
  std::vector<TensorSpec> tensors;
  std::vector<TaskSpec> tasks;
  std::vector<RegisterSpec> registers;
  int64_t arenaBytes = -1; // -1: assigned by finalize()
  std::vector<std::pair<std::string, int>> inputs;
  std::vector<std::pair<std::string, int>> metrics;
  std::vector<std::pair<std::string, int>> outputs;
};

// A step of a local SGD round (plan.fbs ScheduleStep); no program: the
// field is absent.
struct ScheduleStepSpec {
  plan::ScheduleAction action = plan::ScheduleAction::Run;
  std::optional<std::string> program;
};
inline ScheduleStepSpec runStep(std::string program) {
  return {plan::ScheduleAction::Run, std::move(program)};
}
inline ScheduleStepSpec startStep(std::string program) {
  return {plan::ScheduleAction::Start, std::move(program)};
}
inline ScheduleStepSpec innerStep(std::string program) {
  return {plan::ScheduleAction::Inner, std::move(program)};
}
inline ScheduleStepSpec joinStep() { return {plan::ScheduleAction::Join, std::nullopt}; }

// Local SGD's interleaving of programs (plan.fbs Schedule).
struct ScheduleSpec {
  std::string algorithm = "diloco", inner = "train";
  int period = 1;
  std::vector<ScheduleStepSpec> round;
  double seconds = 0; // timed rounds (A-EDiT)
  int64_t minSteps = 0;
};

struct PlanSpec {
  uint32_t version = 6; // kPlanVersion
  std::vector<PlacementSpec> placements = {PlacementSpec{}};
  std::vector<VariableSpec> variables;
  std::vector<ProgramSpec> programs;
  std::optional<ScheduleSpec> schedule;
};

// A task with its op, tensor indices and attribute type; the attributes
// themselves are TaskSpec fields the caller sets.
inline TaskSpec makeTask(std::string name, plan::OpKind op, std::vector<int> inputs,
                         std::vector<int> outputs, plan::OpAttrs attrs = plan::OpAttrs::NONE) {
  TaskSpec t;
  t.name = std::move(name);
  t.op = op;
  t.inputs = std::move(inputs);
  t.outputs = std::move(outputs);
  t.attrs = attrs;
  return t;
}

// Reads the data field `field` into tensor `output`.
inline TaskSpec inputTask(std::string name, int output, std::string field) {
  TaskSpec t =
      makeTask(std::move(name), plan::OpKind::Input, {}, {output}, plan::OpAttrs::InputAttrs);
  t.field = std::move(field);
  return t;
}

// Mean or MeanGrad over `count` rows, from tensor `input` into `output`.
inline TaskSpec meanTask(std::string name, plan::OpKind op, int input, int output, int64_t count) {
  TaskSpec t = makeTask(std::move(name), op, {input}, {output}, plan::OpAttrs::MeanAttrs);
  t.count = count;
  return t;
}

// Fills tensor `output` with `value`.
inline TaskSpec fillTask(std::string name, int output, float value) {
  TaskSpec t =
      makeTask(std::move(name), plan::OpKind::Fill, {}, {output}, plan::OpAttrs::FillAttrs);
  t.value = value;
  return t;
}

// Fills in what a compiler would: arena offsets and sizes (no reuse), a
// register (count `count`) for every produced tensor that has consumers,
// and collective_seq in task order.
inline void finalize(PlanSpec &spec, int count = 1) {
  for (ProgramSpec &prog : spec.programs) {
    int64_t offset = 0;
    for (TensorSpec &t : prog.tensors) {
      if (t.variable >= 0)
        continue;
      const PlacementSpec &pl = spec.placements[t.placement];
      NdSbp sbp;
      for (const Sbp &s : t.sbp)
        sbp.push_back(SbpDim{static_cast<SbpKind>(static_cast<int8_t>(s.kind)), s.axis});
      std::vector<int64_t> h(pl.hierarchy.begin(), pl.hierarchy.end());
      if (t.bytes < 0)
        t.bytes = maxLocalElements(t.shape, sbp, h) * (t.dtype == plan::DType::BF16 ? 2 : 4);
      if (t.offset < 0) {
        t.offset = offset;
        offset += (t.bytes + 63) / 64 * 64;
      }
    }
    if (prog.arenaBytes < 0)
      prog.arenaBytes = offset;
    if (prog.registers.empty()) {
      for (size_t k = 0; k < prog.tasks.size(); ++k)
        for (int out : prog.tasks[k].outputs) {
          RegisterSpec r;
          r.producer = static_cast<int>(k);
          r.tensor = out;
          r.count = count;
          for (size_t c = k + 1; c < prog.tasks.size(); ++c)
            for (int in : prog.tasks[c].inputs)
              if (in == out && (r.consumers.empty() || r.consumers.back() != static_cast<int>(c)))
                r.consumers.push_back(static_cast<int>(c));
          if (!r.consumers.empty())
            prog.registers.push_back(r);
        }
    }
    int seq = 0;
    for (TaskSpec &t : prog.tasks)
      if (t.op >= plan::OpKind::AllReduce && t.op <= plan::OpKind::AllToAll && t.seq < 0)
        t.seq = seq++;
  }
}

inline std::vector<uint8_t> build(const PlanSpec &spec) {
  flatbuffers::FlatBufferBuilder fbb;
  auto sbpVec = [&](const std::vector<Sbp> &v) {
    std::vector<plan::SbpDim> dims;
    for (const Sbp &s : v)
      dims.emplace_back(s.kind, s.axis);
    return fbb.CreateVectorOfStructs(dims);
  };
  // One table per element of `items`, as `make` builds it, as a vector.
  auto tables = [&](const auto &items, auto make) {
    std::vector<decltype(make(*items.begin()))> out;
    for (const auto &item : items)
      out.push_back(make(item));
    return fbb.CreateVector(out);
  };
  auto bindings = [&](const std::vector<std::pair<std::string, int>> &named) {
    return tables(named, [&](const auto &b) {
      return plan::CreateBinding(fbb, fbb.CreateString(b.first), b.second);
    });
  };
  auto placements = tables(spec.placements, [&](const PlacementSpec &p) {
    return plan::CreatePlacement(fbb, fbb.CreateString(p.name), p.device, fbb.CreateVector(p.ranks),
                                 fbb.CreateVector(p.hierarchy));
  });
  auto variables = tables(spec.variables, [&](const VariableSpec &v) {
    auto init = plan::CreateInit(fbb, v.init, v.a, v.b, v.seed);
    return plan::CreateVariable(fbb, fbb.CreateString(v.name), v.dtype, fbb.CreateVector(v.shape),
                                v.placement, sbpVec(v.sbp), init, v.replicaDim);
  });
  std::vector<flatbuffers::Offset<plan::Program>> programs;
  for (const ProgramSpec &prog : spec.programs) {
    auto tensors = tables(prog.tensors, [&](const TensorSpec &t) {
      return plan::CreateTensor(fbb, fbb.CreateString(t.name), t.dtype, fbb.CreateVector(t.shape),
                                t.placement, sbpVec(t.sbp), t.variable, t.offset, t.bytes);
    });
    std::vector<flatbuffers::Offset<plan::Task>> tasks;
    for (const TaskSpec &t : prog.tasks) {
      flatbuffers::Offset<void> attrs;
      switch (t.attrs) {
      case plan::OpAttrs::MatMulAttrs:
        attrs = plan::CreateMatMulAttrs(fbb, t.transA, t.transB).Union();
        break;
      case plan::OpAttrs::FillAttrs:
        attrs = plan::CreateFillAttrs(fbb, t.value).Union();
        break;
      case plan::OpAttrs::MeanAttrs:
        attrs = plan::CreateMeanAttrs(fbb, t.count).Union();
        break;
      case plan::OpAttrs::InputAttrs:
        attrs = plan::CreateInputAttrs(fbb, fbb.CreateString(t.field)).Union();
        break;
      case plan::OpAttrs::SgdAttrs:
        attrs =
            plan::CreateSgdAttrs(fbb, t.lr, t.momentum, t.weightDecay, t.param, t.momentumBuffer)
                .Union();
        break;
      case plan::OpAttrs::CollectiveAttrs: {
        flatbuffers::Offset<plan::CodecAttrs> codec;
        if (const CodecSpec &c = t.codec; c.present) {
          flatbuffers::Offset<plan::LgrecoAttrs> lgreco;
          if (const auto &lg = c.lgreco)
            lgreco = plan::CreateLgrecoAttrs(fbb, fbb.CreateVector(lg->candidates),
                                             lg->defaultIndex, lg->layer, lg->layers, lg->every,
                                             lg->errors, lg->choice, lg->previous, lg->pending);
          codec = plan::CreateCodecAttrs(fbb, c.kind, c.density, c.bits, c.rank, c.momentum, c.clip,
                                         c.warmupSteps, c.epochSteps, c.bucket, c.seed,
                                         fbb.CreateVector(c.state), c.step, lgreco, c.beta2, c.eps,
                                         c.chunk, c.decay, c.temperature, c.meanOverSenders,
                                         c.stepWeight, c.innerSteps);
        }
        attrs = plan::CreateCollectiveAttrs(fbb, t.dim, t.reduce, codec).Union();
        break;
      }
      case plan::OpAttrs::AdamWAttrs:
        attrs = plan::CreateAdamWAttrs(fbb, t.lr, t.beta1, t.beta2, t.eps, t.weightDecay, t.param,
                                       t.m, t.v, t.step)
                    .Union();
        break;
      case plan::OpAttrs::NormAttrs:
        attrs = plan::CreateNormAttrs(fbb, t.eps).Union();
        break;
      case plan::OpAttrs::AttentionAttrs:
        attrs = plan::CreateAttentionAttrs(fbb, t.heads).Union();
        break;
      case plan::OpAttrs::DropoutAttrs:
        attrs = plan::CreateDropoutAttrs(fbb, t.p, t.seed).Union();
        break;
      case plan::OpAttrs::TransposeAttrs:
        attrs = plan::CreateTransposeAttrs(fbb, fbb.CreateVector(t.perm)).Union();
        break;
      case plan::OpAttrs::NarrowAttrs:
        attrs = plan::CreateNarrowAttrs(fbb, t.axis, t.begin).Union();
        break;
      case plan::OpAttrs::ConcatAttrs:
        attrs = plan::CreateConcatAttrs(fbb, t.axis).Union();
        break;
      case plan::OpAttrs::ClipAttrs:
        attrs = plan::CreateClipAttrs(fbb, t.maxNorm).Union();
        break;
      case plan::OpAttrs::ScaleAttrs:
        attrs = plan::CreateScaleAttrs(fbb, t.factor).Union();
        break;
      case plan::OpAttrs::OuterAttrs:
        attrs = plan::CreateOuterAttrs(fbb, t.lr, t.momentum, t.nesterov, t.replicas, t.gapPenalty,
                                       t.clip, t.param, t.anchor, t.momentumBuffer, t.keepAnchor)
                    .Union();
        break;
      case plan::OpAttrs::AssignAttrs:
        attrs = plan::CreateAssignAttrs(fbb, t.variable).Union();
        break;
      default:
        break;
      }
      tasks.push_back(plan::CreateTask(fbb, fbb.CreateString(t.name), t.op,
                                       fbb.CreateVector(t.inputs), fbb.CreateVector(t.outputs),
                                       t.attrs, attrs, t.seq));
    }
    auto registers = tables(prog.registers, [&](const RegisterSpec &r) {
      return plan::CreateRegister(fbb, r.producer, r.tensor, fbb.CreateVector(r.consumers),
                                  r.count);
    });
    auto inputs = bindings(prog.inputs);
    auto metrics = tables(prog.metrics, [&](const auto &m) {
      return plan::CreateMetric(fbb, fbb.CreateString(m.first), m.second, plan::MetricReduce::Sum);
    });
    auto outputs = bindings(prog.outputs);
    programs.push_back(plan::CreateProgram(fbb, fbb.CreateString(prog.name), tensors,
                                           fbb.CreateVector(tasks), registers, prog.arenaBytes,
                                           inputs, metrics, outputs));
  }
  flatbuffers::Offset<plan::Schedule> schedule;
  if (const auto &sc = spec.schedule) {
    auto round = tables(sc->round, [&](const ScheduleStepSpec &step) {
      flatbuffers::Offset<flatbuffers::String> program;
      if (step.program)
        program = fbb.CreateString(*step.program);
      return plan::CreateScheduleStep(fbb, step.action, program);
    });
    schedule =
        plan::CreateSchedule(fbb, fbb.CreateString(sc->algorithm), fbb.CreateString(sc->inner),
                             sc->period, round, sc->seconds, sc->minSteps);
  }
  auto root = plan::CreatePlan(fbb, spec.version, placements, variables, fbb.CreateVector(programs),
                               fbb.CreateString("test"), schedule);
  plan::FinishPlanBuffer(fbb, root);
  return std::vector<uint8_t>(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

// What a bias + GELU test plan holds: data field `field` as x (`xShape`) and
// the bias variable `bias` (covering x's trailing axes).
struct BiasGeluShapes {
  std::vector<int64_t> xShape;
  VariableSpec bias;
  std::string field;
};

// x plus the bias then GELU in `dtype` (x and the bias cast to it, "pre" and
// "y" cast back to F32 to be read; copies for F32): in one BiasGelu task
// (`fused`) or as BiasAdd then Gelu. Not finalized: callers may add to it.
inline PlanSpec biasGeluSpec(bool fused, plan::DType dtype, const BiasGeluShapes &shapes) {
  PlanSpec spec;
  spec.variables = {shapes.bias};
  const std::vector<int64_t> &x = shapes.xShape, &b = shapes.bias.shape;
  ProgramSpec prog;
  prog.tensors = {
      {"x", x},                             // 0
      {"b", b, {B()}, plan::DType::F32, 0}, // 1
      {"x.t", x, {B()}, dtype},             // 2
      {"b.t", b, {B()}, dtype},             // 3
      {"pre.t", x, {B()}, dtype},           // 4
      {"y.t", x, {B()}, dtype},             // 5
      {"pre", x},                           // 6
      {"y", x},                             // 7
  };
  using K = plan::OpKind;
  prog.tasks = {inputTask("input.x", 0, shapes.field), makeTask("b", K::Parameter, {}, {1}),
                makeTask("x.cast", K::Cast, {0}, {2}), makeTask("b.cast", K::Cast, {1}, {3})};
  if (fused) {
    prog.tasks.push_back(makeTask("fc.bias_gelu", K::BiasGelu, {2, 3}, {4, 5}));
  } else {
    prog.tasks.push_back(makeTask("fc.bias", K::BiasAdd, {2, 3}, {4}));
    prog.tasks.push_back(makeTask("fc.gelu", K::Gelu, {4}, {5}));
  }
  prog.tasks.push_back(makeTask("pre.cast", K::Cast, {4}, {6}));
  prog.tasks.push_back(makeTask("y.cast", K::Cast, {5}, {7}));
  prog.outputs = {{"pre", 6}, {"y", 7}};
  spec.programs.push_back(prog);
  return spec;
}

} // namespace sbpflow::testplan
