// The op registry's table, expanded from Ops.def (each op's check and
// builders are defined in its family file), the load-time check, and the
// one way a task computes in f32 over BF16 tensors.
#include "kernels/Registry.h"

#include "runtime/plan/PlanTypes.h"

#include <algorithm>
#include <memory>

namespace sbpflow {

namespace ops {
#define SBP_PLAN_OP(Name, Value, Category, MinIn, MaxIn, MinOut, MaxOut, InTypes, OutTypes, Attrs, \
                    AttrsRequired, Doc)                                                            \
  Status check##Name(const OpArgs &);                                                              \
  StatusOr<Kernel> cpu##Name(const OpArgs &);                                                      \
  StatusOr<Kernel> cuda##Name(const OpArgs &);
#include "runtime/plan/Ops.def"
#undef SBP_PLAN_OP
} // namespace ops

namespace {

#ifdef SBPFLOW_HAVE_CUDA
#define SBP_CUDA_BUILDER(Name) &ops::cuda##Name
#else
#define SBP_CUDA_BUILDER(Name) nullptr
#endif

struct Row {
  plan::OpKind kind;
  OpEntry entry;
};

const Row kRows[] = {
#define SBP_PLAN_OP(Name, Value, Category, MinIn, MaxIn, MinOut, MaxOut, InTypes, OutTypes, Attrs, \
                    AttrsRequired, Doc)                                                            \
  {plan::OpKind::Name, {&ops::check##Name, &ops::cpu##Name, SBP_CUDA_BUILDER(Name)}},
#include "runtime/plan/Ops.def"
#undef SBP_PLAN_OP
};

} // namespace

const OpEntry &opEntry(plan::OpKind kind) {
  for (const Row &r : kRows)
    if (r.kind == kind)
      return r.entry;
  static const OpEntry none{nullptr, nullptr, nullptr};
  return none;
}

Status checkTask(const plan::Plan &plan, const plan::Task &task,
                 const std::vector<const plan::Tensor *> &in,
                 const std::vector<const plan::Tensor *> &out, const std::string &at) {
  const OpEntry &entry = opEntry(task.op());
  if (!entry.check)
    return Status::error(at + ": no check for this op");
  // The whole tensors, as one rank holding everything would see them.
  std::vector<TensorView> views;
  views.reserve(in.size() + out.size());
  auto view = [&](const plan::Tensor *t) {
    TensorView v;
    v.name = t->name()->str();
    v.global = v.local = toShape(t->shape());
    v.region = wholeRegion(v.global);
    v.sbp = toNdSbp(t->sbp());
    v.hierarchy = toHierarchy(*plan.placements()->Get(t->placement()));
    v.coord.assign(v.hierarchy.size(), 0);
    v.placement = t->placement();
    v.dtype = t->dtype();
    views.push_back(std::move(v));
    return &views.back();
  };
  OpArgs a(plan, task, at);
  for (const plan::Tensor *t : in)
    a.in.push_back(view(t));
  for (const plan::Tensor *t : out)
    a.out.push_back(view(t));
  return entry.check(a);
}

StatusOr<Kernel> withF32(const OpArgs &a,
                         const std::function<StatusOr<Kernel>(const OpArgs &)> &build) {
  auto isBf16 = [](const TensorView *t) { return t->dtype == plan::DType::BF16 && t->data; };
  if (std::none_of(a.in.begin(), a.in.end(), isBf16) &&
      std::none_of(a.out.begin(), a.out.end(), isBf16))
    return build(a);

  // One shadow per distinct BF16 buffer, as large as its largest use.
  struct Shadow {
    void *bf16;
    int64_t n;
    float *f32 = nullptr;
  };
  std::vector<Shadow> shadows;
  auto shadowOf = [&](const TensorView *t) -> Shadow & {
    auto it = std::find_if(shadows.begin(), shadows.end(),
                           [&](const Shadow &s) { return s.bf16 == t->data; });
    if (it == shadows.end()) {
      shadows.push_back({t->data, 0});
      it = shadows.end() - 1;
    }
    it->n = std::max(it->n, elements(t));
    return *it;
  };
  for (const Operands *list : {&a.in, &a.out})
    for (const TensorView *t : *list)
      if (isBf16(t))
        shadowOf(t);
  // At least one element: the shadow of an empty shard must not be null,
  // which would mean "not on this rank".
  for (Shadow &s : shadows)
    s.f32 = static_cast<float *>(a.scratch(static_cast<size_t>(std::max<int64_t>(s.n, 1)) * 4));

  struct Conversion {
    void *bf16;
    float *f32;
    int64_t n;
  };
  std::vector<Conversion> widen, round;
  std::vector<TensorView> views; // the f32 views the kernel is built over
  views.reserve(a.in.size() + a.out.size());
  auto f32View = [&](const TensorView *t, std::vector<Conversion> &conversions) {
    if (!isBf16(t))
      return t;
    float *shadow = shadowOf(t).f32;
    Conversion c{t->data, shadow, elements(t)};
    // An input read twice is widened once.
    if (std::none_of(conversions.begin(), conversions.end(),
                     [&](const Conversion &o) { return o.bf16 == c.bf16 && o.n >= c.n; }))
      conversions.push_back(c);
    views.push_back(*t);
    views.back().data = shadow;
    views.back().dtype = plan::DType::F32;
    return static_cast<const TensorView *>(&views.back());
  };
  OpArgs f32{a};
  f32.in.clear();
  f32.out.clear();
  for (const TensorView *t : a.in)
    f32.in.push_back(f32View(t, widen));
  for (const TensorView *t : a.out)
    f32.out.push_back(f32View(t, round));
  auto built = build(f32);
  if (!built || !*built)
    return built;
  return Kernel([kernel = built.take(), widen = std::move(widen), round = std::move(round),
                 device = a.device, stream = a.stream, at = a.at](const StepContext &ctx) {
    for (const Conversion &c : widen)
      if (Status s = device->cast(c.bf16, plan::DType::BF16, c.f32, plan::DType::F32, c.n, stream);
          !s)
        return s.withContext(at);
    if (Status s = kernel(ctx); !s)
      return s;
    for (const Conversion &c : round)
      if (Status s = device->cast(c.f32, plan::DType::F32, c.bf16, plan::DType::BF16, c.n, stream);
          !s)
        return s.withContext(at);
    return Status::ok();
  });
}

} // namespace sbpflow
