// Elementwise ops at runtime: add, ReLU, GELU and their gradients, dropout
// (a Philox mask of the element's global index, the same on either device and
// any sharding) and the cast between f32 and bf16 (the device's own cast).
#include "kernels/Checks.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Data.h"
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Elementwise.h"
#endif

#include <memory>

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

// n elements in and out: the operands of `op` hold as many as the result.
StatusOr<int64_t> elementwiseWork(const OpArgs &a) {
  const int64_t n = elements(a.out[0]);
  for (const TensorView *t : a.in)
    if (elements(t) != n)
      return Status::error(a.at + ": operands differ in local size (" + toString(t->local) +
                           " and " + toString(a.out[0]->local) + ")");
  return n;
}

// The mask depends on the global position, so that every sharding drops the
// same elements.
struct DropoutWork {
  std::vector<int64_t> global, begin, size;
  float p = 0;
  uint64_t seed = 0;
};

StatusOr<DropoutWork> dropoutWork(const OpArgs &a) {
  const float prob = a.task.attrs_as_DropoutAttrs()->p();
  if (!(prob >= 0.0f && prob < 1.0f))
    return Status::error(a.at + ": DropoutAttrs.p must lie in [0, 1), is " + std::to_string(prob));
  if (Status s = sameSize({a.in[0], a.out[0]}, a.at); !s)
    return s;
  DropoutWork w;
  w.global = a.in[0]->global;
  for (const Chunk &c : a.in[0]->region) {
    w.begin.push_back(c.begin);
    w.size.push_back(c.size);
  }
  w.p = prob;
  w.seed = a.task.attrs_as_DropoutAttrs()->seed();
  return w;
}

// One CPU elementwise kernel in f32: run(x, y, out, n), y the second input
// or null.
template <class Run> StatusOr<Kernel> cpuElementwise(const OpArgs &args, Run run) {
  return checkedF32(args, elementwiseWork, [run](const OpArgs &a, int64_t n) {
    const float *x = data<float>(a.in[0]), *y = a.in.size() > 1 ? data<float>(a.in[1]) : nullptr;
    float *out = data<float>(a.out[0]);
    return always([=] { run(x, y, out, n); });
  });
}

StatusOr<Kernel> buildCast(const OpArgs &a) {
  return checked(a, elementwiseWork, [](const OpArgs &a, int64_t n) {
    const plan::DType from = a.in[0]->dtype, to = a.out[0]->dtype;
    return launch(a, [=, x = a.in[0]->data, y = a.out[0]->data, device = a.device,
                      stream = a.stream] { return device->cast(x, from, y, to, n, stream); });
  });
}

} // namespace

Status checkAdd(const OpArgs &a) { return statusOf(elementwiseWork(a)); }
Status checkRelu(const OpArgs &a) { return statusOf(elementwiseWork(a)); }
Status checkReluGrad(const OpArgs &a) { return statusOf(elementwiseWork(a)); }
Status checkGelu(const OpArgs &a) { return statusOf(elementwiseWork(a)); }
Status checkGeluGrad(const OpArgs &a) { return statusOf(elementwiseWork(a)); }
Status checkDropout(const OpArgs &a) { return statusOf(dropoutWork(a)); }
Status checkCast(const OpArgs &a) {
  if (a.in[0]->global != a.out[0]->global)
    return Status::error(a.at + ": cast of " + toString(a.in[0]->global) + " into " +
                         toString(a.out[0]->global) + " changes the shape");
  return statusOf(elementwiseWork(a));
}

