// Normalisation over the last axis at runtime: layer norm (gamma and beta
// are f32 master weights whatever x's type) and softmax, with their
// gradients.
#include "kernels/Checks.h"
#include "kernels/cpu/Transformer.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Attention.h"
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Normalization.h"
#endif

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

struct NormWork {
  int64_t rows = 0, cols = 0;
  float eps = 1e-5f;
};

// Layer norm: in x, gamma, beta -> y; its gradient: in dy, x, gamma -> dx,
// dgamma, dbeta.
StatusOr<NormWork> normWork(const OpArgs &a) {
  const bool fwd = a.task.op() == K::LayerNorm;
  NormWork w;
  w.eps = a.task.attrs_as_NormAttrs()->eps();
  if (!(w.eps > 0.0f))
    return Status::error(a.at + ": NormAttrs.eps must be positive, is " + std::to_string(w.eps));
  const TensorView *x = fwd ? a.in[0] : a.in[1];
  const TensorView *gamma = fwd ? a.in[1] : a.in[2];
  if (Status s = rowsOf(x, w.rows, w.cols, a.at); !s)
    return s;
  if (elements(gamma) != w.cols)
    return Status::error(a.at + ": layer norm weights hold " + std::to_string(elements(gamma)) +
                         " elements for rows of " + std::to_string(w.cols));
  if (fwd) {
    if (Status s = sameSize({a.in[0], a.out[0]}, a.at); !s)
      return s;
    if (elements(a.in[2]) != w.cols)
      return Status::error(a.at + ": layer norm bias size differs from the row length");
    return w;
  }
  if (elements(a.out[1]) != w.cols || elements(a.out[2]) != w.cols)
    return Status::error(a.at + ": layer norm gradient needs dx, dgamma and dbeta");
  if (Status s = sameSize({a.in[0], a.in[1], a.out[0]}, a.at); !s)
    return s;
  return w;
}

// Softmax: x -> y; its gradient: dy, y -> dx.
StatusOr<NormWork> softmaxWork(const OpArgs &a) {
  NormWork w;
  if (Status s = rowsOf(a.in[0], w.rows, w.cols, a.at); !s)
    return s;
  if (Status s = a.task.op() == K::Softmax ? sameSize({a.in[0], a.out[0]}, a.at)
                                           : sameSize({a.in[0], a.in[1], a.out[0]}, a.at);
      !s)
    return s;
  return w;
}

} // namespace

Status checkLayerNorm(const OpArgs &a) { return statusOf(normWork(a)); }
Status checkLayerNormGrad(const OpArgs &a) { return statusOf(normWork(a)); }
Status checkSoftmax(const OpArgs &a) { return statusOf(softmaxWork(a)); }
Status checkSoftmaxGrad(const OpArgs &a) { return statusOf(softmaxWork(a)); }

StatusOr<Kernel> cpuLayerNorm(const OpArgs &args) {
  return checkedF32(args, normWork, [](const OpArgs &a, NormWork w) {
    const float *x = data<float>(a.in[0]), *g = data<float>(a.in[1]), *b = data<float>(a.in[2]);
    float *y = data<float>(a.out[0]);
    return always([=] { cpu::layerNorm(x, g, b, y, w.rows, w.cols, w.eps); });
  });
}

StatusOr<Kernel> cpuLayerNormGrad(const OpArgs &args) {
  return checkedF32(args, normWork, [](const OpArgs &a, NormWork w) {
    const float *dy = data<float>(a.in[0]), *x = data<float>(a.in[1]), *g = data<float>(a.in[2]);
    float *dx = data<float>(a.out[0]), *dg = data<float>(a.out[1]), *db = data<float>(a.out[2]);
    return always([=] { cpu::layerNormGrad(dy, x, g, dx, dg, db, w.rows, w.cols, w.eps); });
  });
}

StatusOr<Kernel> cpuSoftmax(const OpArgs &args) {
  return checkedF32(args, softmaxWork, [](const OpArgs &a, NormWork w) {
    const float *x = data<float>(a.in[0]);
    float *y = data<float>(a.out[0]);
    return always([=] { cpu::softmax(x, y, w.rows, w.cols); });
  });
}

StatusOr<Kernel> cpuSoftmaxGrad(const OpArgs &args) {
  return checkedF32(args, softmaxWork, [](const OpArgs &a, NormWork w) {
    const float *dy = data<float>(a.in[0]), *y = data<float>(a.in[1]);
    float *dx = data<float>(a.out[0]);
    return always([=] { cpu::softmaxGrad(dy, y, dx, w.rows, w.cols); });
  });
}

#ifdef SBPFLOW_HAVE_CUDA

// x, y, dy, dx are T; gamma, beta and their gradients F32.
StatusOr<Kernel> cudaLayerNorm(const OpArgs &a) {
  return cuda::typedKernel(a, normWork, [&](auto e, NormWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]);
    const float *g = data<float>(a.in[1]), *b = data<float>(a.in[2]);
    T *y = data<T>(a.out[0]);
    return launch(a, [=] { return cuda::layerNorm<T>(x, g, b, y, w.rows, w.cols, w.eps, s); });
  });
}

StatusOr<Kernel> cudaLayerNormGrad(const OpArgs &a) {
  return cuda::typedKernel(a, normWork, [&](auto e, NormWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    auto *work = static_cast<float *>(
        a.scratch(static_cast<size_t>(cuda::layerNormGradScratch(w.rows, w.cols)) * 4));
    const T *dy = data<T>(a.in[0]), *x = data<T>(a.in[1]);
    const float *g = data<float>(a.in[2]);
    T *dx = data<T>(a.out[0]);
    float *dg = data<float>(a.out[1]), *db = data<float>(a.out[2]);
    return launch(a, [=] {
      return cuda::layerNormGrad<T>(dy, x, g, dx, dg, db, w.rows, w.cols, w.eps, work, s);
    });
  });
}

StatusOr<Kernel> cudaSoftmax(const OpArgs &a) {
  return cuda::typedKernel(a, softmaxWork, [&](auto e, NormWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *x = data<T>(a.in[0]);
    T *y = data<T>(a.out[0]);
    return launch(a, [=] { return cuda::softmax<T>(x, y, w.rows, w.cols, s); });
  });
}

StatusOr<Kernel> cudaSoftmaxGrad(const OpArgs &a) {
  return cuda::typedKernel(a, softmaxWork, [&](auto e, NormWork w, cudaStream_t s) {
    using T = typename decltype(e)::type;
    const T *dy = data<T>(a.in[0]), *y = data<T>(a.in[1]);
    T *dx = data<T>(a.out[0]);
    return launch(a, [=] { return cuda::softmaxGrad<T>(dy, y, dx, w.rows, w.cols, s); });
  });
}

#endif

} // namespace sbpflow::ops
