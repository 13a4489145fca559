// Optimisers at runtime: SGD with momentum and AdamW update their variables
// in place from an f32 gradient and an optional scalar gradient scale (the
// clipping factor, left on the device). AdamW's step count lives in a
// variable, so that checkpoints resume it; the host knows it before the
// launch (the CUDA kernel takes it by value): an i32, which counts past
// f32's 2^24.
#include "kernels/Checks.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"
#include "runtime/plan/PlanTypes.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Optimizers.h"
#endif

namespace sbpflow {

int updatedVariable(const plan::Task &task) {
  if (const plan::SgdAttrs *s = task.attrs_as_SgdAttrs())
    return s->param();
  if (const plan::AdamWAttrs *a = task.attrs_as_AdamWAttrs())
    return a->param();
  // Local SGD's outer step writes its anchor and momentum buffer too
  // (kernels/LocalSgd.cpp), held where the parameter is.
  if (const plan::OuterAttrs *o = task.attrs_as_OuterAttrs())
    return o->param();
  if (const plan::AssignAttrs *assign = task.attrs_as_AssignAttrs())
    return assign->variable();
  return -1;
}

namespace ops {
namespace {

// The variables an optimiser updates, checked against the parameter. A slot
// index is -1 where the optimiser has none.
struct OptimizerWork {
  int param = -1, momentum = -1, m = -1, v = -1, step = -1;
  int64_t n = 0;       // parameter elements (this rank's)
  bool scaled = false; // a second input holds the gradient-clipping factor
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weightDecay = 0, momentumFactor = 0;
};

// The plan's side (the loader's check): indices, shapes, factors.
StatusOr<OptimizerWork> optimizerWork(const OpArgs &a) {
  const auto *vars = a.plan.variables();
  const int nv = static_cast<int>(vars->size());
  auto variable = [&](int index, const std::string &what) { return planVariable(a, index, what); };
  OptimizerWork w;
  w.param = updatedVariable(a.task);
  auto param = variable(w.param, "param");
  if (!param)
    return param.status();
  const plan::Variable &p = **param;
  if (p.dtype() != plan::DType::F32)
    return Status::error(a.at + ": parameter '" + p.name()->str() + "' must be f32");
  if (elementCount(toShape(p.shape())) != elementCount(a.in[0]->global))
    return Status::error(a.at + ": gradient shape differs from variable '" + p.name()->str() + "'");
  if (a.in.size() > 1) {
    if (elements(a.in[1]) != 1)
      return Status::error(a.at + ": gradient scale '" + a.in[1]->name + "' must be a scalar, is " +
                           toString(a.in[1]->local));
    w.scaled = true;
  }
  if (const plan::SgdAttrs *sgd = a.task.attrs_as_SgdAttrs()) {
    if (sgd->momentum_buffer() < -1 || sgd->momentum_buffer() >= nv)
      return Status::error(a.at + ": momentum_buffer variable " +
                           std::to_string(sgd->momentum_buffer()) + " out of range");
    if (sgd->momentum() != 0.0f && sgd->momentum_buffer() < 0)
      return Status::error(a.at + ": momentum " + std::to_string(sgd->momentum()) +
                           " without a momentum_buffer");
    if (sgd->momentum_buffer() >= 0) {
      const plan::Variable &buffer = *vars->Get(sgd->momentum_buffer());
      if (toShape(buffer.shape()) != toShape(p.shape()))
        return Status::error(a.at + ": momentum_buffer variable '" + buffer.name()->str() +
                             "' differs in shape from the parameter '" + p.name()->str() + "'");
      if (buffer.dtype() != plan::DType::F32)
        return Status::error(a.at + ": variable '" + buffer.name()->str() + "' must be f32");
    }
    w.momentum = sgd->momentum_buffer();
    w.lr = sgd->lr();
    w.momentumFactor = sgd->momentum();
    w.weightDecay = sgd->weight_decay();
    return w;
  }
  const plan::AdamWAttrs *adam = a.task.attrs_as_AdamWAttrs();
  for (auto [index, what] : {std::pair<int, const char *>{adam->m(), "m"}, {adam->v(), "v"}}) {
    auto slot = variable(index, what);
    if (!slot)
      return slot.status();
    if (toShape((*slot)->shape()) != toShape(p.shape()))
      return Status::error(a.at + ": " + what + " variable '" + (*slot)->name()->str() +
                           "' differs in shape from the parameter '" + p.name()->str() + "'");
    if ((*slot)->dtype() != plan::DType::F32)
      return Status::error(a.at + ": " + what + " variable '" + (*slot)->name()->str() +
                           "' must be f32");
  }
  auto step = variable(adam->step(), "step");
  if (!step)
    return step.status();
  if (elementCount(toShape((*step)->shape())) != 1)
    return Status::error(a.at + ": step variable '" + (*step)->name()->str() +
                         "' must be a scalar");
  if ((*step)->dtype() != plan::DType::I32)
    return Status::error(a.at + ": step variable '" + (*step)->name()->str() + "' must be i32");
  if (!(adam->beta1() >= 0.0f && adam->beta1() < 1.0f) ||
      !(adam->beta2() >= 0.0f && adam->beta2() < 1.0f))
    return Status::error(a.at + ": AdamWAttrs betas must lie in [0, 1)");
  if (!(adam->eps() > 0.0f))
    return Status::error(a.at + ": AdamWAttrs.eps must be positive");
  w.m = adam->m();
  w.v = adam->v();
  w.step = adam->step();
  w.lr = adam->lr();
  w.beta1 = adam->beta1();
  w.beta2 = adam->beta2();
  w.eps = adam->eps();
  w.weightDecay = adam->weight_decay();
  return w;
}

// The rank's side: the gradient covers this rank's shard of the parameter.
// An empty kernel where the rank holds none of it.
StatusOr<OptimizerWork> localWork(const OpArgs &a, bool &here) {
  auto w = optimizerWork(a);
  if (!w)
    return w;
  const std::vector<TensorView> &vars = *a.variables;
  here = vars[w->param].data != nullptr;
  if (!here)
    return w;
  w->n = elements(&vars[w->param]);
  if (!a.in[0]->data || elements(a.in[0]) != w->n)
    return Status::error(a.at + ": gradient holds " + std::to_string(elements(a.in[0])) +
                         " local elements, parameter " + std::to_string(w->n));
  return w;
}

// How the step counter is named when it cannot count on.
std::string stepCounter(const OpArgs &a, const OptimizerWork &w) {
  return "step counter '" + a.plan.variables()->Get(w.step)->name()->str() + "'";
}

} // namespace

Status checkSgdMomentum(const OpArgs &a) { return statusOf(optimizerWork(a)); }
Status checkAdamW(const OpArgs &a) { return statusOf(optimizerWork(a)); }

namespace {
// Builds the kernel of an optimiser whose parameter this rank holds:
// make(work, params, m, v) gets the parameter's and its slots' storage
// (null where the optimiser has no such slot); no work elsewhere.
template <class Make> StatusOr<Kernel> onParameter(const OpArgs &a, Make make) {
  bool here = false;
  auto w = localWork(a, here);
  if (!w)
    return w.status();
  if (!here)
    return Kernel();
  auto slot = [&](int v) { return v >= 0 ? data<float>(&(*a.variables)[v]) : nullptr; };
  return make(*w, slot(w->param), slot(w->momentum >= 0 ? w->momentum : w->m), slot(w->v));
}
} // namespace

StatusOr<Kernel> cpuSgdMomentum(const OpArgs &a) {
  return onParameter(a, [&](const OptimizerWork &w, float *param, float *velocity, float *) {
    const float *g = data<float>(a.in[0]);
    const float *scale = w.scaled ? data<float>(a.in[1]) : nullptr;
    return always([=] {
      cpu::sgdMomentum(param, velocity, g, w.n, w.lr, w.momentumFactor, w.weightDecay,
                       scale ? *scale : 1.0f);
    });
  });
}

StatusOr<Kernel> cpuAdamW(const OpArgs &a) {
  return onParameter(a, [&](const OptimizerWork &w, float *param, float *m, float *v) {
    auto *step = static_cast<int32_t *>(a.hostVariable(w.step));
    const float *g = data<float>(a.in[0]);
    const float *scale = w.scaled ? data<float>(a.in[1]) : nullptr;
    return launch(a, [=, counter = stepCounter(a, w)]() -> Status {
      if (Status s = countStep(step, counter); !s)
        return s;
      cpu::adamw(param, m, v, g, w.n, w.lr, w.beta1, w.beta2, w.eps, w.weightDecay, *step,
                 scale ? *scale : 1.0f);
      return Status::ok();
    });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

// The clipping factor stays on the device (no host sync in a step).
StatusOr<Kernel> cudaSgdMomentum(const OpArgs &a) {
  return onParameter(a, [&](const OptimizerWork &w, float *param, float *velocity, float *) {
    const float *g = data<float>(a.in[0]);
    const float *scale = w.scaled ? data<float>(a.in[1]) : nullptr;
    return launch(a, [=, s = cuda::streamOf(a.stream)] {
      return cuda::sgdMomentum(param, velocity, g, w.n, w.lr, w.momentumFactor, w.weightDecay,
                               scale, s);
    });
  });
}

StatusOr<Kernel> cudaAdamW(const OpArgs &a) {
  return onParameter(a, [&](const OptimizerWork &w, float *param, float *m, float *v) {
    auto *step = static_cast<int32_t *>(a.hostVariable(w.step));
    const float *g = data<float>(a.in[0]);
    const float *scale = w.scaled ? data<float>(a.in[1]) : nullptr;
    return launch(a, [=, counter = stepCounter(a, w), s = cuda::streamOf(a.stream)]() -> Status {
      if (Status st = countStep(step, counter); !st)
        return st;
      return cuda::adamw(param, m, v, g, w.n, w.lr, w.beta1, w.beta2, w.eps, w.weightDecay, *step,
                         scale, s);
    });
  });
}

#endif

} // namespace ops
} // namespace sbpflow
