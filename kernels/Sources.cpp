// Sources: a step's batch of a data field (Input), a constant (Fill), and a
// view of a variable (Parameter, no work). Written once over the Device: a
// data source fills host memory, which the device takes (on the CPU in
// place); a BF16 input is read in f32 and rounded on the device.
#include "kernels/Checks.h"
#include "runtime/data/DataSource.h"

#include <algorithm>
#include <memory>

namespace sbpflow::ops {
namespace {

// Where this rank's rows of a data field go.
struct InputWork {
  std::string field;
  int64_t globalBatch = 0, rowBegin = 0, rowCount = 0;
  int64_t sample = 0; // elements per sample
  FieldType type = FieldType::F32;
  std::string planShape;
};

StatusOr<InputWork> inputWork(const OpArgs &a) {
  const TensorView *o = a.out[0];
  InputWork w;
  w.field = a.task.attrs_as_InputAttrs()->field()->str();
  if (o->global.empty())
    return Status::error(a.at + ": input tensor must have a batch axis");
  // A partial input (the compiler's verifier refuses one) is each rank's own
  // partial value: the executor's tests give each rank its own data that way.
  for (size_t d = 0; d < o->sbp.size(); ++d)
    if (o->sbp[d].kind == SbpKind::Split && o->sbp[d].axis != 0)
      return Status::error(a.at + ": inputs may only be split on axis 0");
  w.globalBatch = o->global[0];
  w.rowBegin = o->region[0].begin;
  w.rowCount = o->region[0].size;
  w.sample = elementCount(o->global) / std::max<int64_t>(1, w.globalBatch);
  w.type = o->dtype == plan::DType::I32 ? FieldType::I32 : FieldType::F32;
  w.planShape = toString(o->global);
  return w;
}

// At step time: whether `data` holds the field as the plan reads it.
Status checkDataField(const InputWork &w, const DataSource *data, const std::string &at) {
  if (!data)
    return Status::error(at + ": program reads data field '" + w.field +
                         "' but no data source was given");
  const FieldInfo *info = nullptr;
  for (const FieldInfo &fi : data->fields())
    if (fi.name == w.field)
      info = &fi;
  if (!info)
    return Status::error(at + ": data source has no field '" + w.field + "'");
  if (info->type != w.type || elementCount(info->sampleShape) != w.sample) {
    auto typeName = [](FieldType t) { return t == FieldType::I32 ? "i32" : "f32"; };
    return Status::error(at + ": data field '" + w.field + "' holds " + typeName(info->type) +
                         " samples of " + std::to_string(elementCount(info->sampleShape)) +
                         " elements, but the plan's input is " + typeName(w.type) + " " +
                         w.planShape + " (" + std::to_string(w.sample) + " elements per sample)");
  }
  return Status::ok();
}

StatusOr<Kernel> buildInput(const OpArgs &a) {
  auto checked = inputWork(a);
  if (!checked)
    return checked.status();
  // A data field holds f32 or i32 samples (4 bytes each); a BF16 input
  // receives them in f32 scratch and rounds them.
  const int64_t n = elements(a.out[0]);
  const size_t bytes = static_cast<size_t>(n) * 4;
  const bool rounds = a.out[0]->dtype == plan::DType::BF16;
  void *target = rounds ? a.scratch(bytes) : a.out[0]->data;
  void *y = a.out[0]->data;
  Device *device = a.device;
  // Where the device's memory is not the host's, the data source fills a
  // host buffer, allocated once, which is then copied over.
  const bool staged = device && !device->hostVisible();
  auto host = std::make_shared<std::vector<uint8_t>>(staged ? bytes + 1 : 0);
  return Kernel([=, w = checked.take(), at = a.at, stream = a.stream](const StepContext &ctx) {
    if (Status s = checkDataField(w, ctx.data, at); !s)
      return s;
    void *fillInto = staged ? host->data() : target;
    Status s = ctx.data->fill(w.field, ctx.epoch, ctx.batch, w.globalBatch, w.rowBegin, w.rowCount,
                              fillInto);
    if (!s)
      return s.withContext(at);
    if (staged)
      if (Status u = device->upload(target, host->data(), bytes, stream); !u)
        return u.withContext(at);
    if (rounds)
      return named(at, device->cast(target, plan::DType::F32, y, plan::DType::BF16, n, stream));
    return Status::ok();
  });
}

StatusOr<Kernel> buildFill(const OpArgs &a) {
  const float value = a.task.attrs_as_FillAttrs()->value();
  const int64_t n = elements(a.out[0]);
  return Kernel([=, y = a.out[0]->data, device = a.device, stream = a.stream,
                 at = a.at](const StepContext &) {
    return named(at, device->fill(y, plan::DType::F32, value, n, stream));
  });
}

} // namespace

Status checkInput(const OpArgs &a) { return statusOf(inputWork(a)); }
StatusOr<Kernel> cpuInput(const OpArgs &a) { return buildInput(a); }
StatusOr<Kernel> cudaInput(const OpArgs &a) { return buildInput(a); }

Status checkFill(const OpArgs &a) {
  for (const SbpDim &d : a.out[0]->sbp)
    if (d.kind != SbpKind::Split && d.kind != SbpKind::Broadcast)
      return Status::error(a.at + ": cannot be partial (" + toString(a.out[0]->sbp) +
                           "): every rank writes the value");
  return Status::ok();
}
StatusOr<Kernel> cpuFill(const OpArgs &a) { return buildFill(a); }
StatusOr<Kernel> cudaFill(const OpArgs &a) { return buildFill(a); }

// A parameter's tensor is its variable's storage: nothing to run.
Status checkParameter(const OpArgs &) { return Status::ok(); }
StatusOr<Kernel> cpuParameter(const OpArgs &) { return Kernel(); }
StatusOr<Kernel> cudaParameter(const OpArgs &) { return Kernel(); }

} // namespace sbpflow::ops
