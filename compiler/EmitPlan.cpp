// Plan emission (runtime/plan/plan.fbs): placements, variables, and one
// Program per function with tensors, tasks in op order, data registers,
// control registers (write-after-read on variables, arena reuse), collective
// order, inputs, metrics and outputs. Also the `sbp-emit-plan` pass and a text dump.
#include "compiler/EmitPlan.h"
#include "compiler/Passes.h"
#include "ir/SbpDialect.h"
#include "ops/Cost.h"
#include "llvm/Support/Path.h"

#include "runtime/plan/OpInfo.h"
#include "runtime/plan/PlanLoader.h"
#include "runtime/plan/plan_generated.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FileSystem.h"

#include <map>
#include <set>

namespace mlir::sbp {
#define GEN_PASS_DEF_EMITPLANPASS
#include "compiler/Passes.h.inc"
} // namespace mlir::sbp

using namespace mlir;
using namespace mlir::sbp;
namespace fb = sbpflow::plan;

namespace {

fb::SbpDim toPlan(SbpDim d) {
  switch (d.kind) {
  case SbpKind::Split:
    return fb::SbpDim(fb::SbpKind::Split, d.axis);
  case SbpKind::Broadcast:
    return fb::SbpDim(fb::SbpKind::Broadcast, 0);
  case SbpKind::PartialSum:
    return fb::SbpDim(fb::SbpKind::PartialSum, 0);
  case SbpKind::PartialMax:
    return fb::SbpDim(fb::SbpKind::PartialMax, 0);
  case SbpKind::PartialMin:
    return fb::SbpDim(fb::SbpKind::PartialMin, 0);
  }
  return fb::SbpDim(fb::SbpKind::Broadcast, 0);
}

std::vector<fb::SbpDim> toPlan(SbpTensorAttr enc) {
  std::vector<fb::SbpDim> out;
  for (SbpDim d : getSbpDims(enc))
    out.push_back(toPlan(d));
  return out;
}

fb::DType dtypeOf(Type t) {
  if (t.isBF16())
    return fb::DType::BF16;
  return t.isF32() ? fb::DType::F32 : fb::DType::I32;
}

fb::ReduceOp reduceOf(SbpDim d) {
  return d.kind == SbpKind::PartialMax   ? fb::ReduceOp::Max
         : d.kind == SbpKind::PartialMin ? fb::ReduceOp::Min
                                         : fb::ReduceOp::Sum;
}

// "model.cpp:12:0" for a file location (the runtime's error messages name the
// task with it), MLIR's own form for any other.
std::string locString(Location loc) {
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    return (llvm::sys::path::filename(file.getFilename().getValue()) + ":" + Twine(file.getLine()) +
            ":" + Twine(file.getColumn()))
        .str();
  std::string s;
  llvm::raw_string_ostream os(s);
  loc.print(os);
  return os.str();
}

// A plan field is 32 bits wide where an op attribute is 64: refused, not
// truncated, when it does not fit.
FailureOr<int32_t> int32Of(Operation *op, StringRef what, int64_t value) {
  if (value < INT32_MIN || value > INT32_MAX) {
    op->emitOpError() << what << " " << value << " does not fit the plan's 32-bit field";
    return failure();
  }
  return static_cast<int32_t>(value);
}

// The plan attributes table `table` of `op`, from the op's attributes of the
// same names (Ops.def names the table of each plan op); a null offset when
// the table is NONE.
FailureOr<flatbuffers::Offset<void>> emitAttrs(flatbuffers::FlatBufferBuilder &fbb, Operation *op,
                                               fb::OpAttrs table,
                                               const llvm::StringMap<int32_t> &variableIndex) {
  auto f32 = [&](StringRef name) {
    return op->getAttrOfType<FloatAttr>(name).getValue().convertToFloat();
  };
  auto i64 = [&](StringRef name) { return op->getAttrOfType<IntegerAttr>(name).getInt(); };
  auto i32 = [&](StringRef name) { return int32Of(op, name, i64(name)); };
  // The attributes table `make(n)` builds from the i32 attribute `name`, or
  // the failure of its narrowing.
  using Attrs = FailureOr<flatbuffers::Offset<void>>;
  auto withI32 = [&](StringRef name, auto make) -> Attrs {
    FailureOr<int32_t> n = i32(name);
    if (failed(n))
      return failure();
    return make(*n).Union();
  };
  auto flag = [&](StringRef name) {
    auto a = op->getAttrOfType<BoolAttr>(name);
    return a && a.getValue();
  };
  // The plan index of the variable `ref` names.
  auto indexOf = [&](FlatSymbolRefAttr ref) -> FailureOr<int32_t> {
    auto it = variableIndex.find(ref.getValue());
    if (it == variableIndex.end()) {
      op->emitOpError("uses undeclared variable ") << ref;
      return failure();
    }
    return it->second;
  };
  // A variable named by a symbol attribute; -1 when the attribute is absent.
  auto variable = [&](StringRef name) -> FailureOr<int32_t> {
    auto ref = op->getAttrOfType<FlatSymbolRefAttr>(name);
    return ref ? indexOf(ref) : FailureOr<int32_t>(-1);
  };
  // The variables named by a symbol array attribute (none when absent).
  auto variables = [&](StringRef name) -> FailureOr<std::vector<int32_t>> {
    std::vector<int32_t> indices;
    if (auto refs = op->getAttrOfType<ArrayAttr>(name))
      for (Attribute ref : refs) {
        FailureOr<int32_t> index = indexOf(cast<FlatSymbolRefAttr>(ref));
        if (failed(index))
          return failure();
        indices.push_back(*index);
      }
    return indices;
  };
  auto elements = [](Value v) { return cast<RankedTensorType>(v.getType()).getNumElements(); };
  switch (table) {
  case fb::OpAttrs::NONE:
    return flatbuffers::Offset<void>();
  case fb::OpAttrs::InputAttrs:
    return fb::CreateInputAttrsDirect(
               fbb, op->getAttrOfType<StringAttr>("field").getValue().str().c_str())
        .Union();
  case fb::OpAttrs::FillAttrs:
    return fb::CreateFillAttrs(fbb, f32("value")).Union();
  case fb::OpAttrs::MatMulAttrs:
    return fb::CreateMatMulAttrs(fbb, flag("transpose_a"), flag("transpose_b")).Union();
  case fb::OpAttrs::MeanAttrs:
    // The elements averaged: the operand's of a mean, the result's of its
    // gradient (the other side is a scalar).
    return fb::CreateMeanAttrs(fbb,
                               std::max(elements(op->getOperand(0)), elements(op->getResult(0))))
        .Union();
  case fb::OpAttrs::SgdAttrs: {
    FailureOr<int32_t> param = variable("variable"), buffer = variable("momentum_buffer");
    if (failed(param) || failed(buffer))
      return failure();
    return fb::CreateSgdAttrs(fbb, f32("lr"), f32("momentum"), f32("weight_decay"), *param, *buffer)
        .Union();
  }
  case fb::OpAttrs::AdamWAttrs: {
    FailureOr<int32_t> param = variable("variable"), m = variable("m"), v = variable("v"),
                       step = variable("step");
    if (failed(param) || failed(m) || failed(v) || failed(step))
      return failure();
    return fb::CreateAdamWAttrs(fbb, f32("lr"), f32("beta1"), f32("beta2"), f32("eps"),
                                f32("weight_decay"), *param, *m, *v, *step)
        .Union();
  }
  case fb::OpAttrs::CollectiveAttrs: {
    FailureOr<int32_t> dim = i32("dim");
    if (failed(dim))
      return failure();
    // The reduction of a partial operand (an all-reduce, reduce-scatter) or
    // result (zero-others) on the dimension acted on; Sum where none is.
    fb::ReduceOp reduce = fb::ReduceOp::Sum;
    for (Value v : {op->getOperand(0), Value(op->getResult(0))}) {
      auto dims = getSbpDims(getSbp(v.getType()));
      if (*dim < static_cast<int64_t>(dims.size()) && isPartial(dims[*dim])) {
        reduce = reduceOf(dims[*dim]);
        break;
      }
    }
    auto ar = dyn_cast<AllReduceOp>(op);
    if (!ar || !ar.getCodecAttr())
      return fb::CreateCollectiveAttrs(fbb, *dim, reduce).Union();
    CodecAttr c = ar.getCodecAttr();
    FailureOr<std::vector<int32_t>> state = variables("state");
    if (failed(state))
      return failure();
    FailureOr<int32_t> step = variable("step"), innerSteps = variable("inner_steps"),
                       bits = int32Of(op, "bits", c.getBits()),
                       rank = int32Of(op, "rank", c.getRank()),
                       warmup = int32Of(op, "warmup", c.getWarmup()),
                       bucket = int32Of(op, "bucket", c.getBucket());
    if (failed(step) || failed(innerSteps) || failed(bits) || failed(rank) || failed(warmup) ||
        failed(bucket))
      return failure();
    // CodecKind (SbpBase.td) and the plan's Codec list the codecs in one order.
    static_assert(static_cast<int>(CodecKind::topk2bit) == static_cast<int>(fb::Codec::TopK2Bit));
    flatbuffers::Offset<fb::LgrecoAttrs> lgreco;
    if (LgrecoAttr lg = ar.getLgrecoAttr()) {
      FailureOr<std::vector<int32_t>> shared = variables("lgreco_state");
      if (failed(shared))
        return failure();
      std::vector<float> candidates(lg.getCandidates().asArrayRef().begin(),
                                    lg.getCandidates().asArrayRef().end());
      FailureOr<int32_t> every = int32Of(op, "every", lg.getEvery()),
                         layers = int32Of(op, "layers", lg.getLayers());
      if (failed(every) || failed(layers))
        return failure();
      lgreco =
          fb::CreateLgrecoAttrsDirect(fbb, &candidates, static_cast<int32_t>(lg.getDefaultIndex()),
                                      static_cast<int32_t>(lg.getLayer()), *layers, *every,
                                      (*shared)[0], (*shared)[1], (*shared)[2], (*shared)[3]);
    }
    auto codec = fb::CreateCodecAttrsDirect(
        fbb, static_cast<fb::Codec>(c.getKind()), c.getDensity().convertToFloat(), *bits, *rank,
        c.getMomentum().convertToFloat(), c.getClip().convertToFloat(), *warmup, c.getEpochSteps(),
        *bucket, static_cast<uint64_t>(c.getSeed()), &*state, *step, lgreco,
        c.getBeta2().convertToFloat(), c.getEps().convertToFloat(),
        static_cast<int32_t>(c.getChunk()), c.getDecay().convertToFloat(),
        c.getTemperature().convertToFloat(), c.getSenders() != 0,
        c.getStepWeight().convertToFloat(), *innerSteps);
    return fb::CreateCollectiveAttrs(fbb, *dim, reduce, codec).Union();
  }
  case fb::OpAttrs::NormAttrs:
    return fb::CreateNormAttrs(fbb, f32("eps")).Union();
  case fb::OpAttrs::AttentionAttrs:
    return withI32("heads", [&](int32_t heads) { return fb::CreateAttentionAttrs(fbb, heads); });
  case fb::OpAttrs::DropoutAttrs:
    return fb::CreateDropoutAttrs(fbb, f32("p"), static_cast<uint64_t>(i64("seed"))).Union();
  case fb::OpAttrs::TransposeAttrs: {
    std::vector<int32_t> perm;
    for (int64_t a : op->getAttrOfType<DenseI64ArrayAttr>("perm").asArrayRef()) {
      FailureOr<int32_t> axis = int32Of(op, "perm entry", a);
      if (failed(axis))
        return failure();
      perm.push_back(*axis);
    }
    return fb::CreateTransposeAttrsDirect(fbb, &perm).Union();
  }
  case fb::OpAttrs::NarrowAttrs:
    return withI32("axis",
                   [&](int32_t axis) { return fb::CreateNarrowAttrs(fbb, axis, i64("begin")); });
  case fb::OpAttrs::ConcatAttrs:
    return withI32("axis", [&](int32_t axis) { return fb::CreateConcatAttrs(fbb, axis); });
  case fb::OpAttrs::ClipAttrs:
    return fb::CreateClipAttrs(fbb, f32("max_norm")).Union();
  case fb::OpAttrs::ScaleAttrs:
    return fb::CreateScaleAttrs(fbb, f32("factor")).Union();
  case fb::OpAttrs::OuterAttrs: {
    FailureOr<int32_t> param = variable("variable"), anchor = variable("anchor"),
                       buffer = variable("momentum_buffer"), replicas = i32("replicas");
    if (failed(param) || failed(anchor) || failed(buffer) || failed(replicas))
      return failure();
    return fb::CreateOuterAttrs(fbb, f32("lr"), f32("momentum"), flag("nesterov"), *replicas,
                                f32("gap_penalty"), f32("clip"), *param, *anchor, *buffer,
                                flag("keep_anchor"))
        .Union();
  }
  case fb::OpAttrs::AssignAttrs: {
    FailureOr<int32_t> target = variable("variable");
    if (failed(target))
      return failure();
    return fb::CreateAssignAttrs(fbb, *target).Union();
  }
  }
  op->emitOpError("has plan attributes ")
      << fb::EnumNameOpAttrs(table) << ", which sbp-emit-plan cannot write";
  return failure();
}

class PlanEmitter {
public:
  explicit PlanEmitter(ModuleOp module) : module(module) {}

