// Losses, metrics and reductions at runtime: softmax cross-entropy and its
// gradient, the count of correct rows, the mean and its gradient, and
// gradient clipping's sum of squares and scale. Losses, counts and sums are
// f32 whatever the logits' type (Ops.def's element types).
#include "kernels/Checks.h"
#include "kernels/cpu/Kernels.h"
#include "kernels/cpu/Transformer.h"

#ifdef SBPFLOW_HAVE_CUDA
#include "kernels/cuda/Dispatch.h"
#include "kernels/cuda/Loss.h"
#endif

namespace sbpflow::ops {
namespace {

using K = plan::OpKind;

// Logits rows, labels, classes.
struct XentWork {
  int64_t rows = 0, classes = 0;
};

StatusOr<XentWork> xentWork(const OpArgs &a) {
  XentWork w;
  if (Status s = rowsOf(a.in[0], w.rows, w.classes, a.at); !s)
    return s;
  if (elements(a.in[1]) != w.rows)
    return Status::error(a.at + ": " + std::to_string(elements(a.in[1])) + " labels for " +
                         std::to_string(w.rows) + " rows");
  if (a.task.op() == K::SoftmaxXentGrad && elements(a.in[2]) != w.rows)
    return Status::error(a.at + ": loss gradient size differs from the row count");
  return w;
}

// Mean reduces n inputs, MeanGrad spreads over n outputs; divided by count.
struct MeanWork {
  int64_t n = 0, count = 0;
};

MeanWork meanWork(const OpArgs &a) {
  return MeanWork{a.task.op() == K::Mean ? elements(a.in[0]) : elements(a.out[0]),
                  a.task.attrs_as_MeanAttrs()->count()};
}

Status scalar(const OpArgs &a, const TensorView *t, const std::string &what) {
  if (elements(t) != 1)
    return Status::error(a.at + ": " + what + " '" + t->name + "' must be a scalar, is " +
                         toString(t->local));
  return Status::ok();
}

Status meanCheck(const OpArgs &a) {
  const TensorView *one = a.task.op() == K::Mean ? a.out[0] : a.in[0];
  return scalar(a, one, a.task.op() == K::Mean ? "the mean" : "the mean's gradient");
}

// SquareSum of n elements into a scalar.
StatusOr<int64_t> squareSumWork(const OpArgs &a) {
  if (Status s = scalar(a, a.out[0], "result"); !s)
    return s;
  return elements(a.in[0]);
}

// ClipScale of a scalar by max_norm.
StatusOr<float> clipWork(const OpArgs &a) {
  const float maxNorm = a.task.attrs_as_ClipAttrs()->max_norm();
  if (!(maxNorm > 0.0f))
    return Status::error(a.at + ": ClipAttrs.max_norm must be positive, is " +
                         std::to_string(maxNorm));
  if (Status s = scalar(a, a.in[0], "sum of squares"); !s)
    return s;
  if (Status s = scalar(a, a.out[0], "result"); !s)
    return s;
  return maxNorm;
}

} // namespace

Status checkSoftmaxXent(const OpArgs &a) { return statusOf(xentWork(a)); }
Status checkSoftmaxXentGrad(const OpArgs &a) { return statusOf(xentWork(a)); }
Status checkCountCorrect(const OpArgs &a) { return statusOf(xentWork(a)); }
Status checkMean(const OpArgs &a) { return meanCheck(a); }
Status checkMeanGrad(const OpArgs &a) { return meanCheck(a); }
Status checkSquareSum(const OpArgs &a) { return statusOf(squareSumWork(a)); }
Status checkClipScale(const OpArgs &a) { return statusOf(clipWork(a)); }

StatusOr<Kernel> cpuSoftmaxXent(const OpArgs &args) {
  return withF32(args, [](const OpArgs &a) -> StatusOr<Kernel> {
    auto w = xentWork(a);
    if (!w)
      return w.status();
    const float *logits = data<float>(a.in[0]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    float *loss = data<float>(a.out[0]);
    return Kernel([=, w = *w, at = a.at](const StepContext &) {
      const int64_t bad = cpu::softmaxXent(logits, labels, loss, w.rows, w.classes);
      if (bad >= 0)
        return Status::error(at + ": label " + std::to_string(labels[bad]) + " at row " +
                             std::to_string(bad) + " is out of range for " +
                             std::to_string(w.classes) + " classes");
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuSoftmaxXentGrad(const OpArgs &args) {
  return withF32(args, [](const OpArgs &a) -> StatusOr<Kernel> {
    auto w = xentWork(a);
    if (!w)
      return w.status();
    const float *logits = data<float>(a.in[0]), *dloss = data<float>(a.in[2]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    float *dlogits = data<float>(a.out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::softmaxXentGrad(logits, labels, dloss, dlogits, w.rows, w.classes);
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuCountCorrect(const OpArgs &args) {
  return withF32(args, [](const OpArgs &a) -> StatusOr<Kernel> {
    auto w = xentWork(a);
    if (!w)
      return w.status();
    const float *logits = data<float>(a.in[0]);
    const int32_t *labels = data<int32_t>(a.in[1]);
    float *count = data<float>(a.out[0]);
    return Kernel([=, w = *w](const StepContext &) {
      cpu::countCorrect(logits, labels, count, w.rows, w.classes);
      return Status::ok();
    });
  });
}

StatusOr<Kernel> cpuMean(const OpArgs &a) {
  if (Status s = meanCheck(a); !s)
    return s;
  const MeanWork w = meanWork(a);
  const float *x = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  return Kernel([=](const StepContext &) {
    cpu::mean(x, y, w.n, w.count);
    return Status::ok();
  });
}

StatusOr<Kernel> cpuMeanGrad(const OpArgs &a) {
  if (Status s = meanCheck(a); !s)
    return s;
  const MeanWork w = meanWork(a);
  const float *dy = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  return Kernel([=](const StepContext &) {
    cpu::meanGrad(dy, y, w.n, w.count);
    return Status::ok();
  });
}

StatusOr<Kernel> cpuSquareSum(const OpArgs &a) {
  auto n = squareSumWork(a);
  if (!n)
    return n.status();
  const float *x = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  return Kernel([=, n = *n](const StepContext &) {
    *y = cpu::squareSum(x, n);
    return Status::ok();
  });
}

StatusOr<Kernel> cpuClipScale(const OpArgs &a) {
  auto maxNorm = clipWork(a);
  if (!maxNorm)
    return maxNorm.status();
  const float *x = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  return Kernel([=, maxNorm = *maxNorm](const StepContext &) {
    *y = cpu::clipScale(*x, maxNorm);
    return Status::ok();
  });
}

#ifdef SBPFLOW_HAVE_CUDA

StatusOr<Kernel> cudaSoftmaxXent(const OpArgs &a) {
  auto w = xentWork(a);
  if (!w)
    return w.status();
  const int32_t *labels = data<int32_t>(a.in[1]);
  float *loss = data<float>(a.out[0]);
  const int64_t classes = w->classes;
  const std::string at = a.at;
  int64_t *bad = a.errorFlag([=](int64_t row) {
    return at + ": label " + std::to_string(cuda::readI32(labels + row)) + " at row " +
           std::to_string(row) + " is out of range for " + std::to_string(classes) + " classes";
  });
  const cudaStream_t s = cuda::streamOf(a.stream);
  return cuda::withFloatType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *logits = data<T>(a.in[0]);
    return Kernel([=, w = *w](const StepContext &) {
      return named(at,
                   cuda::softmaxXent<T>(logits, labels, loss, nullptr, bad, w.rows, w.classes, s));
    });
  });
}

StatusOr<Kernel> cudaSoftmaxXentGrad(const OpArgs &a) {
  auto w = xentWork(a);
  if (!w)
    return w.status();
  const int32_t *labels = data<int32_t>(a.in[1]);
  const float *dloss = data<float>(a.in[2]);
  const cudaStream_t s = cuda::streamOf(a.stream);
  return cuda::withFloatType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *logits = data<T>(a.in[0]);
    T *dlogits = data<T>(a.out[0]);
    return Kernel([=, w = *w, at = a.at](const StepContext &) {
      return named(at, cuda::softmaxXentGrad<T>(logits, labels, dloss, nullptr, dlogits, w.rows,
                                                w.classes, s));
    });
  });
}

StatusOr<Kernel> cudaCountCorrect(const OpArgs &a) {
  auto w = xentWork(a);
  if (!w)
    return w.status();
  const int32_t *labels = data<int32_t>(a.in[1]);
  float *count = data<float>(a.out[0]);
  const cudaStream_t s = cuda::streamOf(a.stream);
  return cuda::withFloatType(a.in[0]->dtype, a.at, [&](auto e) -> StatusOr<Kernel> {
    using T = typename decltype(e)::type;
    const T *logits = data<T>(a.in[0]);
    return Kernel([=, w = *w, at = a.at](const StepContext &) {
      return named(at, cuda::countCorrect<T>(logits, labels, count, w.rows, w.classes, s));
    });
  });
}

StatusOr<Kernel> cudaMean(const OpArgs &a) {
  if (Status s = meanCheck(a); !s)
    return s;
  const MeanWork w = meanWork(a);
  const float *x = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  CudaResources *res = a.cuda;
  const cudaStream_t s = cuda::streamOf(a.stream);
  // Every reduction runs on the compute stream: they share the partials.
  return Kernel([=, at = a.at](const StepContext &) {
    return named(at, cuda::mean(x, y, w.n, w.count, res->partials, s));
  });
}

StatusOr<Kernel> cudaMeanGrad(const OpArgs &a) {
  if (Status s = meanCheck(a); !s)
    return s;
  const MeanWork w = meanWork(a);
  const float *dy = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  const cudaStream_t s = cuda::streamOf(a.stream);
  return Kernel([=, at = a.at](const StepContext &) {
    return named(at, cuda::meanGrad(dy, y, w.n, w.count, s));
  });
}

StatusOr<Kernel> cudaSquareSum(const OpArgs &a) {
  auto n = squareSumWork(a);
  if (!n)
    return n.status();
  const float *x = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  CudaResources *res = a.cuda;
  const cudaStream_t s = cuda::streamOf(a.stream);
  return Kernel([=, n = *n, at = a.at](const StepContext &) {
    return named(at, cuda::squareSum(x, n, y, res->partials, s));
  });
}

StatusOr<Kernel> cudaClipScale(const OpArgs &a) {
  auto maxNorm = clipWork(a);
  if (!maxNorm)
    return maxNorm.status();
  const float *x = data<float>(a.in[0]);
  float *y = data<float>(a.out[0]);
  const cudaStream_t s = cuda::streamOf(a.stream);
  return Kernel([=, maxNorm = *maxNorm, at = a.at](const StepContext &) {
    return named(at, cuda::clipScale(x, 1, maxNorm, y, s));
  });
}

#endif

} // namespace sbpflow::ops