StatusOr<Kernel> cpuAdd(const OpArgs &a) {
  return cpuElementwise(
      a, [](const float *x, const float *y, float *out, int64_t n) { cpu::add(x, y, out, n); });
}
StatusOr<Kernel> cpuRelu(const OpArgs &a) {
  return cpuElementwise(
      a, [](const float *x, const float *, float *out, int64_t n) { cpu::relu(x, out, n); });
}
StatusOr<Kernel> cpuReluGrad(const OpArgs &a) {
  return cpuElementwise(a, [](const float *dy, const float *y, float *dx, int64_t n) {
    cpu::reluGrad(dy, y, dx, n);
  });
}
StatusOr<Kernel> cpuGelu(const OpArgs &a) {
  return cpuElementwise(
      a, [](const float *x, const float *, float *out, int64_t n) { cpu::gelu(x, out, n); });
}
StatusOr<Kernel> cpuGeluGrad(const OpArgs &a) {
  return cpuElementwise(a, [](const float *dy, const float *x, float *dx, int64_t n) {
    cpu::geluGrad(dy, x, dx, n);
  });
}

StatusOr<Kernel> cpuDropout(const OpArgs &args) {
  return checkedF32(args, dropoutWork, [](const OpArgs &a, DropoutWork w) {
    auto d = std::make_shared<const DropoutWork>(std::move(w));
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return Kernel([=](const StepContext &ctx) {
      cpu::dropout(x, y, d->global.data(), d->begin.data(), d->size.data(),
                   static_cast<int>(d->global.size()), d->p, d->seed,
                   static_cast<uint32_t>(ctx.batch), static_cast<uint32_t>(ctx.epoch));
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuCast(const OpArgs &a) { return buildCast(a); }

#ifdef SBPFLOW_HAVE_CUDA

namespace {
// One CUDA elementwise kernel in the task's element type.
template <class Run> StatusOr<Kernel> cudaElementwise(const OpArgs &a, Run run) {
  return cuda::typedKernel(a, elementwiseWork, [&](auto e, int64_t n, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]), *y = a.in.size() > 1 ? data<T>(a.in[1]) : nullptr;
    T *out = data<T>(a.out[0]);
    return launch(a, [=] { return run(x, y, out, n, s); });
  });
}
} // namespace

StatusOr<Kernel> cudaAdd(const OpArgs &a) {
  return cudaElementwise(a, [](const auto *x, const auto *y, auto *out, int64_t n, cudaStream_t s) {
    return cuda::add(x, y, out, n, s);
  });
}
StatusOr<Kernel> cudaRelu(const OpArgs &a) {
  return cudaElementwise(a, [](const auto *x, const auto *, auto *out, int64_t n, cudaStream_t s) {
    return cuda::relu(x, out, n, s);
  });
}
StatusOr<Kernel> cudaReluGrad(const OpArgs &a) {
  return cudaElementwise(a, [](const auto *dy, const auto *y, auto *dx, int64_t n, cudaStream_t s) {
    return cuda::reluGrad(dy, y, dx, n, s);
  });
}
StatusOr<Kernel> cudaGelu(const OpArgs &a) {
  return cudaElementwise(a, [](const auto *x, const auto *, auto *out, int64_t n, cudaStream_t s) {
    return cuda::gelu(x, out, n, s);
  });
}
StatusOr<Kernel> cudaGeluGrad(const OpArgs &a) {
  return cudaElementwise(a, [](const auto *dy, const auto *x, auto *dx, int64_t n, cudaStream_t s) {
    return cuda::geluGrad(dy, x, dx, n, s);
  });
}

StatusOr<Kernel> cudaDropout(const OpArgs &a) {
  return cuda::typedKernel(a, dropoutWork, [&](auto e, const DropoutWork &w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    auto d = std::make_shared<const DropoutWork>(w);
    const T *x = data<T>(a.in[0]);
    T *y = data<T>(a.out[0]);
    return Kernel([=, at = a.at](const StepContext &ctx) {
      return named(at, cuda::dropout<T>(x, y, d->global.data(), d->begin.data(), d->size.data(),
                                        static_cast<int>(d->global.size()), d->p, d->seed,
                                        static_cast<uint32_t>(ctx.batch),
                                        static_cast<uint32_t>(ctx.epoch), s));
    });
  });
}

StatusOr<Kernel> cudaCast(const OpArgs &a) { return buildCast(a); }

#endif

} // namespace sbpflow::ops