  LogicalResult run(std::vector<uint8_t> &out) {
    std::vector<flatbuffers::Offset<fb::Placement>> placements;
    for (auto p : module.getOps<PlacementOp>()) {
      placementIndex[p.getSymName()] = placements.size();
      hierarchyOf[p.getSymName()] = p.getHierarchy().vec();
      std::vector<int32_t> ranks, hier;
      for (int64_t r : p.getRanks())
        if (FailureOr<int32_t> v = int32Of(p, "rank", r); succeeded(v))
          ranks.push_back(*v);
        else
          return failure();
      for (int64_t h : p.getHierarchy())
        if (FailureOr<int32_t> v = int32Of(p, "hierarchy dimension", h); succeeded(v))
          hier.push_back(*v);
        else
          return failure();
      placements.push_back(fb::CreatePlacementDirect(
          fbb, p.getSymName().str().c_str(),
          p.getDevice() == DeviceKind::cuda ? fb::DeviceKind::CUDA : fb::DeviceKind::CPU, &ranks,
          &hier));
    }
    if (placements.empty())
      return module.emitError("cannot emit a plan: the module declares no sbp.placement");

    std::vector<flatbuffers::Offset<fb::Variable>> variables;
    for (auto v : module.getOps<VariableOp>()) {
      RankedTensorType type = v.getTensorType();
      SbpTensorAttr enc = getSbp(type);
      if (!enc || !placementIndex.count(enc.getPlacement().getValue()))
        return v.emitOpError("needs a declared placement to be emitted");
      variableIndex[v.getSymName()] = variables.size();
      InitAttr init = v.getInit();
      // The dialect's kinds are the plan's, value for value (ir/SbpBase.td,
      // plan.fbs).
      static_assert(
          static_cast<int>(InitKind::zeros) == static_cast<int>(fb::InitKind::Zeros) &&
          static_cast<int>(InitKind::constant) == static_cast<int>(fb::InitKind::Constant) &&
          static_cast<int>(InitKind::uniform) == static_cast<int>(fb::InitKind::Uniform) &&
          static_cast<int>(InitKind::normal) == static_cast<int>(fb::InitKind::Normal));
      const auto kind = static_cast<fb::InitKind>(init.getKind());
      auto initOff =
          fb::CreateInit(fbb, kind, init.getA().convertToDouble(), init.getB().convertToDouble(),
                         static_cast<uint64_t>(v.getSeed()));
      std::vector<int64_t> shape = type.getShape().vec();
      std::vector<fb::SbpDim> sbp = toPlan(enc);
      // The variable's verifier keeps replica_dim inside the hierarchy.
      const int32_t replicaDim = v.getReplicaDim() ? static_cast<int32_t>(*v.getReplicaDim()) : -1;
      variables.push_back(fb::CreateVariableDirect(
          fbb, v.getSymName().str().c_str(), dtypeOf(type.getElementType()), &shape,
          placementIndex[enc.getPlacement().getValue()], &sbp, initOff, replicaDim));
    }

    std::vector<flatbuffers::Offset<fb::Program>> programs;
    for (auto fn : module.getOps<func::FuncOp>()) {
      auto program = emitProgram(fn);
      if (failed(program))
        return failure();
      programs.push_back(*program);
    }
    // Local SGD: which programs run when (sbp-local-sgd's sbp.schedule).
    flatbuffers::Offset<fb::Schedule> schedule;
    auto schedules = module.getOps<ScheduleOp>();
    if (!schedules.empty()) {
      ScheduleOp s = *schedules.begin();
      if (std::next(schedules.begin()) != schedules.end())
        return s.emitOpError("is the second sbp.schedule; a plan has one");
      FailureOr<int32_t> period = int32Of(s, "period", s.getPeriod());
      if (failed(period))
        return failure();
      std::vector<flatbuffers::Offset<fb::ScheduleStep>> round;
      for (Attribute a : s.getRound()) {
        auto step = ScheduleOp::parseStep(cast<StringAttr>(a).getValue());
        if (!step)
          return s.emitOpError("has a malformed step ") << a;
        round.push_back(fb::CreateScheduleStepDirect(
            fbb, static_cast<fb::ScheduleAction>(step->first),
            step->second.empty() ? nullptr : step->second.str().c_str()));
      }
      schedule = fb::CreateScheduleDirect(
          fbb, s.getAlgorithm().str().c_str(), s.getInner().str().c_str(), *period, &round,
          s.getSecondsAttr() ? s.getSecondsAttr().getValueAsDouble() : 0.0,
          s.getMinStepsAttr() ? s.getMinStepsAttr().getInt() : 0);
    }
    std::string source = module.getSymName() ? module.getSymName()->str() : "";
    auto root = fb::CreatePlanDirect(fbb, sbpflow::kPlanVersion, &placements, &variables, &programs,
                                     source.c_str(), schedule);
    fb::FinishPlanBuffer(fbb, root);
    out.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    return success();
  }

private:
  FailureOr<flatbuffers::Offset<fb::Program>> emitProgram(func::FuncOp fn) {
    Block &body = fn.getBody().front();
    auto arenaAttr = fn->getAttrOfType<IntegerAttr>("sbp.arena_bytes");
    if (!arenaAttr)
      return fn.emitOpError("has no sbp.arena_bytes; run sbp-plan-memory before emitting");

    // Tasks: every op but metrics and the terminator, in op order.
    llvm::DenseMap<Operation *, int32_t> taskOf;
    llvm::SmallVector<Operation *> tasks;
    for (Operation &op : body) {
      // Metrics and outputs are read by the driver, not run.
      if (isa<MetricOp, OutputOp, func::ReturnOp>(op))
        continue;
      if (isa<MinimizeOp>(op))
        return op.emitOpError("must be removed by sbp-autodiff before emitting a plan");
      if (!op.getDialect() || !isa<SbpDialect>(op.getDialect()))
        return op.emitOpError("is not an sbp op and cannot be emitted");
      taskOf[&op] = tasks.size();
      tasks.push_back(&op);
    }

    // Tensors: every task result.
    std::vector<flatbuffers::Offset<fb::Tensor>> tensors;
    llvm::DenseMap<Value, int32_t> tensorOf;
    struct ArenaSpan {
      int32_t tensor;
      Value root;
      int64_t offset, bytes;
    };
    std::vector<ArenaSpan> spans;
    llvm::DenseMap<Value, Value> aliasRoot;
    for (Operation *op : tasks) {
      auto offsets = op->getAttrOfType<DenseI64ArrayAttr>("sbp.offset");
      if (op->getNumResults() > 0 && (!offsets || offsets.size() != (int64_t)op->getNumResults()))
        return op->emitOpError("has no sbp.offset; run sbp-plan-memory before emitting");
      for (auto [i, r] : llvm::enumerate(op->getResults())) {
        auto type = cast<RankedTensorType>(r.getType());
        SbpTensorAttr enc = getSbp(type);
        if (!enc)
          return op->emitOpError("result #") << i << " has no SBP; run sbp-propagate";
        StringRef placement = enc.getPlacement().getValue();
        auto dims = getSbpDims(enc);
        int64_t bytes = sbpflow::maxLocalElements(type.getShape().vec(),
                                                  sbpflow::NdSbp(dims.begin(), dims.end()),
                                                  hierarchyOf[placement]) *
                        elementBytes(type.getElementType());
        int32_t variable = -1;
        if (auto param = dyn_cast<ParameterOp>(op)) {
          auto it = variableIndex.find(param.getVariable());
          if (it == variableIndex.end())
            return op->emitOpError("references undeclared variable ") << param.getVariableAttr();
          variable = it->second;
        }
        int64_t offset = offsets[i];
        if (variable < 0 && offset < 0)
          return op->emitOpError("result #") << i << " has no arena offset";
        std::string name =
            (op->getName().stripDialect() + "_" + llvm::Twine(taskOf[op]) + ":" + llvm::Twine(i))
                .str();
        std::vector<int64_t> shape = type.getShape().vec();
        std::vector<fb::SbpDim> sbp = toPlan(enc);
        int32_t index = tensors.size();
        tensors.push_back(fb::CreateTensorDirect(fbb, name.c_str(), dtypeOf(type.getElementType()),
                                                 &shape, placementIndex[placement], &sbp, variable,
                                                 variable >= 0 ? -1 : offset, bytes));
        tensorOf[r] = index;
        Value root = r;
        if (Value in = inPlaceOperand(op, i); in && aliasRoot.lookup(in))
          root = aliasRoot.lookup(in);
        aliasRoot[r] = root;
        if (variable < 0)
          spans.push_back({index, root, offset, bytes});
      }
    }

    // Tasks.
    std::vector<flatbuffers::Offset<fb::Task>> taskOffsets;
    std::vector<flatbuffers::Offset<fb::Binding>> inputs;
    int32_t collectiveSeq = 0;
    for (Operation *op : tasks) {
      std::vector<int32_t> ins, outs;
      for (Value v : op->getOperands()) {
        auto it = tensorOf.find(v);
        if (it == tensorOf.end())
          return op->emitOpError("uses a value that is not produced by a task");
        ins.push_back(it->second);
      }
      for (Value r : op->getResults())
        outs.push_back(tensorOf[r]);
      auto planOp = dyn_cast<PlanOpInterface>(op);
      if (!planOp)
        return op->emitOpError("has no plan equivalent");
      const fb::OpKind kind = planOp.getPlanKind();
      const sbpflow::OpInfo *info = sbpflow::opInfo(kind);
      if (!info)
        return op->emitOpError("names plan op ")
               << static_cast<int>(kind) << ", which runtime/plan/Ops.def does not list";
      FailureOr<flatbuffers::Offset<void>> attrs = emitAttrs(fbb, op, info->attrs, variableIndex);
      if (failed(attrs))
        return failure();
      if (info->attrs == fb::OpAttrs::InputAttrs)
        inputs.push_back(fb::CreateBindingDirect(
            fbb, op->getAttrOfType<StringAttr>("field").getValue().str().c_str(), outs[0]));
      const bool collective = info->category == sbpflow::OpCategory::Collective;
      std::string name = (op->getName().getStringRef() + "@" + locString(op->getLoc())).str();
      taskOffsets.push_back(fb::CreateTaskDirect(fbb, name.c_str(), kind, &ins, &outs,
                                                 attrs->IsNull() ? fb::OpAttrs::NONE : info->attrs,
                                                 *attrs, collective ? collectiveSeq++ : -1));
    }

    // Data registers: one per produced tensor.
    std::vector<flatbuffers::Offset<fb::Register>> registers;
    std::set<std::pair<int32_t, int32_t>> dataEdges;
    auto consumersOf = [&](Value v) {
      llvm::SetVector<int32_t> consumers;
      for (Operation *user : v.getUsers())
        if (auto it = taskOf.find(user); it != taskOf.end())
          consumers.insert(it->second);
      return consumers;
    };
    for (Operation *op : tasks)
      for (Value r : op->getResults()) {
        std::vector<int32_t> list;
        for (int32_t c : consumersOf(r))
          list.push_back(c);
        // A tensor only the driver reads (a metric) needs no register.
        if (list.empty())
          continue;
        for (int32_t c : list)
          dataEdges.insert({taskOf[op], c});
        registers.push_back(fb::CreateRegisterDirect(fbb, taskOf[op], tensorOf[r], &list, 1));
      }

    // Control edges, producer -> consumers.
    std::map<int32_t, std::set<int32_t>> control;
    auto addControl = [&](int32_t from, int32_t to) {
      if (from != to && from < to && !dataEdges.count({from, to}))
        control[from].insert(to);
    };
    // (a) Write after read: every earlier reader of a variable finishes
    // before its update; read after write: a later read of it (EDiT's
    // synchronising step updates a parameter before its forward reads it)
    // waits for the update.
    for (Operation *op : tasks) {
      auto optimizer = dyn_cast<OptimizerOpInterface>(op);
      if (!optimizer)
        continue;
      StringRef updated = optimizer.getUpdatedVariable().getValue();
      for (Operation *other : tasks) {
        auto param = dyn_cast<ParameterOp>(other);
        if (!param || param.getVariable() != updated)
          continue;
        if (taskOf[other] > taskOf[op]) {
          addControl(taskOf[op], taskOf[other]);
          continue;
        }
        for (int32_t reader : consumersOf(param.getResult()))
          addControl(reader, taskOf[op]);
      }
    }
    // (b) Arena reuse: everything reading the old bytes precedes the new writer.
    for (size_t i = 0; i < spans.size(); ++i)
      for (size_t j = 0; j < spans.size(); ++j) {
        const ArenaSpan &a = spans[i], &b = spans[j];
        if (a.root == b.root)
          continue;
        Operation *aDef = a.root.getDefiningOp(), *bDef = b.root.getDefiningOp();
        if (taskOf[aDef] >= taskOf[bDef])
          continue;
        if (a.offset + a.bytes <= b.offset || b.offset + b.bytes <= a.offset)
          continue;
        // A later occupant of the whole shared range already orders a before b
        // (a's readers -> that occupant -> its readers -> b's writer).
        int64_t lo = std::max(a.offset, b.offset),
                hi = std::min(a.offset + a.bytes, b.offset + b.bytes);
        bool covered = llvm::any_of(spans, [&](const ArenaSpan &c) {
          if (c.root == a.root || c.root == b.root)
            return false;
          int32_t cAt = taskOf[c.root.getDefiningOp()];
          return cAt > taskOf[aDef] && cAt < taskOf[bDef] && c.offset <= lo &&
                 c.offset + c.bytes >= hi;
        });
        if (covered)
          continue;
        int32_t writer = taskOf[bDef];
        // Every tensor of a's alias group: its readers precede the new writer.
        bool anyReader = false;
        for (auto &[v, root] : aliasRootsOf(a.root))
          for (int32_t reader : consumersOf(v)) {
            addControl(reader, writer);
            anyReader = true;
          }
        if (!anyReader)
          addControl(taskOf[aDef], writer);
      }
    for (auto &[from, tos] : control) {
      std::vector<int32_t> list(tos.begin(), tos.end());
      registers.push_back(fb::CreateRegisterDirect(fbb, from, -1, &list, 1));
    }

    // Metrics.
    std::vector<flatbuffers::Offset<fb::Metric>> metrics;
    for (auto m : body.getOps<MetricOp>()) {
      auto it = tensorOf.find(m.getValue());
      if (it == tensorOf.end())
        return m.emitOpError("reports a value that no task produces");
      bool partial = llvm::any_of(getSbpDims(getSbp(m.getValue().getType())),
                                  [](SbpDim d) { return d.kind == SbpKind::PartialSum; });
      metrics.push_back(
          fb::CreateMetricDirect(fbb, m.getName().str().c_str(), it->second,
                                 partial ? fb::MetricReduce::Sum : fb::MetricReduce::First));
    }
    // Outputs: tensors the caller reads after a step.
    std::vector<flatbuffers::Offset<fb::Binding>> outputs;
    for (auto o : body.getOps<OutputOp>()) {
      auto it = tensorOf.find(o.getValue());
      if (it == tensorOf.end())
        return o.emitOpError("outputs a value that no task produces");
      // The executors hand an output to the caller as floats.
      if (!o.getValue().getType().getElementType().isF32())
        return o.emitOpError("output '") << o.getName() << "' must be f32 in a plan, got "
                                         << o.getValue().getType().getElementType();
      outputs.push_back(fb::CreateBindingDirect(fbb, o.getName().str().c_str(), it->second));
    }
    std::string name = fn.getSymName().str();
    return fb::CreateProgramDirect(fbb, name.c_str(), &tensors, &taskOffsets, &registers,
                                   arenaAttr.getInt(), &inputs, &metrics, &outputs);
  }

