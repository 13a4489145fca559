// Local SGD at runtime (DiLoCo, CO2): Scale (a replica's own gradient from
// its partial one), PseudoGradient (the round's anchor minus the replica's
// parameters), OuterStep, the optimiser that moves the anchor by the
// replicas' summed pseudo-gradients and resets the parameters to it, and
// Assign, which sets a variable between rounds. f32 throughout; the outer
// step keeps the same bits on either device.
#include "kernels/Checks.h"
#include "kernels/cpu/Kernels.h"
#include "runtime/plan/PlanTypes.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Elementwise.h"
#include "kernels/cuda/Optimizers.h"
#endif

#include <cmath>
#include <cstring>

namespace sbpflow::ops {
namespace {

// Scale's factor; its operand and result hold as many elements.
StatusOr<float> scaleWork(const OpArgs &a) {
  const float factor = a.task.attrs_as_ScaleAttrs()->factor();
  if (!std::isfinite(factor))
    return Status::error(a.at + ": ScaleAttrs.factor must be finite, is " + std::to_string(factor));
  if (Status s = sameSize({a.in[0], a.out[0]}, a.at); !s)
    return s;
  return factor;
}

// PseudoGradient's element count.
StatusOr<int64_t> pseudoGradientWork(const OpArgs &a) {
  if (Status s = sameSize({a.in[0], a.in[1], a.out[0]}, a.at); !s)
    return s;
  return elements(a.out[0]);
}

// What the outer step needs: its variables (momentum -1 without a buffer)
// and factors, and this rank's element count.
struct OuterWork {
  int param = -1, anchor = -1, momentum = -1;
  int64_t n = 0;
  float lr = 0, momentumFactor = 0, gapPenalty = 1, clip = 0;
  int replicas = 1;
  bool nesterov = false, keepAnchor = false;
};

// The plan's side (the loader's check): variables, shapes, factors.
StatusOr<OuterWork> outerWork(const OpArgs &a) {
  const plan::OuterAttrs &o = *a.task.attrs_as_OuterAttrs();
  const auto *vars = a.plan.variables();
  auto bad = [&](const std::string &why) { return Status::error(a.at + ": " + why); };
  if (!std::isfinite(o.lr()))
    return bad("OuterAttrs.lr must be finite, is " + std::to_string(o.lr()));
  if (!(o.momentum() >= 0.0f && o.momentum() < 1.0f))
    return bad("OuterAttrs.momentum must lie in [0, 1), is " + std::to_string(o.momentum()));
  if (o.replicas() < 1)
    return bad("OuterAttrs.replicas must be at least 1, is " + std::to_string(o.replicas()));
  if (!(o.gap_penalty() >= 1.0f && std::isfinite(o.gap_penalty())))
    return bad("OuterAttrs.gap_penalty must be finite and at least 1, is " +
               std::to_string(o.gap_penalty()));
  if (!(o.clip() >= 0.0f && std::isfinite(o.clip())))
    return bad("OuterAttrs.clip must be finite and at least 0, is " + std::to_string(o.clip()));
  // The paper's step keeps no momentum where momentum is 0, and CO2 clips
  // the outer momentum: either needs the buffer.
  if (o.momentum_buffer() < 0) {
    if (o.momentum() != 0.0f)
      return bad("OuterAttrs.momentum " + std::to_string(o.momentum()) +
                 " without a momentum_buffer");
    if (o.clip() != 0.0f)
      return bad("OuterAttrs.clip " + std::to_string(o.clip()) +
                 " without a momentum_buffer (clip bounds the outer momentum)");
  }

  auto variable = [&](int index, const char *what) { return planVariable(a, index, what); };
  auto param = variable(o.param(), "param");
  if (!param)
    return param.status();
  const plan::Variable &p = **param;
  if (p.dtype() != plan::DType::F32)
    return bad("param variable '" + p.name()->str() + "' must be f32");
  if (elementCount(toShape(p.shape())) != elementCount(a.in[0]->global))
    return bad("pseudo-gradient shape differs from variable '" + p.name()->str() + "'");
  // The anchor and the buffer are the parameter's shards on every rank: the
  // same shape, placement and nd-SBP.
  auto slot = [&](int index, const char *what) -> Status {
    auto v = variable(index, what);
    if (!v)
      return v.status();
    const plan::Variable &s = **v;
    const std::string name = std::string(what) + " variable '" + s.name()->str() + "'";
    if (index == o.param())
      return bad(name + " is the parameter itself");
    if (toShape(s.shape()) != toShape(p.shape()))
      return bad(name + " differs in shape from the parameter '" + p.name()->str() + "'");
    if (s.placement() != p.placement() || toNdSbp(s.sbp()) != toNdSbp(p.sbp()))
      return bad(name + " differs in placement or nd-SBP from the parameter '" + p.name()->str() +
                 "'");
    if (s.dtype() != plan::DType::F32)
      return bad(name + " must be f32");
    return Status::ok();
  };
  if (Status s = slot(o.anchor(), "anchor"); !s)
    return s;
  if (o.momentum_buffer() >= 0) {
    if (Status s = slot(o.momentum_buffer(), "momentum_buffer"); !s)
      return s;
    if (o.momentum_buffer() == o.anchor())
      return bad("momentum_buffer variable '" + vars->Get(o.anchor())->name()->str() +
                 "' is the anchor");
  }

  OuterWork w;
  w.param = o.param();
  w.anchor = o.anchor();
  w.momentum = o.momentum_buffer();
  w.lr = o.lr();
  w.momentumFactor = o.momentum();
  w.nesterov = o.nesterov();
  w.replicas = o.replicas();
  w.gapPenalty = o.gap_penalty();
  w.clip = o.clip();
  w.keepAnchor = o.keep_anchor();
  return w;
}

// Builds the outer step where this rank holds the parameter (an empty
// kernel elsewhere): make(work, param, anchor, momentum buffer or null).
template <class Make> StatusOr<Kernel> onOuterParameter(const OpArgs &a, Make make) {
  auto w = outerWork(a);
  if (!w)
    return w.status();
  const std::vector<TensorView> &vars = *a.variables;
  if (!vars[w->param].data)
    return Kernel();
  w->n = elements(&vars[w->param]);
  for (int v : {w->anchor, w->momentum})
    if (v >= 0 && (!vars[v].data || elements(&vars[v]) != w->n))
      return Status::error(a.at + ": variable '" + vars[v].name + "' holds " +
                           std::to_string(elements(&vars[v])) + " local elements, parameter " +
                           std::to_string(w->n));
  if (!a.in[0]->data || elements(a.in[0]) != w->n)
    return Status::error(a.at + ": pseudo-gradient holds " + std::to_string(elements(a.in[0])) +
                         " local elements, parameter " + std::to_string(w->n));
  auto slot = [&](int v) { return v >= 0 ? data<float>(&vars[v]) : nullptr; };
  return make(*w, slot(w->param), slot(w->anchor), slot(w->momentum));
}

// Assign's variable. Its input holds the variable's shards
// (holdsVariableShards: on a per-replica variable's replica dimension it may
// be partial, each replica keeping its own term: CO2's pseudo-gradient).
StatusOr<int> assignWork(const OpArgs &a) {
  const int index = a.task.attrs_as_AssignAttrs()->variable();
  const auto *vars = a.plan.variables();
  const int nv = static_cast<int>(vars->size());
  if (index < 0 || index >= nv)
    return Status::error(a.at + ": AssignAttrs.variable " + std::to_string(index) +
                         " out of range (plan has " + std::to_string(nv) + " variables)");
  const plan::Variable &v = *vars->Get(index);
  const std::string name = "variable '" + v.name()->str() + "'";
  const TensorView &x = *a.in[0];
  if (v.dtype() != plan::DType::F32)
    return Status::error(a.at + ": " + name + " must be f32");
  if (elementCount(toShape(v.shape())) != elementCount(x.global))
    return Status::error(a.at + ": input '" + x.name + "' " + toString(x.global) +
                         " differs in element count from " + name + " " +
                         toString(toShape(v.shape())));
  if (x.placement != v.placement() || !holdsVariableShards(v, x.sbp))
    return Status::error(a.at + ": input '" + x.name + "' differs in placement or nd-SBP from " +
                         name);
  return index;
}

// Builds Assign where this rank holds the variable (an empty kernel
// elsewhere): make(the variable's storage, its local element count).
template <class Make> StatusOr<Kernel> onAssignedVariable(const OpArgs &a, Make make) {
  auto index = assignWork(a);
  if (!index)
    return index.status();
  const TensorView &v = (*a.variables)[*index];
  if (!v.data)
    return Kernel();
  const int64_t n = elements(&v);
  if (!a.in[0]->data || elements(a.in[0]) != n)
    return Status::error(a.at + ": input holds " + std::to_string(elements(a.in[0])) +
                         " local elements, variable '" + v.name + "' " + std::to_string(n));
  return make(data<float>(&v), n);
}

} // namespace

Status checkScale(const OpArgs &a) { return statusOf(scaleWork(a)); }
Status checkPseudoGradient(const OpArgs &a) { return statusOf(pseudoGradientWork(a)); }
Status checkOuterStep(const OpArgs &a) { return statusOf(outerWork(a)); }
Status checkAssign(const OpArgs &a) { return statusOf(assignWork(a)); }

StatusOr<Kernel> cpuScale(const OpArgs &a) {
  return checked(a, scaleWork, [](const OpArgs &a, float factor) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    const int64_t n = elements(a.out[0]);
    return always([=] { cpu::scale(x, factor, y, n); });
  });
}

