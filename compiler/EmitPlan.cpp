// Plan emission (runtime/plan/plan.fbs): placements, variables, and one
// Program per function with tensors, tasks in op order, data registers,
// control registers (write-after-read on variables, arena reuse), collective
// order, inputs, metrics and outputs. Also the `sbp-emit-plan` pass and a text dump.
#include "compiler/EmitPlan.h"
#include "runtime/plan/PlanLoader.h"

#include "compiler/Passes.h"
#include "ir/SbpDialect.h"
#include "ops/OpSemantics.h"
#include "llvm/Support/Path.h"

#include "runtime/plan/PlanLoader.h"
#include "runtime/plan/plan_generated.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FileSystem.h"

#include <map>
#include <set>

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

class PlanEmitter {
public:
  explicit PlanEmitter(ModuleOp module) : module(module) {}

  LogicalResult run(std::vector<uint8_t> &out) {
    std::vector<flatbuffers::Offset<fb::Placement>> placements;
    for (auto p : module.getOps<PlacementOp>()) {
      placementIndex[p.getSymName()] = placements.size();
      hierarchyOf[p.getSymName()] = p.getHierarchy().vec();
      std::vector<int32_t> ranks(p.getRanks().begin(), p.getRanks().end());
      std::vector<int32_t> hier(p.getHierarchy().begin(), p.getHierarchy().end());
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
      fb::InitKind kind = fb::InitKind::Zeros;
      switch (init.getKind()) {
      case InitKind::zeros:
        kind = fb::InitKind::Zeros;
        break;
      case InitKind::constant:
        kind = fb::InitKind::Constant;
        break;
      case InitKind::uniform:
        kind = fb::InitKind::Uniform;
        break;
      case InitKind::normal:
        kind = fb::InitKind::Normal;
        break;
      }
      auto initOff =
          fb::CreateInit(fbb, kind, init.getA().convertToDouble(), init.getB().convertToDouble(),
                         static_cast<uint64_t>(v.getSeed()));
      std::vector<int64_t> shape = type.getShape().vec();
      std::vector<fb::SbpDim> sbp = toPlan(enc);
      variables.push_back(fb::CreateVariableDirect(
          fbb, v.getSymName().str().c_str(), dtypeOf(type.getElementType()), &shape,
          placementIndex[enc.getPlacement().getValue()], &sbp, initOff));
    }

    std::vector<flatbuffers::Offset<fb::Program>> programs;
    for (auto fn : module.getOps<func::FuncOp>()) {
      auto program = emitProgram(fn);
      if (failed(program))
        return failure();
      programs.push_back(*program);
    }
    std::string source = module.getSymName() ? module.getSymName()->str() : "";
    auto root = fb::CreatePlanDirect(fbb, sbpflow::kPlanVersion, &placements, &variables, &programs,
                                     source.c_str());
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
      fb::OpKind kind;
      fb::OpAttrs attrsType = fb::OpAttrs::NONE;
      flatbuffers::Offset<void> attrs;
      fb::Queue queue = fb::Queue::Compute;
      bool collective = false;
      auto collectiveAttrs = [&](int64_t dim, SbpDim from, SbpDim to) {
        attrsType = fb::OpAttrs::CollectiveAttrs;
        SbpDim p = isPartial(from) ? from : to;
        attrs = fb::CreateCollectiveAttrs(fbb, dim, reduceOf(p),
                                          from.kind == SbpKind::Split ? from.axis : -1,
                                          to.kind == SbpKind::Split     ? to.axis
                                          : from.kind == SbpKind::Split ? from.axis
                                                                        : -1)
                    .Union();
      };
      auto boxDims = [&](Value in, Value out, int64_t dim) {
        return std::make_pair(getSbpDims(getSbp(in.getType()))[dim],
                              getSbpDims(getSbp(out.getType()))[dim]);
      };
      LogicalResult ok =
          llvm::TypeSwitch<Operation *, LogicalResult>(op)
              .Case([&](InputOp o) {
                kind = fb::OpKind::Input;
                attrsType = fb::OpAttrs::InputAttrs;
                attrs = fb::CreateInputAttrsDirect(fbb, o.getField().str().c_str()).Union();
                inputs.push_back(fb::CreateBindingDirect(fbb, o.getField().str().c_str(), outs[0]));
                return success();
              })
              .Case([&](ParameterOp) {
                kind = fb::OpKind::Parameter;
                return success();
              })
              .Case([&](FillOp o) {
                kind = fb::OpKind::Fill;
                attrsType = fb::OpAttrs::FillAttrs;
                attrs = fb::CreateFillAttrs(fbb, o.getValue().convertToFloat()).Union();
                return success();
              })
              .Case([&](MatmulOp o) {
                kind = fb::OpKind::MatMul;
                attrsType = fb::OpAttrs::MatMulAttrs;
                attrs = fb::CreateMatMulAttrs(fbb, o.getTransposeA(), o.getTransposeB()).Union();
                return success();
              })
              .Case([&](BiasAddOp) {
                kind = fb::OpKind::BiasAdd;
                return success();
              })
              .Case([&](AddOp) {
                kind = fb::OpKind::Add;
                return success();
              })
              .Case([&](ReluOp) {
                kind = fb::OpKind::Relu;
                return success();
              })
              .Case([&](ReluGradOp) {
                kind = fb::OpKind::ReluGrad;
                return success();
              })
              .Case([&](SoftmaxXentOp) {
                kind = fb::OpKind::SoftmaxXent;
                return success();
              })
              .Case([&](SoftmaxXentGradOp) {
                kind = fb::OpKind::SoftmaxXentGrad;
                return success();
              })
              .Case([&](MeanOp o) {
                kind = fb::OpKind::Mean;
                attrsType = fb::OpAttrs::MeanAttrs;
                attrs = fb::CreateMeanAttrs(
                            fbb, cast<RankedTensorType>(o.getX().getType()).getNumElements())
                            .Union();
                return success();
              })
              .Case([&](MeanGradOp o) {
                kind = fb::OpKind::MeanGrad;
                attrsType = fb::OpAttrs::MeanAttrs;
                attrs = fb::CreateMeanAttrs(
                            fbb, cast<RankedTensorType>(o.getResult().getType()).getNumElements())
                            .Union();
                return success();
              })
              .Case([&](ReduceRowsOp) {
                kind = fb::OpKind::ReduceRows;
                return success();
              })
              .Case([&](CountCorrectOp) {
                kind = fb::OpKind::CountCorrect;
                return success();
              })
              .Case([&](EmbeddingOp) {
                kind = fb::OpKind::Embedding;
                return success();
              })
              .Case([&](EmbeddingGradOp) {
                kind = fb::OpKind::EmbeddingGrad;
                return success();
              })
              .Case([&](LayerNormOp o) {
                kind = fb::OpKind::LayerNorm;
                attrsType = fb::OpAttrs::NormAttrs;
                attrs = fb::CreateNormAttrs(fbb, o.getEps().convertToFloat()).Union();
                return success();
              })
              .Case([&](LayerNormGradOp o) {
                kind = fb::OpKind::LayerNormGrad;
                attrsType = fb::OpAttrs::NormAttrs;
                attrs = fb::CreateNormAttrs(fbb, o.getEps().convertToFloat()).Union();
                return success();
              })
              .Case([&](GeluOp) {
                kind = fb::OpKind::Gelu;
                return success();
              })
              .Case([&](GeluGradOp) {
                kind = fb::OpKind::GeluGrad;
                return success();
              })
              .Case([&](SoftmaxOp) {
                kind = fb::OpKind::Softmax;
                return success();
              })
              .Case([&](SoftmaxGradOp) {
                kind = fb::OpKind::SoftmaxGrad;
                return success();
              })
              .Case([&](CausalAttentionOp o) {
                kind = fb::OpKind::CausalAttention;
                attrsType = fb::OpAttrs::AttentionAttrs;
                attrs = fb::CreateAttentionAttrs(fbb, static_cast<int32_t>(o.getHeads())).Union();
                return success();
              })
              .Case([&](CausalAttentionGradOp o) {
                kind = fb::OpKind::CausalAttentionGrad;
                attrsType = fb::OpAttrs::AttentionAttrs;
                attrs = fb::CreateAttentionAttrs(fbb, static_cast<int32_t>(o.getHeads())).Union();
                return success();
              })
              .Case([&](DropoutOp o) {
                kind = fb::OpKind::Dropout;
                attrsType = fb::OpAttrs::DropoutAttrs;
                attrs = fb::CreateDropoutAttrs(fbb, o.getP().convertToFloat(),
                                               static_cast<uint64_t>(o.getSeed()))
                            .Union();
                return success();
              })
              .Case([&](ReshapeOp) {
                kind = fb::OpKind::Reshape;
                return success();
              })
              .Case([&](TransposeOp o) {
                kind = fb::OpKind::Transpose;
                attrsType = fb::OpAttrs::TransposeAttrs;
                std::vector<int32_t> perm(o.getPerm().begin(), o.getPerm().end());
                attrs = fb::CreateTransposeAttrsDirect(fbb, &perm).Union();
                return success();
              })
              .Case([&](NarrowOp o) {
                kind = fb::OpKind::Narrow;
                attrsType = fb::OpAttrs::NarrowAttrs;
                attrs = fb::CreateNarrowAttrs(fbb, static_cast<int32_t>(o.getAxis()), o.getBegin())
                            .Union();
                return success();
              })
              .Case([&](NarrowGradOp o) {
                kind = fb::OpKind::NarrowGrad;
                attrsType = fb::OpAttrs::NarrowAttrs;
                attrs = fb::CreateNarrowAttrs(fbb, static_cast<int32_t>(o.getAxis()), o.getBegin())
                            .Union();
                return success();
              })
              .Case([&](ConcatOp o) {
                kind = fb::OpKind::Concat;
                attrsType = fb::OpAttrs::ConcatAttrs;
                attrs = fb::CreateConcatAttrs(fbb, static_cast<int32_t>(o.getAxis())).Union();
                return success();
              })
              .Case([&](CastOp) {
                kind = fb::OpKind::Cast;
                return success();
              })
              .Case([&](BiasGeluOp) {
                kind = fb::OpKind::BiasGelu;
                return success();
              })
              .Case([&](SquareSumOp) {
                kind = fb::OpKind::SquareSum;
                return success();
              })
              .Case([&](ClipScaleOp o) {
                kind = fb::OpKind::ClipScale;
                attrsType = fb::OpAttrs::ClipAttrs;
                attrs = fb::CreateClipAttrs(fbb, o.getMaxNorm().convertToFloat()).Union();
                return success();
              })
              .Case([&](AdamWOp o) -> LogicalResult {
                kind = fb::OpKind::AdamW;
                int32_t slots[4];
                FlatSymbolRefAttr refs[4] = {o.getVariableAttr(), o.getMAttr(), o.getVAttr(),
                                             o.getStepAttr()};
                for (int i = 0; i < 4; ++i) {
                  auto it = variableIndex.find(refs[i].getValue());
                  if (it == variableIndex.end())
                    return o.emitOpError("uses undeclared variable ") << refs[i];
                  slots[i] = it->second;
                }
                attrsType = fb::OpAttrs::AdamWAttrs;
                attrs =
                    fb::CreateAdamWAttrs(
                        fbb, o.getLr().convertToFloat(), o.getBeta1().convertToFloat(),
                        o.getBeta2().convertToFloat(), o.getEps().convertToFloat(),
                        o.getWeightDecay().convertToFloat(), slots[0], slots[1], slots[2], slots[3])
                        .Union();
                return success();
              })
              .Case([&](SgdOp o) -> LogicalResult {
                kind = fb::OpKind::SgdMomentum;
                auto var = variableIndex.find(o.getVariable());
                if (var == variableIndex.end())
                  return o.emitOpError("updates undeclared variable ") << o.getVariableAttr();
                int32_t buffer = -1;
                if (auto b = o.getMomentumBuffer()) {
                  auto it = variableIndex.find(*b);
                  if (it == variableIndex.end())
                    return o.emitOpError("uses undeclared momentum buffer @") << *b;
                  buffer = it->second;
                }
                attrsType = fb::OpAttrs::SgdAttrs;
                attrs = fb::CreateSgdAttrs(fbb, o.getLr().convertToFloat(),
                                           o.getMomentum().convertToFloat(),
                                           o.getWeightDecay().convertToFloat(), var->second, buffer)
                            .Union();
                return success();
              })
              .Case([&](AllReduceOp o) {
                kind = fb::OpKind::AllReduce;
                auto [f, t] = boxDims(o.getInputs()[0], o.getResults()[0], o.getDim());
                collectiveAttrs(o.getDim(), f, t);
                collective = true;
                return success();
              })
              .Case([&](AllGatherOp o) {
                kind = fb::OpKind::AllGather;
                auto [f, t] = boxDims(o.getInput(), o.getResult(), o.getDim());
                collectiveAttrs(o.getDim(), f, t);
                collective = true;
                return success();
              })
              .Case([&](ReduceScatterOp o) {
                kind = fb::OpKind::ReduceScatter;
                auto [f, t] = boxDims(o.getInput(), o.getResult(), o.getDim());
                collectiveAttrs(o.getDim(), f, t);
                collective = true;
                return success();
              })
              .Case([&](AllToAllOp o) {
                kind = fb::OpKind::AllToAll;
                auto [f, t] = boxDims(o.getInput(), o.getResult(), o.getDim());
                collectiveAttrs(o.getDim(), f, t);
                collective = true;
                return success();
              })
              .Case([&](SliceOp o) {
                kind = fb::OpKind::Slice;
                auto [f, t] = boxDims(o.getInput(), o.getResult(), o.getDim());
                collectiveAttrs(o.getDim(), f, t);
                return success();
              })
              .Case([&](ZeroOthersOp o) {
                kind = fb::OpKind::ZeroOthers;
                auto [f, t] = boxDims(o.getInput(), o.getResult(), o.getDim());
                collectiveAttrs(o.getDim(), f, t);
                return success();
              })
              .Default([&](Operation *o) { return o->emitOpError("has no plan equivalent"); });
      if (failed(ok))
        return failure();
      if (collective)
        queue = fb::Queue::Comm;
      std::string name = (op->getName().getStringRef() + "@" + locString(op->getLoc())).str();
      taskOffsets.push_back(fb::CreateTaskDirect(fbb, name.c_str(), kind, &ins, &outs, attrsType,
                                                 attrs, queue, collective ? collectiveSeq++ : -1));
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
        auto consumers = consumersOf(r);
        std::vector<int32_t> list(consumers.begin(), consumers.end());
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
    // (a) Write after read: every reader of a variable finishes before its update.
    for (Operation *op : tasks) {
      StringRef updated;
      if (auto sgd = dyn_cast<SgdOp>(op))
        updated = sgd.getVariable();
      else if (auto adam = dyn_cast<AdamWOp>(op))
        updated = adam.getVariable();
      else
        continue;
      for (Operation *other : tasks) {
        auto param = dyn_cast<ParameterOp>(other);
        if (!param || param.getVariable() != updated)
          continue;
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
    llvm::StringSet<> outputNames;
    for (auto o : body.getOps<OutputOp>()) {
      auto it = tensorOf.find(o.getValue());
      if (it == tensorOf.end())
        return o.emitOpError("outputs a value that no task produces");
      if (!outputNames.insert(o.getName()).second)
        return o.emitOpError("output '")
               << o.getName() << "' is bound twice in @" << fn.getSymName();
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
struct EmitPlanPass : public PassWrapper<EmitPlanPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(EmitPlanPass)
  EmitPlanPass() = default;
  EmitPlanPass(const EmitPlanPass &other) : PassWrapper(other) {}
  EmitPlanPass(std::string path, bool printIt) {
    output = path;
    print = printIt;
  }
  StringRef getArgument() const override { return "sbp-emit-plan"; }
  StringRef getDescription() const override {
    return "Emit the execution plan (flatbuffers) and optionally print it as text";
  }
  Option<std::string> output{*this, "output", llvm::cl::desc("Write the plan to this file")};
  Option<bool> print{*this, "print", llvm::cl::desc("Print the plan as text to stdout"),
                     llvm::cl::init(false)};

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

std::unique_ptr<Pass> mlir::sbp::createEmitPlanPass(std::string outputPath, bool print) {
  return std::make_unique<EmitPlanPass>(std::move(outputPath), print);
}