  // Values sharing `root`'s buffer (the root and all-reduce results of it).
  std::vector<std::pair<Value, Value>> aliasRootsOf(Value root) {
    std::vector<std::pair<Value, Value>> out{{root, root}};
    llvm::SmallVector<Value> work{root};
    while (!work.empty()) {
      Value v = work.pop_back_val();
      for (OpOperand &use : v.getUses())
        if (inPlaceOperand(use.getOwner(), use.getOperandNumber())) {
          Value r = use.getOwner()->getResult(use.getOperandNumber());
          out.push_back({r, root});
          work.push_back(r);
        }
    }
    return out;
  }

  ModuleOp module;
  flatbuffers::FlatBufferBuilder fbb;
  llvm::StringMap<int32_t> placementIndex, variableIndex;
  llvm::StringMap<std::vector<int64_t>> hierarchyOf;
};

} // namespace

LogicalResult mlir::sbp::emitPlan(ModuleOp module, std::vector<uint8_t> &plan) {
  // The runtime trusts that every op's SBPs form a signature: prove it here.
  if (failed(verifyNoImplicitBoxing(module)))
    return failure();
  return PlanEmitter(module).run(plan);
}

namespace {
// `output` (may be empty) receives the flatbuffer and `print` dumps it as
// text to stdout (for FileCheck).
struct EmitPlanPass : public sbp::impl::EmitPlanPassBase<EmitPlanPass> {
  using Base::Base;

  void runOnOperation() override {
    std::vector<uint8_t> bytes;
    if (failed(emitPlan(getOperation(), bytes)))
      return signalPassFailure();
    if (!output.empty()) {
      std::error_code ec;
      llvm::raw_fd_ostream os(output, ec, llvm::sys::fs::OF_None);
      if (ec) {
        getOperation().emitError("cannot write plan to '") << output << "': " << ec.message();
        return signalPassFailure();
      }
      os.write(reinterpret_cast<const char *>(bytes.data()), bytes.size());
    }
    if (print) {
      // Through the runtime's own loader: what is printed has passed every
      // check the runtime makes before it runs a plan.
      auto loaded = sbpflow::loadPlanBuffer(bytes);
      if (!loaded) {
        getOperation().emitError("the emitted plan does not verify: ") << loaded.status().message();
        return signalPassFailure();
      }
      llvm::outs() << sbpflow::describePlan(*loaded->plan());
    }
    markAllAnalysesPreserved();
  }
};
} // namespace