StatusOr<Kernel> cpuPseudoGradient(const OpArgs &a) {
  return checked(a, pseudoGradientWork, [](const OpArgs &a, int64_t n) {
    const float *anchor = data<float>(a.in[0]), *param = data<float>(a.in[1]);
    float *y = data<float>(a.out[0]);
    return always([=] { cpu::subtract(anchor, param, y, n); });
  });
}

StatusOr<Kernel> cpuOuterStep(const OpArgs &a) {
  return onOuterParameter(a, [&](const OuterWork &w, float *param, float *anchor, float *m) {
    const float *sum = data<float>(a.in[0]);
    return always([=] {
      cpu::outerStep(param, anchor, m, sum, w.n, w.lr, w.momentumFactor, w.nesterov, w.replicas,
                     w.gapPenalty, w.clip, w.keepAnchor);
    });
  });
}

StatusOr<Kernel> cpuAssign(const OpArgs &a) {
  return onAssignedVariable(a, [&](float *variable, int64_t n) {
    const float *x = data<float>(a.in[0]);
    return always([=] { std::memcpy(variable, x, static_cast<size_t>(n) * sizeof(float)); });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

StatusOr<Kernel> cudaScale(const OpArgs &a) {
  return checked(a, scaleWork, [](const OpArgs &a, float factor) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    const int64_t n = elements(a.out[0]);
    return launch(a, [=, s = cuda::streamOf(a.stream)] { return cuda::scale(x, factor, y, n, s); });
  });
}

StatusOr<Kernel> cudaPseudoGradient(const OpArgs &a) {
  return checked(a, pseudoGradientWork, [](const OpArgs &a, int64_t n) {
    const float *anchor = data<float>(a.in[0]), *param = data<float>(a.in[1]);
    float *y = data<float>(a.out[0]);
    return launch(
        a, [=, s = cuda::streamOf(a.stream)] { return cuda::subtract(anchor, param, y, n, s); });
  });
}

StatusOr<Kernel> cudaOuterStep(const OpArgs &a) {
  return onOuterParameter(a, [&](const OuterWork &w, float *param, float *anchor, float *m) {
    const float *sum = data<float>(a.in[0]);
    return launch(a, [=, s = cuda::streamOf(a.stream)] {
      return cuda::outerStep(param, anchor, m, sum, w.n, w.lr, w.momentumFactor, w.nesterov,
                             w.replicas, w.gapPenalty, w.clip, w.keepAnchor, s);
    });
  });
}

StatusOr<Kernel> cudaAssign(const OpArgs &a) {
  return onAssignedVariable(a, [&](float *variable, int64_t n) {
    const void *x = a.in[0]->data;
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    return launch(a, [=, device = a.device, stream = a.stream] {
      return device->copy(variable, x, bytes, stream);
    });
  });
}

#endif

} // namespace sbpflow::ops
